"""
Circuit breakers through real sockets: a full queue (C{maxPending}) turns
the next request away at once, and the trip is counted on the stats page, in C{/stats.json} and in C{/metrics}.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from lbkit import Backend, Server, stats
from lbkit.balance import First
from tests import test_stats
from tests.test_examples import EXAMPLES, curl, needCurl, startProcess, stopCleanly, twistd
from tests.test_http_integration import HTTPTestCase
from tests.test_stats import Client

REQUEST = b"GET /%d HTTP/1.1\r\nHost: app\r\n\r\n"


class _Holding(Protocol):
    """A server that holds each request until the test releases them all, then answers at once."""

    def __init__(self, server: _HeldServer) -> None:
        self.server = server

    def dataReceived(self, data: bytes) -> None:
        for _ in range(data.count(b"\r\n\r\n")):
            self.server.arrived(self)

    def answer(self) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


class _HeldServer:
    def __init__(self) -> None:
        self.held: list[_Holding] = []
        self.released = False
        self.first: Deferred[None] = Deferred()

    def arrived(self, conn: _Holding) -> None:
        if self.released:
            conn.answer()
            return
        self.held.append(conn)
        if not self.first.called:
            self.first.callback(None)

    def release(self) -> None:
        self.released = True
        for conn in self.held:
            conn.answer()


class _Pages:
    """What L{test_stats.MetricsTests.samples} asks of its test: a client, and assertions."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.assertEqual = client.test.assertEqual
        self.assertTrue = client.test.assertTrue


class _HeldRequests(HTTPTestCase):
    """Three requests at a server that holds them (L{statuses})."""

    timeout = 30

    @inlineCallbacks
    def statuses(self, port: int, held: _HeldServer) -> Any:
        """
        Send three requests on three connections: the first once nothing
        else is in flight, the other two as soon as the server holds the
        first.  The first answer to come back (before the server lets
        anything go) and all three statuses.
        """
        clients = []
        for _ in range(3):
            clients.append((yield self.client(port)))
        answers = [c.responses(1) for c in clients]
        clients[0].send(REQUEST % 0)
        yield held.first
        clients[1].send(REQUEST % 1)
        clients[2].send(REQUEST % 2)
        early: Deferred[Any] = DeferredList([a for a in answers[1:]], fireOnOneCallback=True)  # type: ignore[arg-type]
        (result, _index) = yield early
        [(response, _)] = result
        early_status = response.code
        held.release()
        codes = []
        for a in answers:
            [(response, _)] = yield a
            codes.append(response.code)
        for c in clients:
            c.transport.loseConnection()
        return early_status, sorted(codes)


class MaxPendingTests(_HeldRequests):
    """One server slot, a queue of one: the third request at once gets 503."""

    @inlineCallbacks
    def test_fullQueue(self) -> Any:
        """
        C{maxconn=1} and C{maxPending=1}: with one request at the server and
        one waiting, the third is answered 503 at once; when the server
        answers, the other two get 200.  (HAProxy has no bound on a backend's
        queue: its C{maxqueue} bounds a server's, and the overflow waits in
        the backend's queue; so there is no HAProxy run to compare with.)
        """
        held = _HeldServer()
        port, _ = self.custom(lambda: _Holding(held))
        app = Backend("app", [Server("s1", f"127.0.0.1:{port}", maxconn=1)], maxPending=1)
        front = self.frontend(default=app)
        self.assertEqual((yield self.statuses(front, held)), (503, [200, 200, 503]))
        self.assertEqual(app.breakers.trips["maxPending"], 1)

    @inlineCallbacks
    def test_tripsShown(self) -> Any:
        """The trip is on the stats page, in /stats.json and in /metrics."""
        held = _HeldServer()
        port, _ = self.custom(lambda: _Holding(held))
        app = Backend("app", [Server("s1", f"127.0.0.1:{port}", maxconn=1)], maxPending=1, maxRetries=2)
        front = self.frontend(default=app)
        yield self.statuses(front, held)
        page = stats.Page("tcp:0:interface=127.0.0.1")
        page.bindSite([self._frontends[-1], page])
        client = Client(self, page, Clock())  # type: ignore[arg-type]
        [be] = client.json()["backends"]
        self.assertEqual(be["breakers"]["trips"], {"maxPending": 1, "maxRequests": 0, "maxRetries": 0,
                                                   "retryBudget": 0})
        self.assertEqual((be["breakers"]["maxPending"], be["breakers"]["maxRetries"]), (1, 2))
        samples = test_stats.MetricsTests.samples(_Pages(client))  # type: ignore[arg-type]
        self.assertEqual(samples[("lbkit_backend_breaker_trips_total", (("backend", "app"), ("limit", "maxPending")))], 1)
        _, body = client.get("/")
        self.assertIn("Circuit breakers: maxPending 1 (tripped 1); maxRetries 2 (tripped 0); retried: none",
                      body.decode())


