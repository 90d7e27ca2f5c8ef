"""
UDP balancing (docs/udp.md): a UDP frontend on 127.0.0.1:5354 in front of
two small UDP echo servers started by this site file (each answers with its
name), health-checked with UDPCheck:

    twistd -n lbkit --config examples/udp.py
    echo hello | nc -u -w1 127.0.0.1 5354      # udp1: hello  (or udp2)

For DNS put real name servers behind it and give the frontend
responses=1 (one session per query, nginx's proxy_responses 1).
"""

from twisted.application.internet import UDPServer
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from lbkit import Backend, Server, udp
from lbkit.balance import RoundRobin
from lbkit.health import UDPCheck
from lbkit.interfaces import IListener


class Echo(DatagramProtocol):
    def __init__(self, name):
        self.name = name.encode()

    def datagramReceived(self, data, addr):
        self.transport.write(self.name + b": " + data, addr)


@implementer(IListener)
class EchoServer:
    """A listen item of our own: a UDP echo server (lbkit needs nothing more)."""

    def __init__(self, name, port):
        self.name, self.port = name, port
        self.endpoint = f"udp:{port}:interface=127.0.0.1"
        self.definedAt = (__file__, 0)

    def bindKey(self):
        return ("udp", self.port, "127.0.0.1")

    def backends(self):
        return []

    def makeService(self, reactor):
        return UDPServer(self.port, Echo(self.name), interface="127.0.0.1", reactor=reactor)


echo = Backend(
    "echo",
    servers=[Server("udp1", "127.0.0.1:9121"), Server("udp2", "127.0.0.1:9122")],
    balance=RoundRobin(),
    health=UDPCheck(b"ping", expect=b"udp", interval=2.0),
)

listen = [
    EchoServer("udp1", 9121),
    EchoServer("udp2", 9122),
    udp.Frontend("udp:5354:interface=127.0.0.1", echo, timeoutSession=10.0, name="echo-in"),
]
