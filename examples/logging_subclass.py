"""
Subclassing tcp mode: log which server each connection goes to.

A TCPFrontendProtocol subclass overrides the serverChosen() hook, and a
TCPProxyFactory subclass builds it; tcp.Frontend(factory=...) uses it.

    twistd -n lbkit --config examples/logging_subclass.py
    curl http://127.0.0.1:8082/
    # ... [example#info] connection from 127.0.0.1:40112 goes to server web/web1
"""

from twisted.logger import Logger

from lbkit import Backend, Server, tcp
from lbkit.demo import HelloServer

log = Logger(namespace="example")


class LoggingProtocol(tcp.TCPFrontendProtocol):
    """A frontend protocol that logs each choice of server."""

    def serverChosen(self, server):
        client = self.transport.getPeer()
        log.info(
            "connection from {host}:{port} goes to server {server}",
            host=client.host,
            port=client.port,
            server=server.fullName,
        )


class LoggingFactory(tcp.TCPProxyFactory):
    protocol = LoggingProtocol


web = Backend(
    "web",
    servers=[
        Server("web1", "127.0.0.1:9021"),
        Server("web2", "127.0.0.1:9022"),
    ],
)

listen = [
    tcp.Frontend("tcp:8082:interface=127.0.0.1", backend=web, name="logging", factory=LoggingFactory),
    HelloServer("web1", "tcp:9021:interface=127.0.0.1"),
    HelloServer("web2", "tcp:9022:interface=127.0.0.1"),
]
