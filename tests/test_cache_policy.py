# -*- test-case-name: tests.test_cache_policy -*-
"""
The response cache's rules with no I/O (L{lbkit.http._cachepolicy}) and
its memory (L{lbkit.http._cachestore}): RFC 9111 freshness and age
arithmetic on a L{Clock}, what may be stored, conditional requests, and
the store's bounds.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbkit.http import Cache, Request, Response
from lbkit.http._cachepolicy import (
    CacheControl,
    currentAge,
    formatHTTPDate,
    freshnessLifetime,
    httpDate,
    notModified,
    storable,
)
from lbkit.http._cachestore import ENTRY_OVERHEAD, Entry

T0 = 1_700_000_000.0


def resp(*headers: tuple[bytes, bytes], code: int = 200) -> Response:
    return Response(b"HTTP/1.1", code, b"OK", [[n, v] for n, v in headers])


def req(*headers: tuple[bytes, bytes], method: bytes = b"GET") -> Request:
    return Request(method, b"/a", b"HTTP/1.1", [[b"Host", b"example.com"]] + [[n, v] for n, v in headers])


class FreshnessTests(SynchronousTestCase):
    """RFC 9111 §4.2: freshness lifetime and age."""

    def test_dates(self) -> None:
        """The three HTTP-date forms parse alike; garbage is None; formatting round-trips."""
        for text in [b"Sun, 06 Nov 1994 08:49:37 GMT", b"Sunday, 06-Nov-94 08:49:37 GMT", b"Sun Nov  6 08:49:37 1994"]:
            self.assertEqual(httpDate(text), 784111777.0)
        self.assertIsNone(httpDate(b"0"))
        self.assertIsNone(httpDate(None))
        self.assertEqual(httpDate(formatHTTPDate(T0)), T0)

    def test_lifetimeOrder(self) -> None:
        """s-maxage beats max-age beats Expires - Date beats the default TTL."""
        date = (b"Date", formatHTTPDate(T0))
        expires = (b"Expires", formatHTTPDate(T0 + 100))
        both = resp(date, expires, (b"Cache-Control", b"max-age=10, s-maxage=20"))
        self.assertEqual(freshnessLifetime(both, CacheControl([b"max-age=10, s-maxage=20"]), 5, T0), 20)
        self.assertEqual(freshnessLifetime(both, CacheControl([b"max-age=10"]), 5, T0), 10)
        self.assertEqual(freshnessLifetime(resp(date, expires), CacheControl([]), 5, T0), 100)
        self.assertEqual(freshnessLifetime(resp(date), CacheControl([]), 5, T0), 5)

    def test_expiresWithoutDate(self) -> None:
        """Without a Date, Expires counts from when the response arrived; an invalid Expires is already stale."""
        expires = (b"Expires", formatHTTPDate(T0 + 30))
        self.assertEqual(freshnessLifetime(resp(expires), CacheControl([]), 0, T0), 30)
        self.assertEqual(freshnessLifetime(resp((b"Expires", b"0")), CacheControl([]), 60, T0), 0)

    def test_noCacheAndBadValues(self) -> None:
        """no-cache means a lifetime of 0; a malformed max-age counts as 0; the first duplicate wins."""
        self.assertEqual(freshnessLifetime(resp(), CacheControl([b"no-cache, max-age=60"]), 0, T0), 0)
        self.assertEqual(CacheControl([b"max-age=abc"]).seconds(b"max-age"), 0)
        self.assertEqual(CacheControl([b"max-age=5", b"max-age=9"]).seconds(b"max-age"), 5)
        self.assertEqual(CacheControl([b'max-age="7"']).seconds(b"max-age"), 7)
        self.assertIsNone(CacheControl([]).seconds(b"max-age"))

    def test_ageArithmetic(self) -> None:
        """current_age = max(apparent_age, age_value + response_delay) + resident_time (RFC 9111 §4.2.3)."""
        clock = Clock()
        clock.advance(T0)
        requestTime = clock.seconds()
        clock.advance(2)  # the response takes 2 s to arrive
        responseTime = clock.seconds()
        # a Date 10 s in the past (apparent age 12) beats Age: 5 + delay 2
        self.assertEqual(currentAge(T0 - 10, 5, requestTime, responseTime, clock.seconds()), 12)
        # Age: 30 from an upstream cache beats a fresh Date
        self.assertEqual(currentAge(responseTime, 30, requestTime, responseTime, clock.seconds()), 32)
        clock.advance(7)
        self.assertEqual(currentAge(responseTime, 30, requestTime, responseTime, clock.seconds()), 39)
        # a Date in the future (clock skew) makes no negative age; no Date counts as arrival
        self.assertEqual(currentAge(T0 + 100, 0, requestTime, responseTime, responseTime), 2)
        self.assertEqual(currentAge(None, 0, requestTime, responseTime, responseTime + 1), 3)

    def test_entryFreshness(self) -> None:
        """An entry is fresh while its age is under its lifetime, never when it said no-cache."""
        clock = Clock()
        clock.advance(T0)
        entry = Entry(b"k", 200, b"OK", [], b"x", (), ())
        entry.lifetime = 10
        entry.requestTime = entry.responseTime = clock.seconds()
        clock.advance(9.5)
        self.assertTrue(entry.fresh(clock.seconds()))
        clock.advance(0.5)
        self.assertFalse(entry.fresh(clock.seconds()))
        entry.lifetime, entry.noCache = 100, True
        self.assertFalse(entry.fresh(clock.seconds()))


class StorableTests(SynchronousTestCase):
    """What a shared cache may store (RFC 9111 §3)."""

    def check(self, request: Request, response: Response, default: float = 0) -> float | None:
        cc = CacheControl(response.headerValues(b"cache-control"))
        return storable(request, response, cc, default, T0)

    def test_statuses(self) -> None:
        """Heuristically cacheable statuses are stored; others (302, 500, 206) are not, even with max-age."""
        cc = (b"Cache-Control", b"max-age=60")
        for code in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]:
            self.assertEqual(self.check(req(), resp(cc, code=code)), 60, code)
        for code in [206, 302, 303, 307, 500, 502, 503]:
            self.assertIsNone(self.check(req(), resp(cc, code=code)), code)

    def test_methods(self) -> None:
        """Only responses to GET are stored."""
        cc = (b"Cache-Control", b"max-age=60")
        for method in [b"HEAD", b"POST", b"PUT"]:
            self.assertIsNone(self.check(req(method=method), resp(cc)))

    def test_validatorsWithoutFreshness(self) -> None:
        """A response with no freshness is stored only if it can be revalidated, or a default TTL applies."""
        self.assertIsNone(self.check(req(), resp()))
        self.assertEqual(self.check(req(), resp((b"ETag", b'"1"'))), 0)
        self.assertEqual(self.check(req(), resp(), default=9), 9)

    def test_credentials(self) -> None:
        """Authorization or Cookie: stored only if public."""
        cc = (b"Cache-Control", b"max-age=60")
        for cred in [(b"Authorization", b"Bearer x"), (b"Cookie", b"a=b")]:
            self.assertIsNone(self.check(req(cred), resp(cc)))
            self.assertEqual(self.check(req(cred), resp((b"Cache-Control", b"public, max-age=60"))), 60)


class ConditionalTests(SynchronousTestCase):
    """A client's conditional request against a stored response (RFC 9110 §13.2.2)."""

    def test_ifNoneMatch(self) -> None:
        """If-None-Match: weak comparison, lists, *; it takes precedence over If-Modified-Since."""
        self.assertTrue(notModified(req((b"If-None-Match", b'W/"a", "b"')), b'"a"', None, None))
        self.assertTrue(notModified(req((b"If-None-Match", b"*")), b'"a"', None, None))
        self.assertFalse(notModified(req((b"If-None-Match", b'"c"')), b'"a"', None, None))
        lastModified = formatHTTPDate(T0)
        both = req((b"If-None-Match", b'"c"'), (b"If-Modified-Since", formatHTTPDate(T0 + 10)))
        self.assertFalse(notModified(both, b'"a"', lastModified, None))

    def test_ifModifiedSince(self) -> None:
        """If-Modified-Since: not modified when Last-Modified (or the Date) is not later."""
        lastModified = formatHTTPDate(T0)
        self.assertTrue(notModified(req((b"If-Modified-Since", lastModified)), None, lastModified, None))
        self.assertFalse(notModified(req((b"If-Modified-Since", formatHTTPDate(T0 - 1))), None, lastModified, None))
        self.assertTrue(notModified(req((b"If-Modified-Since", lastModified)), None, None, lastModified))
        self.assertFalse(notModified(req((b"If-Modified-Since", b"garbage")), None, lastModified, None))
        self.assertFalse(notModified(req(), b'"a"', lastModified, None))


