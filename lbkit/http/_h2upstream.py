# -*- test-case-name: tests.test_h2up -*-
"""
http mode: one HTTP/2 stream to a server (L{H2UpStream}), on an
L{lbkit.http._h2up.H2ServerProtocol} connection.

To the exchange it is what an L{lbkit.http._server.HTTPServerProtocol} is
(C{startExchange}, C{send}, C{release}, C{close}, C{abort}, C{bytes},
C{reused}, C{sink}) and its own C{transport} (the producer and consumer
the client side registers), so the exchange and both client sides run
unchanged: the request head lbkit built for HTTP/1.1 is turned into an
HTTP/2 header block, the request body (in its HTTP/1.1 framing) into DATA
frames, and the response into a head, a body (chunked again for an
HTTP/1.1 client when its length is unknown) and trailers.

Flow control both ways: request DATA goes out as the server's windows
allow, and the client side is paused while it waits; response DATA is
acknowledged (WINDOW_UPDATE) only while the client side takes it, so a
slow client holds back its own stream and no other.

A stream the server refused (RST_STREAM REFUSED_STREAM, or above the
last stream id of its GOAWAY) was not processed: it is sent again on
another connection, with the request body lbkit kept for that (up to
L{REPLAY_LIMIT} bytes; past it the request fails as any other would).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Optional

from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit._model import Server
from lbkit._pump import holdProducer
from lbkit.error import LBKitError
from lbkit.http._body import CHUNKED, ChunkedFramer
from lbkit.http._h2head import sendWindowed
from lbkit.http._h2uphead import requestHeaders
from lbkit.http._parse import BadMessage, Response
from lbkit.http._trailers import (
    NOT_TRAILERS,
    chunkedEnd,
    passTrailers,
    trailerFields,
    wantsTrailers,
)

if TYPE_CHECKING:
    from lbkit.http._h2up import H2ServerProtocol

__all__ = ["H2UpStream", "StreamReset", "REPLAY_LIMIT", "MAX_REPLAYS"]

#: At most this many bytes of a request body are kept to send it again
#: when the server refuses its stream (REFUSED_STREAM, GOAWAY).
REPLAY_LIMIT = 64 * 1024
#: A request refused this many times is not sent again (it fails as after
#: a reset): a server that refuses everything is not retried for ever.
MAX_REPLAYS = 3

#: Response fields that do not go to an HTTP/1.1 client as they came.
_FRAMING = frozenset([b"transfer-encoding", b"connection", b"keep-alive", b"upgrade", b"proxy-connection"])


def _discard(data: bytes) -> None:
    pass


class StreamReset(LBKitError):
    """
    The server reset a stream (RST_STREAM) before its response head, or
    refused it with no way to send it again.

    @ivar code: The HTTP/2 error code.
    """

    def __init__(self, code: Any) -> None:
        LBKitError.__init__(self, f"stream reset by the server: {code!r}")
        self.code = code


@implementer(IPushProducer, IConsumer)
class H2UpStream:
    """
    One request on an HTTP/2 connection to a server, as the exchange sees
    a server connection (see the module docstring).

    @ivar h2: Its connection.
    @ivar streamId: Its stream id, once its head went out; else C{None}.
    @ivar sink: The exchange it reports to (a
        L{lbkit.http._server.ResponseSink}), or C{None}.
    @ivar bytes: Response bytes written towards the client.
    @ivar reused: Whether its connection carried a stream before.
    @ivar paused: Whether the client side does not take the response
        (its DATA is then not acknowledged).
    """

    private = False
    idleSince = 0.0
    streamId: Optional[int] = None
    producer: Any = None
    producerPaused = False
    paused = False

    def __init__(self, h2: H2ServerProtocol) -> None:
        self.h2 = h2
        self.server: Server = h2.server
        self.pool = h2.pool
        self.reused = h2.opened > 0
        self.transport = self
        self.sink: Any = None
        self.bytes = 0
        self.reserved = True
        self.closed = False
        self.headDone = False
        self._write: Callable[[bytes], None] = _discard
        self._isHead = False
        self._chunked = False
        self._unacked = 0
        self._out: deque[bytes] = deque()
        self._outOffset = 0
        self._bodyEnded = True
        self._endSent = False
        self._framer: Optional[ChunkedFramer] = None
        self._left = 0
        self._kept: Optional[list[bytes]] = []
        self._keptSize = 0
        self._trailers: Optional[list[tuple[bytes, bytes]]] = None
        self._remoteEnded = False
        #: response DATA of the current read, and its flow-controlled size
        self._batch: list[bytes] = []
        self._batchSize = 0

    def __repr__(self) -> str:
        return f"<H2UpStream {self.server.name} {self.streamId}>"

    @property
    def connected(self) -> bool:
        """Whether the stream may still carry its request."""
        return not self.closed

    # -- the request ---------------------------------------------------------

    def startExchange(self, sink: Any, head: bytes, method: bytes) -> None:
        """Attach to C{sink} and send the request head (of a C{method} request, as HTTP/2 HEADERS)."""
        self.sink = sink
        self._write = sink.writeResponse
        self._isHead = method == b"HEAD"
        h2 = self.h2
        exchange = getattr(sink, "exchange", sink)
        request = exchange.request
        try:
            if sink.upgrading:
                raise BadMessage("no protocol upgrade to an HTTP/2 server", 502)
            trailers = request is not None and wantsTrailers(request.headers)
            headers, framing = requestHeaders(head, b"https" if self.server.tls else b"http", trailers)
        except BadMessage as e:
            # (not from inside the exchange's own send: a turn later)
            h2.reactor.callLater(0, self._failed, e)
            return
        kept = getattr(exchange, "h2Replay", None)
        replay = None
        if kept is not None:
            exchange.h2Replay = None
            if kept[0] is request:  # (not a request given up on before it went again)
                replay = kept[1]
        self._bodyEnded = framing == 0
        if framing == CHUNKED:
            self._framer = ChunkedFramer(True)
        elif framing > 0:
            self._left = framing
        if not h2.startStream(self, headers, framing == 0):
            h2.reactor.callLater(0, self.refused)
            return
        if replay:
            self.send(replay)

    def send(self, data: bytes) -> None:
        """Request body bytes, in the HTTP/1.1 framing of the request head."""
        if self.closed or self._bodyEnded:
            return
        kept = self._kept
        if kept is not None:
            self._keptSize += len(data)
            if self._keptSize > REPLAY_LIMIT:
                self._kept = None
            else:
                kept.append(data)
        framer = self._framer
        out = self._out
        if framer is not None:
            try:
                framer.feed(data)
            except BadMessage:
                self.abort()
                return
            pieces, framer.pieces = framer.pieces, []
            out.extend(p for p in pieces or () if p)
            if framer.done:
                self._bodyEnded = True
                if framer.trailers:
                    self._trailers = trailerFields(framer.trailers)
        else:
            left = self._left
            n = len(data) if len(data) < left else left
            if n:
                out.append(data if n == len(data) else data[:n])
            self._left = left - n
            if self._left == 0:
                self._bodyEnded = True
        self.flushBody()

    def flushBody(self) -> None:
        """Send request body bytes as the windows allow; end the stream after the last."""
        sid = self.streamId
        if self.closed or sid is None:
            return
        h2 = self.h2
        conn = h2.conn
        out = self._out
        try:
            if h2.writable:
                self._outOffset, _ = sendWindowed(conn, sid, out, self._outOffset)
            if not out and self._bodyEnded and not self._endSent:
                self._endSent = True
                trailers = self._trailers
                if trailers:
                    conn.send_headers(sid, trailers, end_stream=True)
                else:
                    conn.end_stream(sid)
        except ProtocolError:
            out.clear()  # the server closed its side: nothing more goes
        h2.flush()
        if self.producer is not None:
            holdProducer(self, bool(out))

    # -- IConsumer (the client side's body) and IPushProducer (the response) --

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """The client side produces the request body."""
        self.producer = producer
        self.producerPaused = False

    def unregisterProducer(self) -> None:
        """The request body is over (or the exchange is)."""
        self.producer = None

    def write(self, data: bytes) -> None:
        """As L{send}."""
        self.send(data)

    def pauseProducing(self) -> None:
        """The client side does not take the response: acknowledge nothing more."""
        self.paused = True

    def resumeProducing(self) -> None:
        """The client side takes the response again: acknowledge what it took."""
        self.paused = False
        if self._unacked:
            size, self._unacked = self._unacked, 0
            self.h2.ack(size, self.streamId)
            self.h2.flush()

    def stopProducing(self) -> None:
        """The client side is gone: the exchange ends the stream."""

    # -- the response (called by the connection) ------------------------------

    def h2Response(self, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        """The response head (HEADERS) arrived, or an interim one."""
        sink = self.sink
        if sink is None or self.headDone:
            return
        code = 0
        fields: list[list[bytes]] = []
        length: Optional[bytes] = None
        for name, value in headers:
            if name[:1] == b":":
                if name == b":status" and value.isdigit():
                    code = int(value)
                continue
            if name in _FRAMING:
                continue
            if name == b"content-length":
                length = value
            fields.append([name, value])
        if not 100 <= code <= 999:
            self._failed(BadMessage("HTTP/2 response without a valid :status", 502))
            return
        response = Response(b"HTTP/1.1", code, b"", fields)
        if code < 200:
            if code != 101:
                sink.interimResponse(response)
            return
        if ended or self._isHead or code == 204 or code == 304:
            framing = 0
        elif length is not None and length.isdigit():
            framing = int(length)
        else:
            framing = CHUNKED
            if not sink.decodesChunked:
                fields.append([b"transfer-encoding", b"chunked"])
                self._chunked = True
        self.headDone = True
        self._kept = None  # answered: it will not be sent again
        head = sink.responseHead(self, response, framing)
        if self.sink is None:
            return
        if head:
            self._write(head)
        if framing == 0:
            self._finished()

    def filterBody(self, sink: Any) -> None:
        """
        From the sink's C{responseHead}: report to C{sink} from now on and
        write the head and the body's data through it, unframed (a filter:
        L{lbkit.http._compress.CompressingSink}, which frames it itself).
        """
        self.sink = sink
        self._write = sink.writeResponse
        self._chunked = False

    def h2Data(self, data: bytes, size: int) -> bool:
        """
        Response DATA arrived (C{size} bytes of the windows): kept until
        L{deliver}, which the connection calls once per read (one write and
        one acknowledgement for all the DATA of a read).

        @return: Whether it was kept (the stream must then be delivered).
        """
        if self.sink is None or not self.headDone:
            self.h2.ack(size, self.streamId)
            return False
        batch = self._batch
        if data:
            batch.append(data)
        self._batchSize += size
        return len(batch) == 1 or (not data and self._batchSize == size)

    def deliver(self) -> None:
        """Write the DATA kept from this read, and acknowledge it unless the client side is paused."""
        batch, size = self._batch, self._batchSize
        if not size:
            return
        self._batch = []
        self._batchSize = 0
        if self.sink is None:
            self.h2.ack(size, self.streamId)
            return
        if batch:
            data = batch[0] if len(batch) == 1 else b"".join(batch)
            if self._chunked:
                data = b"%x\r\n%s\r\n" % (len(data), data)
            self.bytes += len(data)
            self._write(data)
        if self.paused:
            self._unacked += size
        else:
            self.h2.ack(size, self.streamId)

    def h2Trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """The response's trailers arrived (the stream ends with them)."""
        self.deliver()
        self._trailers = [(n, v) for n, v in headers if n[:1] != b":" and n not in NOT_TRAILERS]

    def h2End(self) -> None:
        """The server ended the stream: the response is complete."""
        self._remoteEnded = True
        self.deliver()
        sink = self.sink
        if sink is None:
            return
        if not self.headDone:
            self._failed(BadMessage("HTTP/2 stream ended without a response", 502))
            return
        trailers = self._trailers
        if self._chunked:
            end = chunkedEnd(trailers)
            self.bytes += len(end)
            self._write(end)
        elif trailers and sink.decodesChunked:
            passTrailers(sink, trailers)
        self._finished()

    def h2Reset(self, code: Any) -> None:
        """The server reset the stream."""
        self.deliver()
        self.closed = True
        if code == ErrorCodes.REFUSED_STREAM and not self.headDone:
            self.refused()
            return
        sink = self.sink
        if sink is None:
            return
        if self.headDone:
            # an HTTP/2 client's stream is reset with the server's code (gRPC: CANCEL is CANCELLED)
            serverReset = getattr(getattr(sink, "side", None), "serverReset", None)
            if serverReset is not None and code != ErrorCodes.NO_ERROR:
                serverReset(code)
            sink.abortExchange("SD")
        else:
            sink.serverFailed(self, Failure(StreamReset(code)), False)

    def h2Lost(self, reason: Failure, refused: bool) -> None:
        """The connection is gone (C{refused}: above its GOAWAY's last stream id)."""
        self.deliver()
        self.closed = True
        sink = self.sink
        if sink is None:
            return
        if refused:
            self.refused()
        elif not self.headDone:
            sink.serverFailed(self, reason, False)
        else:
            sink.abortExchange("SD")

    def refused(self, counted: bool = True) -> None:
        """
        The server did not process this stream: send the request again on
        another connection (with the body kept for that), or fail it.

        @param counted: Whether this counts as one of the request's
            L{MAX_REPLAYS} (not when it waited for a connection that turned
            out to take fewer streams).
        """
        sink, self.sink = self.sink, None
        if sink is None:
            return
        self.closed = True
        kept = self._kept
        request = sink.request
        before = getattr(sink, "h2Refused", None)
        count = (before[1] if before is not None and before[0] is request else 0) + (1 if counted else 0)
        if kept is None or getattr(sink, "dispatch", None) is None or count > MAX_REPLAYS:
            self.sink = sink
            sink.serverFailed(self, Failure(StreamReset(ErrorCodes.REFUSED_STREAM)), False)
            return
        sink.h2Refused = (request, count)
        sink.h2Replay = (sink.request, b"".join(kept)) if kept else None
        sink.detachServer(self)
        sink.resend(True, "empty-response", "SH", 502)

    def _failed(self, reason: BadMessage) -> None:
        sink = self.sink
        if sink is not None:
            sink.serverFailed(self, reason, True)

    def _finished(self) -> None:
        sink, self.sink = self.sink, None
        self._write = _discard
        if sink is not None:
            sink.responseDone(self)

    # -- ending --------------------------------------------------------------

    def release(self, reusable: bool = True, keep: Optional[Callable[[Any], None]] = None) -> None:
        """
        The exchange is over: a stream not ended both ways is reset
        (CANCEL); the connection's windows get back what it held.
        """
        self.sink = None
        self._write = _discard
        self._out.clear()
        h2 = self.h2
        self._batch = []
        self._unacked += self._batchSize
        self._batchSize = 0
        if self._unacked:
            size, self._unacked = self._unacked, 0
            h2.ack(size, self.streamId)
        if not self.closed:
            self.closed = True
            if self.streamId is not None and not (self._remoteEnded and self._endSent):
                h2.resetStream(self.streamId, ErrorCodes.CANCEL)
        h2.streamDone(self)

    def close(self) -> None:
        """Give the stream up (reset if still open)."""
        self.release(False)

    abort = close

    def loseConnection(self) -> None:
        """As L{close}."""
        self.release(False)

    abortConnection = loseConnection
