# -*- test-case-name: tests.test_explain -*-
"""
Explaining http requests (docs/beyond.md): the route part of the reasons,
the C{explain} access-log field of a frontend with C{explain=True}
(L{explainText}), and the dry run behind the C{explain} command
(L{explainRequest}): route, backend, server and reasons for a request
described by its method, path, headers and source address, with nothing
sent.
"""

from __future__ import annotations

from typing import Any, Sequence

from lbkit._explain import NOTE, clientAddress, explainChoice
from lbkit._model import Context
from lbkit.error import NoServerAvailable
from lbkit.http._parse import Request
from lbkit.http._routing import Route

__all__ = ["routeReason", "explainText", "explainRequest"]


def routeReason(frontend: Any, route: Any, backend: Any) -> str:
    """
    Why a request of C{frontend} went to C{backend}: the route that
    matched (its matcher and the site-file line that built it), or none.
    """
    if isinstance(route, Route):
        where = route.definedAt
        line = f" ({where[0].rsplit('/', 1)[-1]}:{where[1]})" if where and where[0] else ""
        position = frontend.routes.index(route) + 1 if route in frontend.routes else 0
        return f"route {position} matched{line}: {route.matcher!r} -> {backend.name}"
    count = len(frontend.routes)
    if backend is None:
        return "not routed"
    if not count:
        return f"no routes: default {backend.name}"
    return f"none of {count} routes matched: default {backend.name}"


def explainText(exchange: Any) -> str:
    """
    The C{explain} access-log field of the request of C{exchange}: its
    route's reason and what the backend noted as it chose, C{"; "}
    between them.
    """
    parts = [routeReason(exchange.frontend, exchange.route, exchange.backend)]
    context = exchange.context
    if context is not None:
        parts.extend(context.notes.get(NOTE, ()))
    return "; ".join(parts)


def explainRequest(
    frontend: Any,
    method: str = "GET",
    path: str = "/",
    headers: Sequence[tuple[str, str]] = (),
    source: str = "127.0.0.1",
) -> dict[str, Any]:
    """
    Where C{frontend} would send this request now, and why, sending
    nothing and changing nothing the next real request depends on (the
    balancer deciding is a copy: L{lbkit._explain.explainChoice}).

    Routing is the frontend's routes in order, as
    L{lbkit.http.HTTPFrontendProtocol.routeRequest} does (a subclass that
    routes otherwise is not consulted); answering rules (C{deny},
    C{redirect}...) are not evaluated.

    @param headers: C{(name, value)} pairs; a C{Host} header is one of them.
    @param source: The client's address, C{"host"} or C{"host:port"}.
    @return: C{frontend}, C{route}, C{backend}, C{server} (a name, or
        C{None}: the request would be queued or get a 503) and C{reasons}.
    """
    request = Request(
        method.upper().encode("ascii"), path.encode("utf-8"), b"HTTP/1.1",
        [[n.encode("latin-1"), v.encode("latin-1")] for n, v in headers],
    )
    context = Context(client=clientAddress(source), frontend=frontend.name, request=request)
    backend, route = frontend.default, None
    for candidate in frontend.routes:
        if candidate.matcher.matches(request, context):
            backend, route = candidate.backend, candidate
            break
    reason = routeReason(frontend, route, backend)
    try:
        server, reasons = explainChoice(backend, context)
    except NoServerAvailable:
        server, reasons = None, [*context.notes.get(NOTE, ()), "answered 503"]
    return {
        "frontend": frontend.name,
        "route": reason,
        "backend": backend.name,
        "server": server.name if server is not None else None,
        "reasons": [reason, *reasons],
    }
