"""
Request latency per backend and per server (lbkit/_latency.py,
docs/stats.md "Latency"): the ring and its histograms, what the stats
page, C{/stats.json} and C{/metrics} show for requests run on a Clock,
and HAProxy's own averages for the same traffic through real sockets.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from lbkit import Backend, Server, http, stats
from lbkit._latency import BUCKETS, WINDOW, Latency, timeBackend
from lbkit._model import ServerState
from lbkit._workerproc import applyCounters, countersOf, sumCounters
from lbkit.testing import FakeEndpoint, HTTPHarness
from tests import test_workers
from tests.helpers import listen, startHAProxy
from tests.test_stats import Client
from tests.test_tcp import Harness

reactor: Any = _reactor
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def sample(tw: float = 0.0, tc: float = 0.0, tr: float = 0.0, ta: float = 0.0, fresh: bool = True,
           served: bool = True) -> tuple[float, float, float, float, bool, bool]:
    return (tw, tc, tr, ta, fresh, served)


class LatencyTests(SynchronousTestCase):
    """The ring, the histograms and HAProxy's averages."""

    def test_buckets(self) -> None:
        """A sample counts in the first bucket whose bound is not below it, cumulatively."""
        latency = Latency(Latency())
        for total in (0.0005, 0.0006, 0.02, 31.0):
            latency.add(sample(ta=total))
        total = latency.histograms()["total"]
        self.assertEqual(total["count"], 4)
        self.assertEqual(total["buckets"][0], 1)  # le 0.0005
        self.assertEqual(total["buckets"][1], 2)  # le 0.001
        self.assertEqual(total["buckets"][BUCKETS.index(0.025)], 3)
        self.assertEqual(total["buckets"][-2:], [3, 4])  # le 30, +Inf
        self.assertAlmostEqual(total["sum"], 31.0211)

    def test_connectOnlyNewConnections(self) -> None:
        """Pooled connections do not count in the connect histogram, but count 0 in ctime."""
        latency = Latency(Latency())
        latency.add(sample(tc=0.004, tr=0.01, ta=0.02))
        latency.add(sample(tc=0.0, tr=0.01, ta=0.01, fresh=False))
        histograms = latency.histograms()
        self.assertEqual(histograms["connect"]["count"], 1)
        self.assertEqual(histograms["response"]["count"], 2)
        self.assertEqual(latency.averages()["ctime"], 2)

    def test_responseFromRequestHead(self) -> None:
        """The response histogram counts queue, connect and server time; rtime only the server's."""
        latency = Latency(Latency())
        latency.add(sample(tw=0.1, tc=0.2, tr=0.3, ta=0.7))
        self.assertAlmostEqual(latency.histograms()["response"]["sum"], 0.6)
        self.assertEqual(latency.averages(), {"qtime": 100, "ctime": 200, "rtime": 300, "ttime": 700, "samples": 1})

    def test_averagesOverLastWindow(self) -> None:
        """qtime..ttime cover the last 1,024 answered requests only; histograms everything."""
        latency = Latency(Latency())
        for _ in range(WINDOW):
            latency.add(sample(tr=1.0, ta=1.0))
        for _ in range(WINDOW // 2):
            latency.add(sample(tr=2.0, ta=2.0))
        self.assertEqual(latency.averages()["rtime"], 1500)
        self.assertEqual(latency.averages()["samples"], WINDOW)
        self.assertEqual(latency.histograms()["total"]["count"], WINDOW * 3 // 2)

    def test_averagesSkipUnanswered(self) -> None:
        """A request that got no response head is left out of the averages, as HAProxy does."""
        latency = Latency(Latency())
        latency.add(sample(tr=0.01, ta=0.01))
        latency.add(sample(tc=-1.0, tr=-1.0, ta=5.0))
        self.assertEqual(latency.averages()["ttime"], 10)
        self.assertEqual(latency.histograms()["total"]["count"], 2)

    def test_manyWraps(self) -> None:
        """Folding when the ring is full loses nothing."""
        backend = Latency()
        latency = Latency(backend)
        for i in range(3 * WINDOW + 5):
            latency.add(sample(ta=0.001 * (i % 7)))
        self.assertEqual(latency.histograms()["total"]["count"], 3 * WINDOW + 5)
        self.assertEqual(backend.averages()["samples"], WINDOW)

    def test_backend(self) -> None:
        """A backend's histograms are its servers' plus the requests no server took; its averages cover all."""
        backend = Latency()
        one, two = Latency(backend), Latency(backend)
        one.add(sample(tr=0.01, ta=0.01))
        two.add(sample(tr=0.03, ta=0.03))
        backend.add(sample(tw=0.5, tc=-1.0, tr=-1.0, ta=0.5, fresh=False, served=False))
        self.assertEqual(backend.histograms([one, two])["total"]["count"], 3)
        self.assertEqual(backend.histograms([one, two])["queue"]["count"], 3)
        self.assertEqual(backend.averages()["rtime"], 20)
        self.assertEqual(one.histograms()["total"]["count"], 1)


def pageFor(testCase: SynchronousTestCase, servers: int = 1) -> tuple[HTTPHarness, Client, Backend]:
    backend = Backend("app", [Server(f"web{i + 1}", FakeEndpoint()) for i in range(servers)])
    frontend = http.Frontend("tcp:8080", default=backend, name="fe")
    page = stats.Page("tcp:8404:interface=127.0.0.1")
    page.bindSite([frontend, page])
    harness = HTTPHarness(frontend)
    testCase.addCleanup(harness.close)
    return harness, Client(testCase, page, harness.reactor), backend


def metrics(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response, body = client.get("/metrics")
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def le(labels: tuple[tuple[str, str], ...], bound: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((*labels, ("le", bound))))


class PageTests(SynchronousTestCase):
    """Requests through an http frontend on a Clock, read from the stats page."""

    def request(self, harness: HTTPHarness, connect: float, respond: float) -> None:
        client = harness.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        harness.reactor.advance(connect)
        server = harness.serverFor(client)
        harness.reactor.advance(respond)
        server.respond(OK)

    def test_notTimedWithoutPage(self) -> None:
        """Without a stats page, servers have no Latency: nothing is timed."""
        backend = Backend("app", [Server("web1", FakeEndpoint())])
        harness = HTTPHarness(http.Frontend("tcp:8080", default=backend))
        self.addCleanup(harness.close)
        self.request(harness, 0.01, 0.1)
        self.assertIsNone(backend.servers[0].latency)

    def test_statsJSON(self) -> None:
        """/stats.json shows the averages and histograms of each server and backend."""
        harness, client, _ = pageFor(self)
        self.request(harness, 0.01, 0.1)
        self.request(harness, 0.0, 0.03)  # pooled: no connect
        [be] = client.json()["backends"]
        times = be["servers"][0]["times"]
        self.assertEqual({k: times[k] for k in ("qtime", "ctime", "rtime", "ttime", "samples")},
                         {"qtime": 0, "ctime": 5, "rtime": 65, "ttime": 70, "samples": 2})
        self.assertEqual(times["histograms"]["connect"]["count"], 1)
        response = times["histograms"]["response"]
        self.assertEqual(response["buckets"][BUCKETS.index(0.05)], 1)
        self.assertEqual(response["buckets"][BUCKETS.index(0.25)], 2)
        self.assertEqual(be["times"]["histograms"], times["histograms"])
        self.assertEqual(be["times"]["rtime"], 65)

    def test_metrics(self) -> None:
        """/metrics has the histograms and HAProxy's averages, per backend and per server."""
        harness, client, _ = pageFor(self)
        self.request(harness, 0.002, 0.2)
        m = metrics(client)
        server = (("backend", "app"), ("server", "web1"))
        self.assertEqual(m[("lbkit_server_response_time_seconds_bucket", le(server, "0.1"))], 0)
        self.assertEqual(m[("lbkit_server_response_time_seconds_bucket", le(server, "0.25"))], 1)
        self.assertEqual(m[("lbkit_server_response_time_seconds_count", server)], 1)
        self.assertAlmostEqual(m[("lbkit_server_total_time_seconds_sum", server)], 0.202)
        self.assertEqual(m[("lbkit_server_connect_time_seconds_bucket", le(server, "0.0025"))], 1)
        self.assertEqual(m[("lbkit_backend_queue_time_seconds_count", (("backend", "app"),))], 1)
        self.assertAlmostEqual(m[("lbkit_server_response_time_average_seconds", server)], 0.2)
        self.assertAlmostEqual(m[("lbkit_backend_total_time_average_seconds", (("backend", "app"),))], 0.202)

    def test_noServer(self) -> None:
        """A request no server takes counts for its backend, not for any server."""
        harness, client, backend = pageFor(self)
        backend.servers[0].setState(ServerState.DOWN)
        harness.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [be] = client.json()["backends"]
        self.assertEqual(be["times"]["histograms"]["total"]["count"], 1)
        self.assertEqual(be["servers"][0]["times"]["histograms"]["total"]["count"], 0)
        self.assertEqual(be["times"]["samples"], 0)

    def test_htmlColumn(self) -> None:
        """The HTML page shows the averages as Q/C/R/T ms."""
        harness, client, _ = pageFor(self)
        self.request(harness, 0.01, 0.1)
        response, body = client.get("/")
        self.assertIn(b"Q/C/R/T ms", body)
        self.assertIn(b">0/10/100/110<", body)


class _Slow(Resource):
    """Answers after C{delay} seconds."""

    isLeaf = True

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def render_GET(self, request: Any) -> Any:
        call = reactor.callLater(self.delay, lambda: (request.write(b"ok"), request.finish()))
        request.notifyFinish().addErrback(lambda _: call.cancel() if call.active() else None)
        return NOT_DONE_YET


HAPROXY = """
global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind {bind}
    default_backend app
backend app
    stats enable
    stats uri /haproxy-stats
    server web1 127.0.0.1:%(port)d
"""


class HAProxyTests(TestCase):
    """The same traffic through HAProxy and lbkit gives the same averages."""

    timeout = 30

    @inlineCallbacks
    def get(self, port: int, path: str = "/") -> Any:
        from twisted.web.client import Agent, readBody

        response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
        body = yield readBody(response)
        return body

    @inlineCallbacks
    def test_sameAsHAProxy(self) -> Any:
        """rtime and ttime of a server that answers in 80 ms agree with HAProxy's, within 25 ms."""
        site = Site(_Slow(0.08))
        serverPort = listen(self, reactor, site)
        haproxyPort, _ = startHAProxy(self, reactor, HAPROXY % {"port": serverPort})
        backend = Backend("app", [Server("web1", f"127.0.0.1:{serverPort}")])
        frontend = http.Frontend("tcp:0:interface=127.0.0.1", default=backend, name="fe", log=False)
        page = stats.Page("tcp:0:interface=127.0.0.1")
        page.bindSite([frontend, page])
        factory = frontend.buildFactory(reactor)
        lbkitPort = listen(self, reactor, factory)
        self.addCleanup(factory.stopFactory)
        for port in (haproxyPort, lbkitPort):
            for _ in range(4):
                body = yield self.get(port)
                self.assertEqual(body, b"ok")
        table = yield self.get(haproxyPort, "/haproxy-stats;csv")
        rows = list(csv.DictReader(io.StringIO(table.decode().lstrip("# "))))
        theirs = next(r for r in rows if r["pxname"] == "app" and r["svname"] == "web1")
        client = Client(self, page, reactor)  # type: ignore[arg-type]
        ours = client.json()["backends"][0]["servers"][0]["times"]
        for key in ("rtime", "ttime"):
            self.assertTrue(70 <= ours[key] <= 130, (key, ours))
            self.assertLessEqual(abs(ours[key] - int(theirs[key])), 25, (key, ours, theirs))
        self.assertEqual(ours["samples"], 4)


class TCPTests(SynchronousTestCase):
    """tcp mode: connections are timed as HAProxy times them (no response: rtime 0)."""

    def test_connectionTimed(self) -> None:
        """A relayed connection adds its queue, connect and total times; a refused one only to its backend."""
        endpoint = FakeEndpoint()
        server = Server("a", endpoint)
        h = Harness(self, [server])
        page = stats.Page("tcp:8404")
        page.bindSite([h.frontend, page])
        proto, _ = h.accept()
        h.reactor.advance(0.004)
        endpoint.succeed()
        h.reactor.advance(0.5)
        h.end(proto)
        server.setState(ServerState.MAINT)
        proto, _ = h.accept()
        h.end(proto)
        [be] = page.collector.snapshot()["backends"]
        times = be["servers"][0]["times"]
        self.assertEqual({k: times[k] for k in ("qtime", "ctime", "rtime", "ttime", "samples")},
                         {"qtime": 0, "ctime": 4, "rtime": 0, "ttime": 504, "samples": 1})
        self.assertEqual(times["histograms"]["connect"]["count"], 1)
        self.assertEqual(times["histograms"]["response"]["count"], 0)
        self.assertEqual(be["times"]["histograms"]["total"]["count"], 2)
        self.assertEqual(be["times"]["samples"], 1)


class WorkerTests(TestCase):
    """With worker processes, the supervisor's page shows the workers' latency."""

    timeout = 120
    setUp = test_workers.WorkersTests.setUp
    backend = test_workers.WorkersTests.backend
    writeSite = test_workers.WorkersTests.writeSite
    start = test_workers.WorkersTests.start
    get = test_workers.WorkersTests.get

    def test_reportsSummed(self) -> None:
        """Workers' histograms add up; the averages cover each live worker's window, not an ended one's."""
        sites = []
        for ms in (10, 30):
            web = Backend("web", servers=[Server("a", "127.0.0.1:1")])
            timeBackend(web)
            web.servers[0].latency.add(sample(tr=ms / 1000, ta=ms / 1000))  # type: ignore[union-attr]
            sites.append([http.Frontend("tcp:0", default=web)])
        reports = [countersOf(site) for site in sites]
        mine = Backend("web", servers=[Server("a", "127.0.0.1:1")])
        timeBackend(mine)
        applyCounters([http.Frontend("tcp:0", default=mine)], sumCounters(reports, {}))
        server = mine.servers[0].latency
        assert server is not None
        self.assertEqual(server.histograms()["total"]["count"], 2)
        self.assertEqual(server.averages()["rtime"], 20)
        ended = sumCounters([reports[0]], {}, gauges=False)
        applyCounters([http.Frontend("tcp:0", default=mine)], sumCounters([reports[1]], ended))
        self.assertEqual(server.histograms()["total"]["count"], 2)
        self.assertEqual(server.averages()["rtime"], 30)

    @inlineCallbacks
    def test_workersTimed(self) -> Any:
        """Requests served by two worker processes are timed on the supervisor's /stats.json and /metrics."""
        supervisor = yield self.start(self.writeSite())
        for _ in range(6):
            code, body = yield self.get(self.front)
            self.assertEqual(code, 200)
        yield supervisor.collect()
        code, body = yield self.get(self.stats, "/stats.json")
        [be] = json.loads(body)["backends"]
        self.assertEqual(be["times"]["histograms"]["total"]["count"], 6)
        self.assertEqual(be["times"]["samples"], 6)
        self.assertEqual(sum(s["times"]["samples"] for s in be["servers"]), 6)
        code, body = yield self.get(self.stats, "/metrics")
        self.assertIn(b'lbkit_backend_total_time_seconds_count{backend="web"} 6.0', body)
