# -*- test-case-name: tests.test_persistence -*-
"""
Source-address affinity: a stick table keyed by client address.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Optional

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.interfaces import IPersistence

if TYPE_CHECKING:
    from lbkit._backend import Backend

__all__ = ["StickySource"]


@implementer(IPersistence)
class StickySource:
    """
    Keep each client address on the server it used last (HAProxy's
    C{stick-table type ip} with C{stick on src}).  Works in tcp and http
    modes.

    @param expire: Seconds an entry lives after its last use.
    @param size: At most this many entries; the least recently used one
        is evicted to make room.
    @param clock: A callable returning seconds (defaults to
        C{time.monotonic}); or an object with C{seconds()} like a reactor.
    """

    def __init__(self, expire: float = 1800.0, size: int = 100_000, clock: Any = None) -> None:
        if expire <= 0:
            raise ValueError("expire must be positive")
        if size < 1:
            raise ValueError("size must be at least 1")
        self.expire = float(expire)
        self.size = int(size)
        seconds: Callable[[], float]
        if clock is None:
            seconds = time.monotonic
        elif callable(clock):
            seconds = clock
        else:
            seconds = clock.seconds
        self._seconds = seconds
        self._table: OrderedDict[tuple[int, str], tuple[Server, float]] = OrderedDict()

    def _key(self, backend: Backend, context: Context) -> Optional[tuple[int, str]]:
        host = getattr(context.client, "host", None)
        if host is None:
            return None
        return (id(backend), host)

    def recall(self, backend: Backend, context: Context) -> Optional[Server]:
        key = self._key(backend, context)
        if key is None:
            return None
        entry = self._table.get(key)
        if entry is None:
            return None
        server, seen = entry
        if self._seconds() - seen > self.expire:
            del self._table[key]
            return None
        return server

    def remember(self, backend: Backend, server: Server, context: Context) -> None:
        key = self._key(backend, context)
        if key is None:
            return
        table = self._table
        table[key] = (server, self._seconds())
        table.move_to_end(key)
        while len(table) > self.size:
            table.popitem(last=False)

    def entries(self) -> list[tuple[str, str, float]]:
        """
        The live entries, oldest first: C{(client address, server
        full name, seconds since last use)}.
        """
        now = self._seconds()
        return [
            (key[1], server.fullName, now - seen)
            for key, (server, seen) in self._table.items()
            if now - seen <= self.expire
        ]

    def __len__(self) -> int:
        return len(self._table)
