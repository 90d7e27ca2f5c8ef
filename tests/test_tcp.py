"""
Tests for L{lbkit.tcp}: the tcp-mode byte pump, with fakes, then over real
sockets on 127.0.0.1.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence, cast

from twisted.internet import reactor as _globalReactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, gatherResults, inlineCallbacks
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ClientCreator, Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from lbkit import Backend, Context, Server, ServerState
from lbkit._connect import connectServer
from lbkit.balance import RoundRobin
from lbkit.interfaces import IBalancer
from lbkit.proxyproto import formatV1, formatV2
from lbkit.tcp import Frontend, TCPFrontendProtocol, TCPProxyFactory
from lbkit.testing import FakeEndpoint, HalfCloseableStringTransport
from tests.helpers import (
    Collector,
    Echo,
    ReplyAtEOF,
    StopFailsReactor,
    TrackingFactory,
    TrackingProxyFactory,
    freePort,
    listen,
    procRSS,
    spawn,
)

CLIENT = IPv4Address("TCP", "198.51.100.7", 51000)
FRONT = IPv4Address("TCP", "127.0.0.1", 8080)
DONE = Failure(ConnectionDone())
LOST = Failure(ConnectionLost())

reactor: Any = _globalReactor


def captureLogs(testCase: SynchronousTestCase, namespace: str | None = None) -> list[LogEvent]:
    """Collect log events (of C{namespace}) for the rest of the test."""
    events: list[LogEvent] = []

    def observer(event: LogEvent) -> None:
        if namespace is None or event.get("log_namespace") == namespace:
            events.append(event)

    globalLogPublisher.addObserver(cast(ILogObserver, observer))
    testCase.addCleanup(globalLogPublisher.removeObserver, cast(ILogObserver, observer))
    return events


@implementer(IBalancer)
class RecordingBalancer(RoundRobin):
    """Round robin that records each context it is asked about."""

    def __init__(self) -> None:
        RoundRobin.__init__(self)
        self.contexts: list[Context] = []

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        self.contexts.append(context)
        return RoundRobin.pick(self, servers, context)


class OrderRecordingTransport(HalfCloseableStringTransport):
    """Records whether a producer was still registered when it was closed."""

    producerAtClose: object = "never closed"

    def loseConnection(self) -> None:
        if self.producerAtClose == "never closed":
            self.producerAtClose = self.producer
        HalfCloseableStringTransport.loseConnection(self)


class Harness:
    """A frontend and backend on a L{MemoryReactorClock}, fed by hand."""

    def __init__(
        self,
        testCase: SynchronousTestCase,
        servers: Sequence[Server],
        *,
        timeoutClient: float = 30.0,
        acceptProxy: bool = False,
        **backendArgs: Any,
    ) -> None:
        self.reactor = MemoryReactorClock()
        self.backend = Backend("be", servers, **backendArgs)
        self.frontend = Frontend("tcp:8080", self.backend, name="fe", timeoutClient=timeoutClient, acceptProxy=acceptProxy)
        self.factory = self.frontend.buildFactory(self.reactor)
        self.protocols: list[TCPFrontendProtocol] = []
        testCase.addCleanup(self._cleanUp, testCase)

    def accept(
        self, client: IPv4Address = CLIENT, transport: HalfCloseableStringTransport | None = None
    ) -> tuple[TCPFrontendProtocol, HalfCloseableStringTransport]:
        """A client connects."""
        proto = self.factory.buildProtocol(client)
        assert isinstance(proto, TCPFrontendProtocol)
        if transport is None:
            transport = HalfCloseableStringTransport(hostAddress=FRONT, peerAddress=client)
        proto.makeConnection(transport)
        self.protocols.append(proto)
        return proto, transport

    def end(self, proto: TCPFrontendProtocol, reason: Failure = DONE) -> None:
        """Both connections of C{proto} report that they are gone."""
        if proto.peer is not None and not proto._serverGone:
            proto.peer.connectionLost(reason)
        if not proto._clientGone:
            proto.connectionLost(reason)

    def _cleanUp(self, testCase: SynchronousTestCase) -> None:
        for proto in self.protocols:
            self.end(proto)
        testCase.assertEqual(self.reactor.getDelayedCalls(), [])
        testCase.assertEqual([s.active for s in self.backend.servers], [0] * len(self.backend.servers))


class PumpTests(SynchronousTestCase):
    """
    Relaying bytes, back-pressure and half-close.
    """

    def setUp(self) -> None:
        self.endpoint = FakeEndpoint()
        self.server = Server("a", self.endpoint)
        self.h = Harness(self, [self.server])

    def test_factoryProtocol(self) -> None:
        """The default factory builds L{TCPFrontendProtocol}s, quietly."""
        self.assertIs(TCPProxyFactory.protocol, TCPFrontendProtocol)
        self.assertFalse(TCPProxyFactory.noisy)

    def test_clientPausedUntilConnected(self) -> None:
        """Nothing is read from the client before the server connection exists."""
        proto, client = self.h.accept()
        self.assertEqual(client.producerState, "paused")
        self.assertEqual(len(self.endpoint.pending), 1)
        self.endpoint.succeed()
        self.assertEqual(client.producerState, "producing")

    def test_producersBothWays(self) -> None:
        """Each transport is registered as the other's streaming producer."""
        proto, client = self.h.accept()
        serverSide = self.endpoint.succeed()
        self.assertIs(serverSide.producer, client)
        self.assertIs(client.producer, serverSide)
        self.assertTrue(serverSide.streaming)
        self.assertTrue(client.streaming)

    def test_relay(self) -> None:
        """Bytes flow both ways, including bytes received before the connect."""
        proto, client = self.h.accept()
        proto.dataReceived(b"early ")
        serverSide = self.endpoint.succeed()
        proto.dataReceived(b"hello")
        assert proto.peer is not None
        proto.peer.dataReceived(b"world")
        self.assertEqual(serverSide.value(), b"early hello")
        self.assertEqual(client.value(), b"world")

    def test_clientHalfClose(self) -> None:
        """The client's EOF shuts the server's write half; replies keep flowing; both EOFs close."""
        proto, client = self.h.accept()
        serverSide = self.endpoint.succeed()
        assert proto.peer is not None
        proto.readConnectionLost()
        self.assertTrue(serverSide.writeDisconnected)
        self.assertIsNone(serverSide.producer)
        self.assertFalse(serverSide.disconnecting or client.disconnecting)
        proto.peer.dataReceived(b"reply")
        self.assertEqual(client.value(), b"reply")
        proto.peer.readConnectionLost()
        self.assertTrue(client.writeDisconnected)
        self.assertTrue(client.disconnecting and serverSide.disconnecting)

    def test_serverHalfClose(self) -> None:
        """The server's EOF shuts the client's write half; requests keep flowing; both EOFs close."""
        proto, client = self.h.accept()
        serverSide = self.endpoint.succeed()
        assert proto.peer is not None
        proto.peer.readConnectionLost()
        self.assertTrue(client.writeDisconnected)
        self.assertIsNone(client.producer)
        self.assertFalse(serverSide.disconnecting or client.disconnecting)
        proto.dataReceived(b"more")
        self.assertEqual(serverSide.value(), b"more")
        proto.readConnectionLost()
        self.assertTrue(serverSide.writeDisconnected)
        self.assertTrue(client.disconnecting and serverSide.disconnecting)

    def test_clientEOFBeforeConnect(self) -> None:
        """A client EOF that arrives while connecting is passed on once connected."""
        proto, client = self.h.accept()
        proto.dataReceived(b"all of it")
        proto.readConnectionLost()
        serverSide = self.endpoint.succeed()
        self.assertEqual(serverSide.value(), b"all of it")
        self.assertTrue(serverSide.writeDisconnected)
        assert proto.peer is not None
        proto.peer.readConnectionLost()
        self.assertTrue(client.disconnecting)

    def test_unregisterBeforeLoseConnection(self) -> None:
        """Producers are unregistered before either side is closed."""
        proto, client = self.h.accept(transport=OrderRecordingTransport(FRONT, CLIENT))
        serverSide = self.endpoint.succeed(OrderRecordingTransport())
        assert proto.peer is not None
        proto.peer.connectionLost(LOST)
        self.assertTrue(client.disconnecting and serverSide.disconnecting)
        self.assertIsNone(client.producerAtClose)  # type: ignore[attr-defined]
        self.assertIsNone(serverSide.producerAtClose)  # type: ignore[attr-defined]
        self.assertEqual(proto.termination, "SD")

    def test_serverGoneClosesClient(self) -> None:
        """When the server connection ends, the client connection is closed."""
        proto, client = self.h.accept()
        self.endpoint.succeed()
        assert proto.peer is not None
        proto.peer.connectionLost(DONE)
        self.assertTrue(client.disconnecting)

    def test_unresponsivePeerAborted(self) -> None:
        """A side that does not finish closing is aborted after a grace period."""
        proto, client = self.h.accept()
        serverSide = self.endpoint.succeed()
        proto.connectionLost(LOST)
        self.assertTrue(serverSide.disconnecting)
        self.assertFalse(serverSide.disconnected)
        self.h.reactor.advance(30)
        self.assertTrue(serverSide.disconnected)
        assert proto.peer is not None
        proto.peer.connectionLost(LOST)

    def test_countersAndSlots(self) -> None:
        """A finished connection frees its slot and adds its bytes to the counters."""
        proto, client = self.h.accept()
        self.endpoint.succeed()
        assert proto.peer is not None
        proto.dataReceived(b"12345")
        proto.peer.dataReceived(b"123")
        self.assertEqual(self.server.active, 1)
        self.h.end(proto)
        self.assertEqual((self.server.active, self.server.total), (0, 1))
        self.assertEqual((self.server.bytesIn, self.server.bytesOut), (5, 3))
        self.assertEqual((self.h.factory.bytesIn, self.h.factory.bytesOut), (5, 3))
        self.assertEqual((self.h.factory.current, self.h.factory.total), (0, 1))

    def test_sessionRegistered(self) -> None:
        """A connected session is in its server's C{sessions} until it finishes."""
        proto, client = self.h.accept()
        self.assertEqual(self.server.sessions, set())
        self.endpoint.succeed()
        self.assertEqual(self.server.sessions, {proto})
        self.h.end(proto)
        self.assertEqual(self.server.sessions, set())

    def test_abortSession(self) -> None:
        """abortSession aborts both connections and is logged as killed."""
        proto, client = self.h.accept()
        serverSide = self.endpoint.succeed()
        proto.abortSession()
        self.assertTrue(client.disconnected and serverSide.disconnected)
        self.assertEqual(proto.termination, "SK")

    def test_clientLeavesDuringConnect(self) -> None:
        """A client that leaves while the server connect is pending cancels it."""
        proto, client = self.h.accept()
        proto.connectionLost(LOST)
        self.assertTrue(self.endpoint.attempts[0].cancelled)
        self.assertEqual(self.server.active, 0)
        self.assertEqual(self.server.connectFailures, 0)
        self.assertEqual(proto.termination, "CC")


