# -*- test-case-name: tests.test_cache_interop -*-
"""
The response cache with real peers lbkit did not write: nginx serving
files with C{Cache-Control}, C{ETag} and C{Last-Modified} behind it, and
HAProxy's own cache (C{cache} section, C{http-request cache-use},
C{http-response cache-store}) given the same request sequence as lbkit's
in front of the same kind of counting server: which requests reach the
server, and the status and C{Age} clients see.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import inlineCallbacks

from lbkit import Backend, Server
from lbkit.http import Cache
from tests.helpers import freePort, requireBinary, runProcess, spawn, startHAProxy
from tests.test_cache_integration import BIG, Counted
from tests.test_http_integration import HTTPTestCase, TrackingSite, backend, reactor
from tests.test_interop_http import NGINX

_NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
        add_header X-Request-Id $request_id always;
        location /static/ {{ expires 60s; }}
        location /doc/ {{ add_header Cache-Control no-cache; add_header X-Request-Id $request_id always; }}
    }}
}}
"""


class NginxCacheTests(HTTPTestCase):
    """lbkit's cache in front of nginx serving files."""

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        HTTPTestCase.setUp(self)
        nginx = requireBinary(NGINX)
        self.curl = requireBinary("curl")
        self.dir = os.path.abspath(self.mktemp())
        for sub in ["static", "doc"]:
            os.makedirs(os.path.join(self.dir, "www", sub))
        self.css = b"body { color: #333 }\n" * 50
        with open(os.path.join(self.dir, "www", "static", "a.css"), "wb") as f:
            f.write(self.css)
        with open(os.path.join(self.dir, "www", "doc", "page.html"), "wb") as f:
            f.write(b"<p>page</p>\n")
        port = freePort()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(_NGINX_CONF.format(dir=self.dir, port=port))
        spawn(self, reactor, [nginx, "-p", self.dir, "-c", conf, "-e", os.path.join(self.dir, "error.log")])
        for _ in range(100):  # nginx says nothing when it is ready
            result = yield runProcess(self, reactor, [self.curl, "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"])
            if result.exitCode == 0:
                break
        self.cache = Cache()
        self.port = self.frontend(default=Backend("nginx", [Server("nginx", f"127.0.0.1:{port}")]), cache=self.cache)

    @inlineCallbacks
    def curlHead(self, path: str, *args: str) -> Any:
        """curl GET C{path} through lbkit: fire with (status, headers, body)."""
        result = yield runProcess(self, reactor, [self.curl, "-s", "-i", "--http1.1", *args,
                                                  f"http://127.0.0.1:{self.port}{path}"])
        self.assertEqual(result.exitCode, 0, result.output)
        head, _, body = result.stdout.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        return int(lines[0].split()[1]), fields, body

    @inlineCallbacks
    def test_staticFile(self) -> Any:
        """A file nginx serves with expires 60s is fetched once: the same X-Request-Id thrice, then an Age."""
        got = []
        for _ in range(3):
            got.append((yield self.curlHead("/static/a.css")))
        self.assertEqual([g[2] for g in got], [self.css] * 3)
        self.assertEqual(len({g[1][b"x-request-id"] for g in got}), 1)
        self.assertEqual(got[0][1][b"cache-control"], b"max-age=60")
        self.assertIn(b"age", got[2][1])
        self.assertEqual((self.cache.hits, self.cache.misses), (2, 1))
        # curl's conditional GET is answered by the cache
        status, headers, body = yield self.curlHead("/static/a.css", "-H", b"If-None-Match: " + got[0][1][b"etag"])
        self.assertEqual((status, body, headers[b"etag"]), (304, b"", got[0][1][b"etag"]))
        status, _, _ = yield self.curlHead("/static/a.css", "-z", got[0][1][b"last-modified"].decode())
        self.assertEqual(status, 304)
        self.assertEqual(self.cache.hits, 4)

    @inlineCallbacks
    def test_revalidatedFile(self) -> Any:
        """A no-cache file is revalidated with nginx's ETag: nginx answers 304 (a new X-Request-Id), the client the file."""
        first = yield self.curlHead("/doc/page.html")
        second = yield self.curlHead("/doc/page.html")
        self.assertEqual((first[0], second[0], second[2]), (200, 200, b"<p>page</p>\n"))
        self.assertNotEqual(first[1][b"x-request-id"], second[1][b"x-request-id"])
        self.assertEqual(self.cache.revalidated, 1)
        with open(os.path.join(self.dir, "www", "doc", "page.html"), "wb") as f:
            f.write(b"<p>changed, and longer</p>\n")
        os.utime(os.path.join(self.dir, "www", "doc", "page.html"), (1, 1))
        third = yield self.curlHead("/doc/page.html")
        self.assertEqual(third[2], b"<p>changed, and longer</p>\n")
        self.assertEqual(self.cache.revalidated, 1)


