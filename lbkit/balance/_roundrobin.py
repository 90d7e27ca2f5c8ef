# -*- test-case-name: tests.test_balance -*-
"""
Weighted, smooth, dynamic round robin (HAProxy's C{balance roundrobin}).
"""

from __future__ import annotations

from heapq import heapify, heapreplace
from typing import Sequence

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.balance._tracking import _Tracking
from lbkit.interfaces import IAdoptingBalancer, IBalancer, IExplainingBalancer

__all__ = ["RoundRobin"]

# One weight class: its weight and a heap of (key, position, server), where a
# member's credit is weight * t - key.
_Class = tuple[int, list[tuple[int, int, Server]]]


@implementer(IBalancer, IExplainingBalancer, IAdoptingBalancer)
class RoundRobin(_Tracking):
    """
    Give each server turns in proportion to its weight, interleaved: weights
    5, 1, 1 give C{a a b a c a a}, never five C{a}s in a row.

    The sequence is exactly nginx's smooth weighted round robin: at each
    pick every server earns its weight in credit, the server with the most
    credit (the first one, on a tie) wins and is charged the total weight.
    Weights are dynamic: a weight changed with L{Server.setWeight} applies
    from the next pick, credits carry over, and a server in slow start
    counts with its C{effectiveWeight}, so it rejoins gradually.

    Cost: servers of equal weight share one heap, so a pick costs
    O(m + log n) for n servers with m distinct weights, which is O(log n)
    for the usual handful of weight values.  When the backend hands a subset
    of its servers (some are full or already tried) that pick costs O(n).
    """

    _usesEffectiveWeight = True

    def __init__(self) -> None:
        super().__init__()
        self._credit: dict[Server, int] = {}
        self._classes: list[_Class] | None = None
        self._t = 0
        self._total = 0

    def _rebuild(self, servers: list[Server]) -> None:
        self._materialize()
        credit = self._credit
        groups: dict[int, list[tuple[int, int, Server]]] = {}
        total = 0
        for position, server in enumerate(servers):
            weight = server.effectiveWeight
            if weight <= 0:
                continue
            total += weight
            groups.setdefault(weight, []).append((-credit.get(server, 0), position, server))
        for heap in groups.values():
            heapify(heap)
        self._classes = list(groups.items())
        self._t = 0
        self._total = total

    def _materialize(self) -> None:
        """
        Write the credits held in the fast structure back to C{_credit} and
        drop the structure.
        """
        if self._classes is None:
            return
        t = self._t
        credit = self._credit
        for weight, heap in self._classes:
            for key, _, server in heap:
                credit[server] = weight * t - key
        self._classes = None

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        classes = self._classes
        if servers is self._builtFor and classes is not None and len(classes) == 1 and not self._dirty \
                and not self._rampWatch:
            # the plain turn: the list the structure is built for, one weight class
            heap = classes[0][1]
            self._t += 1
            key, position, server = heap[0]
            heapreplace(heap, (key + self._total, position, server))
            return server
        if not servers:
            return None
        if len(servers) == 1:
            return servers[0] if servers[0].effectiveWeight > 0 else None
        if not self._isFull(servers):
            return self._pickSubset(servers)
        if self._classes is None:
            self._rebuild(self._keyList)
        classes = self._classes
        assert classes is not None
        if not classes:
            return None
        t = self._t = self._t + 1
        if len(classes) == 1:
            heap = classes[0][1]
        else:
            heap = classes[0][1]
            key, position, _ = heap[0]
            bestValue = classes[0][0] * t - key
            bestPosition = position
            for weight, other in classes[1:]:
                key, position, _ = other[0]
                value = weight * t - key
                if value > bestValue or (value == bestValue and position < bestPosition):
                    heap, bestValue, bestPosition = other, value, position
        key, position, server = heap[0]
        heapreplace(heap, (key + self._total, position, server))
        return server

    def explain(self, servers: Sequence[Server], context: Context, chosen: Server | None) -> str:
        """Whose turn it was: C{"roundrobin: s1's turn (weight 2 of 3)"}."""
        if chosen is None:
            return "roundrobin: no server"
        total = sum(s.effectiveWeight for s in servers)
        return f"roundrobin: {chosen.name}'s turn (weight {chosen.effectiveWeight} of {total})"

    def adopt(self, previous: object) -> bool:
        """Take the credits of C{previous}, a L{RoundRobin}: the turns go on where they were."""
        if not isinstance(previous, RoundRobin):
            return False
        previous._materialize()
        self._materialize()
        self._credit.update(previous._credit)
        self._dirty = True
        return True

    def _pickSubset(self, servers: Sequence[Server]) -> Server | None:
        """
        The O(n) smooth round robin over C{servers} only: servers left out
        (full, or tried already) neither earn nor lose credit.
        """
        self._materialize()
        credit = self._credit
        best: Server | None = None
        bestCredit = 0
        total = 0
        for server in servers:
            weight = server.effectiveWeight
            if weight <= 0:
                continue
            total += weight
            c = credit.get(server, 0) + weight
            credit[server] = c
            if best is None or c > bestCredit:
                best, bestCredit = server, c
        if best is not None:
            credit[best] = bestCredit - total
        return best
