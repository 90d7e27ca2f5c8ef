# -*- test-case-name: tests.test_cache_integration -*-
"""
The response cache over real sockets on 127.0.0.1: lbkit's frontend with
an L{lbkit.http.Cache} in front of a twisted.web server that counts the
requests it gets, HTTP/1.1 and HTTP/2 clients.
"""

from __future__ import annotations

import collections
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from lbkit.http import Cache, Frontend
from lbkit.tls import Certificates
from tests.h3client import fetch
from tests.helpers import freePort
from tests.test_http2 import H2Client, HTTP2TestCase
from tests.test_http_integration import HTTPTestCase, TrackingSite, backend, reactor
from tests.test_tls_pki import makePKI

BIG = 2 * 2**20 + 1


class Counted(Resource):
    """
    Counts its requests per path and answers each path its own way:
    C{/fresh} (max-age=60, an ETag), C{/etag} (no-cache and an ETag: a
    matching If-None-Match gets 304), C{/private}, C{/nostore},
    C{/chunked} (max-age=60, written in pieces), C{/big} (L{BIG} bytes,
    max-age=60) and C{/slow} (held until the test calls L{release}).

    @ivar hits: Path -> requests received.
    @ivar conditional: Path -> requests that carried If-None-Match.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hits: collections.Counter[str] = collections.Counter()
        self.conditional: collections.Counter[str] = collections.Counter()
        self.held: list[Request] = []
        self.arrived: Deferred[None] = Deferred()

    def render(self, request: Request) -> Any:
        path = request.path.decode()
        self.hits[path] += 1
        inm = request.getHeader(b"if-none-match")
        if inm is not None:
            self.conditional[path] += 1
        cc = {"/fresh": b"max-age=60", "/etag": b"no-cache", "/private": b"private, max-age=60",
              "/nostore": b"no-store", "/chunked": b"max-age=60", "/big": b"max-age=60", "/slow": b"max-age=60"}
        request.setHeader(b"cache-control", cc.get(path, b"max-age=60"))
        request.setHeader(b"x-count", b"%d" % self.hits[path])
        if path in ("/fresh", "/etag"):
            request.setHeader(b"etag", b'"v1"')
            if inm == b'"v1"':
                request.setResponseCode(304)
                return b""
        if path == "/chunked":
            request.write(b"part1,")
            request.write(b"part2")
            request.finish()
            return NOT_DONE_YET
        if path == "/big":
            return b"b" * BIG
        if path == "/slow":
            self.held.append(request)
            arrived, self.arrived = self.arrived, Deferred()
            arrived.callback(None)
            return NOT_DONE_YET
        return path.encode() + b" body"

    def release(self) -> None:
        """Answer the held C{/slow} requests."""
        held, self.held = self.held, []
        for request in held:
            request.write(b"slow body")
            request.finish()


class CacheIntegrationTests(HTTP2TestCase):
    """What clients see, and what the server gets, through a caching frontend."""

    def setUp(self) -> None:
        HTTP2TestCase.setUp(self)
        self.resource = Counted()
        site = TrackingSite(self.resource)
        site.lost = self.lost
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.ports.append(port)
        self.cache = Cache()
        self.port = self.tlsFrontend(default=backend("app", [port.getHost().port]), cache=self.cache)
        self.plainPort = self.frontend(default=backend("app", [port.getHost().port]), cache=self.cache)

    @inlineCallbacks
    def tlsGet(self, path: str, headers: str = "") -> Any:
        """One HTTP/1.1 GET over TLS on a new connection: fires with (status, headers, body)."""
        out = yield self.curl(self.port, "--http1.1", "-i", *(["-H", headers] if headers else []), path=path)
        head, _, body = out.partition("\r\n\r\n")
        lines = head.split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split()[1]), fields, body

    @inlineCallbacks
    def test_hitHTTP11(self) -> Any:
        """The second and third GETs are answered by the cache, with an Age; the server saw one."""
        results = []
        for _ in range(3):
            results.append((yield self.tlsGet("/fresh")))
        self.assertEqual([r[2] for r in results], ["/fresh body"] * 3)
        self.assertEqual([r[1]["x-count"] for r in results], ["1"] * 3)
        self.assertNotIn("age", results[0][1])
        self.assertIn("age", results[2][1])
        self.assertEqual(self.resource.hits["/fresh"], 1)
        self.assertEqual((self.cache.hits, self.cache.misses), (2, 1))

    @inlineCallbacks
    def test_pipelined(self) -> Any:
        """Pipelined requests on one plain connection, a miss then hits and a HEAD, come back in order."""
        c = yield self.client(self.plainPort)
        for _ in range(3):
            c.send(b"GET /fresh HTTP/1.1\r\nHost: test\r\n\r\n")
        c.send(b"HEAD /fresh HTTP/1.1\r\nHost: test\r\n\r\n", head=True)
        c.send(b"GET /fresh HTTP/1.0\r\nHost: test\r\n\r\n")
        got = yield c.responses(5)
        self.assertEqual([(r.code, body) for r, body in got],
                         [(200, b"/fresh body")] * 3 + [(200, b""), (200, b"/fresh body")])
        self.assertEqual([r.header(b"age") is not None for r, _ in got], [False, True, True, True, True])
        self.assertEqual(got[3][0].header(b"content-length"), b"11")
        self.assertEqual(self.resource.hits["/fresh"], 1)

    @inlineCallbacks
    def test_hitHTTP2(self) -> Any:
        """An HTTP/2 client is served the entry an HTTP/1.1 client's request stored, and a 304 to its If-None-Match."""
        yield self.tlsGet("/fresh")
        client: H2Client = yield self.h2client(self.port)
        status, headers, body = yield client.request("/fresh")
        self.assertEqual((status, body, headers[b"x-count"]), (200, b"/fresh body", b"1"))
        self.assertIn(b"age", headers)
        client.conn.send_headers(client.conn.get_next_available_stream_id(), [
            (b":method", b"GET"), (b":path", b"/fresh"), (b":scheme", b"https"), (b":authority", b"a.example"),
            (b"if-none-match", b'"v1"')], end_stream=True)
        d: Deferred[Any] = Deferred()
        client.results[client.conn.highest_outbound_stream_id] = d
        client.bodies[client.conn.highest_outbound_stream_id] = []
        client.flush()
        status, headers, body = yield d
        self.assertEqual((status, body), (304, b""))
        self.assertEqual(self.resource.hits["/fresh"], 1)

    @inlineCallbacks
    def test_revalidation(self) -> Any:
        """A no-cache entry is revalidated each time: the server answers 304, the client gets the body."""
        first = yield self.tlsGet("/etag")
        second = yield self.tlsGet("/etag")
        self.assertEqual((first[0], first[2]), (200, "/etag body"))
        self.assertEqual((second[0], second[2], second[1]["x-count"]), (200, "/etag body", "2"))
        self.assertEqual((self.resource.hits["/etag"], self.resource.conditional["/etag"]), (2, 1))
        self.assertEqual(self.cache.revalidated, 1)
        mine = yield self.tlsGet("/etag", 'If-None-Match: "v1"')
        self.assertEqual((mine[0], mine[2]), (304, ""))

    @inlineCallbacks
    def test_revalidationHTTP2(self) -> Any:
        """Over HTTP/2 too: the server's 304 to a revalidation becomes the whole entry for the client."""
        client: H2Client = yield self.h2client(self.port)
        first = yield client.request("/etag")
        second = yield client.request("/etag")
        head = yield client.request("/etag", method="HEAD")
        self.assertEqual([(r[0], r[2]) for r in (first, second, head)],
                         [(200, b"/etag body"), (200, b"/etag body"), (200, b"")])
        self.assertEqual((second[1][b"x-count"], second[1][b"content-length"]), (b"2", b"10"))
        self.assertEqual((self.resource.hits["/etag"], self.resource.conditional["/etag"]), (3, 2))

    @inlineCallbacks
    def test_notCached(self) -> Any:
        """private and no-store responses reach the server every time."""
        for path in ["/private", "/nostore"] * 2:
            yield self.tlsGet(path)
        self.assertEqual((self.resource.hits["/private"], self.resource.hits["/nostore"]), (2, 2))
        self.assertEqual(len(self.cache), 0)

    @inlineCallbacks
    def test_chunkedBothClients(self) -> Any:
        """A chunked response stored from an HTTP/2 client's request is served whole to HTTP/1.1 and HTTP/2."""
        client: H2Client = yield self.h2client(self.port)
        status, _, body = yield client.request("/chunked")
        self.assertEqual(body, b"part1,part2")
        status, headers, body = yield client.request("/chunked")
        self.assertEqual((status, body, headers[b"content-length"]), (200, b"part1,part2", b"11"))
        again = yield self.tlsGet("/chunked")
        self.assertEqual(again[2], "part1,part2")
        self.assertEqual(self.resource.hits["/chunked"], 1)

    @inlineCallbacks
    def test_bigStreamsThrough(self) -> Any:
        """A body over maxObjectBytes reaches each client whole and is not stored."""
        client: H2Client = yield self.h2client(self.port)
        for _ in range(2):
            status, _, body = yield client.request("/big")
            self.assertEqual((status, len(body)), (200, BIG))
        self.assertEqual((self.resource.hits["/big"], len(self.cache), self.cache.bytes), (2, 0, 0))

    @inlineCallbacks
    def test_collapsedForwarding(self) -> Any:
        """Five concurrent HTTP/2 requests for one key: the server gets one, every client its response."""
        client: H2Client = yield self.h2client(self.port)
        requests = [client.request("/slow") for _ in range(5)]
        yield self.resource.arrived
        self.assertEqual(self.resource.hits["/slow"], 1)
        self.assertEqual(len(self.cache.pending[b"a.example/slow"]), 4)
        self.resource.release()
        results = yield gatherResults(requests)
        self.assertEqual([(r[0], r[2]) for r in results], [(200, b"slow body")] * 5)
        self.assertEqual((self.resource.hits["/slow"], self.cache.hits), (1, 4))


