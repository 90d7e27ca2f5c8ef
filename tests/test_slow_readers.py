"""
Tests for what lbkit holds in memory for a client that stops reading: the
byte pump (L{lbkit._pump}) in tcp and http mode, through real sockets.
"""

from __future__ import annotations

import select
import socket
from typing import Any, Callable

from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from lbkit import Backend, Server, http
from lbkit._pump import BUFFER_SIZE
from lbkit.tcp import Frontend as TCPFrontend

from .helpers import TrackingFactory, listen

#: Slow-reader clients per test.
CLIENTS = 6
#: What the streaming server writes per call.
CHUNK = b"x" * 2**16


@implementer(IPushProducer)
class Streamer(Protocol):
    """
    A server that writes without end as fast as its connection takes it
    (it is its own transport's streaming producer): at once in tcp mode,
    after a response head announcing 1 GiB once a request head arrived in
    http mode.
    """

    http = False

    def __init__(self) -> None:
        self.paused = True
        self.started = False
        self.received = b""

    def connectionMade(self) -> None:
        if not self.http:
            self.start(b"")

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.http and not self.started and b"\r\n\r\n" in self.received:
            self.start(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % 2**30)

    def start(self, head: bytes) -> None:
        self.started = True
        assert self.transport is not None
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        if head:
            self.transport.write(head)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        transport: Any = self.transport
        while not self.paused and transport.connected and not transport.disconnecting:
            transport.write(CHUNK)  # pauses this producer once its buffer is full

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True


class HTTPStreamer(Streamer):
    http = True


class Answerer(Protocol):
    """An http server that answers every request at once with a 100 kB body."""

    def __init__(self) -> None:
        self.buf = b""
        self.answered = 0

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.answered += 1
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000)


