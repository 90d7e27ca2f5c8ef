# -*- test-case-name: tests.test_cache -*-
"""
The response cache on the exchange's path (L{lbkit.http.Cache},
docs/cache.md), on a L{MemoryReactorClock}: hits, misses, revalidation,
collapsed forwarding, HEAD, Vary, credentials, bounds; HTTP/1.1 clients.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server
from lbkit.config import loadSite
from lbkit.error import ConfigError
from lbkit.fromhaproxy import translate
from lbkit.http import Cache, Frontend, Route, pathBegins
from lbkit.testing import FakeEndpoint, HTTPHarness

CLIENT = IPv4Address("TCP", "198.51.100.7", 51000)
FRONT = IPv4Address("TCP", "127.0.0.1", 8080)
T0 = 1_700_000_000.0


def parse(data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """The status, headers (lower-case names) and body of one HTTP/1.1 response in C{data}."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    return int(lines[0].split(b" ")[1]), headers, body


def response(body: bytes = b"hello", *headers: bytes, code: bytes = b"200 OK") -> bytes:
    """An HTTP/1.1 response with a Content-Length."""
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 " + code + b"\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


class Harness:
    """A frontend with a cache on a L{MemoryReactorClock} at L{T0}, one server C{s1} whose requests are counted."""

    def __init__(self, testCase: SynchronousTestCase, cache: Cache | None = None, routeCache: Cache | None = None,
                 **frontendArgs: Any) -> None:
        self.endpoint = FakeEndpoint(IPv4Address("TCP", "192.0.2.1", 80))
        self.server = Server("s1", self.endpoint)
        self.backend = Backend("be", [self.server])
        self.cache = cache if cache is not None else Cache()
        routes = [Route(pathBegins("/r/"), self.backend, cache=routeCache)] if routeCache is not None else []
        self.frontend = Frontend("tcp:8080", routes, default=self.backend, name="fe", cache=self.cache,
                                 **frontendArgs)
        self.harness = HTTPHarness(self.frontend, clientAddress=CLIENT, frontendAddress=FRONT)
        self.reactor = self.harness.reactor
        self.reactor.advance(T0)
        self.testCase = testCase
        self.serverConn: Any = None
        self.clients: list[Any] = []
        testCase.addCleanup(self._cleanUp)

    def send(self, data: bytes) -> Any:
        """A new client connection sends C{data}; return its transport."""
        client = self.harness.accept()
        self.clients.append(client)
        client.protocol.dataReceived(data)
        return client.transport

    def get(self, path: bytes = b"/a", *headers: bytes, method: bytes = b"GET") -> Any:
        extra = b"".join(h + b"\r\n" for h in headers)
        return self.send(method + b" " + path + b" HTTP/1.1\r\nHost: example.com\r\n" + extra + b"\r\n")

    def serve(self, data: bytes) -> bytes:
        """The server answers the request waiting for it with C{data}; return the request it got."""
        if self.endpoint.pending:
            side = self.harness.connect(self.server)
            self.serverConn = side
        side = self.serverConn
        got = side.transport.value()
        side.transport.clear()
        side.protocol.dataReceived(data)
        return got

    def _cleanUp(self) -> None:
        self.harness.close()
        self.testCase.assertEqual(self.reactor.getDelayedCalls(), [])


