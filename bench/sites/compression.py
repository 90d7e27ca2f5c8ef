"""
The lbkit site file that bench/compression.py starts:

    LBKIT_BENCH_LISTEN=8120 LBKIT_BENCH_SERVERS=127.0.0.1:9160 LBKIT_BENCH_COMPRESS=gzip \\
        twistd -n --pidfile= lbkit --config bench/sites/compression.py

One http frontend in front of the benchmark's nginx server, compressing
with the algorithm LBKIT_BENCH_COMPRESS names (C{gzip}, C{br}, C{zstd},
optionally with a level: C{gzip:1}), or not at all (C{off}); no access log.
"""

import os

from lbkit import Backend, Server, http

_port = int(os.environ["LBKIT_BENCH_LISTEN"])
_addresses = os.environ["LBKIT_BENCH_SERVERS"].split(",")
_algorithm, _, _level = os.environ.get("LBKIT_BENCH_COMPRESS", "off").partition(":")
_levels = {_algorithm: int(_level)} if _level else None

nginx = Backend("nginx", servers=[Server(f"nginx{i}", a) for i, a in enumerate(_addresses, 1)])

listen = [
    http.Frontend(
        f"tcp:{_port}:interface=127.0.0.1", default=nginx, log=False,
        compression=None if _algorithm == "off" else http.Compression(algorithms=(_algorithm,), levels=_levels),
    ),
]
