"""
Tests for L{lbkit._splice}: the zero-copy relay of tcp mode, first its
mechanism on real TCP socket pairs under a L{MemoryReactor}, then whole
connections through C{tcp.Frontend(..., splice=True)} on 127.0.0.1.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import select
import socket
from typing import Any, Sequence

from twisted.internet import main
from twisted.internet import reactor as _globalReactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import ClientCreator, Protocol
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer

from lbkit import Backend, Server
from lbkit.tcp import Frontend, _splice
from lbkit.tcp._splice import SpliceRelay, startSplice
from tests.helpers import Collector, Echo, ReplyAtEOF, TrackingFactory, TrackingProxyFactory, listen

reactor: Any = _globalReactor
DONE = Failure(ConnectionDone())


def requireSplice() -> None:
    if not _splice.available():
        raise SkipTest("no os.splice on this platform")


def tcpPair() -> tuple[socket.socket, socket.socket]:
    """Two connected TCP sockets on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    return a, b


def openFds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Counter:
    """Stands in for a tcp protocol: only its C{bytes} counter is used."""

    bytes = 0


@implementer(IHalfCloseableProtocol)
class Recorder(Protocol):
    """Records what Twisted delivers to the protocol of a spliced transport."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.readLost = False

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)

    def readConnectionLost(self) -> None:
        self.readLost = True

    def writeConnectionLost(self) -> None:
        pass


class MechanismTests(SynchronousTestCase):
    """
    L{SpliceRelay} between two Twisted TCP transports over real sockets, on
    a L{MemoryReactor}: the test calls C{doRead}/C{doWrite} itself, as the
    reactor would when a socket is ready.
    """

    def setUp(self) -> None:
        requireSplice()
        self.fdsBefore = openFds()
        self.reactor = MemoryReactor()
        self.clientOuter, clientInner = tcpPair()
        serverInner, self.serverOuter = tcpPair()
        for s in (self.clientOuter, clientInner, serverInner, self.serverOuter):
            self.addCleanup(s.close)
        self.clientOuter.setblocking(False)
        self.serverOuter.setblocking(False)
        self.client = self.transport(clientInner)
        self.server = self.transport(serverInner)
        self.up, self.down = Counter(), Counter()
        self.fellBack: list[bool] = []
        self.relay = SpliceRelay(self.client, self.server, self.up, self.down, lambda: self.fellBack.append(True))
        self.addCleanup(self.relay.lost, self.client)
        self.addCleanup(self.relay.lost, self.server)
        self.client.startReading()
        self.server.startReading()

    def transport(self, sock: socket.socket) -> Connection:
        t = Connection(sock, Recorder(), self.reactor)
        t.connected = 1
        return t

    def readable(self, t: Connection) -> bool:
        return t in self.reactor.readers

    def writable(self, t: Connection) -> bool:
        return t in self.reactor.writers

    def drainOuter(self) -> int:
        """Read what the server's peer socket has; how many bytes."""
        n = 0
        while True:
            try:
                chunk = self.serverOuter.recv(2**20)
            except BlockingIOError:
                return n
            if not chunk:
                return n
            n += len(chunk)

    def test_relays(self) -> None:
        """What the client sends reaches the server's socket, counted, and never passes through the protocol."""
        self.clientOuter.sendall(b"hello")
        self.assertIsNone(self.client.doRead())
        self.assertEqual(self.serverOuter.recv(100), b"hello")
        self.assertEqual(self.up.bytes, 5)
        self.assertEqual(self.client.protocol.data, [])  # type: ignore[attr-defined]
        self.serverOuter.sendall(b"back")
        self.assertIsNone(self.server.doRead())
        self.assertEqual(self.clientOuter.recv(100), b"back")
        self.assertEqual(self.down.bytes, 4)

    def test_modes(self) -> None:
        """
        Small reads are copied through Python; a large one switches the
        direction to splicing, and a small splice switches it back.
        """
        upstream = self.relay.directions[0]
        self.clientOuter.sendall(b"small")
        self.client.doRead()
        self.assertFalse(upstream.splicing)
        big = os.urandom(_splice.SPLICE_FROM)
        self.clientOuter.sendall(big)
        received = b""
        while len(received) < len(big) + 5:
            self.client.doRead()
            select.select([self.serverOuter], [], [], 0.01)
            received += self.serverOuter.recv(2**20)
        self.assertEqual(received, b"small" + big)
        self.assertTrue(upstream.splicing)
        self.clientOuter.sendall(b"tiny")
        self.client.doRead()
        self.assertFalse(upstream.splicing)
        self.assertEqual(self.serverOuter.recv(100), b"tiny")
        self.assertEqual(self.up.bytes, len(big) + 9)

    def fillAndDrain(self) -> None:
        """
        When the server's socket takes no more, the client is no longer read
        and the server is polled for writing; once it drains, reading resumes.
        """
        block = b"\x5a" * 2**16
        sent = 0
        for _ in range(10000):
            try:
                sent += self.clientOuter.send(block)
            except BlockingIOError:
                pass
            self.client.doRead()
            if not self.readable(self.client):
                break
        self.assertFalse(self.readable(self.client), "the client is still read from")
        self.assertTrue(self.writable(self.server))
        upstream = self.relay.directions[0]
        self.assertGreater(upstream.inPipe, 0)
        self.assertLessEqual(upstream.inPipe, upstream.size)
        # the stalled state is stable: a spurious read does not read more
        before = self.up.bytes
        self.client.doRead()
        self.assertEqual(self.up.bytes, before)
        # the server's peer reads; the pipe drains and the client is read again
        received = 0
        for _ in range(2000):
            select.select([self.serverOuter], [], [], 0.01)
            received += self.drainOuter()
            if self.writable(self.server):
                self.assertIsNone(self.server.doWrite())
            if self.readable(self.client):
                self.client.doRead()
            if received == sent:
                break
        self.assertEqual(received, sent)
        self.assertEqual(self.up.bytes, sent)
        self.assertTrue(self.readable(self.client))
        self.assertFalse(self.writable(self.server))
        self.assertNotIn("doWrite", self.server.__dict__)

    def test_backPressure(self) -> None:
        """
        Splicing: when the server's socket is full, the client is no longer
        read until the pipe has drained into it.
        """
        self.fillAndDrain()
        self.assertTrue(self.relay.directions[0].splicing)

    def test_backPressureCopying(self) -> None:
        """
        Copying small reads: what the server's socket does not take waits
        in the pipe, and the client is no longer read until it has drained.
        """
        self.patch(_splice, "SPLICE_FROM", 2**30)
        self.fillAndDrain()
        self.assertFalse(self.relay.directions[0].splicing)

    def test_endOfFile(self) -> None:
        """The end of the client's stream is reported as Twisted's CONNECTION_DONE."""
        self.clientOuter.sendall(b"last")
        self.clientOuter.shutdown(socket.SHUT_WR)
        self.assertIsNone(self.client.doRead())
        self.assertIs(self.client.doRead(), main.CONNECTION_DONE)
        self.assertEqual(self.serverOuter.recv(100), b"last")

    def test_destinationReset(self) -> None:
        """A server that reset its connection makes the server transport's doWrite fail."""
        self.serverOuter.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.serverOuter.close()
        result = None
        for _ in range(100):
            self.clientOuter.sendall(b"x" * 1000)
            self.client.doRead()
            if self.writable(self.server):
                result = self.server.doWrite()
                break
        self.assertIs(result, main.CONNECTION_LOST)

    def test_fallBack(self) -> None:
        """If the kernel refuses to splice, the relay takes itself out and the normal path reads."""

        def refuse(*args: Any, **kwargs: Any) -> int:
            raise OSError(errno.EINVAL, "Invalid argument")

        self.patch(_splice, "_splice", refuse)
        self.relay.directions[0].splicing = True
        self.clientOuter.sendall(b"data")
        self.client.doRead()
        self.assertEqual(self.fellBack, [True])
        self.assertNotIn("doRead", self.client.__dict__)
        self.assertNotIn("doRead", self.server.__dict__)
        self.assertTrue(all(d.closed for d in self.relay.directions))
        self.assertEqual(self.client.protocol.data, [b"data"])  # type: ignore[attr-defined]

    def test_lostReleasesPipes(self) -> None:
        """Once both transports are lost, the four pipe descriptors are closed."""
        self.relay.lost(self.server)
        self.assertEqual([d.closed for d in self.relay.directions], [True, True])
        self.relay.lost(self.client)
        self.clientOuter.close()
        self.serverOuter.close()
        self.client.socket.close()
        self.server.socket.close()
        self.assertEqual(openFds(), self.fdsBefore)

    def test_lostKeepsPipeForFlush(self) -> None:
        """A client lost while its bytes wait in the pipe leaves that pipe open until the server is lost."""
        block = b"\x5a" * 2**16
        for _ in range(10000):
            try:
                self.clientOuter.send(block)
            except BlockingIOError:
                pass
            self.client.doRead()
            if not self.readable(self.client):
                break
        upstream, downstream = self.relay.directions
        self.relay.lost(self.client)
        self.assertEqual((upstream.closed, downstream.closed), (False, True))
        self.relay.lost(self.server)
        self.assertTrue(upstream.closed)


