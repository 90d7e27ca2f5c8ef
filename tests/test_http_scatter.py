"""
Tests for L{lbkit.http.ScatterGather}: one request to every server (or
k) of a backend, answers merged, over real sockets on 127.0.0.1 with
three twisted.web servers, one of them slow (it never answers) and one
dead (nothing listens).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbkit import Backend, Server
from lbkit.error import ConfigError
from lbkit.http import Answer, Route, ScatterGather, SubResponse, pathBegins
from lbkit.service import fromSiteFile
from lbkit.stats._collect import Collector
from tests.helpers import freePort
from tests.test_examples import EXAMPLES, curl, needCurl, startProcess, stopCleanly, twistd
from tests.test_http_integration import HTTPTestCase, backend
from tests.test_reload import Client, frontendPort, reactor, startBackend, writeSite


class Silent(Protocol):
    """A server that reads and never answers."""

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        pass


def joinBodies(parts: list[SubResponse]) -> Answer:
    """A merge: the servers' names and statuses, and their bodies' JSON."""
    out = [{"server": p.server.name, "status": p.status, "info": json.loads(p.body)} for p in parts]
    return Answer(200, [(b"X-Parts", b"%d" % len(parts))], json.dumps(out).encode(), b"application/json")


class ScatterConfigTests(SynchronousTestCase):
    """Bad arguments are a ConfigError naming the site file line and the problem."""

    def test_badArguments(self) -> None:
        """A non-backend, a merge not callable, bad servers, timeout, partial, maxBody."""
        be = Backend("b", [Server("s", "127.0.0.1:1")])
        for args, kwargs, word in [
            (("x", joinBodies), {}, "backend"),
            ((be, "merge"), {}, "merge"),
            ((be, joinBodies), {"servers": 0}, "servers"),
            ((be, joinBodies), {"servers": "some"}, "servers"),
            ((be, joinBodies), {"timeout": -1}, "timeout"),
            ((be, joinBodies), {"partial": "maybe"}, "partial"),
            ((be, joinBodies), {"maxBody": "big"}, "maxBody"),
        ]:
            with self.assertRaises(ConfigError) as e:
                ScatterGather(*args, **kwargs)
            self.assertIn(word, str(e.exception))
            self.assertIn("test_http_scatter.py", str(e.exception))

    def test_choose(self) -> None:
        """servers=k takes k usable servers in turn; "all" takes every one."""
        be = Backend("b", [Server(f"s{i}", f"127.0.0.1:{i + 1}") for i in range(3)])
        sg = ScatterGather(be, joinBodies, servers=2)
        self.assertEqual([[s.name for s in sg.choose()] for _ in range(3)],
                         [["s0", "s1"], ["s1", "s2"], ["s2", "s0"]])
        self.assertEqual(len(ScatterGather(be, joinBodies).choose()), 3)


class ScatterTests(HTTPTestCase):
    """Three servers: a1 and a2 answer, one is slow or dead."""

    def setUpScatter(self, third: str, **kwargs: Any) -> tuple[int, ScatterGather, list[dict[str, Any]]]:
        a1, _ = self.site("a1")
        a2, _ = self.site("a2")
        if third == "slow":
            port3, _ = self.custom(Silent)
        elif third == "dead":
            port3 = freePort()
        else:
            port3, _ = self.site("a3")
        sg = ScatterGather(backend("app", [a1, a2, port3]), joinBodies, **kwargs)
        self.addCleanup(sg.close)
        port = self.frontend([Route(pathBegins("/search"), sg)], log=True)
        logged: list[dict[str, Any]] = []
        self._frontends[0].factories[0].accessLog = Logger(observer=logged.append)
        return port, sg, logged

    @inlineCallbacks
    def test_mergeAll(self) -> Any:
        """Every server gets the request, body included; merge's answer is what the client gets."""
        port, sg, logged = self.setUpScatter("a3")
        c = yield self.client(port)
        c.send(b"POST /search?q=x HTTP/1.1\r\nHost: test\r\nX-Q: 1\r\nContent-Length: 5\r\n\r\nhello")
        [(response, body)] = yield c.responses(1)
        self.assertEqual(response.code, 200)
        parts = json.loads(body)
        self.assertEqual(sorted(p["server"] for p in parts), ["app1", "app2", "app3"])
        for p in parts:
            info = p["info"]
            self.assertEqual((info["method"], info["uri"]), ("POST", "/search?q=x"))
            self.assertEqual(info["headers"]["x-q"], ["1"])
            self.assertEqual(info["headers"]["host"], ["test"])
            self.assertEqual(info["length"], 5)
        # one access-log line per sub-request, and one for the request itself
        # the servers' counters show on /stats.json, the target backend among the frontend's
        collector = Collector()
        collector.bind(self._frontends)
        [app] = [b for b in collector.snapshot()["backends"] if b["name"] == "app"]
        self.assertEqual([(s["name"], s["requests"]["total"]) for s in app["servers"]], [("app1", 1), ("app2", 1), ("app3", 1)])
        lines = sorted((e["backend"], e["server"], e["status"]) for e in logged)
        self.assertEqual(lines, [("app", "app1", 200), ("app", "app2", 200), ("app", "app3", 200),
                                 ("app-scatter", "scatter", 200)])

    @inlineCallbacks
    def test_oneSlowOneDead(self) -> Any:
        """
        a1 answers, a2 never does, a3 is dead: "merge" answers with a1's
        alone after the timeout, "fail" answers 504; each sub-request has
        its log line.
        """
        a1, _ = self.site("a1")
        slow, _ = self.custom(Silent)
        app = backend("app", [a1, slow, freePort()])
        merged = ScatterGather(app, joinBodies, timeout=0.5, partial="merge", name="merged")
        failing = ScatterGather(app, joinBodies, timeout=0.5, partial="fail", name="failing")
        for sg in (merged, failing):
            self.addCleanup(sg.close)
        port = self.frontend([Route(pathBegins("/m"), merged), Route(pathBegins("/f"), failing)], log=True)
        logged: list[dict[str, Any]] = []
        self._frontends[0].factories[0].accessLog = Logger(observer=logged.append)
        response, body = yield self.get(port, "/m")
        self.assertEqual(response.code, 200)
        self.assertEqual([p["server"] for p in json.loads(body)], ["app1"])
        response, body = yield self.get(port, "/f")
        self.assertEqual(response.code, 504)
        self.assertIn(b"app2: timeout", body)
        self.assertIn(b"app3: ", body)
        lines = sorted((e["frontend"], e["server"], e["status"], e["termination"]) for e in logged
                       if e["server"] != "scatter")
        self.assertEqual(lines, [
            ("failing", "app1", 200, "--"), ("failing", "app2", 504, "sD"), ("failing", "app3", 502, "SH"),
            ("merged", "app1", 200, "--"), ("merged", "app2", 504, "sD"), ("merged", "app3", 502, "SH"),
        ])

    @inlineCallbacks
    def test_connectionsReused(self) -> Any:
        """Sub-requests go over kept-alive connections: three requests, one connection per server."""
        a1, site1 = self.site("a1")
        a2, site2 = self.site("a2")
        sg = ScatterGather(backend("app", [a1, a2]), joinBodies)
        self.addCleanup(sg.close)
        port = self.frontend(default=sg)
        for _ in range(3):
            response, body = yield self.get(port, "/")
            self.assertEqual(sorted(p["server"] for p in json.loads(body)), ["app1", "app2"])
        self.assertEqual((site1.connections, site2.connections), (1, 1))

    @inlineCallbacks
    def test_partialFail(self) -> Any:
        """partial="fail": a server that times out makes the answer 504, merge not called."""
        port, sg, logged = self.setUpScatter("slow", timeout=0.5)
        response, body = yield self.get(port, "/search")
        self.assertEqual(response.code, 504)
        self.assertIn(b"app3: timeout", body)
        slow = [e for e in logged if e["server"] == "app3"]
        self.assertEqual([(e["status"], e["termination"]) for e in slow], [(504, "sD")])

    @inlineCallbacks
    def test_partialMerge(self) -> Any:
        """partial="merge": the answers that arrived are merged; a dead server is left out."""
        port, sg, logged = self.setUpScatter("dead", partial="merge")
        response, body = yield self.get(port, "/search")
        self.assertEqual(response.code, 200)
        self.assertEqual(sorted(p["server"] for p in json.loads(body)), ["app1", "app2"])
        dead = [e for e in logged if e["server"] == "app3"]
        self.assertEqual([(e["status"], e["termination"]) for e in dead], [(502, "SH")])

    @inlineCallbacks
    def test_slowMerged(self) -> Any:
        """partial="merge" with a slow server: the answer comes after the timeout, without it."""
        port, sg, logged = self.setUpScatter("slow", partial="merge", timeout=0.5)
        response, body = yield self.get(port, "/search")
        self.assertEqual(response.code, 200)
        self.assertEqual([v for k, v in response.headers if k.lower() == b"x-parts"], [b"2"])

    @inlineCallbacks
    def test_deferredMergeAndK(self) -> Any:
        """servers=k sends to k servers; merge may return a Deferred."""
        a1, _ = self.site("a1")
        a2, _ = self.site("a2")
        a3, _ = self.site("a3")
        from twisted.internet import reactor

        def later(parts: list[SubResponse]) -> Deferred[Answer]:
            d: Deferred[Answer] = Deferred()
            reactor.callLater(0, d.callback, joinBodies(parts))  # type: ignore[attr-defined]
            return d

        sg = ScatterGather(backend("app", [a1, a2, a3]), later, servers=2)
        self.addCleanup(sg.close)
        port = self.frontend(default=sg)
        seen = []
        for _ in range(3):
            response, body = yield self.get(port, "/")
            self.assertEqual(response.code, 200)
            seen.append(sorted(p["server"] for p in json.loads(body)))
        self.assertEqual(seen, [["app1", "app2"], ["app2", "app3"], ["app1", "app3"]])

    @inlineCallbacks
    def test_tooLarge(self) -> Any:
        """A body past maxBody is answered 413, and no server gets it."""
        port, sg, logged = self.setUpScatter("a3", maxBody=4)
        c = yield self.client(port)
        c.send(b"POST /search HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n0123456789")
        [(response, body)] = yield c.responses(1)
        self.assertEqual(response.code, 413)
        self.assertEqual([e["server"] for e in logged], ["scatter"])

    @inlineCallbacks
    def test_badMerge(self) -> Any:
        """A merge that returns something else than an Answer makes a 500."""
        a1, _ = self.site("a1")
        sg = ScatterGather(backend("app", [a1]), lambda parts: "nope")  # type: ignore[arg-type,return-value]
        self.addCleanup(sg.close)
        port = self.frontend(default=sg)
        response, body = yield self.get(port, "/")
        self.assertEqual(response.code, 500)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)


