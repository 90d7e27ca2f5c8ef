# -*- test-case-name: tests.test_breakers -*-
"""
http mode: which failed attempts of a request are sent again, by the
backend's C{retryOn} (L{lbkit._breakers}, docs/breakers.md):

  - the server closed before a response head (C{empty-response}) or sent
    an invalid one (C{junk-response}): L{retryAfterFailure};
  - C{timeoutServer} passed before a response head (C{response-timeout}):
    L{retryAfterTimeout};
  - the response's status is listed: L{RetryingServerProtocol}, the
    server connections of a backend that lists statuses (the others are
    plain L{HTTPServerProtocol}s and check nothing).

Only a request that may be sent again is: an idempotent method with no
body (lbkit streams a body, it does not keep it); a connect failure is the
dispatch's own retry (the request was not sent).  The retry itself is the
dispatch's (L{lbkit._dispatch.Dispatch.mayRetry}: C{retries}, then
C{maxRetries} and C{retryBudget}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Union, cast

from twisted.python.failure import Failure

from lbkit._breakers import EMPTY_RESPONSE, JUNK_RESPONSE, RESPONSE_TIMEOUT
from lbkit._model import Server
from lbkit.http._h2up import H2ServerProtocol
from lbkit.http._headers import CODE_CLASS, IDEMPOTENT
from lbkit.http._parse import BadMessage, Response
from lbkit.http._pool import ConnectionPool
from lbkit.http._server import HTTPServerProtocol

if TYPE_CHECKING:
    from lbkit.http._exchange import Exchange

__all__ = ["newServerProtocol", "retryAfterFailure", "retryAfterTimeout", "RetryingServerProtocol"]


def replayable(exchange: Exchange) -> bool:
    """Whether C{exchange}'s request may be sent again: idempotent, and no body."""
    request = exchange.request
    return request is not None and request.method in IDEMPOTENT and exchange.framing == 0


def retryAfterFailure(exchange: Exchange, conn: HTTPServerProtocol, reason: Union[Failure, BadMessage]) -> Optional[str]:
    """
    The server connection of C{exchange} broke (a L{Failure}) or sent an
    invalid head (a L{BadMessage}) before a response head.

    @return: The condition to send the request again on (a kept-alive
        connection that was dead is sent again on the same server whatever
        C{retryOn} says: that is no retry), or C{None}: answer 502.
    """
    dispatch = exchange.dispatch
    if dispatch is None or not replayable(exchange):
        return None
    if isinstance(reason, Failure):
        if conn.reused:
            return EMPTY_RESPONSE
        condition = EMPTY_RESPONSE
    else:
        condition = JUNK_RESPONSE
    return condition if dispatch.mayRetry(condition) else None


def retryAfterTimeout(exchange: Exchange) -> bool:
    """
    C{timeoutServer} passed with no response head for C{exchange}: retry
    it if C{retryOn} has C{response-timeout} and a retry is allowed.

    @return: Whether it was sent again (else the caller answers 504).
    """
    conn, dispatch, server = exchange.conn, exchange.dispatch, exchange.server
    if conn is None or dispatch is None or not replayable(exchange) or not dispatch.mayRetry(RESPONSE_TIMEOUT):
        return False
    if server is not None:
        server.observe(False, "Layer7 timeout")
    exchange.detachServer(conn)
    exchange.lastBytes = -1  # the next attempt gets a whole timeoutServer
    exchange.resend(False, RESPONSE_TIMEOUT, "sH", 504)
    return True


def _retryStatus(exchange: Exchange, conn: HTTPServerProtocol, code: int) -> bool:
    dispatch, server = exchange.dispatch, exchange.server
    if dispatch is None or server is None or not replayable(exchange) or not dispatch.mayRetry(code):
        return False
    # the server answered: its counters and passive health see it, the client does not
    server.requests += 1
    server.responses[CODE_CLASS[code // 100]] += 1
    if code >= 500 and code != 501 and code != 505:
        server.observe(False, f"Layer7 wrong status, code: {code}")
    exchange.detachServer(conn)
    exchange.resend(False, code, "SH", 502)
    return True


class _Gate:
    """
    The L{lbkit.http._server.ResponseSink} a L{RetryingServerProtocol}
    reports to: its exchange's, but a listed status may be retried instead
    of being passed on.
    """

    writeResponse: Callable[[bytes], None]
    upgrading = False
    decodesChunked = False

    def __init__(self, statuses: frozenset[Any]) -> None:
        self.statuses = statuses
        self.exchange: Any = None

    def attach(self, exchange: Any) -> None:
        self.exchange = exchange
        self.writeResponse = exchange.writeResponse
        self.upgrading = exchange.upgrading
        self.decodesChunked = exchange.decodesChunked

    def interimResponse(self, response: Response) -> None:
        self.exchange.interimResponse(response)

    def responseHead(self, conn: HTTPServerProtocol, response: Response, framing: int) -> bytes:
        if response.code in self.statuses and _retryStatus(self.exchange, conn, response.code):
            return b""
        head: bytes = self.exchange.responseHead(conn, response, framing)
        return head

    def tunnelStarted(self, conn: HTTPServerProtocol, response: Response) -> None:
        self.exchange.tunnelStarted(conn, response)

    def responseDone(self, conn: HTTPServerProtocol) -> None:
        self.exchange.responseDone(conn)

    def serverFailed(self, conn: HTTPServerProtocol, reason: Union[Failure, BadMessage], sentNothing: bool) -> None:
        self.exchange.serverFailed(conn, reason, sentNothing)

    def abortExchange(self, termination: str) -> None:
        self.exchange.abortExchange(termination)

    def tunnelEnded(self) -> None:
        self.exchange.tunnelEnded()


class RetryingServerProtocol(HTTPServerProtocol):
    """
    A server connection of a backend whose C{retryOn} lists status codes:
    a response with one of them, to a request that may be sent again, is
    dropped (with the connection) and the request retried, while a retry
    is allowed; else it is passed on as any other.
    """

    def __init__(self, server: Server, pool: ConnectionPool[HTTPServerProtocol], statuses: frozenset[Any]) -> None:
        HTTPServerProtocol.__init__(self, server, pool)
        self._gate = _Gate(statuses)

    def startExchange(self, sink: Any, head: bytes, method: bytes) -> None:
        self._gate.attach(sink)
        HTTPServerProtocol.startExchange(self, self._gate, head, method)


def newServerProtocol(server: Server, pool: ConnectionPool[HTTPServerProtocol]) -> HTTPServerProtocol:
    """A new connection to C{server}: a L{RetryingServerProtocol} if its backend retries on statuses."""
    if server.proto is not None:  # HTTP/2: a connection for many streams (lbkit.http._h2up)
        return cast(HTTPServerProtocol, H2ServerProtocol(server, pool))
    backend = server.backend
    breakers = backend.breakers if backend is not None else None
    if breakers is not None and breakers.statuses:
        return RetryingServerProtocol(server, pool, breakers.statuses)
    return HTTPServerProtocol(server, pool)
