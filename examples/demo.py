"""
The lbkit demo: an http-mode frontend on 127.0.0.1:8080 in front of three
small HTTP servers started in this same process on 127.0.0.1:9001-9003,
and the stats page on 127.0.0.1:8404.

    twistd -n lbkit --config examples/demo.py
    curl http://127.0.0.1:8080/     # web1, then web2, then web3
    curl -i http://127.0.0.1:8080/  # the headers show X-Served-By
    open http://127.0.0.1:8404/     # the stats page
"""

from lbkit import Backend, Server, http, stats
from lbkit.balance import RoundRobin
from lbkit.demo import HelloServer
from lbkit.health import HTTPCheck

web = Backend(
    "web",
    servers=[
        Server("web1", "127.0.0.1:9001"),
        Server("web2", "127.0.0.1:9002"),
        Server("web3", "127.0.0.1:9003"),
    ],
    balance=RoundRobin(),
    health=HTTPCheck("/", interval=1.0, rise=2, fall=2),
)

listen = [
    http.Frontend("tcp:8080:interface=127.0.0.1", default=web, name="demo"),
    stats.Page("tcp:8404:interface=127.0.0.1"),
    HelloServer("web1", "tcp:9001:interface=127.0.0.1"),
    HelloServer("web2", "tcp:9002:interface=127.0.0.1"),
    HelloServer("web3", "tcp:9003:interface=127.0.0.1"),
]
