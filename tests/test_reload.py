"""
Tests for reloading a running balancer (L{lbkit.reload},
L{lbkit.service.LoadBalancerService.reload}, L{lbkit.Backend.updateFrom}):
real sockets on 127.0.0.1, a stream of requests across each reload.
"""

from __future__ import annotations

import os
import textwrap
from typing import Any, Callable

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from lbkit import Backend, Server, ServerState
from lbkit.error import ConfigError
from lbkit.service import LoadBalancerService, fromSiteFile


def reactor() -> Any:
    """The global reactor: these tests use real sockets."""
    from twisted.internet import reactor as r

    return r


class Named(Resource):
    """Answers every request with its name; with C{hold}, only when the test says."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.hold = False
        self.held: list[Request] = []
        self.arrived: list[Deferred[Request]] = []

    def render(self, request: Request) -> Any:
        request.setHeader(b"content-type", b"text/plain")
        if self.hold:
            self.held.append(request)
            arrived, self.arrived = self.arrived, []
            for d in arrived:
                d.callback(request)
            return NOT_DONE_YET
        return self.name.encode()

    def whenRequested(self) -> Deferred[Request]:
        """Fires with the next request that arrives while holding."""
        d: Deferred[Request] = Deferred()
        self.arrived.append(d)
        return d

    def releaseAll(self) -> None:
        """Answer every held request."""
        held, self.held = self.held, []
        for request in held:
            if not request._disconnected:
                request.write(self.name.encode())
                request.finish()


class TrackingSite(Site):
    """A Site whose cleanup waits for its connections to close."""

    noisy = False

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.open: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        lost: Deferred[None] = Deferred()
        self.open.append(lost)
        original = protocol.connectionLost

        def connectionLost(reason: Any) -> None:
            original(reason)
            lost.callback(None)

        protocol.connectionLost = connectionLost  # type: ignore[method-assign]
        return protocol

    def log(self, request: Any) -> None:
        pass


def startBackend(testCase: TestCase, name: str) -> tuple[int, Named]:
    """An http server on 127.0.0.1 answering C{name}; stopped at cleanup."""
    resource = Named(name)
    site = TrackingSite(resource)
    port = reactor().listenTCP(0, site, interface="127.0.0.1")

    def stop() -> Deferred[Any]:
        resource.releaseAll()
        return gatherResults([port.stopListening(), *site.open])

    testCase.addCleanup(stop)
    return port.getHost().port, resource


def writeSite(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))


def frontendPort(service: LoadBalancerService, index: int = 0) -> int:
    """The port the C{index}th listener of C{service} listens on."""
    child: Any = service.itemServices[id(service.listen[index])]
    return int(child.port.getHost().port)


class Client:
    """An Agent over a persistent pool; L{fresh} closes its connections."""

    def __init__(self, testCase: TestCase) -> None:
        self.pool = HTTPConnectionPool(reactor(), persistent=True)
        self.agent = Agent(reactor(), pool=self.pool)
        testCase.addCleanup(self.pool.closeCachedConnections)

    @inlineCallbacks
    def get(self, port: int, path: bytes = b"/") -> Any:
        response = yield self.agent.request(b"GET", b"http://127.0.0.1:%d%s" % (port, path))
        body = yield readBody(response)
        return response.code, body.decode(), response.headers

    def fresh(self) -> Deferred[Any]:
        return self.pool.closeCachedConnections()


def captureLog(testCase: TestCase, namespace: str = "lbkit") -> list[dict[str, Any]]:
    """Events logged on C{namespace} during the test."""
    events: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == namespace:
            events.append(event)

    globalLogPublisher.addObserver(observer)
    testCase.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


SITE = """\
from lbkit import Backend, Server, http

