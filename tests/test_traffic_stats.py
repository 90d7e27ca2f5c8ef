"""
Stick tables on the stats page, in C{/stats.json}, C{/metrics} and on the
command socket: in memory (L{StubTreq}, L{execute}), then a real page and
socket in front of a real frontend whose table counted real requests.
"""

from __future__ import annotations

import json
import os
from typing import Any, cast

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbkit import Backend, Server, stats, tcp
from lbkit.http import deny
from lbkit.stats._socket import execute
from lbkit.traffic import RateLimit, Table, above, tablesOf, track
from tests.test_http_integration import backend, reactor
from tests.test_stats import Client
from tests.test_stats_socket import _Collect
from tests.test_traffic_live import TrafficTestCase, freshPeriod


def makeSite() -> tuple[stats.Page, Table, Clock]:
    """A tcp frontend tracking table "src" (two keys counted), and a bound page."""
    clock = Clock()
    clock.advance(1000)
    table = Table("src", counters=["conn_cur", "conn_rate(10s)"], clock=clock)
    web = Backend("web", [Server("web1", "127.0.0.1:9031")])
    frontend = tcp.Frontend("tcp:8090:interface=127.0.0.1", backend=web, name="web-in",
                            rules=[track(table), tcp.reject(when=above(table, "conn_rate", 100))])
    for key, n in (("192.0.2.1", 3), ("192.0.2.2", 1)):
        for _ in range(n):
            entry = table.entry(key, clock.seconds())
            entry[3] += 1
    page = stats.Page("tcp:8404:interface=127.0.0.1")
    page.bindSite([frontend, page])
    page.collector.start(clock)
    return page, table, clock


class InMemoryTests(SynchronousTestCase):
    """What each view shows of a table."""

    def setUp(self) -> None:
        self.page, self.table, self.clock = makeSite()
        self.client = Client(self, self.page, self.clock)

    def test_json(self) -> None:
        """/stats.json has a tables list: name, key, bounds, counters and the newest keys."""
        [t] = self.client.json()["tables"]
        self.assertEqual((t["name"], t["key"], t["size"], t["used"], t["expire"]), ("src", "bySource", 100000, 2, 60.0))
        self.assertEqual(t["counters"], {"conn_cur": 0.0, "conn_rate": 10.0})
        self.assertEqual([(e["key"], e["conn_rate"]) for e in t["entries"]], [("192.0.2.2", 1), ("192.0.2.1", 3)])

    def test_html(self) -> None:
        """The page has a section per table, a row per key."""
        response, body = self.client.get("/")
        self.assertIn(b'id="table-src"', body)
        self.assertIn(b"Table src (bySource): 2 of 100000 keys", body)
        self.assertIn(b"192.0.2.1", body)

    def test_metrics(self) -> None:
        """/metrics has the keys held, the size and the evictions of each table."""
        _, body = self.client.get("/metrics")
        samples = {(s.name, s.labels.get("table")): s.value
                   for f in text_string_to_metric_families(body.decode()) for s in f.samples}
        self.assertEqual(samples[("lbkit_table_keys", "src")], 2)
        self.assertEqual(samples[("lbkit_table_size", "src")], 100000)
        self.assertEqual(samples[("lbkit_table_evicted_total", "src")], 0)

    def test_socket(self) -> None:
        """show tables, show table NAME and clear table NAME [KEY] on the command socket."""
        events: list[dict[str, Any]] = []
        self.page.collector.log = Logger(namespace="lbkit.admin", observer=cast(ILogObserver, events.append))

        def cmd(line: str) -> str:
            answer = execute(self.page.collector, "uid 1000", line)
            assert isinstance(answer, str)
            return answer

        self.assertEqual(cmd("show tables").splitlines()[1], "src bySource 100000 2 conn_cur,conn_rate(10s)")
        lines = cmd("show table src").splitlines()
        self.assertEqual(lines[0], "# table: src, key: bySource, size:100000, used:2, expire:60s, evicted:0")
        self.assertEqual(lines[2], "key=192.0.2.1 exp=60s conn_cur=0 conn_rate(10s)=3")
        self.assertEqual(cmd("clear table src 192.0.2.1"), "cleared 1")
        self.assertEqual(cmd("clear table src"), "cleared 1")
        self.assertEqual(cmd("clear table nope"), "error: no table 'nope'")
        self.assertEqual(len(self.table), 0)
        self.assertIn("clear table", events[0]["log_format"])
        self.assertIn("clear table NAME [KEY]", cmd("help"))


