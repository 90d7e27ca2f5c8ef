# -*- test-case-name: tests.test_charts -*-
"""
The last 15 minutes of each frontend and backend, for the stats page's
charts (docs/stats.md, "Charts"): request rate, error rate and the
p50/p99 time to the response head, one point per L{STEP} seconds in
bounded ring buffers, and each server's state changes.

Like the rates, points are taken when the page (or C{/stats.json}, or
C{/metrics}) is read, not by a timer: a read at least L{STEP} seconds
after the last point stores a new one, over the counters' growth since;
every read also shows a live point from the last stored one to now.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional, Sequence

from lbkit._latency import BUCKETS

__all__ = ["History", "quantile", "STEP", "SPAN"]

#: Seconds between stored points.
STEP = 10.0
#: Seconds the charts cover.
SPAN = 900.0
#: Points kept per frontend or backend.
POINTS = int(SPAN / STEP)
#: State changes kept per server.
CHANGES = 64


def quantile(q: float, cumulative: Sequence[int], bounds: Sequence[float] = BUCKETS) -> Optional[float]:
    """
    The C{q} quantile (0-1) of a histogram given as cumulative counts per
    bound of C{bounds} then C{+Inf}, interpolated within its bucket as
    Prometheus' C{histogram_quantile} does; C{None} when it is empty.
    """
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return None
    rank = q * total
    previous = 0
    for i, count in enumerate(cumulative):
        if count >= rank and count > previous:
            if i >= len(bounds):
                return float(bounds[-1])  # in +Inf: the highest bound, as Prometheus does
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * (rank - previous) / (count - previous)
        previous = count
    return float(bounds[-1])


class _Series:
    """The stored points of one frontend or backend, and its counters at the last one."""

    __slots__ = ("points", "at", "requests", "errors", "buckets")

    def __init__(self, at: float, requests: int, errors: int, buckets: list[int]) -> None:
        self.points: deque[list[Any]] = deque(maxlen=POINTS)
        self.at = at
        self.requests = requests
        self.errors = errors
        self.buckets = buckets


def _point(series: _Series, now: float, requests: int, errors: int, buckets: list[int]) -> list[Any]:
    """C{[time, requests/s, errors/s, p50 ms, p99 ms]} since the series' last point."""
    dt = max(now - series.at, 1e-9)
    delta = [max(0, b - a) for a, b in zip(series.buckets, buckets, strict=False)] if buckets else []
    p50, p99 = quantile(0.5, delta), quantile(0.99, delta)
    return [
        round(now, 3),
        round(max(0, requests - series.requests) / dt, 3),
        round(max(0, errors - series.errors) / dt, 3),
        None if p50 is None else round(p50 * 1000, 3),
        None if p99 is None else round(p99 * 1000, 3),
    ]


class History:
    """
    The charts' data of a L{lbkit.stats._collect.Collector}.

    @ivar step: Seconds between stored points (L{STEP}).
    """

    def __init__(self, step: float = STEP) -> None:
        self.step = step
        self._series: dict[tuple[str, int], _Series] = {}
        self._changes: dict[int, deque[tuple[float, str, str]]] = {}

    def sample(self, kind: str, owner: object, now: float, requests: int, errors: int,
               buckets: Optional[list[int]]) -> dict[str, Any]:
        """
        Take a point of C{owner} (a frontend or backend) if one is due;
        return its chart data: C{{"step", "now", "points"}}, the stored
        points of the last L{SPAN} seconds then the live one.

        @param requests: Its requests (http) or connections (tcp), ever.
        @param errors: Its errors, ever.
        @param buckets: Its cumulative histogram of the time to the
            response head (L{lbkit._latency.Latency.histograms}), or
            C{None}.
        """
        key = (kind, id(owner))
        counts = list(buckets or [])
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(now, requests, errors, counts)
            return {"step": self.step, "now": round(now, 3), "points": []}
        live = _point(series, now, requests, errors, counts)
        stored = now - series.at >= self.step
        if stored:
            series.points.append(live)
            series.at, series.requests, series.errors, series.buckets = now, requests, errors, counts
        points = [p for p in series.points if p[0] >= now - SPAN]
        if not stored and now > series.at:
            points.append(live)
        return {"step": self.step, "now": round(now, 3), "points": points}

    def changed(self, server: object, now: float, old: str, new: str) -> None:
        """Remember that C{server} went from state C{old} to C{new} at C{now}."""
        changes = self._changes.get(id(server))
        if changes is None:
            changes = self._changes[id(server)] = deque(maxlen=CHANGES)
        changes.append((now, old, new))

    def timeline(self, server: object, state: str, now: float, since: float) -> list[list[Any]]:
        """
        The states of C{server} over the last L{SPAN} seconds (from
        C{since}, the page's start, if later): C{[[from, to, state], ...]},
        oldest first, the last ending C{now} in C{state}.
        """
        begin = max(since, now - SPAN)
        changes = [c for c in self._changes.get(id(server), ()) if c[0] <= now]
        bands: list[list[Any]] = []
        current = changes[0][1] if changes else state
        at = begin
        for when, _old, new in changes:
            if when > at:
                bands.append([round(at, 3), round(when, 3), current])
                at = when
            current = new
        if now > at or not bands:
            bands.append([round(at, 3), round(now, 3), current])
        return bands
