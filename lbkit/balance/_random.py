# -*- test-case-name: tests.test_balance -*-
"""
Weighted random with N draws, "power of two choices" (HAProxy's
C{balance random(<draws>)}).
"""

from __future__ import annotations

import random as _random
from bisect import bisect
from itertools import accumulate
from typing import Sequence

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.balance._tracking import _Tracking
from lbkit.error import ConfigError
from lbkit.interfaces import IBalancer, IExplainingBalancer

__all__ = ["Random"]


@implementer(IBalancer, IExplainingBalancer)
class Random(_Tracking):
    """
    Draw C{draws} servers at random, each with probability proportional to
    its effective weight, and keep the least loaded of them (fewest
    C{active} connections relative to weight; the later draw on a tie).

    With C{draws=1} this is plain weighted random.  With the default of 2
    ("power of two choices") the most loaded servers are avoided while the
    choice stays cheap and needs no shared state, which makes it a good
    default for large farms and for several load balancers in front of the
    same servers.  Slow start applies.

    Cost: O(draws * log n) per pick (a binary search over cumulative
    weights).

    @ivar draws: How many servers are drawn per pick.
    """

    _usesEffectiveWeight = True

    def __init__(self, draws: int = 2, *, random: _random.Random | None = None) -> None:
        """
        @param draws: How many servers to draw (HAProxy's C{random(<draws>)}),
            at least 1.
        @param random: The source of randomness; a seeded C{random.Random}
            makes picks reproducible (tests, the simulator).
        """
        super().__init__()
        if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
            raise ConfigError(f"Random: draws must be a positive integer, not {draws!r}")
        self.draws = draws
        self._random = _random.Random() if random is None else random
        self._servers: list[Server] = []
        self._weights: list[int] = []
        self._cumulative: list[int] = []

    def _rebuild(self, servers: list[Server]) -> None:
        self._servers, self._weights, self._cumulative = _table(servers)

    def explain(self, servers: Sequence[Server], context: Context, chosen: Server | None) -> str:
        """C{"random(2 draws): s2 with 1 active"}: the less loaded of those drawn."""
        if chosen is None:
            return "random: no server"
        return f"random({self.draws} draws of {len(servers)}): {chosen.name} with {chosen.active} active"

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        if not servers:
            return None
        if self._isFull(servers):
            table, weights, cumulative = self._servers, self._weights, self._cumulative
        else:
            table, weights, cumulative = _table(servers)
        if not cumulative:
            return None
        total = cumulative[-1]
        draw = self._random.random
        i = bisect(cumulative, draw() * total)
        best, bestWeight = table[i], weights[i]
        for _ in range(self.draws - 1):
            i = bisect(cumulative, draw() * total)
            server, weight = table[i], weights[i]
            if server.active * bestWeight <= best.active * weight:
                best, bestWeight = server, weight
        return best


def _table(servers: Sequence[Server]) -> tuple[list[Server], list[int], list[int]]:
    table = []
    weights = []
    for server in servers:
        weight = server.effectiveWeight
        if weight > 0:
            table.append(server)
            weights.append(weight)
    return table, weights, list(accumulate(weights))
