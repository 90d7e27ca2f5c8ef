# -*- test-case-name: tests.test_http -*-
"""
Header rules: add, set or delete request and response headers, per
frontend or per route, when a matcher says so, with a value fixed or
computed from the request; and the order in which an exchange applies rules
and a persistence strategy to its messages (L{rewriteRequest},
L{rewriteResponse}).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.http._answers import checkedWhen
from lbkit.http._parse import Request, Response
from lbkit.interfaces import IHTTPPersistence, IRequestRule

if TYPE_CHECKING:
    from lbkit._backend import Backend

__all__ = [
    "addHeader",
    "setHeader",
    "deleteHeader",
    "HeaderRule",
    "Source",
    "clientAddress",
    "clientPort",
    "rewriteRequest",
    "rewriteResponse",
]

_Text = Union[str, bytes]
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # (\Z: $ matches before a final newline)


def _b(value: _Text) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


_BAD = re.compile(rb"[\r\n\x00]")
#: A header value computed per request: called with the request and the exchange.
Source = Callable[[Request, Any], _Text]


def clientAddress(request: Request, exchange: Any) -> bytes:
    """A header value: the client's IP address (HAProxy's C{%[src]})."""
    return getattr(exchange.client, "host", "").encode("ascii")


def clientPort(request: Request, exchange: Any) -> bytes:
    """A header value: the client's port (HAProxy's C{%[src_port]})."""
    return b"%d" % getattr(exchange.client, "port", 0)


@implementer(IRequestRule)
class HeaderRule:
    """
    One change to a message's headers: C{action} is C{"add"}, C{"set"} or
    C{"delete"}.  An L{IRequestRule}.

    @ivar value: The value (bytes), or a L{Source}: a callable taking the
        request and the exchange, returning str or bytes (L{clientAddress},
        L{clientPort}, or the user's), called each time the rule applies.
        A computed value holding CR, LF or NUL is an error (the request
        fails, C{IC}).
    @ivar when: A matcher (L{lbkit.interfaces.IRequestMatcher}) the request
        must match for the rule to apply, or C{None}.  For a response rule,
        the matcher looks at the request the response answers.
    """

    def __init__(self, action: str, name: _Text, value: Union[_Text, Source] = b"", when: Any = None) -> None:
        if action not in ("add", "set", "delete"):
            raise ValueError(f"unknown header action {action!r}")
        self.action = action
        self.name = _b(name)
        if not _TOKEN.match(self.name):
            raise ValueError(f"header name {self.name!r} is not a token")
        self.lower = self.name.lower()
        self.value: Union[bytes, Source] = value if callable(value) else _b(value)
        if isinstance(self.value, bytes) and _BAD.search(self.value):
            raise ValueError("header values may not contain CR or LF")
        self.when = checkedWhen(when, f"{action}Header({self.name!r})")

    def __repr__(self) -> str:
        return f"<HeaderRule {self.action} {self.name!r}>"

    def _value(self, request: Optional[Request], exchange: Any) -> bytes:
        value = self.value
        if isinstance(value, bytes):
            return value
        computed = _b(value(request, exchange))  # type: ignore[arg-type]
        if _BAD.search(computed):
            raise ValueError(f"{self!r}: the computed value {computed!r} holds CR, LF or NUL")
        return computed

    def _applies(self, request: Optional[Request], exchange: Any) -> bool:
        when = self.when
        return when is None or (request is not None and when.matches(request, exchange.context))

    def applyToRequest(self, request: Request, exchange: Any) -> None:
        """Change C{request}'s headers before it goes to the server."""
        if self.when is not None and not self._applies(request, exchange):
            return
        if self.action == "add":
            request.addHeader(self.name, self._value(request, exchange))
        elif self.action == "set":
            request.setHeader(self.name, self._value(request, exchange))
        else:
            request.removeHeader(self.name)

    def applyToResponse(self, response: Response, exchange: Any) -> None:
        """Change C{response}'s headers before it goes to the client."""
        request = exchange.request if self.when is not None or not isinstance(self.value, bytes) else None
        if self.when is not None and not self._applies(request, exchange):
            return
        headers = response.headers
        if self.action != "add":
            headers = [h for h in headers if h[0].lower() != self.lower]
        if self.action != "delete":
            headers.append([self.name, self._value(request, exchange)])
        response.headers = headers


def addHeader(name: _Text, value: Union[_Text, Source], when: Any = None) -> HeaderRule:
    """Add a header (HAProxy's C{http-request add-header}); C{value} may be a L{Source}."""
    return HeaderRule("add", name, value, when)


def setHeader(name: _Text, value: Union[_Text, Source], when: Any = None) -> HeaderRule:
    """Replace any headers of that name by one (C{set-header}); C{value} may be a L{Source}."""
    return HeaderRule("set", name, value, when)


def deleteHeader(name: _Text, when: Any = None) -> HeaderRule:
    """Remove every header of that name (C{del-header})."""
    return HeaderRule("delete", name, when=when)


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