class CacheTests(SynchronousTestCase):
    """What clients see, and what reaches the server, with a cache."""

    def test_hit(self) -> None:
        """A fresh stored response is served without the server, with an Age."""
        h = Harness(self)
        first = h.get()
        h.serve(response(b"hello", b"Cache-Control: max-age=60"))
        self.assertEqual(parse(first.value())[2], b"hello")
        h.reactor.advance(10)
        second = h.get()
        code, headers, body = parse(second.value())
        self.assertEqual((code, body, headers[b"age"]), (200, b"hello", b"10"))
        self.assertEqual(h.endpoint.attempts[1:], [])
        self.assertEqual((h.cache.hits, h.cache.misses, h.cache.stores), (1, 1, 1))

    def test_logged(self) -> None:
        """A hit is logged with the server <CACHE> (as HAProxy logs it), a miss with the server."""
        h = Harness(self)
        h.get()
        h.serve(response(b"hello", b"Cache-Control: max-age=60"))
        h.get()
        self.assertEqual([(f["server"], f["status"]) for f in h.harness.logged], [("s1", 200), ("<CACHE>", 200)])
        h.get(b"/a", b"Cache-Control: no-cache")
        h.serve(response(b"hello", b"Cache-Control: max-age=60"))
        self.assertEqual(h.harness.logged[-1]["server"], "s1")

    def test_expires(self) -> None:
        """Once max-age has passed the request goes to the server again."""
        h = Harness(self)
        h.get()
        h.serve(response(b"one", b"Cache-Control: max-age=5"))
        h.reactor.advance(5)
        second = h.get()
        got = h.serve(response(b"two", b"Cache-Control: max-age=5"))
        self.assertTrue(got.startswith(b"GET /a HTTP/1.1"))
        self.assertEqual(parse(second.value())[2], b"two")

    def test_revalidate(self) -> None:
        """A stale entry with an ETag is revalidated; the server's 304 refreshes it and the client gets it whole."""
        h = Harness(self)
        h.get()
        h.serve(response(b"hello", b"Cache-Control: max-age=5", b'ETag: "v1"'))
        h.reactor.advance(6)
        second = h.get()
        got = h.serve(b'HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=30\r\nETag: "v1"\r\nX-New: 1\r\n\r\n')
        self.assertIn(b'If-None-Match: "v1"', got)
        code, headers, body = parse(second.value())
        self.assertEqual((code, body, headers[b"x-new"], headers[b"age"]), (200, b"hello", b"1", b"0"))
        self.assertEqual(h.cache.revalidated, 1)
        h.reactor.advance(20)
        third = h.get()
        self.assertEqual(parse(third.value())[:1], (200,))
        self.assertEqual(len(h.endpoint.attempts), 1)
        self.assertEqual(parse(third.value())[1][b"age"], b"20")

    def test_noCacheRevalidatesEveryTime(self) -> None:
        """A response saying no-cache is stored, but every use goes to the server as a conditional request."""
        h = Harness(self)
        h.get()
        h.serve(response(b"hello", b"Cache-Control: no-cache", b"Last-Modified: Tue, 14 Nov 2023 22:00:00 GMT"))
        second = h.get()
        got = h.serve(b"HTTP/1.1 304 Not Modified\r\n\r\n")
        self.assertIn(b"If-Modified-Since: Tue, 14 Nov 2023 22:00:00 GMT", got)
        self.assertEqual(parse(second.value())[2], b"hello")

    def test_clientConditional(self) -> None:
        """A client's If-None-Match that names the fresh entry's ETag gets a 304 from the cache."""
        h = Harness(self)
        h.get()
        h.serve(response(b"hello", b"Cache-Control: max-age=60", b'ETag: "v1"'))
        second = h.get(b"/a", b'If-None-Match: "v0", "v1"')
        code, headers, body = parse(second.value())
        self.assertEqual((code, body, headers[b"etag"]), (304, b"", b'"v1"'))
        self.assertNotIn(b"content-length", headers)
        other = h.get(b"/a", b'If-None-Match: "v0"')
        self.assertEqual(parse(other.value())[2], b"hello")

    def test_clientConditionalAfterRevalidation(self) -> None:
        """A client with the entry's ETag gets a 304 when the server's 304 refreshed the entry."""
        h = Harness(self)
        h.get()
        h.serve(response(b"hello", b"Cache-Control: no-cache", b'ETag: "v1"'))
        second = h.get(b"/a", b'If-None-Match: "v1"')
        h.serve(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n')
        self.assertEqual(parse(second.value())[:1], (304,))

    def test_headFromGet(self) -> None:
        """A HEAD request is served from a GET's entry: its head, no body."""
        h = Harness(self)
        h.get()
        h.serve(response(b"hello", b"Cache-Control: max-age=60"))
        second = h.get(b"/a", method=b"HEAD")
        code, headers, body = parse(second.value())
        self.assertEqual((code, headers[b"content-length"], body), (200, b"5", b""))
        self.assertEqual(len(h.endpoint.attempts), 1)

    def test_notStored(self) -> None:
        """no-store, private, Set-Cookie, Vary: *, a 500, and no freshness nor validator: never stored."""
        h = Harness(self)
        for extra in [(b"Cache-Control: no-store, max-age=60",), (b"Cache-Control: private, max-age=60",),
                      (b"Cache-Control: max-age=60", b"Set-Cookie: a=b"), (b"Cache-Control: max-age=60", b"Vary: *"),
                      ()]:
            h.get()
            h.serve(response(b"x", *extra))
        h.get()
        h.serve(response(b"x", b"Cache-Control: max-age=60", code=b"500 Internal Server Error"))
        self.assertEqual((len(h.cache), h.cache.hits, h.cache.misses), (0, 0, 6))

    def test_defaultTTL(self) -> None:
        """defaultTTL makes a response without explicit freshness fresh for that long."""
        h = Harness(self, Cache(defaultTTL=30))
        h.get()
        h.serve(response(b"x"))
        h.reactor.advance(29)
        self.assertEqual(parse(h.get().value())[1][b"age"], b"29")
        h.reactor.advance(1)
        h.get()
        h.serve(response(b"y"))
        self.assertEqual(h.cache.misses, 2)

    def test_requestNoCache(self) -> None:
        """A request's Cache-Control: no-cache (or Pragma: no-cache) goes to the server; no-store bypasses."""
        h = Harness(self)
        h.get()
        h.serve(response(b"one", b"Cache-Control: max-age=60"))
        second = h.get(b"/a", b"Pragma: no-cache")
        h.serve(response(b"two", b"Cache-Control: max-age=60"))
        self.assertEqual(parse(second.value())[2], b"two")
        self.assertEqual(parse(h.get().value())[2], b"two")
        third = h.get(b"/a", b"Cache-Control: no-store")
        h.serve(response(b"three", b"Cache-Control: max-age=60"))
        self.assertEqual(parse(third.value())[2], b"three")
        self.assertEqual(parse(h.get().value())[2], b"two")

    def test_onlyIfCached(self) -> None:
        """only-if-cached is served a fresh entry, else 504 without asking the server."""
        h = Harness(self)
        h.get()
        h.serve(response(b"one", b"Cache-Control: max-age=60"))
        self.assertEqual(parse(h.get(b"/a", b"Cache-Control: only-if-cached").value())[2], b"one")
        other = h.get(b"/b", b"Cache-Control: only-if-cached")
        self.assertEqual(parse(other.value())[0], 504)
        self.assertEqual(len(h.endpoint.attempts), 1)

    def test_requestMaxAge(self) -> None:
        """A request's max-age refuses an entry older than that."""
        h = Harness(self)
        h.get()
        h.serve(response(b"one", b"Cache-Control: max-age=60"))
        h.reactor.advance(10)
        second = h.get(b"/a", b"Cache-Control: max-age=5")
        h.serve(response(b"two", b"Cache-Control: max-age=60"))
        self.assertEqual(parse(second.value())[2], b"two")

    def test_vary(self) -> None:
        """Vary keeps one entry per value of the headers it names."""
        h = Harness(self)
        for lang in [b"en", b"fr"]:
            h.get(b"/a", b"Accept-Language: " + lang)
            h.serve(response(lang, b"Cache-Control: max-age=60", b"Vary: Accept-Language"))
        self.assertEqual(parse(h.get(b"/a", b"Accept-Language: fr").value())[2], b"fr")
        self.assertEqual(parse(h.get(b"/a", b"Accept-Language: en").value())[2], b"en")
        third = h.get(b"/a")
        h.serve(response(b"none", b"Cache-Control: max-age=60", b"Vary: Accept-Language"))
        self.assertEqual(parse(third.value())[2], b"none")
        self.assertEqual((h.cache.hits, len(h.cache)), (2, 3))

    def test_credentials(self) -> None:
        """A request with Authorization or a cookie is served (and stored) only what says public."""
        h = Harness(self)
        h.get()
        h.serve(response(b"shared", b"Cache-Control: max-age=60"))
        first = h.get(b"/a", b"Authorization: Basic eDp5")
        h.serve(response(b"mine", b"Cache-Control: max-age=60"))
        self.assertEqual(parse(first.value())[2], b"mine")
        self.assertEqual(parse(h.get().value())[2], b"shared")
        h.get(b"/p", b"Cookie: a=b")
        h.serve(response(b"public", b"Cache-Control: public, max-age=60"))
        self.assertEqual(parse(h.get(b"/p", b"Cookie: c=d").value())[2], b"public")
        self.assertEqual(h.cache.hits, 2)

    def test_chunked(self) -> None:
        """A chunked response is stored as its data and served with a Content-Length."""
        h = Harness(self)
        first = h.get()
        h.serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=60\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        self.assertTrue(first.value().endswith(b"0\r\n\r\n"))
        code, headers, body = parse(h.get().value())
        self.assertEqual((body, headers[b"content-length"]), (b"abcde", b"5"))
        self.assertNotIn(b"transfer-encoding", headers)

    def test_tooBig(self) -> None:
        """A body over maxObjectBytes streams through and is not stored (by length, or as it grows)."""
        h = Harness(self, Cache(maxBytes=10000, maxObjectBytes=100))
        first = h.get()
        h.serve(response(b"x" * 101, b"Cache-Control: max-age=60"))
        self.assertEqual(len(parse(first.value())[2]), 101)
        h.get()
        h.serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=60\r\n\r\n"
                b"64\r\n" + b"y" * 100 + b"\r\n1\r\nz\r\n0\r\n\r\n")
        self.assertEqual((len(h.cache), h.cache.bytes), (0, 0))

    def test_lru(self) -> None:
        """Past maxBytes the least recently used entries go first."""
        h = Harness(self, Cache(maxBytes=2000, maxObjectBytes=600))
        for path in [b"/1", b"/2"]:
            h.get(path)
            h.serve(response(b"x" * 500, b"Cache-Control: max-age=60"))
        h.get(b"/1")  # /1 is now the most recently used
        h.get(b"/3")
        h.serve(response(b"x" * 500, b"Cache-Control: max-age=60"))
        self.assertEqual(h.cache.keys(), [b"example.com/1", b"example.com/3"])
        self.assertEqual(h.cache.evictions, 1)
        self.assertLessEqual(h.cache.bytes, 2000)

    def test_unsafeInvalidates(self) -> None:
        """A POST to a URI drops its entries."""
        h = Harness(self)
        h.get()
        h.serve(response(b"x", b"Cache-Control: max-age=60"))
        h.send(b"POST /a HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n")
        h.serve(response(b"done"))
        self.assertEqual(len(h.cache), 0)

    def test_purge(self) -> None:
        """purge drops one key, or every key under a prefix."""
        h = Harness(self)
        for path in [b"/s/1", b"/s/2", b"/t"]:
            h.get(path)
            h.serve(response(b"x", b"Cache-Control: max-age=60"))
        self.assertEqual(h.cache.purge(key=b"example.com/t"), 1)
        self.assertEqual(h.cache.purge(prefix=b"example.com/s/"), 2)
        self.assertEqual((len(h.cache), h.cache.purged, h.cache.bytes), (0, 3, 0))

    def test_routeCache(self) -> None:
        """A route's own cache serves the requests it takes."""
        own = Cache(name="own")
        h = Harness(self, routeCache=own)
        h.get(b"/r/x")
        h.serve(response(b"x", b"Cache-Control: max-age=60"))
        self.assertEqual((len(own), len(h.cache)), (1, 0))


