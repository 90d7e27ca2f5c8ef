# -*- test-case-name: tests.test_traffic -*-
"""
Rules and matchers over stick tables: L{track} (HAProxy's C{track-sc}),
the matchers L{above}, L{below}, L{atLeast} and L{atMost} (C{sc_*} ACLs),
L{RateLimit} (429 with C{Retry-After}) and L{ConnLimit}; each works in
http mode (C{requestRules}) and tcp mode (C{tcp.Frontend(rules=...)}).

What is tracked, and when it ends: a request in http mode (a tracked
request is one of C{conn_cur} while in flight and one event of
C{conn_rate} and C{http_req_rate}, as HAProxy's C{http-request track-sc}
counts), a connection in tcp mode.  The end (status, bytes) comes back
through L{lbkit._model.Context.ended}.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Optional

from zope.interface import implementer

from lbkit._model import Context
from lbkit.error import ConfigError
from lbkit.http._answers import Answer, AnsweringRule, checkedWhen
from lbkit.interfaces import IConnectionRule, IRequestMatcher
from lbkit.traffic._keys import Key, bySource, checkedKey
from lbkit.traffic._table import COUNTERS, Table, hit, rate

__all__ = [
    "Track", "track", "above", "below", "atLeast", "atMost", "RateLimit", "ConnLimit",
    "trackIn", "retryAfter", "tablesOf", "bindClocks", "carryOver", "counter",
]

_names = itertools.count(1)


def trackIn(table: Table, request: Any, context: Context, isHTTP: bool) -> Optional[list[Any]]:
    """
    Count the request (or connection) of C{context} in C{table}, once
    (a second rule of the same table gets the same entry): its key's
    entry, or C{None} when it has no key.  The table is told when it
    ends (L{Table.ended}).
    """
    watchers = context.watchers
    if watchers is None:
        watchers = context.watchers = []
    else:
        for w, token in watchers:
            if w is table:
                return token  # type: ignore[no-any-return]
    key = table.key.keyOf(request, context)
    if key is None:
        return None
    now = table.now()
    entry = table.entry(key, now)
    entry[1] += 1
    for i, period in table.onRequest if isHTTP else table.onConnection:
        hit(entry, i, period, now, 1)
    if table.shared is not None:
        table.changed(entry, now)
    watchers.append((table, entry))
    return entry


def _bound(table: Table, exchange: Any) -> None:
    if table.clock is None:
        table.clock = exchange.reactor


@implementer(IConnectionRule)
class _TrafficRule(AnsweringRule):
    """A rule that counts in a table: in http mode an answering rule, in tcp mode a connection rule."""

    table: Table
    #: Whether tcp mode can use it (its key and C{when} read only the client's address).
    clientOnly = True

    def apply(self, request: Any, exchange: Any) -> Optional[Answer]:
        table = self.table
        if table.clock is None:
            _bound(table, exchange)
        entry = trackIn(table, request, exchange.context, True)
        if entry is None:
            return None
        return self.decide(entry, table.now(), True)

    def rejects(self, context: Context) -> bool:
        """tcp mode: count the connection; whether it is over the limit."""
        when = self.when
        if when is not None and not when.matches(None, context):
            return False
        entry = trackIn(self.table, None, context, False)
        return entry is not None and self.decide(entry, self.table.now(), False) is not None

    def decide(self, entry: list[Any], now: float, isHTTP: bool) -> Optional[Answer]:
        """The answer for a request (connection) counted in C{entry}, or C{None} to let it go."""
        return None


def _checkedTCP(rule: _TrafficRule) -> None:
    """Set C{rule.clientOnly}: whether its key and C{when} read only the client's address (tcp mode)."""
    when = rule.when
    rule.clientOnly = bool(rule.table.key.clientOnly) and (when is None or bool(getattr(when, "clientOnly", False)))