class _Busy(Protocol):
    """A server that answers every request 503."""

    def dataReceived(self, data: bytes) -> None:
        for _ in range(data.count(b"\r\n\r\n")):
            self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")


class MaxRequestsAndRetryTests(_HeldRequests):
    """C{maxRequests} and C{retryOn} through real sockets."""

    @inlineCallbacks
    def test_maxRequests(self) -> Any:
        """
        Two servers, C{maxRequests=1}: while one request is at a server, the
        next two are answered 503 at once (logged C{PC}), though the other
        server is free; the first gets its 200.
        """
        held = _HeldServer()
        ports = [self.custom(lambda: _Holding(held))[0] for _ in range(2)]
        app = Backend("app", [Server(f"s{i}", f"127.0.0.1:{p}") for i, p in enumerate(ports)], maxRequests=1)
        front = self.frontend(default=app, log=True)
        logged: list[dict[str, Any]] = []
        self._frontends[-1].factories[0].logAccess = logged.append
        early, codes = yield self.statuses(front, held)
        self.assertEqual((early, codes), (503, [200, 503, 503]))
        self.assertEqual(app.breakers.trips["maxRequests"], 2)
        self.assertIn("PC", [f["termination"][:2] for f in logged if f["status"] == 503])

    @inlineCallbacks
    def test_retryOnStatus(self) -> Any:
        """
        C{retryOn=(503,)}, balance C{First} (the busy server is always asked
        first): a GET it answers 503 is sent to the other, and the client
        gets its 200; a POST with a body is not sent again (lbkit does not
        keep bodies), and the client gets the 503.
        """
        busy = self.custom(_Busy)[0]
        good, _ = self.site("good")
        app = Backend("app", [Server("busy", f"127.0.0.1:{busy}"), Server("good", f"127.0.0.1:{good}")],
                      retryOn=(503,), balance=First())
        front = self.frontend(default=app)
        c = yield self.client(front)
        c.send(b"GET /a HTTP/1.1\r\nHost: app\r\n\r\n")
        [(response, _)] = yield c.responses(1)
        self.assertEqual(response.code, 200)
        c.send(b"POST /b HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n\r\nabc")
        [(_, _), (response, body)] = yield c.responses(2)
        c.transport.loseConnection()
        self.assertEqual((response.code, body), (503, b"busy"))
        self.assertEqual(app.breakers.retried, {"503": 1})


class ExampleTests(TestCase):
    """examples/breakers.py, started as a user would (twistd lbkit)."""

    timeout = 30

    @inlineCallbacks
    def test_example(self) -> Any:
        """Requests that land on the dead app2 are retried on app1; the retries are counted on /stats.json."""
        needCurl()
        cwd = tempfile.mkdtemp(prefix="lbkit-ex-")
        self.addCleanup(shutil.rmtree, cwd, True)
        watcher, process = startProcess(self, twistd("lbkit", "--config", os.path.join(EXAMPLES, "breakers.py")), cwd)
        for label in ("frontend breakers", "demo server app1", "stats page"):
            yield watcher.waitFor(f"{label} listening on")
        answers = []
        for _ in range(4):
            answers.append((yield curl("http://127.0.0.1:8095/")).strip())
        self.assertEqual(answers, ["app1"] * 4)
        [be] = json.loads((yield curl("http://127.0.0.1:8407/stats.json")))["backends"]
        self.assertEqual((be["breakers"]["maxPending"], be["breakers"]["maxRetries"]), (10, 2))
        self.assertGreaterEqual(be["breakers"]["retried"].get("connect-failure", 0), 1)
        metrics = yield curl("http://127.0.0.1:8407/metrics")
        self.assertIn('lbkit_backend_breaker_trips_total{backend="app",limit="maxPending"} 0.0', metrics)
        yield stopCleanly(self, watcher, process)