class CollapseTests(SynchronousTestCase):
    """Concurrent misses for one key: one request goes to the server, the others wait for it."""

    def test_collapsed(self) -> None:
        """Three concurrent requests: the server sees one, all three get its response."""
        h = Harness(self)
        clients = [h.get() for _ in range(3)]
        self.assertEqual(len(h.endpoint.attempts), 1)
        h.serve(response(b"once", b"Cache-Control: max-age=60"))
        self.assertEqual([parse(c.value())[2] for c in clients], [b"once"] * 3)
        self.assertEqual((h.cache.hits, h.cache.misses), (2, 1))

    def test_uncacheableReleasesWaiters(self) -> None:
        """When the response is not storable the waiters go to the server themselves, at once."""
        h = Harness(self)
        clients = [h.get() for _ in range(3)]
        h.serve(response(b"one", b"Cache-Control: no-store"))
        self.assertEqual(len(h.endpoint.pending), 1)  # (the first connection went back to the pool)
        for side in [h.serverConn, h.harness.connect(h.server)]:
            side.protocol.dataReceived(response(b"again"))
        self.assertEqual([parse(c.value())[2] for c in clients], [b"one", b"again", b"again"])

    def test_maxWaiters(self) -> None:
        """Past maxWaiters, requests go to the server."""
        h = Harness(self, Cache(maxWaiters=1))
        [h.get() for _ in range(3)]
        self.assertEqual(len(h.endpoint.attempts), 2)

    def test_waiterLeaves(self) -> None:
        """A waiting client that leaves is forgotten."""
        h = Harness(self)
        h.get()
        h.get()
        h.clients[-1].protocol.connectionLost(None)
        h.serve(response(b"x", b"Cache-Control: max-age=60"))
        self.assertEqual(h.cache.pending, {})
        self.assertEqual(h.cache.hits, 0)

    def test_serverFails(self) -> None:
        """When the request at the server fails, the waiters go to the server themselves."""
        h = Harness(self)
        h.get()
        waiter = h.get()
        while h.endpoint.pending:
            h.endpoint.fail(ConnectionRefusedError())
        self.assertEqual(h.cache.pending, {})
        self.assertEqual(waiter.value()[:12], b"HTTP/1.1 503")


