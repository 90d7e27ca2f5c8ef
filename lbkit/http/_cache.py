# -*- test-case-name: tests.test_cache -*-
"""
http mode, the response cache on the exchange's path (docs/cache.md).

A frontend with a L{lbkit.http.Cache} on itself or on a route has a
L{Caching} as its C{caching}; the exchange asks it, once routed, whether
the cache answers (L{Caching.lookUp}): a fresh entry is written to the
client as an answer is (L{serve}; a 304 if the client's conditions hold);
a stale one with validators goes to the server as a conditional request;
a miss goes on to the server, or waits for the one request for the same
key already there (collapsed forwarding: L{Waiter}).  A request that goes
to the server carries a L{CacheTx}: it sees the response head
(L{CacheTx.responseHeadBytes}: a 304 refreshes the entry and the client
gets the entry), copies the body as it streams to the client
(L{CacheTx.write}, up to C{maxObjectBytes}), and stores it when the
exchange ends complete (L{CacheTx.ended}), then wakes the waiters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from lbkit.http._body import CHUNKED, UNTIL_CLOSE, BodyReader
from lbkit.http._cachepolicy import CacheControl, freshnessLifetime, httpDate, notModified, storable
from lbkit.http._cachestore import Cache, Entry, cacheKey
from lbkit.http._headers import CODE_CLASS, HOP, connectionTokens
from lbkit.http._local import Held
from lbkit.http._parse import BadMessage, Request, Response

if TYPE_CHECKING:
    from lbkit.http._exchange import Exchange

__all__ = ["Caching", "CacheTx", "Waiter", "serve"]

_SAFE = (b"GET", b"HEAD", b"OPTIONS", b"TRACE")
_NO_DIRECTIVES = CacheControl(())
#: The headers a 304 from the cache carries (RFC 9110 §15.4.5), besides C{Age}.
_NOT_MODIFIED = frozenset(
    [b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified"]
)
#: Headers a 304 from a server does not change in the stored response (RFC 9111 §3.2).
_KEPT = HOP | frozenset([b"content-length", b"age"])


class Caching:
    """
    A frontend's C{caching}: which L{Cache} a routed request uses (its
    route's, else the frontend's), and the lookup.

    @ivar default: The frontend's cache, or C{None}.
    """

    def __init__(self, default: Optional[Cache]) -> None:
        self.default = default

    def lookUp(self, exchange: Exchange) -> bool:
        """
        The request of C{exchange} was routed: answer it from the cache,
        or hold it for the request already at the server (and return
        true), or get it ready to go to the server (false).
        """
        cache = getattr(exchange.route, "cache", None)
        if cache is None:
            cache = self.default
        if cache is None:
            return False
        return lookUp(cache, exchange)


#: The request headers the lookup reads (found in one pass over the headers).
_WATCHED = frozenset(
    [b"range", b"authorization", b"cookie", b"cache-control", b"pragma", b"if-none-match", b"if-modified-since"]
)


def _scan(request: Request) -> dict[bytes, list[bytes]]:
    """The values of the L{_WATCHED} headers of C{request}, by lower-case name."""
    seen: dict[bytes, list[bytes]] = {}
    for name, value in request.headers:
        lower = name.lower()
        if lower in _WATCHED:
            seen.setdefault(lower, []).append(value)
    return seen


def _conditional(request: Request) -> bool:
    return request.header(b"if-none-match") is not None or request.header(b"if-modified-since") is not None


def lookUp(cache: Cache, exchange: Exchange, collapse: bool = True) -> bool:
    """L{Caching.lookUp} with C{cache}; C{collapse=False}: never wait for another request."""
    request = exchange.request
    assert request is not None
    exchange.cacheTx, exchange.writer = None, exchange.side  # (nothing left of an earlier request)
    method = request.method
    if method != b"GET" and method != b"HEAD":
        if method not in _SAFE:
            cache.invalidate(cacheKey(request))  # RFC 9111 §4.4
        return False
    seen = _scan(request)
    if exchange.framing != 0 or exchange.upgrading or b"range" in seen:
        return False
    ccValues = seen.get(b"cache-control")
    cc = CacheControl(ccValues) if ccValues is not None else _NO_DIRECTIVES
    if b"no-store" in cc:
        return False
    key = cacheKey(request)
    now = exchange.reactor.seconds()
    credentials = b"authorization" in seen or b"cookie" in seen
    conditional = b"if-none-match" in seen or b"if-modified-since" in seen
    entry = cache.find(key, request)
    if entry is not None and credentials and not entry.public:
        entry = None
    if entry is not None:
        noCache = b"no-cache" in cc or (not cc.directives and b"no-cache" in seen.get(b"pragma", ()))
        maxAge = cc.seconds(b"max-age")
        if not noCache and entry.fresh(now) and (maxAge is None or entry.age(now) <= maxAge):
            cache.hits += 1
            serve(exchange, entry, now, request, conditional)
            return True
        if entry.etag is None and entry.lastModified is None:
            entry = None
    if b"only-if-cached" in cc:  # nothing fresh to give: 504 (RFC 9111 §5.2.1.7)
        cache.misses += 1
        exchange.fail(504, "LR")
        return True
    leader = False
    if collapse and not credentials and (entry is not None or not conditional):
        waiters = cache.pending.get(key)
        if waiters is None:
            if method == b"GET":
                cache.pending[key] = []
                leader = True
        elif len(waiters) < cache.maxWaiters:
            exchange.side.pauseReading()
            exchange.held = Waiter(cache, key, exchange)
            return True
    cache.misses += 1
    tx = CacheTx(cache, exchange, key, entry, now, leader)
    if entry is not None:
        # revalidate: the server's 304 refreshes the entry (RFC 9111 §4.3)
        for name in (b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since"):
            request.removeHeader(name)
        etag, lastModified = entry.etag, entry.lastModified
        if etag is not None:
            request.addHeader(b"If-None-Match", etag)
        if lastModified is not None:
            request.addHeader(b"If-Modified-Since", lastModified)
    exchange.cacheTx = exchange.writer = tx
    return False


def _clientResponse(entry: Entry, now: float, request: Request, conditional: bool) -> tuple[Response, bytes]:
    """
    What the client gets from C{entry}: a 304 if its conditions hold (when
    C{conditional}: it has some), else the entry; with C{Age}.  (The
    headers are the entry's own lists: what writes a head only reads them.)
    """
    age = [b"Age", b"%d" % int(entry.age(now))]
    if conditional and notModified(request, entry.etag, entry.lastModified, entry.date):
        headers = [h for h in entry.headers if h[0].lower() in _NOT_MODIFIED]
        headers.append(age)
        return Response(b"HTTP/1.1", 304, b"Not Modified", headers), b""
    body = b"" if request.method == b"HEAD" else entry.body
    return Response(b"HTTP/1.1", entry.code, entry.reason, entry.headers + [age]), body


def serve(exchange: Exchange, entry: Entry, now: float, request: Request, conditional: bool) -> None:
    """Answer the request of C{exchange} from C{entry}, as an answer from the balancer is written."""
    response, body = _clientResponse(entry, now, request, conditional)
    side = exchange.side
    code = exchange.status = response.code
    exchange.termination = "--"
    exchange.respondedAt = now
    exchange.factory.responses[CODE_CLASS[code // 100]] += 1
    exchange._go("answer")
    head = side.responseHeadBytes(response, len(body), False)
    if head:
        side.writeResponse(head)
    if body:
        side.writeResponse(body)
    exchange.bytesOut = len(head) + len(body)
    exchange.noServer = "<CACHE>"  # logged as HAProxy logs a hit: "be/<CACHE>"
    try:
        exchange._end(not exchange.closeAfter)
    finally:
        del exchange.noServer
    if exchange.closeAfter:
        exchange.close()
    else:
        exchange._after()


class Waiter(Held):
    """
    A request waiting for the one request for its key at the server
    (collapsed forwarding), as the exchange's C{held}: when that one
    ends, it is served from the cache, or goes to the server itself.
    """

    def __init__(self, cache: Cache, key: bytes, exchange: Exchange) -> None:
        self.cache = cache
        self.key = key
        self.exchange = exchange
        cache.pending[key].append(self)

    def wake(self, entry: Optional[Entry]) -> None:
        """
        The request it waited for ended, with C{entry} stored or refreshed
        (or C{None}): it is served that entry if its C{Vary} values are the
        same (even one to revalidate on every use: it is as new as can be),
        else it is looked up again, without waiting this time.
        """
        exchange = self.exchange
        exchange.held = None
        request = exchange.request
        if request is None or exchange.clientGone:
            return
        cache = self.cache
        if entry is not None and cache.find(self.key, request) is entry:
            cache.hits += 1
            serve(exchange, entry, exchange.reactor.seconds(), request, _conditional(request))
        elif not lookUp(cache, exchange, collapse=False):
            exchange.toServer()

    def cancel(self) -> None:
        """The client left, or the exchange was dropped."""
        self.exchange.held = None
        waiters = self.cache.pending.get(self.key)
        if waiters is not None and self in waiters:
            waiters.remove(self)


class CacheTx:
    """
    What the cache does for one request that goes to a server (see the
    module docstring); the exchange's C{cacheTx} until it ends.

    @ivar entry: The stale entry being revalidated, or C{None}.
    @ivar leader: Whether requests for the same key wait for this one.
    """

    def __init__(self, cache: Cache, exchange: Exchange, key: bytes, entry: Optional[Entry], now: float, leader: bool) -> None:
        self.cache = cache
        self.exchange = exchange
        self.key = key
        self.entry = entry
        self.requestTime = now
        self.leader = leader
        assert exchange.request is not None
        #: The request as the client sent it (its own conditions).
        self.clientRequest = Request(exchange.request.method, exchange.request.uri, exchange.request.version,
                                     exchange.request.headers)
        self.sideWrite: Callable[[bytes], None] = exchange.side.writeResponse
        #: The exchange's C{writer}'s C{writeResponse} (L{write}).
        self.writeResponse = self.write
        self._response: Optional[Response] = None
        self._pieces: Optional[list[bytes]] = None
        self._size = self._skip = self._length = 0
        self._reader: Optional[BodyReader] = None
        self._lifetime = 0.0
        self._cc: Optional[CacheControl] = None
        self._responseTime = now
        #: The entry stored or refreshed for this request, for the waiters.
        self._result: Optional[Entry] = None

    def write(self, data: bytes) -> None:
        """The exchange's C{writeResponse}: to the client, and a copy of the body to store."""
        self.sideWrite(data)
        pieces = self._pieces
        if pieces is None:
            return
        skip = self._skip
        if skip:
            if len(data) <= skip:
                self._skip = skip - len(data)
                return
            data = data[skip:]
            self._skip = 0
        reader = self._reader
        if reader is not None:
            try:
                reader.feed(data)
            except BadMessage:
                self._pieces = None
                return
            framer = reader.framer
            assert framer is not None and framer.pieces is not None
            got, framer.pieces = framer.pieces, []
            pieces.extend(got)
            self._size += sum(len(p) for p in got)
        else:
            pieces.append(data)
            self._size += len(data)
        if self._size > self.cache.maxObjectBytes:
            self._pieces = None  # too big: it streams through, and is not held

    def responseHeadBytes(self, response: Response, framing: int, interim: bool) -> bytes:
        """
        The exchange's C{responseHeadBytes} for the final response head: a
        304 to a revalidation refreshes the entry and the client gets the
        entry (C{head + body}); a storable response starts being copied.
        """
        exchange = self.exchange
        side = exchange.side
        now = self._responseTime = exchange.reactor.seconds()
        entry = self.entry
        if entry is not None and response.code == 304:
            self._refresh(entry, response, now)
            self._result = entry
            out, body = _clientResponse(entry, now, self.clientRequest, _conditional(self.clientRequest))
            exchange.status = out.code
            return side.responseHeadBytes(out, len(body), False) + body
        head = side.responseHeadBytes(response, framing, interim)
        request = exchange.request
        if framing == UNTIL_CLOSE or framing > self.cache.maxObjectBytes or request is None:
            return head
        cc = CacheControl(response.headerValues(b"cache-control"))
        lifetime = storable(self.clientRequest, response, cc, self.cache.defaultTTL, now)
        if lifetime is None:
            return head
        self._response, self._cc, self._lifetime = response, cc, lifetime
        self._pieces = []
        self._skip = len(head)
        self._length = framing
        if framing == CHUNKED and not exchange.decodesChunked:
            reader = self._reader = BodyReader()
            reader.start(CHUNKED, decode=True)
        return head

    def _complete(self) -> bool:
        reader = self._reader
        if reader is not None:
            return reader.done
        return self._length == CHUNKED or self._size == self._length

    def ended(self, exchange: Exchange, complete: bool) -> None:
        """
        The exchange ended, its response C{complete} (or cut short): store
        what was copied if it is whole, and wake the waiters.
        """
        exchange.cacheTx = None
        exchange.writer = exchange.side
        response = self._response
        if complete and response is not None and self._pieces is not None and self._complete():
            self._store(response, b"".join(self._pieces))
        self._pieces = None
        if self.leader:
            waiters = self.cache.pending.pop(self.key, [])
            result = self._result if complete else None
            for waiter in waiters:
                waiter.wake(result)

    def _times(self, entry: Entry, response: Response, now: float) -> None:
        entry.requestTime, entry.responseTime = self.requestTime, now
        entry.dateValue = httpDate(response.header(b"date"))
        age = response.header(b"age")
        entry.ageValue = float(age) if age is not None and age.strip().isdigit() else 0.0

    def _store(self, response: Response, body: bytes) -> None:
        assert self._cc is not None and self.exchange.request is not None
        tokens = connectionTokens(response.headers)
        headers = [[n, v] for n, v in response.headers if n.lower() not in _KEPT and n.lower() not in tokens]
        headers.append([b"Content-Length", b"%d" % len(body)])
        vary = tuple(
            sorted({t.strip().lower() for v in response.headerValues(b"vary") for t in v.split(b",") if t.strip()})
        )
        request = self.clientRequest
        values = tuple(b",".join(request.headerValues(n)) for n in vary)
        entry = Entry(self.key, response.code, response.reason, headers, body, vary, values)
        entry.lifetime = self._lifetime
        entry.public = b"public" in self._cc
        entry.noCache = b"no-cache" in self._cc
        self._times(entry, response, self._responseTime)
        if self.cache.put(entry):
            self._result = entry

    def _refresh(self, entry: Entry, response: Response, now: float) -> None:
        """A 304 answered the revalidation of C{entry}: update its headers and times (RFC 9111 §4.3.4)."""
        tokens = connectionTokens(response.headers)
        fresh = [[n, v] for n, v in response.headers if n.lower() not in _KEPT and n.lower() not in tokens]
        names = {n.lower() for n, _ in fresh}
        entry.headers = [h for h in entry.headers if h[0].lower() not in names] + fresh
        cc = CacheControl([v for n, v in entry.headers if n.lower() == b"cache-control"])
        entry.lifetime = 0.0 if b"no-cache" in cc else _lifetimeOf(entry, cc, self.cache.defaultTTL, now)
        entry.noCache = b"no-cache" in cc
        entry.public = b"public" in cc
        self._times(entry, response, now)
        if entry.dateValue is None:
            entry.dateValue = httpDate(entry.header(b"date"))
        oldSize = entry.size
        entry.measure()
        self.cache.resized(entry, oldSize)
        self.cache.revalidated += 1


def _lifetimeOf(entry: Entry, cc: CacheControl, defaultTTL: float, now: float) -> float:
    return freshnessLifetime(Response(b"HTTP/1.1", entry.code, entry.reason, entry.headers), cc, defaultTTL, now)