class BigThenSlow(Protocol):
    """
    An http server: answers its first request at once with a 100 kB body,
    and every later one after L{delay} seconds.
    """

    delay = 0.8

    def __init__(self) -> None:
        self.buf = b""
        self.answered = 0

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.answered += 1
            if self.answered == 1:
                self.answer(b"x" * 100_000)
            else:
                self.late = reactor.callLater(self.delay, self.answer, b"late")

    def connectionLost(self, reason: Any = None) -> None:
        late = getattr(self, "late", None)
        if late is not None and late.active():
            late.cancel()

    def answer(self, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def held(transport: Any) -> int:
    """The bytes a Twisted TCP transport keeps in its write buffer."""
    return len(transport.dataBuffer) + transport._tempDataLen  # type: ignore[no-any-return]


def stalled(client: Any, server: Any) -> bool:
    """
    Whether a proxied connection has reached its final state for a client
    that reads nothing: lbkit no longer reads the server, and the client's
    socket takes no more (so nothing will write to it or resume reading).
    """
    if server in reactor.getReaders() or not held(client):
        return False
    _, writable, _ = select.select([], [client.socket], [], 0)
    return not writable


class SlowReaderTests(TestCase):
    """
    Clients with a tiny receive window that never read, in front of a server
    that streams without end: lbkit must stop reading the server with at most
    one read's worth (L{BUFFER_SIZE}) waiting per connection, not two.
    """

    timeout = 30

    def streamingBackend(self, protocol: Callable[[], Protocol]) -> Backend:
        """A backend of one streaming server; its connections are gone before cleanup ends."""
        factory = self.servers = TrackingFactory(protocol)
        port = listen(self, reactor, factory)
        self.addCleanup(lambda: factory.allLost())
        return Backend("be", [Server("s1", f"127.0.0.1:{port}")], timeoutServer=60)

    def slowReaders(self, port: int, request: bytes, count: int = CLIENTS) -> list[socket.socket]:
        """Connect C{count} clients that send C{request} and never read."""
        clients = []
        for _ in range(count):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.addCleanup(s.close)
            s.connect(("127.0.0.1", port))  # loopback: the kernel completes it at once
            if request:
                s.sendall(request)
            clients.append(s)
        return clients

    @inlineCallbacks
    def waitForStall(self, factory: Any, pairs: Callable[[Any], tuple[Any, Any] | None]) -> Any:
        """
        Wait until every client connection is stalled; return the pairs of
        lbkit transports (client's, server's) of each.
        """
        ready: list[tuple[Any, Any]] = []

        def allStalled() -> bool:
            found = [pairs(p) for p in list(factory.connections)]
            ready[:] = [pair for pair in found if pair is not None]
            return len(ready) == CLIENTS and all(stalled(c, s) for c, s in ready)

        yield self.waitFor(allStalled, "the connections never stalled")
        return ready

    @inlineCallbacks
    def waitFor(self, condition: Callable[[], bool], why: str) -> Any:
        """Wait until C{condition()}, checked every few reactor turns; fail with C{why} at last."""
        for _ in range(1000):
            if condition():
                return
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.fail(why)

    @inlineCallbacks
    def stallThrough(self, mode: str) -> Any:
        """
        Stall L{CLIENTS} slow readers through a C{mode} ("tcp" or "http")
        frontend; return the frontend's factory, the client sockets and the
        stalled pairs of lbkit transports.
        """
        if mode == "tcp":
            backend = self.streamingBackend(Streamer)
            factory: Any = TCPFrontend("tcp:0", backend, name="fe", log=False).buildFactory(reactor)
            request = b""

            def pair(p: Any) -> tuple[Any, Any] | None:
                peer = getattr(p, "peer", None)
                if peer is None or peer.transport is None or p._peerWrite is None:
                    return None
                return p.transport, peer.transport
        else:
            backend = self.streamingBackend(HTTPStreamer)
            factory = http.Frontend("tcp:0", default=backend, name="fe", log=False).buildFactory(reactor)
            request = b"GET /big HTTP/1.1\r\nHost: lb\r\n\r\n"

            def pair(p: Any) -> tuple[Any, Any] | None:
                conn = getattr(p, "conn", None)
                if conn is None or conn.transport is None:
                    return None
                return p.transport, conn.transport

        port = listen(self, reactor, factory)
        self.addCleanup(factory.whenIdle)
        clients = self.slowReaders(port, request)
        pairs = yield self.waitForStall(factory, pair)
        return factory, clients, pairs

    def assertBounded(self, holding: list[int]) -> None:
        worst = max(holding)
        self.assertLessEqual(
            worst, BUFFER_SIZE,
            f"lbkit holds up to {worst} bytes for a stalled client ({holding}), "
            f"more than one read of {BUFFER_SIZE}",
        )

    @inlineCallbacks
    def test_tcp(self) -> Any:
        """In tcp mode, a client that stops reading costs lbkit at most one read of buffered bytes."""
        _, _, pairs = yield self.stallThrough("tcp")
        self.assertBounded([held(c) + held(s) for c, s in pairs])

    @inlineCallbacks
    def test_http(self) -> Any:
        """In http mode, a client that stops reading a response costs lbkit at most one read of buffered bytes."""
        _, _, pairs = yield self.stallThrough("http")
        self.assertBounded([held(c) + held(s) for c, s in pairs])

    @inlineCallbacks
    def assertReleasedWhenCut(self, mode: str) -> Any:
        factory, clients, pairs = yield self.stallThrough(mode)
        self.assertTrue(all(held(c) for c, _ in pairs))
        for s in clients:
            s.close()  # unread bytes: the kernel resets the connection
        yield factory.whenIdle()
        yield self.servers.allLost()  # lbkit's transports are done with by then
        self.assertEqual([(held(c), held(s)) for c, s in pairs], [(0, 0)] * CLIENTS)

    def test_tcpCutReleases(self) -> Any:
        """In tcp mode, the bytes held for a stalled client are let go as soon as its connection is lost."""
        return self.assertReleasedWhenCut("tcp")

    def test_httpCutReleases(self) -> Any:
        """In http mode, the bytes held for a stalled client are let go as soon as its connection is lost."""
        return self.assertReleasedWhenCut("http")

    @inlineCallbacks
    def test_slowServerAfterBufferedResponse(self) -> Any:
        """
        A response that ended while part of it still waited for the client
        does not make lbkit blame the client later: the next request on the
        connection waits for a slow server up to timeoutServer, not
        timeoutClient.
        """
        servers = TrackingFactory(BigThenSlow)
        backend = Backend("be", [Server("s1", f"127.0.0.1:{listen(self, reactor, servers)}")], timeoutServer=5)
        factory = http.Frontend("tcp:0", default=backend, name="fe", log=False, timeoutClient=0.3).buildFactory(reactor)
        port = listen(self, reactor, factory)
        self.addCleanup(lambda: servers.allLost())
        self.addCleanup(factory.pool.closeAll)
        self.addCleanup(factory.whenIdle)
        [client] = self.slowReaders(port, b"", 1)
        yield self.waitFor(lambda: bool(factory.connections), "lbkit never accepted the client")
        # a small kernel buffer on lbkit's side too, so that the kernel
        # does not take the whole response
        [p] = factory.connections
        p.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.sendall(b"GET /big HTTP/1.1\r\nHost: lb\r\n\r\n")

        def responseEndedUnsent() -> bool:
            # lbkit has read the whole response from the server, and part
            # of it waits in the client transport
            return any(p.conn is None and p.request is None and held(p.transport) for p in factory.connections)

        yield self.waitFor(responseEndedUnsent, "the response never ended with bytes unsent")
        client.setblocking(False)
        received = yield self.readUntil(client, lambda data: len(data.partition(b"\r\n\r\n")[2]) >= 100_000)
        client.sendall(b"GET /slow HTTP/1.1\r\nHost: lb\r\n\r\n")
        received = yield self.readUntil(client, lambda data: data.endswith((b"late", b"\r\n\r\n")), received)
        self.assertTrue(received.endswith(b"late"), received[-200:])

    @inlineCallbacks
    def test_pipelinedRequests(self) -> Any:
        """
        A client that sends many requests at once and reads none of the
        answers costs lbkit at most one read of buffered bytes, not one
        response per request.
        """
        servers = TrackingFactory(Answerer)
        backend = Backend("be", [Server("s1", f"127.0.0.1:{listen(self, reactor, servers)}")])
        factory = http.Frontend("tcp:0", default=backend, name="fe", log=False).buildFactory(reactor)
        port = listen(self, reactor, factory)
        self.addCleanup(lambda: servers.allLost())
        self.addCleanup(factory.pool.closeAll)
        self.addCleanup(factory.whenIdle)
        [client] = self.slowReaders(port, b"", 1)
        yield self.waitFor(lambda: bool(factory.connections), "lbkit never accepted the client")
        [p] = factory.connections
        p.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.sendall(b"GET /big HTTP/1.1\r\nHost: lb\r\n\r\n" * 20)

        def quiet() -> bool:
            # lbkit waits for the client: it reads no server, or all 20
            # answers are in; and the client's socket takes no more
            if not held(p.transport):
                return False
            conn = p.conn
            if conn is not None and conn.transport is not None:
                if conn.transport in reactor.getReaders():
                    return False
            elif sum(s.answered for s in servers.built) < 20:  # type: ignore[attr-defined]
                return False
            _, writable, _ = select.select([], [p.transport.socket], [], 0)
            return not writable

        yield self.waitFor(quiet, "lbkit never settled")
        self.assertBounded([held(p.transport)])

    @inlineCallbacks
    def readUntil(self, s: socket.socket, done: Callable[[bytes], bool], data: bytes = b"") -> Any:
        """Read from the non-blocking socket C{s} until C{done(data)} or its end; return the data."""
        got = [data]

        def read() -> bool:
            while True:
                try:
                    chunk = s.recv(2**20)
                except BlockingIOError:
                    return False
                if not chunk:
                    return True
                got[0] += chunk
                if done(got[0]):
                    return True

        yield self.waitFor(read, "the data never came")
        return got[0]