class ConfigTests(SynchronousTestCase):
    """Bad settings get a ConfigError saying what is wrong."""

    def test_bad(self) -> None:
        """Negative sizes, maxObjectBytes over maxBytes, a bad TTL, a non-Cache: refused."""
        for kwargs, message in [({"maxBytes": -1}, "maxBytes must be"), ({"maxBytes": 10, "maxObjectBytes": 20},
                                "is more than maxBytes"), ({"defaultTTL": "1"}, "defaultTTL must be")]:
            e = self.assertRaises(ConfigError, Cache, **kwargs)
            self.assertIn(message, str(e))
        backend = Backend("be", [Server("s", FakeEndpoint())])
        self.assertRaises(ConfigError, Frontend, "tcp:80", default=backend, cache={})
        self.assertRaises(ConfigError, Route, pathBegins("/"), backend, cache=1)

    def test_siteFileLine(self) -> None:
        """In a site file, the error names the file and the line of the bad Cache."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("from lbkit import Backend, Server, http\n\nweb = Backend('web', [Server('w', '127.0.0.1:9001')])\n"
                    "listen = [\n    http.Frontend('tcp:8133', default=web,\n"
                    "                  cache=http.Cache(maxObjectBytes=2**27)),\n]\n")
        e = self.assertRaises(ConfigError, loadSite, path)
        self.assertEqual(str(e), f"{path}:6: http.Cache: maxObjectBytes (134217728) is more than maxBytes (67108864)")

    def test_nothingWhenNotConfigured(self) -> None:
        """A frontend with no cache anywhere has no caching to ask."""
        backend = Backend("be", [Server("s", FakeEndpoint())])
        plain = Frontend("tcp:80", default=backend)
        self.assertEqual((plain.caching, plain.answering), (None, False))
        cached = Frontend("tcp:80", [Route(pathBegins("/"), backend, cache=Cache())])
        self.assertIsNotNone(cached.caching)
        self.assertTrue(cached.answering)


class CollapseRevalidationTests(SynchronousTestCase):
    """Collapsed forwarding of revalidations and of responses to revalidate on every use."""

    def test_noCacheServedToWaiters(self) -> None:
        """Waiters get the response just stored even when it says no-cache: the server sees one request."""
        h = Harness(self)
        clients = [h.get() for _ in range(3)]
        h.serve(response(b"new", b"Cache-Control: no-cache", b'ETag: "1"'))
        self.assertEqual([parse(c.value())[2] for c in clients], [b"new"] * 3)
        self.assertEqual(len(h.endpoint.attempts), 1)

    def test_revalidationCollapsed(self) -> None:
        """Concurrent requests for a stale entry: one conditional request, everyone gets the refreshed entry."""
        h = Harness(self)
        h.get()
        h.serve(response(b"body", b"Cache-Control: max-age=1", b'ETag: "1"'))
        h.reactor.advance(2)
        clients = [h.get() for _ in range(3)]
        got = h.serve(b'HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=60\r\nETag: "1"\r\n\r\n')
        self.assertIn(b'If-None-Match: "1"', got)
        self.assertEqual([parse(c.value())[2] for c in clients], [b"body"] * 3)
        self.assertEqual((h.cache.revalidated, h.cache.hits, h.cache.misses), (1, 2, 2))
        self.assertEqual(h.endpoint.pending, [])

    def test_varyMismatchGoesOn(self) -> None:
        """A waiter whose Vary values differ from the stored response's goes to the server itself."""
        h = Harness(self)
        first = h.get(b"/a", b"Accept-Language: en")
        other = h.get(b"/a", b"Accept-Language: fr")
        h.serve(response(b"en", b"Cache-Control: max-age=60", b"Vary: Accept-Language"))
        h.serve(response(b"fr", b"Cache-Control: max-age=60", b"Vary: Accept-Language"))
        self.assertEqual((parse(first.value())[2], parse(other.value())[2]), (b"en", b"fr"))
        self.assertEqual(len(h.cache), 2)


