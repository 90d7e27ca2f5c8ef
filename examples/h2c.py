"""
HTTP/2 without TLS (h2c with prior knowledge) on an http-mode frontend on
127.0.0.1:8100: a client that opens with the HTTP/2 connection preface is
spoken to in HTTP/2, any other in HTTP/1.1, on the same port (as HAProxy's
C{mode http} frontends do).  Each stream goes to the servers app1 and app2
(demo servers started in this same process on 127.0.0.1:9140-9141, each
answering with its name) in HTTP/1.1, with C{X-Forwarded-Proto: http}.

C{/ws} is a WebSocket echo server (127.0.0.1:9142, an ordinary HTTP/1.1
WebSocket server, also in this process; it needs the C{websockets}
package): an HTTP/1.1 client upgrades as usual, and an HTTP/2 client opens
its WebSocket as a stream with an extended CONNECT (RFC 8441), which lbkit
turns into the HTTP/1.1 handshake (docs/http.md, "WebSocket over HTTP/2").

    twistd -n lbkit --config examples/h2c.py
    curl --http2-prior-knowledge http://127.0.0.1:8100/   # app1, over HTTP/2
    curl http://127.0.0.1:8100/                           # app2, over HTTP/1.1

C{http2=True} is the default; C{http2=False} turns h2c off (the preface is
then a bad request, 505).
"""

from typing import Any

from twisted.application import strports
from twisted.application.service import Service
from twisted.internet.protocol import Factory, Protocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from zope.interface import implementer

from lbkit import Backend, Server, http
from lbkit.demo import HelloServer
from lbkit.interfaces import IListener


class _Echo(Protocol):
    """RFC 6455 over one connection: the handshake, then every text or binary message sent back."""

    def connectionMade(self) -> None:
        self.ws = ServerProtocol()

    def dataReceived(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self.ws.send_response(self.ws.accept(event))
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.ws.send_text(event.data)
            elif isinstance(event, Frame) and event.opcode is Opcode.BINARY:
                self.ws.send_binary(event.data)
        for out in self.ws.data_to_send():
            if out:
                self.transport.write(out)
            else:
                self.transport.loseConnection()


@implementer(IListener)
class WebSocketEcho:
    """The echo server, as a C{listen} item started in the same process."""

    definedAt = ("examples/h2c.py", 0)

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def backends(self) -> list[Any]:
        return []

    def makeService(self, reactor: Any) -> Service:
        return strports.service(self.endpoint, Factory.forProtocol(_Echo), reactor=reactor)  # type: ignore[no-any-return]


app = Backend("app", [Server("app1", "127.0.0.1:9140"), Server("app2", "127.0.0.1:9141")])
echo = Backend("echo", [Server("echo1", "127.0.0.1:9142")])

listen = [
    http.Frontend("tcp:8100:interface=127.0.0.1", [http.Route(http.pathBegins("/ws"), echo)], default=app,
                  name="h2c", http2=True),
    HelloServer("app1", "tcp:9140:interface=127.0.0.1"),
    HelloServer("app2", "tcp:9141:interface=127.0.0.1"),
    WebSocketEcho("tcp:9142:interface=127.0.0.1"),
]
