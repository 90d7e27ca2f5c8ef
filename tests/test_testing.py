"""
The public fakes of L{lbkit.testing} behave as documented, so users can
trust them in their own tests.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from lbkit import Backend, Context, Server, ServerState
from lbkit.balance import RoundRobin
from lbkit.error import CheckFailed
from lbkit.health import HealthMonitor
from lbkit.http import Frontend, Route, pathBegins, setHeader
from lbkit.interfaces import IBalancer, IHealthCheck, ISession
from lbkit.testing import (
    FakeCheck,
    FakeEndpoint,
    FakeSession,
    HTTPHarness,
    RecordingListener,
    assertProvides,
)

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class FakeEndpointTests(SynchronousTestCase):
    def test_rejectsNonFactory(self) -> None:
        """Connecting with something that is not an IProtocolFactory fails at once, saying what to check."""
        endpoint = FakeEndpoint()
        e = self.assertRaises(TypeError, endpoint.connect, Protocol())
        self.assertIn("@implementer", str(e))
        self.assertEqual(endpoint.attempts, [])

    def test_recordsProtocol(self) -> None:
        """A succeeded attempt records the protocol it connected."""
        endpoint = FakeEndpoint()
        d = endpoint.connect(Factory.forProtocol(Protocol))
        self.assertIsNone(endpoint.attempts[0].protocol)
        transport = endpoint.succeed()
        protocol = self.successResultOf(d)
        self.assertIs(endpoint.attempts[0].protocol, protocol)
        self.assertIs(protocol.transport, transport)

    def test_cancelRecorded(self) -> None:
        """Cancelling a pending connect marks the attempt cancelled and fails it."""
        endpoint = FakeEndpoint()
        d = endpoint.connect(Factory.forProtocol(Protocol))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(endpoint.attempts[0].cancelled)
        self.assertEqual(endpoint.pending, [])


class AssertProvidesTests(SynchronousTestCase):
    def test_passes(self) -> None:
        """A complete, declared implementation passes."""
        assertProvides(self, IBalancer, RoundRobin())

    def test_undeclared(self) -> None:
        """An object that does not declare the interface fails, with a hint about @implementer."""

        class Undeclared:
            def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
                return None

        e = self.assertRaises(self.failureException, assertProvides, self, IBalancer, Undeclared())
        self.assertIn("does not provide IBalancer", str(e))
        self.assertIn("@implementer", str(e))

    def test_missingAttribute(self) -> None:
        """A declared implementation missing an attribute fails, naming it."""

        @implementer(IHealthCheck)
        class NoFall:
            interval = rise = timeout = 1

            def check(self, server: Server, reactor: Any) -> Any:
                return None

        e = self.assertRaises(self.failureException, assertProvides, self, IHealthCheck, NoFall())
        self.assertIn("fall", str(e))


class FakeCheckTests(SynchronousTestCase):
    def test_drivesMonitor(self) -> None:
        """A monitor over a FakeCheck takes the server DOWN after fall failed probes, and UP after rise passes."""
        clock = Clock()
        server = Server("s", "127.0.0.1:1")
        Backend("be", [server])
        check = FakeCheck(interval=2.0, rise=1, fall=2, initState="fully-up")
        monitor = HealthMonitor(server, check, clock)
        monitor.start()
        clock.advance(0)
        check.failLast()
        clock.advance(2.0)
        check.failLast("Layer4 timeout")
        self.assertIs(server.state, ServerState.DOWN)
        clock.advance(2.0)
        check.passLast()
        self.assertIs(server.state, ServerState.UP)
        monitor.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_failLastIsCheckFailed(self) -> None:
        """failLast fails the latest probe with CheckFailed and the reason given."""
        check = FakeCheck()
        d = check.check(Server("s", "127.0.0.1:1"), None)
        check.failLast("Layer7 wrong status, code: 503")
        failure = self.failureResultOf(d, CheckFailed)
        self.assertEqual(failure.getErrorMessage(), "Layer7 wrong status, code: 503")


class RecordingListenerTests(SynchronousTestCase):
    def test_recordsInOrder(self) -> None:
        """State and weight changes are recorded, each in its list and all in events."""
        server = Server("s", "127.0.0.1:1")
        listener = RecordingListener()
        server.addListener(listener)
        server.setState(ServerState.DOWN, "gone")
        server.setWeight(5)
        self.assertEqual(listener.states, [("UP", "DOWN", "gone")])
        self.assertEqual(listener.weights, [(1, 5)])
        self.assertEqual(
            listener.events,
            [("state", server, ServerState.UP, ServerState.DOWN, "gone"), ("weight", server, 1, 5)],
        )


class FakeSessionTests(SynchronousTestCase):
    def test_abortedWhenMarkedDown(self) -> None:
        """A monitor with shutdown-sessions aborts a FakeSession, which leaves the server's sessions."""
        clock = Clock()
        server = Server("s", "127.0.0.1:1")
        Backend("be", [server])
        session = FakeSession(server)
        assertProvides(self, ISession, session)
        self.assertEqual(server.sessions, {session})
        check = FakeCheck(fall=1, onMarkedDown="shutdown-sessions")
        monitor = HealthMonitor(server, check, clock)
        monitor.start()
        clock.advance(0)
        check.failLast()
        self.assertTrue(session.aborted)
        self.assertEqual(server.sessions, set())
        monitor.stop()


class HTTPHarnessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.a = Server("a", FakeEndpoint())
        self.b = Server("b", FakeEndpoint())
        self.web = Backend("web", [self.a])
        self.api = Backend("api", [self.b])
        frontend = Frontend(
            "tcp:0", [Route(pathBegins("/api"), self.api)], default=self.web, name="fe",
            requestRules=[setHeader("X-Test", "1")],
        )
        self.harness = HTTPHarness(frontend)
        self.addCleanup(self.checkClean)

    def checkClean(self) -> None:
        self.harness.close()
        self.assertEqual(self.harness.reactor.getDelayedCalls(), [])
        self.assertEqual((self.a.active, self.b.active), (0, 0))

    def test_exchange(self) -> None:
        """A request goes through the real frontend (rules included) to the server, and the answer back."""
        client = self.harness.request(GET)
        server = self.harness.connect()
        self.assertIs(server.server, self.a)
        self.assertIn(b"\r\nX-Test: 1\r\n", server.received())
        server.respond(OK)
        self.assertTrue(client.received().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(client.received().endswith(b"\r\n\r\nok"))
        self.assertEqual([f["status"] for f in self.harness.logged], [200])

    def test_routing(self) -> None:
        """The harness connects the server the frontend chose; naming one with nothing pending fails."""
        self.harness.request(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(self.harness.pending(), [self.b])
        self.assertRaises(RuntimeError, self.harness.connect, self.a)
        self.harness.connect(self.b).respond(OK)

    def test_ambiguousConnect(self) -> None:
        """With connects pending to two servers, connect() needs to be told which."""
        self.harness.request(GET)
        self.harness.request(b"GET /api HTTP/1.1\r\nHost: a\r\n\r\n")
        e = self.assertRaises(RuntimeError, self.harness.connect)
        self.assertIn("pending to", str(e))
        self.assertEqual(sorted(s.name for s in self.harness.pending()), ["a", "b"])
        self.harness.connect(self.a).respond(OK)
        self.harness.connect(self.b).respond(OK)

    def test_connectRefused(self) -> None:
        """Refused connects answer 503 (as HAProxy) once the retries are used up."""
        client = self.harness.request(GET)
        endpoint = self.a.endpoint(self.harness.reactor)
        assert isinstance(endpoint, FakeEndpoint)
        for _ in range(self.web.retries + 1):
            endpoint.fail()
        self.assertTrue(client.received().startswith(b"HTTP/1.1 503 "), client.received()[:40])
        self.assertEqual(self.harness.logged[0]["termination"], "SC")

    def test_closeEndsEverything(self) -> None:
        """close() loses open client connections and pooled server connections, leaving no timer."""
        client = self.harness.request(GET)
        server = self.harness.connect()
        server.respond(OK)
        self.assertTrue(server.protocol.connected)  # kept in the pool
        self.harness.close()
        self.assertFalse(server.protocol.connected)
        self.assertEqual(self.harness.factory.connections, set())
        self.assertEqual(client.protocol.factory.current, 0)

    def test_nonFakeServer(self) -> None:
        """A server whose address is not a FakeEndpoint is refused with a clear error."""
        e = self.assertRaises(TypeError, self.harness.connect, Server("real", "127.0.0.1:1"))
        self.assertIn("FakeEndpoint", str(e))

    def test_clientAddress(self) -> None:
        """The client's address is the one given, as the frontend sees it."""
        peer = IPv4Address("TCP", "203.0.113.9", 4000)
        client = self.harness.request(GET, peer)
        self.assertEqual(client.protocol.client, peer)
        self.harness.connect().respond(OK)
        self.assertEqual(self.harness.logged[0]["client"], "203.0.113.9:4000")

    def test_serverForPooled(self) -> None:
        """serverFor finds the pooled connection a second request was sent on, or completes a new connect."""
        first = self.harness.request(GET)
        side = self.harness.serverFor(first)
        side.respond(OK)
        second = self.harness.request(GET)
        self.assertIs(self.harness.serverFor(second), side)
        self.assertEqual(side.received().count(b"GET / "), 2)
        side.respond(OK)
        self.assertTrue(second.received().endswith(b"ok"))
        self.assertEqual(len(self.harness.servers), 1)

    def test_serverForNothingChosen(self) -> None:
        """serverFor a client whose request head is incomplete says no server was chosen."""
        client = self.harness.request(b"GET / HTTP/1.1\r\n")
        self.assertRaises(RuntimeError, self.harness.serverFor, client)
