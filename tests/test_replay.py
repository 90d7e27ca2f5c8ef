"""
Tests for replaying real traffic (L{lbkit._replay}, L{lbkit.simulate.replay},
C{python -m lbkit.simulate --replay}): small logs written by the test, in
lbkit's text and JSON formats and HAProxy's httplog, checked against
numbers worked out by hand; and the logs a real HAProxy and lbkit write
for the same requests.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from lbkit import balance
from lbkit._replay import parseLine, readLog
from lbkit.simulate import main, replay
from tests.helpers import startHAProxy
from tests.test_http_integration import HTTPTestCase, backend, reactor

#: Three requests, 0.1 s apart, each taking its server 1 s (HAProxy's httplog, with a syslog prefix).
HAPROXY = """\
Mar  5 10:01:02 lb haproxy[123]: 10.0.0.1:40001 [05/Mar/2026:10:01:02.000] fe app/s1 0/0/1/1000/1001 200 120 - - ---- 1/1/1/1/0 0/0 "GET /a HTTP/1.1"
Mar  5 10:01:02 lb haproxy[123]: 10.0.0.2:40002 [05/Mar/2026:10:01:02.100] fe app/s2 0/0/1/1000/1001 200 120 - - ---- 2/2/2/1/0 0/0 "GET /b?x=1 HTTP/1.1"
Mar  5 10:01:02 lb haproxy[123]: 10.0.0.3:40003 [05/Mar/2026:10:01:02.200] fe app/s1 0/0/1/1000/1001 200 120 - - ---- 3/3/3/2/0 0/0 "POST /c HTTP/1.1"
Mar  5 10:01:03 lb haproxy[123]: 10.0.0.4:40004 [05/Mar/2026:10:01:03.000] fe app/<NOSRV> 0/-1/-1/-1/0 503 216 - - SC-- 0/0/0/0/0 0/0 "GET /d HTTP/1.1"
"""


class ParseTests(SynchronousTestCase):
    """Each format gives the arrival and service time of its requests."""

    def test_haproxy(self) -> None:
        """httplog: the date is the arrival, Tr the service; <NOSRV> lines are skipped."""
        log = readLog(HAPROXY.splitlines())
        self.assertEqual([round(a.at, 3) for a in log.arrivals], [0.0, 0.1, 0.2])
        self.assertEqual([a.service for a in log.arrivals], [1.0, 1.0, 1.0])
        self.assertEqual(log.servers, ["s1", "s2"])
        self.assertEqual(log.skipped, 1)
        self.assertEqual((log.arrivals[1].method, log.arrivals[1].uri, log.arrivals[1].client),
                         (b"GET", b"/b?x=1", "10.0.0.2:40002"))

    def test_lbkitText(self) -> None:
        """lbkit's line: two lines ending in one second are spread over it, moved back by Ta."""
        lines = [
            '127.0.0.1:5000 [05/Mar/2026:10:01:02] fe app/s1 0/0/0/200/250 200 10 -- 0 "GET /x HTTP/1.1"',
            '127.0.0.1:5001 [05/Mar/2026:10:01:02] fe app/s2 0/0/0/100/100 200 10 -- 0 "GET /y HTTP/1.1"',
            '127.0.0.1:5002 [05/Mar/2026:10:01:02] fe fe/<NOSRV> 0/-1/-1/-1/0 403 10 PR 0 "GET /z HTTP/1.1"',
            "not a log line",
        ]
        log = readLog(lines)
        # ends at .25 and .75 of the second: arrivals .25 - .25 = 0 and .75 - .1 = .65
        self.assertEqual([round(a.at, 3) for a in log.arrivals], [0.0, 0.65])
        self.assertEqual([a.service for a in log.arrivals], [0.2, 0.1])
        self.assertEqual(log.skipped, 2)

    def test_lbkitJSON(self) -> None:
        """lbkit's JSON records: time is the end, to the microsecond."""
        records = [
            {"time": 100.5, "Ta": 500, "Tr": 400, "server": "s1", "client": "10.0.0.1:1", "request": "GET / HTTP/1.1"},
            {"time": 100.9, "Ta": 300, "Tr": 250, "server": "s2", "client": "10.0.0.1:2", "request": "GET / HTTP/1.1"},
        ]
        log = readLog(json.dumps(r) for r in records)
        self.assertEqual([round(a.at, 3) for a in log.arrivals], [0.0, 0.6])
        self.assertEqual([a.service for a in log.arrivals], [0.4, 0.25])

    def test_sameArrivalsEitherFormat(self) -> None:
        """The same traffic logged by HAProxy and by lbkit (JSON) replays the same."""
        base = datetime(2026, 3, 5, 10, 1, 2).timestamp()
        records = [{"time": base + i * 0.1 + 1.001, "Ta": 1001, "Tr": 1000, "server": s, "client": f"10.0.0.{i + 1}:1",
                    "request": "GET / HTTP/1.1"} for i, s in enumerate(["s1", "s2", "s1"])]
        fromJSON = readLog(json.dumps(r) for r in records)
        fromHAProxy = readLog(HAPROXY.splitlines())
        self.assertEqual([round(a.at, 6) for a in fromJSON.arrivals], [round(a.at, 6) for a in fromHAProxy.arrivals])

    def test_notALine(self) -> None:
        """Garbage, tcp lines and broken JSON are not requests."""
        for line in ["", "hello", "{not json", '{"time": 1}',
                     '127.0.0.1:1 [05/Mar/2026:10:01:02.418] fe be/s1 0/0/5 120 -- 0/0/0/0/0 0/0']:
            self.assertIsNone(parseLine(line))


