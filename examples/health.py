"""
Health checks at work: three web servers behind one tcp frontend, checked
over HTTP.  web1 and web2 run in this process; web3 is never started, so
its checks fail and it is marked DOWN a few seconds after start-up:

    twistd -n lbkit --config examples/health.py
    # "Server app/web3 is DOWN, reason: Layer4 connection problem,
    #  info: "Connection refused", check duration: 0ms. 2 active and 0 backup servers left."
    curl http://127.0.0.1:8081/      # web1 and web2 only

web1 has a 10 second slow start: when it comes back after a failure, its
share of new connections grows from almost nothing to its full weight.
Live traffic is watched too: 3 refused connects in a row take a server
DOWN at once, without waiting for the next check.
"""

from lbkit import Backend, Server, tcp
from lbkit.balance import RoundRobin
from lbkit.demo import HelloServer
from lbkit.health import HTTPCheck

app = Backend(
    "app",
    servers=[
        Server("web1", "127.0.0.1:9101", weight=2, slowstart=10.0),
        Server("web2", "127.0.0.1:9102"),
        Server("web3", "127.0.0.1:9103"),
    ],
    balance=RoundRobin(),
    health=HTTPCheck(
        "/",
        status=200,
        body="web",
        interval=2.0,
        fastinter=0.5,
        downinter=5.0,
        rise=2,
        fall=3,
        timeout=1.0,
        observe="layer4",
        errorLimit=3,
        onMarkedDown="shutdown-sessions",
    ),
)

listen = [
    tcp.Frontend("tcp:8081:interface=127.0.0.1", backend=app, name="health-demo"),
    HelloServer("web1", "tcp:9101:interface=127.0.0.1"),
    HelloServer("web2", "tcp:9102:interface=127.0.0.1"),
]