class StartTests(SynchronousTestCase):
    """L{startSplice} splices only where it can."""

    def test_notTCP(self) -> None:
        """Transports that are not plain TCP (tests' fakes, TLS) are left to the normal path."""
        self.assertIsNone(startSplice(StringTransport(), StringTransport(), Counter(), Counter(), lambda: None))

    def test_unavailable(self) -> None:
        """Without os.splice (not Linux), nothing is spliced."""
        self.patch(_splice, "_splice", None)
        a, b = tcpPair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        r = MemoryReactor()
        ta, tb = Connection(a, Protocol(), r), Connection(b, Protocol(), r)
        self.assertIsNone(startSplice(ta, tb, Counter(), Counter(), lambda: None))

    def test_unsentBytes(self) -> None:
        """Bytes Twisted holds for the server that cannot be sent now keep the normal path."""
        requireSplice()
        clientOuter, clientInner = tcpPair()
        serverInner, serverOuter = tcpPair()
        for s in (clientOuter, clientInner, serverInner, serverOuter):
            self.addCleanup(s.close)
        r = MemoryReactor()
        client = Connection(clientInner, Protocol(), r)
        server = Connection(serverInner, Protocol(), r)
        client.connected = server.connected = 1
        server.write(b"x" * 2**25)  # more than any socket buffer
        self.assertIsNone(startSplice(client, server, Counter(), Counter(), lambda: None))
        self.assertNotIn("doRead", client.__dict__)

    def test_flushesFirst(self) -> None:
        """A PROXY header Twisted holds for the server is sent before splicing starts."""
        requireSplice()
        clientOuter, clientInner = tcpPair()
        serverInner, serverOuter = tcpPair()
        for s in (clientOuter, clientInner, serverInner, serverOuter):
            self.addCleanup(s.close)
        r = MemoryReactor()
        client = Connection(clientInner, Protocol(), r)
        server = Connection(serverInner, Protocol(), r)
        client.connected = server.connected = 1
        server.write(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
        relay = startSplice(client, server, Counter(), Counter(), lambda: None)
        assert relay is not None
        self.addCleanup(relay.lost, client)
        self.addCleanup(relay.lost, server)
        clientOuter.sendall(b"GET")
        client.doRead()
        self.assertEqual(serverOuter.recv(100), b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET")

    def test_frontendDefault(self) -> None:
        """Splicing is off unless asked for."""
        backend = Backend("be", [Server("a", "127.0.0.1:1")])
        self.assertFalse(Frontend("tcp:0", backend).splice)
        self.assertTrue(Frontend("tcp:0", backend, splice=True).splice)


# -- whole connections through a frontend -------------------------------------


@implementer(IHalfCloseableProtocol, IPushProducer)
class Bulk(Protocol):
    """
    Sends C{total} pseudo-random bytes as fast as the connection takes them
    and then shuts its write half, while hashing what it sends and what it
    receives; closes once both directions are done.
    """

    def __init__(self, total: int, seed: int) -> None:
        self.toSend = total
        self.random = random.Random(seed)
        self.sentHash = hashlib.sha256()
        self.receivedHash = hashlib.sha256()
        self.received = 0
        self.paused = False
        self.writeDone = self.readDone = False
        self.done: Deferred[Bulk] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        transport = self.transport
        assert transport is not None
        while not self.paused and self.toSend:
            chunk = self.random.randbytes(min(2**18, self.toSend))
            self.toSend -= len(chunk)
            self.sentHash.update(chunk)
            transport.write(chunk)
        if not self.toSend and not self.writeDone:
            self.writeDone = True
            transport.unregisterProducer()  # type: ignore[attr-defined]
            transport.loseWriteConnection()  # type: ignore[attr-defined]
            self._maybeClose()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.receivedHash.update(data)

    def readConnectionLost(self) -> None:
        self.readDone = True
        self._maybeClose()

    def writeConnectionLost(self) -> None:
        pass

    def _maybeClose(self) -> None:
        if self.readDone and self.writeDone:
            assert self.transport is not None
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = DONE) -> None:
        self.done.callback(self)


class SendAndClose(Protocol):
    """Sends C{payload} and closes at once, without reading."""

    payload = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.payload)
        self.transport.loseConnection()


