"""
Request IDs and W3C trace context: an http frontend on 127.0.0.1:8150 that
gives every request an X-Request-ID and continues (or starts) its trace, in
front of a server on 127.0.0.1:9190 (started in this process) that answers
with the tracing headers it received.  Access lines go to standard output,
with the request ID and trace-id at the end.  With opentelemetry-sdk
installed (pip install 'lbkit[otel]' opentelemetry-sdk), each request's span
is printed too (the SDK's ConsoleSpanExporter).

    twistd -n lbkit --config examples/tracing.py
    curl http://127.0.0.1:8150/
    curl -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \\
         -H 'X-Request-ID: my-request-1' http://127.0.0.1:8150/
"""

from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from lbkit import Backend, Server, http
from lbkit.interfaces import IListener
from lbkit.logs import AccessLog
from lbkit.service import ListeningService

try:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    tracing = http.Tracing(otel=True, tracerProvider=provider)
except ImportError:
    tracing = http.Tracing()


class ShowHeaders(Resource):
    """Answers with the tracing headers of the request."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        lines = []
        for name in (b"x-request-id", b"traceparent", b"tracestate"):
            value = request.getHeader(name)
            if value is not None:
                lines.append(name + b": " + value)
        return b"\n".join(lines) + b"\n"


@implementer(IListener)
class HeaderServer:
    """A server started with the balancer, showing what it was sent."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def backends(self) -> list:
        return []

    def makeService(self, reactor):
        site = Site(ShowHeaders())
        site.log = lambda request: None
        return ListeningService(self.endpoint, site, reactor, "header server")


app = Backend("app", servers=[Server("app1", "127.0.0.1:9190")])

listen = [
    http.Frontend("tcp:8150:interface=127.0.0.1", default=app, name="traced", requestId=True, tracing=tracing),
    HeaderServer("tcp:9190:interface=127.0.0.1"),
]

accessLog = [AccessLog("-")]
