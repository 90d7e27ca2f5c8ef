"""
Every core: an http frontend on 127.0.0.1:8086 served by worker processes
(one per CPU with --workers auto), in front of two small HTTP servers
(127.0.0.1:9061-9062, started in the supervisor), with health checks and
the stats page on 127.0.0.1:8406 run once, in the supervisor.

    twistd -n lbkit --config examples/workers.py --workers 2
    curl http://127.0.0.1:8086/                   # web1, then web2
    curl http://127.0.0.1:8406/stats.json         # sums, and "workers": one row each
    kill -USR2 $(cat twistd.pid)                  # new workers, no refused connection
                                                  # (without -n; with -n, the twistd PID)

See docs/workers.md.
"""

from lbkit import Backend, Server, http, stats
from lbkit.demo import HelloServer
from lbkit.health import HTTPCheck

web = Backend(
    "web",
    servers=[
        Server("web1", "127.0.0.1:9061", maxconn=100),
        Server("web2", "127.0.0.1:9062", maxconn=100),
    ],
    health=HTTPCheck("/", interval=2.0),
)

listen = [
    HelloServer("web1", "tcp:9061:interface=127.0.0.1"),
    HelloServer("web2", "tcp:9062:interface=127.0.0.1"),
    http.Frontend("tcp:8086:interface=127.0.0.1", default=web, name="workers-demo"),
    stats.Page("tcp:8406:interface=127.0.0.1"),
]
