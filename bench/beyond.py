"""
What explaining costs (docs/beyond.md): one acquire and release per
decision with and without explain, a dry-run explain, and a preview.

    PYTHONPATH=. python bench/beyond.py
"""

from __future__ import annotations

import timeit
from typing import Any

from twisted.internet.address import IPv4Address

from lbkit import Backend, Context, Server
from lbkit._explain import enableExplain, explainChoice
from lbkit.balance import URI, LeastConn
from lbkit.http import Request

CLIENT = IPv4Address("TCP", "10.0.0.1", 1)
REQUEST = Request(b"GET", b"/a/b.png", b"HTTP/1.1", [])


def backend(balancer: Any) -> Backend:
    return Backend("b", [Server(f"s{i}", f"127.0.0.1:{9000 + i}") for i in range(8)], balance=balancer)


def decide(b: Backend) -> None:
    server = b.tryAcquire(Context(client=CLIENT, request=REQUEST))
    assert server is not None
    b.release(server)


def perCall(call: Any, number: int, repeat: int = 5) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number


def main() -> None:
    for name, make in (("leastconn", LeastConn), ("uri-consistent", lambda: URI(hashType="consistent"))):
        plain, told = backend(make()), backend(make())
        enableExplain(told)
        t0 = perCall(lambda b=plain: decide(b), 50_000) * 1e6
        t1 = perCall(lambda b=told: decide(b), 50_000) * 1e6
        t2 = perCall(lambda b=plain: explainChoice(b, Context(client=CLIENT, request=REQUEST)), 2_000, 3) * 1e6
        print(f"{name}: acquire+release {t0:.2f} us, with explain {t1:.2f} us, dry-run explain {t2:.1f} us")
    hashed = backend(URI(hashType="consistent"))
    t = perCall(lambda: hashed.preview(remove=["s3"]), 5, 3) * 1e3
    print(f"preview (8 servers, consistent ring, 10000 sampled keys): {t:.0f} ms")


if __name__ == "__main__":
    main()