class Track(_TrafficRule):
    """
    Count each request (http) or connection (tcp) in a table, by the
    table's key: HAProxy's C{http-request track-sc0} and
    C{tcp-request connection track-sc0}.  Made by L{track}.

    @ivar table: The L{Table}.
    @ivar clientOnly: Whether tcp mode can use it (the key reads only the
        client's address).
    """

    def __init__(self, table: Table, when: Any = None) -> None:
        if not isinstance(table, Table):
            raise ConfigError(f"traffic.track: {table!r} is not a traffic.Table")
        self.table = table
        self.name = f"track({table.name})"
        self.when = checkedWhen(when, self.name)
        _checkedTCP(self)


def track(table: Table, when: Any = None) -> Track:
    """Count each request or connection (when C{when} matches) in C{table}."""
    return Track(table, when)


@implementer(IRequestMatcher)
class _Compare:
    """A matcher: a counter of the request's key in a table, compared with a number."""

    def __init__(self, op: str, table: Table, counter: str, value: float) -> None:
        what = f"traffic.{op}({getattr(table, 'name', table)!r}, {counter!r}, {value!r})"
        if not isinstance(table, Table):
            raise ConfigError(f"{what}: {table!r} is not a traffic.Table")
        if counter not in COUNTERS:
            raise ConfigError(f"{what}: unknown counter {counter!r} (one of {', '.join(COUNTERS)})")
        if not table.keeps(counter):
            raise ConfigError(f"{what}: table {table.name!r} does not keep {counter!r} ({table.describe()})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{what}: the value must be a number")
        self.op = op
        self.table = table
        self.counter = counter
        self.value = value
        self.clientOnly = bool(table.key.clientOnly)
        self.description = what[len("traffic."):]

    def __repr__(self) -> str:
        return self.description

    def matches(self, request: Any, context: Context) -> bool:
        table = self.table
        key = table.key.keyOf(request, context)
        got = table.value(key, self.counter)
        op = self.op
        if op == "above":
            return got > self.value
        if op == "below":
            return got < self.value
        if op == "atLeast":
            return got >= self.value
        return got <= self.value


def above(table: Table, counter: str, value: float) -> IRequestMatcher:
    """The request's key has C{counter} over C{value} in C{table} (HAProxy's C{sc_<counter>(0) gt value})."""
    return _Compare("above", table, counter, value)


def below(table: Table, counter: str, value: float) -> IRequestMatcher:
    """C{counter} under C{value} (C{lt})."""
    return _Compare("below", table, counter, value)


def atLeast(table: Table, counter: str, value: float) -> IRequestMatcher:
    """C{counter} at least C{value} (C{ge})."""
    return _Compare("atLeast", table, counter, value)


def atMost(table: Table, counter: str, value: float) -> IRequestMatcher:
    """C{counter} at most C{value} (C{le})."""
    return _Compare("atMost", table, counter, value)


class _Counter:
    """A header value (a C{Source} of L{lbkit.http._rules}): a counter of the request's key, as decimal digits."""

    def __init__(self, table: Table, name: str) -> None:
        _Compare("counter", table, name, 0)  # the same checks
        self.table = table
        self.name = name

    def __repr__(self) -> str:
        return f"counter({self.table.name!r}, {self.name!r})"

    def __call__(self, request: Any, exchange: Any) -> bytes:
        table = self.table
        return b"%d" % table.value(table.key.keyOf(request, exchange.context), self.name)


def counter(table: Table, name: str) -> Any:
    """
    A computed header value: C{name} of the request's key in C{table}
    (HAProxy's C{%[sc_http_req_rate(0)]}), e.g.
    C{http.setHeader("X-Request-Rate", traffic.counter(t, "http_req_rate"))}.
    """
    return _Counter(table, name)


