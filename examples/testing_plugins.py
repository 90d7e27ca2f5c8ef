"""
Unit tests for your own lbkit plugins, with the fakes of lbkit.testing: no
sockets, no real time.  Copy this module into your project's tests and
replace the small plugins at the top with your own.

    python -m twisted.trial examples/testing_plugins.py

See docs/testing.md.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from lbkit import Backend, Context, Server, ServerListenerMixin, ServerState
from lbkit.error import CheckFailed
from lbkit.health import BaseCheck, HealthMonitor
from lbkit.http import Frontend
from lbkit.interfaces import (
    IActiveBalancer,
    IHealthCheck,
    IPersistence,
    IRequestRule,
    IServerListener,
)
from lbkit.testing import FakeCheck, FakeEndpoint, HTTPHarness, RecordingListener, assertProvides

# -- the plugins under test (yours would be imported instead) ----------------


@implementer(IActiveBalancer)
class FewestActive:
    """The server with the fewest connections; counts the reports it gets."""

    def __init__(self) -> None:
        self.reports = 0

    def pick(self, servers: Sequence[Server], context: Context) -> Optional[Server]:
        return min(servers, key=lambda s: s.active, default=None)

    def activeChanged(self, server: Server) -> None:
        self.reports += 1


class _Banner(Protocol):
    def __init__(self, done: Deferred[None]) -> None:
        self.done = done

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.loseConnection()
        if not self.done.called:
            if data.startswith(b"+OK"):
                self.done.callback(None)
            else:
                self.done.errback(CheckFailed(f"Layer7 wrong banner: {data[:20]!r}"))


@attrs.frozen
class BannerCheck(BaseCheck):
    """Passes when the server greets with C{+OK}."""

    def check(self, server: Server, reactor: Any) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        factory = Factory.forProtocol(lambda: _Banner(done))
        self.endpointFor(server, reactor).connect(factory).addErrback(done.errback)
        return done


@implementer(IPersistence)
class HeaderSession:
    """Keeps requests with the same C{X-Session} header on one server."""

    def __init__(self) -> None:
        self.table: dict[bytes, Server] = {}

    def recall(self, backend: Backend, context: Context) -> Optional[Server]:
        session = context.request.header(b"x-session") if context.request is not None else None
        return self.table.get(session) if session else None

    def remember(self, backend: Backend, server: Server, context: Context) -> None:
        session = context.request.header(b"x-session") if context.request is not None else None
        if session:
            self.table[session] = server


class DownCounter(ServerListenerMixin):
    """Counts how often servers go DOWN (only C{stateChanged} is written)."""

    def __init__(self) -> None:
        self.downs = 0

    def stateChanged(self, server: Server, old: ServerState, new: ServerState, reason: str) -> None:
        if new is ServerState.DOWN:
            self.downs += 1


@implementer(IRequestRule)
class TellServerItsName:
    """Adds C{X-Server: <name>} to each request, read from the exchange."""

    def applyToRequest(self, request: Any, exchange: Any) -> None:
        request.setHeader(b"X-Server", exchange.server.name.encode())

    def applyToResponse(self, response: Any, exchange: Any) -> None:
        pass


# -- their tests -----------------------------------------------------------

GET = b"GET / HTTP/1.1\r\nHost: example\r\n%s\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class ContractTests(SynchronousTestCase):
    def test_provides(self) -> None:
        """Each plugin provides the interface it declares."""
        assertProvides(self, IActiveBalancer, FewestActive())
        assertProvides(self, IHealthCheck, BannerCheck())
        assertProvides(self, IPersistence, HeaderSession())
        assertProvides(self, IServerListener, DownCounter())
        assertProvides(self, IRequestRule, TellServerItsName())


class BalancerTests(SynchronousTestCase):
    def test_fewestActive(self) -> None:
        """Connections spread over idle servers, and the backend reports each slot taken and given back."""
        balancer = FewestActive()
        a, b = Server("a", FakeEndpoint()), Server("b", FakeEndpoint())
        backend = Backend("be", [a, b], balance=balancer)
        first = backend.tryAcquire(Context())
        second = backend.tryAcquire(Context())
        self.assertEqual({first, second}, {a, b})
        backend.release(a)
        self.assertIs(backend.tryAcquire(Context()), a)
        self.assertEqual(balancer.reports, 4)


class CheckTests(SynchronousTestCase):
    def probe(self, greeting: bytes) -> Deferred[None]:
        endpoint = FakeEndpoint()
        d = BannerCheck().check(Server("redis", endpoint), Clock())
        endpoint.succeed()
        protocol = endpoint.attempts[0].protocol
        assert protocol is not None
        protocol.dataReceived(greeting)
        return d

    def test_passes(self) -> None:
        """A +OK greeting passes."""
        self.successResultOf(self.probe(b"+OK ready\r\n"))

    def test_fails(self) -> None:
        """Any other greeting fails, with the reason the stats page will show."""
        failure = self.failureResultOf(self.probe(b"-ERR\r\n"), CheckFailed)
        self.assertIn("wrong banner", failure.getErrorMessage())

    def test_refused(self) -> None:
        """A refused connect fails the check."""
        endpoint = FakeEndpoint()
        d = BannerCheck().check(Server("redis", endpoint), Clock())
        endpoint.fail()
        self.failureResultOf(d)


class ListenerTests(SynchronousTestCase):
    def test_countsDowns(self) -> None:
        """A server failing its checks is counted once when it goes DOWN."""
        clock = Clock()
        server = Server("s", FakeEndpoint())
        backend = Backend("be", [server])
        counter, recorder = DownCounter(), RecordingListener()
        backend.addListener(counter)
        backend.addListener(recorder)
        check = FakeCheck(interval=1.0, fall=2, initState="fully-up")
        monitor = HealthMonitor(server, check, clock)
        monitor.start()
        self.addCleanup(monitor.stop)
        for _ in range(3):
            clock.advance(1.0)
            check.failLast()
        self.assertEqual(counter.downs, 1)
        self.assertEqual([new for old, new, reason in recorder.states], ["DOWN"])


class HTTPTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.a, self.b = Server("a", FakeEndpoint()), Server("b", FakeEndpoint())
        backend = Backend("app", [self.a, self.b], persistence=HeaderSession())
        self.harness = HTTPHarness(Frontend("tcp:0", default=backend, requestRules=[TellServerItsName()]))
        self.addCleanup(self.harness.close)

    def test_sessionSticks(self) -> None:
        """Requests with the same X-Session go to the same server, however the balancer rotates."""
        chosen = []
        for _ in range(3):
            client = self.harness.request(GET % b"X-Session: alice\r\n")
            server = self.harness.serverFor(client)  # a new connection, or the pooled one
            server.respond(OK)
            self.assertTrue(client.received().endswith(b"ok"))
            chosen.append(server.server)
        self.assertEqual(len(set(chosen)), 1)

    def test_ruleReadsTheExchange(self) -> None:
        """The server is told its own name by the request rule."""
        self.harness.request(GET % b"")
        server = self.harness.connect()
        self.assertIn(b"\r\nX-Server: %s\r\n" % server.server.name.encode(), server.received())
        server.respond(OK)
