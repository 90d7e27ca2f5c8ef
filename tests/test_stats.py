"""
The stats page: what C{/}, C{/stats.json} and C{/metrics} show, read from
live objects; no sockets (treq's in-memory L{StubTreq}).
"""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from lbkit import Backend, Server, ServerState, stats, tcp
from lbkit.error import ConfigError
from lbkit.interfaces import IListener, IServerListener
from lbkit.service import LoadBalancerService
from lbkit.stats._collect import Collector, _RateMeter
from lbkit.stats._html import formatBytes, formatDuration


class FakeFactory:
    """What a frontend's factory counts."""

    def __init__(self, **counters: Any) -> None:
        self.current = 0
        self.total = 0
        self.bytesIn = 0
        self.bytesOut = 0
        self.__dict__.update(counters)


def makeSite(admin: stats.Admin | None = None) -> tuple[stats.Page, Backend, tcp.Frontend, Clock]:
    """A tcp frontend in front of backend "web" (web1, web2) and a bound page."""
    web = Backend("web", [Server("web1", "127.0.0.1:9031", weight=2), Server("web2", "127.0.0.1:9032")])
    frontend = tcp.Frontend("tcp:8090:interface=127.0.0.1", backend=web, name="web-in")
    page = stats.Page("tcp:8404:interface=127.0.0.1", admin=admin)
    page.bindSite([frontend, page])
    clock = Clock()
    clock.advance(1000)
    return page, web, frontend, clock


class Client:
    """Requests against a page's resource tree, in memory."""

    def __init__(self, test: SynchronousTestCase, page: stats.Page, clock: Clock) -> None:
        self.test = test
        self.treq = StubTreq(page.resource(clock))

    def request(self, method: str, path: str, **kwargs: Any) -> tuple[Any, bytes]:
        d = self.treq.request(method, "http://stats.example" + path, **kwargs)  # type: ignore[attr-defined]
        self.treq.flush()
        response = self.test.successResultOf(d)
        body = self.test.successResultOf(self.treq.content(response))  # type: ignore[attr-defined]
        return response, body

    def get(self, path: str, **kwargs: Any) -> tuple[Any, bytes]:
        return self.request("GET", path, **kwargs)

    def json(self, path: str = "/stats.json") -> Any:
        response, body = self.get(path)
        self.test.assertEqual(response.code, 200)
        self.test.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        return json.loads(body)


