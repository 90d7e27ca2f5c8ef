# -*- test-case-name: tests.test_cache_store -*-
"""
http mode, the response cache's configuration and memory, with no I/O:
L{Cache} (C{http.Cache}: its bounds, its L{Entry}s in least recently used
order, its counters, purging) and the collapsed-forwarding bookkeeping
(which keys have a request at a server, and who waits for it).

The exchange side (looking up, storing, serving) is L{lbkit.http._cache}.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional

from lbkit._origin import definedAt
from lbkit.error import ConfigError
from lbkit.http._cachepolicy import currentAge
from lbkit.http._parse import Request

__all__ = ["Cache", "Entry", "cacheKey", "ENTRY_OVERHEAD"]

#: Bytes an entry is counted for besides its body and headers (its objects).
ENTRY_OVERHEAD = 256


def cacheKey(request: Request) -> bytes:
    """The key of C{request}'s responses: its C{Host} (lower-cased, no port) and its target, e.g. C{b"example.com/a?b"}."""
    return (request.host or b"") + request.uri


class Entry:
    """
    One stored response.

    @ivar key: Its L{cacheKey}.
    @ivar code: Its status; C{reason}: its reason phrase.
    @ivar headers: Its headers (no hop-by-hop ones, no C{Age}; a
        C{Content-Length} for the stored body).
    @ivar body: Its body, whole.
    @ivar vary: The lower-case names its C{Vary} header lists, and
        C{varyValues}: the request's values of them, which a request must
        have too to be served it.
    @ivar lifetime: Its freshness lifetime (seconds).
    @ivar requestTime: When the request that got it went out; C{responseTime}:
        when it arrived; C{dateValue}: its C{Date}; C{ageValue}: its C{Age}
        as received (RFC 9111 §4.2.3).
    @ivar public: It said C{public}: requests with credentials may be served it.
    @ivar noCache: It said C{no-cache}: revalidated before every use.
    @ivar etag: Its C{ETag}, C{lastModified}: its C{Last-Modified},
        C{date}: its C{Date} header (C{None} if absent).
    """

    __slots__ = (
        "key", "code", "reason", "headers", "body", "vary", "varyValues", "lifetime",
        "requestTime", "responseTime", "dateValue", "ageValue", "public", "noCache", "size",
        "etag", "lastModified", "date",
    )

    def __init__(
        self,
        key: bytes,
        code: int,
        reason: bytes,
        headers: list[list[bytes]],
        body: bytes,
        vary: tuple[bytes, ...],
        varyValues: tuple[bytes, ...],
    ) -> None:
        self.key = key
        self.code = code
        self.reason = reason
        self.headers = headers
        self.body = body
        self.vary = vary
        self.varyValues = varyValues
        self.lifetime = 0.0
        self.requestTime = self.responseTime = 0.0
        self.dateValue: Optional[float] = None
        self.ageValue = 0.0
        self.public = self.noCache = False
        self.size = 0
        self.measure()

    def measure(self) -> None:
        """Work out L{size} and the validators again (after its headers changed)."""
        self.size = ENTRY_OVERHEAD + len(self.key) + len(self.body) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        self.etag, self.lastModified, self.date = self.header(b"etag"), self.header(b"last-modified"), self.header(b"date")

    def header(self, name: bytes) -> Optional[bytes]:
        """The first value of header C{name} (lower-case), or C{None}."""
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def age(self, now: float) -> float:
        """Its current age (RFC 9111 §4.2.3)."""
        return currentAge(self.dateValue, self.ageValue, self.requestTime, self.responseTime, now)

    def fresh(self, now: float) -> bool:
        """Whether it may be served without revalidation at C{now}."""
        return not self.noCache and self.age(now) < self.lifetime

    def __repr__(self) -> str:
        return f"<Entry {self.key!r} {self.code} {len(self.body)} bytes>"