class ExampleTests(TestCase):
    """examples/mirror.py, started as a user would (twistd lbkit)."""

    timeout = 30

    @inlineCallbacks
    def test_example(self) -> Any:
        """/search merges all three servers; other requests go to app1, every second one mirrored."""
        needCurl()
        cwd = tempfile.mkdtemp(prefix="lbkit-ex-")
        self.addCleanup(shutil.rmtree, cwd, True)
        watcher, process = startProcess(self, twistd("lbkit", "--config", os.path.join(EXAMPLES, "mirror.py")), cwd)
        for label in ("frontend mirror", "demo server app3", "demo server next1", "stats page"):
            yield watcher.waitFor(f"{label} listening on")
        merged = yield curl("http://127.0.0.1:8170/search")
        self.assertEqual(merged, "app1: app1\napp2: app2\napp3: app3\n")
        answers = []
        for _ in range(4):
            answers.append((yield curl("http://127.0.0.1:8170/")).strip())
        self.assertEqual(answers, ["app1"] * 4)
        snapshot = json.loads((yield curl("http://127.0.0.1:8171/stats.json")))
        [shadow] = [b for b in snapshot["backends"] if b["name"] == "next"]
        self.assertEqual((shadow["mirror"]["matched"], shadow["mirror"]["mirrored"]), (4, 2))
        page = yield curl("http://127.0.0.1:8171/")
        self.assertIn("Mirrored: 2", page)
        metrics = yield curl("http://127.0.0.1:8171/metrics")
        self.assertIn('lbkit_backend_mirror_copies_total{backend="next",outcome="mirrored"} 2.0', metrics)
        yield stopCleanly(self, watcher, process)


