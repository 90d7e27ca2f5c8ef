# -*- test-case-name: tests.test_traffic -*-
"""
Stick tables: per-key counters (HAProxy's C{conn_cur}, C{conn_rate},
C{http_req_rate}, C{http_err_rate}, C{bytes_in_rate}, C{bytes_out_rate})
in a bounded table (L{Table}): at most C{size} keys, the least recently
used out first, and a key not seen for C{expire} seconds forgotten.

A rate is HAProxy's frequency counter (C{freq_ctr_period}): the events of
the current period (periods aligned on the clock) plus those of the
previous one weighted by the part of it still inside the sliding window,
rounded down.  No timers: expiry happens as keys are used, and time is
read from the table's clock (the frontend's reactor, or one given).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from lbkit.error import ConfigError
from lbkit.interfaces import IStore
from lbkit.traffic._keys import Key, bySource, checkedKey
from lbkit.traffic._shared import SharedCounts

__all__ = ["Table", "COUNTERS", "RATES", "rate", "hit"]

#: The counters a table may keep, HAProxy's names.
COUNTERS = ("conn_cur", "conn_rate", "http_req_rate", "http_err_rate", "bytes_in_rate", "bytes_out_rate")
#: Those that are rates over a period.
RATES = COUNTERS[1:]
#: The period of a rate not given one, as HAProxy's examples use.
DEFAULT_PERIOD = 10.0
_SPEC = re.compile(r"^([a-z_]+)(?:\((\d+(?:\.\d+)?)(ms|s|m|h|d)?\))?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

# An entry is a list: [last seen, conn_cur, then per rate: period start, current, previous, and last its key].
_SEEN, _CUR = 0, 1


def hit(entry: list[Any], i: int, period: float, now: float, inc: int) -> None:
    """Add C{inc} to the rate counter at C{entry[i:i+3]} (HAProxy's C{update_freq_ctr_period})."""
    start = entry[i]
    if now - start >= period:
        periods = (now - start) // period
        entry[i + 2] = entry[i + 1] if periods == 1 else 0
        entry[i] = start + periods * period
        entry[i + 1] = 0
    entry[i + 1] += inc


def rate(entry: list[Any], i: int, period: float, now: float) -> int:
    """The events over the sliding C{period} (HAProxy's C{read_freq_ctr_period})."""
    elapsed = now - entry[i]
    curr, prev = entry[i + 1], entry[i + 2]
    if elapsed >= period:
        if elapsed >= 2 * period:
            return 0
        prev, curr = curr, 0
        elapsed -= period
    return int(curr) + int(prev * (period - elapsed) / period)


def _period(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{what}: a period must be a number of seconds over 0, not {value!r}")
    return float(value)


def _counters(spec: Union[None, Mapping[str, Any], Iterable[str]], where: str) -> dict[str, float]:
    """C{{name: period}} (0 for conn_cur) from a dict or HAProxy-style strings."""
    if spec is None:
        return {name: 0.0 if name == "conn_cur" else DEFAULT_PERIOD for name in COUNTERS}
    found: dict[str, float] = {}
    if isinstance(spec, Mapping):
        items = list(spec.items())
    elif isinstance(spec, (str, bytes)):
        raise ConfigError(f"{where}: counters must be a dict or a list of names, not {spec!r}")
    else:
        items = []
        for text in spec:
            m = _SPEC.match(text) if isinstance(text, str) else None
            if m is None:
                raise ConfigError(f"{where}: {text!r} is not a counter such as 'http_req_rate(10s)'")
            period = None if m.group(2) is None else float(m.group(2)) * _UNITS[m.group(3)]
            items.append((m.group(1), period))
    for name, period in items:
        if name not in COUNTERS:
            raise ConfigError(f"{where}: unknown counter {name!r} (one of {', '.join(COUNTERS)})")
        if name == "conn_cur":
            if period not in (None, 0):
                raise ConfigError(f"{where}: conn_cur has no period")
            found[name] = 0.0
        else:
            found[name] = DEFAULT_PERIOD if period is None else _period(period, f"{where}: {name}")
    return found


class Table:
    """
    A stick table: counters per key, bounded (see the module docstring).

    Rules fill it: L{lbkit.traffic.track}, L{lbkit.traffic.RateLimit},
    L{lbkit.traffic.ConnLimit}; matchers read it (L{lbkit.traffic.above}).

    @ivar name: Its name, unique in a site (stats, C{show table NAME}).
    @ivar key: What it counts by (L{lbkit.traffic.bySource} and friends).
    @ivar size: How many keys it holds at most.
    @ivar expire: Seconds after which an idle key (no connection open) is
        forgotten.
    @ivar counters: C{{name: period in seconds}} of what it keeps (0 for
        C{conn_cur}).
    @ivar clock: What gives the time (C{seconds()}): the reactor of the
        first frontend that uses it, unless given.
    @ivar store: The L{lbkit.interfaces.IStore} through which the counts
        are shared with other processes (L{lbkit.store.Redis}), or C{None}.
    @ivar shared: Its L{SharedCounts}, or C{None} without a store.
    @ivar evicted: Keys pushed out because the table was full.
    """

    def __init__(
        self,
        name: str,
        key: Key = bySource,
        size: int = 100_000,
        expire: float = 60.0,
        store: Any = None,
        counters: Union[None, Mapping[str, Any], Sequence[str]] = None,
        clock: Any = None,
    ) -> None:
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ConfigError(f"traffic.Table: the name must be a word, not {name!r}")
        where = f"traffic.Table({name!r})"
        self.name = name
        self.key = checkedKey(key, where)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"{where}: size must be a number of keys over 0, not {size!r}")
        self.size = size
        self.expire = _period(expire, f"{where}: expire")
        if store is not None and not IStore.providedBy(store):
            raise ConfigError(f"{where}: store={store!r} does not provide lbkit.interfaces.IStore (lbkit.store.Redis)")
        self.store = store
        self.counters = _counters(counters, where)
        self.shared: Optional[SharedCounts] = None
        if store is not None:
            self.shared = SharedCounts(store, name, size, self.expire, self.now, lambda: self.clock)
        self.clock = clock
        self.evicted = 0
        #: With workers, in the supervisor: the sum of what the workers
        #: reported (L{report}, L{merged}); C{None} elsewhere.
        self.reported: Optional[dict[str, Any]] = None
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()
        index = 2
        self.index: dict[str, int] = {}
        for name_ in RATES:
            if name_ in self.counters:
                self.index[name_] = index
                index += 3
        self._width = index
        self._rates = tuple((self.index[n], self.counters[n]) for n in RATES if n in self.counters)
        #: (index, period) of each rate, or -1 when not kept, for the trackers
        self.slots = {n: (self.index.get(n, -1), self.counters.get(n, 0.0)) for n in RATES}
        #: the rates a tracked connection and request count at once
        self.onConnection = tuple(self.slots[n] for n in ("conn_rate",) if n in self.counters)
        self.onRequest = tuple(self.slots[n] for n in ("conn_rate", "http_req_rate") if n in self.counters)
        self._err = self.slots["http_err_rate"]
        self._bytes = tuple(self.slots[n] for n in ("bytes_in_rate", "bytes_out_rate"))
        self._atEnd = self._err[0] >= 0 or any(i >= 0 for i, _ in self._bytes)

    def __repr__(self) -> str:
        return f"<traffic.Table {self.name} {self.key!r} {len(self._entries)}/{self.size}>"

    def __len__(self) -> int:
        reported = self.reported
        return len(self._entries) if reported is None else int(reported["used"])

    def report(self, limit: int = 50) -> dict[str, Any]:
        """What a worker tells the supervisor (JSON): its size, evictions and C{limit} most recent keys."""
        entries: dict[str, list[Any]] = {}
        for key in reversed(self._entries):
            entries[key] = self._entries[key][:-1]
            if len(entries) >= limit:
                break
        return {"used": len(self._entries), "evicted": self.evicted, "entries": entries}

    @staticmethod
    def merged(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Several workers' L{report}s of one table as one: sizes summed, each key's entries together."""
        entries: dict[str, list[list[Any]]] = {}
        for report in reports:
            for key, entry in report.get("entries", {}).items():
                entries.setdefault(key, []).append(entry)
        return {"used": sum(r.get("used", 0) for r in reports),
                "evicted": sum(r.get("evicted", 0) for r in reports), "entries": entries}

    def now(self) -> float:
        """The time on the table's clock (the wall clock, what a reactor's is, while it has none)."""
        clock = self.clock
        return time.time() if clock is None else float(clock.seconds())

    def keeps(self, counter: str) -> bool:
        """Whether it keeps C{counter}."""
        return counter in self.counters

    def entry(self, key: str, now: float) -> list[Any]:
        """
        The entry of C{key}, made if new, marked used at C{now}; a full
        table forgets its least recently used key, and keys idle longer
        than C{expire} go.
        """
        entries = self._entries
        found = entries.get(key)
        if found is not None:
            entries.move_to_end(key)
            found[_SEEN] = now
        else:
            found = [0] * self._width + [key]
            found[_SEEN] = now
            for i, period in self._rates:
                found[i] = (now // period) * period
            entries[key] = found
            if len(entries) > self.size:
                entries.popitem(last=False)
                self.evicted += 1
        # expire the oldest, one per use (amortised, no timer)
        oldest = next(iter(entries))
        old = entries[oldest]
        if now - old[_SEEN] >= self.expire:
            if old[_CUR] > 0:
                old[_SEEN] = now  # in use: HAProxy keeps it too
                entries.move_to_end(oldest)
            else:
                del entries[oldest]
        return found

    def attach(self) -> None:
        """With a store: start hearing the other processes (the service calls it when it runs the store)."""
        if self.shared is not None:
            self.shared.attach()

    def adopt(self, previous: Table) -> None:
        """Take the keys and counts of C{previous}, a table of the same layout (a reload)."""
        if self.clock is None:
            self.clock = previous.clock
        entries = previous._entries
        while len(entries) > self.size:
            entries.popitem(last=False)
        self._entries, previous._entries = entries, OrderedDict()
        self.evicted = previous.evicted
        if self.shared is not None and previous.shared is not None:
            previous.shared.stop()
            self.shared.process = previous.shared.process
            self.shared.remote = previous.shared.remote

    def detach(self) -> None:
        """With a store: publish what is left and stop the timer (the service calls it when it stops the store)."""
        if self.shared is not None:
            self.shared.stop()

    def changed(self, entry: list[Any], now: float) -> None:
        """C{entry}'s counters changed (with a store: publish them soon)."""
        if self.shared is not None:
            self.shared.touched(entry[-1], entry, now)

    def get(self, key: str) -> Optional[list[Any]]:
        """The entry of C{key}, or C{None}; not marked used."""
        return self._entries.get(key)

    def value(self, key: Optional[str], counter: str, now: Optional[float] = None) -> int:
        """C{counter} of C{key} now (0 for a key it does not hold)."""
        if key is None:
            return 0
        entry = self._entries.get(key)
        if self.shared is None:
            return 0 if entry is None else self._local(entry, counter, self.now() if now is None else now)
        now = self.now() if now is None else now
        total = 0 if entry is None else self._local(entry, counter, now)
        for other in self.shared.others(key, now):
            total += self._local(other, counter, now)
        return total

    def valueOf(self, entry: list[Any], counter: str, now: float) -> int:
        """C{counter} of C{entry} at C{now} (with a store: summed over the processes)."""
        if self.shared is None:
            return self._local(entry, counter, now)
        return self.value(entry[-1], counter, now)

    def _local(self, entry: list[Any], counter: str, now: float) -> int:
        if counter == "conn_cur":
            return int(entry[_CUR])
        i = self.index.get(counter)
        if i is None:
            return 0
        return rate(entry, i, self.counters[counter], now)

    def rateOf(self, entry: list[Any], i: int, period: float, now: float) -> int:
        """The rate at C{entry[i:i+3]} (with a store: summed over the processes)."""
        total = rate(entry, i, period, now)
        if self.shared is not None:
            for other in self.shared.others(entry[-1], now):
                total += rate(other, i, period, now)
        return total

    def currentOf(self, entry: list[Any], now: float) -> int:
        """C{conn_cur} of C{entry} (with a store: summed over the processes)."""
        total = int(entry[_CUR])
        if self.shared is not None:
            for other in self.shared.others(entry[-1], now):
                total += int(other[_CUR])
        return total

    def expireNow(self, now: float) -> None:
        """Forget every key idle longer than C{expire} (the stats do it before showing the table)."""
        entries = self._entries
        for _ in range(len(entries)):  # the least recently used first: stop at the first live one
            oldest = next(iter(entries))
            old = entries[oldest]
            if now - old[_SEEN] < self.expire:
                break
            if old[_CUR] > 0:
                old[_SEEN] = now  # in use: kept
                entries.move_to_end(oldest)
            else:
                del entries[oldest]

    def rows(self, now: Optional[float] = None, limit: Optional[int] = None) -> list[dict[str, Any]]:
        """
        The keys, most recently used first (at most C{limit}), each a dict:
        C{key}, C{idle} (seconds), C{expiresIn} and each counter.
        """
        now = self.now() if now is None else now
        if self.reported is not None:
            return self._reportedRows(now, limit)
        self.expireNow(now)
        rows = []
        for key in reversed(self._entries):
            entry = self._entries[key]
            row: dict[str, Any] = {"key": key, "idle": max(0.0, now - entry[_SEEN]),
                                   "expiresIn": max(0.0, entry[_SEEN] + self.expire - now)}
            for counter in self.counters:
                row[counter] = self.valueOf(entry, counter, now)
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
        return rows

    def _reportedRows(self, now: float, limit: Optional[int]) -> list[dict[str, Any]]:
        assert self.reported is not None
        rows = []
        for key, parts in self.reported["entries"].items():
            seen = max(p[_SEEN] for p in parts)
            row: dict[str, Any] = {"key": key, "idle": max(0.0, now - seen),
                                   "expiresIn": max(0.0, seen + self.expire - now)}
            for counter in self.counters:
                row[counter] = sum(self._local(p, counter, now) for p in parts)
            rows.append(row)
        rows.sort(key=lambda r: r["idle"])
        return rows if limit is None else rows[:limit]

    def clear(self, key: Optional[str] = None) -> int:
        """Forget C{key} (every key, without one); return how many went."""
        if key is None:
            count = len(self._entries)
            self._entries.clear()
            return count
        return 1 if self._entries.pop(key, None) is not None else 0

    def ended(self, entry: list[Any], status: int, bytesIn: int, bytesOut: int) -> None:
        """
        A request (connection) counted in C{entry} ended: one less in
        C{conn_cur}; its status (any 4xx is an C{http_err}, as HAProxy
        2.6 counts them) and its bytes are counted.
        Called by L{lbkit._model.Context.ended}.
        """
        entry[_CUR] -= 1
        if not self._atEnd:
            if self.shared is not None:
                self.shared.touched(entry[-1], entry, self.now())
            return
        now = self.now()
        i, period = self._err
        if i >= 0 and 400 <= status < 500:
            hit(entry, i, period, now, 1)
        (i, period), (j, jperiod) = self._bytes
        if i >= 0 and bytesIn:
            hit(entry, i, period, now, bytesIn)
        if j >= 0 and bytesOut:
            hit(entry, j, jperiod, now, bytesOut)
        if self.shared is not None:
            self.shared.touched(entry[-1], entry, now)

    def describe(self) -> str:
        """Its counters as HAProxy spells them: C{conn_cur,http_req_rate(10s)}."""
        return ",".join(n if n == "conn_cur" else f"{n}({self.counters[n]:g}s)" for n in self.counters)
