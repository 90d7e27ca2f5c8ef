# -*- test-case-name: tests.test_balance -*-
"""
Never queue (LVS's C{nq} scheduler).
"""

from __future__ import annotations

from typing import Sequence

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.balance._scan import _WeightedScan
from lbkit.balance._sed import _shortestDelay
from lbkit.interfaces import IBalancer

__all__ = ["NeverQueue"]


@implementer(IBalancer)
class NeverQueue(_WeightedScan):
    """
    Send the connection to an idle server when there is one (the first in
    configuration order), else to the server with the shortest expected
    delay, as L{ShortestExpectedDelay}.

    A request never waits behind another while some server sits idle, which
    helps when service times are long or heavy-tailed.  From LVS's
    scheduler set; HAProxy has no equivalent.

    Cost: O(n) per pick.
    """

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        pairs = self._candidates(servers)
        for server, _ in pairs:
            if not server.active:
                return server
        return _shortestDelay(pairs)
