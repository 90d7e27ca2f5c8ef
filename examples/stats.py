"""
The stats page: a tcp frontend on 127.0.0.1:8090 in front of two small HTTP
servers (127.0.0.1:9031-9032, started in this process), and the stats page
on 127.0.0.1:8404 with the admin API turned on.

    twistd -n lbkit --config examples/stats.py
    curl http://127.0.0.1:8090/                    # web1, then web2
    open http://127.0.0.1:8404/                    # the read-only page
    open http://127.0.0.1:8404/admin/              # admin / secret: buttons
    curl http://127.0.0.1:8404/stats.json
    curl http://127.0.0.1:8404/metrics
    curl -u admin:secret -H 'X-LBKit-Admin: 1' -X POST \\
        'http://127.0.0.1:8404/admin/server?backend=web&server=web1&action=drain'
    echo 'show servers' | socat stdio unix:/tmp/lbkit-stats-example.sock

Change the password before using this anywhere but your own machine.
"""

from lbkit import Backend, Server, stats, tcp
from lbkit.balance import RoundRobin
from lbkit.demo import HelloServer

web = Backend(
    "web",
    servers=[
        Server("web1", "127.0.0.1:9031"),
        Server("web2", "127.0.0.1:9032"),
    ],
    balance=RoundRobin(),
)

listen = [
    tcp.Frontend("tcp:8090:interface=127.0.0.1", backend=web, name="web-in"),
    HelloServer("web1", "tcp:9031:interface=127.0.0.1"),
    HelloServer("web2", "tcp:9032:interface=127.0.0.1"),
    stats.Page(
        "tcp:8404:interface=127.0.0.1",
        admin=stats.Admin(users={"admin": "secret"}),
        socket="/tmp/lbkit-stats-example.sock",
    ),
]