class BrokenHookTests(SynchronousTestCase):
    """
    An exception in a subclass hook does not leave a connection hanging.
    """

    def test_hookRaises(self) -> None:
        """A failing serverConnected hook is logged and both sides are aborted."""

        class Broken(TCPFrontendProtocol):
            def serverConnected(self, server: Server, peer: Any) -> None:
                raise ZeroDivisionError("hook bug")

        endpoint = FakeEndpoint()
        h = Harness(self, [Server("a", endpoint)])
        h.factory.protocol = Broken
        proto, client = h.accept()
        serverSide = endpoint.succeed()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(client.disconnected and serverSide.disconnected)
        self.assertEqual(proto.termination, "IC")


class AccessLogTests(SynchronousTestCase):
    """
    The one access-log line per connection.
    """

    def test_fields(self) -> None:
        """The line shows client, frontend, backend/server, bytes, termination and retries."""
        events = captureLogs(self, "lbkit.access")
        endpoint = FakeEndpoint()
        h = Harness(self, [Server("a", endpoint)])
        proto, client = h.accept()
        endpoint.succeed()
        assert proto.peer is not None
        proto.dataReceived(b"x" * 10)
        proto.peer.dataReceived(b"y" * 20)
        h.reactor.advance(1.5)
        h.end(proto)
        self.assertEqual(len(events), 1)
        event = events[0]
        self.assertEqual(
            {k: event[k] for k in ("client", "frontend", "backend", "server", "bytesIn", "bytesOut", "termination", "retries", "Tt")},
            dict(client="198.51.100.7:51000", frontend="fe", backend="be", server="a", bytesIn=10, bytesOut=20,
                 termination="--", retries=0, Tt=1500),
        )
        line = formatEvent(event)
        self.assertTrue(line.startswith("198.51.100.7:51000 ["), line)
        self.assertTrue(line.endswith(" fe be/a 0/0/1500 10 20 -- 0"), line)

    def test_noServer(self) -> None:
        """A connection that found no server is logged against <NOSRV>."""
        events = captureLogs(self, "lbkit.access")
        server = Server("a", FakeEndpoint())
        h = Harness(self, [server])
        server.setState(ServerState.MAINT)
        proto, client = h.accept()
        h.end(proto)
        self.assertIn(" fe be/<NOSRV> ", formatEvent(events[0]))
        self.assertTrue(formatEvent(events[0]).endswith(" SC 0"))

    def test_queueTimeoutTw(self) -> None:
        """A connection that timed out in the queue logs the time it waited there as Tw."""
        events = captureLogs(self, "lbkit.access")
        endpoint = FakeEndpoint()
        h = Harness(self, [Server("a", endpoint, maxconn=1)], timeoutQueue=3)
        first, _ = h.accept()
        endpoint.succeed()
        h.reactor.advance(0.5)
        second, _ = h.accept()
        h.reactor.advance(3)
        h.end(second)
        self.assertEqual([(e["termination"], e["Tw"], e["Tc"]) for e in events], [("sQ", 3000, -1)])
        h.end(first)
        self.assertEqual((events[1]["termination"], events[1]["Tw"]), ("--", 0))

    def test_twBeforeQueue(self) -> None:
        """A connection that ended before a server was looked for logs Tw -1 (HAProxy's meaning)."""
        events = captureLogs(self, "lbkit.access")
        h = Harness(self, [Server("a", FakeEndpoint())], acceptProxy=True)
        proto, _ = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        h.end(proto)
        self.assertEqual([(e["termination"], e["Tw"], e["Tc"]) for e in events], [("PR", -1, -1)])

    def test_disabled(self) -> None:
        """A frontend with log=False logs no access lines."""
        events = captureLogs(self, "lbkit.access")
        endpoint = FakeEndpoint()
        backend = Backend("be", [Server("a", endpoint)])
        memory = MemoryReactorClock()
        factory = Frontend("tcp:1", backend, log=False).buildFactory(memory)
        proto = factory.buildProtocol(CLIENT)
        assert isinstance(proto, TCPFrontendProtocol)
        proto.makeConnection(HalfCloseableStringTransport(FRONT, CLIENT))
        proto.connectionLost(DONE)
        self.assertEqual(events, [])
        self.assertEqual(memory.getDelayedCalls(), [])


