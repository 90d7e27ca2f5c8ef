"""
examples/l7_site.py runs as documented: started as a real C{twistd}
process (127.0.0.1:8175), real C{curl} requests and a real grpcio client
go through it.
"""

from __future__ import annotations

import gzip
import os
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.helpers import requireBinary, runProcess, spawn
from tests.test_examples_http import REPO, TWISTD
from tests.test_http_integration import reactor

try:
    import grpc
except ImportError:  # pragma: no cover
    grpc = None


class L7SiteExampleTests(TestCase):
    """examples/l7_site.py: a compressed page, a cached static file and a gRPC call, on one port."""

    timeout = 60

    @inlineCallbacks
    def curl(self, *args: str) -> Any:
        result = yield runProcess(self, reactor, [self.curlPath, "-s", "--http1.1", *args])
        self.assertEqual(result.exitCode, 0, result.output)
        return result.stdout

    @inlineCallbacks
    def test_site(self) -> Any:
        """
        The page comes gzip-compressed (and decompresses to the page); the
        second C{/static/} request is the cache's (same numbered answer,
        with an C{Age}); a gRPC unary call over h2c reaches the grpcio server.
        """
        if grpc is None:
            self.skipTest("grpcio is not installed")
        self.curlPath = requireBinary("curl")
        path = os.path.join(REPO, "examples", "l7_site.py")
        proc = spawn(self, reactor, [TWISTD, "-n", "--pidfile=", "lbkit", "--config", path], path=REPO)
        yield proc.waitForOutput(b"listening on tcp:8175", timeout=20)

        raw = yield self.curl("-D", "-", "-H", "Accept-Encoding: gzip", "http://127.0.0.1:8175/page.html")
        head, body = raw.split(b"\r\n\r\n", 1)
        self.assertIn(b"\r\ncontent-encoding: gzip", head.lower())
        page = gzip.decompress(body)
        self.assertTrue(page.startswith(b"<html>") and page.endswith(b"</html>\n"), page[-40:])
        self.assertLess(len(body), len(page) // 4)

        first = (yield self.curl("-i", "http://127.0.0.1:8175/static/app.css")).decode()
        second = (yield self.curl("-i", "http://127.0.0.1:8175/static/app.css")).decode()
        self.assertTrue(first.endswith("/* static answer 1 */\n"), first)
        self.assertTrue(second.endswith("/* static answer 1 */\n"), second)  # the server answered once
        self.assertNotIn("\r\nAge:", first)
        self.assertIn("\r\nAge: ", second)

        channel = grpc.insecure_channel("127.0.0.1:8175", options=[("grpc.enable_http_proxy", 0)])
        self.addCleanup(channel.close)
        say = channel.unary_unary("/demo.Echo/Say")
        answer = yield deferToThread(lambda: say(b"hello", timeout=10))
        self.assertEqual(answer, b"grpc1: hello")
