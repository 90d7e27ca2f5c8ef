# -*- test-case-name: tests.test_balance_load -*-
"""
The shared part of the load-based balancers (L{LeastConn},
L{ShortestExpectedDelay}, L{NeverQueue}): each server paired with the
inverse of its effective weight, cached between picks, and a min-tree of
each server's load key kept up to date from C{activeChanged} events.

The O(log n) path applies when the balancer is told of every change of
C{Server.active} (a L{lbkit.Backend} calls C{activeChanged} from its
C{_reserve} and C{release}) and is handed the full eligible list.  Until
the first C{activeChanged} call (a balancer used on its own, whose caller
may change C{active} behind its back), and for a strict subset of that
list, each pick scans the servers: O(n).
"""

from __future__ import annotations

from typing import Sequence

from lbkit._model import Context, Server
from lbkit.balance._tracking import _loads, _Tracking

__all__: list[str] = []

_Pairs = list[tuple[Server, float]]

_INF = float("inf")


class _MinTree:
    """
    A segment tree of floats: point updates and "the first position at or
    after I{start} holding the minimum" in O(log n).

    Positions past the last key hold C{+inf}; so keys must be below it.
    """

    __slots__ = ("size", "values")

    def __init__(self, keys: Sequence[float]) -> None:
        size = 1
        while size < len(keys):
            size *= 2
        values = [_INF] * (2 * size)
        values[size:size + len(keys)] = keys
        for i in range(size - 1, 0, -1):
            a, b = values[2 * i], values[2 * i + 1]
            values[i] = a if a <= b else b
        self.size = size
        self.values = values

    def key(self, position: int) -> float:
        return self.values[self.size + position]

    def update(self, position: int, key: float) -> None:
        values = self.values
        i = self.size + position
        values[i] = key
        i >>= 1
        while i:
            a, b = values[2 * i], values[2 * i + 1]
            low = a if a <= b else b
            if values[i] == low:
                return  # the minimum here did not move, nor above
            values[i] = low
            i >>= 1

    def firstMin(self, start: int = 0) -> int:
        """
        The first position at or after C{start} (cyclically: wrapping to 0)
        whose key is the minimum.
        """
        values = self.values
        size = self.size
        low = values[1]
        i = 1
        if start:
            i = start + size
            while values[i] > low:
                while i & 1:
                    i >>= 1
                if not i:
                    i = 1  # none at or after start: the first overall
                    break
                i += 1
        while i < size:
            i <<= 1
            if values[i] > low:
                i += 1
        return i - size


class _WeightedScan(_Tracking):
    """
    Base class of balancers that compare servers by a load key computed
    from C{active} and C{1 / effectiveWeight} (L{_key}).

    Each pick on the full eligible list reads the minimum of a L{_MinTree}
    (O(log n)); each C{activeChanged} call updates one key (O(log n)); a
    state or weight change rebuilds the tree at the next pick (O(n)).  The
    key of the chosen server is checked against C{active} before it is
    returned, so a count raised without telling the balancer is still seen
    (a count lowered silently is not: that one must be reported).
    """

    _usesEffectiveWeight = True

    #: Below this many servers a scan is as fast as the tree; no tree is kept.
    _treeMin = 24

    def __init__(self) -> None:
        super().__init__()
        self._pairs: _Pairs = []
        self._live = False
        self._tree: _MinTree | None = None
        self._position: dict[Server, int] = {}

    @staticmethod
    def _key(server: Server, inverse: float) -> float:
        """
        The load key of C{server} (lowest wins): the very float the scan of
        the subclass compares, so both paths agree exactly.
        """
        raise NotImplementedError()

    def activeChanged(self, server: Server) -> None:
        """
        C{server.active} changed; called by a L{lbkit.Backend} after each
        change.  The first call switches the balancer to its O(log n) path.
        """
        tree = self._tree
        if tree is not None:
            position = self._position.get(server)
            if position is not None:
                tree.update(position, self._key(server, self._pairs[position][1]))
        elif not self._live:
            self._live = True
            self._dirty = True  # build the tree at the next pick

    #: The name L{explain} starts with.
    _label = "leastconn"

    def explain(self, servers: Sequence[Server], context: Context, chosen: Server | None) -> str:
        """C{"leastconn: s2 had 3 active, s1 4"} (with the weights when they differ)."""
        if chosen is None:
            return f"{self._label}: no server"
        weights = {s.effectiveWeight for s in servers}
        weighted = f" (weight {chosen.effectiveWeight})" if len(weights) > 1 else ""
        others = _loads(servers, chosen)
        return f"{self._label}: {chosen.name} had {chosen.active} active{weighted}" + (f", {others}" if others else "")

    def adopt(self, previous: object) -> bool:
        """
        Take over from another load-based balancer already told of every
        change of C{active} (its successor is told from now on): the load
        tree is built at the first pick, with no O(n) scans before.
        """
        if not isinstance(previous, _WeightedScan) or not previous._live:
            return False
        self._live = True
        self._dirty = True
        return True

    def _rebuild(self, servers: list[Server]) -> None:
        pairs = self._pairs = _pairsFor(servers)
        if self._live and pairs and len(pairs) >= self._treeMin:
            key = self._key
            self._position = {server: i for i, (server, _) in enumerate(pairs)}
            self._tree = _MinTree([key(server, inverse) for server, inverse in pairs])
        else:
            self._position = {}
            self._tree = None

    def _candidates(self, servers: Sequence[Server]) -> _Pairs:
        """
        The C{(server, 1 / weight)} pairs for C{servers}, leaving out
        servers of weight 0.
        """
        if self._isFull(servers):
            return self._pairs
        return _pairsFor(servers)

    def _treePick(self, tree: _MinTree, start: int = 0) -> int:
        """
        The position in L{_pairs} of the first server (cyclically from
        C{start}) with the lowest key, from C{tree} (L{_tree}, after
        C{_isFull} said yes).
        """
        pairs = self._pairs
        key = self._key
        while True:
            position = tree.firstMin(start)
            server, inverse = pairs[position]
            current = key(server, inverse)
            if current == tree.key(position):
                return position
            tree.update(position, current)  # raised without an activeChanged call


def _pairsFor(servers: Sequence[Server]) -> _Pairs:
    pairs = []
    for server in servers:
        weight = server.effectiveWeight
        if weight > 0:
            pairs.append((server, 1.0 / weight))
    return pairs