class FromHAProxyTests(SynchronousTestCase):
    """python -m lbkit.fromhaproxy translates cache sections and cache-use / cache-store."""

    def test_translated(self) -> None:
        """A cache section becomes an http.Cache the frontend uses; what has no equivalent is reported."""
        config = (
            "defaults\n    mode http\ncache static\n    total-max-size 16\n    max-object-size 524288\n"
            "    max-age 120\n    process-vary on\n    max-secondary-entries 5\n"
            "frontend fe\n    bind 127.0.0.1:8134\n    http-request cache-use static\n"
            "    http-response cache-store static\n    default_backend be\n"
            "backend be\n    http-request cache-use static\n    server s1 127.0.0.1:9174\n"
            "frontend other\n    bind 127.0.0.1:8135\n    http-request cache-use static if { path_beg /s }\n"
            "    http-request cache-use nope\n    default_backend be\n"
        )
        source, problems = translate(config, "hc.cfg")
        self.assertEqual([(n, why.split(":")[0]) for n, _, why in problems], [
            (8, "no lbkit equivalent for this cache setting"),
            (15, "lbkit's cache is on an http frontend or a route (cache=...), not a backend"),
            (19, "a cache used under a condition"), (20, "no cache section 'nope'"),
        ])
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(source)
        site = loadSite(path)
        fe, other = [item for item in site.listen if isinstance(item, Frontend)]
        cache = fe.cache
        assert cache is not None
        self.assertEqual((cache.maxBytes, cache.maxObjectBytes, cache.defaultTTL, cache.name),
                         (16 * 2**20, 524288, 120.0, "static"))
        self.assertIsNone(other.cache)
