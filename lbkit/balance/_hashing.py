# -*- test-case-name: tests.test_balance_hash -*-
"""
The shared part of the hashing balancers (L{Source}, L{URI}, L{Header},
L{URLParam}): HAProxy's C{hash-type} and C{hash-balance-factor} options.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Callable, Sequence, Union

from lbkit._model import Context, Server
from lbkit.balance._hashtables import _hash64, _Maglev, _MapTable, _Ring
from lbkit.balance._roundrobin import RoundRobin
from lbkit.balance._tracking import _Tracking
from lbkit.error import ConfigError

__all__: list[str] = []

_HASH_TYPES = ("map-based", "consistent", "maglev")
_Table = Union[_MapTable, _Ring, _Maglev]
_active = attrgetter("active")


class _HashBalancer(_Tracking):
    """
    Base class: hash a key taken from the connection or request onto the
    servers, by weight.  Subclasses define L{_key}; when it returns C{None}
    (no request in tcp mode, header or parameter absent) the pick falls
    back to L{RoundRobin}, as in HAProxy.

    Weights are read when the table is built, which happens again after
    any weight or state change; slow start does not apply to hashing.

    @ivar hashType: C{"map-based"}, C{"consistent"} or C{"maglev"}.
    @ivar hashBalanceFactor: C{None}, or the bounded-load factor in
        percent (at least 100).
    @ivar ringPoints: Points on the ring per unit of weight.
    @ivar maglevTableSize: The Maglev table size, or C{None} for the
        default.
    """

    def __init__(
        self,
        *,
        hashType: str = "map-based",
        hashBalanceFactor: int | None = None,
        ringPoints: int = 40,
        maglevTableSize: int | None = None,
    ) -> None:
        """
        @param hashType: How a hash maps to a server (HAProxy's
            C{hash-type}): C{"map-based"} (the default: static, even,
            cheap; most keys move when a server comes or goes),
            C{"consistent"} (a ring of virtual nodes: only the keys of a
            server that comes or goes move) or C{"maglev"} (a Maglev
            lookup table: an even spread with few moves).
        @param hashBalanceFactor: Bounded loads (HAProxy's
            C{hash-balance-factor}), for C{consistent} and C{maglev}: a
            server whose active connections would exceed this percentage
            of the weighted average is skipped and the next one on the ring
            (or table) is used.  C{None} (the default) disables it; 150
            means at most 1.5 times the average.
        @param ringPoints: Points on the ring per unit of weight
            (C{consistent} only).
        @param maglevTableSize: The Maglev table size, a prime; by default
            65537, or more for more than 655 servers (C{maglev} only).
        """
        super().__init__()
        if hashType not in _HASH_TYPES:
            raise ConfigError(
                f"hashType must be one of {', '.join(map(repr, _HASH_TYPES))}, not {hashType!r}"
            )
        if hashBalanceFactor is not None:
            if not isinstance(hashBalanceFactor, int) or isinstance(hashBalanceFactor, bool):
                raise ConfigError(f"hashBalanceFactor must be an integer percentage, not {hashBalanceFactor!r}")
            if hashBalanceFactor == 0:
                hashBalanceFactor = None
            elif hashBalanceFactor < 100:
                raise ConfigError(f"hashBalanceFactor must be 0 (off) or at least 100, not {hashBalanceFactor}")
            elif hashType == "map-based":
                raise ConfigError('hashBalanceFactor needs hashType="consistent" or "maglev"')
        if not isinstance(ringPoints, int) or ringPoints < 1:
            raise ConfigError(f"ringPoints must be a positive integer, not {ringPoints!r}")
        self.hashType = hashType
        self.hashBalanceFactor = hashBalanceFactor
        self.ringPoints = ringPoints
        self.maglevTableSize = maglevTableSize
        self._table: _Table | None = None
        self._fallback = RoundRobin()
        if maglevTableSize is not None:
            try:
                _Maglev([], maglevTableSize)
            except ValueError as e:
                raise ConfigError(str(e)) from None

    def _key(self, context: Context) -> bytes | None:
        """
        The bytes to hash for this connection or request, or C{None} to
        fall back to round robin.
        """
        raise NotImplementedError()

    def _rebuild(self, servers: list[Server]) -> None:
        if self.hashType == "consistent":
            self._table = _Ring(servers, self.ringPoints)
        elif self.hashType == "maglev":
            self._table = _Maglev(servers, self.maglevTableSize)
        else:
            self._table = _MapTable(servers)

    def keyTable(self, servers: Sequence[Any]) -> Callable[[int], Any]:
        """The lookup of the table this balancer would build for C{servers} (L{IHashingBalancer})."""
        saved = self._table
        try:
            self._rebuild(list(servers))
            table = self._table
        finally:
            self._table = saved
        assert table is not None
        return table.lookup

    def explain(self, servers: Sequence[Server], context: Context, chosen: Server | None) -> str:
        """C{"uri hash 0x3f2a... -> s1"}; says when bounded load or a full server moved the key on."""
        name = type(self).__name__.lower()
        if chosen is None:
            return f"{name}: no server"
        key = self._key(context)
        if key is None:
            return f"{name}: nothing to hash, round robin -> {chosen.name}"
        h = _hash64(key)
        kind = "" if self.hashType == "map-based" else f" ({self.hashType})"
        said = f"{name} hash {h:#018x}{kind} -> {chosen.name}"
        home = self._table.lookup(h) if self._table is not None else None
        if home is not None and home is not chosen:
            why = "over its bounded load" if self.hashBalanceFactor is not None else "full or tried"
            said += f" ({home.name} {why})"
        return said

    def adopt(self, previous: object) -> bool:
        """
        Take the table (ring points, Maglev table, map) of C{previous}, a
        hashing balancer of the same C{hashType} and table options, as it
        stands: every key stays on its server.
        """
        if not isinstance(previous, _HashBalancer):
            return False
        same = [getattr(previous, n) == getattr(self, n) for n in ("hashType", "ringPoints", "maglevTableSize")]
        if not all(same) or previous._table is None or previous._dirty:
            return False
        self._table = previous._table
        self._keyList, self._keySet = previous._keyList, previous._keySet
        self._builtFor, self._dirty = previous._builtFor, False
        self._fallback.adopt(previous._fallback)
        return True

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        if not servers:
            return None
        key = self._key(context)
        if key is None:
            return self._fallback.pick(servers, context)
        h = _hash64(key)
        full = self._isFull(servers)
        table = self._table
        assert table is not None
        factor = self.hashBalanceFactor
        if full and factor is None:
            return table.lookup(h)
        allowed = None if full else set(servers)
        if factor is None:
            assert allowed is not None
            return table.walk(h, allowed.__contains__, servers)
        totalWeight = sum(s.weight for s in servers)
        if not totalWeight:
            return None
        slots = (sum(map(_active, servers)) + 1) * factor

        def accept(server: Server) -> bool:
            if allowed is not None and server not in allowed:
                return False
            # ceil(slots * weight / (100 * totalWeight)), at least 1
            capacity = max(1, -(-slots * server.weight // (100 * totalWeight)))
            return bool(server.active < capacity)

        return table.walk(h, accept, servers)
