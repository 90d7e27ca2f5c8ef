"""
examples/cache.py runs as documented: started as a real C{twistd} process
(127.0.0.1:8130, stats on 8131), real C{curl} requests go through it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.helpers import requireBinary, runProcess, spawn
from tests.test_examples_http import REPO, TWISTD
from tests.test_http_integration import reactor


class CacheExampleTests(TestCase):
    """examples/cache.py: /static/ cached, the rest not, counters on the stats page, purge through the admin API."""

    timeout = 30

    @inlineCallbacks
    def curl(self, *args: str) -> Any:
        result = yield runProcess(self, reactor, [self.curlPath, "-s", "--http1.1", *args])
        self.assertEqual(result.exitCode, 0, result.output)
        return result.stdout.decode()

    @inlineCallbacks
    def test_cache(self) -> Any:
        """A static file is served from the cache the second time (with an Age); app pages go round; purge empties it."""
        self.curlPath = requireBinary("curl")
        path = os.path.join(REPO, "examples", "cache.py")
        proc = spawn(self, reactor, [TWISTD, "-n", "--pidfile=", "lbkit", "--config", path], path=REPO)
        yield proc.waitForOutput(b"listening on tcp:8130", timeout=20)
        yield proc.waitForOutput(b"listening on tcp:8131", timeout=20)
        first = yield self.curl("-i", "http://127.0.0.1:8130/static/logo.svg")
        second = yield self.curl("-i", "http://127.0.0.1:8130/static/logo.svg")
        self.assertTrue(first.endswith("static1\n") and second.endswith("static1\n"), (first, second))
        self.assertNotIn("\r\nAge:", first)
        self.assertIn("\r\nAge: ", second)
        self.assertIn("Cache-Control: max-age=60", second)
        apps = set()
        for _ in range(2):
            apps.add((yield self.curl("http://127.0.0.1:8130/cart")).strip())
        self.assertEqual(apps, {"app1", "app2"})
        snapshot = json.loads((yield self.curl("http://127.0.0.1:8131/stats.json")))
        caches = {c["name"]: c for c in snapshot["caches"]}
        self.assertEqual((caches["static"]["hits"], caches["static"]["misses"], caches["static"]["objects"]), (1, 1, 1))
        self.assertEqual((caches["pages"]["hits"], caches["pages"]["misses"]), (0, 2))
        purged = yield self.curl("-u", "admin:secret", "-H", "X-LBKit-Admin: 1", "-X", "POST",
                                 "http://127.0.0.1:8131/admin/purge?cache=static&prefix=127.0.0.1/static/")
        self.assertEqual(json.loads(purged), {"ok": True, "purged": 1})
        third = yield self.curl("-i", "http://127.0.0.1:8130/static/logo.svg")
        self.assertNotIn("\r\nAge:", third)

    @inlineCallbacks
    def test_cacheWorkers(self) -> Any:
        """Under --workers 2: the supervisor's stats sum both workers' caches, and a purge empties both."""
        self.curlPath = requireBinary("curl")
        path = os.path.join(REPO, "examples", "cache.py")
        proc = spawn(self, reactor, [TWISTD, "-n", "--pidfile=", "lbkit", "--config", path, "--workers", "2"],
                     path=REPO)
        yield proc.waitForOutput(b"worker 1 (pid", timeout=20)
        yield proc.waitForOutput(b") accepting connections", timeout=20)
        ages = []
        for _ in range(6):
            out = yield self.curl("-i", "http://127.0.0.1:8130/static/logo.svg")
            self.assertTrue(out.endswith("static1\n"), out)
            ages.append("\r\nAge: " in out)
        self.assertIn(True, ages)
        # the workers report their counters every second: ask until both reports are in
        for _ in range(200):
            snapshot = json.loads((yield self.curl("http://127.0.0.1:8131/stats.json")))
            static = {c["name"]: c for c in snapshot["caches"]}["static"]
            if static["hits"] + static["misses"] == 6:
                break
        self.assertEqual(static["hits"] + static["misses"], 6)
        self.assertEqual(static["hits"], ages.count(True))
        purged = json.loads((yield self.curl("-u", "admin:secret", "-H", "X-LBKit-Admin: 1", "-X", "POST",
                                             "http://127.0.0.1:8131/admin/purge?cache=static&prefix=127.0.0.1/")))
        self.assertEqual(purged, {"ok": True, "purged": static["misses"]})
        out = yield self.curl("-i", "http://127.0.0.1:8130/static/logo.svg")
        self.assertNotIn("\r\nAge: ", out)  # whichever worker answers, it had nothing left
