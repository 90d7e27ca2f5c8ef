"""
The lbkit site file that bench/h3.py starts: one TLS http frontend that
serves HTTP/1.1 and HTTP/2 over TCP and HTTP/3 over QUIC on the same port
number, round robin over the benchmark's nginx servers, no access log.

    LBKIT_BENCH_LISTEN=8443 LBKIT_BENCH_SERVERS=127.0.0.1:9001,127.0.0.1:9002 \\
    LBKIT_BENCH_CERT=localhost.pem twistd -n --pidfile= lbkit --config bench/sites/h3.py
"""

import os

from lbkit import Backend, Server, http, tls
from lbkit.balance import RoundRobin

_port = int(os.environ["LBKIT_BENCH_LISTEN"])
_addresses = os.environ["LBKIT_BENCH_SERVERS"].split(",")

nginx = Backend(
    "nginx",
    servers=[Server(f"nginx{i}", address) for i, address in enumerate(_addresses, 1)],
    balance=RoundRobin(),
)

listen = [
    http.Frontend(
        f"tcp:{_port}:interface=127.0.0.1",
        routes=[],
        default=nginx,
        tls=tls.Certificates(default=os.environ["LBKIT_BENCH_CERT"]),
        http3=True,
        log=False,
    ),
]
