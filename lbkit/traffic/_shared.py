# -*- test-case-name: tests.test_traffic_shared -*-
"""
A table's counts shared between processes through an
L{lbkit.interfaces.IStore} (L{lbkit.store.Redis}): each process publishes
its own counters of each key it touched, at most every C{flushEvery}
seconds (at once when the last time was longer ago, else by a timer on the
table's clock, which L{SharedCounts.stop} cancels), as the store entry
C{"<process>\\t<key>"} of the store table C{"traffic.<name>"}; what the
others publish arrives through the store's C{watch} and is added to the
local counts when a counter is read.  Rates are estimated per process and
summed, so every process must read the same clock (the reactor's wall
time; periods are aligned on it).
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from typing import Any, Callable

__all__ = ["SharedCounts", "FLUSH_EVERY"]

#: Seconds between two publications of a table's changed keys, at most.
FLUSH_EVERY = 0.5

#: The prefix of a table's name in the store.
PREFIX = "traffic."


class SharedCounts:
    """
    The part of a L{lbkit.traffic.Table} that talks to its store.

    @ivar process: This process's name in the store (random).
    @ivar remote: C{{key: {process: (entry, until)}}}: what the other
        processes published, each until its time to live ran out; at most
        the table's C{size} keys, the least recently heard of out first.
    @ivar published: How many store writes it made.
    """

    def __init__(self, store: Any, name: str, size: int, expire: float, now: Callable[[], float],
                 clock: Callable[[], Any], flushEvery: float = FLUSH_EVERY) -> None:
        self.store = store
        self.table = PREFIX + name
        self.size = size
        self.expire = expire
        self.now = now
        self.clock = clock
        self.flushEvery = flushEvery
        self._call: Any = None
        self.process = uuid.uuid4().hex[:12]
        self.remote: OrderedDict[str, dict[str, tuple[list[Any], float]]] = OrderedDict()
        self.dirty: dict[str, list[Any]] = {}
        self.published = 0
        self._nextFlush = 0.0
        self._watching = False

    def attach(self) -> None:
        """Start hearing what the other processes publish (once; when the service runs the store)."""
        if not self._watching:
            self._watching = True
            self.store.watch(self.table, self.received)

    def touched(self, key: str, entry: list[Any], now: float) -> None:
        """C{key}'s counters changed: publish them with the next flush (now, if one is due)."""
        self.dirty[key] = entry
        if now >= self._nextFlush:
            self.flush(now)
        elif self._call is None:
            clock = self.clock()
            if clock is not None:
                self._call = clock.callLater(self._nextFlush - now, self._due)

    def _due(self) -> None:
        self._call = None
        self.flush(self.now())

    def stop(self) -> None:
        """The store stops: publish what changed now, and cancel the timer."""
        if self.dirty:
            self.flush(self.now())
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def flush(self, now: float) -> None:
        """Publish every changed key now."""
        self._nextFlush = now + self.flushEvery
        if self._call is not None:
            self._call.cancel()
            self._call = None
        dirty, self.dirty = self.dirty, {}
        process, table, ttl = self.process, self.table, self.expire
        for key, entry in dirty.items():
            self.store.set(table, f"{process}\t{key}", json.dumps(entry[:-1]), ttl)
            self.published += 1

    def received(self, storeKey: str, value: str, ttl: float) -> None:
        """A store listener: another process published C{storeKey}."""
        process, sep, key = storeKey.partition("\t")
        if not sep or process == self.process:
            return
        try:
            entry = json.loads(value)
        except ValueError:
            return
        if not isinstance(entry, list) or not all(isinstance(v, (int, float)) for v in entry):
            return
        remote = self.remote
        byProcess = remote.get(key)
        if byProcess is None:
            byProcess = remote[key] = {}
            if len(remote) > self.size:
                remote.popitem(last=False)
        else:
            remote.move_to_end(key)
        byProcess[process] = (entry, self.now() + ttl)

    def others(self, key: str, now: float) -> list[list[Any]]:
        """The live entries other processes published for C{key}."""
        byProcess = self.remote.get(key)
        if not byProcess:
            return []
        live = []
        for process, (entry, until) in list(byProcess.items()):
            if until <= now:
                del byProcess[process]
            else:
                live.append(entry)
        return live