class ConnectTests(SynchronousTestCase):
    """
    Connect failures, timeouts, retries and passive-check reports.
    """

    def test_timeoutRetriesAnotherServer(self) -> None:
        """A connect that times out is cancelled, counted, and another server is tried."""
        ea, eb = FakeEndpoint(), FakeEndpoint()
        a, b = Server("a", ea), Server("b", eb)
        h = Harness(self, [a, b], timeoutConnect=5)
        proto, client = h.accept()
        self.assertEqual((len(ea.pending), len(eb.pending)), (1, 0))
        h.reactor.advance(5)
        self.assertTrue(ea.attempts[0].cancelled)
        self.assertEqual((a.connectFailures, a.retries, a.active), (1, 1, 0))
        serverSide = eb.succeed()
        self.assertIs(proto.server, b)
        self.assertIs(serverSide.producer, client)
        self.assertEqual(proto.attempts, 2)

    def test_retriesExhaustedAfterTimeouts(self) -> None:
        """After C{retries} more timeouts the client is closed with termination sC."""
        endpoint = FakeEndpoint()
        server = Server("a", endpoint)
        h = Harness(self, [server], timeoutConnect=2, retries=2)
        proto, client = h.accept()
        for _ in range(3):
            self.assertFalse(client.disconnecting)
            self.assertEqual(len(endpoint.pending), 1)
            h.reactor.advance(2)
        self.assertTrue(client.disconnecting)
        self.assertEqual(proto.termination, "sC")
        self.assertEqual((server.connectFailures, len(endpoint.attempts)), (3, 3))

    def test_retriesExhaustedAfterRefusals(self) -> None:
        """After C{retries} more refusals the client is closed with termination SC."""
        ea, eb = FakeEndpoint(), FakeEndpoint()
        a, b = Server("a", ea), Server("b", eb)
        h = Harness(self, [a, b], retries=3)
        proto, client = h.accept()
        for _ in range(4):
            self.assertFalse(client.disconnecting)
            (ea if ea.pending else eb).fail()
        self.assertTrue(client.disconnecting)
        self.assertEqual(proto.termination, "SC")
        self.assertEqual(a.connectFailures + b.connectFailures, 4)
        self.assertTrue(a.connectFailures and b.connectFailures)

    def test_observesOutcomes(self) -> None:
        """Each failed connect and each successful one is reported to the server's observers."""
        endpoint = FakeEndpoint()
        server = Server("a", endpoint)
        seen: list[tuple[Server, bool, str]] = []
        server.addObserver(lambda *args: seen.append(args))
        h = Harness(self, [server])
        h.accept()
        endpoint.fail(ConnectionRefusedError("nobody home"))
        endpoint.succeed()
        self.assertEqual(
            [(s, ok) for s, ok, _ in seen], [(server, False), (server, True)]
        )
        self.assertTrue(seen[0][2].startswith("Layer4 connection problem: "), seen[0][2])
        self.assertIn("nobody home", seen[0][2])

    def test_noServerCloses(self) -> None:
        """With no usable server, the client is closed at once."""
        endpoint = FakeEndpoint()
        server = Server("a", endpoint)
        h = Harness(self, [server])
        server.setState(ServerState.DOWN)
        proto, client = h.accept()
        self.assertTrue(client.disconnecting)
        self.assertEqual(endpoint.attempts, [])
        self.assertEqual(proto.termination, "SC")

    def test_directIPv4Connect(self) -> None:
        """A 'host:port' IPv4 server is reached with connectTCP, with the connect timeout."""
        server = Server("a", "10.0.0.1:6379")
        h = Harness(self, [server], timeoutConnect=4)
        proto, client = h.accept()
        host, port, factory, timeout, bindAddress = h.reactor.tcpClients[0]
        self.assertEqual((host, port, timeout), ("10.0.0.1", 6379, 4))
        self.assertFalse(factory.noisy)
        serverProto = factory.buildProtocol(None)
        assert serverProto is not None
        serverSide = HalfCloseableStringTransport()
        serverProto.makeConnection(serverSide)
        self.assertIs(proto.peer, serverProto)
        self.assertIs(serverSide.producer, client)

    def test_directIPv4Refused(self) -> None:
        """A refused connectTCP counts a failure and retries."""
        a, b = Server("a", "10.0.0.1:1"), Server("b", "10.0.0.2:1")
        h = Harness(self, [a, b])
        proto, client = h.accept()
        connector = h.reactor.connectors[0]
        h.reactor.tcpClients[0][2].clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        self.assertEqual(a.connectFailures, 1)
        self.assertEqual(h.reactor.tcpClients[1][0], "10.0.0.2")
        h.end(proto)


    def test_directIPv4Timeout(self) -> None:
        """A connectTCP attempt still pending after timeoutConnect is stopped and another server tried."""
        a, b = Server("a", "10.0.0.1:1"), Server("b", "10.0.0.2:1")
        h = Harness(self, [a, b], timeoutConnect=3)
        proto, client = h.accept()
        h.reactor.advance(3)
        self.assertEqual(h.reactor.connectors[0].stoppedConnecting, True)
        self.assertEqual((a.connectFailures, h.reactor.tcpClients[1][0]), (1, "10.0.0.2"))

    def test_directIPv4ReactorTimeout(self) -> None:
        """connectTCP's own timeout error counts as a connect timeout (sC)."""
        from twisted.internet.error import TimeoutError as ConnectTimeoutError

        server = Server("a", "10.0.0.1:1")
        h = Harness(self, [server], retries=0)
        proto, client = h.accept()
        factory = h.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(h.reactor.connectors[0], Failure(ConnectTimeoutError()))
        self.assertTrue(client.disconnecting)
        self.assertEqual(proto.termination, "sC")


