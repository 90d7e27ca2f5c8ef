"""
Tests for examples/deploy/: the systemd unit's twistd command lines are ones
C{twistd lbkit} accepts, and its signals are the ones lbkit acts on.
"""

from __future__ import annotations

import os
import shlex

from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from lbkit import tap

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "examples", "deploy")
DEMO = os.path.join(os.path.dirname(__file__), "..", "examples", "demo.py")


def _unit() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    with open(os.path.join(DEPLOY, "lbkit.service")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", "[")):
                key, _, value = line.partition("=")
                settings.setdefault(key, []).append(value)
    return settings


def _twistdOptions() -> set[str]:
    options = ServerOptions()
    names = {flag[0] for flag in getattr(options, "optFlags", [])}
    names |= {param[0] for param in getattr(options, "optParameters", [])}
    return names


class UnitTests(SynchronousTestCase):
    """examples/deploy/lbkit.service."""

    def lbkitOptions(self, command: str) -> tap.Options:
        """Parse the lbkit part of a unit command line, with the demo site in place of /etc/lbkit/site.py."""
        words = shlex.split(command)
        self.assertTrue(words[0].endswith("/twistd"))
        at = words.index("lbkit")
        twistdWords, lbkitWords = words[1:at], words[at + 1:]
        for word in twistdWords:  # twistd's own options, before the plugin's name
            name = word.lstrip("-").split("=")[0]
            self.assertTrue(hasattr(ServerOptions(), f"opt_{name}") or name in _twistdOptions(), word)
        lbkitWords = [DEMO if w == "/etc/lbkit/site.py" else w for w in lbkitWords]
        lbkitWords = [self.mktemp() if w.startswith("/var/log/") else w for w in lbkitWords]
        options = tap.Options()
        try:
            options.parseOptions(lbkitWords)
        except SystemExit as e:
            self.assertEqual(e.code, 0, command)  # --check exits 0 on a good site
        return options

    def test_execStart(self) -> None:
        """ExecStart runs in the foreground with workers, a grace period and a file access log."""
        unit = _unit()
        command = unit["ExecStart"][0]
        self.assertIn("--nodaemon", shlex.split(command))
        options = self.lbkitOptions(command)
        self.assertGreaterEqual(options["workers"], 1)
        self.assertEqual(options["grace"], 30.0)
        self.assertEqual(len(options["accessLog"]), 1)
        self.assertGreater(float(unit["TimeoutStopSec"][0]), options["grace"])

    def test_execStartPre(self) -> None:
        """ExecStartPre checks the site file first (--check exits 0 for a good one)."""
        command = _unit()["ExecStartPre"][0]
        self.assertIn("--check", shlex.split(command))
        self.lbkitOptions(command)

    def test_signals(self) -> None:
        """Reload is SIGHUP and the logrotate hook sends SIGUSR1, as docs/operations.md says lbkit acts on."""
        self.assertEqual(_unit()["ExecReload"], ["/bin/kill -HUP $MAINPID"])
        with open(os.path.join(DEPLOY, "logrotate")) as f:
            self.assertIn("systemctl kill -s USR1 lbkit.service", f.read())