BIG_REPLY = hashlib.sha256(b"reply").digest() * 2**18  # 8 MiB


class BigReply(ReplyAtEOF):
    """Replies 8 MiB once the client has finished sending."""

    reply = staticmethod(lambda data: BIG_REPLY)  # type: ignore[assignment]


class SplicedConnectionTests(TestCase):
    """
    lbkit in this process with C{splice=True}, between real clients and
    servers on 127.0.0.1.
    """

    timeout = 60

    def setUp(self) -> None:
        requireSplice()

    def startProxy(self, servers: Sequence[Server]) -> int:
        backend = Backend("be", servers)
        self.proxyFactory = TrackingProxyFactory(Frontend("tcp:0", backend, name="fe", splice=True), reactor)
        return listen(self, reactor, self.proxyFactory)

    def startServer(self, protocol: Any) -> tuple[TrackingFactory, int]:
        factory = TrackingFactory(protocol)
        return factory, listen(self, reactor, factory)

    def connect(self, port: int, client: Any) -> Deferred[Any]:
        d = ClientCreator(reactor, lambda: client).connectTCP("127.0.0.1", port)
        return d.addCallback(lambda _: client.done)  # type: ignore[no-any-return]

    def settle(self, *factories: TrackingFactory) -> Deferred[Any]:
        waits = [p.allGone() for p in self.proxyFactory.built] + [f.allLost() for f in factories]
        return gatherResults(waits)

    def assertSpliced(self) -> None:
        for p in self.proxyFactory.built:
            self.assertIsNotNone(p._splice)
            self.assertTrue(all(d.closed for d in p._splice.directions), "a pipe was left open")

    @inlineCallbacks
    def test_echo(self) -> Any:
        """Round trips of various sizes come back intact."""
        factory, serverPort = self.startServer(Echo)
        port = self.startProxy([Server("a", f"127.0.0.1:{serverPort}")])
        for size in (1, 1000, 3 * 2**20):
            data = os.urandom(size)
            received = yield self.connect(port, Collector(data, expect=size))
            self.assertEqual(received, data)
        yield self.settle(factory)
        self.assertSpliced()

    @inlineCallbacks
    def test_bulkBothWays(self) -> Any:
        """64 MB each way at once arrive intact (sha256), and the counters match."""
        total = 64 * 2**20
        factory, serverPort = self.startServer(lambda: Bulk(total, 2))
        port = self.startProxy([Server("a", f"127.0.0.1:{serverPort}")])
        client = Bulk(total, 1)
        yield self.connect(port, client)
        yield self.settle(factory)
        server = factory.built[0]
        assert isinstance(server, Bulk)
        self.assertEqual((client.received, server.received), (total, total))
        self.assertEqual(server.receivedHash.digest(), client.sentHash.digest())
        self.assertEqual(client.receivedHash.digest(), server.sentHash.digest())
        self.assertEqual((self.proxyFactory.bytesIn, self.proxyFactory.bytesOut), (total, total))
        self.assertEqual(self.proxyFactory.built[0].termination, "--")
        self.assertSpliced()

    @inlineCallbacks
    def test_clientHalfClose(self) -> Any:
        """A client that shuts its write half still gets the server's whole reply."""
        factory, serverPort = self.startServer(BigReply)
        port = self.startProxy([Server("a", f"127.0.0.1:{serverPort}")])
        client = Collector(b"x" * 2**20, halfClose=True)
        received = yield self.connect(port, client)
        self.assertEqual(len(received), len(BIG_REPLY))
        self.assertEqual(received, BIG_REPLY)
        self.assertTrue(client.readClosed)
        yield self.settle(factory)
        self.assertEqual((self.proxyFactory.bytesIn, self.proxyFactory.bytesOut), (2**20, len(BIG_REPLY)))
        self.assertSpliced()

    @inlineCallbacks
    def test_serverClosesFirst(self) -> Any:
        """A server that sends and closes at once: the client gets every byte, then the end."""
        payload = os.urandom(5 * 2**20)
        self.patch(SendAndClose, "payload", payload)
        factory, serverPort = self.startServer(SendAndClose)
        port = self.startProxy([Server("a", f"127.0.0.1:{serverPort}")])
        client = Collector()
        received = yield self.connect(port, client)
        self.assertEqual(received, payload)
        self.assertTrue(client.readClosed)
        yield self.settle(factory)
        self.assertEqual(self.proxyFactory.built[0].termination, "--")
        self.assertEqual(self.proxyFactory.bytesOut, len(payload))
        self.assertSpliced()

    @inlineCallbacks
    def test_noDescriptorLeak(self) -> Any:
        """After many spliced connections have closed, the process has as many descriptors as before."""
        factory, serverPort = self.startServer(Echo)
        port = self.startProxy([Server("a", f"127.0.0.1:{serverPort}")])
        yield self.connect(port, Collector(b"warm", expect=4))  # the reactor's lazily made descriptors
        yield self.settle(factory)
        before = openFds()
        clients = [self.connect(port, Collector(b"y" * 70000, expect=70000)) for _ in range(20)]
        received = yield gatherResults(clients)
        self.assertEqual(received, [b"y" * 70000] * 20)
        yield self.settle(factory)
        self.assertEqual(openFds(), before)
        self.assertSpliced()

    @inlineCallbacks
    def test_fallBackWhenRefused(self) -> Any:
        """Where the kernel refuses to splice, connections are relayed the normal way."""

        def refuse(*args: Any, **kwargs: Any) -> int:
            raise OSError(errno.EINVAL, "Invalid argument")

        self.patch(_splice, "_splice", refuse)
        factory, serverPort = self.startServer(Echo)
        port = self.startProxy([Server("a", f"127.0.0.1:{serverPort}")])
        data = os.urandom(2**20)
        received = yield self.connect(port, Collector(data, expect=len(data)))
        self.assertEqual(received, data)
        yield self.settle(factory)
        self.assertEqual(self.proxyFactory.bytesIn, len(data))
