# -*- test-case-name: tests.test_balance -*-
"""
Shortest expected delay (LVS's C{sed} scheduler).
"""

from __future__ import annotations

from typing import Sequence

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.balance._scan import _Pairs, _WeightedScan
from lbkit.interfaces import IBalancer

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


@implementer(IBalancer)
class ShortestExpectedDelay(_WeightedScan):
    """
    Send the connection where it is expected to finish first: the server
    minimising C{(active + 1) / effectiveWeight}, counting the new
    connection itself.  Ties go to the first server in configuration order.

    Unlike L{LeastConn} (C{active / weight}), an idle heavy server beats an
    idle light one, so fast servers take the first connections.  From
    LVS's scheduler set; HAProxy has no equivalent.

    Cost: O(n) per pick.
    """

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        return _shortestDelay(self._candidates(servers))