_HAPROXY_CONF = """
global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
cache c
    total-max-size 64
    max-object-size 1048576
    max-age 3600
frontend fe
    bind {bind}
    http-request cache-use c
    http-response cache-store c
    default_backend be
backend be
    server s1 127.0.0.1:%d
"""

#: The request sequence both caches get, in order: (method, path, extra headers).
SEQUENCE = [
    ("GET", "/fresh", ""),
    ("GET", "/fresh", ""),
    ("GET", "/fresh", 'If-None-Match: "v1"\r\n'),
    ("HEAD", "/fresh", ""),
    ("GET", "/private", ""),
    ("GET", "/private", ""),
    ("GET", "/nostore", ""),
    ("GET", "/nostore", ""),
    ("GET", "/other", "Authorization: Basic eDp5\r\n"),
    ("GET", "/other", ""),
    ("GET", "/other", ""),
    ("GET", "/big", ""),
    ("GET", "/big", ""),
    ("GET", "/chunked", ""),
    ("GET", "/chunked", ""),
]


def dechunk(data: bytes) -> bytes:
    """The data of a chunked body."""
    out = []
    while True:
        size, _, data = data.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            return b"".join(out)
        out.append(data[:n])
        data = data[n + 2 :]


class HAProxyComparisonTests(HTTPTestCase):
    """lbkit's cache and HAProxy's, the same requests: what reaches the server, what clients see."""

    timeout = 60

    def counted(self) -> tuple[int, Counted]:
        resource = Counted()
        site = TrackingSite(resource)
        site.lost = self.lost
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.ports.append(port)
        return port.getHost().port, resource

    @inlineCallbacks
    def replay(self, port: int) -> Any:
        """Send L{SEQUENCE} to C{port}, one connection each: fire with (status, served by the server, Age?, length)."""
        seen = []
        for method, path, extra in SEQUENCE:
            c = yield self.client(port)
            c.send(f"{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode(), head=method == "HEAD")
            [(response, body)] = yield c.responses(1)
            c.transport.loseConnection()
            if response.header(b"transfer-encoding") is not None:
                body = dechunk(body)
            # (a 304 from lbkit's cache carries only RFC 9110 §15.4.5's headers, HAProxy's all it stored)
            count = response.header(b"x-count") if response.code != 304 else None
            seen.append((response.code, count, response.header(b"age") is not None, body))
        return seen

    @inlineCallbacks
    def test_sameSequence(self) -> Any:
        """Both caches send the same requests to their server and answer the same statuses, Age and bodies."""
        haproxyServer, haproxyCounts = self.counted()
        lbkitServer, lbkitCounts = self.counted()
        haproxyPort, _ = startHAProxy(self, reactor, _HAPROXY_CONF % haproxyServer)
        lbkitPort = self.frontend(default=backend("app", [lbkitServer]), cache=Cache())
        theirs = yield self.replay(haproxyPort)
        ours = yield self.replay(lbkitPort)
        self.assertEqual(ours, theirs)
        self.assertEqual(lbkitCounts.hits, haproxyCounts.hits)
        self.assertEqual(len(ours[12][3]), BIG)
        self.assertEqual(ours[14][3], b"part1,part2")
