"""
Tests for L{lbkit.workers}: a site file served by several real worker
processes on shared sockets, driven through real clients.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from lbkit import Backend, Server
from lbkit._worker import splitMaxconn
from lbkit._workerproc import (
    ObservationForwarder,
    SocketHolder,
    applyCounters,
    applyObservation,
    applyStates,
    countersOf,
    statesOf,
    sumCounters,
)
from lbkit.config import loadSite
from lbkit.error import ConfigError
from lbkit.health import TCPCheck
from lbkit.interfaces import IServerListener
from lbkit.stats._admin import AdminError, runRestart
from lbkit.stats._collect import Collector
from lbkit.tap import Options
from lbkit.workers import WorkerSupervisor, cpuCount
from tests.helpers import ProcessRunner, freePort

SITE = """
from lbkit import Backend, Server, http
from lbkit.health import HTTPCheck
from lbkit.stats import Admin, Page

web = Backend("web", servers=[{servers}]{health})
listen = [
    http.Frontend("tcp:{front}:interface=127.0.0.1", default=web, name="front"),
    Page("tcp:{stats}:interface=127.0.0.1", socket={socket!r}, admin=Admin(users={{"admin": "secret"}})),
]
"""


class _Named(Resource):
    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.checks = 0
        #: the status of answers to anything but /health
        self.status = 200
        self.waiters: list[tuple[int, Deferred[None]]] = []

    def render_GET(self, request: Any) -> bytes:
        if request.path == b"/health":
            self.checks += 1
            for waiter in list(self.waiters):
                if self.checks >= waiter[0]:
                    self.waiters.remove(waiter)
                    waiter[1].callback(None)
        else:
            request.setResponseCode(self.status)
        return self.name.encode()

    def checked(self, count: int) -> Deferred[None]:
        """Fires once C{count} health probes arrived."""
        d: Deferred[None] = Deferred()
        self.waiters.append((count, d))
        return d


class _KeepOpen(Protocol):
    """Sends one keep-alive request, fires C{answered} with the response; stays open."""

    def __init__(self) -> None:
        self.answered: Deferred[bytes] = Deferred()
        self.data = b""

    def connectionMade(self) -> None:
        self.transport.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if not self.answered.called and self.data.endswith((b"s1", b"s2")):
            self.answered.callback(self.data)


class _Load:
    """Requests on new connections, C{concurrency} at a time, until stopped."""

    def __init__(self, port: int, concurrency: int = 4) -> None:
        self.url = f"http://127.0.0.1:{port}/".encode()
        self.agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        self.ok = 0
        self.failed: list[str] = []
        self.bodies: set[bytes] = set()
        self.running = True
        self.waiters: list[tuple[int, Deferred[None]]] = []
        self.done = gatherResults([self._loop() for _ in range(concurrency)])

    @inlineCallbacks
    def _loop(self) -> Any:
        while self.running:
            try:
                response = yield self.agent.request(b"GET", self.url)
                body = yield readBody(response)
            except Exception as e:
                self.failed.append(repr(e))
            else:
                if response.code == 200:
                    self.ok += 1
                    self.bodies.add(body)
                else:
                    self.failed.append(f"status {response.code}")
            for waiter in list(self.waiters):
                if self.ok >= waiter[0] and not waiter[1].called:
                    self.waiters.remove(waiter)
                    waiter[1].callback(None)

    def until(self, count: int) -> Deferred[None]:
        """Fires once C{count} more requests succeeded."""
        d: Deferred[None] = Deferred()
        self.waiters.append((self.ok + count, d))
        return d

    def stop(self) -> Deferred[Any]:
        self.running = False
        return self.done


class WorkersTests(TestCase):
    """A supervisor and two real worker processes, with real backends and clients."""

    timeout = 120

    def setUp(self) -> None:
        self.names: dict[str, _Named] = {}
        self.ports = {name: self.backend(name) for name in ("s1", "s2")}
        self.front, self.stats = freePort(), freePort()
        self.socket = os.path.abspath(self.mktemp()) + ".sock"
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def backend(self, name: str) -> int:
        self.names[name] = _Named(name)
        port = reactor.listenTCP(0, Site(self.names[name]), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def writeSite(self, servers: tuple[str, ...] = ("s1", "s2"), health: str = "") -> str:
        text = SITE.format(
            servers=", ".join(f'Server("{n}", "127.0.0.1:{self.ports[n]}")' for n in servers),
            health=health, front=self.front, stats=self.stats, socket=self.socket,
        )
        if not hasattr(self, "sitePath"):
            self.sitePath = os.path.abspath(self.mktemp()) + ".py"
        with open(self.sitePath, "w") as f:
            f.write(text)
        return self.sitePath

    @inlineCallbacks
    def start(self, path: str, workers: int = 2) -> Any:
        supervisor = WorkerSupervisor.fromSiteFile(path, reactor, workers=workers, grace=5)
        supervisor.startService()
        self.addCleanup(supervisor.stopService)
        yield gatherResults([p.ready for p in supervisor.processes])
        return supervisor

    def get(self, port: int, path: str = "/") -> Deferred[tuple[int, bytes]]:
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        d = agent.request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
        return d.addCallback(lambda r: readBody(r).addCallback(lambda body: (r.code, body)))

    def command(self, line: str) -> Deferred[bytes]:
        """One line to the supervisor's command socket; fires with the answer."""
        answer: Deferred[bytes] = Deferred()

        class Ask(Protocol):
            def connectionMade(self) -> None:
                self.got = b""
                self.transport.write(line.encode() + b"\n")

            def dataReceived(self, data: bytes) -> None:
                self.got += data
                if data.endswith(b"\n\n"):
                    answer.callback(self.got)
                    self.transport.loseConnection()

        UNIXClientEndpoint(reactor, self.socket).connect(Factory.forProtocol(Ask))
        return answer

    def logged(self, fragment: str) -> list[str]:
        from twisted.logger import formatEvent

        texts = [formatEvent(e) for e in self.events]
        return [t for t in texts if fragment in t]

    @inlineCallbacks
    def test_servesFromTwoProcesses(self) -> Any:
        """
        Both workers accept on the one frontend port: twenty keep-alive
        clients opened at once are spread over two process IDs, and the
        stats page (served by the supervisor) counts all twenty.
        """
        supervisor = yield self.start(self.writeSite())
        pids = {p.pid for p in supervisor.processes}
        self.assertEqual(len(pids), 2)
        self.assertNotIn(os.getpid(), pids)
        clients = [_KeepOpen() for _ in range(20)]
        for client in clients:
            reactor.connectTCP("127.0.0.1", self.front, ClientFactory.forProtocol(lambda c=client: c))
        bodies = yield gatherResults([c.answered for c in clients])
        self.assertEqual({b[-2:] for b in bodies}, {b"s1", b"s2"})
        yield supervisor.collect()
        rows = supervisor.workersView()
        self.assertEqual({r["pid"] for r in rows}, pids)
        self.assertEqual(sum(r["sessions"]["current"] for r in rows), 20)
        self.assertTrue(all(r["sessions"]["current"] > 0 for r in rows), rows)
        code, body = yield self.get(self.stats, "/stats.json")
        stats = json.loads(body)
        self.assertEqual(stats["frontends"][0]["sessions"]["current"], 20)
        self.assertEqual(stats["backends"][0]["sessions"]["total"], 20)
        self.assertEqual(sorted(r["pid"] for r in stats["workers"]), sorted(pids))
        for client in clients:
            client.transport.loseConnection()

    @inlineCallbacks
    def test_killedWorkerIsReplaced(self) -> Any:
        """
        A worker killed outright: the other one serves every request made
        meanwhile (the socket and its queue belong to the supervisor), the
        death is logged, and a new worker takes the slot.
        """
        supervisor = yield self.start(self.writeSite())
        victim = supervisor.processes[0]
        started: Deferred[Any] = Deferred()
        supervisor.workerStarted = started.callback  # type: ignore[method-assign]
        os.kill(victim.pid, signal.SIGKILL)
        yield victim.exited
        results = []
        for _ in range(20):
            results.append((yield self.get(self.front)))
        self.assertEqual({code for code, _ in results}, {200})
        replacement = yield started
        self.assertEqual(replacement.index, 0)
        self.assertIs(supervisor.processes[0], replacement)
        self.assertNotEqual(replacement.pid, victim.pid)
        self.assertEqual(supervisor.restarts, 1)
        self.assertTrue(self.logged(f"worker 0 (pid {victim.pid}) ended"))
        code, body = yield self.get(self.front)
        self.assertEqual(code, 200)

    @inlineCallbacks
    def test_rollingRestartRefusesNothing(self) -> Any:
        """
        L{WorkerSupervisor.restartWorkers} under load: new processes take
        over, the old ones drain and exit, and no request fails.
        """
        supervisor = yield self.start(self.writeSite())
        old = list(supervisor.processes)
        load = _Load(self.front)
        yield load.until(20)
        notes = yield supervisor.restartWorkers()
        self.assertIn("workers restarted", notes[0])
        yield gatherResults([p.exited for p in old])
        yield load.until(20)
        yield load.stop()
        self.assertEqual(load.failed, [])
        self.assertGreaterEqual(load.ok, 40)
        self.assertFalse({p.pid for p in old} & {p.pid for p in supervisor.processes})
        self.assertEqual(supervisor.retiring, [])
        self.assertEqual([p.generation for p in supervisor.processes], [2, 2])

    @inlineCallbacks
    def test_reloadUnderLoad(self) -> Any:
        """
        A reload that adds a server reaches every worker without a failed
        request; a broken site file then changes nothing anywhere.
        """
        path = self.writeSite(servers=("s1",))
        supervisor = yield self.start(path)
        pids = [p.pid for p in supervisor.processes]
        load = _Load(self.front)
        yield load.until(10)
        self.assertEqual(load.bodies, {b"s1"})
        self.writeSite(servers=("s1", "s2"))
        changes = yield supervisor.reload()
        self.assertEqual(sum(1 for c in changes if c.endswith(": reloaded")), 2, changes)
        yield load.until(40)
        yield load.stop()
        self.assertEqual(load.failed, [])
        self.assertEqual(load.bodies, {b"s1", b"s2"})
        self.assertEqual([p.pid for p in supervisor.processes], pids)

        with open(path, "a") as f:
            f.write("\nthis is not python\n")
        yield self.assertFailure(supervisor.reload(), ConfigError)
        self.assertEqual([p.pid for p in supervisor.processes], pids)
        code, _ = yield self.get(self.front)
        self.assertEqual(code, 200)

    @inlineCallbacks
    def test_oneCheckerAndAdminReachEveryWorker(self) -> Any:
        """
        Only the supervisor probes the servers (not each worker); a server
        put in maintenance on its command socket gets no traffic from any
        worker, and coming back ready gets it again.
        """
        path = self.writeSite(health=', health=HTTPCheck("/health", interval=0.5)')
        began = reactor.seconds()
        yield self.start(path)
        results = []
        for _ in range(20):
            results.append((yield self.get(self.front)))
        self.assertEqual({body for _, body in results}, {b"s1", b"s2"})
        # one checker probes a server at most once per interval (plus the
        # first probe); three (the supervisor and two workers) would reach
        # four probes in well under 1.5 seconds
        yield self.names["s1"].checked(4)
        elapsed = reactor.seconds() - began
        self.assertLessEqual(self.names["s1"].checks, elapsed / 0.5 + 1)

        answer = yield self.command("set server web/s1 state maint")
        self.assertNotIn(b"error", answer.lower())
        results = []
        for _ in range(20):
            results.append((yield self.get(self.front)))
        self.assertEqual({body for _, body in results}, {b"s2"})
        yield self.command("set server web/s1 state ready")
        results = []
        for _ in range(20):
            results.append((yield self.get(self.front)))
        self.assertEqual({body for _, body in results}, {b"s1", b"s2"})

    @inlineCallbacks
    def test_passiveChecksInWorkers(self) -> Any:
        """
        Live traffic seen by the workers counts in the supervisor's passive
        checks (C{observe="layer7"}): a server answering 503 through both
        workers is marked DOWN long before its next active probe, and every
        worker stops sending it traffic.
        """
        path = self.writeSite(
            health=', health=HTTPCheck("/health", interval=60, observe="layer7", errorLimit=4)'
        )
        supervisor = yield self.start(path)
        s1 = [s for s in supervisor.backends()[0].servers if s.name == "s1"][0]
        down: Deferred[None] = Deferred()

        @implementer(IServerListener)
        class Watch:
            def stateChanged(self, server: Any, old: Any, new: Any, reason: str) -> None:
                if server is s1 and new.value == "DOWN" and not down.called:
                    down.callback(None)

            def weightChanged(self, server: Any, old: int, new: int) -> None:
                pass

        s1.addListener(Watch())
        self.names["s1"].status = 503
        codes = []
        for _ in range(12):
            code, body = yield self.get(self.front)
            codes.append((code, body))
        yield down.addTimeout(10, reactor)
        # a round trip to every worker: each has read the new state since
        yield supervisor.collect()
        self.assertTrue(self.logged("Detected 4 consecutive errors"), "no passive-check log line")
        results = set()
        for _ in range(10):
            results.add((yield self.get(self.front)))
        self.assertEqual(results, {(200, b"s2")})
        self.assertIn((503, b"s1"), codes)

    @inlineCallbacks
    def test_restartFromAdminAndSocket(self) -> Any:
        """
        C{restart workers} on the command socket and C{POST /admin/restart}
        each replace every worker (new pids, a new generation) as SIGUSR2
        does, and the frontend serves throughout.
        """
        supervisor = yield self.start(self.writeSite())
        first = {p.pid for p in supervisor.processes}
        answer = yield self.command("restart workers")
        self.assertIn(b"workers restarted: generation 2", answer)
        second = {p.pid for p in supervisor.processes}
        self.assertFalse(first & second)
        self.assertEqual((yield self.get(self.front))[0], 200)

        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = yield agent.request(
            b"POST", f"http://127.0.0.1:{self.stats}/admin/restart".encode(),
            Headers({b"authorization": [b"Basic " + base64.b64encode(b"admin:secret")], b"x-lbkit-admin": [b"1"]}),
        )
        body = json.loads((yield readBody(response)))
        self.assertEqual(response.code, 200, body)
        self.assertTrue(body["ok"])
        self.assertIn("generation 3", body["changes"][0])
        self.assertFalse(second & {p.pid for p in supervisor.processes})
        self.assertEqual((yield self.get(self.front))[0], 200)

    @inlineCallbacks
    def test_unixFrontend(self) -> Any:
        """
        A frontend on a unix: endpoint is served by both workers through
        the supervisor's socket, and a rolling restart keeps the socket
        file and its connections working.
        """
        path = os.path.abspath(self.mktemp()) + ".front"
        site = os.path.abspath(self.mktemp()) + ".py"
        with open(site, "w") as f:
            f.write(
                "from lbkit import Backend, Server, http\n"
                f"web = Backend('web', servers=[Server('s1', '127.0.0.1:{self.ports['s1']}')])\n"
                f"listen = [http.Frontend('unix:{path}', default=web)]\n"
            )
        supervisor = yield self.start(site)
        self.assertTrue(os.path.exists(path), "no socket file after start")

        @inlineCallbacks
        def ask() -> Any:
            got: Deferred[bytes] = Deferred()

            class Ask(Protocol):
                def connectionMade(self) -> None:
                    self.data = b""
                    self.transport.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")

                def dataReceived(self, data: bytes) -> None:
                    self.data += data

                def connectionLost(self, reason: Any = None) -> None:
                    got.callback(self.data)

            yield UNIXClientEndpoint(reactor, path).connect(Factory.forProtocol(Ask))
            answer = yield got.addTimeout(10, reactor)
            return answer

        for _ in range(4):
            answer = yield ask()
            self.assertTrue(answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"s1"), answer)
        yield supervisor.restartWorkers()
        self.assertTrue(os.path.exists(path))
        for _ in range(4):
            answer = yield ask()
            self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer)

    @inlineCallbacks
    def test_udpFrontend(self) -> Any:
        """
        A UDP frontend is served by the workers, each on its own
        SO_REUSEPORT socket of the address: every client's datagrams stay
        in one session (one server), and the supervisor's counters sum the
        sessions of both workers.
        """
        from tests.test_udp import _Client, _Echo

        echoes = []
        for name in ("u1", "u2"):
            port = reactor.listenUDP(0, _Echo(name), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            echoes.append((name, port.getHost().port))
        front = freePort()
        site = os.path.abspath(self.mktemp()) + ".py"
        with open(site, "w") as f:
            servers = ", ".join(f"Server('{n}', '127.0.0.1:{p}')" for n, p in echoes)
            f.write(
                "from lbkit import Backend, Server, udp\n"
                f"echo = Backend('echo', servers=[{servers}])\n"
                f"listen = [udp.Frontend('udp:{front}:interface=127.0.0.1', echo, name='echo-in')]\n"
            )
        supervisor = yield self.start(site)
        seen = set()
        for _ in range(6):
            client = _Client()
            port = reactor.listenUDP(0, client, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            replies = set()
            for _ in range(2):
                data, addr = yield client.ask(b"hi", front)
                replies.add(data)
                self.assertEqual(addr, ("127.0.0.1", front))
            self.assertEqual(len(replies), 1)
            seen |= replies
        self.assertEqual(seen, {b"u1:hi", b"u2:hi"})
        yield supervisor.collect()
        frontend = [item for item in supervisor.listen if getattr(item, "mode", "") == "udp"][0]
        self.assertEqual(sum(f.total for f in frontend.factories), 6)


class _Runner(ProcessRunner):
    """A L{ProcessRunner} that can wait for a line's C{count}th appearance."""

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor)
        self.counts: list[tuple[bytes, int, Deferred[None]]] = []

    def waitCount(self, needle: str, count: int, timeout: float = 60) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.counts.append((needle.encode(), count, d))
        self._check()
        return d.addTimeout(timeout, reactor)

    def _received(self, data: bytes) -> None:
        super()._received(data)
        self._check()

    def _check(self) -> None:
        for entry in list(self.counts):
            needle, count, d = entry
            if self.output.count(needle) >= count:
                self.counts.remove(entry)
                d.callback(None)


class TwistdWorkersTests(TestCase):
    """C{twistd lbkit --workers 2}, as an operator runs it, with its signals."""

    timeout = 120

    @inlineCallbacks
    def test_signals(self) -> Any:
        """
        Two workers start; SIGUSR2 replaces both; SIGHUP reloads them;
        SIGTERM ends everything (twistd exits with the signal it stopped for).
        """
        backend = _Named("b1")
        port = reactor.listenTCP(0, Site(backend), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        front = freePort()
        path = os.path.abspath(self.mktemp()) + ".py"
        with open(path, "w") as f:
            f.write(
                "from lbkit import Backend, Server, http\n"
                f"web = Backend('web', servers=[Server('b1', '127.0.0.1:{port.getHost().port}')])\n"
                f"listen = [http.Frontend('tcp:{front}:interface=127.0.0.1', default=web)]\n"
            )
        runner = _Runner(reactor)
        argv = [sys.executable, "-c", "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "lbkit", "--config", path, "--workers", "2"]
        reactor.spawnProcess(runner, sys.executable, argv, env=dict(os.environ), path=os.getcwd())
        self.addCleanup(runner.stop)
        try:
            yield runner.waitCount("accepting connections", 2)
        except Exception:
            self.fail(runner.output.decode()[-3000:])
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = yield agent.request(b"GET", f"http://127.0.0.1:{front}/".encode())
        self.assertEqual((yield readBody(response)), b"b1")

        os.kill(runner.pid(), signal.SIGUSR2)
        yield runner.waitCount("workers restarted: generation 2", 1)
        os.kill(runner.pid(), signal.SIGHUP)
        yield runner.waitCount("): reloaded", 2)
        response = yield agent.request(b"GET", f"http://127.0.0.1:{front}/".encode())
        self.assertEqual(response.code, 200)
        yield readBody(response)
        runner.transport.signalProcess("TERM")
        code = yield runner.ended
        self.assertIn(code, (0, -signal.SIGTERM), runner.output[-2000:])
        self.assertNotIn(b"Traceback", runner.output)


class CountersTests(TestCase):
    """The counters workers report, summed by the supervisor; states sent back."""

    def site(self) -> list[Any]:
        web = Backend("web", servers=[Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2", maxconn=5)])
        return [_Front(web)]

    def test_sumsAndGauges(self) -> None:
        """
        Growing counters of ended workers stay in the sum; their gauges
        (connections now) do not.
        """
        one, two = self.site(), self.site()
        one[0].backend.servers[0].total = 3
        one[0].backend.servers[0].active = 2
        one[0].backend.servers[0].responses["2xx"] = 3
        two[0].backend.servers[0].total = 4
        two[0].backend.servers[0].active = 1
        reports = [countersOf(one), countersOf(two)]
        total = sumCounters(reports, {})
        mine = self.site()
        applyCounters(mine, total)
        server = mine[0].backend.servers[0]
        self.assertEqual((server.total, server.active, server.responses["2xx"]), (7, 3, 3))
        ended = sumCounters([reports[0]], {}, gauges=False)
        applyCounters(mine, sumCounters([reports[1]], ended))
        self.assertEqual((server.total, server.active), (7, 1))

    def test_observationsForwarded(self) -> None:
        """
        A worker sends the supervisor each failure live traffic shows and
        the first success after one (what resets a passive check's count),
        only for backends whose check observes; the supervisor replays them
        on its own server of the same name.
        """
        sent: list[dict[str, Any]] = []
        watched = Backend("web", servers=[Server("a", "127.0.0.1:1")], health=TCPCheck(observe="layer4"))
        ignored = Backend("other", servers=[Server("c", "127.0.0.1:3")], health=TCPCheck())
        forwarder = ObservationForwarder(sent.append)
        forwarder.watch([_Front(watched), _Front(ignored)])
        forwarder.watch([_Front(watched)])  # again, after a reload: no second observer
        a = watched.servers[0]
        a.observe(True, "ok")
        a.observe(False, "Layer4 connection problem")
        a.observe(False, "Layer4 connection problem")
        a.observe(True, "ok")
        a.observe(True, "ok")
        ignored.servers[0].observe(False, "Layer4 connection problem")
        self.assertEqual(
            [(m["server"], m["ok"]) for m in sent], [("a", False), ("a", False), ("a", True)]
        )
        self.assertEqual(sent[0], {
            "op": "observe", "backend": "web", "server": "a", "ok": False, "reason": "Layer4 connection problem",
        })
        mine = self.site()
        seen: list[tuple[str, bool, str]] = []
        mine[0].backend.servers[0].addObserver(lambda server, ok, reason: seen.append((server.name, ok, reason)))
        for message in sent + [{"op": "observe", "backend": "web", "server": "nobody", "ok": False}]:
            applyObservation(mine, message)
        self.assertEqual(seen, [("a", False, "Layer4 connection problem")] * 2 + [("a", True, "ok")])

    def test_terminateOnce(self) -> None:
        """
        A worker asked to stop twice (the supervisor's SIGTERM, then the end
        of its stdin, or SIGTERM twice) stops its reactor once: a second
        reactor.stop() would log ReactorNotRunning.
        """
        import types

        from lbkit._worker import Worker

        stops: list[None] = []
        fake = types.SimpleNamespace(stopRequested=False, reactor=types.SimpleNamespace(stop=lambda: stops.append(None)))
        Worker.terminate(fake)  # type: ignore[arg-type]
        Worker.terminate(fake)  # type: ignore[arg-type]
        self.assertEqual(len(stops), 1)

    def test_restartNeedsWorkers(self) -> None:
        """Without workers, a restart request says why it cannot be done (404)."""
        with self.assertRaises(AdminError) as caught:
            runRestart(Collector(), "admin", "test")
        self.assertEqual(caught.exception.code, 404)
        self.assertIn("--workers", str(caught.exception))

    def test_states(self) -> None:
        """A worker's servers take the supervisor's states, weights and ramps; unknown names are ignored."""
        supervisor, worker = self.site(), self.site()
        a, b = supervisor[0].backend.servers
        from lbkit._model import ServerState

        a.setState(ServerState.MAINT)
        b.setWeight(7)
        applyStates(worker, statesOf(supervisor) + [["web", "zz", "DOWN", 1, 1.0]], 0.0)
        wa, wb = worker[0].backend.servers
        self.assertEqual((wa.state, wb.weight), (ServerState.MAINT, 7))

    def test_maxconnSplit(self) -> None:
        """Each of three workers gets the ceiling of a third of a server's maxconn."""
        path = self.mktemp() + ".py"
        with open(path, "w") as f:
            f.write(
                "from lbkit import Backend, Server, tcp\n"
                "web = Backend('web', servers=[Server('a', '127.0.0.1:1', maxconn=10), Server('b', '127.0.0.1:2')])\n"
                "listen = [tcp.Frontend('tcp:0:interface=127.0.0.1', web)]\n"
            )
        site = loadSite(path)
        splitMaxconn(site, 3)
        a, b = site.listen[0].backends()[0].servers
        self.assertEqual((a.maxconn, b.maxconn), (4, None))

    def test_holderKeepsSocketsPerEndpoint(self) -> None:
        """
        The holder opens one SO_REUSEPORT socket per worker slot on the
        same port; listening again on an endpoint string gets the same
        sockets; unused ones close.
        """
        holder = SocketHolder(reactor, slots=2)
        listener = _Shared("tcp:0:interface=127.0.0.1")
        first = holder.listen(listener)
        port = first.getHost().port
        self.assertEqual([s.getsockname() for s in holder.ports[listener.description]], [("127.0.0.1", port)] * 2)
        fds = [holder.sockets(0)[0][1], holder.sockets(1)[0][1]]
        self.assertNotEqual(fds[0], fds[1])
        first.stopListening()
        again = holder.listen(listener)
        self.assertEqual([holder.sockets(0)[0][1], holder.sockets(1)[0][1]], fds)
        self.assertEqual(holder.closeUnused(), [])
        again.stopListening()
        self.assertEqual(holder.closeUnused(), [listener.description])
        self.assertEqual(holder.sockets(0), [])

    def test_holderSharesUnix(self) -> None:
        """
        A unix: frontend gets one socket that every slot shares (a stale
        socket file is replaced); closing removes the file.
        """
        path = os.path.abspath(self.mktemp()) + ".sock"
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()  # the file stays: a previous run's
        holder = SocketHolder(reactor, slots=2)
        held = holder.listen(_Shared(f"unix:{path}"))
        first, second = holder.ports[f"unix:{path}"]
        self.assertIs(first, second)
        self.assertEqual(holder.sockets(0)[0][1], holder.sockets(1)[0][1])
        name = held.getHost().name
        self.assertEqual(name.decode() if isinstance(name, bytes) else name, path)
        holder.closeAll()
        self.assertFalse(os.path.exists(path))

    def test_optionWorkers(self) -> None:
        """C{--workers} takes a positive integer or auto; anything else is a usage error."""
        path = self.mktemp() + ".py"
        with open(path, "w") as f:
            f.write("from lbkit import Backend, Server, tcp\n"
                    "listen = [tcp.Frontend('tcp:0:interface=127.0.0.1', Backend('b', servers=[Server('a', '127.0.0.1:1')]))]\n")
        for given, expected in (("1", 1), ("3", 3), ("auto", cpuCount())):
            options = Options()
            options.parseOptions(["--config", path, "--workers", given])
            self.assertEqual(options["workers"], expected)
        for bad in ("0", "-2", "two"):
            with self.assertRaises(usage.UsageError) as e:
                Options().parseOptions(["--config", path, "--workers", bad])
            self.assertIn("--workers must be a positive integer or auto", str(e.exception))

    def test_needsASiteFile(self) -> None:
        """A supervisor without a site file says what it needs."""
        with self.assertRaises(ConfigError) as e:
            WorkerSupervisor([], reactor, workers=2)
        self.assertIn("runs a site file", str(e.exception))


class _Front:
    name = "f"
    endpoint = "tcp:1"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.factories: list[Any] = []

    def backends(self) -> list[Backend]:
        return [self.backend]


class _Shared:
    shared = True

    def __init__(self, description: str) -> None:
        self.description = description
