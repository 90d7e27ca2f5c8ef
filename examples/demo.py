"""
The lbkit demo: a tcp-mode frontend on 127.0.0.1:8080 in front of three
small HTTP servers started in this same process on 127.0.0.1:9001-9003.

    twistd -n lbkit --config examples/demo.py
    curl http://127.0.0.1:8080/     # web1, then web2, then web3
"""

from lbkit import Backend, Server, tcp
from lbkit.balance import RoundRobin
from lbkit.demo import HelloServer

web = Backend(
    "web",
    servers=[
        Server("web1", "127.0.0.1:9001"),
        Server("web2", "127.0.0.1:9002"),
        Server("web3", "127.0.0.1:9003"),
    ],
    balance=RoundRobin(),
)

listen = [
    tcp.Frontend("tcp:8080:interface=127.0.0.1", backend=web, name="demo"),
    HelloServer("web1", "tcp:9001:interface=127.0.0.1"),
    HelloServer("web2", "tcp:9002:interface=127.0.0.1"),
    HelloServer("web3", "tcp:9003:interface=127.0.0.1"),
]