SCATTER_SITE = """\
from lbkit import Backend, Server, http

app = Backend("app", servers=[Server("a", "127.0.0.1:{a}"), Server("b", "127.0.0.1:{b}")])

def merge(parts):
    return http.Answer(200, body=b"{label}:" + b",".join(sorted(p.body for p in parts)))

listen = [http.Frontend("tcp:0:interface=127.0.0.1", default=http.ScatterGather(app, merge), name="web", log=False)]
grace = 5
"""


class ScatterReloadTests(TestCase):
    """A reload gives the running ScatterGather the new merge; its target stays the running backend."""

    timeout = 30

    @inlineCallbacks
    def test_reload(self) -> Any:
        """The answers change with the merge; the target backend and the listener stay the same objects."""
        a, _ = startBackend(self, "a")
        b, _ = startBackend(self, "b")
        path = self.mktemp() + "-site.py"
        writeSite(path, SCATTER_SITE.format(a=a, b=b, label="one"))
        service = fromSiteFile(path, reactor())
        service.startService()
        self.addCleanup(service.stopService)
        [sg] = [be for be in service.backends() if isinstance(be, ScatterGather)]
        self.addCleanup(sg.close)
        target = sg.target
        port = frontendPort(service)
        client = Client(self)
        code, body, _ = yield client.get(port)
        self.assertEqual((code, body), (200, "one:a,b"))
        listener = sg._port
        writeSite(path, SCATTER_SITE.format(a=a, b=b, label="two"))
        changes = yield service.reload()
        self.assertIn("backend app-scatter: merge 'merge' -> 'merge'", changes)
        yield client.fresh()
        code, body, _ = yield client.get(port)
        self.assertEqual((code, body), (200, "two:a,b"))
        self.assertIs(sg.target, target)
        self.assertIs(sg._port, listener)
        yield client.fresh()
