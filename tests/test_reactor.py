"""
Tests for L{lbkit.reactor}: the C{lbkit-epoll} reactor plugin is listed,
it runs C{twistd lbkit}, and L{LeanEPollReactor} delivers reads and writes
without C{log.callWithLogger}, while errors and connection loss keep the
transport's log prefix.

The reactor tests build their own L{LeanEPollReactor} instances and drive
them with C{iterate}; they never install one (installing is global and
would replace trial's reactor).
"""

from __future__ import annotations

import os
import socket
import time
from functools import partial
from typing import Any, Callable

from twisted.application.reactors import getReactorTypes
from twisted.internet import tcp
from twisted.internet.defer import inlineCallbacks
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python import context, log
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from lbkit.reactor import LeanEPollReactor, _readsPlainly
from tests.helpers import freePort, requireBinary, runProcess, spawn
from tests.test_examples import REPO, TWISTD


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class Peer(Protocol):
    """
    One end of a socketpair: records what it reads, the legacy log
    C{system} it read it under, and how its connection ended.
    """

    def __init__(self, onData: Callable[[Peer, bytes], None] = lambda p, d: None) -> None:
        self.received = b""
        self.systems: list[str] = []
        self.lost: Failure | None = None
        self.onData = onData

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.systems.append(context.get(log.ILogContext)["system"])
        self.onData(self, data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


class LeanEPollReactorTests(SynchronousTestCase):
    """
    L{LeanEPollReactor.doPoll} on a real, uninstalled reactor.
    """

    reactorType: type[EPollReactor] = LeanEPollReactor

    def buildReactor(self, kind: type[EPollReactor] | None = None) -> EPollReactor:
        """
        A fresh reactor of C{kind} (default L{reactorType}); cleanup closes
        everything it holds.
        """
        r = (kind or self.reactorType)()

        def cleanup() -> None:
            for reader in list(r._internalReaders):
                r.removeReader(reader)
                reader.connectionLost(None)
            r._internalReaders.clear()
            r.disconnectAll()
            for call in r.getDelayedCalls():
                call.cancel()
            r._poller.close()

        self.addCleanup(cleanup)
        return r

    def pair(self, r: EPollReactor, left: Protocol, right: Protocol) -> None:
        """Connect C{left} and C{right} through a socketpair adopted by C{r}."""
        a, b = socket.socketpair()
        for sock, proto in ((a, left), (b, right)):
            factory = Factory()
            factory.buildProtocol = lambda addr, p=proto: p  # type: ignore[method-assign,misc]
            r.adoptStreamConnection(sock.fileno(), socket.AF_UNIX, factory)
            sock.close()  # the reactor holds a duplicate

    def tcpPair(self, r: EPollReactor, left: Protocol, right: Protocol) -> None:
        """
        Connect C{left} and C{right} through a socketpair, each end a
        Twisted TCP transport (C{tcp.Server}, read the way L{_readsPlainly}
        says; adopting would make them UNIX transports, which are not).
        """
        for sock, proto in zip(socket.socketpair(), (left, right), strict=True):
            transport = tcp.Server(sock, proto, ("127.0.0.1", 0), None, 1, r)  # type: ignore[arg-type]
            proto.makeConnection(transport)
            transport.startReading()

    def spin(self, r: EPollReactor, until: Callable[[], bool], timeout: float = 5.0) -> None:
        """Iterate C{r} until C{until()} is true; fail after C{timeout} seconds."""
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                self.fail("the reactor did not get there in time")
            r.iterate(0.01)

    def recordCallWithLogger(self) -> list[Callable[..., object]]:
        """
        Record the function each use of C{log.callWithLogger} runs (and
        run it).
        """
        calls: list[Callable[..., object]] = []
        real = log.callWithLogger

        def record(logger: object, func: Callable[..., object], *args: object, **kw: object) -> object:
            calls.append(func)
            return real(logger, func, *args, **kw)

        self.patch(log, "callWithLogger", record)
        return calls

    def legacyEvents(self) -> list[dict[str, Any]]:
        """Every legacy log event from now until the test's cleanup."""
        events: list[dict[str, Any]] = []
        log.addObserver(events.append)
        self.addCleanup(log.removeObserver, events.append)
        return events

    def test_readsWritesAndLoss(self) -> None:
        """
        Bytes written on one end are read on the other and echoed back with
        no C{callWithLogger} on the way; when one end closes, both see their
        connection lost, each disconnection (and only that) run through
        C{callWithLogger}.
        """
        calls = self.recordCallWithLogger()
        r = self.buildReactor()
        echo = Peer(lambda p, d: p.transport.write(d))  # type: ignore[union-attr]
        client = Peer()
        self.pair(r, echo, client)
        assert client.transport is not None
        client.transport.write(b"hello " * 10000)
        self.spin(r, lambda: len(client.received) == 60000)
        self.assertEqual(client.received, b"hello " * 10000)
        self.assertEqual(calls, [])
        client.transport.loseConnection()
        self.spin(r, lambda: echo.lost is not None and client.lost is not None)
        self.assertEqual([s for s in r.getReaders() + r.getWriters() if s not in r._internalReaders], [])
        self.assertEqual(calls, [r._disconnectSelectable] * 2)

    def test_legacyLogSystem(self) -> None:
        """
        Inside a successful read callback the legacy log context keeps its
        default C{system} ("-") rather than the transport's log prefix,
        which upstream's L{EPollReactor} sets: the one thing the lean
        reactor drops.
        """
        systems = {}
        for kind in (EPollReactor, self.reactorType):
            r = self.buildReactor(kind)
            a, b = Peer(), Peer()
            self.pair(r, a, b)
            assert a.transport is not None
            a.transport.write(b"x")
            self.spin(r, partial(lambda peer: peer.received == b"x", b))
            systems[kind] = b.systems[0]
        self.assertEqual(systems[self.reactorType], "-")
        self.assertNotEqual(systems[EPollReactor], "-")

    def test_errorInDataReceived(self) -> None:
        """
        An exception from C{dataReceived} is logged and loses that
        connection (C{_doReadOrWrite} does it); the reactor goes on serving
        the others.
        """
        r = self.buildReactor()

        def boom(p: Peer, d: bytes) -> None:
            raise ZeroDivisionError()

        bad, badClient = Peer(boom), Peer()
        good, goodClient = Peer(), Peer()
        self.pair(r, bad, badClient)
        self.pair(r, good, goodClient)
        assert badClient.transport is not None and goodClient.transport is not None
        badClient.transport.write(b"x")
        goodClient.transport.write(b"y")
        self.spin(r, lambda: bad.lost is not None and badClient.lost is not None)
        self.spin(r, lambda: good.received == b"y")
        assert bad.lost is not None
        self.assertTrue(bad.lost.check(ZeroDivisionError))
        self.assertIsNone(good.lost)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_errorInDataReceivedSystem(self) -> None:
        """
        The traceback logged for an exception in C{dataReceived}, and a
        legacy C{log.msg} in the C{connectionLost} that follows, carry the
        transport's log prefix as their C{system}, as under upstream's
        L{EPollReactor}; the connection is lost with that exception.
        """
        events = self.legacyEvents()

        def boom(p: Peer, d: bytes) -> None:
            raise ZeroDivisionError()

        class LoseLoudly(Peer):
            def connectionLost(self, reason: Failure = connectionDone) -> None:
                Peer.connectionLost(self, reason)
                log.msg("lost it")

        for kind in (EPollReactor, self.reactorType):
            del events[:]
            r = self.buildReactor(kind)
            bad, badClient = LoseLoudly(boom), Peer()
            self.pair(r, bad, badClient)
            assert bad.transport is not None and badClient.transport is not None
            prefix = bad.transport.logPrefix()
            self.assertNotEqual(prefix, "-")
            badClient.transport.write(b"x")
            self.spin(r, partial(lambda p, q: p.lost is not None and q.lost is not None, bad, badClient))
            assert bad.lost is not None
            self.assertTrue(bad.lost.check(ZeroDivisionError), kind)
            self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1, kind)
            errors = [e for e in events if e.get("isError") and e["failure"].check(ZeroDivisionError)]
            self.assertEqual([e["system"] for e in errors], [prefix], kind)
            self.assertEqual([e["system"] for e in events if e.get("message") == ("lost it",)], [prefix], kind)
            self.assertNotIn(bad.transport, r.getReaders() + r.getWriters())

    def test_errorInConnectionLost(self) -> None:
        """
        An exception from C{connectionLost} (outside what C{_doReadOrWrite}
        catches) is logged with the transport's log prefix as its
        C{system}, as C{callWithLogger} did, and the loop goes on.
        """
        r = self.buildReactor()
        events = self.legacyEvents()

        class LoseBadly(Peer):
            def connectionLost(self, reason: Failure = connectionDone) -> None:
                raise ZeroDivisionError()

        bad, badClient = LoseBadly(), Peer()
        good, goodClient = Peer(), Peer()
        self.pair(r, bad, badClient)
        self.pair(r, good, goodClient)
        assert badClient.transport is not None and goodClient.transport is not None
        prefix = bad.transport.logPrefix()  # type: ignore[union-attr]
        badClient.transport.loseConnection()
        self.spin(r, lambda: badClient.lost is not None and bool(self.flushLoggedErrors(ZeroDivisionError)))
        self.assertIn(prefix, [e.get("system") for e in events if e.get("isError")])
        goodClient.transport.write(b"still here")
        self.spin(r, lambda: good.received == b"still here")
        self.assertNotIn(bad.transport, r.getReaders())

    def test_halfClose(self) -> None:
        """
        A half-closeable protocol whose peer shuts its write half sees
        C{readConnectionLost} (the read path ends the stream as a read, as
        upstream's C{_doReadOrWrite} does) and can still write back.
        """
        r = self.buildReactor()

        @implementer(IHalfCloseableProtocol)
        class Half(Peer):
            readLost = False

            def readConnectionLost(self) -> None:
                self.readLost = True
                self.transport.write(b"bye")  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]

            def writeConnectionLost(self) -> None:
                pass

        half, other = Half(), Peer()
        self.pair(r, half, other)
        assert other.transport is not None
        other.transport.write(b"last")
        other.transport.loseWriteConnection()  # type: ignore[attr-defined]
        self.spin(r, lambda: other.lost is not None)
        self.assertEqual((half.received, half.readLost, other.received), (b"last", True, b"bye"))

    def test_ownDoRead(self) -> None:
        """
        A transport class with a C{doRead} of its own is read through it;
        Twisted's TCP connections are read in C{doPoll} itself.
        """
        self.assertTrue(_readsPlainly(tcp.Server))
        self.assertTrue(_readsPlainly(tcp.Client))
        r = self.buildReactor()
        reads: list[bytes] = []

        class Counting(tcp.Server):
            def doRead(self) -> Any:
                reads.append(b"")
                return super().doRead()

        self.assertFalse(_readsPlainly(Counting))
        a, b = socket.socketpair()
        self.addCleanup(b.close)
        peer = Peer()
        transport = Counting(a, peer, ("127.0.0.1", 0), None, 1, r)  # type: ignore[arg-type]
        peer.makeConnection(transport)
        transport.startReading()
        b.send(b"ping")
        self.spin(r, lambda: peer.received == b"ping")
        self.assertEqual(reads, [b""])
        transport.loseConnection()
        self.spin(r, lambda: peer.lost is not None)


    def test_instanceDoRead(self) -> None:
        """
        A C{doRead} set on one transport (tcp mode's splice relay sets one,
        and Twisted's C{abortConnection}) is what reads it; the other
        transports of its class are still read in C{doPoll}.
        """
        r = self.buildReactor()
        mine, other, plain, plainOther = Peer(), Peer(), Peer(), Peer()
        self.tcpPair(r, mine, other)
        self.tcpPair(r, plain, plainOther)
        transport: Any = mine.transport
        reads: list[int] = []

        def doRead() -> Any:
            reads.append(1)
            return tcp.Connection.doRead(transport)

        transport.doRead = doRead
        assert other.transport is not None and plainOther.transport is not None
        other.transport.write(b"spliced")
        plainOther.transport.write(b"plain")
        self.spin(r, lambda: mine.received == b"spliced" and plain.received == b"plain")
        self.assertEqual(reads, [1])

    def relayed(self, r: LeanEPollReactor) -> tuple[Peer, Peer, Peer, Peer, Any, list[bytes]]:
        """
        Two socketpairs on C{r}, C{source} to C{reader} and C{writer} to
        C{sink}, with C{reader}'s reads relayed to C{writer}
        (L{LeanEPollReactor.relayDirectly}): C{counter} counts them, and
        C{rest} holds what went to C{writeRest}.  C{reader}'s protocol does
        what the relay does (as tcp mode's does), and records in its
        C{received} what reached it.
        """
        counter = type("Counter", (), {"bytes": 0})()
        rest: list[bytes] = []

        def writeRest(data: bytes) -> None:
            rest.append(data)
            writer.transport.write(data)  # type: ignore[union-attr]

        def forward(reader: Peer, data: bytes) -> None:
            counter.bytes += len(data)
            writer.transport.write(data)  # type: ignore[union-attr]

        source, reader, writer, sink = Peer(), Peer(forward), Peer(), Peer()
        self.tcpPair(r, source, reader)
        self.tcpPair(r, writer, sink)
        self.assertTrue(r.relayDirectly(reader.transport, writer.transport, counter, writeRest))
        return source, reader, writer, sink, counter, rest

    def test_relayDirectly(self) -> None:
        """
        What a relayed transport reads goes straight to the other socket,
        counted, without its protocol's C{dataReceived}; while the writer
        still holds unsent bytes, reads go to C{writeRest}, behind them.
        """
        r = self.buildReactor()
        source, reader, writer, sink, counter, rest = self.relayed(r)
        assert source.transport is not None and writer.transport is not None
        source.transport.write(b"hello")
        self.spin(r, lambda: sink.received == b"hello")
        self.assertEqual((reader.received, counter.bytes, rest), (b"", 5, []))
        writer.transport.write(b"[queued]")
        r.removeWriter(writer.transport)  # type: ignore[arg-type]  # it stays queued
        source.transport.write(b"world")
        self.spin(r, lambda: sink.received == b"hello[queued]world")
        self.assertEqual((reader.received, counter.bytes, rest), (b"", 10, [b"world"]))

    def test_stopRelaying(self) -> None:
        """L{LeanEPollReactor.stopRelaying} hands reads back to the protocol."""
        r = self.buildReactor()
        source, reader, _, sink, counter, rest = self.relayed(r)
        r.stopRelaying(reader.transport)
        assert source.transport is not None
        source.transport.write(b"mine")
        self.spin(r, lambda: sink.received == b"mine")
        self.assertEqual((reader.received, rest), (b"mine", []))

    def test_relayedStreamEnds(self) -> None:
        """
        The end of a relayed stream, and the connection's loss, reach the
        protocol as they do on a plain read; so does a read that comes
        with the peer's hang-up.
        """
        r = self.buildReactor()
        source, reader, _, sink, counter, rest = self.relayed(r)
        assert source.transport is not None
        source.transport.write(b"last")
        source.transport.loseConnection()
        self.spin(r, lambda: reader.lost is not None and sink.received == b"last")
        self.assertEqual(counter.bytes, 4)
        reader.lost.trap(ConnectionDone)  # type: ignore[union-attr]


    def test_tcpModeRelays(self) -> None:
        """
        A tcp-mode connection on L{LeanEPollReactor} is relayed by the
        reactor both ways (L{LeanEPollReactor.relayDirectly}), counted as
        before, and forgotten once it closes.
        """
        from lbkit import Backend, Server
        from lbkit import tcp as lbtcp
        from lbkit.balance import RoundRobin

        r = self.buildReactor()

        class Echo(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(data)  # type: ignore[union-attr]

        echoFactory = Factory.forProtocol(Echo)
        echo = r.listenTCP(0, echoFactory, interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        backend = Backend("echo", servers=[Server("e", f"127.0.0.1:{echo.getHost().port}")], balance=RoundRobin())
        frontend = lbtcp.Frontend("tcp:0:interface=127.0.0.1", backend=backend, name="relay")
        factory = frontend.buildFactory(r)
        port = r.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        client.setblocking(False)
        received = b""

        def echoed(n: int) -> bool:
            nonlocal received
            try:
                received += client.recv(65536)
            except BlockingIOError:
                pass
            return len(received) >= n

        client.send(b"ping")
        self.spin(r, lambda: echoed(4))
        self.assertEqual(len(r._relays), 2)  # client to server, server to client
        client.send(b"pong")
        self.spin(r, lambda: echoed(8))
        self.assertEqual(received, b"pingpong")
        (proto,) = backend.servers[0].sessions
        self.assertEqual((proto.bytes, proto.peer.bytes), (8, 8))
        client.close()
        self.spin(r, lambda: not r._relays and not backend.servers[0].sessions)


class PluginTests(TestCase):
    """
    C{twistd --reactor=lbkit-epoll lbkit ...}.
    """

    timeout = 60

    def test_listed(self) -> None:
        """The C{lbkit-epoll} reactor plugin points at L{lbkit.reactor}."""
        found = {r.shortName: r for r in getReactorTypes()}
        self.assertIn("lbkit-epoll", found)
        self.assertEqual(getattr(found["lbkit-epoll"], "moduleName", None), "lbkit.reactor")

    @inlineCallbacks
    def test_helpReactors(self) -> Any:
        """C{twistd --help-reactors} lists it."""
        proc = yield runProcess(self, _reactor(), [*TWISTD, "--help-reactors"])
        self.assertIn(b"lbkit-epoll", proc.output)

    @inlineCallbacks
    def test_proxies(self) -> Any:
        """
        C{twistd --reactor=lbkit-epoll -n lbkit} runs on L{LeanEPollReactor}
        and proxies requests through a tcp frontend to demo backends.
        """
        curl = requireBinary("curl")
        front, one, two = freePort(), freePort(), freePort()
        site = os.path.abspath(self.mktemp() + "-site.py")
        with open(site, "w") as f:
            f.write(SITE.format(front=front, one=one, two=two))
        process = spawn(
            self, _reactor(), [*TWISTD, "--reactor=lbkit-epoll", "-n", "--pidfile=", "lbkit", "--config", site],
            path=REPO,
        )
        yield process.waitForOutput(f"listening on tcp:{front}".encode(), timeout=20)
        yield process.waitForOutput(f"listening on tcp:{two}".encode(), timeout=20)
        self.assertIn(b"LeanEPollReactor", process.output)
        answers = []
        for _ in range(4):
            result = yield runProcess(
                self, _reactor(), [curl, "-s", "-S", "--noproxy", "*", "--max-time", "10", f"http://127.0.0.1:{front}/"]
            )
            self.assertEqual(result.exitCode, 0, result.output)
            answers.append(result.stdout.decode().strip())
        self.assertEqual(sorted(answers), ["one", "one", "two", "two"])
        code = yield process.stop()
        self.assertNotIn(b"Traceback", process.output)
        self.assertIn(code, (0, -15))

    @inlineCallbacks
    def reactorClass(self, *reactorArgs: str) -> Any:
        """The C{reactor class:} twistd logs when it runs C{twistd [reactorArgs] -n lbkit}."""
        front, one, two = freePort(), freePort(), freePort()
        site = os.path.abspath(self.mktemp() + "-site.py")
        with open(site, "w") as f:
            f.write(SITE.format(front=front, one=one, two=two))
        process = spawn(
            self, _reactor(), [*TWISTD, *reactorArgs, "-n", "--pidfile=", "lbkit", "--config", site], path=REPO
        )
        yield process.waitForOutput(f"listening on tcp:{front}".encode(), timeout=20)
        code = yield process.stop()
        self.assertIn(code, (0, -15))
        (line,) = [x for x in process.output.splitlines() if b"reactor class: " in x]
        return line.partition(b"reactor class: ")[2].rstrip(b".").decode()

    @inlineCallbacks
    def test_defaultUnderTwistd(self) -> Any:
        """
        C{twistd lbkit} with no C{--reactor} runs on L{LeanEPollReactor};
        C{--reactor=epoll} keeps Twisted's own (the way back).
        """
        chosen = yield self.reactorClass()
        self.assertEqual(chosen, "lbkit.reactor.LeanEPollReactor")
        explicit = yield self.reactorClass("--reactor=epoll")
        self.assertEqual(explicit, "twisted.internet.epollreactor.EPollReactor")


SITE = """\
from lbkit import Backend, Server, tcp
from lbkit.balance import RoundRobin
from lbkit.demo import HelloServer

web = Backend(
    "web",
    servers=[Server("one", "127.0.0.1:{one}"), Server("two", "127.0.0.1:{two}")],
    balance=RoundRobin(),
)
listen = [
    tcp.Frontend("tcp:{front}:interface=127.0.0.1", backend=web, name="front"),
    HelloServer("one", "tcp:{one}:interface=127.0.0.1"),
    HelloServer("two", "tcp:{two}:interface=127.0.0.1"),
]
"""