class Cache:
    """
    An in-memory HTTP response cache for a frontend or a route
    (C{http.Frontend(..., cache=...)}, C{http.Route(..., cache=...)});
    HAProxy's C{cache} section, nginx's C{proxy_cache}.  See docs/cache.md.

    @ivar maxBytes: The most it holds (bodies, headers and bookkeeping);
        the least recently used entries go first when a new one needs room.
    @ivar maxObjectBytes: The largest body stored; larger ones stream
        through and are not held.
    @ivar defaultTTL: Seconds a response without explicit freshness
        (C{max-age}, C{s-maxage}, C{Expires}) stays fresh; 0 stores only
        those that say (or that can be revalidated).
    @ivar maxWaiters: How many requests for one key may wait for the one
        request at the server (collapsed forwarding); more go to the
        server themselves.
    @ivar name: Its name on the stats page, C{/metrics} and in purges.
    @ivar hits: Requests answered from it (304s to clients included).
    @ivar misses: Requests for which it had nothing usable.
    @ivar revalidated: Stale entries a server's 304 refreshed.
    @ivar stores: Responses stored; C{evictions}: entries dropped for room;
        C{purged}: entries purged.
    @ivar bytes: What it holds now (bytes); C{objects} (and C{len(cache)}):
        its entries.  (With C{--workers}, the supervisor's copy shows the
        sums of its workers' counters.)
    """

    def __init__(
        self,
        maxBytes: int = 64 * 2**20,
        maxObjectBytes: int = 2**20,
        defaultTTL: float = 0,
        *,
        maxWaiters: int = 64,
        name: Optional[str] = None,
    ) -> None:
        self.definedAt = definedAt()
        where = "http.Cache"
        for what, value in (("maxBytes", maxBytes), ("maxObjectBytes", maxObjectBytes), ("maxWaiters", maxWaiters)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{where}: {what} must be a whole number of 0 or more, not {value!r}")
        if maxObjectBytes > maxBytes:
            raise ConfigError(f"{where}: maxObjectBytes ({maxObjectBytes}) is more than maxBytes ({maxBytes})")
        if not isinstance(defaultTTL, (int, float)) or isinstance(defaultTTL, bool) or defaultTTL < 0:
            raise ConfigError(f"{where}: defaultTTL must be seconds, 0 or more, not {defaultTTL!r}")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"{where}: name must be a str, not {name!r}")
        self.maxBytes = maxBytes
        self.maxObjectBytes = maxObjectBytes
        self.defaultTTL = float(defaultTTL)
        self.maxWaiters = maxWaiters
        self.name = name or "cache"
        self.hits = self.misses = self.revalidated = self.stores = self.evictions = self.purged = 0
        self.bytes = self.objects = 0
        self._lru: OrderedDict[tuple[bytes, tuple[bytes, ...], tuple[bytes, ...]], Entry] = OrderedDict()
        self._byKey: dict[bytes, list[Entry]] = {}
        #: key -> the exchanges waiting for the one request at a server.
        self.pending: dict[bytes, list[Any]] = {}

    def __repr__(self) -> str:
        return f"<http.Cache {self.name} {len(self._lru)} entries, {self.bytes} bytes>"

    def __len__(self) -> int:
        return len(self._lru)

    @staticmethod
    def _slot(entry: Entry) -> tuple[bytes, tuple[bytes, ...], tuple[bytes, ...]]:
        return (entry.key, entry.vary, entry.varyValues)

    def find(self, key: bytes, request: Request) -> Optional[Entry]:
        """The entry for C{key} whose C{Vary} values C{request} has, made the most recently used; or C{None}."""
        for entry in self._byKey.get(key, ()):
            if entry.vary and tuple(b",".join(request.headerValues(n)) for n in entry.vary) != entry.varyValues:
                continue
            self._lru.move_to_end(self._slot(entry))
            return entry
        return None

    def put(self, entry: Entry) -> bool:
        """
        Store C{entry} (in place of one with the same key and C{Vary}
        values), evicting the least recently used ones for room.

        @return: Whether it was stored (it may be bigger than the cache).
        """
        slot = self._slot(entry)
        old = self._lru.get(slot)
        if old is not None:
            self._remove(old)
        if entry.size > self.maxBytes:
            return False
        self._lru[slot] = entry
        self._byKey.setdefault(entry.key, []).append(entry)
        self.bytes += entry.size
        self.objects += 1
        self.stores += 1
        lru = self._lru
        while self.bytes > self.maxBytes:
            _, oldest = next(iter(lru.items()))
            self._remove(oldest)
            self.evictions += 1
        return True

    def resized(self, entry: Entry, oldSize: int) -> None:
        """C{entry}, stored, changed size (its headers were refreshed): count it, and evict for room."""
        self.bytes += entry.size - oldSize
        self._lru.move_to_end(self._slot(entry))
        while self.bytes > self.maxBytes and self._lru:
            _, oldest = next(iter(self._lru.items()))
            self._remove(oldest)
            self.evictions += 1

    def _remove(self, entry: Entry) -> None:
        if self._lru.pop(self._slot(entry), None) is None:
            return
        self.bytes -= entry.size
        self.objects -= 1
        variants = self._byKey[entry.key]
        variants.remove(entry)
        if not variants:
            del self._byKey[entry.key]

    def invalidate(self, key: bytes) -> int:
        """Drop every entry of C{key} (an unsafe method was sent to it, RFC 9111 §4.4); return how many."""
        variants = list(self._byKey.get(key, ()))
        for entry in variants:
            self._remove(entry)
        return len(variants)

    def purge(self, key: Optional[bytes] = None, prefix: Optional[bytes] = None) -> int:
        """
        Drop the entries of C{key}, or of every key starting with
        C{prefix} (C{b""}: all), as the admin API and the command socket
        ask; return how many were dropped.
        """
        if key is not None:
            count = self.invalidate(key)
        elif prefix is not None:
            count = 0
            for k in [k for k in self._byKey if k.startswith(prefix)]:
                count += self.invalidate(k)
        else:
            raise ValueError("purge needs a key or a prefix")
        self.purged += count
        return count

    def keys(self) -> list[bytes]:
        """The keys stored, least recently used first."""
        return [slot[0] for slot in self._lru]

    def stats(self) -> dict[str, Any]:
        """Its counters, as the stats page, C{/stats.json} and C{/metrics} show them."""
        return {
            "name": self.name, "hits": self.hits, "misses": self.misses, "revalidated": self.revalidated,
            "stores": self.stores, "evictions": self.evictions, "purged": self.purged,
            "bytes": self.bytes, "maxBytes": self.maxBytes, "objects": self.objects,
        }
