"""
The lbkit http-mode site file that bench/run.py starts:

    LBKIT_BENCH_LISTEN=8000 LBKIT_BENCH_SERVERS=127.0.0.1:9001,127.0.0.1:9002 \\
        twistd -n --pidfile= lbkit --config bench/sites/http.py

A round-robin backend over the benchmark's nginx servers as the default of
an http frontend with no routes, no access log (HAProxy and nginx run
without one too); LBKIT_BENCH_LOG=1 turns the frontend's log on, for
the systems that pass --access-log.
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
    http.Frontend(f"tcp:{_port}:interface=127.0.0.1", routes=[], default=nginx,
                  log=os.environ.get("LBKIT_BENCH_LOG") == "1"),
]
