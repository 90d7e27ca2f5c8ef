# -*- test-case-name: tests.test_http -*-
"""
http mode: how an exchange ends other than with its response (methods of
an L{lbkit.http._exchange.Exchange}, which takes them as class
attributes): the server connection failing before a response head (a retry, or 502),
an error answer, an abort, the client going away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

from twisted.logger import Logger
from twisted.python.failure import Failure

from lbkit._dispatch import DispatchState
from lbkit.http._parse import BadMessage
from lbkit.http._retry import retryAfterFailure
from lbkit.http._server import HTTPServerProtocol
from lbkit.http._states import ANSWERING

if TYPE_CHECKING:
    from lbkit.http._exchange import Exchange

__all__ = ["serverFailed", "detachServer", "resend", "fail", "abortExchange", "clientLost", "dropServer"]

_log = Logger(namespace="lbkit.http")
_QUEUED, _CONNECTING = DispatchState.QUEUED, DispatchState.CONNECTING


def serverFailed(exchange: Exchange, conn: HTTPServerProtocol, reason: Union[Failure, BadMessage], sentNothing: bool) -> None:
    """The server connection broke, or sent garbage, before a response head: retry if safe, else 502."""
    request = exchange.request
    if request is None or exchange.clientGone:
        return
    server = exchange.server
    why = reason.getErrorMessage() if isinstance(reason, Failure) else str(reason)
    if isinstance(reason, BadMessage):
        _log.warn("{server}: invalid response: {why}", server=server.fullName if server else "-", why=why)
    if server is not None:
        server.observe(False, f"Layer7 invalid response: {why}")
    condition = retryAfterFailure(exchange, conn, reason)  # (docs/breakers.md)
    exchange.detachServer(conn)
    if condition is not None:
        exchange.resend(conn.reused and condition == "empty-response", condition, "SH", 502)
        return
    exchange.fail(502, "SH")


def detachServer(exchange: Exchange, conn: HTTPServerProtocol) -> None:
    """Drop C{conn}, this request's server connection, before a response head, and give its slot back."""
    exchange.conn = None
    if conn.transport is not None:
        conn.sink = None
        conn.abort()
    exchange.side.serverDetached()
    exchange._releaseSlot()


def resend(exchange: Exchange, again: bool, condition: Union[str, int], termination: str, status: int) -> None:
    """After L{detachServer}: send the request again, to the same server (C{again}) or as a retry."""
    dispatch = exchange.dispatch
    assert dispatch is not None
    exchange._go("retry")
    if again:
        dispatch.runAgain(termination, status)
    else:
        dispatch.runRetry(termination, status, condition)
    if dispatch.state is _QUEUED or dispatch.state is _CONNECTING:
        exchange.side.pauseReading()


def fail(exchange: Exchange, status: int, termination: str) -> None:
    """Answer with an error status (if nothing was sent yet) and close."""
    exchange.termination, exchange.status = termination, status
    if exchange.responseStarted:
        exchange.abortExchange(termination)
        return
    exchange._releaseSlot()
    exchange.bytesOut = exchange.side.sendError(status)
    exchange.factory.responses["5xx" if status >= 500 else "4xx"] += 1
    exchange._end(False)
    exchange.close()


def abortExchange(exchange: Exchange, termination: str) -> None:
    """Drop the server connection and the client's (or its stream) now."""
    if exchange.termination == "--":
        exchange.termination = termination
    if exchange.held is not None:
        exchange.held.cancel()
    conn = exchange.conn
    if conn is not None:
        conn.sink = None
        conn.abort()
    if exchange.request is not None:
        exchange._end(False)
    exchange._go("abort")
    exchange.side.abort()


def clientLost(exchange: Exchange, termination: Optional[str] = None) -> None:
    """
    The client went away (its connection, or its stream reset): a request in progress
    ends with C{termination}, by default C{CD} once sent to a server and C{CC} before.
    """
    exchange.clientGone = True
    if exchange.held is not None:
        exchange.held.cancel()
    if exchange.active and exchange.request is not None:
        if exchange.termination == "--":
            exchange.termination = termination or ("CD" if exchange.state in ANSWERING else "CC")
        exchange._end(False)
    exchange._go("lost")


def dropServer(exchange: Exchange) -> None:
    """Abort the server connection, if any, and forget it."""
    conn, exchange.conn = exchange.conn, None
    if conn is not None:
        conn.sink = None
        conn.abort()
