# -*- test-case-name: tests.test_compression -*-
"""
http mode, response compression as the response flows (docs/http.md,
"Compression"): L{compressResponse} is what an exchange's C{responseHead}
calls on a frontend with compression (L{lbkit.http.Compression}).  When
the response is to be compressed, it rewrites the head and puts a
L{CompressingSink} between the server connection and the exchange: each
piece of the body the connection reads (a chunked body decoded) is
compressed and written at once, so that back-pressure stays the
connection's (a client that does not read pauses the server connection,
as without compression) and nothing is held beyond the encoder's window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Union

from twisted.python.failure import Failure

from lbkit.http._body import CHUNKED, UNTIL_CLOSE
from lbkit.http._compression import Compression, Encoder, negotiate, weakETag
from lbkit.http._parse import BadMessage, Response
from lbkit.http._routing import Route
from lbkit.http._server import HTTPServerProtocol

if TYPE_CHECKING:
    from lbkit.http._exchange import Exchange

__all__ = ["CompressingSink", "compressResponse", "compressionFor"]


def compressionFor(exchange: Exchange) -> Optional[Compression]:
    """The L{Compression} of the exchange's route, else its frontend's (C{None}: none)."""
    route = exchange.route
    if isinstance(route, Route):
        own = route.compression
        if own is not None:
            return own if isinstance(own, Compression) else None
    return exchange.frontend.compression  # type: ignore[no-any-return]


#: The headers of a response that compression replaces or drops.
_REPLACED = frozenset((b"content-length", b"accept-ranges", b"etag", b"transfer-encoding"))


def _addVary(response: Response) -> None:
    for value in response.headerValues(b"vary"):
        tokens = [t.strip().lower() for t in value.split(b",")]
        if b"accept-encoding" in tokens or b"*" in tokens:
            return
    response.headers.append([b"Vary", b"Accept-Encoding"])


def compressResponse(exchange: Exchange, conn: HTTPServerProtocol, response: Response, framing: int) -> bytes:
    """
    C{Exchange.responseHead} on a frontend with compression: the head of
    C{response} as it goes to the client (accounted on C{conn.bytes}),
    compressed as negotiated and then written through a L{CompressingSink}
    if it should be.

    Sent as they are: responses without a body (C{HEAD}, 204, 304, a
    length of 0) or whose end is the server closing, to HTTP/1.0
    clients (as nginx), and those L{Compression.eligible} refuses.  An
    eligible response gets C{Vary: Accept-Encoding} whatever the client
    accepts, for caches.  The frontend factory counts responses compressed
    (C{compRsp}) and sent as they were (C{compByp}), and the body bytes
    in and out of the encoders (C{compIn}, C{compOut}; docs/stats.md).
    """
    side = exchange.side
    compression = compressionFor(exchange)
    request = exchange.request
    if (
        compression is not None
        and framing != 0
        and framing != UNTIL_CLOSE
        and request is not None
        and request.version != b"HTTP/1.0"
        and compression.eligible(response)
    ):
        _addVary(response)
        algorithm = negotiate(b",".join(request.headerValues(b"accept-encoding")), compression.algorithms)
        if algorithm is not None:
            etag = response.header(b"etag")
            response.headers = [h for h in response.headers if h[0].lower() not in _REPLACED]
            response.headers.append([b"Content-Encoding", algorithm.encode("ascii")])
            if etag is not None:
                response.headers.append([b"ETag", weakETag(etag) or b""])
            chunked = not side.decodesChunked
            if chunked:
                response.headers.append([b"Transfer-Encoding", b"chunked"])
            head = exchange.writer.responseHeadBytes(response, CHUNKED, False)  # (a cache copies it)
            conn.bytes += len(head)
            encoder = compression.encoder(algorithm, framing if framing > 0 else None)
            sink = CompressingSink(exchange, conn, encoder, chunked, len(head))
            conn.filterBody(sink)
            exchange.factory.compRsp += 1
            return head
    if compression is not None:
        exchange.factory.compByp += 1
    head = exchange.writer.responseHeadBytes(response, framing, False)
    conn.bytes += len(head)
    return head


class CompressingSink:
    """
    The L{lbkit.http._server.ResponseSink} of a server connection whose
    response is compressed: it passes the head through, compresses each
    piece of the body and writes it to the client side (in chunks to an
    HTTP/1.1 client), ends the stream when the response is done, then
    hands the end to the exchange.  Everything else goes to the exchange.

    @ivar sent: The bytes written to the client for this response (head
        included); kept in C{conn.bytes} for the access log.
    """

    upgrading = False
    decodesChunked = True
    writeResponse: Callable[[bytes], None]

    def __init__(self, exchange: Exchange, conn: HTTPServerProtocol, encoder: Encoder, chunked: bool,
                 headSize: int) -> None:
        self.exchange = exchange
        self.conn = conn
        self._write: Callable[[bytes], None] = exchange.writer.writeResponse  # type: ignore[has-type]  # (client side or cache)
        self._encoder = encoder
        self._chunked = chunked
        #: Bytes of the head still to pass through as they are.
        self._head = headSize
        self.sent = conn.bytes
        self.writeResponse = self.compress

    def compress(self, data: bytes) -> None:
        """The head (as given), then body bytes (decoded) from the server."""
        head = b""
        if self._head:
            head, data = data[: self._head], data[self._head :]
            self._head -= len(head)
        out = self._encoder.compress(data) if data else b""
        factory = self.exchange.factory
        factory.compIn += len(data)
        factory.compOut += len(out)
        if out and self._chunked:
            out = b"%x\r\n%s\r\n" % (len(out), out)
        if head:
            out = head + out
        if out:
            self.sent += len(out) - len(head)
            self.conn.bytes = self.sent
            self._write(out)

    def responseDone(self, conn: HTTPServerProtocol) -> None:
        """The body is complete: end the compressed stream, then the exchange's response."""
        tail = self._encoder.finish()
        self.exchange.factory.compOut += len(tail)
        if self._chunked:
            tail = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail)) if tail else b"0\r\n\r\n"
        self.sent += len(tail)
        conn.bytes = self.sent
        if tail:
            self._write(tail)
        self.exchange.responseDone(conn)

    def abortExchange(self, termination: str) -> None:
        """The response broke mid-body."""
        self.exchange.abortExchange(termination)

    # -- the rest of a ResponseSink: the head is past, they go to the exchange

    def interimResponse(self, response: Response) -> None:
        """A 1xx head (not after the final one: for completeness)."""
        self.exchange.interimResponse(response)

    def responseHead(self, conn: HTTPServerProtocol, response: Response, framing: int) -> bytes:
        """A final head (not after the final one: for completeness)."""
        return self.exchange.responseHead(conn, response, framing)

    def tunnelStarted(self, conn: HTTPServerProtocol, response: Response) -> None:
        """A 101 (not after a final head: for completeness)."""
        self.exchange.tunnelStarted(conn, response)

    def serverFailed(self, conn: HTTPServerProtocol, reason: Union[Failure, BadMessage], sentNothing: bool) -> None:
        """The connection failed before a head (not after one: for completeness)."""
        self.exchange.serverFailed(conn, reason, sentNothing)

    def tunnelEnded(self) -> None:
        """A tunnel ended (never one here: for completeness)."""
        self.exchange.tunnelEnded()
