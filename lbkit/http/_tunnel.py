# -*- test-case-name: tests.test_http_connect -*-
"""
http mode: C{CONNECT} requests.

An HTTP/1.1 C{CONNECT} goes to a server only when the route that takes it
says C{allowConnect=True}; the server's 2xx then opens a tunnel (the
upgrade tunnels' machinery: L{lbkit.http._exchange.Exchange.tunnelStarted}).
Any other C{CONNECT}, and every plain C{CONNECT} over HTTP/2, is answered
C{405 Method Not Allowed} with an C{Allow} header, logged as lbkit's own
answers are (termination C{PR}), and its connection closes (an HTTP/2
stream ends).  Only requests whose method is C{CONNECT} come here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lbkit.http._answers import Answer
from lbkit.http._local import answerWith
from lbkit.http._routing import Route

if TYPE_CHECKING:
    from lbkit.http._exchange import Exchange

__all__ = ["ALLOW", "refusedConnect"]

#: The C{Allow} header of the 405: the methods lbkit forwards anywhere.
ALLOW = b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE"


def refusedConnect(exchange: Exchange, allowed: bool = True) -> bool:
    """
    Decide on a C{CONNECT} request that just began on C{exchange}: route
    it (the C{routeRequest} hook; L{Exchange.forward} routes it again) and
    let it through if its route allows it (and C{allowed}), as an upgrade:
    a new server connection, tunnelled on a 2xx.  Else answer 405.

    @param allowed: Whether the client side can tunnel at all (C{False}
        for a plain C{CONNECT} over HTTP/2).
    @return: Whether the request was answered (nothing more to do).
    """
    request = exchange.request
    assert request is not None
    if allowed:
        _, route = exchange.hooks.routeRequest(request)
        if isinstance(route, Route) and route.allowConnect:
            exchange.upgrading = True
            return False
    exchange.closeAfter = True
    answerWith(exchange, Answer(405, [(b"Allow", ALLOW)], errorPage=True, close=True, termination="PR"))
    return True
