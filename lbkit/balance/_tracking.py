# -*- test-case-name: tests.test_balance -*-
"""
Shared machinery for balancers that precompute a structure (a schedule, a
table, a ring) from the list of servers they are handed.

A L{Backend} hands L{IBalancer.pick} the same list object for as long as
nothing changes, so an identity check tells in O(1) that the precomputed
structure still applies.  Server state and weight changes arrive as
L{IServerListener} events and mark it stale; it is rebuilt lazily, at the
next pick.  When the backend hands a strict subset of that list (some
servers are full or already tried for this connection), the balancer takes
a slower O(k) path for that one pick.
"""

from __future__ import annotations

from typing import Sequence

from zope.interface import implementer

from lbkit._model import Server, ServerState
from lbkit.interfaces import IServerListener

__all__: list[str] = []


def _loads(servers: Sequence[Server], chosen: Server, most: int = 3) -> str:
    """C{"s1 4, s3 5"}: the active counts of up to C{most} servers other than C{chosen}."""
    others = [f"{s.name} {s.active}" for s in servers if s is not chosen][:most]
    more = len(servers) - 1 - len(others)
    return ", ".join(others) + (f" (+{more} more)" if more > 0 else "")


@implementer(IServerListener)
class _Tracking:
    """
    Base class: knows which server list its structure was built for and
    whether that structure is still valid.

    Subclasses implement L{_rebuild} and set L{_rampWatch} to the servers
    whose effective weight they read while those are in slow start.
    """

    #: Whether the balancer reads C{effectiveWeight} (and so must notice slow
    #: start progress, which fires no event).
    _usesEffectiveWeight = False

    def __init__(self) -> None:
        self._dirty = True
        self._builtFor: object = None
        self._keyList: list[Server] = []
        self._keySet: set[Server] = set()
        self._subscribed: set[Server] = set()
        self._rampWatch: list[tuple[Server, int]] = []

    # -- IServerListener -------------------------------------------------

    def stateChanged(self, server: Server, old: ServerState, new: ServerState, reason: str) -> None:
        self._dirty = True

    def weightChanged(self, server: Server, old: int, new: int) -> None:
        self._dirty = True

    def invalidate(self) -> None:
        """
        Forget the precomputed structure; the next pick rebuilds it.  Only
        needed after changing something lbkit cannot see (weights and states
        changed through L{Server.setWeight} and L{Server.setState} are seen).
        """
        self._dirty = True

    # -- for subclasses --------------------------------------------------

    def _rampMoved(self) -> bool:
        for server, weight in self._rampWatch:
            if server.effectiveWeight != weight:
                return True
        return False

    def _isFull(self, servers: Sequence[Server]) -> bool:
        """
        Make sure the precomputed structure matches C{servers}.

        @return: C{True} when C{servers} is the list the structure is built
            for (rebuilding it first if needed); C{False} when C{servers}
            is a strict subset of it, for which the caller takes its slow
            path.
        """
        if servers is self._builtFor and not self._dirty and not (self._rampWatch and self._rampMoved()):
            return True
        current = list(servers)
        if not self._dirty and not (self._rampWatch and self._rampMoved()):
            if current == self._keyList:
                self._builtFor = servers
                return True
            keySet = self._keySet
            if len(current) < len(self._keyList) and all(s in keySet for s in current):
                return False
        self._build(current)
        self._builtFor = servers
        return True

    def _build(self, servers: list[Server]) -> None:
        for server in servers:
            if server not in self._subscribed:
                self._subscribed.add(server)
                server.addListener(self)
        self._keyList = servers
        self._keySet = set(servers)
        self._dirty = False
        if self._usesEffectiveWeight:
            self._rampWatch = [(s, s.effectiveWeight) for s in servers if s.rampFactor < 1.0]
        self._rebuild(servers)

    def _rebuild(self, servers: list[Server]) -> None:
        """
        Build the structure for C{servers} (already copied into a list).
        """
        raise NotImplementedError()
