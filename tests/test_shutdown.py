"""
Tests for graceful shutdown (L{lbkit.service.ListeningService.drain},
L{lbkit._drain.DrainingFactory}): stop accepting at once, let what is in
flight finish within the grace period, then close the rest.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbkit import Backend, Server, http, tcp
from lbkit._drain import DrainingFactory
from lbkit.service import LoadBalancerService
from tests.helpers import Echo, TrackingFactory
from tests.test_reload import Client, captureLog, frontendPort, reactor, startBackend


class LineClient(Protocol):
    """Sends lines and fires a Deferred per echo; records how it ended."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiting: list[tuple[bytes, Deferred[None]]] = []
        self.lost: Deferred[None] = Deferred()
        self.reason: Failure | None = None

    def send(self, data: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiting.append((data, d))
        assert self.transport is not None
        self.transport.write(data)
        return d

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while self.waiting and self.buffer.startswith(self.waiting[0][0]):
            expected, d = self.waiting.pop(0)
            self.buffer = self.buffer[len(expected):]
            d.callback(None)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.reason = reason
        self.lost.callback(None)


def connect(port: int) -> Deferred[LineClient]:
    return connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", port), LineClient())


class ShutdownTests(TestCase):
    """Real sockets: what a stopping balancer does with its connections."""

    timeout = 15

    def tcpService(self, grace: float) -> tuple[LoadBalancerService, TrackingFactory]:
        echo = TrackingFactory(Echo)
        port = reactor().listenTCP(0, echo, interface="127.0.0.1")
        self.addCleanup(lambda: gatherResults([port.stopListening(), echo.allLost()]))
        backend = Backend("echo", [Server("e1", f"127.0.0.1:{port.getHost().port}")])
        service = LoadBalancerService(
            [tcp.Frontend("tcp:0:interface=127.0.0.1", backend, name="echo")], reactor(), grace=grace
        )
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service, echo

    @inlineCallbacks
    def test_tcpConnectionsFinish(self) -> Any:
        """
        Twenty established tcp connections keep working after shutdown
        began, none is cut, a new connection is refused, and stopService
        fires once the last one closed.
        """
        service, _ = self.tcpService(grace=10)
        port = frontendPort(service)
        clients = yield gatherResults([connect(port) for _ in range(20)])
        yield gatherResults([c.send(b"before\n") for c in clients])
        stopped = service.stopService()
        yield self.assertFailure(connect(port), ConnectionRefusedError)
        yield gatherResults([c.send(b"after\n") for c in clients])
        self.assertNoResult(stopped)
        for c in clients[:-1]:
            c.transport.loseConnection()
        yield gatherResults([c.lost for c in clients[:-1]])
        self.assertNoResult(stopped)
        clients[-1].transport.loseConnection()
        yield stopped
        yield clients[-1].lost
        self.assertEqual([c.reason.type for c in clients if c.reason is not None], [ConnectionDone] * 20)

    @inlineCallbacks
    def test_graceExpires(self) -> Any:
        """
        A connection still open when the grace period ends is closed, and
        its access-log line says C{KD}.
        """
        events = captureLog(self, "lbkit.access")
        service, _ = self.tcpService(grace=0.05)
        client = yield connect(frontendPort(service))
        yield client.send(b"hello\n")
        yield service.stopService()
        yield client.lost
        self.assertEqual([e["termination"] for e in events], ["KD"])

    def httpService(self, grace: float) -> tuple[LoadBalancerService, Any]:
        backendPort, resource = startBackend(self, "a")
        app = Backend("app", [Server("a", f"127.0.0.1:{backendPort}")])
        service = LoadBalancerService(
            [http.Frontend("tcp:0:interface=127.0.0.1", default=app, log=False)], reactor(), grace=grace
        )
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service, resource

    @inlineCallbacks
    def test_httpRequestsFinish(self) -> Any:
        """
        Requests in flight when shutdown begins are all answered, with
        C{Connection: close}, and the connections close; new connections
        are refused meanwhile.
        """
        service, resource = self.httpService(grace=10)
        port = frontendPort(service)
        resource.hold = True
        clients = [Client(self) for _ in range(4)]
        requests = [c.get(port) for c in clients]
        raw = yield connect(port)
        raw.transport.write(b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n")
        while len(resource.held) < 5:
            yield resource.whenRequested()
        stopped = service.stopService()
        yield self.assertFailure(connect(port), ConnectionRefusedError)
        self.assertNoResult(stopped)
        resource.releaseAll()
        results = yield gatherResults(requests)
        self.assertEqual([(code, body) for code, body, _ in results], [(200, "a")] * 4)
        yield raw.lost
        self.assertTrue(raw.buffer.startswith(b"HTTP/1.1 200 "), raw.buffer)
        self.assertIn(b"\r\nConnection: close\r\n", raw.buffer)
        self.assertTrue(raw.buffer.endswith(b"\r\n\r\n1\r\na\r\n0\r\n\r\n"), raw.buffer)
        yield stopped

    @inlineCallbacks
    def test_idleKeepAliveClosedAtOnce(self) -> Any:
        """
        A kept-alive http connection idle between requests is closed at
        once: stopping does not wait for the (long) grace period.
        """
        service, _ = self.httpService(grace=60)
        client = Client(self)
        code, _, _ = yield client.get(frontendPort(service))
        self.assertEqual(code, 200)
        yield service.stopService()


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class Plain:
    """A protocol without the graceful hooks."""

    def __init__(self) -> None:
        self.transport = FakeTransport()


class Graceful(Plain):
    def __init__(self) -> None:
        super().__init__()
        self.stopped = self.killed = False

    def stopGracefully(self) -> None:
        self.stopped = True

    def kill(self) -> None:
        self.killed = True


class DrainingFactoryTests(SynchronousTestCase):
    """L{DrainingFactory} tracks connections and fires when none is left."""

    def test_whenIdle(self) -> None:
        """L{DrainingFactory.whenIdle} fires once the last connection closed."""
        factory = DrainingFactory()
        self.successResultOf(factory.whenIdle())
        a, b = Plain(), Plain()
        factory.connectionOpened(a)
        factory.connectionOpened(b)
        idle = factory.whenIdle()
        factory.connectionClosed(a)
        self.assertNoResult(idle)
        factory.connectionClosed(b)
        self.successResultOf(idle)

    def test_stopAndKill(self) -> None:
        """
        Stopping asks each connection to finish (and any that opens after);
        killing calls C{kill}, or aborts the transport.
        """
        factory = DrainingFactory()
        graceful, plain = Graceful(), Plain()
        factory.connectionOpened(graceful)
        factory.connectionOpened(plain)
        factory.stopGracefully()
        self.assertTrue(graceful.stopped)
        late = Graceful()
        factory.connectionOpened(late)
        self.assertTrue(late.stopped)
        factory.killAll()
        self.assertTrue(graceful.killed and late.killed)
        self.assertTrue(plain.transport.aborted)

    def test_countsWhenAsked(self) -> None:
        """A factory with countsConnections keeps current and total; one without leaves them to itself."""

        class Counting(DrainingFactory):
            countsConnections = True

        counting, silent = Counting(), DrainingFactory()
        a, b = Plain(), Plain()
        for factory in (counting, silent):
            factory.connectionOpened(a)
            factory.connectionOpened(b)
            factory.connectionClosed(a)
            factory.connectionClosed(a)  # a second report of the same close counts once
        self.assertEqual((counting.current, counting.total), (1, 2))
        self.assertEqual((silent.current, silent.total), (0, 0))

    def test_standInNotCounted(self) -> None:
        """A stand-in that hands its connection on (ALPN negotiation) leaves it counted once."""

        class Counting(DrainingFactory):
            countsConnections = True

        factory = Counting()
        standIn, inner = Plain(), Plain()
        factory.connectionOpened(standIn, counted=False)
        self.assertEqual((factory.current, factory.total), (0, 0))
        factory.connectionOpened(inner)
        factory.connectionClosed(standIn)
        self.assertEqual((factory.current, factory.total, factory.connections), (1, 1, {inner}))
        factory.connectionClosed(inner)
        self.assertEqual((factory.current, factory.total), (0, 1))
