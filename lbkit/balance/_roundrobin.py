# -*- test-case-name: tests.test_balance -*-
"""
Weighted, smooth round robin (HAProxy's C{balance roundrobin}).
"""

from __future__ import annotations

from typing import Sequence

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.interfaces import IBalancer

__all__ = ["RoundRobin"]


@implementer(IBalancer)
class RoundRobin:
    """
    Give each server turns in proportion to its weight, interleaved: weights
    5, 1, 1 give C{a a b a c a a}, never five C{a}s in a row.

    This is the smooth weighted round robin of nginx: each pick adds every
    server's weight to its credit, takes the server with the most credit and
    charges it the total weight.  Weights are read at every pick, so a
    weight changed at run time takes effect at once.
    """

    def __init__(self) -> None:
        self._credit: dict[Server, int] = {}

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        if not servers:
            return None
        if len(servers) == 1:
            return servers[0]
        credit = self._credit
        best: Server | None = None
        bestCredit = 0
        total = 0
        for server in servers:
            weight = server.weight
            total += weight
            c = credit.get(server, 0) + weight
            credit[server] = c
            if best is None or c > bestCredit:
                best, bestCredit = server, c
        assert best is not None
        credit[best] = bestCredit - total
        return best
