"""
bench/hotpath.py, the per-request micro-benchmark, still drives a real
exchange: every request it times gets the server's answer.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

HOTPATH = Path(__file__).resolve().parent.parent / "bench" / "hotpath.py"


def load() -> Any:
    spec = importlib.util.spec_from_file_location("hotpath", HOTPATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class HotPathTests(SynchronousTestCase):
    """The benchmark's requests are answered, and counted by the servers."""

    def test_answered(self) -> None:
        """Each of 100 requests (log off and on) reaches a server and gets its response back."""
        hotpath = load()
        for log in (False, True):
            protocol, client, sides, harness = hotpath.setUp(log)
            before = sum(server.requests for server in sides)
            conns = [(s.protocol, s.transport) for s in sides.values()]
            for i in range(100):
                protocol.dataReceived(hotpath.REQUEST)
                conn, transport = conns[i & 1]
                transport.clear()
                conn.dataReceived(hotpath.RESPONSE)
            self.assertEqual(client.value().count(b"HTTP/1.1 200 OK\r\n"), 100)
            self.assertEqual(sum(server.requests for server in sides) - before, 100)
            self.assertGreater(hotpath.run(50, log), 0)
            harness.close()
