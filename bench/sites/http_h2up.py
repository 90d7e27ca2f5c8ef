"""
The lbkit site file that bench/h2up.py starts: bench/sites/http.py, with
the servers spoken to in HTTP/2 (cleartext, prior knowledge) when
LBKIT_BENCH_PROTO=h2c, else in HTTP/1.1:

    LBKIT_BENCH_LISTEN=8000 LBKIT_BENCH_SERVERS=127.0.0.1:9001 LBKIT_BENCH_PROTO=h2c \\
        twistd -n --pidfile= lbkit --config bench/sites/http_h2up.py
"""

import os

from lbkit import Backend, Server, http
from lbkit.balance import RoundRobin

_port = int(os.environ["LBKIT_BENCH_LISTEN"])
_addresses = os.environ["LBKIT_BENCH_SERVERS"].split(",")
_proto = os.environ.get("LBKIT_BENCH_PROTO") or None

nginx = Backend(
    "nginx",
    servers=[Server(f"nginx{i}", address, proto=_proto) for i, address in enumerate(_addresses, 1)],
    balance=RoundRobin(),
)

listen = [http.Frontend(f"tcp:{_port}:interface=127.0.0.1", routes=[], default=nginx, log=False)]
