"""
One http-mode site with the L7 features of issue 13 together
(docs/http.md, "Compression", "HTTP/2 and gRPC to servers"; docs/cache.md):
a cleartext frontend on 127.0.0.1:8175 that

  - compresses text pages (gzip, and br / zstd when installed),
  - keeps C{/static/} answers in an in-memory cache for 60 seconds,
  - passes gRPC calls (C{/demo.Echo/...}) as HTTP/2 streams to a grpcio
    server over h2c (C{Server(..., proto="h2c")}), health-checked in HTTP/2,
  - speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c) to clients on
    the same port, so C{grpc.insecure_channel} works without certificates.

The servers are started in this process: a content server on
127.0.0.1:9215 (it numbers its C{/static/} answers, so a cached one is
easy to tell) and a grpcio server on 127.0.0.1:9216 (pip install grpcio).

    twistd -n lbkit --config examples/l7_site.py
    curl -s --compressed -D - -o /dev/null http://127.0.0.1:8175/page.html   # content-encoding: gzip (or br)
    curl -i http://127.0.0.1:8175/static/app.css    # "static answer 1", from the server
    curl -i http://127.0.0.1:8175/static/app.css    # "static answer 1" again, from the cache: Age: 0, 1, ...

and a gRPC call, from Python:

    import grpc
    channel = grpc.insecure_channel("127.0.0.1:8175")
    channel.unary_unary("/demo.Echo/Say")(b"hello")    # b'grpc1: hello'
"""

from concurrent import futures
from typing import Any

import grpc
from twisted.application import strports
from twisted.application.service import Service
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from lbkit import Backend, Server, http
from lbkit.health import HTTPCheck
from lbkit.interfaces import IListener

#: A page worth compressing: about 100 kB of HTML.
PAGE = b"<html><body>\n" + b"".join(b"<p>Paragraph %d of the L7 site.</p>\n" % i for i in range(3000)) + b"</body></html>\n"


class Content(Resource):
    """C{/page.html}, and C{/static/...} answers numbered from 1."""

    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)
        self.staticAnswers = 0

    def render_GET(self, request: Any) -> bytes:
        if request.path.startswith(b"/static/"):
            self.staticAnswers += 1
            request.setHeader(b"content-type", b"text/css")
            return b"/* static answer %d */\n" % self.staticAnswers
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return PAGE


@implementer(IListener)
class ContentServer:
    """The content server, as a C{listen} item started in the same process."""

    definedAt = ("examples/l7_site.py", 0)

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def backends(self) -> list[Any]:
        return []

    def makeService(self, reactor: Any) -> Service:
        site = Site(Content())
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]
        return strports.service(self.endpoint, site, reactor=reactor)  # type: ignore[no-any-return]


@implementer(IListener)
class EchoServer:
    """A grpcio server answering C{/demo.Echo/Say} (as in examples/grpc.py)."""

    definedAt = ("examples/l7_site.py", 0)

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.endpoint = f"tcp:{port}:interface=127.0.0.1"

    def say(self, request: bytes, context: Any) -> bytes:
        return self.name.encode() + b": " + request

    def backends(self) -> list[Any]:
        return []

    def makeService(self, reactor: Any) -> Service:
        return _RunningEcho(self)


class _RunningEcho(Service):
    """The grpcio server of an L{EchoServer}, while the service runs."""

    def __init__(self, echo: EchoServer) -> None:
        self.echo = echo
        self.server: Any = None

    def startService(self) -> None:
        Service.startService(self)
        handler = grpc.method_handlers_generic_handler("demo.Echo", {
            "Say": grpc.unary_unary_rpc_method_handler(self.echo.say),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port(f"127.0.0.1:{self.echo.port}")
        self.server.start()

    def stopService(self) -> Any:
        Service.stopService(self)
        server, self.server = self.server, None
        if server is not None:
            return deferToThread(lambda: server.stop(1).wait(5))
        return None


content = Backend("content", [Server("content1", "127.0.0.1:9215")], health=HTTPCheck("/page.html", interval=2.0))
grpcBackend = Backend(
    "grpc",
    [Server("grpc1", "127.0.0.1:9216", proto="h2c")],
    # grpcio resets a plain GET: a POST as a gRPC client sends it (docs/health.md)
    health=HTTPCheck("/grpc.health.v1.Health/Check", method="POST", status=200, interval=2.0,
                     headers={"content-type": "application/grpc", "te": "trailers"}),
)

listen = [
    http.Frontend(
        "tcp:8175:interface=127.0.0.1",
        http2=True,
        compression=http.Compression(types=("text/",), minSize=1024),
        routes=[
            http.Route(http.pathBegins("/demo.Echo/"), grpcBackend),
            http.Route(
                http.pathBegins("/static/"),
                content,
                responseRules=[http.setHeader("Cache-Control", "max-age=60")],
                cache=http.Cache(maxBytes=16 * 2**20, maxObjectBytes=2**20, name="static"),
            ),
        ],
        default=content,
        name="l7site",
    ),
    ContentServer("tcp:9215:interface=127.0.0.1"),
    EchoServer("grpc1", 9216),
]
