"""
Compression counters (HAProxy's comp_in, comp_out, comp_rsp, and the
responses bypassed) in C{/stats.json}, C{/metrics} and on the stats page,
after real requests through a compressing frontend; and across worker
processes.
"""

from __future__ import annotations

import gzip
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server, stats
from lbkit._workerproc import applyCounters, countersOf, sumCounters
from lbkit.http import Compression, Frontend
from tests.test_compression_http import CompressionTestCase, header, text
from tests.test_stats import Client

BACKEND = Backend("app", [Server("a1", "127.0.0.1:1")])


class CompressionCountersTests(CompressionTestCase):
    """What a user reads of compression after real traffic."""

    @inlineCallbacks
    def test_counted(self) -> Any:
        """
        Compressed responses count their body bytes in and out; responses
        sent as they were (not accepted by the client, not a compressed
        type) count as bypassed; all three views show it.
        """
        port = self.compressing(Compression(algorithms=("gzip",)))
        response, body = yield self.fetch(port, "/text/300000", "gzip")
        self.assertEqual(header(response, b"content-encoding"), b"gzip")
        self.assertEqual(gzip.decompress(body), text(300000))
        yield self.fetch(port, "/text/10000")  # no Accept-Encoding
        yield self.fetch(port, "/png/10000", "gzip")  # not a compressed type

        page = stats.Page("tcp:0:interface=127.0.0.1")
        page.bindSite([self._frontends[0], page])
        clock = Clock()
        page.collector.start(clock)
        client = Client(self, page, clock)
        row = client.json()["frontends"][0]["compression"]
        self.assertEqual((row["in"], row["compressed"], row["bypassed"]), (300000, 1, 2))
        self.assertTrue(0 < row["out"] < 300000 // 3, row)
        self.assertLessEqual(row["out"], len(body))

        text_ = client.get("/metrics")[1].decode()
        self.assertIn('lbkit_frontend_compression_in_bytes_total{frontend="fe"} 300000.0', text_)
        self.assertIn(f'lbkit_frontend_compression_out_bytes_total{{frontend="fe"}} {float(row["out"])}', text_)
        self.assertIn('lbkit_frontend_compressed_responses_total{frontend="fe"} 1.0', text_)
        self.assertIn('lbkit_frontend_compression_bypassed_responses_total{frontend="fe"} 2.0', text_)

        html = client.get("/")[1]
        self.assertIn(b'id="compression-fe"', html)
        self.assertIn(b"<h2>Compression</h2>", html)


class NotConfiguredTests(SynchronousTestCase):
    """A frontend without compression has no C{compression} object and no such metrics."""

    def test_absent(self) -> None:
        fe = Frontend("tcp:0:interface=127.0.0.1", default=BACKEND, name="plain")
        page = stats.Page("tcp:0:interface=127.0.0.1")
        page.bindSite([fe, page])
        clock = Clock()
        page.collector.start(clock)
        client = Client(self, page, clock)
        self.assertNotIn("compression", client.json()["frontends"][0])
        self.assertNotIn(b"compression_in_bytes_total{", client.get("/metrics")[1])


class WorkerTests(SynchronousTestCase):
    """With worker processes, the supervisor shows the sum of the workers' counters."""

    def test_summed(self) -> None:
        def site() -> list[Any]:
            fe = Frontend("tcp:0:interface=127.0.0.1", default=BACKEND, name="w", compression=Compression())
            fe.factories = [type("F", (), {})()]  # type: ignore[attr-defined]
            return [fe]

        reports = []
        for n in (1, 2):
            worker = site()
            factory = worker[0].factories[0]
            factory.compIn, factory.compOut, factory.compRsp, factory.compByp = 1000 * n, 100 * n, n, 10 * n
            reports.append(countersOf(worker))
        supervisor = site()
        supervisor[0].factories[0].compIn = supervisor[0].factories[0].compOut = 0
        supervisor[0].factories[0].compRsp = supervisor[0].factories[0].compByp = 0
        applyCounters(supervisor, sumCounters(reports, {}))
        factory = supervisor[0].factories[0]
        self.assertEqual((factory.compIn, factory.compOut, factory.compRsp, factory.compByp), (3000, 300, 3, 30))
