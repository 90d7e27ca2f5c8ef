"""
gRPC through lbkit: a TLS http frontend on 127.0.0.1:8110 speaks HTTP/2 to
gRPC clients (ALPN h2) and passes each call as an HTTP/2 stream to two
grpcio servers over cleartext HTTP/2 (C{Server(..., proto="h2c")}),
balanced by least connections; status codes, messages and every other
trailer pass through.  See docs/http.md, "HTTP/2 and gRPC to servers".
The demo servers need the grpcio package (pip install grpcio).

No key is shipped: make a certificate for localhost first, into the
directory named by $LBKIT_TLS_DIR (default: ./certs), as examples/http3.py
shows, then:

    twistd -n lbkit --config examples/grpc.py

and call it, e.g. from Python:

    import grpc
    creds = grpc.ssl_channel_credentials(open("certs/ca.pem", "rb").read())
    channel = grpc.secure_channel("localhost:8110", creds)
    echo = channel.unary_unary("/demo.Echo/Say")
    echo(b"hello")                        # b'grpc1: hello' or b'grpc2: hello'
    channel.unary_unary("/demo.Echo/Fail")(b"x")   # raises: PERMISSION_DENIED, "denied: x"
"""

import os
from concurrent import futures
from typing import Any

import grpc
from twisted.application.service import Service
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from lbkit import Backend, Server, http, tls
from lbkit.balance import LeastConn
from lbkit.health import HTTPCheck
from lbkit.interfaces import IListener

certs = os.environ.get("LBKIT_TLS_DIR", "certs")
log = Logger(namespace="demo")


@implementer(IListener)
class EchoServer:
    """
    A demo grpcio server answering C{/demo.Echo/Say} and C{/demo.Echo/Fail}
    (bytes in, bytes out), started and stopped with lbkit when put in
    C{listen}.
    """

    def __init__(self, name: str, port: int) -> None:
        self.definedAt = ("examples/grpc.py", 0)
        self.name = name
        self.port = port
        self.endpoint = f"tcp:{port}:interface=127.0.0.1"

    def say(self, request: bytes, context: Any) -> bytes:
        return self.name.encode() + b": " + request

    def fail(self, request: bytes, context: Any) -> bytes:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied: " + request.decode())
        return b""

    def backends(self) -> list[Any]:
        return []

    def makeService(self, reactor: Any) -> Service:
        return _Running(self)


class _Running(Service):
    """The grpcio server of an L{EchoServer}, while the service runs."""

    def __init__(self, echo: EchoServer) -> None:
        self.echo = echo
        self.server: Any = None

    def startService(self) -> None:
        Service.startService(self)
        echo = self.echo
        handler = grpc.method_handlers_generic_handler("demo.Echo", {
            "Say": grpc.unary_unary_rpc_method_handler(echo.say),
            "Fail": grpc.unary_unary_rpc_method_handler(echo.fail),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port(f"127.0.0.1:{echo.port}")
        self.server.start()
        log.info("demo gRPC server {name} listening on 127.0.0.1:{port}", name=echo.name, port=echo.port)

    def stopService(self) -> Any:
        Service.stopService(self)
        server, self.server = self.server, None
        if server is not None:
            return deferToThread(lambda: server.stop(1).wait(5))
        return None


grpcBackend = Backend(
    "grpc",
    [Server("grpc1", "127.0.0.1:9150", proto="h2c"), Server("grpc2", "127.0.0.1:9151", proto="h2c")],
    balance=LeastConn(),
    # an HTTP/2 check (grpcio resets a plain GET: a POST as gRPC clients send; docs/health.md)
    health=HTTPCheck("/grpc.health.v1.Health/Check", method="POST", status=200, interval=2.0,
                     headers={"content-type": "application/grpc", "te": "trailers"}),
)

listen = [
    http.Frontend(
        "tcp:8110:interface=127.0.0.1",
        tls=tls.Certificates(default=os.path.join(certs, "localhost.pem")),
        http2=True,
        default=grpcBackend,
        name="grpc",
    ),
    EchoServer("grpc1", 9150),
    EchoServer("grpc2", 9151),
]
