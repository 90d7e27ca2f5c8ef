# -*- test-case-name: tests.test_latency -*-
"""
The timings of requests, per server and per backend, for the stats page,
C{/stats.json} and C{/metrics} (docs/stats.md, "Latency").

Each finished request adds one sample, C{(Tw, Tc, Tr, Ta, fresh,
served)} in seconds (the access log's times; C{-1} where not reached), to
its server's L{Latency} and its backend's: a store into a ring of the
last L{WINDOW} samples, nothing else.  The ring is folded into the
histograms (a plain list of counts per bucket, found by C{bisect}) when
it is full and when someone reads them, so a request pays for a tuple
and two stores, and the bucketing runs in a tight loop.

The averages are HAProxy's C{qtime}, C{ctime}, C{rtime} and C{ttime}
(doc/management.txt): in ms, over the last L{WINDOW} requests that got a
response head (a reused connection counts 0 for C{ctime}), or tcp
connections that connected (C{rtime} 0); exact, over the ring, where
HAProxy keeps a sliding approximation.

Foundation: imports nothing from lbkit.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Optional

__all__ = ["Latency", "BUCKETS", "WINDOW", "METRICS", "NO_RESPONSE", "mergeReports", "timeBackend"]

#: How many of the last samples the averages cover.
WINDOW = 1024
_MASK = WINDOW - 1
#: The upper bounds of the histogram buckets, in seconds (then C{+Inf}):
#: from half a millisecond, a local server's answer, to half a minute.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: The histograms, in order: time queued (C{Tw}), to connect (C{Tc}, new
#: connections only), to the response head (C{Tw + Tc + Tr}) and in all
#: (C{Ta}).
METRICS = ("queue", "connect", "response", "total")
#: The C{Tr} of a tcp connection: no response head, yet counted (as 0 in
#: C{rtime}) in the averages once connected, as HAProxy does in tcp mode.
NO_RESPONSE = -2.0


class Latency:
    """
    The samples of one server (or of one backend: every request it
    routed), their histograms and averages.

    @ivar parent: The backend's L{Latency}, which gets each sample too
        (C{None} for a backend's own).
    @ivar at: Samples added, ever.
    """

    __slots__ = ("ring", "at", "folded", "counts", "sums", "observed", "parent", "served", "external")

    def __init__(self, parent: Optional[Latency] = None) -> None:
        self.ring: list[Any] = [None] * WINDOW
        self.at = 0
        self.folded = 0
        self.counts = [[0] * (len(BUCKETS) + 1) for _ in METRICS]
        self.sums = [0.0] * len(METRICS)
        self.observed = [0] * len(METRICS)
        self.parent = parent
        #: A backend's histograms count only the requests no server took
        #: (the servers' own are added when read); a server's, all.
        self.served = parent is not None
        #: With worker processes (L{lbkit.workers}): the sum of their
        #: L{report}s, shown instead of (the empty) own samples; else C{None}.
        self.external: Optional[dict[str, Any]] = None

    def add(self, sample: tuple[float, float, float, float, bool, bool]) -> None:
        """Add C{(Tw, Tc, Tr, Ta, fresh, served)}, to the parent's too."""
        at = self.at
        if at - self.folded == WINDOW:
            self.fold()
        self.ring[at & _MASK] = sample
        self.at = at + 1
        parent = self.parent
        if parent is not None:
            at = parent.at
            if at - parent.folded == WINDOW:
                parent.fold()
            parent.ring[at & _MASK] = sample
            parent.at = at + 1

    def addConnection(self, dispatch: Any, connected: bool, total: float, served: bool) -> None:
        """
        Add the sample of a tcp connection that ended after C{total}
        seconds: C{Tw} the time its L{lbkit._dispatch.Dispatch} queued,
        C{Tc} the connect time if C{connected} (C{Tr}: L{NO_RESPONSE}).
        """
        if dispatch is None:
            self.add((-1.0, -1.0, -1.0, total, False, served))
            return
        connect = dispatch.connectedAt - dispatch.chosenAt if connected and dispatch.connectedAt >= 0 else -1.0
        self.add((dispatch.waited, connect, NO_RESPONSE if connect >= 0 else -1.0, total, connect >= 0, served))

    def fold(self) -> None:
        """Count the samples added since the last fold into the histograms."""
        ring, sums, observed = self.ring, self.sums, self.observed
        queue, connect, response, total = self.counts
        onlyUnserved = not self.served
        for i in range(self.folded, self.at):
            tw, tc, tr, ta, fresh, served = ring[i & _MASK]
            if onlyUnserved and served:
                continue
            if tw >= 0:
                queue[bisect_left(BUCKETS, tw)] += 1
                sums[0] += tw
                observed[0] += 1
            if fresh and tc >= 0:
                connect[bisect_left(BUCKETS, tc)] += 1
                sums[1] += tc
                observed[1] += 1
            if tr >= 0:
                head = tw + tc + tr
                response[bisect_left(BUCKETS, head)] += 1
                sums[2] += head
                observed[2] += 1
            if ta >= 0:
                total[bisect_left(BUCKETS, ta)] += 1
                sums[3] += ta
                observed[3] += 1
        self.folded = self.at

    def histograms(self, others: Any = ()) -> dict[str, dict[str, Any]]:
        """
        Each histogram of L{METRICS}, with those of C{others} (a backend's
        servers) added: C{{"buckets": [cumulative count per bound of
        BUCKETS, then +Inf], "sum": seconds, "count": n}}.
        """
        sources = [self, *others]
        for source in sources:
            source.fold()
        found = {}
        for k, name in enumerate(METRICS):
            counts = [0] * (len(BUCKETS) + 1)
            total = 0.0
            for source in sources:
                for sourceCounts, sourceSums in source._histogramData():
                    for i, n in enumerate(sourceCounts[k]):
                        counts[i] += n
                    total += sourceSums[k]
            cumulative, running = [], 0
            for n in counts:
                running += n
                cumulative.append(running)
            found[name] = {"buckets": cumulative, "sum": total, "count": running}
        return found

    def _histogramData(self) -> list[tuple[list[list[int]], list[float]]]:
        found = [(self.counts, self.sums)]
        if self.external is not None:
            found.append((self.external["counts"], self.external["sums"]))
        return found

    def averages(self) -> dict[str, int]:
        """
        HAProxy's C{qtime}, C{ctime}, C{rtime}, C{ttime} (ms) over the last
        L{WINDOW} samples that got a response head, and C{samples}, how
        many that is (with worker processes: over the last L{WINDOW} of
        each).
        """
        q, c, r, t, counted = self.external["window"] if self.external is not None else self.windowSums()
        if not counted:
            return {"qtime": 0, "ctime": 0, "rtime": 0, "ttime": 0, "samples": 0}
        ms = 1000.0 / counted
        return {"qtime": round(q * ms), "ctime": round(c * ms), "rtime": round(r * ms), "ttime": round(t * ms),
                "samples": int(counted)}

    def report(self) -> dict[str, Any]:
        """
        What a worker process reports of it (JSON): the histograms'
        C{counts} and C{sums}, and the C{window} sums of L{windowSums}.
        """
        self.fold()
        return {"counts": [list(c) for c in self.counts], "sums": list(self.sums), "window": self.windowSums()}

    def windowSums(self) -> list[float]:
        """C{[Tw, Tc, Tr, Ta, n]}: the sums (seconds) over the samples L{averages} counts, and how many."""
        n = min(self.at, WINDOW)
        q = c = r = t = 0.0
        counted = 0
        for sample in self.ring[:n] if self.at < WINDOW else self.ring:
            tw, tc, tr, ta = sample[0], sample[1], sample[2], sample[3]
            if tc < 0 or (tr < 0 and tr != NO_RESPONSE):
                continue
            counted += 1
            q += max(tw, 0.0)
            c += tc
            r += max(tr, 0.0)
            t += ta
        return [q, c, r, t, counted]


def mergeReports(total: Optional[dict[str, Any]], part: dict[str, Any], window: bool = True) -> dict[str, Any]:
    """
    C{total} plus the L{Latency.report} C{part} (a new dict if C{total}
    is C{None}); C{part}'s window is left out unless C{window} (a worker
    that ended keeps its histograms, not its last requests).
    """
    if total is None:
        total = {"counts": [[0] * (len(BUCKETS) + 1) for _ in METRICS], "sums": [0.0] * len(METRICS),
                 "window": [0.0, 0.0, 0.0, 0.0, 0]}
    for k in range(len(METRICS)):
        total["counts"][k] = [a + b for a, b in zip(total["counts"][k], part["counts"][k], strict=True)]
        total["sums"][k] += part["sums"][k]
    if window:
        total["window"] = [a + b for a, b in zip(total["window"], part["window"], strict=True)]
    return total


def timeBackend(backend: Any) -> Latency:
    """
    The L{Latency} of C{backend} (an L{lbkit.Backend}), given to it and to
    each of its servers that has none yet: from then on their requests are
    timed (docs/stats.md, "Latency").
    """
    latency: Optional[Latency] = getattr(backend, "latency", None)
    if latency is None:
        latency = backend.latency = Latency()
    for server in backend.servers:
        if server.latency is None:
            server.latency = Latency(latency)
    return latency
