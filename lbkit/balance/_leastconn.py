# -*- test-case-name: tests.test_balance_load -*-
"""
Weighted least connections (HAProxy's C{balance leastconn}).
"""

from __future__ import annotations

from typing import Sequence

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.balance._scan import _Pairs, _pairsFor, _WeightedScan
from lbkit.interfaces import IActiveBalancer, IAdoptingBalancer, IExplainingBalancer

__all__ = ["LeastConn"]


@implementer(IActiveBalancer, IExplainingBalancer, IAdoptingBalancer)
class LeastConn(_WeightedScan):
    """
    Send the connection to the server with the fewest active connections
    relative to its weight (C{active / effectiveWeight}, lowest wins).

    Ties are broken in rotation: the search starts just after the server
    picked last time, so two idle servers alternate instead of the first
    one taking everything.  Slow start applies.  Use it for long sessions
    (databases, WebSocket, LDAP) whose durations vary widely.

    Cost: O(log n) per pick and per connection start and end when used by
    a L{lbkit.Backend}; O(n) for a pick among a subset of the eligible
    servers (some full or already tried), see L{_WeightedScan}.
    """

    _label = "leastconn"

    def __init__(self) -> None:
        super().__init__()
        self._next = 0

    @staticmethod
    def _key(server: Server, inverse: float) -> float:
        return server.active * inverse

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        if self._isFull(servers):
            pairs = self._pairs
            tree = self._tree
            if tree is not None:
                position = self._treePick(tree, self._next % len(pairs))
                self._next = position + 1
                return pairs[position][0]
        else:
            pairs = _pairsFor(servers)
        return self._scan(pairs)

    def _scan(self, pairs: _Pairs) -> Server | None:
        n = len(pairs)
        if not n:
            return None
        start = self._next % n
        best = -1
        bestLoad = float("inf")
        for i in range(start, n):
            server, inverse = pairs[i]
            load = server.active * inverse
            if load < bestLoad:
                best, bestLoad = i, load
                if not load:
                    break
        if bestLoad:
            for i in range(start):
                server, inverse = pairs[i]
                load = server.active * inverse
                if load < bestLoad:
                    best, bestLoad = i, load
                    if not load:
                        break
        self._next = best + 1
        return pairs[best][0]
