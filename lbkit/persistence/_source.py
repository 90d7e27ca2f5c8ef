# -*- test-case-name: tests.test_persistence -*-
"""
Source-address affinity: a stick table keyed by client address.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.interfaces import (
    IAdoptingPersistence,
    IExplainingPersistence,
    IPersistence,
    IStickyCount,
    IStore,
)

if TYPE_CHECKING:
    from lbkit._backend import Backend

__all__ = ["StickySource"]


#: The start of the name of a backend's stick table in a store.
TABLE = "stick:"


@implementer(IPersistence, IStickyCount, IExplainingPersistence, IAdoptingPersistence)
class StickySource:
    """
    Keep each client address on the server it used last (HAProxy's
    C{stick-table type ip} with C{stick on src}).  Works in tcp and http
    modes.

    With a C{store}, the table is shared with every lbkit process using
    the same store (docs/store.md): L{remember} updates the local table at
    once and writes through to the store in the background, and what
    other processes remember arrives in the local table through the store.
    L{recall} always reads the local table only.  Entries are then kept by
    backend name and server name: a name no server of the backend has (any
    longer) is no entry.

    @param expire: Seconds an entry lives after its last use.
    @param size: At most this many entries; the least recently used one
        is evicted to make room.
    @param clock: A callable returning seconds (defaults to
        C{time.monotonic}); or an object with C{seconds()} like a reactor.
    @param store: An L{IStore} (such as L{lbkit.store.Redis}) to share the
        table through, or C{None}.  The balancer's service starts and stops
        it.
    """

    def __init__(
        self, expire: float = 1800.0, size: int = 100_000, clock: Any = None, store: Any = None
    ) -> None:
        if expire <= 0:
            raise ValueError("expire must be positive")
        if size < 1:
            raise ValueError("size must be at least 1")
        if store is not None and not IStore.providedBy(store):
            raise ValueError(f"store={store!r} does not provide lbkit.interfaces.IStore")
        self.expire = float(expire)
        self.size = int(size)
        self.store: Optional[IStore] = store
        seconds: Callable[[], float]
        if clock is None:
            seconds = time.monotonic
        elif callable(clock):
            seconds = clock
        else:
            seconds = clock.seconds
        self._seconds = seconds
        # (id(backend), host) -> (Server, seen); with a store,
        # (backend name, host) -> (server name, seen)
        self._table: OrderedDict[tuple[Any, str], tuple[Union[Server, str], float]] = OrderedDict()
        self._attached: dict[str, Backend] = {}

    def attach(self, backend: Backend) -> None:
        """
        Share C{backend}'s entries through the store: watch its table.
        The service calls it for each backend using this strategy when it
        starts or reloads; L{recall} and L{remember} too, on first seeing a
        backend.  Without a store it does nothing.
        """
        if self.store is None:
            return
        name = backend.name
        known = name in self._attached
        self._attached[name] = backend
        if not known:
            self.store.watch(TABLE + name, partial(self._received, name))

    def _received(self, name: str, host: str, server: str, ttl: float) -> None:
        seen = self._seconds() - max(0.0, self.expire - ttl)
        key = (name, host)
        table = self._table
        entry = table.get(key)
        if entry is not None and entry[0] == server and entry[1] >= seen:
            return  # what we know is as fresh
        table[key] = (server, seen)
        table.move_to_end(key)
        while len(table) > self.size:
            table.popitem(last=False)

    def _key(self, backend: Backend, context: Context) -> Optional[tuple[Any, str]]:
        host = getattr(context.client, "host", None)
        if host is None:
            return None
        if self.store is None:
            return (id(backend), host)
        if backend.name not in self._attached:
            self.attach(backend)
        return (backend.name, host)

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
        if isinstance(server, str):
            return next((s for s in backend.servers if s.name == server), None)
        return server

    def remember(self, backend: Backend, server: Server, context: Context) -> None:
        key = self._key(backend, context)
        if key is None:
            return
        table = self._table
        store = self.store
        if store is None:
            table[key] = (server, self._seconds())
        else:
            table[key] = (server.name, self._seconds())
            store.set(TABLE + backend.name, key[1], server.name, self.expire)
        table.move_to_end(key)
        while len(table) > self.size:
            table.popitem(last=False)

    def stickyClients(self, backend: Backend, server: Server) -> list[str]:
        """The client addresses whose live entry names C{server} of C{backend}."""
        now = self._seconds()
        byName = self.store is not None
        mine = backend.name if byName else id(backend)
        target: Union[Server, str] = server.name if byName else server
        return [
            key[1] for key, (named, seen) in self._table.items()
            if key[0] == mine and named == target and now - seen <= self.expire
        ]

    def explainRecall(self, backend: Backend, context: Context) -> str:
        """What L{recall} is about to find for C{context}, in one phrase; changes nothing."""
        host = getattr(context.client, "host", None)
        if host is None:
            return "source: no client address"
        key = (backend.name, host) if self.store is not None else (id(backend), host)
        entry = self._table.get(key)
        if entry is None:
            return f"source: no entry for {host}"
        server, seen = entry
        age = self._seconds() - seen
        name = server if isinstance(server, str) else server.name
        if age > self.expire:
            return f"source: entry {host} -> {name} expired {age - self.expire:.0f}s ago"
        return f"source: {host} -> {name} (seen {age:.0f}s ago)"

    def adopt(self, previous: object) -> bool:
        """
        Take the entries of C{previous}, another L{StickySource} without a
        store (an entry keeps its age; this table's C{size} applies).
        """
        if not isinstance(previous, StickySource) or previous.store is not None or self.store is not None:
            return False
        for key, entry in previous._table.items():
            self._table[key] = entry
        while len(self._table) > self.size:
            self._table.popitem(last=False)
        return True

    def entries(self) -> list[tuple[str, str, float]]:
        """
        The live entries, oldest first: C{(client address, server
        full name, seconds since last use)}.
        """
        now = self._seconds()
        return [
            (key[1], f"{key[0]}/{server}" if isinstance(server, str) else server.fullName, now - seen)
            for key, (server, seen) in self._table.items()
            if now - seen <= self.expire
        ]

    def __len__(self) -> int:
        return len(self._table)
