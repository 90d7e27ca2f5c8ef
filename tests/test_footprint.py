"""
lbkit's memory at start-up (issue 11, docs/operations.md "Memory"): the
optional parts (HTTP/2's h2 connection, HTTP/3's aioquic, the brotli and zstandard codecs,
OpenTelemetry, twisted.web's client and server) are imported only by a
site that configures them, and a plain http frontend's process stays
under the issue's 60 MiB.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbkit._heap import trimHeap
from tests.helpers import freePort, procRSS, runProcess, spawn

MiB = 1024 * 1024

#: Imported only when a site configures what needs them.
OPTIONAL = (
    "aioquic.quic.connection",
    "pylsqpack",
    "brotli",
    "zstandard",
    "opentelemetry.trace",
    "h2.connection",
    "twisted.web.client",
    "twisted.web.server",
)

#: A plain http frontend (as bench/sites/http.py), and a line that says
#: which of OPTIONAL the running process has imported.
_PLAIN = """
import sys
from twisted.internet import reactor
from lbkit import Backend, Server, http
from lbkit.balance import RoundRobin

be = Backend("be", [Server("s1", "127.0.0.1:{server}"), Server("s2", "127.0.0.1:{server}")], balance=RoundRobin())
listen = [http.Frontend("tcp:{port}:interface=127.0.0.1", routes=[], default=be)]

def report():
    loaded = [name for name in {optional!r} if name in sys.modules]
    print("footprint: imported", ",".join(loaded) or "-")

reactor.callWhenRunning(reactor.callLater, 0, report)
"""

#: A site configuring each optional part that is imported at configuration.
_CONFIGURED = """
import sys
from lbkit import Backend, Server, http

be = Backend("be", [Server("s1", "127.0.0.1:9170")])
scatter = http.ScatterGather(be, merge=lambda request, parts: None)
listen = [http.Frontend(
    "tcp:9171:interface=127.0.0.1", default=be, routes=[],
    compression=http.Compression(algorithms=("br", "zstd", "gzip")),
    tracing=http.Tracing(otel=True),
)]
"""


class StartupTests(TestCase):
    """What a process imports, and how much memory it holds, before any request."""

    timeout = 60

    @inlineCallbacks
    def test_plainSiteLeavesOptionalPartsOut(self) -> Any:
        """
        A plain http frontend under twistd imports none of the optional
        parts, and its RSS stays under 60 MiB.
        """
        site = self.mktemp() + ".py"
        with open(site, "w") as f:
            f.write(_PLAIN.format(server=freePort(), port=freePort(), optional=OPTIONAL))
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        proc = spawn(self, reactor, [twistd, "-n", "--pidfile=", "lbkit", "--config", site])
        output = yield proc.waitForOutput(b"footprint: imported", timeout=30)
        yield proc.waitForOutput(b"\n", timeout=5)
        line = output.split(b"footprint: imported", 1)[1].split(b"\n", 1)[0].strip()
        self.assertEqual(line, b"-", output.decode("utf-8", "replace"))
        rss = procRSS(proc.pid())
        self.assertLess(rss, 60 * MiB, f"an idle http frontend's RSS is {rss / MiB:.1f} MiB")

    @inlineCallbacks
    def test_configuredPartsAreImported(self) -> Any:
        """
        A site that configures scatter-gather, brotli and zstd compression
        and OpenTelemetry tracing gets what they need imported when it is
        loaded (the features themselves: tests.test_http_scatter,
        tests.test_compression*, tests.test_tracing).
        """
        site = self.mktemp() + ".py"
        with open(site, "w") as f:
            f.write(_CONFIGURED)
        script = (
            "import sys\n"
            "from lbkit.config import loadSite\n"
            f"loadSite({site!r})\n"
            "print(' '.join(name for name in ('brotli', 'zstandard', 'opentelemetry.trace', 'twisted.web.server')"
            " if name in sys.modules))\n"
        )
        proc = yield runProcess(self, reactor, [sys.executable, "-c", script])
        self.assertEqual(proc.exitCode, 0, proc.output.decode("utf-8", "replace"))
        self.assertEqual(proc.stdout.split(), [b"brotli", b"zstandard", b"opentelemetry.trace", b"twisted.web.server"])


class TrimHeapTests(SynchronousTestCase):
    """L{lbkit._heap.trimHeap}, which C{twistd lbkit} and each worker call once the reactor runs."""

    def test_glibcTrims(self) -> None:
        """On glibc the heap's free pages are given back and it says so; elsewhere it does nothing."""
        try:
            glibc = os.confstr("CS_GNU_LIBC_VERSION")
        except (AttributeError, ValueError, OSError):
            glibc = None
        self.assertEqual(trimHeap(), bool(glibc))