class QueueTests(SynchronousTestCase):
    """
    Waiting in the backend queue when every server is at maxconn.
    """

    def setUp(self) -> None:
        self.endpoint = FakeEndpoint()
        self.server = Server("a", self.endpoint, maxconn=1)
        self.h = Harness(self, [self.server], timeoutQueue=3)

    def test_firstComeFirstServed(self) -> None:
        """Queued clients are connected in arrival order as slots free up."""
        first, _ = self.h.accept()
        self.endpoint.succeed()
        second, secondClient = self.h.accept()
        third, _ = self.h.accept()
        self.assertEqual(self.h.backend.queueLength(), 2)
        self.assertEqual(self.endpoint.pending, [])
        self.assertEqual(secondClient.producerState, "paused")
        self.h.end(first)
        self.endpoint.succeed()
        self.assertIsNotNone(second.peer)
        self.assertIsNone(third.peer)
        self.h.end(second)
        self.endpoint.succeed()
        self.assertIsNotNone(third.peer)

    def test_queueTimeout(self) -> None:
        """A client still queued after timeoutQueue is closed with termination sQ."""
        first, _ = self.h.accept()
        self.endpoint.succeed()
        second, client = self.h.accept()
        self.h.reactor.advance(3)
        self.assertTrue(client.disconnecting)
        self.assertEqual(second.termination, "sQ")
        self.assertEqual(self.h.backend.queueLength(), 0)

    def test_clientLeavesQueue(self) -> None:
        """A client that leaves while queued leaves the queue."""
        first, _ = self.h.accept()
        self.endpoint.succeed()
        second, client = self.h.accept()
        second.connectionLost(LOST)
        self.assertEqual(self.h.backend.queueLength(), 0)
        self.assertEqual(second.termination, "CQ")


