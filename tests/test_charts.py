"""
The stats page's charts (lbkit/stats/_history.py, _charts.py; docs/stats.md
"Charts"): the 15-minute ring buffers on a Clock, the inline SVG they are
drawn as, and, in headless Chromium, charts that change as traffic flows
and a server's state band.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

import treq
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbkit import Backend, Server, ServerState, http, stats
from lbkit._latency import BUCKETS
from lbkit.demo import HelloServer
from lbkit.service import LoadBalancerService
from lbkit.stats._history import POINTS, SPAN, STEP, History, quantile
from lbkit.testing import FakeEndpoint, HTTPHarness
from tests import test_stats_browser
from tests.test_stats import Client
from tests.test_stats_browser import ARTIFACTS, _port

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class QuantileTests(SynchronousTestCase):
    """L{quantile} reads a cumulative histogram as Prometheus does."""

    def test_interpolates(self) -> None:
        """Within a bucket the quantile is interpolated linearly."""
        counts = [0] * (len(BUCKETS) + 1)
        i = BUCKETS.index(0.1)
        for j in range(i, len(counts)):
            counts[j] = 10  # ten samples in (0.05, 0.1]
        self.assertAlmostEqual(quantile(0.5, counts), 0.075)
        self.assertAlmostEqual(quantile(1.0, counts), 0.1)

    def test_emptyAndInf(self) -> None:
        """Empty: None; in the +Inf bucket: the highest bound."""
        self.assertIsNone(quantile(0.5, [0] * (len(BUCKETS) + 1)))
        self.assertEqual(quantile(0.99, [0] * len(BUCKETS) + [3]), BUCKETS[-1])


class HistoryTests(SynchronousTestCase):
    """The ring buffers, and the states of a server."""

    def test_points(self) -> None:
        """A read at least STEP after the last point stores one; reads between show a live point."""
        history, owner = History(), object()
        self.assertEqual(history.sample("backend", owner, 100.0, 0, 0, None)["points"], [])
        live = history.sample("backend", owner, 105.0, 50, 5, None)["points"]
        self.assertEqual(live, [[105.0, 10.0, 1.0, None, None]])
        stored = history.sample("backend", owner, 110.0, 100, 5, None)["points"]
        self.assertEqual(stored, [[110.0, 10.0, 0.5, None, None]])
        self.assertEqual(history.sample("backend", owner, 110.0, 100, 5, None)["points"], stored)

    def test_bounded(self) -> None:
        """At most 15 minutes of points are kept."""
        history, owner = History(), object()
        for i in range(3 * POINTS):
            data = history.sample("frontend", owner, i * STEP, i, 0, None)
        self.assertLessEqual(len(data["points"]), POINTS)
        self.assertGreaterEqual(data["points"][0][0], 3 * POINTS * STEP - STEP - SPAN)

    def test_latencyFromHistogramGrowth(self) -> None:
        """p50 and p99 come from the histogram's growth since the last point."""
        history, owner = History(), object()
        empty = [0] * (len(BUCKETS) + 1)
        slow = [0] * BUCKETS.index(1.0) + [100] * (len(BUCKETS) + 1 - BUCKETS.index(1.0))
        history.sample("backend", owner, 0.0, 0, 0, empty)
        [point] = history.sample("backend", owner, 10.0, 100, 0, slow)["points"]
        self.assertEqual((point[3], point[4]), (750.0, 995.0))

    def test_timeline(self) -> None:
        """A server's bands: from the page's start (or 15 minutes ago) to now, one per state."""
        history, server = History(), object()
        history.changed(server, 100.0, "UP", "DOWN")
        history.changed(server, 160.0, "DOWN", "UP")
        self.assertEqual(history.timeline(server, "UP", 200.0, 40.0),
                         [[40.0, 100.0, "UP"], [100.0, 160.0, "DOWN"], [160.0, 200.0, "UP"]])
        self.assertEqual(history.timeline(object(), "MAINT", 2000.0, 0.0), [[1100.0, 2000.0, "MAINT"]])