app = Backend("app", servers=[{servers}])
listen = [http.Frontend("tcp:0:interface=127.0.0.1", default=app, name="web", log=False)]
grace = 5
"""


def servers(**weights: tuple[int, int]) -> str:
    """C{Server(...)} expressions: name=(port, weight)."""
    return ", ".join(f'Server("{n}", "127.0.0.1:{p}", weight={w})' for n, (p, w) in weights.items())


class ReloadStreamTests(TestCase):
    """A stream of http requests runs across reloads without one failing."""

    timeout = 30

    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp() + "-site.py")
        self.ports: dict[str, int] = {}
        self.resources: dict[str, Named] = {}
        for name in ("a", "b", "c"):
            self.ports[name], self.resources[name] = startBackend(self, name)

    def startSite(self, **weights: int) -> LoadBalancerService:
        writeSite(self.path, SITE.format(servers=servers(**{n: (self.ports[n], w) for n, w in weights.items()})))
        service = fromSiteFile(self.path, reactor())
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def rewrite(self, **weights: int) -> None:
        writeSite(self.path, SITE.format(servers=servers(**{n: (self.ports[n], w) for n, w in weights.items()})))

    @inlineCallbacks
    def test_streamAcrossReload(self) -> Any:
        """
        200 sequential requests, on kept-alive and new connections, while the
        site is reloaded twice (weights change, a server joins, one leaves):
        none fails, and the new configuration takes effect.
        """
        service = self.startSite(a=1, b=1)
        port = frontendPort(service)
        client = Client(self)
        app = service.backends()[0]
        a, b = app.servers
        seen: list[str] = []
        failures: list[Any] = []
        for i in range(200):
            if i == 60:
                self.rewrite(b=3, c=1)
                changes = yield service.reload()
                self.assertTrue(any("server c added" in c for c in changes), changes)
            if i == 130:
                self.rewrite(a=1, b=3, c=1)
                yield service.reload()
            if i % 10 == 9:
                yield client.fresh()
            try:
                code, body, headers = yield client.get(port)
            except Exception as e:  # noqa: BLE001 - counted and reported
                failures.append(e)
                continue
            if code != 200:
                failures.append((code, body))
            seen.append(body)
        self.assertEqual(failures, [])
        self.assertEqual(frontendPort(service), port)
        self.assertIs(service.backends()[0], app)
        self.assertIn("c", seen[60:130])
        self.assertNotIn("a", seen[61:130])
        self.assertGreater(seen[61:130].count("b"), 2 * seen[61:130].count("c"))
        self.assertIn("a", seen[131:])
        self.assertIs(app.servers[1], b)
        self.assertEqual(b.weight, 3)
        self.assertEqual(b.total, seen.count("b"))
        self.assertNotIn(a, app.servers)  # left once idle; "a" came back as a new server

    @inlineCallbacks
    def test_removedServerDrains(self) -> Any:
        """
        A server removed while a request is on it goes to DRAIN, that request
        completes, and the server leaves the backend once idle.
        """
        service = self.startSite(a=1, b=1)
        port = frontendPort(service)
        client = Client(self)
        app = service.backends()[0]
        a = app.servers[0]
        self.resources["a"].hold = True
        self.resources["b"].hold = True
        arrived = self.resources["a"].whenRequested()
        first = client.get(port)
        yield arrived  # round robin: the first request goes to a
        self.rewrite(b=1)
        yield service.reload()
        self.assertIs(a.state, ServerState.DRAIN)
        self.assertIn(a, app.servers)
        self.assertEqual(app.eligible(), [app.servers[0]])
        gone = app.whenGone(a)
        self.assertNoResult(gone)
        self.resources["a"].releaseAll()
        code, body, _ = yield first
        self.assertEqual((code, body), (200, "a"))
        yield gone
        self.assertEqual([s.name for s in app.servers], ["b"])
        self.resources["b"].hold = False
        code, body, _ = yield client.get(port)
        self.assertEqual(body, "b")

    @inlineCallbacks
    def test_badReloadKeepsServing(self) -> Any:
        """
        A site file that fails to load leaves the running configuration
        serving, and the reason is logged.
        """
        service = self.startSite(a=1)
        port = frontendPort(service)
        events = captureLog(self)
        with open(self.path, "a") as f:
            f.write("oops = undefined_name\n")
        failure = yield self.assertFailure(service.reload(), ConfigError)
        self.assertIn("NameError", str(failure))
        self.assertIn(":6:", str(failure))
        logged = [e for e in events if "reload failed" in e.get("log_format", "")]
        self.assertEqual(len(logged), 1)
        self.assertIn("undefined_name", logged[0]["why"])
        code, body, _ = yield Client(self).get(port)
        self.assertEqual((code, body), (200, "a"))

    @inlineCallbacks
    def test_portTakenKeepsServing(self) -> Any:
        """
        A reload adding a frontend whose port is taken changes nothing: the
        old backends keep their weights.
        """
        service = self.startSite(a=1)
        app = service.backends()[0]
        taken = self.ports["b"]
        writeSite(self.path, SITE.format(servers=servers(a=(self.ports["a"], 7))) + (
            f'listen.append(http.Frontend("tcp:{taken}:interface=127.0.0.1", default=app))\n'
        ))
        failure = yield self.assertFailure(service.reload(), Exception)
        self.assertIn("cannot listen", str(failure))
        self.assertEqual(app.servers[0].weight, 1)
        self.assertEqual(len(service.listen), 1)

    @inlineCallbacks
    def test_frontendsAddedAndRemoved(self) -> Any:
        """
        A new endpoint starts listening and a removed one stops; the kept
        frontend keeps its port and takes its new name.
        """
        service = self.startSite(a=1)
        port = frontendPort(service)
        writeSite(self.path, f"""\
            from lbkit import Backend, Server, http

            app = Backend("app", servers=[Server("a", "127.0.0.1:{self.ports['a']}")])
            other = Backend("other", servers=[Server("b", "127.0.0.1:{self.ports['b']}")])
            listen = [
                http.Frontend("tcp:0:interface=127.0.0.1", default=app, name="renamed", log=False),
                http.Frontend("tcp:0:interface=127.0.0.1:backlog=10", default=other, log=False),
            ]
            """)
        yield service.reload()
        self.assertEqual(frontendPort(service), port)
        self.assertEqual(service.listen[0].name, "renamed")
        client = Client(self)
        _, body, _ = yield client.get(frontendPort(service, 1))
        self.assertEqual(body, "b")
        second = frontendPort(service, 1)
        yield client.fresh()
        self.rewrite(a=1)
        yield service.reload()
        self.assertEqual(len(service.listen), 1)
        from twisted.internet.error import ConnectionRefusedError

        yield self.assertFailure(client.get(second), ConnectionRefusedError)

    @inlineCallbacks
    def test_balancerSettingsListed(self) -> Any:
        """
        A reload that changes the balancer's class or one of its settings
        names it in the changes it returns and logs; an unchanged balancer
        is not listed.
        """
        site = textwrap.dedent("""\
            from lbkit import Backend, Server, http
            from lbkit.balance import LeastConn, RoundRobin, URI

            app = Backend("app", servers=[Server("a", "127.0.0.1:{port}")], balance={balance})
            listen = [http.Frontend("tcp:0:interface=127.0.0.1", default=app, name="web", log=False)]
            """)
        writeSite(self.path, site.format(port=self.ports["a"], balance="URI(depth=2)"))
        service = fromSiteFile(self.path, reactor())
        service.startService()
        self.addCleanup(service.stopService)
        events = captureLog(self)
        steps = [
            ("URI(depth=3)", ["backend app: balance URI: depth 2 -> 3"]),
            ('URI(depth=3, hashType="consistent", ringPoints=80)', [
                "backend app: balance URI: hashType 'map-based' -> 'consistent'",
                "backend app: balance URI: ringPoints 40 -> 80",
            ]),
            ('URI(depth=3, hashType="consistent", ringPoints=80)', []),
            ("RoundRobin()", ["backend app: balance URI -> RoundRobin"]),
            ("LeastConn()", ["backend app: balance RoundRobin -> LeastConn"]),
            ("LeastConn()", []),
        ]
        for balance, expected in steps:
            writeSite(self.path, site.format(port=self.ports["a"], balance=balance))
            del events[:]
            changes = yield service.reload()
            self.assertEqual([c for c in changes if "balance" in c], expected, balance)
            logged = [e["change"] for e in events if "change" in e]
            self.assertEqual([c for c in logged if "balance" in c], expected, balance)
        self.assertEqual(type(service.backends()[0].balance).__name__, "LeastConn")


class UpdateFromTests(SynchronousTestCase):
    """L{Backend.updateFrom} keeps live servers and applies the new definition."""

    def test_keepsServersAndCounters(self) -> None:
        """Servers matched by name stay the same objects, counters and state intact."""
        a, b = Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2")
        old = Backend("app", [a, b])
        a.total = 5
        b.setState(ServerState.MAINT)
        old.updateFrom(Backend("app", [Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2")]))
        self.assertEqual(old.servers, [a, b])
        self.assertEqual((a.total, b.state), (5, ServerState.MAINT))

    def test_weights(self) -> None:
        """
        A changed configured weight applies; a weight set at run time stays
        when the configured one did not change.
        """
        a, b = Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2")
        old = Backend("app", [a, b])
        b.setWeight(9)
        changes = old.updateFrom(Backend("app", [Server("a", "127.0.0.1:1", weight=4), Server("b", "127.0.0.1:2")]))
        self.assertEqual((a.weight, b.weight), (4, 9))
        self.assertEqual(changes, ["server a weight 1 -> 4"])

    def test_addAndRemove(self) -> None:
        """A new server joins; a removed idle one leaves at once, a busy one drains."""
        a, b, c = Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2"), Server("c", "127.0.0.1:3")
        old = Backend("app", [a, b, c])
        c.active = 1
        d = Server("d", "127.0.0.1:4")
        old.updateFrom(Backend("app", [Server("a", "127.0.0.1:1"), d]))
        self.assertEqual(old.servers, [a, d, c])
        self.assertIs(d.backend, old)
        self.assertEqual(d.id, 4)
        self.assertIs(c.state, ServerState.DRAIN)
        self.assertEqual(old.eligible(), [a, d])
        gone = old.whenGone(c)
        self.assertNoResult(gone)
        old.release(c)
        self.assertIs(self.successResultOf(gone), c)
        self.assertEqual(old.servers, [a, d])
        self.assertEqual(old.leaving(), [])

    def test_removedThenBack(self) -> None:
        """A draining server configured again stops leaving and takes traffic."""
        a, b = Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2")
        old = Backend("app", [a, b])
        b.active = 1
        old.updateFrom(Backend("app", [Server("a", "127.0.0.1:1")]))
        old.updateFrom(Backend("app", [Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2")]))
        self.assertEqual(old.servers, [a, b])
        self.assertIs(b.state, ServerState.UP)
        self.assertEqual(old.leaving(), [])

    def test_addressChanged(self) -> None:
        """A server whose address changed is replaced; the old one goes to MAINT."""
        a = Server("a", "127.0.0.1:1")
        old = Backend("app", [a])
        new = Server("a", "127.0.0.1:9")
        old.updateFrom(Backend("app", [new]))
        self.assertEqual(old.servers, [new])
        self.assertIs(a.state, ServerState.MAINT)
        self.assertIs(new.backend, old)

    def test_settings(self) -> None:
        """The balancer and timeouts come from the new definition."""
        from lbkit.balance import LeastConn

        old = Backend("app", [Server("a", "127.0.0.1:1")])
        balance = LeastConn()
        old.updateFrom(Backend("app", [Server("a", "127.0.0.1:1")], balance=balance, retries=1))
        self.assertIs(old.balance, balance)
        self.assertEqual(old.retries, 1)


class AdminReloadTests(SynchronousTestCase):
    """The command socket's C{reload} runs the service's reload."""

    def test_reloadCommand(self) -> None:
        """C{reload} answers with the changes."""
        from twisted.logger import Logger

        from lbkit.stats._socket import execute

        class FakeCollector:
            log = Logger(observer=lambda event: None)

            def __init__(self, reloader: Callable[[], Deferred[list[str]]] | None) -> None:
                self.reloader = reloader

        done: Deferred[list[str]] = Deferred()
        answer = execute(FakeCollector(lambda: done), "uid 0", "reload")  # type: ignore[arg-type]
        assert isinstance(answer, Deferred)
        done.callback(["server c added"])
        self.assertEqual(self.successResultOf(answer), "reloaded: 1 changes\nserver c added")
        failed: Deferred[list[str]] = Deferred()
        answer = execute(FakeCollector(lambda: failed), "uid 0", "reload")  # type: ignore[arg-type]
        assert isinstance(answer, Deferred)
        failed.errback(ConfigError("site.py:3: syntax error"))
        self.assertEqual(
            self.successResultOf(answer), "error: reload failed, configuration unchanged: site.py:3: syntax error"
        )
        self.assertIn("not available", execute(FakeCollector(None), "uid 0", "reload"))  # type: ignore[arg-type]


__all__ = ["Named", "TrackingSite", "startBackend", "writeSite", "frontendPort", "Client", "captureLog", "Factory"]


HEALTH_SITE = """\
from lbkit import Backend, Server, tcp
from lbkit.health import TCPCheck