class IdleTimeoutTests(SynchronousTestCase):
    """
    The idle timeout (timeoutClient / timeoutServer).
    """

    def setUp(self) -> None:
        self.endpoint = FakeEndpoint()
        self.h = Harness(self, [Server("a", self.endpoint)], timeoutClient=10)

    def test_idleCloses(self) -> None:
        """A connection with no traffic for timeoutClient seconds is closed."""
        proto, client = self.h.accept()
        serverSide = self.endpoint.succeed()
        for _ in range(19):
            self.h.reactor.advance(0.5)
        self.assertFalse(client.disconnecting)
        self.h.reactor.advance(0.5)
        self.assertTrue(client.disconnecting and serverSide.disconnecting)
        self.assertEqual(proto.termination, "cD")

    def test_trafficKeepsOpen(self) -> None:
        """Traffic in either direction resets the idle timer."""
        proto, client = self.h.accept()
        self.endpoint.succeed()
        assert proto.peer is not None
        for i in range(10):
            self.h.reactor.advance(5)
            if i % 2:
                proto.dataReceived(b"ping")
            else:
                proto.peer.dataReceived(b"pong")
        self.assertFalse(client.disconnecting)


class TerminationCodeTests(SynchronousTestCase):
    """
    The termination code a connection is logged with follows the phase it
    was in (HAProxy's codes, docs/operations.md).
    """

    def test_clientLostRelaying(self) -> None:
        """A client reset while bytes flow is CD."""
        endpoint = FakeEndpoint()
        h = Harness(self, [Server("a", endpoint)])
        proto, _ = h.accept()
        endpoint.succeed()
        proto.connectionLost(LOST)
        self.assertEqual(proto.termination, "CD")

    def test_clientLostWhileRetryWaits(self) -> None:
        """A client lost while its retry waits in the queue is CC: a server was chosen already."""
        ea, eb = FakeEndpoint(), FakeEndpoint()
        a, b = Server("a", ea, maxconn=1), Server("b", eb, maxconn=1)
        h = Harness(self, [a, b])
        first, _ = h.accept()
        (ea if ea.pending else eb).succeed()
        second, _ = h.accept()
        (ea if ea.pending else eb).fail()
        self.assertEqual((h.backend.queueLength(), second.attempts), (1, 1))
        second.connectionLost(LOST)
        self.assertEqual((second.termination, h.backend.queueLength()), ("CC", 0))

    def test_killedBeforeConnected(self) -> None:
        """A connection killed at shutdown before its server connection is KC."""
        h = Harness(self, [Server("a", FakeEndpoint())])
        proto, client = h.accept()
        proto.kill()
        self.assertEqual(proto.termination, "KC")

    def test_killedWhileClosing(self) -> None:
        """A connection killed after both directions ended, before it is gone, is KD."""
        endpoint = FakeEndpoint()
        h = Harness(self, [Server("a", endpoint)])
        proto, client = h.accept()
        endpoint.succeed()
        assert proto.peer is not None
        proto.readConnectionLost()
        proto.peer.readConnectionLost()
        self.assertTrue(client.disconnecting)
        proto.kill()
        self.assertEqual(proto.termination, "KD")

    def test_clientIdleBeforeHeader(self) -> None:
        """A client that never sends its PROXY header is closed after timeoutClient as cR."""
        endpoint = FakeEndpoint()
        h = Harness(self, [Server("a", endpoint)], timeoutClient=10, acceptProxy=True)
        proto, client = h.accept()
        h.reactor.advance(9.9)
        self.assertFalse(client.disconnecting)
        for _ in range(4):
            h.reactor.advance(2.5)
        self.assertTrue(client.disconnecting)
        self.assertEqual((proto.termination, endpoint.attempts), ("cR", []))

    def test_serverIdle(self) -> None:
        """With timeoutServer the shorter, an idle connection is sD."""
        endpoint = FakeEndpoint()
        h = Harness(self, [Server("a", endpoint)], timeoutClient=30, timeoutServer=4)
        proto, client = h.accept()
        endpoint.succeed()
        for _ in range(10):
            h.reactor.advance(1)
        self.assertTrue(client.disconnecting)
        self.assertEqual(proto.termination, "sD")