class ReplayTests(SynchronousTestCase):
    """Replayed through balancers, the numbers are those worked out by hand."""

    def test_roundRobinByHand(self) -> None:
        """
        Two servers, one slot each, requests at 0, 0.1, 0.2 taking 1 s:
        round robin puts the third on s1 behind the first (done at 1.0),
        so it ends at 2.0: latencies 1.0, 1.0, 1.8.
        """
        log = readLog(HAPROXY.splitlines())
        r = replay(balance.RoundRobin(), log.arrivals, log.servers, slots=1)
        self.assertAlmostEqual(r.p50, 1.0)
        self.assertAlmostEqual(r.p99, 1.8)
        self.assertAlmostEqual(r.p999, 1.8)
        self.assertEqual([round(x, 3) for x in r.shares], [0.667, 0.333])
        # busy: s1 2 s, s2 1 s, over the 2.0 s the replay lasted
        self.assertEqual([round(u, 3) for u in r.utilisation], [1.0, 0.5])

    def test_maxconnQueues(self) -> None:
        """
        With maxconn 1 the third request waits in the backend's queue and
        takes whichever server frees first: s1 at 1.0 (latency 1.8), and
        two slots per server make no difference then.
        """
        log = readLog(HAPROXY.splitlines())
        r = replay(balance.LeastConn(), log.arrivals, log.servers, slots=2, maxconn=1)
        self.assertAlmostEqual(r.p99, 1.8)
        r = replay(balance.LeastConn(), log.arrivals, log.servers, slots=2)
        # two slots each, no maxconn: the third starts at once on s1: every latency is 1.0
        self.assertAlmostEqual(r.p99, 1.0)

    def test_commandLine(self) -> None:
        """python -m lbkit.simulate --replay prints one row per built-in, and --plot writes a PNG."""
        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: [os.remove(os.path.join(directory, n)) for n in os.listdir(directory)]
                        and os.rmdir(directory))
        path = os.path.join(directory, "access.log")
        with open(path, "w") as f:
            f.write(HAPROXY)
        png = os.path.join(directory, "tails.png")
        out = io.StringIO()
        argv = ["--replay", path, "--slots", "1", "--maxconn", "0"]
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            png = ""
        with redirect_stdout(out):
            code = main(argv + (["--plot", png] if png else []))
        self.assertEqual(code, 0)
        text = out.getvalue()
        self.assertIn("3 requests replayed from", text)
        self.assertIn("(1 lines skipped), servers s1 s2, 1 slots", text)
        self.assertIn("| RoundRobin | 1000.0 | 1800.0 | 1800.0 | 67 33 | 100 50 |", text)
        self.assertIn("| LeastConn |", text)
        if png:
            with open(png, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_emptyLog(self) -> None:
        """A log with no usable line is an error that says so."""
        directory = tempfile.mkdtemp()
        path = os.path.join(directory, "empty.log")
        with open(path, "w") as f:
            f.write("nothing here\n")
        self.addCleanup(os.rmdir, directory)
        self.addCleanup(os.remove, path)
        err = io.StringIO()
        with redirect_stderr(err):
            self.assertEqual(main(["--replay", path]), 1)
        self.assertIn("no request with a server time", err.getvalue())
        with redirect_stderr(err):
            self.assertEqual(main(["--replay", path + ".missing"]), 1)
        self.assertIn("No such file", err.getvalue())


HAPROXY_LOGGING = """
global
    maxconn 100
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind {bind}
    default_backend app
backend app
    balance roundrobin
    server s1 127.0.0.1:%(port1)d
    server s2 127.0.0.1:%(port2)d
"""


class RealLogTests(HTTPTestCase):
    """The logs real HAProxy and lbkit write for the same traffic replay alike."""

    @inlineCallbacks
    def test_haproxyAndLbkitLogs(self) -> Any:
        """Six requests through HAProxy (option httplog) and through lbkit: both logs read as six arrivals."""
        port1, _ = self.site("s1")
        port2, _ = self.site("s2")
        haproxyPort, haproxy = startHAProxy(self, reactor, HAPROXY_LOGGING % {"port1": port1, "port2": port2})
        lbkitPort = self.frontend(default=backend("s", [port1, port2]), log=True)
        events: list[dict[str, Any]] = []
        self._frontends[0].factories[0].accessLog = Logger(observer=events.append)
        for port in (haproxyPort, lbkitPort):
            for i in range(6):
                response, body = yield self.get(port, f"/r{i}")
                self.assertEqual(response.code, 200)
        yield haproxy.waitForOutput(b'"GET /r5 HTTP/1.1"')
        haproxyLines = [line for line in haproxy.stdout.decode().splitlines() if "/r" in line]
        lbkitLines = [formatEvent(e) for e in events]
        for lines, servers in [(haproxyLines, ["s1", "s2"]), (lbkitLines, ["s1", "s2"])]:
            log = readLog(lines)
            self.assertEqual((len(log.arrivals), log.skipped, log.servers), (6, 0, servers), lines)
            self.assertEqual([a.uri for a in log.arrivals], [b"/r%d" % i for i in range(6)])
            self.assertTrue(all(0 <= a.service < 5 for a in log.arrivals))
            result = replay(balance.RoundRobin(), log.arrivals, log.servers)
            self.assertEqual(result.shares, [0.5, 0.5])
