"""
The Python cost of one proxied http request, without sockets or a reactor.

    .venv/bin/python bench/hotpath.py            # 5 repeats of 50,000 requests
    .venv/bin/python bench/hotpath.py --log      # with the access log on (a file: /dev/null)
    .venv/bin/python bench/hotpath.py --syslog   # with the access log on (syslog over UDP, RFC 3164)
    .venv/bin/python bench/hotpath.py --stats    # with a stats page bound (latency timed)
    .venv/bin/python bench/hotpath.py --trace    # with requestId=True, tracing=True

One client connection and one pooled server connection, both
L{StringTransport}s on a L{MemoryReactorClock}: each request's head is fed
to the frontend protocol, the response (a 13-byte body, as bench/run.py's
C{/small}) to the server protocol, and the client's bytes are checked and
cleared.  What it times is everything lbkit's own code does per request
(parsing both heads, routing, choosing, the head rewrites, accounting,
the access log) and none of what the kernel and Twisted's reactor do;
bench/run.py measures the whole.  It prints the best repeat in
microseconds per request: repeatable to a few per cent on a quiet machine,
so it can tell a change to the per-request path worth a microsecond.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from typing import Any

from twisted.internet.address import IPv4Address

from lbkit import Backend, Server, stats
from lbkit._accesslog import AccessLogSink, FileWriter, LineWriter
from lbkit._syslog import SyslogWriter
from lbkit.balance import RoundRobin
from lbkit.http import Frontend
from lbkit.testing import FakeEndpoint, HalfCloseableStringTransport, HTTPHarness

REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 03 Dec 2026 13:30:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nhello, world\n"
)


def setUp(
    log: bool, statsPage: bool = False, trace: bool = False, syslog: bool = False
) -> tuple[Any, HalfCloseableStringTransport, Any, HalfCloseableStringTransport]:
    servers = [Server(f"s{i}", FakeEndpoint(IPv4Address("TCP", "192.0.2.1", 80 + i))) for i in (1, 2)]
    backend = Backend("be", servers, balance=RoundRobin())
    options: dict[str, Any] = {"requestId": True, "tracing": True} if trace else {}
    frontend = Frontend("tcp:8000", [], default=backend, name="fe", log=log, **options)
    if statsPage:
        page = stats.Page("tcp:8404")
        page.bindSite([frontend, page])
    harness = HTTPHarness(frontend)
    if log:
        sink = harness.factory.accessSink = AccessLogSink()
        writer: LineWriter
        if syslog:
            # a receiver on 127.0.0.1 that never reads: the sends cost what they cost, the kernel drops
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            receiver.bind(("127.0.0.1", 0))
            writer = SyslogWriter(receiver.getsockname(), clock=harness.reactor)
            writer.receiver = receiver  # type: ignore[attr-defined]  # (kept open while the writer is)
        else:
            writer = FileWriter(os.devnull, "text", harness.reactor)
        sink.replace([writer], True)
    protocol = harness.factory.buildProtocol(harness.clientAddress)
    client = HalfCloseableStringTransport(hostAddress=harness.frontendAddress, peerAddress=harness.clientAddress)
    protocol.makeConnection(client)
    # the first request to each server connects; later ones reuse the pool
    sides = {}
    for _ in servers:
        protocol.dataReceived(REQUEST)
        side = harness.connect()
        side.protocol.dataReceived(RESPONSE)
        sides[side.protocol.server] = side
    client.clear()
    return protocol, client, sides, harness


def run(count: int, log: bool, statsPage: bool = False, trace: bool = False, syslog: bool = False) -> float:
    protocol, client, sides, _ = setUp(log or syslog, statsPage, trace, syslog)
    conns = [(s.protocol, s.transport) for s in sides.values()]
    feed = protocol.dataReceived
    clear = client.clear
    start = time.process_time()
    for i in range(count):
        feed(REQUEST)
        conn, transport = conns[i & 1]
        transport.clear()
        conn.dataReceived(RESPONSE)
    elapsed = time.process_time() - start
    if not client.value().endswith(b"hello, world\n"):
        raise SystemExit(f"unexpected answer: {client.value()[-200:]!r}")
    clear()
    return elapsed / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--log", action="store_true", help="access log on (buffered, to /dev/null)")
    parser.add_argument("--syslog", action="store_true", help="access log on (syslog over UDP to 127.0.0.1, not read)")
    parser.add_argument("--stats", action="store_true", help="a stats page bound: latency timed")
    parser.add_argument("--trace", action="store_true", help="requestId=True, tracing=True")
    args = parser.parse_args()
    best = min(run(args.count, args.log, args.stats, args.trace, args.syslog) for _ in range(args.repeat))
    extra = (", stats page" if args.stats else "") + (", traced" if args.trace else "")
    log = "syslog" if args.syslog else "on" if args.log else "off"
    print(f"http small, log {log}{extra}: {best:.2f} µs per request (best of {args.repeat} × {args.count:,})")


if __name__ == "__main__":
    main()
