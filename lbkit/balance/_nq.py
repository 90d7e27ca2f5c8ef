# -*- test-case-name: tests.test_balance_load -*-
"""
Never queue (LVS's C{nq} scheduler).
"""

from __future__ import annotations

from typing import Sequence

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.balance._scan import _WeightedScan
from lbkit.balance._sed import _shortestDelay
from lbkit.interfaces import IActiveBalancer, IAdoptingBalancer, IExplainingBalancer

__all__ = ["NeverQueue"]

_IDLE = float("-inf")


@implementer(IActiveBalancer, IExplainingBalancer, IAdoptingBalancer)
class NeverQueue(_WeightedScan):
    """
    Send the connection to an idle server when there is one (the first in
    configuration order), else to the server with the shortest expected
    delay, as L{ShortestExpectedDelay}.

    A request never waits behind another while some server sits idle, which
    helps when service times are long or heavy-tailed.  From LVS's
    scheduler set; HAProxy has no equivalent.

    Cost: O(log n) per pick and per connection start and end when used by
    a L{lbkit.Backend}; O(n) for a pick among a subset of the eligible
    servers (some full or already tried), see L{_WeightedScan}.
    """

    _label = "nq"

    @staticmethod
    def _key(server: Server, inverse: float) -> float:
        # idle servers sort before every busy one, and tie among themselves
        # (so the first in order wins); busy ones sort by expected delay
        active = server.active
        return (active + 1) * inverse if active else _IDLE

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        pairs = self._candidates(servers)
        tree = self._tree
        if tree is not None and pairs is self._pairs:
            return pairs[self._treePick(tree)][0]
        for server, _ in pairs:
            if not server.active:
                return server
        return _shortestDelay(pairs)