class RealSocketTests(TrafficTestCase):
    """A real page and command socket show what a real http frontend's table counted."""

    @defer.inlineCallbacks
    def test_pageAndSocket(self) -> Any:
        """Requests through a RateLimit show in /stats.json, and show table over the UNIX socket."""
        limit = RateLimit(2, 60.0, name="perclient")
        table = Table("seen", counters=["http_req_rate(10s)", "http_err_rate(10s)", "conn_cur"])
        port = self.frontend(default=backend("app", [self.site("app1")[0]]),
                             requestRules=[track(table), limit, deny(when=above(table, "http_err_rate", 5))])
        yield freshPeriod(60.0, 5.0)  # exact counts below: within one wall-clock period (of both 10 s and 60 s)
        statuses = yield self.statuses(port, 3, "127.0.0.9")
        self.assertEqual(statuses, [200, 200, 429])
        path = os.path.abspath(self.mktemp() + ".sock")
        page = stats.Page("tcp:0:interface=127.0.0.1", socket=path)
        page.bindSite(self._frontends + [page])
        service = page.makeService(reactor)
        service.startService()
        self.addCleanup(service.stopService)
        client = _Collect()
        yield connectProtocol(UNIXClientEndpoint(reactor, path), client)
        client.transport.write(b"show table seen\nshow table perclient\nquit\n")  # type: ignore[union-attr]
        answer = (yield client.done).decode()
        self.assertIn("key=127.0.0.9 exp=60s http_req_rate(10s)=3 http_err_rate(10s)=1 conn_cur=0", answer)
        self.assertIn("# table: perclient, key: bySource", answer)
        self.assertIn("http_req_rate(60s)=3", answer)
        snapshot = page.collector.snapshot()
        self.assertEqual([t["name"] for t in snapshot["tables"]], ["seen", "perclient"])
        json.dumps(snapshot)


class WorkersTests(SynchronousTestCase):
    """With workers, the supervisor's page shows the sum of what the workers' tables reported."""

    def test_reportedTables(self) -> None:
        """Two workers' reports summed: keys merged, counts added, sizes added; clear is refused."""
        from lbkit._workerproc import applyCounters, countersOf, sumCounters

        reports = []
        for hits in (2, 3):
            page, table, clock = makeSite()
            for _ in range(hits):
                table.entry("192.0.2.9", clock.seconds())[3] += 1
            reports.append(countersOf(page.collector.listen))
        supervisor, table, clock = makeSite()
        table.clear()
        applyCounters(supervisor.collector.listen, sumCounters(reports, {}))
        [t] = supervisor.collector.snapshot()["tables"]
        self.assertEqual(t["used"], 6)  # three keys in each worker
        rates = {e["key"]: e["conn_rate"] for e in t["entries"]}
        self.assertEqual(rates, {"192.0.2.9": 5, "192.0.2.1": 6, "192.0.2.2": 2})
        answer = execute(supervisor.collector, "uid 0", "clear table src")
        self.assertIn("error: with workers", answer)  # type: ignore[arg-type]
        self.assertIn("key=192.0.2.9", execute(supervisor.collector, "uid 0", "show table src"))  # type: ignore[arg-type]
        ended = sumCounters(reports, {}, gauges=False)
        self.assertEqual(ended["tables"], {})


WORKERS_SITE = """
from lbkit import Backend, Server, http, traffic
from lbkit.stats import Page

web = Backend("web", servers=[{servers}])
clients = traffic.Table("clients", counters=["conn_cur", "http_req_rate(60s)"])
listen = [
    http.Frontend("tcp:{front}:interface=127.0.0.1", default=web, name="front", log=False,
                  requestRules=[traffic.track(clients)]),
    Page("tcp:{stats}:interface=127.0.0.1", socket={socket!r}),
]
"""


class RealWorkersTests(TestCase):
    """Two real worker processes: the supervisor's page shows what both counted in the table."""

    from tests.test_workers import WorkersTests as _W

    timeout = 120
    setUp = _W.setUp
    backend = _W.backend
    start = _W.start
    get = _W.get
    command = _W.command

    @defer.inlineCallbacks
    def test_tableAcrossWorkers(self) -> Any:
        """Twenty requests on new connections: /stats.json and show table count all twenty."""
        from tests.test_store import waitUntil

        path = os.path.abspath(self.mktemp()) + ".py"
        with open(path, "w") as f:
            f.write(WORKERS_SITE.format(servers=", ".join(f'Server("{n}", "127.0.0.1:{p}")' for n, p in self.ports.items()),
                                        front=self.front, stats=self.stats, socket=self.socket))
        supervisor = yield self.start(path)
        for _ in range(20):
            code, _ = yield self.get(self.front, "/")
            self.assertEqual(code, 200)
        yield waitUntil(lambda: _rate(supervisor) == 20)  # the workers report every second
        code, body = yield self.get(self.stats, "/stats.json")
        [t] = json.loads(body)["tables"]
        self.assertEqual((t["name"], t["entries"][0]["key"], t["entries"][0]["http_req_rate"]), ("clients", "127.0.0.1", 20))
        answer = yield self.command("show table clients")
        self.assertRegex(answer, rb"key=127\.0\.0\.1 exp=\d+s conn_cur=0 http_req_rate\(60s\)=20\n")


def _rate(supervisor: Any) -> int:
    table = [t for item in supervisor.listen for t in tablesOf(item)][0]
    rows = table.rows()
    return int(rows[0]["http_req_rate"]) if rows else 0
