# -*- test-case-name: tests.test_balance -*-
"""
Weighted least connections (HAProxy's C{balance leastconn}).
"""

from __future__ import annotations

from typing import Sequence

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.balance._scan import _WeightedScan
from lbkit.interfaces import IBalancer

__all__ = ["LeastConn"]


@implementer(IBalancer)
class LeastConn(_WeightedScan):
    """
    Send the connection to the server with the fewest active connections
    relative to its weight (C{active / effectiveWeight}, lowest wins).

    Ties are broken in rotation: the search starts just after the server
    picked last time, so two idle servers alternate instead of the first
    one taking everything.  Slow start applies.  Use it for long sessions
    (databases, WebSocket, LDAP) whose durations vary widely.

    Cost: O(n) per pick (see L{_WeightedScan}).
    """

    def __init__(self) -> None:
        super().__init__()
        self._next = 0

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        pairs = self._candidates(servers)
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
