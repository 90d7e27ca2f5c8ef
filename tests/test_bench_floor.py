"""
bench/floor.py, the benchmark's floor proxy, proxies what bench/run.py
sends it: keep-alive requests, round robin over two real Twisted web
servers, each response whole and in order.  (Its figures mean something
only if it does the per-request work it claims to.)
"""

from __future__ import annotations

import http.client
import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.helpers import freePort
from tests.test_examples import REPO, startProcess


class _Named(Resource):
    isLeaf = True

    def __init__(self, name: bytes) -> None:
        super().__init__()
        self.name = name

    def render_GET(self, request: Any) -> bytes:
        size = int(request.args.get(b"size", [b"5"])[0])
        return (self.name * size)[:size]


def _requests(port: int, sizes: list[int]) -> list[tuple[int, bytes]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        answers = []
        for size in sizes:
            connection.request("GET", f"/?size={size}")
            response = connection.getresponse()
            answers.append((response.status, response.read()))
        return answers
    finally:
        connection.close()


class FloorTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_keepAliveRoundRobin(self) -> Any:
        """
        Four requests on one keep-alive connection get their own whole
        answers, alternately from each server (a 200 KiB one among them,
        which arrives in many reads).
        """
        ports = []
        for name in (b"a", b"b"):
            listening = reactor.listenTCP(0, Site(_Named(name)), interface="127.0.0.1")  # type: ignore[attr-defined]
            self.addCleanup(listening.stopListening)
            ports.append(listening.getHost().port)
        port = freePort()
        watcher, process = startProcess(
            self, [sys.executable, os.path.join(REPO, "bench", "floor.py"), str(port), ",".join(map(str, ports))]
        )
        yield watcher.waitFor(f"floor listening on {port}")
        answers = yield deferToThread(_requests, port, [3, 204_800, 2, 1])
        self.assertEqual(answers, [(200, b"aaa"), (200, b"b" * 204_800), (200, b"aa"), (200, b"b")])