class PageTests(SynchronousTestCase):
    def test_interfaces(self) -> None:
        """A Page is an IListener with no backends; its collector is an IServerListener."""
        page = stats.Page("tcp:8404:interface=127.0.0.1")
        self.assertTrue(verifyObject(IListener, page))
        self.assertEqual(list(page.backends()), [])
        self.assertTrue(verifyObject(IServerListener, page.collector))

    def test_badArguments(self) -> None:
        """Wrong arguments are ConfigErrors naming the problem."""
        self.assertRaises(ConfigError, stats.Page, 8404)
        self.assertRaises(ConfigError, stats.Page, "tcp:8404", admin={"admin": "secret"})
        self.assertRaises(ConfigError, stats.Page, "tcp:8404", refresh=0)
        self.assertRaises(ConfigError, stats.Page, "tcp:8404", socketMode=0o1777)
        self.assertRaises(ConfigError, stats.Admin, users={})
        self.assertRaises(ConfigError, stats.Admin, users={"a:b": "secret"})
        self.assertRaises(ConfigError, stats.Admin, users={"admin": ""})

    def test_publicNames(self) -> None:
        """lbkit.stats exports Page and Admin."""
        self.assertEqual(sorted(stats.__all__), ["Admin", "Page"])

    def test_bindsFromParentService(self) -> None:
        """
        A page nobody called bindSite on finds the listen list of the
        LoadBalancerService it runs in.
        """
        web = Backend("web", [Server("web1", "127.0.0.1:9031")])
        frontend = tcp.Frontend("tcp:8090:interface=127.0.0.1", backend=web)
        page = stats.Page("tcp:8404:interface=127.0.0.1")
        reactor = MemoryReactorClock()
        service = LoadBalancerService([frontend, page], reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual([b.name for b in page.collector.backends()], ["web"])
        self.assertEqual(sorted(p[0] for p in reactor.tcpServers), [8090, 8404])


class JSONTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.page, self.web, self.frontend, self.clock = makeSite()
        self.client = Client(self, self.page, self.clock)

    def test_schema(self) -> None:
        """/stats.json has the documented top-level keys, one frontend and one backend."""
        snap = self.client.json()
        self.assertEqual(set(snap), {"version", "time", "uptime", "frontends", "backends", "accessLog"})
        self.assertEqual(snap["version"], 1)
        [fe] = snap["frontends"]
        self.assertEqual((fe["name"], fe["mode"], fe["backends"]), ("web-in", "tcp", ["web"]))
        [be] = snap["backends"]
        self.assertEqual(be["name"], "web")
        self.assertEqual(be["balance"], "RoundRobin")
        self.assertEqual([s["name"] for s in be["servers"]], ["web1", "web2"])
        server = be["servers"][0]
        self.assertEqual(
            set(server),
            {
                "name", "backend", "id", "address", "state", "stateSeconds", "weight",
                "initialWeight", "effectiveWeight", "backup", "sessions", "requests", "bytes",
                "responses", "errors", "retries", "redispatches", "check", "slowstart", "times", "timeline",
            },
        )
        self.assertEqual(set(server["sessions"]), {"current", "max", "limit", "total", "rate"})
        self.assertEqual((server["state"], server["weight"], server["address"]), ("UP", 2, "127.0.0.1:9031"))
        self.assertIsNone(server["responses"])
        self.assertIsNone(server["requests"])

    def test_liveServerCounters(self) -> None:
        """Server counters are read when the page is asked, not copied earlier."""
        web1 = self.web.servers[0]
        self.client.json()
        web1.active, web1.maxActive, web1.total = 3, 7, 42
        web1.bytesIn, web1.bytesOut = 100, 2000
        web1.connectFailures, web1.retries = 4, 2
        web1.maxconn = 10
        server = self.client.json()["backends"][0]["servers"][0]
        self.assertEqual(server["sessions"], {"current": 3, "max": 7, "limit": 10, "total": 42, "rate": 0.0})
        self.assertEqual(server["bytes"], {"in": 100, "out": 2000})
        self.assertEqual(server["errors"]["connect"], 4)
        self.assertEqual(server["retries"], 2)
        backend = self.client.json()["backends"][0]
        self.assertEqual(backend["sessions"]["current"], 3)
        self.assertEqual(backend["bytes"], {"in": 100, "out": 2000})

    def test_frontendCountersFromFactories(self) -> None:
        """A frontend's counters are the sums over its C{factories}."""
        self.frontend.factories = [FakeFactory(current=2, total=5, bytesIn=10, bytesOut=20),  # type: ignore[attr-defined]
                                   FakeFactory(current=1, total=1, bytesIn=1, bytesOut=2)]
        fe = self.client.json()["frontends"][0]
        self.assertEqual(fe["sessions"]["current"], 3)
        self.assertEqual(fe["sessions"]["total"], 6)
        self.assertEqual(fe["bytes"], {"in": 11, "out": 22})

    def test_rates(self) -> None:
        """The session rate is the growth of C{total} per second between reads."""
        web1 = self.web.servers[0]
        self.client.json()
        self.clock.advance(5)
        web1.total = 50
        self.assertEqual(self.client.json()["backends"][0]["servers"][0]["sessions"]["rate"], 10.0)

    def test_httpCounters(self) -> None:
        """Response classes, request totals and the last check are shown when the objects have them."""
        web1 = self.web.servers[0]
        web1.responses = {"1xx": 0, "2xx": 9, "3xx": 0, "4xx": 1, "5xx": 2, "other": 0}  # type: ignore[attr-defined]
        web1.requests = 12  # type: ignore[attr-defined]
        web1.lastCheck = "L7OK/200 in 3ms"  # type: ignore[attr-defined]
        web1.redispatches = 3  # type: ignore[attr-defined]
        be = self.client.json()["backends"][0]
        server = be["servers"][0]
        self.assertEqual(server["responses"]["2xx"], 9)
        self.assertEqual(server["requests"]["total"], 12)
        self.assertEqual(server["check"]["last"], "L7OK/200 in 3ms")
        web1.lastCheck = {"status": "failed", "reason": "Layer4 timeout", "durationMs": 1000, "time": 0}  # type: ignore[attr-defined]
        check = self.client.json()["backends"][0]["servers"][0]["check"]
        self.assertEqual(check, {"configured": False, "enabled": True, "last": "Layer4 timeout in 1000ms",
                                 "status": "failed", "durationMs": 1000})
        self.assertEqual(server["redispatches"], 3)
        self.assertEqual(be["responses"]["5xx"], 2)
        self.web.redispatches = 5
        self.assertEqual(self.client.json()["backends"][0]["redispatches"], 5)

    def test_stateAndTimeInState(self) -> None:
        """A state change is shown with the seconds since it happened."""
        self.clock.advance(10)
        self.web.servers[1].setState(ServerState.DOWN, "test")
        self.clock.advance(65)
        be = self.client.json()["backends"][0]
        self.assertEqual(be["servers"][1]["state"], "DOWN")
        self.assertEqual(be["servers"][1]["stateSeconds"], 65)
        self.assertEqual(be["servers"][0]["stateSeconds"], 75)
        self.assertEqual(be["serversUp"], 1)

    def test_slowStart(self) -> None:
        """Slow-start progress is a percentage while ramping, else null."""
        web1 = self.web.servers[0]
        self.assertIsNone(self.client.json()["backends"][0]["servers"][0]["slowstart"]["percent"])
        web1.rampFactor = 0.25
        self.assertEqual(self.client.json()["backends"][0]["servers"][0]["slowstart"]["percent"], 25)


class HTMLTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.page, self.web, self.frontend, self.clock = makeSite()
        self.client = Client(self, self.page, self.clock)

    def html(self, path: str = "/") -> str:
        response, body = self.client.get(path)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/html; charset=utf-8"])
        return body.decode("utf-8")

    def test_tablesAndRows(self) -> None:
        """One table per frontend and backend, one row per server with its state and weight."""
        html = self.html()
        self.assertTrue(html.startswith("<!DOCTYPE html>"))
        self.assertIn('id="frontend-web-in"', html)
        self.assertIn('id="backend-web"', html)
        self.assertIn('<tr class="server" id="server-web-web1"><td class="name">web1</td>'
                      '<td class="state UP">UP 0s</td><td>2</td>', html)
        self.assertIn('id="server-web-web2"', html)

    def test_refreshes(self) -> None:
        """The page reloads itself every few seconds."""
        self.assertIn('<meta http-equiv="refresh" content="3" />', self.html())

    def test_downWithDuration(self) -> None:
        """A DOWN server is coloured as DOWN and shows how long it has been."""
        self.web.servers[1].setState(ServerState.DOWN, "test")
        self.clock.advance(125)
        self.assertIn('<td class="state DOWN">DOWN 2m05s</td>', self.html())

    def test_escapes(self) -> None:
        """Names are HTML-escaped."""
        backend = Backend("<b>", [Server("<script>", "127.0.0.1:1")])
        frontend = tcp.Frontend("tcp:1:interface=127.0.0.1", backend=backend)
        self.page.bindSite([frontend])
        html = self.html()
        self.assertNotIn("<script>", html)
        self.assertIn("&lt;script&gt;", html)

    def test_responseColumnsOnlyInHTTP(self) -> None:
        """The response-class columns appear only when something counts responses."""
        self.assertNotIn("<th>2xx</th>", self.html())
        self.web.servers[0].responses = {"2xx": 7}  # type: ignore[attr-defined]
        html = self.html()
        self.assertIn("<th>2xx</th>", html)
        self.assertIn("<td>7</td>", html)

    def test_readOnlyHasNoForms(self) -> None:
        """The read-only page has no admin buttons."""
        self.assertNotIn("<form", self.html())

    def test_formatting(self) -> None:
        """Durations and byte counts are short and readable."""
        self.assertEqual(
            [formatDuration(s) for s in (0, 59, 60, 3599, 3600, 90000)],
            ["0s", "59s", "1m00s", "59m59s", "1h00m", "1d1h"],
        )
        self.assertEqual([formatBytes(n) for n in (0, 1023, 1536, 3 * 1024**3)], ["0", "1023", "1.5K", "3.0G"])


class MetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.page, self.web, self.frontend, self.clock = makeSite()
        self.client = Client(self, self.page, self.clock)

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response, body = self.client.get("/metrics")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith("text/plain"))
        found = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    def test_serverMetrics(self) -> None:
        """Per-server metrics carry backend and server labels and live values."""
        web1 = self.web.servers[0]
        web1.total, web1.active, web1.bytesIn, web1.bytesOut = 9, 2, 300, 4000
        self.web.servers[1].setState(ServerState.MAINT, "test")
        m = self.samples()
        one = (("backend", "web"), ("server", "web1"))
        two = (("backend", "web"), ("server", "web2"))
        self.assertEqual(m[("lbkit_server_up", one)], 1)
        self.assertEqual(m[("lbkit_server_up", two)], 0)
        self.assertEqual(m[("lbkit_server_state", two + (("state", "MAINT"),))], 1)
        self.assertEqual(m[("lbkit_server_sessions_total", one)], 9)
        self.assertEqual(m[("lbkit_server_current_sessions", one)], 2)
        self.assertEqual(m[("lbkit_server_bytes_in_total", one)], 300)
        self.assertEqual(m[("lbkit_server_bytes_out_total", one)], 4000)
        self.assertEqual(m[("lbkit_server_weight", one)], 2)
        self.assertEqual(m[("lbkit_backend_servers_up", (("backend", "web"),))], 1)
        self.assertEqual(m[("lbkit_frontend_sessions_total", (("frontend", "web-in"),))], 0)

    def test_documentedNames(self) -> None:
        """Every metric family served is listed in docs/stats.md."""
        import os

        docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "stats.md")
        with open(docs) as f:
            text = f.read()
        self.web.servers[0].responses = {"2xx": 1}  # type: ignore[attr-defined]
        self.web.servers[0].requests = 1  # type: ignore[attr-defined]
        self.web.servers[0].maxconn = 5
        self.web.servers[0].lastCheck = {"status": "passed", "reason": "L4OK", "durationMs": 2}  # type: ignore[attr-defined]
        names = {name for name, labels in self.samples()}
        for name in names:
            base = name[: -len("_total")] if name.endswith("_total") else name
            histogram = re.sub(r"_(bucket|sum|count)$", "", name)  # a histogram's series
            self.assertTrue(
                f"`{name}`" in text or f"`{base}_total`" in text or f"`{histogram}`" in text, f"{name} is not documented"
            )