class PageChartTests(SynchronousTestCase):
    """The HTML page draws the charts as inline SVG."""

    def test_chartsDrawn(self) -> None:
        """After traffic, each frontend and backend has three SVG charts with lines, and each server a band."""
        backend = Backend("app", [Server("web1", FakeEndpoint())])
        frontend = http.Frontend("tcp:8080", default=backend, name="fe")
        page = stats.Page("tcp:8404")
        page.bindSite([frontend, page])
        harness = HTTPHarness(frontend)
        self.addCleanup(harness.close)
        client = Client(self, page, harness.reactor)
        client.get("/")
        for _ in range(5):
            c = harness.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            harness.reactor.advance(0.1)
            harness.serverFor(c).respond(OK)
        harness.reactor.advance(10)
        backend.servers[0].setState(ServerState.DRAIN, "test")
        harness.reactor.advance(1)
        _, body = client.get("/")
        html = body.decode()
        self.assertEqual(len(re.findall(r'<svg [^>]*class="chart line"', html)), 6)
        requests = re.findall(r'<svg [^>]*data-chart="requests"[^>]*data-max="([0-9.]+)"', html)
        self.assertEqual(len(requests), 2)
        self.assertTrue(all(float(v) > 0 for v in requests), requests)
        self.assertIn('class="line p99"', html)
        self.assertRegex(html, r'data-states="UP DRAIN"')
        self.assertNotIn("<script", html)
        self.assertNotIn("http://", html.replace("http://www.w3.org/2000/svg", "").replace(
            "http://twistedmatrix.com", ""))


class ChromiumChartTests(TestCase):
    """Headless Chromium draws the charts, and they change as traffic flows."""

    timeout = 60
    setUp = test_stats_browser.BrowserTests.setUp
    chromium = test_stats_browser.BrowserTests.chromium
    dumpDOM = test_stats_browser.BrowserTests.dumpDOM

    def charts(self, dom: str, name: str) -> dict[str, str]:
        section = re.search(rf'id="backend-{name}"(.*?)</table>(.*?)(<div class="backend"|</body>)', dom, re.S)
        self.assertIsNotNone(section, dom[:2000])
        assert section is not None
        found = {}
        for chart, maxValue in re.findall(r'data-chart="(\w+)"[^>]*data-max="([0-9.]+)"', section.group(2)):
            found[chart] = maxValue
        return found

    @defer.inlineCallbacks
    def test_chartsChange(self) -> Any:
        """Traffic raises the request chart; a drained server's band shows it; a screenshot is kept."""
        hello = HelloServer("web1", "tcp:0:interface=127.0.0.1").makeService(self.reactor)
        hello.startService()
        self.addCleanup(hello.stopService)
        web = Backend("web", [Server("web1", f"127.0.0.1:{_port(hello, 'demo server web1')}")])
        frontend = http.Frontend("tcp:0:interface=127.0.0.1", default=web, name="web-in", log=False)
        page = stats.Page("tcp:0:interface=127.0.0.1", refresh=60)
        balancer = LoadBalancerService([frontend, page], reactor=self.reactor)
        balancer.startService()
        self.addCleanup(balancer.stopService)
        frontPort = _port(balancer, "frontend web-in")
        url = f"http://127.0.0.1:{_port(balancer, 'stats page')}/"

        before = self.charts((yield self.dumpDOM(url)), "web")
        self.assertEqual(set(before), {"requests", "errors", "latency"})
        self.assertEqual(before["requests"], "0.00")
        for _ in range(20):
            response = yield treq.get(f"http://127.0.0.1:{frontPort}/", persistent=False)
            self.assertEqual((yield treq.content(response)), b"web1\n")
        web.servers[0].setState(ServerState.DRAIN, "test", self.reactor.seconds())
        dom = yield self.dumpDOM(url)
        after = self.charts(dom, "web")
        self.assertGreater(float(after["requests"]), 0.0)
        self.assertGreater(float(after["latency"]), 0.0)
        self.assertIn('data-states="UP DRAIN"', dom)

        shot = os.path.join(self.tmp, "stats_charts.png")
        code, out, err = yield self.chromium(url, f"--screenshot={shot}", "--window-size=1200,900", "--hide-scrollbars")
        self.assertEqual(code, 0, err.decode("utf-8", "replace")[-2000:])
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        os.makedirs(ARTIFACTS, exist_ok=True)
        shutil.copy(shot, os.path.join(ARTIFACTS, "stats_charts.png"))