app = Backend("app", servers=[{servers}], health=TCPCheck(interval={interval}))
listen = [tcp.Frontend("tcp:0:interface=127.0.0.1", backend=app)]
"""


class HealthReloadTests(TestCase):
    """A reload keeps health monitors of servers that stay."""

    def test_monitors(self) -> None:
        """
        With the same check, monitors of kept servers stay, a new server
        gets one and a removed idle server's stops; a changed check
        restarts them all.
        """
        path = self.mktemp() + "-site.py"
        writeSite(path, HEALTH_SITE.format(servers=servers(a=(1, 1), b=(2, 1)), interval=3600))
        service = fromSiteFile(path, reactor())
        service.startService()
        self.addCleanup(service.stopService)
        app = service.backends()[0]
        health: Any = service.healthServices[app]
        a = health.monitors["a"]
        b = health.monitors["b"]
        writeSite(path, HEALTH_SITE.format(servers=servers(a=(1, 1), c=(3, 1)), interval=3600))
        self.successResultOf(service.reload())
        self.assertIs(service.healthServices[app], health)
        self.assertIs(health.monitors["a"], a)
        self.assertEqual(sorted(health.monitors), ["a", "c"])
        self.assertFalse(b.running)
        self.assertTrue(health.monitors["c"].running)
        writeSite(path, HEALTH_SITE.format(servers=servers(a=(1, 1), c=(3, 1)), interval=1800))
        self.successResultOf(service.reload())
        self.assertIsNot(service.healthServices[app], health)
        self.assertFalse(a.running)
        self.assertEqual(sorted(service.healthServices[app].monitors), ["a", "c"])  # type: ignore[attr-defined]


class ReloadTimeoutTests(SynchronousTestCase):
    def test_reloadRecomputesTick(self) -> None:
        """A reload that shortens a timeout makes the running factory check more often."""
        from twisted.internet.testing import MemoryReactorClock

        from lbkit import http
        from lbkit.reload import _takeOver

        backend = Backend("b", [Server("s", "127.0.0.1:1")])
        old = http.Frontend("tcp:0", default=backend, timeoutClient=30)
        factory = old.buildFactory(MemoryReactorClock())
        self.assertEqual(factory.tickInterval, 2.5)  # timeoutHttpRequest 10 s / 4
        _takeOver(old, http.Frontend("tcp:0", default=backend, timeoutClient=2))
        self.assertEqual(factory.tickInterval, 0.5)


class ReloadStatsPageTests(SynchronousTestCase):
    def test_changedAdminIsReplaced(self) -> None:
        """A reload that changes a stats page's admin users listens again instead of keeping the old ones."""
        from lbkit import stats
        from lbkit.reload import matchListeners

        old = stats.Page("tcp:0", admin=stats.Admin(users={"op": "old"}))
        new = stats.Page("tcp:0", admin=stats.Admin(users={"op": "new"}))
        same = stats.Page("tcp:0", admin=stats.Admin(users={"op": "old"}))
        self.assertEqual(matchListeners([old], [new])[2], [(old, new)])
        self.assertEqual(matchListeners([old], [same])[0], [(old, same)])

    def test_changedRealmOrNoAdminIsReplaced(self) -> None:
        """A reload that changes a stats page's admin realm, or turns its admin off, listens again."""
        from lbkit import stats
        from lbkit.reload import matchListeners

        old = stats.Page("tcp:0", admin=stats.Admin(users={"op": "pw"}))
        realm = stats.Page("tcp:0", admin=stats.Admin(users={"op": "pw"}, realm="ops"))
        plain = stats.Page("tcp:0")
        self.assertEqual(matchListeners([old], [realm])[2], [(old, realm)])
        self.assertEqual(matchListeners([old], [plain])[2], [(old, plain)])
        again = stats.Page("tcp:0")
        self.assertEqual(matchListeners([plain], [again])[0], [(plain, again)])

    def test_changedLoginThrottlingIsReplaced(self) -> None:
        """A reload that changes only a stats page's login throttling listens again with the new limits."""
        from lbkit import stats
        from lbkit.reload import matchListeners

        old = stats.Page("tcp:0", admin=stats.Admin(users={"op": "pw"}))
        stricter = stats.Page("tcp:0", admin=stats.Admin(users={"op": "pw"}, loginFailures=3))
        self.assertEqual(matchListeners([old], [stricter])[2], [(old, stricter)])
        same = stats.Page("tcp:0", admin=stats.Admin(users={"op": "pw"}))
        self.assertEqual(matchListeners([old], [same])[0], [(old, same)])


class ReloadErrorTests(SynchronousTestCase):
    def test_unexpectedErrorDoesNotBlockReloads(self) -> None:
        """A reload that fails with an unexpected error fails, and the next reload is not refused."""
        from twisted.internet.testing import MemoryReactorClock

        import lbkit.service
        from lbkit.config import loadSite

        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(
                "from lbkit import Backend, Server, tcp\n"
                "b = Backend('b', [Server('s', '127.0.0.1:1')])\n"
                "listen = [tcp.Frontend('tcp:0:interface=127.0.0.1', b)]\n"
            )
        site = loadSite(path)
        service = LoadBalancerService(site.listen, MemoryReactorClock())
        calls: list[int] = []

        def boom(service: Any, site: Any) -> Any:
            calls.append(1)
            raise RuntimeError("unexpected")

        self.patch(lbkit.service, "applySite", boom)
        self.failureResultOf(service.reload(path), RuntimeError)
        self.failureResultOf(service.reload(path), RuntimeError)
        self.assertEqual(len(calls), 2)  # the second was attempted, not refused as "in progress"
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
