"""
A user-written balancer, used from a site file exactly like a built-in:
send each connection to the server with the lowest recent latency.

    twistd -n lbkit --config examples/custom_balancer.py

Whatever measures latency (a health check, a response hook) calls
C{balancer.record(server, seconds)}; failed connections reported by the
proxies count as a slow answer.
"""

from zope.interface import implementer

from lbkit import Backend, Server, tcp
from lbkit.demo import HelloServer
from lbkit.interfaces import IBalancer


@implementer(IBalancer)
class LowestLatency:
    """Pick the server whose recent latency (an EWMA, in seconds) is lowest."""

    def __init__(self, decay=0.3, penalty=1.0):
        self.decay, self.penalty = decay, penalty
        self.latency = {}  # server -> EWMA; unknown servers count as 0, so they get tried
        self.watched = set()

    def record(self, server, seconds):
        old = self.latency.get(server, seconds)
        self.latency[server] = old + self.decay * (seconds - old)

    def _observe(self, server, ok, reason):
        if not ok:
            self.record(server, self.penalty)

    def pick(self, servers, context):
        for server in servers:
            if server not in self.watched:
                self.watched.add(server)
                server.addObserver(self._observe)
        return min(servers, key=lambda s: (self.latency.get(s, 0.0), s.active), default=None)


balancer = LowestLatency()
web = Backend(
    "web",
    servers=[Server("web1", "127.0.0.1:9001"), Server("web2", "127.0.0.1:9002")],
    balance=balancer,
)
listen = [
    tcp.Frontend("tcp:8080:interface=127.0.0.1", backend=web, name="custom"),
    HelloServer("web1", "tcp:9001:interface=127.0.0.1"),
    HelloServer("web2", "tcp:9002:interface=127.0.0.1"),
]