class NoAdminTests(SynchronousTestCase):
    def test_noAdminRoutes(self) -> None:
        """Without an Admin, /admin/ and POST /admin/server are 404 and change nothing."""
        page, web, frontend, clock = makeSite()
        client = Client(self, page, clock)
        self.assertEqual(client.get("/admin/")[0].code, 404)
        response, _ = client.request(
            "POST", "/admin/server?backend=web&server=web1&action=maint",
            headers={"X-LBKit-Admin": "1"}, auth=("admin", "secret"),
        )
        self.assertEqual(response.code, 404)
        self.assertIs(web.servers[0].state, ServerState.UP)


class RateMeterTests(SynchronousTestCase):
    def test_window(self) -> None:
        """Rates average over roughly the last window of reads."""
        meter = _RateMeter(window=10)
        owner = object()
        self.assertEqual(meter.rate(owner, "n", 0, 0), 0.0)
        self.assertEqual(meter.rate(owner, "n", 5, 50), 10.0)
        self.assertEqual(meter.rate(owner, "n", 10, 100), 10.0)
        self.assertEqual(meter.rate(owner, "n", 20, 100), 0.0)

    def test_unboundCollector(self) -> None:
        """A collector with nothing bound shows nothing."""
        snap = Collector().snapshot()
        self.assertEqual((snap["frontends"], snap["backends"]), ([], []))


