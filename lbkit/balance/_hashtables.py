# -*- test-case-name: tests.test_balance_hash -*-
"""
The three ways to map a hash to a server, HAProxy's C{hash-type} methods
plus Maglev: a map (L{_MapTable}), a ring of virtual nodes (L{_Ring}) and a
Maglev lookup table (L{_Maglev}).

Each is built from a list of servers and their weights (the weights read
once, at build time) and answers C{lookup} in O(1) or O(log n).
C{walk} is the slower lookup used when some servers must be skipped (full,
already tried, or over their bounded load).
"""

from __future__ import annotations

from bisect import bisect, bisect_left
from hashlib import blake2b
from itertools import accumulate
from math import gcd
from typing import Callable, Sequence

from lbkit._model import Server

__all__: list[str] = []

_Accept = Callable[[Server], bool]


def _hash64(data: bytes) -> int:
    """
    A well-mixed 64-bit hash of C{data}.  Stable across processes and
    Python versions (unlike C{hash}), so every lbkit instance maps a key to
    the same server.
    """
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def _weightedChoice(h: int, servers: Sequence[Server]) -> Server | None:
    """
    Map C{h} onto C{servers} by weight, map-based style, in O(n).
    """
    live = [s for s in servers if s.weight > 0]
    if not live:
        return None
    cumulative = list(accumulate(s.weight for s in live))
    return live[bisect(cumulative, h % cumulative[-1])]


class _MapTable:
    """
    HAProxy's C{map-based} hashing: a table in which each server appears as
    many times as its weight (reduced by their common divisor), spread
    evenly; a hash picks the entry C{hash % len(table)}.

    Cheap and perfectly even, but when the servers change most keys move.
    """

    def __init__(self, servers: Sequence[Server]) -> None:
        live = [s for s in servers if s.weight > 0]
        divisor = 0
        for server in live:
            divisor = gcd(divisor, server.weight)
        entries = []
        for position, server in enumerate(live):
            weight = server.weight // divisor
            for turn in range(weight):
                entries.append(((2 * turn + 1) / (2 * weight), position, server))
        entries.sort(key=lambda e: e[:2])
        self.table = [e[2] for e in entries]

    def lookup(self, h: int) -> Server | None:
        table = self.table
        return table[h % len(table)] if table else None

    def walk(self, h: int, accept: _Accept, servers: Sequence[Server]) -> Server | None:
        server = self.lookup(h)
        if server is not None and accept(server):
            return server
        return _weightedChoice(h, [s for s in servers if accept(s)])


class _Ring:
    """
    HAProxy's C{consistent} hashing: each server owns C{weight * points}
    pseudo-random points on a 64-bit ring; a key goes to the owner of the
    first point at or after its hash.

    Removing a server moves only the keys it owned; adding one moves about
    1/(n+1) of them.  The spread is less even than a map's: more points per
    weight unit even it out, at the cost of memory and build time.
    """

    def __init__(self, servers: Sequence[Server], points: int) -> None:
        nodes: list[tuple[int, int]] = []
        live = [s for s in servers if s.weight > 0]
        for position, server in enumerate(live):
            for point in _points(server.name, server.weight * points):
                nodes.append((point, position))
        nodes.sort()
        self.hashes = [n[0] for n in nodes]
        self.owners = [live[n[1]] for n in nodes]
        self.distinct = len(live)

    def lookup(self, h: int) -> Server | None:
        owners = self.owners
        if not owners:
            return None
        i = bisect_left(self.hashes, h)
        return owners[i if i < len(owners) else 0]

    def walk(self, h: int, accept: _Accept, servers: Sequence[Server]) -> Server | None:
        owners = self.owners
        n = len(owners)
        if not n:
            return None
        i = bisect_left(self.hashes, h)
        seen: set[Server] = set()
        for step in range(n):
            server = owners[(i + step) % n]
            if server in seen:
                continue
            if accept(server):
                return server
            seen.add(server)
            if len(seen) == self.distinct:
                break
        return None


def _points(name: str, count: int) -> list[int]:
    """
    The first C{count} ring points of the server called C{name}; a server's
    points depend on nothing else, which is what makes the ring consistent.
    """
    prefix = name.encode("utf-8") + b"#"
    return [_hash64(prefix + b"%d" % i) for i in range(count)]


def _isPrime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def _maglevSize(servers: int) -> int:
    """
    Google's and Envoy's choice: the prime 65537 for up to a few hundred
    servers, else the first prime above 100 entries per server.
    """
    size = max(65537, 100 * servers + 1)
    while not _isPrime(size):
        size += 2
    return size


class _Maglev:
    """
    Maglev hashing (Eisenbud et al., NSDI 2016), weighted as in Envoy: a
    lookup table of prime size M filled by letting each server claim
    entries along its own permutation of the table, in turns proportional
    to its weight.

    The spread is nearly as even as a map's and a change of servers moves
    few keys beyond those of the server that changed (not strictly only
    those, unlike a ring).  O(1) lookups; building takes O(M log M).
    """

    def __init__(self, servers: Sequence[Server], size: int | None) -> None:
        live = [s for s in servers if s.weight > 0]
        m = _maglevSize(len(live)) if size is None else size
        if not _isPrime(m):
            raise ValueError(f"Maglev table size must be prime, not {m}")
        self.size = m
        self.distinct = len(live)
        table: list[Server | None] = [None] * m
        self.table = table
        if not live:
            return
        offsets = []
        skips = []
        for server in live:
            name = server.name.encode("utf-8")
            offsets.append(_hash64(b"offset:" + name) % m)
            skips.append(_hash64(b"skip:" + name) % (m - 1) + 1)
        weights = [s.weight for s in live]
        top = max(weights)
        credit = [0] * len(live)
        nexts = [0] * len(live)
        filled = 0
        while True:
            for i, server in enumerate(live):
                credit[i] += weights[i]
                if credit[i] < top:
                    continue
                credit[i] -= top
                offset, skip, j = offsets[i], skips[i], nexts[i]
                slot = (offset + j * skip) % m
                while table[slot] is not None:
                    j += 1
                    slot = (offset + j * skip) % m
                table[slot] = server
                nexts[i] = j + 1
                filled += 1
                if filled == m:
                    return

    def lookup(self, h: int) -> Server | None:
        return self.table[h % self.size]

    def walk(self, h: int, accept: _Accept, servers: Sequence[Server]) -> Server | None:
        table = self.table
        m = self.size
        start = h % m
        seen: set[Server] = set()
        for step in range(m):
            server = table[(start + step) % m]
            if server is None or server in seen:
                continue
            if accept(server):
                return server
            seen.add(server)
            if len(seen) == self.distinct:
                break
        return None
