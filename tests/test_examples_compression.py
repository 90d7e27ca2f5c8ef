"""
examples/compression.py runs as documented: started as a real C{twistd}
process on 127.0.0.1:8120, and real C{curl} requests go through it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.helpers import requireBinary, runProcess, spawn
from tests.test_compression import decode
from tests.test_http_integration import reactor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
EXAMPLE = os.path.join(REPO, "examples", "compression.py")


def example() -> Any:
    """The example's module, for the bodies its content server sends."""
    spec = importlib.util.spec_from_file_location("compression_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CompressionExampleTests(TestCase):
    """examples/compression.py compresses as its docstring says."""

    timeout = 30

    @inlineCallbacks
    def fetch(self, path: str, *args: str) -> Any:
        """curl C{path} on 127.0.0.1:8120: (content-encoding, vary, raw body)."""
        out = self.mktemp()
        result = yield runProcess(self, reactor, [
            self.curl, "-sS", *args, "-o", out, "-w", "%header{content-encoding}|%header{vary}",
            "http://127.0.0.1:8120" + path])
        self.assertEqual(result.exitCode, 0, result.output)
        encoding, vary = result.stdout.decode().split("|")
        with open(out, "rb") as f:
            return encoding, vary, f.read()

    @inlineCallbacks
    def test_example(self) -> Any:
        """
        The page goes as br to curl --compressed and as gzip to a gzip-only
        client, as it is to a client that asks for nothing; the API as
        zstd; the download never compressed.
        """
        self.curl = requireBinary("curl")
        module = example()
        proc = spawn(self, reactor, [TWISTD, "-n", "--pidfile=", "lbkit", "--config", EXAMPLE], path=REPO)
        yield proc.waitForOutput(b"listening on tcp:8120", timeout=20)
        encoding, vary, body = yield self.fetch("/page.html", "--compressed")
        self.assertEqual((encoding, vary, body), ("br", "Accept-Encoding", module.PAGE))
        encoding, _, body = yield self.fetch("/page.html", "-H", "Accept-Encoding: gzip")
        self.assertEqual((encoding, decode("gzip", body)), ("gzip", module.PAGE))
        encoding, vary, body = yield self.fetch("/page.html")
        self.assertEqual((encoding, vary, body), ("", "Accept-Encoding", module.PAGE))
        encoding, _, body = yield self.fetch("/api/items", "--compressed")
        self.assertEqual((encoding, body), ("zstd", module.ITEMS))
        encoding, vary, body = yield self.fetch("/downloads/report.csv", "--compressed")
        self.assertEqual((encoding, vary, body), ("", "", module.REPORT))