class AccessLogStatsTests(SynchronousTestCase):
    """Dropped access-log lines show on the JSON, the metrics and the HTML page."""

    def setUp(self) -> None:
        from lbkit._accesslog import AccessLogSink, FileWriter

        self.page, self.web, self.frontend, self.clock = makeSite()
        self.client = Client(self, self.page, self.clock)
        self.sink = AccessLogSink()
        self.addCleanup(self.sink.close)
        self.sink.replace([FileWriter("/dev/full")], True)  # no clock: every line is written (and lost) at once
        for _ in range(3):
            self.sink.emit(b"lost")
        self.flushLoggedErrors()

    def test_unbound(self) -> None:
        """A page outside a service lists no destinations."""
        self.assertEqual(self.client.json()["accessLog"], [])

    def test_figures(self) -> None:
        """Each destination's drops are in /stats.json, /metrics (documented) and the page's summary."""
        self.page.bindAccessLog(self.sink)
        self.assertEqual(
            self.client.json()["accessLog"],
            [{"destination": "file:/dev/full", "format": "text", "dropped": 3, "pending": 0}],
        )
        samples = MetricsTests.samples(self)  # type: ignore[arg-type]
        label = (("destination", "file:/dev/full"),)
        self.assertEqual(samples[("lbkit_access_log_dropped_total", label)], 3)
        self.assertEqual(samples[("lbkit_access_log_pending_bytes", label)], 0)
        import os

        docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "stats.md")
        with open(docs) as f:
            text = f.read()
        for name in ("lbkit_access_log_dropped_total", "lbkit_access_log_pending_bytes"):
            self.assertIn(f"`{name}`", text)
        response, body = self.client.get("/")
        self.assertIn("Access log: 3 lines dropped (file:/dev/full 3).", body.decode())

    def test_boundByService(self) -> None:
        """A page in a service shows that service's access-log destinations."""
        service = LoadBalancerService([self.frontend, self.page])
        service.bindSite()
        self.assertIs(self.page.collector.accessLog, service.accessSink)
