"""
Every built-in provides the interfaces it declares (C{verifyObject}, through
L{lbkit.testing.assertProvides}): balancers, checks, persistence, header
rules, matchers, listen items, server listeners and sessions.  A plugin of
yours plugs in where these do, so these are the contracts it is held to.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server, ServerListenerMixin, ServerState, http, stats, tcp
from lbkit.balance import (
    URI,
    First,
    Header,
    LeastConn,
    NeverQueue,
    Random,
    RoundRobin,
    ShortestExpectedDelay,
    Source,
    StaticRR,
    URLParam,
)
from lbkit.demo import HelloServer
from lbkit.health import AgentCheck, HealthMonitor, HTTPCheck, TCPCheck
from lbkit.interfaces import (
    IActiveBalancer,
    IBalancer,
    IHealthCheck,
    IHealthCheckOptions,
    IHTTPPersistence,
    IListener,
    IPersistence,
    IRequestMatcher,
    IRequestRule,
    IServerListener,
    ISession,
)
from lbkit.persistence import Cookie, StickySource
from lbkit.tcp import TCPFrontendProtocol
from lbkit.testing import FakeCheck, FakeSession, RecordingListener, assertProvides

BALANCERS: list[Callable[[], Any]] = [
    RoundRobin, StaticRR, LeastConn, First, Source, lambda: URI(), lambda: Header(b"Host"),
    lambda: URLParam(b"id"), Random, ShortestExpectedDelay, NeverQueue,
]

#: The balancers that keep a load structure from activeChanged reports.
ACTIVE = (LeastConn, ShortestExpectedDelay, NeverQueue)


def backend() -> Backend:
    return Backend("be", [Server("a", "127.0.0.1:1")])


class BalancerContractTests(SynchronousTestCase):
    def test_everyBalancer(self) -> None:
        """Every built-in balancer provides IBalancer."""
        for make in BALANCERS:
            assertProvides(self, IBalancer, make())

    def test_activeBalancers(self) -> None:
        """The balancers with an activeChanged method, and only they, provide IActiveBalancer."""
        for make in BALANCERS:
            balancer = make()
            self.assertEqual(IActiveBalancer.providedBy(balancer), hasattr(balancer, "activeChanged"), balancer)
            if isinstance(balancer, ACTIVE):
                assertProvides(self, IActiveBalancer, balancer)

    def test_cachingBalancersListen(self) -> None:
        """Balancers that precompute from weights listen to server changes."""
        for make in BALANCERS:
            balancer = make()
            if not isinstance(balancer, First):
                assertProvides(self, IServerListener, balancer)


class CheckContractTests(SynchronousTestCase):
    def test_everyCheck(self) -> None:
        """Every built-in check provides IHealthCheck, and declares every option the monitor reads."""
        for check in [TCPCheck(), HTTPCheck(), AgentCheck(port=5555), FakeCheck()]:
            assertProvides(self, IHealthCheck, check)
            assertProvides(self, IHealthCheckOptions, check)

    def test_optionsAreWhatTheMonitorReads(self) -> None:
        """The monitor takes each IHealthCheckOptions attribute from the check as declared."""
        check = FakeCheck(
            interval=2.0, fastinter=1.0, downinter=3.0, spread=0.1, initState="fully-up", observe="layer4",
            errorLimit=4, onError="fail-check", backoff=5.0, onMarkedDown="shutdown-sessions",
        )
        monitor = HealthMonitor(Server("a", "127.0.0.1:1"), check, Clock())
        for name in IHealthCheckOptions.names():
            self.assertEqual(getattr(monitor, name), getattr(check, name), name)


class PersistenceContractTests(SynchronousTestCase):
    def test_stickySource(self) -> None:
        """StickySource provides IPersistence."""
        assertProvides(self, IPersistence, StickySource())

    def test_cookie(self) -> None:
        """Cookie provides IHTTPPersistence (and so IPersistence)."""
        assertProvides(self, IHTTPPersistence, Cookie("SERVERID"))
        assertProvides(self, IPersistence, Cookie("SERVERID"))


class HTTPContractTests(SynchronousTestCase):
    def test_rules(self) -> None:
        """Every built-in header rule provides IRequestRule."""
        for rule in [http.addHeader("a", "1"), http.setHeader("a", "1"), http.deleteHeader("a")]:
            assertProvides(self, IRequestRule, rule)

    def test_matchers(self) -> None:
        """Every matcher provides IRequestMatcher."""
        p = http.pathBegins("/")
        for matcher in [
            p, http.pathIs("/"), http.pathEnds(".js"), http.pathMatches("x"), http.hostIs("a"),
            http.hostMatches("a"), http.headerExists("a"), http.headerIs("a", "b"), http.headerMatches("a", "b"),
            http.methodIs("GET"), http.sourceIn("10.0.0.0/8"), http.allOf(p), http.anyOf(p), http.notMatching(p),
        ]:
            assertProvides(self, IRequestMatcher, matcher)


class ListenContractTests(SynchronousTestCase):
    def test_listenItems(self) -> None:
        """Frontends of both modes, the stats page and the demo server are IListeners."""
        be = backend()
        for item in [
            tcp.Frontend("tcp:0", be), http.Frontend("tcp:0", default=be), stats.Page("tcp:0"),
            HelloServer("web", "tcp:0"),
        ]:
            assertProvides(self, IListener, item)


class ServerListenerContractTests(SynchronousTestCase):
    def test_listeners(self) -> None:
        """A backend, a health monitor, the stats collector, the mixin and the recorder are IServerListeners."""
        server = Server("a", "127.0.0.1:1")
        for listener in [
            backend(), HealthMonitor(server, TCPCheck(), Clock()), stats.Page("tcp:0").collector,
            ServerListenerMixin(), RecordingListener(),
        ]:
            assertProvides(self, IServerListener, listener)

    def test_mixinDoesNothing(self) -> None:
        """A ServerListenerMixin subclass that overrides one method hears only that kind of change."""
        seen: list[str] = []

        class Downs(ServerListenerMixin):
            def stateChanged(self, server: Server, old: Any, new: Any, reason: str) -> None:
                seen.append(new.value)

        server = Server("a", "127.0.0.1:1")
        server.addListener(Downs())
        server.setWeight(7)
        server.setRampFactor(0.5)
        server.setState(ServerState.DOWN)
        self.assertEqual(seen, ["DOWN"])


class SessionContractTests(SynchronousTestCase):
    def test_sessions(self) -> None:
        """What goes into Server.sessions provides ISession: a tcp connection, an http one, and the fake."""
        assertProvides(self, ISession, TCPFrontendProtocol())
        assertProvides(self, ISession, http.HTTPFrontendProtocol())
        assertProvides(self, ISession, FakeSession(Server("a", "127.0.0.1:1")))
