# -*- test-case-name: tests.test_cache_stats -*-
"""
The response caches on the stats page, C{/stats.json} and C{/metrics},
and purging them through the admin API and the command socket.
"""

from __future__ import annotations

import json
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server, stats
from lbkit._workerproc import applyCounters, countersOf, sumCounters
from lbkit.http import Cache, Frontend, Route, pathBegins
from lbkit.http._cachestore import Entry
from lbkit.stats._socket import execute
from tests.test_stats import Client
from tests.test_stats_admin import ADMIN


def stored(cache: Cache, key: bytes) -> None:
    """Put an entry for C{key} in C{cache}."""
    cache.put(Entry(key, 200, b"OK", [[b"Content-Length", b"2"]], b"ok", (), ()))


class CacheStatsTests(SynchronousTestCase):
    """What the stats page, its JSON, its metrics and the command socket show of caches, and their purges."""

    def setUp(self) -> None:
        web = Backend("web", [Server("web1", "127.0.0.1:9031")])
        self.pages = Cache(name="pages")
        self.static = Cache(name="static", maxBytes=2**20)
        self.frontend = Frontend("tcp:8130:interface=127.0.0.1", [Route(pathBegins("/s/"), web, cache=self.static)],
                                 default=web, name="www", cache=self.pages)
        self.admin = stats.Admin(users={"admin": "secret"})
        self.page = stats.Page("tcp:8131:interface=127.0.0.1", admin=self.admin)
        self.page.bindSite([self.frontend, self.page])
        self.clock = Clock()
        self.clock.advance(1000)
        self.page.collector.start(self.clock)
        self.client = Client(self, self.page, self.clock)
        self.events: list[dict[str, Any]] = []
        self.page.collector.log = Logger(namespace="lbkit.admin", observer=cast(ILogObserver, self.events.append))
        for key in [b"a/1", b"a/2", b"b/1"]:
            stored(self.pages, key)
        stored(self.static, b"a/s/x")
        self.pages.hits, self.pages.misses = 3, 1

    def test_json(self) -> None:
        """/stats.json lists each cache once, with its counters and the frontends using it."""
        caches = self.client.json()["caches"]
        self.assertEqual([c["name"] for c in caches], ["pages", "static"])
        pages = caches[0]
        self.assertEqual((pages["hits"], pages["misses"], pages["objects"], pages["stores"]), (3, 1, 3, 3))
        self.assertEqual((pages["bytes"], pages["frontends"]), (self.pages.bytes, ["www"]))
        self.assertEqual(caches[1]["maxBytes"], 2**20)

    def test_metrics(self) -> None:
        """/metrics has hits, misses, bytes, evictions and objects per cache."""
        _, body = self.client.get("/metrics")
        text = body.decode()
        self.assertIn('lbkit_cache_hits_total{cache="pages"} 3.0', text)
        self.assertIn('lbkit_cache_misses_total{cache="pages"} 1.0', text)
        self.assertIn('lbkit_cache_evictions_total{cache="static"} 0.0', text)
        self.assertIn(f'lbkit_cache_bytes{{cache="pages"}} {float(self.pages.bytes)}', text)
        self.assertIn('lbkit_cache_objects{cache="static"} 1.0', text)

    def test_page(self) -> None:
        """The HTML page has a row per cache, with its hit ratio."""
        _, body = self.client.get("/")
        self.assertIn(b'id="cache-pages"', body)
        self.assertIn(b"75.0%", body)

    def test_adminPurge(self) -> None:
        """POST /admin/purge drops a key or a prefix, and is logged with the user."""
        response, body = self.client.request("POST", "/admin/purge?cache=pages&prefix=a/", auth=("admin", "secret"),
                                             headers=ADMIN)
        self.assertEqual((response.code, json.loads(body)), (200, {"ok": True, "purged": 2}))
        self.assertEqual(self.pages.keys(), [b"b/1"])
        response, _ = self.client.request("POST", "/admin/purge?cache=pages&key=b/1", auth=("admin", "secret"),
                                          headers=ADMIN)
        self.assertEqual((response.code, len(self.pages)), (200, 0))
        self.assertEqual([(e["user"], e["action"], e["count"]) for e in self.events],
                         [("admin", "purge", 2), ("admin", "purge", 1)])

    def test_adminPurgeRefused(self) -> None:
        """Without credentials, or for an unknown cache, or without key and prefix: refused, nothing dropped."""
        response, _ = self.client.request("POST", "/admin/purge?cache=pages&prefix=", headers=ADMIN)
        self.assertEqual(response.code, 401)
        response, body = self.client.request("POST", "/admin/purge?cache=nope&prefix=", auth=("admin", "secret"),
                                             headers=ADMIN)
        self.assertEqual(response.code, 404)
        self.assertIn(b"caches: pages, static", body)
        response, _ = self.client.request("POST", "/admin/purge?cache=pages", auth=("admin", "secret"), headers=ADMIN)
        self.assertEqual(response.code, 400)
        self.assertEqual(len(self.pages), 3)

    def test_socket(self) -> None:
        """show caches and purge cache over the command socket."""
        lines = execute(self.page.collector, "uid 0", "show caches")
        assert isinstance(lines, str)
        self.assertEqual(lines.splitlines()[1].split()[:3], ["pages", "3", "1"])
        self.assertEqual(execute(self.page.collector, "uid 0", "purge cache static prefix a/s/"), "purged 1")
        self.assertEqual(execute(self.page.collector, "uid 0", "purge cache pages key a/1"), "purged 1")
        self.assertTrue(str(execute(self.page.collector, "uid 0", "purge cache x key a")).startswith("error: no cache"))
        self.assertIn("purge cache NAME", str(execute(self.page.collector, "uid 0", "help")))

    def test_purgeWithWorkers(self) -> None:
        """With a supervisor's purger, the admin API and the socket wait for the workers' count."""
        asked: list[tuple[str, Any, Any]] = []
        pending: list[Deferred[int]] = []

        def purger(name: str, key: Any, prefix: Any) -> Deferred[int]:
            asked.append((name, key, prefix))
            pending.append(Deferred())
            return pending[-1]

        self.page.bindPurger(purger)
        answer = execute(self.page.collector, "uid 0", "purge cache pages prefix a/")
        assert isinstance(answer, Deferred)
        pending[-1].callback(5)
        self.assertEqual(self.successResultOf(answer), "purged 7")  # 2 here, 5 in the workers
        d = self.client.treq.request("POST", "http://stats.example/admin/purge?cache=pages&key=b/1",
                                     auth=("admin", "secret"), headers=ADMIN)
        self.client.treq.flush()
        self.assertNoResult(d)
        pending[-1].callback(2)
        self.client.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(json.loads(self.successResultOf(self.client.treq.content(response))),
                         {"ok": True, "purged": 3})
        self.assertEqual(asked, [("pages", None, "a/"), ("pages", "b/1", None)])


class WorkerCountersTests(SynchronousTestCase):
    """With --workers, the supervisor's caches show the sums of the workers' counters."""

    def site(self) -> tuple[list[Any], Cache]:
        web = Backend("web", [Server("web1", "127.0.0.1:9031")])
        cache = Cache(name="pages")
        return [Frontend("tcp:8132:interface=127.0.0.1", default=web, name="www", cache=cache)], cache

    def test_summed(self) -> None:
        """Hits, misses and the rest add up; an ended worker's bytes and objects (gauges) do not."""
        reports = []
        for hits in (3, 4):
            listen, cache = self.site()
            cache.hits, cache.misses = hits, 1
            stored(cache, b"k")
            reports.append(countersOf(listen))
        ended = sumCounters([reports[0]], {}, gauges=False)
        supervisorListen, supervisorCache = self.site()
        applyCounters(supervisorListen, sumCounters(reports[1:], ended))
        self.assertEqual((supervisorCache.hits, supervisorCache.misses, supervisorCache.stores), (7, 2, 2))
        self.assertEqual((supervisorCache.objects, supervisorCache.bytes), (1, reports[1]["caches"]["pages"]["bytes"]))
