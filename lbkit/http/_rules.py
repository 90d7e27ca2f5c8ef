# -*- test-case-name: tests.test_http -*-
"""
Header rules: add, set or delete request and response headers, per
frontend or per route; and the order in which an exchange applies rules
and a persistence strategy to its messages (L{rewriteRequest},
L{rewriteResponse}).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Sequence, Union

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.http._parse import Request, Response
from lbkit.interfaces import IHTTPPersistence, IRequestRule

if TYPE_CHECKING:
    from lbkit._backend import Backend

__all__ = ["addHeader", "setHeader", "deleteHeader", "HeaderRule", "rewriteRequest", "rewriteResponse"]

_Text = Union[str, bytes]
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # (\Z: $ matches before a final newline)


def _b(value: _Text) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


@implementer(IRequestRule)
class HeaderRule:
    """
    One change to a message's headers: C{action} is C{"add"}, C{"set"} or
    C{"delete"}.  An L{IRequestRule}; it reads nothing of the exchange.
    """

    def __init__(self, action: str, name: _Text, value: _Text = b"") -> None:
        if action not in ("add", "set", "delete"):
            raise ValueError(f"unknown header action {action!r}")
        self.action = action
        self.name = _b(name)
        if not _TOKEN.match(self.name):
            raise ValueError(f"header name {self.name!r} is not a token")
        self.lower = self.name.lower()
        self.value = _b(value)
        if b"\r" in self.value or b"\n" in self.value:
            raise ValueError("header values may not contain CR or LF")

    def __repr__(self) -> str:
        return f"<HeaderRule {self.action} {self.name!r}>"

    def _apply(self, headers: list[list[bytes]]) -> list[list[bytes]]:
        if self.action != "add":
            headers = [h for h in headers if h[0].lower() != self.lower]
        if self.action != "delete":
            headers.append([self.name, self.value])
        return headers

    def applyToRequest(self, request: Request, exchange: Any) -> None:
        """Change C{request}'s headers before it goes to the server."""
        if self.action == "add":
            request.addHeader(self.name, self.value)
        elif self.action == "set":
            request.setHeader(self.name, self.value)
        else:
            request.removeHeader(self.name)

    def applyToResponse(self, response: Response, exchange: Any) -> None:
        """Change C{response}'s headers before it goes to the client."""
        response.headers = self._apply(response.headers)


def addHeader(name: _Text, value: _Text) -> HeaderRule:
    """Add a header (HAProxy's C{http-request add-header})."""
    return HeaderRule("add", name, value)


def setHeader(name: _Text, value: _Text) -> HeaderRule:
    """Replace any headers of that name by one (C{set-header})."""
    return HeaderRule("set", name, value)


def deleteHeader(name: _Text) -> HeaderRule:
    """Remove every header of that name (C{del-header})."""
    return HeaderRule("delete", name)


def rewriteRequest(
    request: Request,
    exchange: Any,
    frontendRules: Sequence[IRequestRule],
    routeRules: Sequence[IRequestRule],
    backend: Backend,
    context: Context,
) -> None:
    """
    Change a request before its head goes to its server, once: the
    frontend's rules, the route's, then the backend's persistence strategy
    if it provides L{IHTTPPersistence} (C{rewriteRequest}).

    @param exchange: What the rules may read (see L{IRequestRule}).
    """
    for rule in frontendRules:
        rule.applyToRequest(request, exchange)
    for rule in routeRules:
        rule.applyToRequest(request, exchange)
    persistence = backend.persistence
    # (providedBy(None) alone costs more than the rest of this function)
    if persistence is not None and IHTTPPersistence.providedBy(persistence):
        persistence.rewriteRequest(backend, request, context)


def rewriteResponse(
    response: Response,
    exchange: Any,
    routeRules: Sequence[IRequestRule],
    frontendRules: Sequence[IRequestRule],
    backend: Backend,
    server: Server,
    context: Context,
) -> None:
    """
    Change a final response head before it goes to the client: the
    persistence strategy first (an L{IHTTPPersistence}'s
    C{rewriteResponse}), then the route's rules, then the frontend's.
    """
    persistence = backend.persistence
    if persistence is not None and IHTTPPersistence.providedBy(persistence):
        persistence.rewriteResponse(backend, server, response, context)
    for rule in routeRules:
        rule.applyToResponse(response, exchange)
    for rule in frontendRules:
        rule.applyToResponse(response, exchange)
