"""
The lbkit tcp-mode site file that bench/run.py starts:

    LBKIT_BENCH_LISTEN=8000 LBKIT_BENCH_SERVERS=127.0.0.1:9001,127.0.0.1:9002 \\
        twistd -n --pidfile= lbkit --config bench/sites/tcp.py

A round-robin backend over the benchmark's nginx servers, no access log
(HAProxy and nginx run without one too; LBKIT_BENCH_LOG=1 turns it on,
for the systems that pass --access-log).  LBKIT_SPLICE=1 turns on the
zero-copy relay (tcp.Frontend(..., splice=True)).
"""

import os

from lbkit import Backend, Server, tcp
from lbkit.balance import RoundRobin

_port = int(os.environ["LBKIT_BENCH_LISTEN"])
_addresses = os.environ["LBKIT_BENCH_SERVERS"].split(",")

nginx = Backend(
    "nginx",
    servers=[Server(f"nginx{i}", address) for i, address in enumerate(_addresses, 1)],
    balance=RoundRobin(),
)

listen = [
    tcp.Frontend(f"tcp:{_port}:interface=127.0.0.1", backend=nginx, name="bench",
                 log=os.environ.get("LBKIT_BENCH_LOG") == "1",
                 splice=os.environ.get("LBKIT_SPLICE") == "1"),
]
