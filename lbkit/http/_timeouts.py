# -*- test-case-name: tests.test_http -*-
"""
http mode: the timeouts of an exchange in progress (L{checkTimeouts}),
which its client side's timer applies: HAProxy's C{timeout client},
C{timeout server}, C{timeout tunnel}, and a deadline for the whole request
body (C{timeoutRequestBody}).  A request head's own timeout
(C{timeoutHttpRequest}) is the HTTP/1.1 connection's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lbkit.http._retry import retryAfterTimeout
from lbkit.http._states import ANSWERING, TUNNEL

if TYPE_CHECKING:
    from lbkit.http._exchange import Exchange

__all__ = ["checkTimeouts"]


def checkTimeouts(exchange: Exchange, now: float) -> bool:
    """
    Apply C{timeoutRequestBody}, C{timeoutClient}, the backend's
    C{timeoutServer} and C{timeoutTunnel} to an active C{exchange}; called
    by its client side's timer (a quarter of the smallest timeout apart).
    Idle time counts from when bytes last moved either way.

    @return: Whether the exchange ended (no more checks are needed).
    """
    state = exchange.state
    frontend = exchange.frontend
    conn = exchange.conn
    answering = state in ANSWERING
    deadline = frontend.timeoutRequestBody
    dispatch = exchange.dispatch
    connectedAt = dispatch.connectedAt if dispatch is not None else now
    if deadline is not None and answering and not exchange.bodyDone and now - connectedAt >= deadline:
        # the whole body did not arrive in time, however steadily it
        # trickles (HAProxy's timeout http-request with http-buffer-request)
        _clientTooSlow(exchange)
        return True
    moved = exchange.bytesIn + (conn.bytes if conn is not None else 0)
    if moved != exchange.lastBytes:
        exchange.lastBytes = moved
        exchange.since = now
        return False
    idle = now - exchange.since
    if state is TUNNEL:
        if idle >= frontend.timeoutTunnel:
            exchange.abortExchange("cD")
            return True
    elif answering and idle >= frontend.timeoutClient and (not exchange.bodyDone or exchange.side.stalled()):
        # the client stopped sending its body, or stopped reading
        _clientTooSlow(exchange)
        return True
    elif answering and exchange.backend is not None and idle >= exchange.backend.timeoutServer:
        if exchange.responseStarted:
            exchange.abortExchange("sD")
        elif retryAfterTimeout(exchange):  # retryOn response-timeout (docs/breakers.md)
            return False
        else:
            exchange.dropServer()
            exchange.fail(504, "sH")
        return True
    return False


def _clientTooSlow(exchange: Exchange) -> None:
    """The client held the exchange up too long: 408 if nothing was sent yet, else a cut (cD)."""
    if exchange.responseStarted:
        exchange.abortExchange("cD")
        return
    exchange.dropServer()
    exchange.fail(408, "cD")
