# -*- test-case-name: tests.test_traffic -*-
"""
What a stick table counts by: the key of a request or connection
(L{bySource}, L{byHeader}, L{byCookie}, L{byParam}, L{byPath}).

A key is an object with a C{keyOf(request, context)} method returning a
str (C{None}: nothing to count by, the request is not tracked) and a
C{clientOnly} flag (it reads only the client's address, so tcp mode can
use it).  No I/O.
"""

from __future__ import annotations

import socket
from typing import Any, Optional, Union
from urllib.parse import unquote_to_bytes

from lbkit.error import ConfigError

__all__ = ["Key", "SourceKey", "bySource", "byHeader", "byCookie", "byParam", "byPath", "checkedKey"]

_Text = Union[str, bytes]


class Key:
    """
    Base of the built-in keys.

    @ivar clientOnly: Whether it reads only the client's address.
    @ivar description: How it is shown (stats, errors).
    """

    clientOnly = False
    description = "key"

    def __repr__(self) -> str:
        return self.description

    def keyOf(self, request: Any, context: Any) -> Optional[str]:
        """The key of C{request} (C{None} in tcp mode) from C{context}, or C{None}."""
        raise NotImplementedError


def _masked(host: str, bits: int, family: int, width: int) -> str:
    packed = int.from_bytes(socket.inet_pton(family, host), "big")
    packed &= ((1 << bits) - 1) << (width - bits)
    return f"{socket.inet_ntop(family, packed.to_bytes(width // 8, 'big'))}/{bits}"


class SourceKey(Key):
    """
    The client's IP address, or its network: L{bySource} is the whole
    address; C{bySource(24)} counts each IPv4 /24 as one key,
    C{bySource(64)} each IPv6 /64 (a single prefix over 32 is an IPv6
    one), C{bySource(24, 64)} both.  Callable to make one with prefixes.

    @ivar ipv4: The IPv4 prefix length (32: the address).
    @ivar ipv6: The IPv6 prefix length (128: the address).
    """

    clientOnly = True

    def __init__(self, ipv4: int = 32, ipv6: int = 128) -> None:
        for bits, top in ((ipv4, 32), (ipv6, 128)):
            if not isinstance(bits, int) or isinstance(bits, bool) or not 0 < bits <= top:
                raise ConfigError(f"bySource: prefix length {bits!r} is not 1 to {top}")
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.description = "bySource" if (ipv4, ipv6) == (32, 128) else f"bySource({ipv4}, {ipv6})"

    def __call__(self, ipv4: Optional[int] = None, ipv6: Optional[int] = None) -> SourceKey:
        """A source key with these prefix lengths (one over 32 alone is IPv6's)."""
        if ipv6 is None and ipv4 is not None and not isinstance(ipv4, bool) and isinstance(ipv4, int) and ipv4 > 32:
            ipv4, ipv6 = None, ipv4
        return SourceKey(32 if ipv4 is None else ipv4, 128 if ipv6 is None else ipv6)

    def keyOf(self, request: Any, context: Any) -> Optional[str]:
        """The client's address (or network), or C{None} when it has none (a UNIX socket)."""
        host: Optional[str] = getattr(context.client, "host", None)
        if host is None:
            return None
        if ":" in host:
            if self.ipv6 == 128:
                return host
            try:
                return _masked(host, self.ipv6, socket.AF_INET6, 128)
            except OSError:
                return host
        if self.ipv4 == 32:
            return host
        try:
            return _masked(host, self.ipv4, socket.AF_INET, 32)
        except OSError:
            return host


#: The client's IP address; C{bySource(24)} or C{bySource(64)} for its network.
bySource = SourceKey()


def _name(name: _Text, what: str) -> bytes:
    if isinstance(name, str):
        name = name.encode("latin-1")
    if not isinstance(name, bytes) or not name:
        raise ConfigError(f"{what}: the name must be a non-empty str, not {name!r}")
    return name


class _ByHeader(Key):
    def __init__(self, name: _Text) -> None:
        self.name = _name(name, "byHeader").lower()
        self.description = f"byHeader({self.name.decode('latin-1')!r})"

    def keyOf(self, request: Any, context: Any) -> Optional[str]:
        if request is None:
            return None
        value = request.header(self.name)
        return None if value is None else value.decode("latin-1")


class _ByCookie(Key):
    def __init__(self, name: _Text) -> None:
        self.name = _name(name, "byCookie")
        self.description = f"byCookie({self.name.decode('latin-1')!r})"

    def keyOf(self, request: Any, context: Any) -> Optional[str]:
        if request is None:
            return None
        want = self.name
        for header in request.headerValues(b"cookie"):
            for pair in header.split(b";"):
                name, eq, value = pair.strip().partition(b"=")
                if eq and name == want:
                    return str(value.strip(b'"').decode("latin-1"))
        return None


class _ByParam(Key):
    def __init__(self, name: _Text) -> None:
        self.name = _name(name, "byParam")
        self.description = f"byParam({self.name.decode('latin-1')!r})"

    def keyOf(self, request: Any, context: Any) -> Optional[str]:
        if request is None or not request.query:
            return None
        want = self.name
        for pair in request.query.split(b"&"):
            name, eq, value = pair.partition(b"=")
            if unquote_to_bytes(name.replace(b"+", b" ")) == want:
                return unquote_to_bytes(value.replace(b"+", b" ")).decode("latin-1")
        return None


class _ByPath(Key):
    description = "byPath"

    def keyOf(self, request: Any, context: Any) -> Optional[str]:
        return None if request is None else str(request.path.decode("latin-1"))


def byHeader(name: _Text) -> Key:
    """The value of the request's first header C{name} (HAProxy's C{req.hdr(name)})."""
    return _ByHeader(name)


def byCookie(name: _Text) -> Key:
    """The value of the request's cookie C{name} (HAProxy's C{req.cook(name)})."""
    return _ByCookie(name)


def byParam(name: _Text) -> Key:
    """The value of the query parameter C{name}, decoded (HAProxy's C{url_param(name)})."""
    return _ByParam(name)


#: The request's path, without its query (HAProxy's C{path}).
byPath: Key = _ByPath()


def checkedKey(key: Any, what: str) -> Key:
    """C{key}, checked to be a key (L{bySource} and friends), else L{ConfigError}."""
    if not callable(getattr(key, "keyOf", None)):
        raise ConfigError(f"{what}: key must be traffic.bySource, byHeader(...) and friends, not {key!r}")
    return key  # type: ignore[no-any-return]
