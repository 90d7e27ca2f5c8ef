"""
Picks per second of each built-in balancer, for 10 and 1,000 servers.

    .venv/bin/python bench/pickbench.py

Not a test.  Servers have weights 1 to 4 (cycling), 1 to 20 active
connections each (random, fixed during the run: no server is idle), all up;
the balancer is called as a Backend calls it: with the same eligible list
each time (and told of the active counts, as a Backend tells a balancer
that has C{activeChanged}).  "subset" rows hand a list with one server left
out (as when a server is full or already tried), which takes the slower
path.  "Backend" columns time a whole connection's worth of balancing
through a real L{lbkit.Backend}: C{tryAcquire} (the pick, then the slot
taken) and C{release}, over the same background load.

    .venv/bin/python bench/pickbench.py LeastConn NeverQueue   # only these rows
"""

from __future__ import annotations

import random
import sys
import timeit
from typing import Callable

from twisted.internet.address import IPv4Address

from lbkit import Backend, Context, Server
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


def _farm(n: int) -> tuple[list[Server], list[Context]]:
    servers = [Server(f"s{i}", f"127.0.0.1:{1000 + i}", weight=1 + i % 4) for i in range(n)]
    loads = random.Random(n)
    for server in servers:
        server.active = loads.randint(1, 20)
    contexts = [
        Context(client=IPv4Address("TCP", f"10.0.{i // 256}.{i % 256}", 1), request=_Request(i))
        for i in range(1024)
    ]
    return servers, contexts


def rate(make: Callable[[], IBalancer], n: int, subset: bool = False, picks: int = 20000) -> float:
    servers, contexts = _farm(n)
    balancer = make()
    hook = getattr(balancer, "activeChanged", None)
    if hook is not None:
        for server in servers:  # the counts were set by hand: say so
            hook(server)
    balancer.pick(servers, contexts[0])  # build tables outside the timing
    handed = servers[1:] if subset else servers
    pick = balancer.pick
    state = {"i": 0}

    def once() -> None:
        i = state["i"] = (state["i"] + 1) & 1023
        pick(handed, contexts[i])

    seconds = min(timeit.repeat(once, number=picks, repeat=3))
    return picks / seconds


def backendRate(make: Callable[[], IBalancer], n: int, rounds: int = 20000) -> float:
    """
    Connections per second through a L{Backend}: C{tryAcquire} then
    C{release}.
    """
    servers, contexts = _farm(n)
    backend = Backend("bench", servers, balance=make())
    tryAcquire, release = backend.tryAcquire, backend.release
    for context in contexts[:4]:  # build tables outside the timing
        server = tryAcquire(context)
        assert server is not None
        release(server)
    state = {"i": 0}

    def once() -> None:
        i = state["i"] = (state["i"] + 1) & 1023
        release(tryAcquire(contexts[i]))  # type: ignore[arg-type]

    seconds = min(timeit.repeat(once, number=rounds, repeat=3))
    return rounds / seconds


def main(only: list[str]) -> None:
    print("| balancer | 10 servers | 1,000 servers | 1,000, subset | Backend, 10 | Backend, 1,000 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, make in BALANCERS:
        if only and name.split("(")[0].strip() not in only:
            continue
        small = rate(make, 10)
        large = rate(make, 1000, picks=5000)
        sub = rate(make, 1000, subset=True, picks=500)
        viaSmall = backendRate(make, 10)
        viaLarge = backendRate(make, 1000, rounds=5000)
        print(
            f"| {name} | {small:,.0f} | {large:,.0f} | {sub:,.0f} | {viaSmall:,.0f} | {viaLarge:,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
