"""
Live changes, explanations and previews through the command socket and
the admin API, in memory (docs/beyond.md).
"""

from __future__ import annotations

import json
from typing import Any, cast

from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Context, Server, ServerState, http, stats, tcp
from lbkit.balance import URI, LeastConn
from lbkit.stats._socket import execute
from tests.test_stats import Client
from tests.test_stats_admin import ADMIN


def makeSite(admin: stats.Admin | None = None) -> tuple[stats.Page, Backend, Backend]:
    """An http frontend: /static to "static" (uri hash), the rest to "app"."""
    app = Backend("app", [Server("a1", "127.0.0.1:9201"), Server("a2", "127.0.0.1:9202")])
    static = Backend("static", [Server(f"c{i}", f"127.0.0.1:920{i + 2}") for i in range(1, 4)],
                     balance=URI(hashType="consistent"))
    frontend = http.Frontend("tcp:8160:interface=127.0.0.1", name="web",
                             routes=[http.Route(http.pathBegins("/static"), static)], default=app)
    raw = tcp.Frontend("tcp:8162:interface=127.0.0.1", backend=app, name="raw")
    page = stats.Page("tcp:8161:interface=127.0.0.1", admin=admin)
    page.bindSite([frontend, raw, page])
    return page, app, static


class SocketTests(SynchronousTestCase):
    """The command socket's live commands."""

    def setUp(self) -> None:
        self.page, self.app, self.static = makeSite()
        self.clock = Clock()
        self.page.collector.start(self.clock)
        self.events: list[dict[str, Any]] = []
        self.page.collector.log = Logger(namespace="lbkit.admin", observer=cast(ILogObserver, self.events.append))

    def cmd(self, line: str) -> Any:
        return execute(self.page.collector, "uid 1000", line)

    def test_addAndRemoveServer(self) -> None:
        """add server joins a server; del server answers once it drained and left."""
        self.assertEqual(self.cmd("add server app/a3 127.0.0.1:9209 2"), "server a3 added (127.0.0.1:9209)")
        self.assertEqual([(s.name, s.weight) for s in self.app.servers][-1], ("a3", 2))
        a3 = self.app.servers[-1]
        a3.active = 1
        d = self.cmd("del server app/a3")
        self.assertIs(a3.state, ServerState.DRAIN)
        self.assertNoResult(d)
        a3.active = 0
        self.clock.advance(0.5)
        self.assertEqual(self.successResultOf(d), "server a3 removed")
        self.assertEqual([s.name for s in self.app.servers], ["a1", "a2"])
        self.assertEqual([e["action"] for e in self.events], ["add-server", "remove-server", "remove-server"])

    def test_drainTimeout(self) -> None:
        """drain server with a timeout answers an error naming what is left."""
        self.app.servers[0].active = 2
        d = self.cmd("drain server app/a1 2")
        self.clock.advance(2)
        self.assertEqual(self.successResultOf(d), "error: server app/a1 still has 2 connections after 2s of draining")

    def test_setBalanceAndPersistence(self) -> None:
        """set balance and set persistence swap them, saying what changed."""
        self.assertIn("balance RoundRobin -> LeastConn", self.cmd("set balance app leastconn"))
        self.assertIsInstance(self.app.balance, LeastConn)
        self.assertEqual(self.cmd("set balance static uri:consistent"), "no change")  # alike, and no table yet
        used = self.static.tryAcquire(Context(request=http.Request(b"GET", b"/static/a", b"HTTP/1.1", [])))
        assert used is not None
        self.static.release(used)
        self.assertEqual(self.cmd("set balance static uri:consistent"), "balance URI took over the state of URI")
        self.assertEqual(self.cmd("set persistence app source:60"), "persistence none -> StickySource")
        self.assertTrue(self.cmd("set balance app nope").startswith("error: unknown balancer 'nope'"))
        self.assertTrue(self.cmd("set persistence app cookie").startswith("error: bad persistence"))

    def test_explainThenRealRequest(self) -> None:
        """explain answers route, backend, server and reasons; the backend's next real pick agrees."""
        lines = self.cmd("explain web GET /static/logo.png from 10.9.9.9 Host: example.com").splitlines()
        self.assertTrue(lines[0].startswith("route: route 1 matched (test_stats_live.py:"), lines[0])
        self.assertEqual(lines[1], "backend: static")
        server = lines[2].split(": ")[1]
        self.assertTrue(lines[3].startswith("reason: uri hash 0x"))
        lines = self.cmd("explain - POST /login").splitlines()
        self.assertEqual(lines[:3], ["route: none of 1 routes matched: default app", "backend: app", "server: a1"])
        self.assertIn(server, {"c1", "c2", "c3"})
        self.assertTrue(self.cmd("explain web GET nopath").startswith("error: path must start with '/'"))

    def test_explainConnection(self) -> None:
        """explain on a tcp frontend: where a connection from that address would go; the next one goes there."""
        lines = self.cmd("explain raw from 10.0.0.9").splitlines()
        self.assertEqual(lines, ["route: backend app", "backend: app", "server: a1",
                                 "reason: roundrobin: a1's turn (weight 1 of 2)"])
        self.assertEqual(self.cmd("explain raw").splitlines()[2], "server: a1")  # nothing moved on
        self.assertIs(self.app.tryAcquire(Context()), self.app.servers[0])
        self.assertTrue(self.cmd("explain nope GET /").startswith("error: no frontend 'nope'"))

    def test_preview(self) -> None:
        """preview prints shares and the keys moving, changing nothing."""
        text = self.cmd("preview static remove c2 add c9 127.0.0.1:9209 weight c1 2")
        lines = text.splitlines()
        self.assertEqual(lines[0], "preview of backend static: weight c1 -> 2, remove c2, add c9 (127.0.0.1:9209)")
        self.assertTrue(any(line.startswith("keys moving: ") for line in lines))
        self.assertEqual([s.name for s in self.static.servers], ["c1", "c2", "c3"])
        self.assertTrue(self.cmd("preview static remove nope").startswith("error: backend 'static' has no server"))

    def test_help(self) -> None:
        """help lists the live commands."""
        self.assertIn("explain FRONTEND|- METHOD PATH", self.cmd("help"))


