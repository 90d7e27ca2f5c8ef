"""
The http-mode examples run as documented: each is started as a real
C{twistd} process on 127.0.0.1:8080 (so one at a time), and real C{curl}
requests go through it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.helpers import requireBinary, runProcess, spawn
from tests.test_http_integration import reactor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


class ExampleTests(TestCase):
    """
    examples/l7_paths.py and examples/static_dynamic.py route as promised.
    """

    timeout = 30

    @inlineCallbacks
    def start(self, name: str) -> Any:
        """Run examples/C{name} under twistd until it listens on 8080."""
        self.curl = requireBinary("curl")
        path = os.path.join(REPO, "examples", name)
        proc = spawn(self, reactor, [TWISTD, "-n", "--pidfile=", "lbkit", "--config", path], path=REPO)
        yield proc.waitForOutput(b"listening on tcp:8080", timeout=20)
        return proc

    @inlineCallbacks
    def served(self, path: str) -> Any:
        """The body curl gets for C{path} on 127.0.0.1:8080."""
        result = yield runProcess(self, reactor, [self.curl, "-s", "--http1.1", "http://127.0.0.1:8080" + path])
        self.assertEqual(result.exitCode, 0, result.output)
        return result.stdout.decode().strip()

    @inlineCallbacks
    def test_l7Paths(self) -> Any:
        """/web goes to web1 and web2, /blog to blog1 and blog2."""
        yield self.start("l7_paths.py")
        web = set()
        blog = set()
        for _ in range(2):
            web.add((yield self.served("/web/index.html")))
            blog.add((yield self.served("/blog/post/1")))
        self.assertEqual((web, blog), ({"web1", "web2"}, {"blog1", "blog2"}))

    @inlineCallbacks
    def test_staticDynamic(self) -> Any:
        """Static paths and suffixes go to static1; the rest to app1 and app2."""
        yield self.start("static_dynamic.py")
        for path in ["/static/logo.svg", "/css/site.css", "/js/app.js", "/img/a.png", "/img/b.jpg"]:
            self.assertEqual((yield self.served(path)), "static1", path)
        apps = set()
        for _ in range(2):
            apps.add((yield self.served("/cart")))
        self.assertEqual(apps, {"app1", "app2"})
        self.assertIn((yield self.served("/static.html")), {"app1", "app2"})


class BehindL4ExampleTests(TestCase):
    """examples/behind_l4.py: PROXY headers accepted, the header's client logged, others cut."""

    timeout = 30

    @inlineCallbacks
    def test_behindL4(self) -> Any:
        """A request after a PROXY v1 header is served and logged as the header's client; one without is cut."""
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        from tests.helpers import Collector

        path = os.path.join(REPO, "examples", "behind_l4.py")
        proc = spawn(self, reactor, [TWISTD, "-n", "--pidfile=", "lbkit", "--config", path], path=REPO)
        yield proc.waitForOutput(b"listening on tcp:8080", timeout=20)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", 8080)
        request = b"GET /hello HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n"
        client = Collector(b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 8080\r\n" + request)
        yield connectProtocol(endpoint, client)
        answer = yield client.done
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:60])
        self.assertIn(b"web", answer)
        output = yield proc.waitForOutput(b'"GET /hello HTTP/1.1"', timeout=5)
        line = [x for x in output.splitlines() if b"GET /hello" in x][-1]
        self.assertTrue(line.startswith(b"203.0.113.7:51000 "), line)
        bare = Collector(request)
        yield connectProtocol(endpoint, bare)
        self.assertEqual((yield bare.done), b"")


class H2CExampleTests(TestCase):
    """examples/h2c.py: HTTP/2 with prior knowledge and HTTP/1.1 on one cleartext port."""

    timeout = 30

    @inlineCallbacks
    def test_h2c(self) -> Any:
        """curl --http2-prior-knowledge gets HTTP/2, plain curl HTTP/1.1, both served by the demo servers."""
        curl = requireBinary("curl")
        path = os.path.join(REPO, "examples", "h2c.py")
        proc = spawn(self, reactor, [TWISTD, "-n", "--pidfile=", "lbkit", "--config", path], path=REPO)
        yield proc.waitForOutput(b"listening on tcp:8100", timeout=20)
        seen = []
        for flag in ("--http2-prior-knowledge", "--http1.1"):
            argv = [curl, "-s", flag, "-w", "\n%{http_version}", "http://127.0.0.1:8100/"]
            result = yield runProcess(self, reactor, argv)
            self.assertEqual(result.exitCode, 0, result.output)
            body, version = result.stdout.decode().rsplit("\n", 1)
            seen.append((body.strip(), version))
        # round robin: one request each, whichever went first
        self.assertEqual(sorted(name for name, _ in seen), ["app1", "app2"])
        self.assertEqual([version for _, version in seen], ["2", "1.1"])

    @inlineCallbacks
    def test_webSocketOverHTTP2(self) -> Any:
        """An h2c client opens a WebSocket on /ws with an extended CONNECT; the echo server answers it."""
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        from tests.test_http2_websocket import H2WebSocketClient

        path = os.path.join(REPO, "examples", "h2c.py")
        proc = spawn(self, reactor, [TWISTD, "-n", "--pidfile=", "lbkit", "--config", path], path=REPO)
        yield proc.waitForOutput(b"listening on tcp:8100", timeout=20)
        client = H2WebSocketClient(scheme=b"http")
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", 8100), client)
        sid = client.open(b"/ws")
        head = yield client.streams[sid].head
        self.assertEqual(head[b":status"], b"200")
        client.send(sid, text=b"hello over h2c")
        self.assertEqual((yield client.streams[sid].message()), b"hello over h2c")
        client.transport.loseConnection()
        yield client.closed
