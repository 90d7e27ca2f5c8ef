# -*- test-case-name: tests.test_stats_security -*-
"""
Who may use the stats page's admin routes, and how refusals look: the
policy the HTTP side (L{lbkit.stats._site}, L{lbkit.stats._web}) applies,
with no I/O of its own.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from lbkit.stats._admin import Admin
from lbkit.stats._throttle import LoginThrottle

__all__: list[str] = []

#: The most request body an admin POST may carry, in bytes; every other
#: route takes none.
MAX_BODY = 8192

_REASONS = {
    401: b"Unauthorized",
    413: b"Content Too Large",
    429: b"Too Many Requests",
}


def jsonBody(body: Any) -> bytes:
    """The page's JSON answers, as bytes."""
    return json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"


@attrs.frozen
class Refusal:
    """
    A request the page answers with an error and nothing else.

    @ivar code: The HTTP status (401, 413 or 429).
    @ivar error: The text of the answer's C{"error"} field.
    @ivar headers: Extra headers, e.g. C{WWW-Authenticate}, C{Retry-After}.
    """

    code: int
    error: str
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def toBytes(self) -> bytes:
        """The whole answer, closing the connection, to write on a transport."""
        body = jsonBody({"error": self.error})
        lines = [
            b"HTTP/1.1 %d %s" % (self.code, _REASONS.get(self.code, b"Error")),
            b"Content-Type: application/json",
            b"Content-Length: %d" % (len(body),),
            b"Cache-Control: no-store",
            b"X-Content-Type-Options: nosniff",
            b"Connection: close",
            *(name + b": " + value for name, value in self.headers),
        ]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


def bodyTooLarge(limit: int) -> Refusal:
    """The refusal of a body over C{limit} bytes (0: a route that takes none)."""
    if limit == 0:
        return Refusal(413, "this route takes no request body")
    return Refusal(413, f"request body over {limit} bytes")


def clientKey(address: Any) -> str:
    """The throttle's key for a client address: its host, or its type for UNIX sockets."""
    host = getattr(address, "host", None)
    return str(host) if host is not None else type(address).__name__


class Guard:
    """
    Checks the credentials of admin requests, within an L{Admin}'s limits
    on failed logins.

    @param admin: Whose users may log in, and the throttle's settings.
    @param clock: The L{IReactorTime<twisted.internet.interfaces.IReactorTime>} the throttle reads.
    """

    def __init__(self, admin: Admin, clock: Any) -> None:
        self.admin = admin
        self.throttle = LoginThrottle(
            clock,
            failures=admin.loginFailures,
            window=admin.loginWindow,
            lockout=admin.loginLockout,
            rate=admin.loginRate,
        )

    def _challenge(self) -> Refusal:
        return Refusal(401, "authentication required", ((b"WWW-Authenticate", self.admin.challenge()),))

    def login(self, authorization: bytes | None, client: Any) -> str | Refusal:
        """
        The admin user C{authorization} (an C{Authorization} header value or
        C{None}) proves for a request from C{client}, or the L{Refusal} to
        answer: 401 without or with wrong credentials, 429 while the
        throttle refuses (then the password is not checked).
        """
        key = clientKey(client)
        if not authorization:
            wait = self.throttle.blocked(key)
            return self._challenge() if wait is None else self._tooMany(wait)
        wait = self.throttle.wait(key)
        if wait is not None:
            return self._tooMany(wait)
        user = self.admin.authenticate(authorization)
        if user is None:
            self.throttle.failed(key)
            return self._challenge()
        self.throttle.succeeded(key)
        return user

    def _tooMany(self, wait: int) -> Refusal:
        return Refusal(
            429, f"too many failed logins; try again in {wait} s", ((b"Retry-After", str(wait).encode()),)
        )
