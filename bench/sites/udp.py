"""
The lbkit UDP site file that bench/udp.py starts:

    LBKIT_BENCH_LISTEN=5300 LBKIT_BENCH_SERVERS=127.0.0.1:5301,127.0.0.1:5302 \\
        twistd -n --pidfile= lbkit --config bench/sites/udp.py

A round-robin UDP frontend over the benchmark's dnsmasq servers, one
session per query (responses=1, nginx's proxy_responses 1), no access log.
"""

import os

from lbkit import Backend, Server, udp
from lbkit.balance import RoundRobin

_port = int(os.environ["LBKIT_BENCH_LISTEN"])
_addresses = os.environ["LBKIT_BENCH_SERVERS"].split(",")

dns = Backend("dns", [Server(f"dns{i}", a) for i, a in enumerate(_addresses, 1)], balance=RoundRobin())

listen = [udp.Frontend(f"udp:{_port}:interface=127.0.0.1", dns, responses=1, log=False)]
