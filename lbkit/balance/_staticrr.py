# -*- test-case-name: tests.test_balance -*-
"""
Static weighted round robin (HAProxy's C{balance static-rr}).
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from math import ceil
from typing import Sequence

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.balance._tracking import _Tracking
from lbkit.interfaces import IBalancer, IExplainingBalancer

__all__ = ["StaticRR"]


def _due(turn: int, weight: int) -> float:
    """
    When a server of C{weight} is due its C{turn}-th pick, in periods: the
    middle of its C{turn}-th share, C{(turn + 1/2) / weight}.  Equal
    fractions give equal floats, so ties are exact.
    """
    return (2 * turn + 1) / (2 * weight)


@implementer(IBalancer, IExplainingBalancer)
class StaticRR(_Tracking):
    """
    Give each server turns in proportion to the weight it was configured
    with, interleaved.

    Weights are fixed at start (C{Server.initialWeight}): changing a weight
    at run time has no effect, and there is no slow start, as in HAProxy.
    Servers going down or coming back up are taken into account.

    Each server's k-th pick in a period of C{sum(weights)} picks is due at
    C{(k + 1/2) / weight} (the Sainte-Laguë sequence), and a heap of due
    times makes every pick O(log n).  Ties go to the first server in
    configuration order.  A server returning after an absence starts at the
    current position rather than catching up, so it gets no burst.
    """

    def __init__(self) -> None:
        super().__init__()
        self._turn: dict[Server, int] = {}
        self._heap: list[tuple[float, int, Server, int]] = []
        self._now = 0.0

    def _rebuild(self, servers: list[Server]) -> None:
        now = self._now
        turns = self._turn
        heap = []
        for position, server in enumerate(servers):
            weight = server.initialWeight
            if weight <= 0:
                continue
            turn = max(turns.get(server, 0), ceil(now * weight - 0.5))
            turns[server] = turn
            heap.append((_due(turn, weight), position, server, turn))
        heapify(heap)
        self._heap = heap

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        if not servers:
            return None
        if not self._isFull(servers):
            return self._pickSubset(servers)
        heap = self._heap
        turns = self._turn
        while heap:
            due, position, server, turn = heappop(heap)
            if turns[server] != turn:
                continue  # stale: the server was picked on the slow path
            self._now = due
            turns[server] = turn + 1
            heappush(heap, (_due(turn + 1, server.initialWeight), position, server, turn + 1))
            return server
        return None

    def explain(self, servers: Sequence[Server], context: Context, chosen: Server | None) -> str:
        """Whose turn it was, by configured weight."""
        if chosen is None:
            return "static-rr: no server"
        total = sum(s.initialWeight for s in servers)
        return f"static-rr: {chosen.name}'s turn (weight {chosen.initialWeight} of {total})"

    def _pickSubset(self, servers: Sequence[Server]) -> Server | None:
        turns = self._turn
        best: tuple[float, int, Server] | None = None
        for position, server in enumerate(servers):
            weight = server.initialWeight
            if weight <= 0:
                continue
            candidate = (_due(turns[server], weight), position, server)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
        if best is None:
            return None
        due, _, server = best
        turn = turns[server] + 1
        turns[server] = turn
        self._now = max(self._now, due)
        heappush(self._heap, (_due(turn, server.initialWeight), self._keyList.index(server), server, turn))
        return server