class AdminAPITests(SynchronousTestCase):
    """The admin API's C{/admin/live}, C{/admin/explain} and C{/admin/preview}."""

    def setUp(self) -> None:
        self.page, self.app, self.static = makeSite(stats.Admin(users={"admin": "secret"}))
        self.clock = Clock()
        self.client = Client(self, self.page, self.clock)
        self.page.collector.log = Logger(namespace="lbkit.admin", observer=cast(ILogObserver, lambda e: None))

    def post(self, path: str, auth: tuple[str, str] = ("admin", "secret")) -> tuple[int, Any]:
        response, body = self.client.request("POST", path, auth=auth, headers=ADMIN)
        return response.code, json.loads(body)

    def test_needsCredentials(self) -> None:
        """Without the right password nothing changes."""
        code, _ = self.post("/admin/live?op=set-balance&backend=app&balance=leastconn", auth=("admin", "x"))
        self.assertEqual(code, 401)
        self.assertNotIsInstance(self.app.balance, LeastConn)

    def test_liveChanges(self) -> None:
        """add-server, set-balance and an immediate remove-server over HTTP."""
        code, body = self.post("/admin/live?op=add-server&backend=app&server=a3&address=127.0.0.1:9208")
        self.assertEqual((code, body), (200, {"ok": True, "done": "server a3 added (127.0.0.1:9208)"}))
        code, body = self.post("/admin/live?op=set-balance&backend=app&balance=leastconn")
        self.assertEqual(code, 200)
        self.assertIsInstance(self.app.balance, LeastConn)
        code, body = self.post("/admin/live?op=remove-server&backend=app&server=a3")
        self.assertEqual((code, body), (200, {"ok": True, "done": "server a3 removed"}))
        code, body = self.post("/admin/live?op=remove-server&backend=app&server=zz")
        self.assertEqual(code, 404)

    def test_explain(self) -> None:
        """/admin/explain answers JSON: route, backend, server, reasons."""
        code, body = self.post("/admin/explain?frontend=web&method=GET&path=/static/x.css&header=Host:+a.example")
        self.assertEqual((code, body["backend"], body["frontend"]), (200, "static", "web"))
        self.assertIn(body["server"], {"c1", "c2", "c3"})

    def test_preview(self) -> None:
        """/admin/preview answers the preview as JSON and as text."""
        code, body = self.post("/admin/preview?backend=static&remove=c3")
        self.assertEqual(code, 200)
        self.assertEqual(set(body["preview"]["movedFrom"]), {"c3"})
        self.assertEqual(body["text"][0], "preview of backend static: remove c3")