class CacheHTTP3Tests(HTTPTestCase):
    """HTTP/3 clients (aioquic) through a caching frontend: the same entries, collapsed, hits with an Age."""

    timeout = 30

    @inlineCallbacks
    def test_http3(self) -> Any:
        """Three concurrent streams for one key: the server sees one request; a later one is a hit, as is a chunked body."""
        pki = makePKI(self)
        resource = Counted()
        site = TrackingSite(resource)
        site.lost = self.lost
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.ports.append(listening)
        cache = Cache()
        port = freePort()
        fe = Frontend(f"tcp:{port}:interface=127.0.0.1", default=backend("web", [listening.getHost().port]),
                      name="fe", tls=Certificates(pki.issue("site.pem", "localhost", ("localhost",))), http3=True,
                      log=False, cache=cache)
        self._frontends = [fe]
        service = fe.makeService(reactor)
        service.startService()
        self.services.append(service)
        first = yield deferToThread(fetch, port, [(b"GET", b"/fresh")] * 3 + [(b"GET", b"/chunked")], pki.caFile)
        self.assertEqual([(a.status, a.body) for a in first],
                         [(200, b"/fresh body")] * 3 + [(200, b"part1,part2")])
        later = yield deferToThread(fetch, port, [(b"GET", b"/fresh"), (b"GET", b"/chunked")], pki.caFile)
        self.assertEqual([(a.status, a.body, b"age" in a.headers) for a in later],
                         [(200, b"/fresh body", True), (200, b"part1,part2", True)])
        self.assertEqual((resource.hits["/fresh"], resource.hits["/chunked"]), (1, 1))
