# -*- test-case-name: tests.test_http2 -*-
"""
One HTTP/2 stream of an L{lbkit.http._h2.H2FrontendProtocol}: the client
side of one L{lbkit.http._exchange.Exchange}, as an HTTP/1.1 connection is
(L{lbkit.http._exchange.ClientSide}).  The exchange routes, balances,
queues, retries, applies rules and persistence, times out and logs exactly
as for HTTP/1.1; the hooks of the frontend's protocol class run for the
stream (L{lbkit.http._h1.streamExchange}).

Flow control: request DATA is acknowledged to the client only once it was
handed to the server connection (whose full buffer pauses the stream);
response bytes are sent as the stream's window allows, and the server
connection is paused while they wait (or while the client's TCP
connection is full).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Optional

from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError, StreamClosedError
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from lbkit._address import formatAddress
from lbkit._model import Server
from lbkit._pump import holdProducer
from lbkit.http._body import CHUNKED
from lbkit.http._h1 import streamExchange
from lbkit.http._h2head import MalformedRequest, checkRequestHead, checkTrailers, sendWindowed
from lbkit.http._h2ws import tunnelHeaders, websocketRequest
from lbkit.http._headers import HOP, connectionTokens, errorBody
from lbkit.http._parse import Request, Response
from lbkit.http._server import HTTPServerProtocol
from lbkit.http._states import WAITING
from lbkit.http._timeouts import checkTimeouts
from lbkit.http._trailers import chunkedEnd
from lbkit.http._tunnel import refusedConnect
from lbkit.interfaces import ISession

if TYPE_CHECKING:
    from lbkit.http._h2 import H2FrontendProtocol

__all__ = ["H2Stream"]

_log = Logger(namespace="lbkit.http")


def _discard(data: bytes) -> None:
    pass


@implementer(ISession, IPushProducer)
class H2Stream:
    """
    One HTTP/2 stream, proxied as one HTTP/1.1 exchange.

    It is the L{ISession} of its request on the server (L{abortSession}
    resets the stream only), and the push producer of the request body
    for the server connection.

    @ivar producerPaused: Whether the server connection is paused because
        response bytes wait for the client (its window, or its full TCP
        connection).
    """

    decodesChunked = True
    #: WebSocket over HTTP/2 (L{lbkit.http._h2ws}): C{False} for any other
    #: stream, C{None} while the server's 101 is awaited, C{True} once DATA
    #: is the tunnel's.
    _tunnel: Optional[bool] = False

    def __init__(self, h2: H2FrontendProtocol, streamId: int) -> None:
        self.h2 = h2
        self.streamId = streamId
        self.producer: Any = None
        self.producerPaused = False
        self.writeResponse: Callable[[bytes], None] = self.fromServer
        self._forward: Callable[[bytes], None] = _discard
        self._readPaused = True
        #: request DATA not passed on yet: (bytes, flow-controlled size, last)
        self._pending: list[tuple[bytes, int, bool]] = []
        self._out: deque[bytes] = deque()
        self._outOffset = 0
        self._ending = False
        self._done = False
        self._clientEnded = False
        self._endOnHeaders = False
        self._abortCode = ErrorCodes.INTERNAL_ERROR
        self._sent = 0
        self._tick: Any = None
        #: request body bytes the client declared and has not sent yet, or None
        self._declaredLeft: Optional[int] = None
        #: the request's trailers (to a server in the last chunk), the response's (sent after its DATA)
        self._reqTrailers: Optional[list[tuple[bytes, bytes]]] = None
        self._trailers: Optional[list[tuple[bytes, bytes]]] = None
        frontend = h2.frontend
        mtls = getattr(getattr(frontend, "tls", None), "clientCA", None) is not None
        self.exchange = streamExchange(h2.factory, self, h2.client, h2.transport if mtls else None, h2.scheme)

    @property
    def session(self) -> ISession:
        """The L{ISession} in a server's C{sessions}: this stream."""
        return self

    @property
    def request(self) -> Optional[Request]:
        """The request, while its exchange is in progress."""
        return self.exchange.request

    def start(self, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        """The request's HEADERS arrived: check it, build the request, route it, choose a server."""
        try:
            head = checkRequestHead(headers, ended)
        except MalformedRequest as e:
            self.malformed(str(e))
            return
        self._clientEnded = ended
        if head.protocol is not None:  # extended CONNECT (RFC 8441)
            self._webSocket(head.protocol, head.path, head.fields)
            return
        request = Request(head.method, head.path or b"*", b"HTTP/1.1", head.fields)
        # lbkit frames the body for HTTP/1.1 itself: the declared length
        # (checked against the DATA received), else chunked
        length = head.contentLength
        self._declaredLeft = length
        framing = 0 if ended else CHUNKED if length is None else length
        exchange = self.exchange
        exchange.begin(request, framing, False, True, 0)
        h2 = self.h2
        self._tick = h2.reactor.callLater(h2.factory.tickInterval, self._checkTimeouts)
        if head.method == b"CONNECT" and refusedConnect(exchange, False):  # no plain CONNECT over HTTP/2
            return
        exchange.forward()

    def _webSocket(self, protocol: bytes, path: bytes, fields: list[list[bytes]]) -> None:
        """An extended CONNECT: a WebSocket handshake to the server, else 501."""
        exchange = self.exchange
        h2 = self.h2
        if protocol.lower() != b"websocket" or self._clientEnded:
            exchange.begin(Request(b"CONNECT", path, b"HTTP/1.1", fields), 0, False, True, 0)
            exchange.fail(501, "PR")
            return
        self._tunnel = None
        exchange.begin(websocketRequest(path, fields), 0, True, True, 0)
        self._tick = h2.reactor.callLater(h2.factory.tickInterval, self._checkTimeouts)
        exchange.forward()

    # -- request body: client -> server ------------------------------------

    def h2Data(self, data: bytes, flowLength: int) -> None:
        """A DATA frame of this stream arrived."""
        left = self._declaredLeft
        last = False
        if left is not None and data:
            # (the h2 package checks this too, as a connection error)
            left -= len(data)
            self._declaredLeft = left
            if left < 0:
                self.h2.ack(flowLength, self.streamId)
                self.malformed("more DATA than its content-length")
                return
            last = left == 0
        if self._done or self.exchange.bodyDone:
            if self._tunnel is not False and not self._done:  # WebSocket bytes
                self._pending.append((data, flowLength, False))
                self.deliverPending()
                return
            self.h2.ack(flowLength, self.streamId)
            return
        if self.exchange.framing == CHUNKED and data:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self._pending.append((data, flowLength, last))
        self.deliverPending()

    def h2End(self) -> None:
        """The client ended the stream (its request is complete)."""
        self._clientEnded = True
        if self._declaredLeft:
            self.malformed("stream ended before its content-length")
            return
        exchange = self.exchange
        if self._tunnel is not False and not self._done:
            self._pending.append((b"", 0, True))  # the end of the WebSocket: close the server's
            self.deliverPending()
        elif not self._done and not exchange.bodyDone and exchange.framing == CHUNKED:
            self._pending.append((chunkedEnd(self._reqTrailers), 0, True))
            self.deliverPending()

    def h2Trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """A trailers block arrived: checked, and sent in the last chunk of a chunked body."""
        try:
            checkTrailers(headers)
        except MalformedRequest as e:
            self.malformed(str(e))
            return
        self._reqTrailers = headers

    def malformed(self, why: str) -> None:
        """
        The request is malformed (RFC 9113 §8.1.1): RST_STREAM
        PROTOCOL_ERROR; a server connection it went to is aborted, never
        pooled (it may be waiting for body bytes that will not come).
        """
        if self._done:
            return
        _log.info("{client}: stream {sid}: malformed HTTP/2 request refused: {why}",
                  client=formatAddress(self.h2.client), sid=self.streamId, why=why)
        self._abortCode = ErrorCodes.PROTOCOL_ERROR
        if self.exchange.active:
            self.exchange.abortExchange("PR")
        else:
            self.reset(ErrorCodes.PROTOCOL_ERROR)
        self.h2.glitch("malformed requests")

    def deliverPending(self) -> None:
        """Pass waiting request bytes on, unless the server side is paused."""
        exchange = self.exchange
        pending = self._pending
        while pending and not self._readPaused and not self._done:
            if exchange.bodyDone and self._tunnel is None:
                break  # WebSocket bytes wait for the server's 101
            data, size, last = pending.pop(0)
            if not exchange.bodyDone:
                if data:
                    exchange.bytesIn += len(data)
                    self._forward(data)
                if last:
                    exchange.requestBodyDone()
            elif self._tunnel:
                if data:
                    exchange.bytesIn += len(data)
                    self._forward(data)
                if last and exchange.conn is not None:
                    exchange.conn.close()  # its loss ends the stream (tunnelEnded)
            self.h2.ack(size, self.streamId)
        self.h2.flush()

    # -- ClientSide: what the exchange asks of the stream ---------------------

    def pauseReading(self) -> None:
        self._readPaused = True

    def resumeReading(self) -> None:
        self._readPaused = False
        self.deliverPending()

    # IPushProducer, for the server connection: its buffer is full / has room
    pauseProducing = pauseReading
    resumeProducing = resumeReading

    def stopProducing(self) -> None:
        pass

    def serverAttached(self, conn: HTTPServerProtocol) -> None:
        self.producer = conn.transport
        self.producerPaused = False
        self.updateProducer()
        if not self.exchange.bodyDone:
            conn.transport.registerProducer(self, True)  # type: ignore[union-attr]
            self._forward = conn.send if self.exchange.mirror is None else self.exchange.mirror.tee(conn.send)
        self.resumeReading()

    def serverDetached(self) -> None:
        self.producer = None

    def responseHeadBytes(self, response: Response, framing: int, interim: bool) -> bytes:
        """Send the response head as a HEADERS frame: nothing is left to write."""
        headers = [(b":status", b"%d" % response.code)]
        tokens = connectionTokens(response.headers)
        for name, value in response.headers:
            lower = name.lower()
            if lower in HOP or lower in tokens:
                continue
            headers.append((lower, value))
        end = not interim and framing == 0
        if self._sendHeaders(headers, end) and end:
            self._streamEnded()
        return b""

    def startTunnel(self, conn: HTTPServerProtocol, response: Response) -> int:
        """The server switched to WebSocket: C{:status 200}, then DATA both ways, flow-controlled."""
        self._tunnel = True
        if self._sendHeaders(tunnelHeaders(response), False):
            conn.transport.registerProducer(self, True)  # type: ignore[union-attr]
            self._forward = conn.send
            self.resumeReading()
        return 0

    def sendError(self, status: int) -> int:
        body, contentType = errorBody(status, self.exchange.frontend.errorPages)
        headers = [
            (b":status", b"%d" % status),
            (b"content-type", contentType),
            (b"cache-control", b"no-cache"),
            (b"content-length", b"%d" % len(body)),
        ]
        if self._sendHeaders(headers, False):
            self._out.append(body)
            self.flushOut()
        return len(body)

    def drain(self) -> bool:
        # the response is complete: the rest of the request is not wanted
        # (the stream ends, then RST_STREAM NO_ERROR, RFC 9113 §8.1)
        return False

    def nextRequest(self) -> None:
        self.closeClient()  # one exchange per stream

    def closeClient(self) -> None:
        """The exchange is over: end the stream once its bytes are sent."""
        if self._done:
            return
        self._ending = True
        self.flushOut()

    def abort(self) -> None:
        self.reset(self._abortCode)

    def serverReset(self, code: ErrorCodes) -> None:
        """An HTTP/2 server reset the response mid-way: the stream is reset with the same code."""
        self._abortCode = code

    def stalled(self) -> bool:
        return self.producerPaused

    def responseBytes(self, conn: HTTPServerProtocol, complete: bool) -> int:
        if complete:
            return self._sent + sum(len(c) for c in self._out) - self._outOffset
        return self._sent

    def getHost(self) -> Any:
        return self.h2.transport.getHost()  # type: ignore[union-attr]

    def takePrivate(self, server: Server) -> Optional[HTTPServerProtocol]:
        return None

    def keepPrivate(self, conn: HTTPServerProtocol) -> None:
        conn.close()  # one exchange per stream: nothing to keep it for

    # -- response: server -> client ------------------------------------------

    def writeTrailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        """The response's trailers: sent as a HEADERS frame after its DATA (L{lbkit.http._trailers})."""
        self._trailers = fields

    def fromServer(self, data: bytes) -> None:
        """Response body bytes from the server (the data of a chunked body)."""
        if not data or self._done:
            return
        self._out.append(data)
        self.flushOut()

    def flushOut(self) -> None:
        """
        Send buffered response bytes as far as the flow-control windows
        allow, and not into a client connection that is full.
        """
        if self._done:
            return
        h2 = self.h2
        conn = h2.conn
        out = self._out
        sid = self.streamId
        try:
            if not h2.paused:
                self._outOffset, sent = sendWindowed(conn, sid, out, self._outOffset)
                self._sent += sent
            if not out and self._ending:
                trailers = self._trailers
                if trailers:
                    conn.send_headers(sid, trailers, end_stream=True)
                else:
                    conn.end_stream(sid)
                self._streamEnded()
        except ProtocolError as e:
            self._broken(e)
        self.h2.flush()
        self.updateProducer()

    def updateProducer(self) -> None:
        """Pause the server connection while response bytes wait, resume it when they are gone."""
        if self.producer is not None:
            holdProducer(self, bool(self._out) or self.h2.paused)

    # -- the stream's end ------------------------------------------------------

    def _checkTimeouts(self) -> None:
        self._tick = None
        if self._done or not self.exchange.active:
            return
        if checkTimeouts(self.exchange, self.h2.reactor.seconds()):
            return
        self._tick = self.h2.reactor.callLater(self.h2.factory.tickInterval, self._checkTimeouts)

    def _sendHeaders(self, headers: list[tuple[bytes, bytes]], end: bool) -> bool:
        if self._done:
            return False
        try:
            self.h2.conn.send_headers(self.streamId, headers, end_stream=end)
        except ProtocolError as e:
            self._broken(e)
            return False
        self.h2.flush()
        return True

    def _broken(self, error: ProtocolError) -> None:
        """C{h2} refused to send: the client reset the stream, or what the server sent cannot go out."""
        termination = "CD"
        if not isinstance(error, StreamClosedError):
            _log.info("{client}: stream {sid}: cannot send the response: {why}",
                      client=formatAddress(self.h2.client), sid=self.streamId, why=str(error))
            self._resetQuietly(ErrorCodes.INTERNAL_ERROR)
            termination = "SD" if self.exchange.responseStarted else "SH"
        self.clientGone(termination)

    def _streamEnded(self) -> None:
        self._ending = False
        if not self._clientEnded:
            # the response is complete: the rest of the request is not wanted
            self._resetQuietly(ErrorCodes.NO_ERROR)
        self._finish()

    def reset(self, code: ErrorCodes) -> None:
        """Abandon the stream with RST_STREAM."""
        if self._done:
            return
        self._resetQuietly(code)
        self._finish()

    def _resetQuietly(self, code: ErrorCodes) -> None:
        try:
            self.h2.conn.reset_stream(self.streamId, code)
        except ProtocolError:
            pass
        self.h2.flush()

    def clientReset(self) -> None:
        """
        The client reset the stream.  One reset before the request went to
        a server (routing, queue, connect) is not logged: it cost no server
        anything, and a flood of them would flood the log too.
        """
        if self.exchange.state is WAITING:
            self.exchange.quiet = True
        self.clientGone("CD")

    def clientGone(self, termination: str) -> None:
        """The client reset the stream, or its connection is gone."""
        if self._done:
            return
        self.exchange.clientLost(termination)
        self._finish()

    def kill(self) -> None:
        """The frontend's grace period is over: abort the exchange (C{KD})."""
        if self.exchange.active:
            self.exchange.abortExchange("KD")

    def abortSession(self) -> None:
        """
        Cut the request in flight now (its server was taken down with its
        sessions): the stream is reset, the connection goes on; logged with
        termination C{SK}.
        """
        if self.exchange.active:
            self.exchange.abortExchange("SK")

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._out.clear()
        pending, self._pending = self._pending, []
        for _, size, _ in pending:
            self.h2.ack(size, self.streamId)
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self.h2.streamClosed(self)