class ProxyProtocolTests(SynchronousTestCase):
    """
    Sending and accepting PROXY protocol headers.
    """

    def test_sendV1(self) -> None:
        """A sendProxy=1 server gets a v1 header with the client address first."""
        endpoint = FakeEndpoint()
        h = Harness(self, [Server("a", endpoint, sendProxy=1)])
        proto, client = h.accept()
        proto.dataReceived(b"payload")
        serverSide = endpoint.succeed()
        self.assertEqual(serverSide.value(), b"PROXY TCP4 198.51.100.7 127.0.0.1 51000 8080\r\npayload")

    def test_sendV2(self) -> None:
        """A sendProxy=2 server gets a v2 header with the client address first."""
        endpoint = FakeEndpoint()
        h = Harness(self, [Server("a", endpoint, sendProxy=2)])
        proto, client = h.accept()
        serverSide = endpoint.succeed()
        proto.dataReceived(b"payload")
        self.assertEqual(serverSide.value(), formatV2(CLIENT, FRONT) + b"payload")

    def test_acceptProxy(self) -> None:
        """With acceptProxy, the header's source is the client in the context, logs and balancer."""
        events = captureLogs(self, "lbkit.access")
        endpoint = FakeEndpoint()
        balancer = RecordingBalancer()
        h = Harness(self, [Server("a", endpoint)], acceptProxy=True, balance=balancer)
        proto, client = h.accept()
        self.assertEqual(endpoint.attempts, [])
        real = IPv4Address("TCP", "203.0.113.9", 40000)
        header = formatV1(real, FRONT)
        proto.dataReceived(header[:10])
        proto.dataReceived(header[10:] + b"GET /")
        self.assertEqual(client.producerState, "paused")
        serverSide = endpoint.succeed()
        self.assertEqual(serverSide.value(), b"GET /")
        assert proto.context is not None
        self.assertEqual(proto.context.client, real)
        self.assertEqual([c.client for c in balancer.contexts], [real])
        h.end(proto)
        self.assertEqual(events[0]["client"], "203.0.113.9:40000")
        self.assertEqual(events[0]["bytesIn"], 5)

    def test_acceptProxyV2(self) -> None:
        """A v2 header is accepted too."""
        endpoint = FakeEndpoint()
        h = Harness(self, [Server("a", endpoint)], acceptProxy=True)
        proto, client = h.accept()
        real = IPv4Address("TCP", "203.0.113.9", 40000)
        proto.dataReceived(formatV2(real, FRONT))
        endpoint.succeed()
        assert proto.context is not None
        self.assertEqual(proto.context.client, real)

    def test_acceptThenSend(self) -> None:
        """A header passed on carries the addresses of the header received."""
        endpoint = FakeEndpoint()
        h = Harness(self, [Server("a", endpoint, sendProxy=1)], acceptProxy=True)
        proto, client = h.accept()
        real = IPv4Address("TCP", "203.0.113.9", 40000)
        original = IPv4Address("TCP", "192.0.2.80", 443)
        proto.dataReceived(formatV1(real, original))
        serverSide = endpoint.succeed()
        self.assertEqual(serverSide.value(), formatV1(real, original))

    def test_malformedHeaderAborts(self) -> None:
        """A malformed PROXY header aborts the client connection and is logged."""
        events = captureLogs(self, "lbkit.tcp")
        endpoint = FakeEndpoint()
        h = Harness(self, [Server("a", endpoint)], acceptProxy=True)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.assertTrue(client.disconnected)
        self.assertEqual(endpoint.attempts, [])
        self.assertEqual(proto.termination, "PR")
        self.assertEqual(len(events), 1)
        self.assertIn("malformed PROXY header", formatEvent(events[0]))
        self.assertIn("198.51.100.7:51000", formatEvent(events[0]))

    def test_eofDuringHeader(self) -> None:
        """A client that closes before a whole header arrived is closed."""
        endpoint = FakeEndpoint()
        h = Harness(self, [Server("a", endpoint)], acceptProxy=True)
        proto, client = h.accept()
        proto.dataReceived(b"PROXY TCP4 ")
        proto.readConnectionLost()
        self.assertTrue(client.disconnecting)
        self.assertEqual(endpoint.attempts, [])


class FakesTests(SynchronousTestCase):
    """
    Tests for the public fakes in L{lbkit.testing}.
    """

    def test_fakeEndpointProvides(self) -> None:
        """FakeEndpoint provides IStreamClientEndpoint."""
        from twisted.internet.interfaces import IStreamClientEndpoint

        self.assertTrue(verifyObject(IStreamClientEndpoint, FakeEndpoint()))

    def test_succeedAndFail(self) -> None:
        """succeed connects a protocol to a new transport; fail errbacks the oldest attempt."""
        endpoint = FakeEndpoint()
        factory = Factory.forProtocol(Protocol)
        first = endpoint.connect(factory)
        second = endpoint.connect(factory)
        transport = endpoint.succeed()
        proto = self.successResultOf(first)
        assert isinstance(proto, Protocol)
        self.assertIs(proto.transport, transport)
        endpoint.fail()
        self.failureResultOf(second, ConnectionRefusedError)
        self.assertRaises(RuntimeError, endpoint.succeed)

    def test_halfCloseRecorded(self) -> None:
        """loseWriteConnection is recorded and later writes raise."""
        transport = HalfCloseableStringTransport()
        transport.write(b"a")
        transport.loseWriteConnection()
        self.assertTrue(transport.writeDisconnected)
        self.assertRaises(RuntimeError, transport.write, b"b")
        transport.unregisterProducer()  # no producer: nothing happens


# -- real sockets on 127.0.0.1 ------------------------------------------------


