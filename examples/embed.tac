"""
Embedding lbkit in your own Twisted application.

This application runs its own service (a tiny status server on
127.0.0.1:8091 that reports, per server, how many connections lbkit has
sent it) next to an lbkit tcp-mode balancer on 127.0.0.1:8081 in front of
two demo servers on 127.0.0.1:9011-9012, all in one MultiService:

    twistd -ny examples/embed.tac
    curl http://127.0.0.1:8081/      # web1, then web2, ...
    nc 127.0.0.1 8091                # web1 127.0.0.1:9011 UP total=1 active=0 ...
"""

from twisted.application import service, strports
from twisted.internet.protocol import Factory, Protocol

from lbkit import Backend, Server, tcp
from lbkit.demo import HelloServer
from lbkit.service import LoadBalancerService

web = Backend(
    "web",
    servers=[
        Server("web1", "127.0.0.1:9011"),
        Server("web2", "127.0.0.1:9012"),
    ],
)

balancer = LoadBalancerService(
    [
        tcp.Frontend("tcp:8081:interface=127.0.0.1", backend=web, name="embedded"),
        HelloServer("web1", "tcp:9011:interface=127.0.0.1"),
        HelloServer("web2", "tcp:9012:interface=127.0.0.1"),
    ]
)


class Status(Protocol):
    """Write one line per server of C{web}, then close."""

    def connectionMade(self):
        for server in web.servers:
            self.transport.write(
                f"{server.name} {server.address} {server.state.value} "
                f"total={server.total} active={server.active}\n".encode()
            )
        self.transport.loseConnection()


status = strports.service("tcp:8091:interface=127.0.0.1", Factory.forProtocol(Status))

# Our own service tree: the balancer is one child among others.
top = service.MultiService()
balancer.setServiceParent(top)
status.setServiceParent(top)

application = service.Application("embed-example")
top.setServiceParent(application)
