# -*- test-case-name: tests.test_balance -*-
"""
The shared part of the load-based balancers (L{LeastConn},
L{ShortestExpectedDelay}, L{NeverQueue}): each server paired with the
inverse of its effective weight, cached between picks.
"""

from __future__ import annotations

from typing import Sequence

from lbkit._model import Server
from lbkit.balance._tracking import _Tracking

__all__: list[str] = []

_Pairs = list[tuple[Server, float]]


class _WeightedScan(_Tracking):
    """
    Base class of balancers that compare servers by C{active / weight}.

    Server loads change with every connection and lbkit's model publishes
    no event for that, so these balancers look at every server on each pick
    (O(n), a tight loop over a cached list of C{(server, 1 / weight)}).
    """

    _usesEffectiveWeight = True

    def __init__(self) -> None:
        super().__init__()
        self._pairs: _Pairs = []

    def _rebuild(self, servers: list[Server]) -> None:
        self._pairs = _pairsFor(servers)

    def _candidates(self, servers: Sequence[Server]) -> _Pairs:
        """
        The C{(server, 1 / weight)} pairs for C{servers}, leaving out
        servers of weight 0.
        """
        if self._isFull(servers):
            return self._pairs
        return _pairsFor(servers)


def _pairsFor(servers: Sequence[Server]) -> _Pairs:
    pairs = []
    for server in servers:
        weight = server.effectiveWeight
        if weight > 0:
            pairs.append((server, 1.0 / weight))
    return pairs
