# -*- test-case-name: tests.test_balance_hash -*-
"""
Hash of the request URI (HAProxy's C{balance uri}).
"""

from __future__ import annotations

from zope.interface import implementer

from lbkit._model import Context
from lbkit.balance._hashing import _HashBalancer
from lbkit.error import ConfigError
from lbkit.interfaces import IAdoptingBalancer, IBalancer, IExplainingBalancer, IHashingBalancer

__all__ = ["URI"]


def _positive(name: str, value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"URI: {name} must be a positive integer or None, not {value!r}")
    return value


@implementer(IBalancer, IExplainingBalancer, IAdoptingBalancer, IHashingBalancer)
class URI(_HashBalancer):
    """
    Hash the request's path (or whole URI) onto the servers by weight, so a
    given URL always goes to the same server: use it in front of caches
    and proxies to raise their hit rate.

    In tcp mode, with no request, the pick falls back to round robin.

    @ivar whole: Hash the query string too.
    @ivar len: Hash only the first C{len} bytes.
    @ivar depth: Hash only the first C{depth} directories.
    """

    def __init__(
        self,
        whole: bool = False,
        len: int | None = None,
        depth: int | None = None,
        **hashOptions: object,
    ) -> None:
        """
        @param whole: Hash the whole request target, query string included
            (HAProxy's C{whole}); by default only the path, before any
            C{?}.
        @param len: Hash only the first C{len} bytes (HAProxy's C{len}).
        @param depth: Hash only up to the C{depth}-th directory: each
            C{/} starts one level, so C{depth=2} hashes C{/a/b} of
            C{/a/b/c.png} (HAProxy's C{depth}).
        @param hashOptions: C{hashType}, C{hashBalanceFactor} and the
            table options, as for every hashing balancer.
        """
        super().__init__(**hashOptions)  # type: ignore[arg-type]
        self.whole = bool(whole)
        self.len = _positive("len", len)
        self.depth = _positive("depth", depth)

    def _key(self, context: Context) -> bytes | None:
        request = context.request
        if request is None:
            return None
        target: bytes = request.uri if self.whole else request.path
        return _truncate(target, self.len, self.depth)


def _truncate(target: bytes, length: int | None, depth: int | None) -> bytes:
    if length is not None:
        target = target[:length]
    if depth is not None:
        position = -1
        for _ in range(depth + 1):
            position = target.find(b"/", position + 1)
            if position < 0:
                break
        else:
            target = target[:position]
    return target
