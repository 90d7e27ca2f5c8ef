# -*- test-case-name: tests.test_http -*-
"""
http mode: the server side of the proxy, one connection to a server that
carries one request at a time and waits in the pool between requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from lbkit._model import Server
from lbkit._pump import tune, writeThrough
from lbkit.http._body import UNTIL_CLOSE, BodyReader, bodyLength
from lbkit.http._headers import connectionTokens
from lbkit.http._parse import BadMessage, HeadReader, parseResponseHead
from lbkit.http._pool import ConnectionPool

if TYPE_CHECKING:
    from lbkit.http._proxy import HTTPFrontendProtocol

__all__ = ["HTTPServerProtocol"]


def _discard(data: bytes) -> None:
    pass


class HTTPServerProtocol(Protocol):
    """
    One connection to a server, carrying one request at a time; kept in
    the pool between requests.
    """

    def __init__(self, server: Server, pool: ConnectionPool) -> None:
        self.server = server
        self.pool = pool
        self.front: Optional[HTTPFrontendProtocol] = None
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

    def startExchange(self, front: HTTPFrontendProtocol, head: bytes, isHead: bool) -> None:
        """Attach to C{front} and send a request head."""
        self.front = front
        self._write = front._write
        self._head.buffered = b""
        self._headDone = False
        self._headRequest = isHead
        self.bytes = 0
        self.send(head)

    def dataReceived(self, data: bytes) -> None:
        front = self.front
        if front is None:
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
                framing = bodyLength(response.headers, True)
            except BadMessage as e:
                self._reusable = False
                front.serverFailed(self, e, True)
                return
            code = response.code
            if code == 101 and not getattr(front, "_upgrade", False):
                # switching protocols was not asked for: not a response to trust
                self._reusable = False
                front.serverFailed(self, BadMessage("101 Switching Protocols without an Upgrade request", 502), True)
                return
            if code == 101:
                self._tunnel = True
                self._reusable = False
                front.responseHead(self, response, 0, tunnel=True)
                if buf:
                    self.bytes += len(buf)
                    self._write(buf)
                return
            if 100 <= code < 200:
                front.interimResponse(response)
                if self.front is None:
                    return
                continue
            break
        self._headDone = True
        if self._headRequest or code == 204 or code == 304:
            framing = 0
        if framing == UNTIL_CLOSE:
            self._reusable = False
        elif response.header(b"connection") is not None and b"close" in connectionTokens(response.headers):
            self._reusable = False
        elif response.version == b"HTTP/1.0" and b"keep-alive" not in connectionTokens(response.headers):
            self._reusable = False
        self._body.start(framing)
        head = front._responseHeadData(self, response, framing)
        if self.front is None:
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

    def _bodyData(self, data: bytes) -> None:
        reader = self._body
        try:
            n = reader.feed(data)
        except BadMessage:
            self._reusable = False
            front = self.front
            if front is not None:
                front.abortExchange("SD")
            return
        self.bytes += n
        self._write(data if n == len(data) else data[:n])
        if reader.done:
            if n != len(data):
                self._reusable = False  # bytes beyond the response: do not trust it
            self._finished()
            if not self._reusable:
                self.close()

    def _writeWithHead(self, data: bytes) -> None:
        """The first write of a response body: the held-back head goes with it."""
        head, self._prefix = self._prefix, b""
        front = self.front
        write = self._write = front._write if front is not None else _discard
        if len(data) <= 16384:
            write(head + data)
        else:
            write(head)
            write(data)

    def _finished(self) -> None:
        front, self.front = self.front, None
        self._headDone = False
        self._write = lambda data: None
        if front is not None:
            front.responseDone(self)

    def release(self, reusable: bool, keep: Optional[Callable[[HTTPServerProtocol], None]] = None) -> None:
        """
        The exchange is over: go back to the pool (or to C{keep}, which
        then owns this idle connection), or close.
        """
        self.front = None
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
        front, self.front = self.front, None
        if front is None:
            self.pool.discard(self)
            return
        if self._tunnel:
            front.tunnelEnded()
        elif not self._headDone:
            front.serverFailed(self, reason, False)
        elif self._body.framing == UNTIL_CLOSE:
            front.responseDone(self)
        else:
            front.abortExchange("SD")
