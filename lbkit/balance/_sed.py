# -*- test-case-name: tests.test_balance_load -*-
"""
Shortest expected delay (LVS's C{sed} scheduler).
"""

from __future__ import annotations

from typing import Sequence

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.balance._scan import _Pairs, _WeightedScan
from lbkit.interfaces import IActiveBalancer, IAdoptingBalancer, IExplainingBalancer

__all__ = ["ShortestExpectedDelay"]


def _shortestDelay(pairs: _Pairs) -> Server | None:
    """
    The server minimising C{(active + 1) / weight}; the first on a tie.
    """
    best: Server | None = None
    bestDelay = float("inf")
    for server, inverse in pairs:
        delay = (server.active + 1) * inverse
        if delay < bestDelay:
            best, bestDelay = server, delay
    return best


@implementer(IActiveBalancer, IExplainingBalancer, IAdoptingBalancer)
class ShortestExpectedDelay(_WeightedScan):
    """
    Send the connection where it is expected to finish first: the server
    minimising C{(active + 1) / effectiveWeight}, counting the new
    connection itself.  Ties go to the first server in configuration order.

    Unlike L{LeastConn} (C{active / weight}), an idle heavy server beats an
    idle light one, so fast servers take the first connections.  From
    LVS's scheduler set; HAProxy has no equivalent.

    Cost: O(log n) per pick and per connection start and end when used by
    a L{lbkit.Backend}; O(n) for a pick among a subset of the eligible
    servers (some full or already tried), see L{_WeightedScan}.
    """

    _label = "sed"

    @staticmethod
    def _key(server: Server, inverse: float) -> float:
        return (server.active + 1) * inverse

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        pairs = self._candidates(servers)
        tree = self._tree
        if tree is not None and pairs is self._pairs:
            return pairs[self._treePick(tree)][0]
        return _shortestDelay(pairs)