class RealSocketTests(TestCase):
    """
    lbkit in this process, between real clients and servers on 127.0.0.1.
    """

    timeout = 20

    def startProxy(self, servers: Sequence[Server], **backendArgs: Any) -> int:
        """Listen with a tcp frontend in front of C{servers}; return its port."""
        backend = Backend("be", servers, **backendArgs)
        self.proxyFactory = TrackingProxyFactory(Frontend("tcp:0", backend, name="fe"), reactor)
        return listen(self, reactor, self.proxyFactory)

    def startServer(self, protocol: Any) -> tuple[TrackingFactory, int]:
        """Listen with a backend server; return its factory and port."""
        factory = TrackingFactory(protocol)
        return factory, listen(self, reactor, factory)

    def connect(self, port: int, client: Collector) -> Deferred[bytes]:
        """Connect C{client} to C{port}; fire with what it received once closed."""
        d = ClientCreator(reactor, lambda: client).connectTCP("127.0.0.1", port)
        return d.addCallback(lambda _: client.done)  # type: ignore[no-any-return]

    def settle(self, *factories: TrackingFactory) -> Deferred[Any]:
        """Fire once every proxied and backend connection is gone."""
        waits = [p.allGone() for p in self.proxyFactory.built] + [f.allLost() for f in factories]
        return gatherResults(waits)

    @inlineCallbacks
    def test_echo(self) -> Any:
        """Round trips of various sizes come back intact, spread over both servers."""
        f1, p1 = self.startServer(Echo)
        f2, p2 = self.startServer(Echo)
        port = self.startProxy([Server("a", f"127.0.0.1:{p1}"), Server("b", f"127.0.0.1:{p2}")])
        for size in (1, 1000, 3 * 2**20):
            data = os.urandom(size)
            received = yield self.connect(port, Collector(data, expect=size))
            self.assertEqual(received, data)
        yield self.settle(f1, f2)
        self.assertEqual((len(f1.built), len(f2.built)), (2, 1))

    @inlineCallbacks
    def test_halfClose(self) -> Any:
        """A client that shuts its write half still gets the server's whole reply."""
        factory, serverPort = self.startServer(ReplyAtEOF)
        port = self.startProxy([Server("a", f"127.0.0.1:{serverPort}")])
        client = Collector(b"x" * 2**20, halfClose=True)
        received = yield self.connect(port, client)
        self.assertEqual(received, b"got 1048576 bytes")
        self.assertTrue(client.readClosed)
        yield self.settle(factory)

    @inlineCallbacks
    def test_deadServerRetried(self) -> Any:
        """A server that refuses connections is counted and another server is tried."""
        events = captureLogs(self, "lbkit.access")
        factory, serverPort = self.startServer(Echo)
        dead = Server("dead", f"127.0.0.1:{freePort()}")
        port = self.startProxy([dead, Server("live", f"127.0.0.1:{serverPort}")])
        received = yield self.connect(port, Collector(b"ping", expect=4))
        self.assertEqual(received, b"ping")
        yield self.settle(factory)
        self.assertEqual((dead.connectFailures, dead.active), (1, 0))
        self.assertEqual((events[0]["server"], events[0]["retries"]), ("live", 1))

    @inlineCallbacks
    def test_proxyV2DatagramRefused(self) -> Any:
        """
        On a tcp frontend with acceptProxy, a v2 header naming UDP (or UNIX
        datagram) closes the connection (PR) before any server is
        contacted; the same header for TCP goes through.
        """
        import struct

        factory, serverPort = self.startServer(Echo)
        backend = Backend("be", [Server("a", f"127.0.0.1:{serverPort}")])
        self.proxyFactory = TrackingProxyFactory(Frontend("tcp:0", backend, name="fe", acceptProxy=True), reactor)
        port = listen(self, reactor, self.proxyFactory)
        signature = b"\r\n\r\n\x00\r\nQUIT\n"
        inet = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack("!HH", 5000, 53)
        inet6 = bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack("!HH", 5000, 53)
        unix = b"/run/a".ljust(108, b"\x00") * 2
        good = signature + struct.pack("!BBH", 0x21, 0x11, len(inet)) + inet
        received = yield self.connect(port, Collector(good + b"ping", expect=4))
        self.assertEqual(received, b"ping")
        self.assertEqual(self.proxyFactory.built[-1].context.client.host, "10.0.0.1")  # type: ignore[union-attr]
        for family, block in ((0x12, inet), (0x22, inet6), (0x32, unix)):
            header = signature + struct.pack("!BBH", 0x21, family, len(block)) + block
            received = yield self.connect(port, Collector(header + b"ping", expect=4))
            self.assertEqual(received, b"", hex(family))
            self.assertEqual(self.proxyFactory.built[-1].termination, "PR", hex(family))
        yield self.settle(factory)
        self.assertEqual(len(factory.built), 1)

    @inlineCallbacks
    def test_proxyV1PortLeadingZeroRefused(self) -> Any:
        """
        On a tcp frontend with acceptProxy, a v1 header whose port has a
        leading zero closes the connection (PR) before any server is
        contacted; port 0 and the same ports without zeros go through.
        """
        factory, serverPort = self.startServer(Echo)
        backend = Backend("be", [Server("a", f"127.0.0.1:{serverPort}")])
        self.proxyFactory = TrackingProxyFactory(Frontend("tcp:0", backend, name="fe", acceptProxy=True), reactor)
        port = listen(self, reactor, self.proxyFactory)
        for good in (b"PROXY TCP4 10.0.0.1 10.0.0.2 80 443\r\n", b"PROXY TCP6 ::1 ::2 0 65535\r\n"):
            received = yield self.connect(port, Collector(good + b"ping", expect=4))
            self.assertEqual(received, b"ping", good)
        for bad in (b"PROXY TCP4 10.0.0.1 10.0.0.2 080 443\r\n", b"PROXY TCP4 10.0.0.1 10.0.0.2 80 0443\r\n",
                    b"PROXY TCP6 ::1 ::2 1 00000\r\n", b"PROXY TCP6 ::1 ::2 00 1\r\n"):
            received = yield self.connect(port, Collector(bad + b"ping", expect=4))
            self.assertEqual(received, b"", bad)
            self.assertEqual(self.proxyFactory.built[-1].termination, "PR", bad)
        yield self.settle(factory)
        self.assertEqual(len(factory.built), 2)


