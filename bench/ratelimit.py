"""
What a rate limit costs: per request, and per tracked key in memory.

    .venv/bin/python bench/ratelimit.py                # all three parts
    .venv/bin/python bench/ratelimit.py --count 20000  # shorter

1. The check alone: L{lbkit.traffic.RateLimit}'s C{answerRequest} and the
   end of the request (C{Context.ended}), called directly, over 1 key and
   over 10,000 keys (a table that moves its least recently used entries).
2. A whole proxied request (bench/hotpath.py's in-memory path: parsing,
   routing, choosing, relaying, accounting) without a rule, with a
   C{RateLimit} that never refuses, and with C{track} + C{deny(when=above)}:
   the difference is what the rule adds to a request.
3. Memory per tracked key, by C{tracemalloc}: 100,000 keys (IPv4 source
   addresses as str) in a table that keeps C{http_req_rate} only, and in
   one that keeps all six counters.  The entry (a list), the key string
   and the table's slot are all counted; the bound is C{size} keys.

Times are the best of C{--repeat} runs of C{time.process_time}.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from lbkit import Backend, Server
from lbkit._model import Context
from lbkit.balance import RoundRobin
from lbkit.http import Frontend, deny, pathBegins
from lbkit.testing import FakeEndpoint, HalfCloseableStringTransport, HTTPHarness
from lbkit.traffic import RateLimit, Table, above, track

REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 03 Dec 2026 13:30:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nhello, world\n"
)


class _Exchange:
    """What an answering rule reads of an exchange."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.context: Any = None


def check(count: int, keys: int) -> float:
    """Microseconds per RateLimit check plus the request's end, over C{keys} keys."""
    clock = Clock()
    clock.advance(1_000_000)
    limit = RateLimit(10**9, 10.0)
    exchange = _Exchange(clock)
    contexts = [Context(client=IPv4Address("TCP", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 5000))
                for i in range(keys)]
    answer = limit.answerRequest
    start = time.process_time()
    for i in range(count):
        context = contexts[i % keys]
        context.watchers = None
        exchange.context = context
        if answer(None, exchange) is not None:
            raise SystemExit("refused")
        context.ended(200, 60, 150)
    return (time.process_time() - start) / count * 1e6


def request(count: int, rules: list[Any]) -> float:
    """Microseconds per whole in-memory proxied request with C{rules}."""
    servers = [Server(f"s{i}", FakeEndpoint(IPv4Address("TCP", "192.0.2.1", 80 + i))) for i in (1, 2)]
    frontend = Frontend("tcp:8000", [], default=Backend("be", servers, balance=RoundRobin()), name="fe", log=False,
                        requestRules=rules)
    harness = HTTPHarness(frontend)
    protocol = harness.factory.buildProtocol(harness.clientAddress)
    client = HalfCloseableStringTransport(hostAddress=harness.frontendAddress, peerAddress=harness.clientAddress)
    protocol.makeConnection(client)
    sides = []
    for _ in servers:
        protocol.dataReceived(REQUEST)
        side = harness.connect()
        side.protocol.dataReceived(RESPONSE)
        sides.append((side.protocol, side.transport))
    client.clear()
    feed = protocol.dataReceived
    start = time.process_time()
    for i in range(count):
        feed(REQUEST)
        conn, transport = sides[i & 1]
        transport.clear()
        conn.dataReceived(RESPONSE)
    elapsed = time.process_time() - start
    if not client.value().endswith(b"hello, world\n"):
        raise SystemExit(f"unexpected answer: {client.value()[-200:]!r}")
    return elapsed / count * 1e6


def memory(keys: int, counters: Any) -> float:
    """Bytes per key of a table of C{keys} keys keeping C{counters}."""
    clock = Clock()
    clock.advance(1_000_000)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    table = Table("m", size=keys, counters=counters, clock=clock)
    for i in range(keys):  # the key strings are made while tracing: they count
        table.entry(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1_000_000.0)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(table) == keys
    return (after - before) / keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for keys in (1, 10_000):
        best = min(check(args.count, keys) for _ in range(args.repeat))
        print(f"RateLimit check + request end, {keys:,} keys: {best:.2f} µs per request")
    table = Table("t", counters=["http_req_rate(10s)"])
    cases = [("no rule", lambda: []),
             ("deny(when=pathBegins) that never matches: any answering rule", lambda: [deny(when=pathBegins("/no"))]),
             ("RateLimit", lambda: [RateLimit(10**9, 10.0)]),
             ("track + deny(when=above)", lambda: [track(table), deny(status=429, when=above(table, "http_req_rate", 10**9))])]
    # the cases take turns, so that a busy moment of the machine does not fall on one case only
    best = {name: float("inf") for name, _ in cases}
    for _ in range(args.repeat):
        for name, rules in cases:
            best[name] = min(best[name], request(args.count, rules()))
    base = best["no rule"]
    for name, _ in cases:
        extra = "" if name == "no rule" else f" ({best[name] - base:+.2f} µs)"
        print(f"proxied request, {name}: {best[name]:.2f} µs{extra}")
    for label, counters in (("http_req_rate only", ["http_req_rate(10s)"]),
                            ("a RateLimit's own table (conn_cur, conn_rate, http_req_rate)",
                             ["conn_cur", "conn_rate(10s)", "http_req_rate(10s)"]),
                            ("all six counters", None)):
        print(f"memory per key, {label}: {memory(100_000, counters):.0f} bytes (100,000 keys)")


if __name__ == "__main__":
    main()
