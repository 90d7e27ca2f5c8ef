"""
A short run of the chaos soak, bench/chaos.py: wrk through lbkit's http and
tcp frontends while nginx backends are SIGKILLed and restarted, lbkit is
reloaded, and slowloris and slow-reader clients hang on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _globalReactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.helpers import ProcessRunner, requireBinary, runProcess

reactor: Any = _globalReactor

CHAOS = Path(__file__).resolve().parent.parent / "bench" / "chaos.py"
NGINX = "/usr/sbin/nginx"
WRK = "/usr/bin/wrk"


class ChaosSoakTests(TestCase):
    # chaos.py bounds itself (8 s of load, then it stops everything it
    # started, even on failure); this is the backstop.
    timeout = 90

    @inlineCallbacks
    def test_shortSoak(self) -> Any:
        """
        Through backend kills, restarts and reloads, lbkit fails no request
        once its health checks could have seen the kill, and its RSS stays
        bounded.
        """
        requireBinary(NGINX)
        requireBinary(WRK)
        argv = [sys.executable, str(CHAOS), "--duration", "8", "--mode", "both", "--seed", "1",
                "--kill-every", "2", "--reload-every", "2", "--rss-budget", "15"]
        runner: ProcessRunner = yield runProcess(self, reactor, argv, timeout=80)
        output = runner.output.decode(errors="replace")
        self.assertEqual(runner.exitCode, 0, output[-4000:])
        self.assertIn("chaos: summary", output)
        lines = [line for line in output.splitlines() if line.startswith("CHAOSRESULT ")]
        self.assertEqual(len(lines), 1, output[-4000:])
        result = json.loads(lines[0][len("CHAOSRESULT "):])
        self.assertEqual(result["failed"]["after"], 0, result["failed"])
        self.assertGreaterEqual(result["kills"], 1)
        self.assertGreaterEqual(result["reloads"]["applied"], 1)
        self.assertEqual(result["reloads"]["failed"], 0)
        self.assertEqual(sorted(result["modes"]), ["http", "tcp"])
        for mode, figures in result["modes"].items():
            self.assertGreater(figures["requests"], 1000, mode)
        self.assertLess(result["rss"]["growthMiB"], 15, result["rss"])
