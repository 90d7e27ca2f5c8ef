"""
Live changes and explanations over real sockets (docs/beyond.md): an
http frontend in front of three twisted.web servers on 127.0.0.1, with
traffic running while the balancer is swapped (at run time and by a
reload) and a server is removed; explanations checked against where real
requests then went.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase
from twisted.web.client import readBody
from twisted.web.http_headers import Headers

from lbkit import Backend, Context, Server, tcp
from lbkit._explain import NOTE, explainChoice
from lbkit.balance import URI, LeastConn
from lbkit.http._explain import explainRequest
from lbkit.service import LoadBalancerService, fromSiteFile
from tests.helpers import Collector, ReplyAtEOF, freePort, listen
from tests.test_examples_beyond import _Answer
from tests.test_reload import Client, captureLog, frontendPort, reactor, startBackend, writeSite

SITE = """\
from lbkit import Backend, Server, http, stats
from lbkit.balance import RoundRobin, LeastConn, URI
from lbkit.persistence import Cookie

app = Backend("app", servers=[{servers}], balance={balance}, persistence=Cookie("SRV"))
listen = [http.Frontend("tcp:0:interface=127.0.0.1", default=app, name="web", explain=True){page}]
grace = 5
"""


class LiveTests(TestCase):
    """Traffic keeps flowing, and sticky clients stay, across live changes."""

    timeout = 60

    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp() + "-site.py")
        self.ports: dict[str, int] = {}
        for name in ("a", "b", "c"):
            self.ports[name], _ = startBackend(self, name)

    def startSite(self, balance: str) -> LoadBalancerService:
        self.socket = os.path.join(tempfile.mkdtemp(prefix="lbkit-b-"), "admin.sock")  # short: a UNIX socket path
        self.addCleanup(shutil.rmtree, os.path.dirname(self.socket), True)
        self.pagePort = freePort()
        self.writeSite(balance)
        service = fromSiteFile(self.path, reactor())
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def writeSite(self, balance: str) -> None:
        servers = ", ".join(f'Server("{n}", "127.0.0.1:{p}")' for n, p in self.ports.items())
        # its own port: a reload matches listeners by endpoint
        page = f', stats.Page("tcp:{self.pagePort}:interface=127.0.0.1", socket={self.socket!r})'
        writeSite(self.path, SITE.format(servers=servers, balance=balance, page=page))

    @inlineCallbacks
    def command(self, line: str) -> Any:
        """One line to the command socket, over the real UNIX socket; its answer."""
        answer = _Answer(line)
        yield connectProtocol(UNIXClientEndpoint(reactor(), self.socket), answer)
        return (yield answer.done)

    @inlineCallbacks
    def test_swapUnderLoad(self) -> Any:
        """
        RoundRobin -> LeastConn (the command socket's set balance) ->
        URI(consistent) (a reload)
        while 6 sticky clients and 2 others send 40 requests each,
        concurrently: none fails and no sticky client moves.
        """
        service = self.startSite("RoundRobin()")
        port = frontendPort(service)
        app = service.backends()[0]
        done = [0]
        failures: list[Any] = []
        stuck: dict[int, list[str]] = {}
        swaps: list[Any] = []

        @inlineCallbacks
        def swap() -> Any:
            if done[0] == 80:
                swaps.append((yield self.command("set balance app leastconn")))
            elif done[0] == 160:
                self.writeSite('URI(hashType="consistent")')
                swaps.append((yield service.reload()))

        @inlineCallbacks
        def client(i: int, sticky: bool) -> Any:
            http = Client(self)
            cookie: bytes | None = None
            for n in range(40):
                headers = Headers({b"cookie": [cookie]}) if cookie else None
                try:
                    response = yield http.agent.request(b"GET", b"http://127.0.0.1:%d/c%d/%d" % (port, i, n), headers)
                    body = (yield readBody(response)).decode()
                except Exception as e:  # noqa: BLE001 - counted and reported
                    failures.append(e)
                    continue
                if response.code != 200:
                    failures.append((response.code, body))
                if sticky:
                    stuck.setdefault(i, []).append(body)
                    setCookie = response.headers.getRawHeaders(b"set-cookie")
                    if setCookie and cookie is None:
                        cookie = setCookie[0].split(b";")[0]
                done[0] += 1
                yield swap()

        yield gatherResults([client(i, i < 6) for i in range(8)])
        self.assertEqual(failures, [])
        self.assertEqual(done[0], 320)
        for i, servers in stuck.items():
            self.assertEqual(set(servers), {servers[0]}, f"sticky client {i} moved: {servers}")
        self.assertIsInstance(app.balance, URI)
        self.assertEqual(app.balance.hashType, "consistent")  # type: ignore[attr-defined]
        self.assertEqual(swaps[0], "balance RoundRobin -> LeastConn")
        self.assertIn("backend app: balance LeastConn -> URI", swaps[1])

    @inlineCallbacks
    def test_removeServerUnderLoad(self) -> Any:
        """removeServer while requests flow: none fails, the Deferred fires, the server takes no more."""
        service = self.startSite("LeastConn()")
        port = frontendPort(service)
        app = service.backends()[0]
        a = app.servers[0]
        seen: list[str] = []
        failures: list[Any] = []
        removed: list[Any] = []

        @inlineCallbacks
        def client() -> Any:
            http = Client(self)
            for n in range(30):
                if len(seen) == 30 and not removed:
                    removed.append(app.removeServer(a, timeout=10, clock=reactor()))
                try:
                    code, body, _ = yield http.get(port, b"/x%d" % n)
                except Exception as e:  # noqa: BLE001
                    failures.append(e)
                    continue
                seen.append(body if code == 200 else f"{code}")

        yield gatherResults([client() for _ in range(4)])
        gone = yield removed[0]
        self.assertIs(gone, a)
        self.assertEqual(failures, [])
        self.assertEqual(len(seen), 120)
        self.assertEqual([s.name for s in app.servers], ["b", "c"])
        http = Client(self)
        after = []
        for _ in range(6):
            code, body, _ = yield http.get(port)
            after.append(body)
        self.assertNotIn("a", after)


class ExplainTests(TestCase):
    """What explain says is where real requests go, and what the access log records."""

    timeout = 30

    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp() + "-site.py")
        self.ports = {name: startBackend(self, name)[0] for name in ("a", "b", "c")}

    def startSite(self, balance: str) -> LoadBalancerService:
        servers = ", ".join(f'Server("{n}", "127.0.0.1:{p}")' for n, p in self.ports.items())
        writeSite(self.path, SITE.format(servers=servers, balance=balance, page=""))
        service = fromSiteFile(self.path, reactor())
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @inlineCallbacks
    def test_explainMatchesReality(self) -> Any:
        """For round robin and a consistent hash, each explanation names the server the next real request gets."""
        for balance in ("RoundRobin()", 'URI(hashType="consistent")'):
            service = self.startSite(balance)
            frontend = service.listen[0]
            port = frontendPort(service)
            http = Client(self)
            for n in range(9):
                path = f"/item/{n}"
                said = explainRequest(frontend, "GET", path, [("Host", "example.com")])
                code, body, _ = yield http.get(port, path.encode())
                self.assertEqual((code, body), (200, said["server"]), (balance, path, said))
            yield service.stopService()

    @inlineCallbacks
    def test_accessLogCarriesReasons(self) -> Any:
        """With explain=True each access-log event has an explain field naming the route and the balancer's reason."""
        events = captureLog(self, "lbkit.access")
        service = self.startSite("LeastConn()")
        port = frontendPort(service)
        http = Client(self)
        bodies = []
        for n in range(3):
            code, body, _ = yield http.get(port, b"/p%d" % n)
            bodies.append(body)
        explained = [e["explain"] for e in events if "explain" in e]
        self.assertEqual(len(explained), 3)
        for text, body in zip(explained, bodies, strict=True):
            self.assertTrue(text.startswith("no routes: default app; persistence recalled nothing: cookie: no SRV cookie; "
                                            f"leastconn: {body} had 0 active"), text)
        self.assertIn('explain="no routes: default app;', events[-1]["log_format"].format(**events[-1]))
        self.assertEqual(NOTE, "explain")


class _Named(ReplyAtEOF):
    """Answers its factory's name at EOF."""

    def readConnectionLost(self) -> None:
        assert self.transport is not None
        self.transport.write(self.factory.name)  # type: ignore[attr-defined]
        self.transport.loseConnection()


class TCPExplainTests(TestCase):
    """tcp mode: each connection's reasons in the access log; a dry run predicts the next connection's server."""

    timeout = 20

    @inlineCallbacks
    def test_connectionReasons(self) -> Any:
        """Three connections through a tcp frontend with explain=True: logged reasons name the server each reached."""
        servers = []
        for name in (b"s1", b"s2"):
            factory = Factory.forProtocol(_Named)
            factory.name = name  # type: ignore[attr-defined]
            servers.append(Server(name.decode(), f"127.0.0.1:{listen(self, reactor(), factory)}"))
        backend = Backend("be", servers, balance=LeastConn())
        frontend = tcp.Frontend("tcp:0:interface=127.0.0.1", backend=backend, name="t", explain=True)
        events = captureLog(self, "lbkit.access")
        service = frontend.makeService(reactor())
        service.startService()
        self.addCleanup(service.stopService)
        port = service.port.getHost().port  # type: ignore[attr-defined]
        got = []
        for _ in range(3):
            predicted, _ = explainChoice(backend, Context(client=IPv4Address("TCP", "127.0.0.1", 1)))
            collector = Collector(b"hello", halfClose=True)
            yield connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", port), collector)
            answer = (yield collector.done).decode()
            self.assertEqual(answer, predicted.name if predicted else None)
            got.append(answer)
        yield service.stopService()
        explained = [e["explain"] for e in events if "explain" in e]
        self.assertEqual(len(explained), 3)
        for text, answer in zip(explained, got, strict=True):
            self.assertTrue(text.startswith(f"backend be; leastconn: {answer} had 0 active"), text)


class ReloadExplainTests(TestCase):
    """A reload that turns explain on makes the running backends explain."""

    timeout = 20

    @inlineCallbacks
    def test_reloadTurnsExplainOn(self) -> Any:
        """explain=False -> True by a reload: the next request's access-log event has the field."""
        path = os.path.join(self.mktemp() + "-site.py")
        port, _ = startBackend(self, "a")
        site = SITE.format(servers=f'Server("a", "127.0.0.1:{port}")', balance="RoundRobin()", page="")
        writeSite(path, site.replace("explain=True", "explain=False"))
        service = fromSiteFile(path, reactor())
        service.startService()
        self.addCleanup(service.stopService)
        events = captureLog(self, "lbkit.access")
        http = Client(self)
        yield http.get(frontendPort(service))
        writeSite(path, site)
        yield service.reload()
        yield http.get(frontendPort(service))
        self.assertEqual(["explain" in e for e in events], [False, True])
        self.assertTrue(events[1]["explain"].startswith("no routes: default app; persistence recalled nothing"))