def retryAfter(entry: list[Any], i: int, period: float, now: float, limit: int) -> int:
    """
    Whole seconds (at least 1) after which one more event at the rate
    counter C{entry[i:i+3]} keeps it within C{limit}, if nothing else
    comes (the estimate is rounded down, as HAProxy's: the wait is the
    first whole second strictly past the exact one).
    """
    start, curr, prev = entry[i], entry[i + 1], entry[i + 2]
    elapsed = now - start
    if elapsed >= period:
        periods = elapsed // period
        start, prev, curr = start + periods * period, (curr if periods == 1 else 0), 0
        elapsed = now - start
    wait: Optional[float] = None
    room = limit - 1 - curr
    if room >= 0:
        # within this period: the previous one's share must shrink to room
        wait = 0.0 if prev <= room else max(0.0, period - elapsed - (room + 1) * period / prev)
        if wait >= period - elapsed:
            wait = None
    if wait is None:
        toNext = period - elapsed
        if curr <= limit - 1:
            wait = toNext
        else:
            # in the next period, this one's count weighs (period - t) / period
            wait = toNext + max(0.0, period * (1 - limit / curr))
    return math.floor(wait) + 1


def _limit(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a whole number over 0, not {value!r}")
    return value


class RateLimit(_TrafficRule):
    """
    At most C{rate} requests (http) or connections (tcp) per C{per}
    seconds for each key, over HAProxy's sliding window (see
    L{lbkit.traffic.Table}); C{burst} more are let through before one is
    refused.  Over it, an http request gets C{status} (429) with
    C{Retry-After} (the connection stays open), a tcp connection is closed
    at once.  Refused ones count too, as with HAProxy's
    C{track-sc0} + C{deny if { sc_http_req_rate(0) gt N }}.

    @ivar table: Where it counts: its own table, or the one given (which
        must keep C{http_req_rate} (http) or C{conn_rate} (tcp) over C{per}).
    @ivar refused: How many it refused.
    """

    def __init__(self, rate: int, per: float, key: Key = bySource, burst: int = 0, status: int = 429,
                 table: Optional[Table] = None, when: Any = None, name: Optional[str] = None) -> None:
        what = "traffic.RateLimit"
        self.rate = _limit(rate, f"{what}: rate")
        if isinstance(per, bool) or not isinstance(per, (int, float)) or not per > 0:
            raise ConfigError(f"{what}: per must be a number of seconds over 0, not {per!r}")
        self.per = float(per)
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
            raise ConfigError(f"{what}: burst must be a whole number, 0 or more, not {burst!r}")
        self.burst = burst
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigError(f"{what}: status must be an error status (400 to 599), not {status!r}")
        self.status = status
        key = checkedKey(key, what)
        if table is None:
            table = Table(name or f"ratelimit{next(_names)}", key=key, size=100_000, expire=max(2 * self.per, 1.0),
                          counters={"conn_cur": 0, "conn_rate": self.per, "http_req_rate": self.per})
        elif not isinstance(table, Table):
            raise ConfigError(f"{what}: table must be a traffic.Table, not {table!r}")
        elif key is not bySource and key is not table.key:
            raise ConfigError(f"{what}: key {key!r} is not table {table.name!r}'s ({table.key!r}); give one")
        else:
            for counter in ("http_req_rate", "conn_rate"):
                period = table.counters.get(counter)
                if period is not None and period != self.per:
                    raise ConfigError(f"{what}: table {table.name!r} keeps {counter}({period:g}s), not per={per!r}")
            if not (table.keeps("http_req_rate") or table.keeps("conn_rate")):
                raise ConfigError(f"{what}: table {table.name!r} keeps neither http_req_rate nor conn_rate")
        self.table = table
        self.name = f"RateLimit({rate}, {per!r}, {table.key!r})"
        self.when = checkedWhen(when, what)
        self.refused = 0
        self._http = table.slots["http_req_rate"]
        self._tcp = table.slots["conn_rate"]
        _checkedTCP(self)

    def decide(self, entry: list[Any], now: float, isHTTP: bool) -> Optional[Answer]:
        i, period = self._http if isHTTP else self._tcp
        if i < 0:
            return None
        limit = self.rate + self.burst
        table = self.table
        count = rate(entry, i, period, now) if table.shared is None else table.rateOf(entry, i, period, now)
        if count <= limit:
            return None
        self.refused += 1
        wait = retryAfter(entry, i, period, now, limit)
        return Answer(self.status, [(b"Retry-After", b"%d" % wait), (b"Cache-Control", b"no-cache")],
                      errorPage=True, termination="PR")


class ConnLimit(_TrafficRule):
    """
    At most C{limit} at a time for each key: requests in flight in http
    mode (over it: C{status}, 429, and close), connections in tcp mode
    (over it: closed at once).  HAProxy's C{sc_conn_cur(0) gt N}.

    @ivar table: Where it counts (C{conn_cur}): its own table, or the one given.
    @ivar refused: How many it refused.
    """

    def __init__(self, limit: int, key: Key = bySource, status: int = 429, table: Optional[Table] = None,
                 when: Any = None, name: Optional[str] = None) -> None:
        what = "traffic.ConnLimit"
        self.limit = _limit(limit, f"{what}: limit")
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigError(f"{what}: status must be an error status (400 to 599), not {status!r}")
        self.status = status
        key = checkedKey(key, what)
        if table is None:
            table = Table(name or f"connlimit{next(_names)}", key=key, expire=1.0, counters={"conn_cur": 0})
        elif not isinstance(table, Table):
            raise ConfigError(f"{what}: table must be a traffic.Table, not {table!r}")
        elif not table.keeps("conn_cur"):
            raise ConfigError(f"{what}: table {table.name!r} does not keep conn_cur ({table.describe()})")
        self.table = table
        self.name = f"ConnLimit({limit}, {table.key!r})"
        self.when = checkedWhen(when, what)
        self.refused = 0
        self._answer = Answer(status, [(b"Cache-Control", b"no-cache")], errorPage=True, close=True, termination="PR")
        _checkedTCP(self)

    def decide(self, entry: list[Any], now: float, isHTTP: bool) -> Optional[Answer]:
        table = self.table
        if (entry[1] if table.shared is None else table.currentOf(entry, now)) <= self.limit:
            return None
        self.refused += 1
        return self._answer


def _walk(obj: Any, found: list[Table], depth: int = 0) -> None:
    if depth > 20:
        return
    table = getattr(obj, "table", None)
    if isinstance(table, Table) and table not in found:
        found.append(table)
    for name in ("when", "matcher"):
        child = getattr(obj, name, None)
        if child is not None:
            _walk(child, found, depth + 1)
    for child in getattr(obj, "matchers", None) or ():
        _walk(child, found, depth + 1)


def tablesOf(frontend: Any) -> list[Table]:
    """The tables the rules of C{frontend} (http or tcp), and of its routes, count in or read."""
    found: list[Table] = []
    rules = list(getattr(frontend, "requestRules", ()) or ()) + list(getattr(frontend, "rules", ()) or ())
    for route in getattr(frontend, "routes", ()) or ():
        rules += list(getattr(route, "requestRules", ()) or ())
        _walk(getattr(route, "matcher", None), found)
    for rule in rules:
        _walk(rule, found)
    return found


def bindClocks(frontend: Any, reactor: Any) -> None:
    """Give each table of C{frontend} without a clock C{reactor}'s (when its factory is built)."""
    for table in tablesOf(frontend):
        if table.clock is None:
            table.clock = reactor


def carryOver(oldListen: Any, newListen: Any) -> list[str]:
    """
    On a reload: each table of the new site that has the name, key and
    counters of one of the running site takes over its keys and counts
    (and, with a store, its name in the store); one line per table whose
    counts had to start again.
    """
    old: dict[str, Table] = {}
    for item in oldListen:
        for table in tablesOf(item):
            old.setdefault(table.name, table)
    changes = []
    for item in newListen:
        for table in tablesOf(item):
            previous = old.pop(table.name, None)
            if previous is None or previous is table:
                continue
            if repr(previous.key) != repr(table.key) or previous.counters != table.counters:
                changes.append(f"table {table.name}: key or counters changed, its counts start again")
                continue
            table.adopt(previous)
    return changes
