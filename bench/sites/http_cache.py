"""
The lbkit http-mode site file bench/cache.py starts: bench/sites/http.py
with an C{http.Cache} on the frontend, every response fresh for an hour
(C{defaultTTL}: the benchmark's nginx says nothing about caching; HAProxy's
cache section gives the same hour with C{max-age 3600}).

    LBKIT_BENCH_LISTEN=8000 LBKIT_BENCH_SERVERS=127.0.0.1:9001,127.0.0.1:9002 \\
        twistd -n --pidfile= lbkit --config bench/sites/http_cache.py
"""

import os

from lbkit import Backend, Server, http
from lbkit.balance import RoundRobin

_port = int(os.environ["LBKIT_BENCH_LISTEN"])
_addresses = os.environ["LBKIT_BENCH_SERVERS"].split(",")

nginx = Backend(
    "nginx",
    servers=[Server(f"nginx{i}", address) for i, address in enumerate(_addresses, 1)],
    balance=RoundRobin(),
)

listen = [
    http.Frontend(f"tcp:{_port}:interface=127.0.0.1", routes=[], default=nginx, log=False,
                  cache=http.Cache(maxBytes=64 * 2**20, maxObjectBytes=2 * 2**20, defaultTTL=3600)),
]
