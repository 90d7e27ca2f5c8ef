"""
Picks per second of each built-in balancer, for 10 and 1,000 servers.

    .venv/bin/python bench/pickbench.py

Not a test.  Servers have weights 1 to 4 (cycling), 1 to 20 active
connections each (random, fixed during the run: no server is idle), all up;
the balancer is called as a Backend calls it: with the same eligible list
each time.  "subset" rows hand a list with one server left out (as when a
server is full or already tried), which takes the slower path.
"""

from __future__ import annotations

import random
import timeit
from typing import Callable

from twisted.internet.address import IPv4Address

from lbkit import Context, Server
from lbkit import balance as b
from lbkit.interfaces import IBalancer


class _Request:
    method = b"GET"

    def __init__(self, i: int) -> None:
        self.path = b"/item/%d" % i
        self.query = b"user=%d" % i
        self.uri = self.path + b"?" + self.query

    def header(self, name: bytes) -> bytes | None:
        return self.query


BALANCERS: list[tuple[str, Callable[[], IBalancer]]] = [
    ("RoundRobin", b.RoundRobin),
    ("StaticRR", b.StaticRR),
    ("LeastConn", b.LeastConn),
    ("ShortestExpectedDelay", b.ShortestExpectedDelay),
    ("NeverQueue", b.NeverQueue),
    ("First", b.First),
    ("Random(draws=2)", lambda: b.Random(2, random=random.Random(1))),
    ("Source (map-based)", b.Source),
    ("Source (consistent)", lambda: b.Source(hashType="consistent")),
    ("Source (consistent, factor 150)", lambda: b.Source(hashType="consistent", hashBalanceFactor=150)),
    ("Source (maglev)", lambda: b.Source(hashType="maglev")),
    ("URI", b.URI),
    ("Header", lambda: b.Header(b"X-User")),
    ("URLParam", lambda: b.URLParam(b"user")),
]


def rate(make: Callable[[], IBalancer], n: int, subset: bool = False, picks: int = 20000) -> float:
    servers = [Server(f"s{i}", f"127.0.0.1:{1000 + i}", weight=1 + i % 4) for i in range(n)]
    loads = random.Random(n)
    for server in servers:
        server.active = loads.randint(1, 20)
    contexts = [
        Context(client=IPv4Address("TCP", f"10.0.{i // 256}.{i % 256}", 1), request=_Request(i))
        for i in range(1024)
    ]
    balancer = make()
    balancer.pick(servers, contexts[0])  # build tables outside the timing
    handed = servers[1:] if subset else servers
    pick = balancer.pick
    state = {"i": 0}

    def once() -> None:
        i = state["i"] = (state["i"] + 1) & 1023
        pick(handed, contexts[i])

    seconds = min(timeit.repeat(once, number=picks, repeat=3))
    return picks / seconds


def main() -> None:
    print("| balancer | 10 servers | 1,000 servers | 1,000, subset |")
    print("|---|---:|---:|---:|")
    for name, make in BALANCERS:
        small = rate(make, 10)
        large = rate(make, 1000, picks=5000)
        sub = rate(make, 1000, subset=True, picks=500)
        print(f"| {name} | {small:,.0f} | {large:,.0f} | {sub:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