class StoreTests(SynchronousTestCase):
    """The store's bounds: bytes, least recently used first, purges."""

    def entry(self, key: bytes, size: int, vary: tuple[bytes, ...] = (), values: tuple[bytes, ...] = ()) -> Entry:
        return Entry(key, 200, b"OK", [], b"x" * (size - ENTRY_OVERHEAD - len(key)), vary, values)

    def test_bytesBound(self) -> None:
        """The store never holds more than maxBytes; the oldest go first; an entry bigger than all is refused."""
        cache = Cache(maxBytes=3000, maxObjectBytes=1000)
        for i in range(5):
            self.assertTrue(cache.put(self.entry(b"k%d" % i, 1000)))
            self.assertLessEqual(cache.bytes, 3000)
        self.assertEqual(cache.keys(), [b"k2", b"k3", b"k4"])
        self.assertEqual((cache.evictions, cache.bytes), (2, 3000))
        self.assertFalse(cache.put(self.entry(b"big", 3001)))
        self.assertEqual(len(cache), 3)

    def test_findRefreshes(self) -> None:
        """A found entry becomes the most recently used."""
        cache = Cache(maxBytes=2000, maxObjectBytes=1000)
        cache.put(self.entry(b"a", 1000))
        cache.put(self.entry(b"b", 1000))
        self.assertIsNotNone(cache.find(b"a", req()))
        cache.put(self.entry(b"c", 1000))
        self.assertEqual(cache.keys(), [b"a", b"c"])

    def test_replaceSameVariant(self) -> None:
        """Storing the same key and Vary values again replaces the entry; other values are other variants."""
        cache = Cache()
        cache.put(self.entry(b"a", 500, (b"accept-language",), (b"en",)))
        cache.put(self.entry(b"a", 600, (b"accept-language",), (b"en",)))
        cache.put(self.entry(b"a", 700, (b"accept-language",), (b"fr",)))
        self.assertEqual((len(cache), cache.bytes), (2, 1300))
        found = cache.find(b"a", req((b"Accept-Language", b"fr")))
        self.assertEqual(found.size if found else 0, 700)
        self.assertIsNone(cache.find(b"a", req((b"Accept-Language", b"de"))))

    def test_purge(self) -> None:
        """Purging by key or prefix frees the bytes; purge needs one of them."""
        cache = Cache()
        for key in [b"h/a/1", b"h/a/2", b"h/b"]:
            cache.put(self.entry(key, 400))
        self.assertEqual(cache.purge(prefix=b"h/a/"), 2)
        self.assertEqual(cache.purge(key=b"h/b"), 1)
        self.assertEqual(cache.purge(key=b"h/b"), 0)
        self.assertEqual((cache.bytes, cache.purged), (0, 3))
        self.assertRaises(ValueError, cache.purge)
