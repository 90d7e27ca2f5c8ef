# -*- test-case-name: tests.test_cache_policy -*-
"""
http mode, the response cache's rules, with no I/O: the RFC 9111 subset a
shared cache applies (docs/cache.md).  L{CacheControl} parses the
directives; L{freshnessLifetime} and L{currentAge} are RFC 9111 §4.2's
arithmetic; L{storable} says whether (and for how long) a response may be
stored; L{notModified} evaluates a client's conditional request against a
stored response (RFC 9110 §13.2.2).

Times are seconds since the epoch (a reactor's C{seconds()}).
"""

from __future__ import annotations

import email.utils
from typing import Optional, Sequence

from lbkit.http._parse import Request, Response

__all__ = [
    "CACHEABLE_STATUSES",
    "CacheControl",
    "httpDate",
    "formatHTTPDate",
    "freshnessLifetime",
    "currentAge",
    "storable",
    "notModified",
    "etagsMatch",
]

#: The statuses RFC 9110 §15.1 calls heuristically cacheable (206 left
#: out: the cache does not store ranges); only these are stored.
CACHEABLE_STATUSES = frozenset([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])


class CacheControl:
    """
    The directives of a message's C{Cache-Control} headers: lower-case
    names (bytes) to their argument (bytes, without quotes) or C{None}.
    """

    __slots__ = ("directives",)

    def __init__(self, values: Sequence[bytes]) -> None:
        directives: dict[bytes, Optional[bytes]] = {}
        for value in values:
            for part in value.split(b","):
                name, eq, arg = part.partition(b"=")
                name = name.strip().lower()
                if not name:
                    continue
                # the first occurrence wins (RFC 9111 §4.2.1: a duplicate is invalid)
                directives.setdefault(name, arg.strip().strip(b'"') if eq else None)
        self.directives = directives

    def __contains__(self, name: bytes) -> bool:
        return name in self.directives

    def seconds(self, name: bytes) -> Optional[int]:
        """
        The delta-seconds of directive C{name}, or C{None} if absent; an
        invalid value counts as 0 (stale: the safe reading).
        """
        if name not in self.directives:
            return None
        arg = self.directives[name]
        if arg is None or not arg.isdigit():
            return 0
        return int(arg)

    def __repr__(self) -> str:
        return f"<CacheControl {self.directives!r}>"


def httpDate(value: Optional[bytes]) -> Optional[float]:
    """An HTTP-date (any of RFC 9110 §5.6.7's three forms) as seconds, or C{None} if absent or invalid."""
    if value is None:
        return None
    parsed = email.utils.parsedate_tz(value.decode("latin-1"))
    if parsed is None:
        return None
    try:
        return float(email.utils.mktime_tz(parsed))
    except (OverflowError, ValueError):
        return None


def formatHTTPDate(when: float) -> bytes:
    """C{when} as an IMF-fixdate (RFC 9110 §5.6.7)."""
    return email.utils.formatdate(when, usegmt=True).encode("ascii")


def freshnessLifetime(response: Response, cc: CacheControl, defaultTTL: float, responseTime: float) -> float:
    """
    How long C{response} stays fresh in a shared cache (RFC 9111 §4.2.1):
    C{s-maxage}, else C{max-age}, else C{Expires} less C{Date} (an invalid
    C{Expires} means already expired), else C{defaultTTL} (the heuristic
    lifetime, RFC 9111 §4.2.2).  C{no-cache} makes it 0: every use is
    revalidated.
    """
    if b"no-cache" in cc:
        return 0.0
    for name in (b"s-maxage", b"max-age"):
        seconds = cc.seconds(name)
        if seconds is not None:
            return float(seconds)
    expiresValues = response.headerValues(b"expires")
    if expiresValues:
        expires = httpDate(expiresValues[0])
        if expires is None:
            return 0.0
        date = httpDate(response.header(b"date"))
        return max(0.0, expires - (date if date is not None else responseTime))
    return float(defaultTTL)


def currentAge(
    dateValue: Optional[float], ageValue: float, requestTime: float, responseTime: float, now: float
) -> float:
    """
    The age of a stored response at C{now} (RFC 9111 §4.2.3).

    @param dateValue: Its C{Date} (C{None}: the time it arrived).
    @param ageValue: Its C{Age} header as received (0 if none).
    @param requestTime: When the request that got it was sent.
    @param responseTime: When it arrived.
    """
    date = responseTime if dateValue is None else dateValue
    apparentAge = max(0.0, responseTime - date)
    correctedAgeValue = ageValue + (responseTime - requestTime)
    return max(apparentAge, correctedAgeValue) + (now - responseTime)


def _hasCredentials(request: Request) -> bool:
    return request.header(b"authorization") is not None or request.header(b"cookie") is not None


def storable(request: Request, response: Response, cc: CacheControl, defaultTTL: float, responseTime: float) -> Optional[float]:
    """
    Whether a shared cache may store C{response} to C{request} (RFC 9111
    §3, the subset docs/cache.md lists), and its freshness lifetime if so.

    Stored: a response to a C{GET}, of a L{CACHEABLE_STATUSES} status,
    without C{no-store}, C{private}, C{Vary: *} or C{Set-Cookie}, that is
    fresh for some time or can be revalidated (it has an C{ETag} or a
    C{Last-Modified}).  A request with C{Authorization} or a cookie gets
    its response stored only if it says C{public}.

    @return: The freshness lifetime in seconds, or C{None} if not storable.
    """
    if request.method != b"GET" or response.code not in CACHEABLE_STATUSES:
        return None
    if b"no-store" in cc or b"private" in cc:
        return None
    if _hasCredentials(request) and b"public" not in cc:
        return None
    if response.header(b"set-cookie") is not None:
        return None
    if any(v.strip() == b"*" for v in response.headerValues(b"vary")):
        return None
    lifetime = freshnessLifetime(response, cc, defaultTTL, responseTime)
    if lifetime <= 0 and response.header(b"etag") is None and response.header(b"last-modified") is None:
        return None
    return lifetime


def etagsMatch(condition: bytes, etag: Optional[bytes]) -> bool:
    """Whether an C{If-None-Match} value names C{etag} (weak comparison, RFC 9110 §8.8.3.2), or is C{*}."""
    condition = condition.strip()
    if condition == b"*":
        return etag is not None
    if etag is None:
        return False
    mine = etag.strip().removeprefix(b"W/")
    return any(tag.strip().removeprefix(b"W/") == mine for tag in condition.split(b","))


def notModified(request: Request, etag: Optional[bytes], lastModified: Optional[bytes], date: Optional[bytes]) -> bool:
    """
    Whether a client's conditional C{GET}/C{HEAD} is answered 304 by a
    stored response with these validators: C{If-None-Match} if present
    (RFC 9110 §13.2.2), else C{If-Modified-Since} against C{Last-Modified}
    (or the C{Date}).
    """
    inm = request.headerValues(b"if-none-match")
    if inm:
        return etagsMatch(b",".join(inm), etag)
    ims = httpDate(request.header(b"if-modified-since"))
    if ims is None:
        return False
    modified = httpDate(lastModified) if lastModified is not None else httpDate(date)
    return modified is not None and modified <= ims
