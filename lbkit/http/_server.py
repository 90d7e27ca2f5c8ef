# -*- test-case-name: tests.test_http -*-
"""
http mode: the server side of the proxy, one connection to a server that
carries one request at a time and waits in the pool between requests.

While it carries a request, the connection reports to a L{ResponseSink}
(the request's exchange, L{lbkit.http._exchange.Exchange}): the response
heads it parses, the response bytes to pass on, and how it ended.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol, Union

from twisted.internet import protocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from lbkit._model import Server
from lbkit._pump import tune, writeThrough
from lbkit.http._body import UNTIL_CLOSE, BodyReader, bodyLength
from lbkit.http._headers import connectionTokens
from lbkit.http._parse import BadMessage, HeadReader, Response, parseResponseHead
from lbkit.http._pool import ConnectionPool
from lbkit.http._trailers import passTrailers, trailerFields

__all__ = ["HTTPServerProtocol", "ResponseSink"]


def _discard(data: bytes) -> None:
    pass


class ResponseSink(Protocol):
    """
    What an L{HTTPServerProtocol} reports to while it carries a request
    (from L{HTTPServerProtocol.startExchange} until the response is done or
    the sink detaches by setting the connection's C{sink} to C{None}).  All
    on the reactor thread; a method may detach the sink, and the connection
    then stops reporting.

    @ivar writeResponse: Writes bytes of the response towards the client:
        the final head (as L{responseHead} returned it) and the body, in
        its HTTP/1.1 framing, or only the data of a chunked body with
        L{decodesChunked}.  Read once per request, at L{startExchange}.
    @ivar upgrading: Whether the request asked for a protocol upgrade, so
        that a C{101 Switching Protocols} may answer it (anything else is
        an invalid response).
    @ivar decodesChunked: Whether a chunked response body is wanted as its
        data (an HTTP/2 client), not in its framing.
    """

    writeResponse: Callable[[bytes], None]
    upgrading: bool
    decodesChunked: bool

    def interimResponse(self, response: Response) -> None:
        """A 1xx response head (not 101) arrived; the final one is still to come."""

    def responseHead(self, conn: HTTPServerProtocol, response: Response, framing: int) -> bytes:
        """
        The final response head arrived, with its body's framing (0 for
        none, a byte count, C{CHUNKED} or C{UNTIL_CLOSE}).

        @return: The head as it goes to the client (C{b""} if the sink sent
            it itself); the connection writes it with the first body bytes.
        """

    def tunnelStarted(self, conn: HTTPServerProtocol, response: Response) -> None:
        """
        A C{101 Switching Protocols} arrived for an upgrade: the sink
        writes its head, then every byte from the server goes through
        C{writeResponse} until L{tunnelEnded}.
        """

    def responseDone(self, conn: HTTPServerProtocol) -> None:
        """
        The whole response was written (C{conn.bytes} of it); the
        connection is detached and waits for L{HTTPServerProtocol.release}.
        """

    def serverFailed(self, conn: HTTPServerProtocol, reason: Union[Failure, BadMessage], sentNothing: bool) -> None:
        """
        The connection broke, or the server sent an invalid head, before a
        final response head: C{reason} is the connection's loss (the
        request may be retried) or the L{BadMessage}.
        """

    def abortExchange(self, termination: str) -> None:
        """The response broke mid-body (C{SD}): drop both connections."""

    def tunnelEnded(self) -> None:
        """The server side of a tunnel closed."""


class HTTPServerProtocol(protocol.Protocol):
    """
    One connection to a server, carrying one request at a time; kept in
    the pool between requests.
    """

    def __init__(self, server: Server, pool: ConnectionPool[HTTPServerProtocol]) -> None:
        self.server = server
        self.pool = pool
        #: The L{ResponseSink} of the request carried now, or C{None}.
        self.sink: Optional[ResponseSink] = None
        self.idleSince = 0.0
        self.reused = False
        #: Whether this connection began with a client's PROXY header: it
        #: then serves that client connection only, never the pool.
        self.private = False
        self.bytes = 0
        self._head = HeadReader(request=False)
        self._body = BodyReader()
        self._headDone = False
        self._headRequest = False
        self._method = b""
        self._decode = False
        self._tunnel = False
        self._reusable = True
        self._closing = False
        self._write: Callable[[bytes], None] = _discard
        #: A response head held back to go out with the first body bytes
        #: (one send instead of two).
        self._prefix = b""
        self.send: Callable[[bytes], None] = _discard

    def connectionMade(self) -> None:
        transport = self.transport
        tune(transport)
        self.send = writeThrough(transport)

    def startExchange(self, sink: ResponseSink, head: bytes, method: bytes) -> None:
        """Attach to C{sink} and send a request head (of a C{method} request)."""
        self.sink = sink
        self._write = sink.writeResponse
        self._decode = sink.decodesChunked
        self._head.buffered = b""
        self._headDone = False
        self._method = method
        self._headRequest = method == b"HEAD"
        self.bytes = 0
        self.send(head)

    def dataReceived(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            # Nothing was asked: a server talking out of turn is not reusable.
            self._reusable = False
            self.close()
            return
        if self._headDone:
            self._bodyData(data)
            return
        if self._tunnel:
            self.bytes += len(data)
            self._write(data)
            return
        reader = self._head
        buf = data
        while True:
            try:
                got = reader.feed(buf)
                if got is None:
                    return
                head, buf = got
                response = parseResponseHead(head)
                framing = bodyLength(response.headers, True, response._lower)
            except BadMessage as e:
                self._reusable = False
                sink.serverFailed(self, e, True)
                return
            code = response.code
            if code == 101 and not sink.upgrading:
                # switching protocols was not asked for: not a response to trust
                self._reusable = False
                sink.serverFailed(self, BadMessage("101 Switching Protocols without an Upgrade request", 502), True)
                return
            if code == 101:
                self._startTunnel(sink, response, buf)
                return
            if 100 <= code < 200:
                sink.interimResponse(response)
                if self.sink is None:
                    return
                continue
            break
        if code < 300 and sink.upgrading and self._method == b"CONNECT":  # an allowed CONNECT's 2xx
            self._startTunnel(sink, response, buf)
            return
        if self._headRequest or code == 204 or code == 304:
            framing = 0
        self._headDone = True
        if framing == UNTIL_CLOSE:
            self._reusable = False
        else:
            tokens = connectionTokens(response.headers, response._lower)
            if b"close" in tokens or (response.version == b"HTTP/1.0" and b"keep-alive" not in tokens):
                self._reusable = False
        body = self._body
        body.start(framing, self._decode)
        head = sink.responseHead(self, response, framing)
        sink = self.sink  # (responseHead may have put a filter in between, or detached)
        if sink is None:
            return
        if framing == len(buf):
            # the whole body is in hand (a byte count, or none): head and
            # body in one write, and the response is done (as _bodyData and
            # _writeWithHead, inline: the common small response)
            if framing:
                self.bytes += framing
                body.remaining, body.done = 0, True
                write = sink.writeResponse
                if framing <= 16384:
                    write(head + buf)
                else:
                    write(head)
                    write(buf)
            else:
                self._write(head)
            self._finished()
            if framing and not self._reusable:
                self.close()
            return
        if framing == 0 or not buf:
            self._write(head)
            if framing == 0:
                if buf:
                    self._reusable = False
                self._finished()
                if buf:
                    self.close()
            return
        self._prefix = head
        self._write = self._writeWithHead
        self._bodyData(buf)
        if self._prefix:  # the body broke before anything was written
            self._writeWithHead(b"")

    def _startTunnel(self, sink: ResponseSink, response: Response, buf: bytes) -> None:
        """A 101 to an upgrade, or a 2xx to an allowed CONNECT: every byte from now on is the tunnel's."""
        self._tunnel = True
        self._reusable = False
        sink.tunnelStarted(self, response)
        if buf:
            self.bytes += len(buf)
            self._write(buf)

    def _bodyData(self, data: bytes) -> None:
        reader = self._body
        try:
            n = reader.feed(data)
        except BadMessage:
            self._reusable = False
            sink = self.sink
            if sink is not None:
                sink.abortExchange("SD")
            return
        self.bytes += n
        framer = reader.framer
        if framer is not None and framer.pieces is not None:
            # the sink wants the data of the chunks: in one write per read
            # (a filter compresses and flushes each write)
            pieces, framer.pieces = framer.pieces, []
            if len(pieces) == 1:
                self._write(pieces[0])
            elif pieces:
                self._write(b"".join(pieces))
        else:
            self._write(data if n == len(data) else data[:n])
        if reader.done:
            if framer is not None and framer.trailers and self._decode:
                passTrailers(self.sink, trailerFields(framer.trailers))  # to an HTTP/2 client
            if n != len(data):
                self._reusable = False  # bytes beyond the response: do not trust it
            self._finished()
            if not self._reusable:
                self.close()

    def filterBody(self, sink: ResponseSink) -> None:
        """
        From the sink's C{responseHead}: report to C{sink} from now on, and
        write the head and the body's data (a chunked body decoded)
        through it (a filter: L{lbkit.http._compress.CompressingSink}).
        """
        self.sink = sink
        self._body.start(self._body.framing, True)
        self._write = sink.writeResponse

    def _writeWithHead(self, data: bytes) -> None:
        """The first write of a response body: the held-back head goes with it."""
        head, self._prefix = self._prefix, b""
        sink = self.sink
        write = self._write = sink.writeResponse if sink is not None else _discard
        if len(data) <= 16384:
            write(head + data)
        else:
            write(head)
            write(data)

    def _finished(self) -> None:
        sink, self.sink = self.sink, None
        self._headDone = False
        self._write = _discard
        if sink is not None:
            sink.responseDone(self)

    def release(self, reusable: bool, keep: Optional[Callable[[HTTPServerProtocol], None]] = None) -> None:
        """
        The exchange is over: go back to the pool (or to C{keep}, which
        then owns this idle connection), or close.
        """
        self.sink = None
        if reusable and self._reusable and not self._closing and self.connected:
            self.reused = True
            # a slow client may have paused us: an idle connection must read
            # (to notice the server closing) and the next exchange needs it
            self.transport.resumeProducing()  # type: ignore[union-attr]
            (keep or self.pool.put)(self)
        else:
            self.close()

    def close(self) -> None:
        """Close this connection (flushing what is buffered)."""
        self._closing = True
        if self.transport is not None:
            self.transport.unregisterProducer()  # type: ignore[attr-defined]
            self.transport.loseConnection()

    def abort(self) -> None:
        """Drop this connection now."""
        self._closing = True
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        sink, self.sink = self.sink, None
        if sink is None:
            self.pool.discard(self)
            return
        if self._tunnel:
            sink.tunnelEnded()
        elif not self._headDone:
            sink.serverFailed(self, reason, False)
        elif self._body.framing == UNTIL_CLOSE:
            sink.responseDone(self)
        else:
            sink.abortExchange("SD")
