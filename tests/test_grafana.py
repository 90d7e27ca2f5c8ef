"""
docs/grafana/lbkit.json: every metric the dashboard queries is one a real
lbkit serves on /metrics.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.resource import Resource
from twisted.web.server import Site

from lbkit import Backend, Server, http, stats
from lbkit.health import HTTPCheck
from lbkit.logs import AccessLog
from lbkit.service import LoadBalancerService
from tests.helpers import freePort

DASHBOARD = os.path.join(os.path.dirname(__file__), "..", "docs", "grafana", "lbkit.json")


class _Hello(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.checked: Deferred[None] = Deferred()

    def render_GET(self, request: Any) -> bytes:
        if request.path == b"/health" and not self.checked.called:
            self.checked.callback(None)
        return b"hello"


class DashboardTests(TestCase):
    timeout = 30

    def queried(self) -> set[str]:
        with open(DASHBOARD) as f:
            dashboard = json.load(f)
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
        return {name for e in exprs for name in re.findall(r"\blbkit_[a-z_]+", e)}

    @inlineCallbacks
    def test_metricsExist(self) -> Any:
        """A balancer with a checked backend, a stats page and an access log serves every queried name."""
        hello = _Hello()
        listening = reactor.listenTCP(0, Site(hello), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        web = Backend("web", servers=[Server("w1", f"127.0.0.1:{listening.getHost().port}")],
                      health=HTTPCheck("/health", interval=0.5))
        front, page = freePort(), freePort()
        service = LoadBalancerService(
            [http.Frontend(f"tcp:{front}:interface=127.0.0.1", default=web, name="www"),
             stats.Page(f"tcp:{page}:interface=127.0.0.1")],
            reactor, accessLog=[AccessLog(self.mktemp())],
        )
        service.startService()
        self.addCleanup(service.stopService)
        yield hello.checked.addTimeout(10, reactor)  # the first probe reached the server
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        # (this request's round trip comes after the probe's answer)
        response = yield agent.request(b"GET", f"http://127.0.0.1:{front}/".encode())
        self.assertEqual((yield readBody(response)), b"hello")
        response = yield agent.request(b"GET", f"http://127.0.0.1:{page}/metrics".encode())
        text = (yield readBody(response)).decode()
        served = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
        queried = self.queried()
        self.assertGreaterEqual(len(queried), 15)
        self.assertEqual(sorted(queried - served), [])
