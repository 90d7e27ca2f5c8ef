"""
http mode with real peers lbkit did not write: nginx as the servers, curl
and wrk as clients, and the C{websockets} library at both ends of a tunnel.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest

from lbkit import Backend, Server
from tests.helpers import freePort, requireBinary, runProcess, spawn
from tests.test_http_integration import HTTPTestCase, backend, reactor

NGINX = "/usr/sbin/nginx"

_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access-$server_port.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 64m;
    keepalive_requests 100000;
{servers}
}}
"""

_SERVER = """
    server {{
        listen 127.0.0.1:{port};
        root {dir}/{name};
        location = / {{ return 200 "{name}\\n"; }}
        location = /upload {{
            client_body_in_single_buffer on;
            client_body_buffer_size 2m;
            if ($request_method = POST) {{ return 200 "{name} got $content_length\\n"; }}
        }}
    }}
"""


class NginxTests(HTTPTestCase):
    """
    lbkit in front of two nginx servers, driven by curl and wrk.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        HTTPTestCase.setUp(self)
        nginx = requireBinary(NGINX)
        self.curl = requireBinary("curl")
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.nginxPorts = {"nginx1": freePort(), "nginx2": freePort()}
        servers = ""
        self.bigFile = os.urandom(1 << 20)
        for name, port in self.nginxPorts.items():
            os.makedirs(os.path.join(self.dir, name))
            with open(os.path.join(self.dir, name, "big.bin"), "wb") as f:
                f.write(self.bigFile)
            servers += _SERVER.format(port=port, dir=self.dir, name=name)
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(_CONF.format(dir=self.dir, servers=servers))
        self.nginx = spawn(self, reactor, [nginx, "-p", self.dir, "-c", conf, "-e", os.path.join(self.dir, "error.log")])
        # nginx says nothing when it is ready: wait until both ports answer
        for port in self.nginxPorts.values():
            for _ in range(100):
                result = yield runProcess(self, reactor, [self.curl, "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"])
                if result.exitCode == 0:
                    break
            else:
                raise RuntimeError(f"nginx did not start: {self.nginx.output!r}")
        self.port = self.frontend(
            default=Backend("nginx", [Server(n, f"127.0.0.1:{p}") for n, p in self.nginxPorts.items()])
        )
        self.url = f"http://127.0.0.1:{self.port}"

    @inlineCallbacks
    def curlOut(self, *args: str) -> Any:
        """Run curl with C{args}; fire with its stdout."""
        result = yield runProcess(self, reactor, [self.curl, "-s", "--http1.1", *args])
        self.assertEqual(result.exitCode, 0, result.output)
        return result.stdout

    @inlineCallbacks
    def test_curlBalanced(self) -> Any:
        """curl requests are spread over both nginx servers."""
        seen = set()
        for _ in range(4):
            out = yield self.curlOut(self.url + "/")
            seen.add(out.strip())
        self.assertEqual(seen, {b"nginx1", b"nginx2"})

    @inlineCallbacks
    def test_curlKeepAliveFile(self) -> Any:
        """A 1 MiB file fetched twice on one kept-alive curl connection arrives intact."""
        out = yield self.curlOut(self.url + "/big.bin", self.url + "/big.bin")
        self.assertEqual(out, self.bigFile + self.bigFile)

    @inlineCallbacks
    def test_curlUpload(self) -> Any:
        """A 1 MiB upload with -d @file (and Expect: 100-continue) reaches nginx whole."""
        path = os.path.join(self.dir, "upload.bin")
        with open(path, "wb") as f:
            f.write(b"x" * (1 << 20))
        out = yield self.curlOut("-d", "@" + path, self.url + "/upload")
        self.assertRegex(out.decode(), r"^nginx[12] got 1048576\n$")

    @inlineCallbacks
    def test_curlHeaders(self) -> Any:
        """curl -H headers pass; the response is HTTP/1.1 200 with nginx's headers."""
        out = yield self.curlOut("-i", "-H", "X-Test: 1", self.url + "/big.bin")
        head = out.split(b"\r\n\r\n", 1)[0]
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        self.assertIn(b"Server: nginx", head)
        self.assertIn(b"Content-Length: 1048576", head)

    @inlineCallbacks
    def test_wrk(self) -> Any:
        """wrk through lbkit: no errors, no non-2xx, both nginx servers used."""
        wrk = requireBinary("wrk")
        result = yield runProcess(self, reactor, [wrk, "-t1", "-c10", "-d2s", self.url + "/"], timeout=30)
        out = result.output.decode()
        self.assertEqual(result.exitCode, 0, out)
        self.assertNotIn("Socket errors", out)
        self.assertNotIn("Non-2xx", out)
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        self.assertGreater(requests, 100, out)
        for name, port in self.nginxPorts.items():
            with open(os.path.join(self.dir, f"access-{port}.log")) as f:
                self.assertGreater(len(f.readlines()), 10, name)


class WebSocketTests(HTTPTestCase):
    """
    A C{websockets} client and server talk through lbkit's tunnel.
    """

    timeout = 30

    @inlineCallbacks
    def test_echo(self) -> Any:
        """Messages, text and binary, echo through the tunnel; closing closes both sides."""
        try:
            from websockets.sync.client import connect
            from websockets.sync.server import serve
        except ImportError:
            raise SkipTest("the websockets package is not installed") from None

        def echo(ws: Any) -> None:
            for message in ws:
                ws.send(message)

        server = serve(echo, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        def stop() -> None:
            server.shutdown()
            thread.join()

        self.addCleanup(deferToThread, stop)
        wsPort = server.socket.getsockname()[1]
        port = self.frontend(default=backend("ws", [wsPort]))
        big = os.urandom(300000)

        def talk() -> list[Any]:
            with connect(f"ws://127.0.0.1:{port}/chat", open_timeout=10, close_timeout=5) as ws:
                ws.send("hello")
                first = ws.recv(timeout=10)
                ws.send(big)
                second = ws.recv(timeout=10)
            assert isinstance(second, bytes)
            return [first, hashlib.sha256(second).hexdigest()]

        got = yield deferToThread(talk)
        self.assertEqual(got, ["hello", hashlib.sha256(big).hexdigest()])