CHUNK = b"\xa5" * 2**16
TOTAL = 200 * 2**20


@implementer(IPushProducer)
class Firehose(Protocol):
    """Sends C{TOTAL} bytes as fast as the connection takes them, then closes."""

    def connectionMade(self) -> None:
        self.sent = 0
        self.paused = False
        assert self.transport is not None
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        transport = self.transport
        assert transport is not None
        while not self.paused and self.sent < TOTAL:
            transport.write(CHUNK)
            self.sent += len(CHUNK)
        if self.sent >= TOTAL and not self.paused:
            transport.unregisterProducer()  # type: ignore[attr-defined]
            transport.loseConnection()
            self.paused = True

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True
        self.sent = TOTAL


class SlowReader(Protocol):
    """Reads at most C{burst} bytes, then stops reading for C{pause} seconds."""

    burst = 2**20
    pause = 0.03

    def __init__(self) -> None:
        self.count = 0
        self._sinceBreak = 0
        self.done: Deferred[int] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.count += len(data)
        self._sinceBreak += len(data)
        if self._sinceBreak >= self.burst:
            self._sinceBreak = 0
            assert self.transport is not None
            self.transport.pauseProducing()  # type: ignore[attr-defined]
            self._resume = reactor.callLater(self.pause, self.transport.resumeProducing)  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = DONE) -> None:
        resume = getattr(self, "_resume", None)
        if resume is not None and resume.active():
            resume.cancel()
        self.done.callback(self.count)


class BackpressureTests(TestCase):
    """
    lbkit as a C{twistd} process keeps its memory bounded when the client
    is slower than the server.
    """

    timeout = 60

    @inlineCallbacks
    def test_slowClientBoundedMemory(self) -> Any:
        """A slow client downloading 200 MB through lbkit raises its RSS by under 40 MB."""
        serverFactory = TrackingFactory(Firehose)
        serverPort = listen(self, reactor, serverFactory)
        lbPort = freePort()
        site = self.mktemp() + ".py"
        with open(site, "w") as f:
            f.write(
                "from lbkit import Backend, Server, tcp\n"
                f"be = Backend('be', [Server('firehose', '127.0.0.1:{serverPort}')], timeoutServer=60)\n"
                f"listen = [tcp.Frontend('tcp:{lbPort}:interface=127.0.0.1', be, name='fe', timeoutClient=60)]\n"
            )
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        lbkit = spawn(self, reactor, [twistd, "-n", "--pidfile=", "lbkit", "--config", site])
        yield lbkit.waitForOutput(b"listening on", timeout=20)
        pid = lbkit.pid()
        baseline = procRSS(pid)
        peak = [baseline]
        sampler = LoopingCall(lambda: peak.append(max(peak[-1], procRSS(pid))))
        sampler.clock = reactor
        sampler.start(0.05)

        def stopSampling() -> None:
            if sampler.running:
                sampler.stop()

        self.addCleanup(stopSampling)
        client = SlowReader()
        yield ClientCreator(reactor, lambda: client).connectTCP("127.0.0.1", lbPort)
        received = yield client.done
        sampler.stop()
        yield serverFactory.allLost()
        self.assertEqual(received, TOTAL)
        growth = peak[-1] - baseline
        self.assertLess(growth, 40 * 2**20, f"lbkit RSS grew by {growth / 2**20:.1f} MB")
        self.assertEqual(lbkit.exitCode, None)




class CancelledConnectTests(SynchronousTestCase):
    def test_cancelIsCancelled(self) -> None:
        """Cancelling an IPv4 connect fails it with CancelledError, not the connector's UserError."""
        reactor = StopFailsReactor()
        server = Server("s", "127.0.0.1:9")
        d: Deferred[Any] = connectServer(reactor, server, TCPFrontendProtocol(), 5)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(reactor.getDelayedCalls(), [])


class RaisingServerChosenTests(SynchronousTestCase):
    def test_raisingHookReleasesSlot(self) -> None:
        """A serverChosen hook that raises does not leak the server's slot."""

        class RaisingHook(TCPFrontendProtocol):
            def serverChosen(self, server: Server) -> None:
                raise RuntimeError("hook failed")

        class RaisingFactory(TCPProxyFactory):
            protocol = RaisingHook

        reactor = MemoryReactorClock()
        server = Server("s", FakeEndpoint())
        backend = Backend("b", [server])
        frontend = Frontend("tcp:0", backend, factory=RaisingFactory, log=False)
        factory = frontend.buildFactory(reactor)
        proto = factory.buildProtocol(CLIENT)
        transport = HalfCloseableStringTransport(hostAddress=FRONT, peerAddress=CLIENT)
        proto.makeConnection(transport)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        proto.connectionLost(Failure(ConnectionError()))
        self.assertEqual(server.active, 0)
        self.assertEqual(backend.tryAcquire(Context()), server)
        backend.release(server)
        for call in reactor.getDelayedCalls():
            call.cancel()
