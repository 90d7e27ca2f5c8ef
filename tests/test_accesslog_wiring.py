"""
The access log's fast path through real sockets: a request or connection
that nothing overrides is formatted straight to bytes and handed to the
service's buffered writers, with no log event; one that a C{finished} hook
or a C{logAccess} override would see still goes the documented way.
"""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from lbkit import Backend, Server, http, tcp
from lbkit.http import HTTPFrontendProtocol
from lbkit.logs import AccessLog
from lbkit.service import LoadBalancerService
from lbkit.tcp import TCPFrontendProtocol
from tests.helpers import Collector, Echo, TrackingFactory
from tests.test_logs import HTTP_LINE
from tests.test_reload import Client, frontendPort, reactor, startBackend

TCP_LINE = re.compile(
    r"^127\.0\.0\.1:\d+ \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\.\d{3}\] front web/web1 "
    r"\d+/\d+/\d+ 4 4 -- 0$"
)


class _Events:
    """
    An observer for C{factory.accessLog} that records every event it is
    given and passes it on to the service's own observer.
    """

    def __init__(self, observer: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.observer = observer

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.observer(event)


def startWatched(testCase: TestCase, service: LoadBalancerService, protocol: Any) -> _Events:
    """
    Start C{service} (stopped at cleanup), give its one factory C{protocol}
    (unless L{None}), and record the log events of its access lines.
    """
    service.startService()
    testCase.addCleanup(service.stopService)
    (factory,) = service.listen[0].factories
    if protocol is not None:
        factory.protocol = protocol
    events = _Events(factory.accessLog.observer)
    factory.accessLog = Logger(namespace="lbkit.access", observer=events)
    return events


def readLines(path: str) -> list[str]:
    with open(path) as f:
        return f.read().splitlines()


class HTTPWiringTests(TestCase):
    """http mode: the line of a plain request goes straight to the writers."""

    timeout = 20

    def start(self, protocol: type[HTTPFrontendProtocol] | None = None, format: str = "text") -> Any:
        port, _ = startBackend(self, "web1")
        path = self.mktemp()
        app = Backend("app", [Server("web1", f"127.0.0.1:{port}")])
        frontend = http.Frontend("tcp:0:interface=127.0.0.1", default=app, name="web")
        service = LoadBalancerService([frontend], reactor(), accessLog=[AccessLog(path, format=format)], grace=5)
        events = startWatched(self, service, protocol)
        return service, path, events

    @inlineCallbacks
    def test_plainRequestsSkipTheLogger(self) -> Any:
        """
        Two requests: two documented lines in the file, and no log event
        was built for either.
        """
        service, path, events = self.start()
        client = Client(self)
        for name in (b"/one", b"/two"):
            yield client.get(frontendPort(service), name)
        yield client.fresh()
        yield service.stopService()
        lines = readLines(path)
        self.assertEqual([HTTP_LINE.match(line).group(2) for line in lines], ["/one", "/two"])  # type: ignore[union-attr]
        self.assertEqual(events.events, [])

    @inlineCallbacks
    def test_jsonFromFastPath(self) -> Any:
        """A JSON destination gets the documented fields of the request."""
        service, path, events = self.start(format="json")
        client = Client(self)
        yield client.get(frontendPort(service), b"/j?x=1")
        yield client.fresh()
        yield service.stopService()
        (line,) = readLines(path)
        record = json.loads(line)
        self.assertEqual(
            (record["mode"], record["status"], record["request"], record["server"], record["frontend"]),
            ("http", 200, "GET /j?x=1 HTTP/1.1", "web1", "web"),
        )
        self.assertEqual(events.events, [])

    @inlineCallbacks
    def test_finishedHookStillSeesFields(self) -> Any:
        """
        A protocol subclass overriding C{finished} gets the fields of each
        request, and the same line still reaches the file (as an event).
        """
        seen: list[dict[str, Any]] = []

        class Hooked(HTTPFrontendProtocol):
            def finished(self, fields: dict[str, Any]) -> None:
                seen.append(fields)

        service, path, events = self.start(Hooked)
        client = Client(self)
        yield client.get(frontendPort(service), b"/hooked")
        yield client.fresh()
        yield service.stopService()
        self.assertEqual([f["request"] for f in seen], ["GET /hooked HTTP/1.1"])
        self.assertEqual(len(events.events), 1)
        self.assertEqual(events.events[0]["request"], "GET /hooked HTTP/1.1")
        self.assertEqual(
            [HTTP_LINE.match(line).group(2) for line in readLines(path)], ["/hooked"]  # type: ignore[union-attr]
        )


class TCPWiringTests(TestCase):
    """tcp mode: the line of a plain connection goes straight to the writers."""

    timeout = 20

    @inlineCallbacks
    def relay(self, protocol: type[TCPFrontendProtocol] | None = None) -> Any:
        echo = TrackingFactory(Echo)
        port = reactor().listenTCP(0, echo, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        path = self.mktemp()
        web = Backend("web", [Server("web1", f"127.0.0.1:{port.getHost().port}")])
        service = LoadBalancerService(
            [tcp.Frontend("tcp:0:interface=127.0.0.1", web, name="front")], reactor(),
            accessLog=[AccessLog(path)], grace=5,
        )
        events = startWatched(self, service, protocol)
        client = Collector(b"ping", expect=4)
        yield connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", frontendPort(service)), client)
        received = yield client.done
        self.assertEqual(received, b"ping")
        yield service.stopService()
        yield echo.allLost()
        return readLines(path), events.events

    @inlineCallbacks
    def test_plainConnectionSkipsTheLogger(self) -> Any:
        """One connection: one documented line, and no log event."""
        lines, events = yield self.relay()
        self.assertEqual(len(lines), 1)
        self.assertRegex(lines[0], TCP_LINE)
        self.assertEqual(events, [])

    @inlineCallbacks
    def test_finishedHookStillSeesFields(self) -> Any:
        """A C{finished} override gets the fields; the line still reaches the file."""
        seen: list[dict[str, Any]] = []

        class Hooked(TCPFrontendProtocol):
            def finished(self, fields: dict[str, Any]) -> None:
                seen.append(fields)

        lines, events = yield self.relay(Hooked)
        self.assertEqual([(f["bytesIn"], f["bytesOut"], f["server"]) for f in seen], [(4, 4, "web1")])
        self.assertEqual(len(lines), 1)
        self.assertRegex(lines[0], TCP_LINE)
        self.assertEqual(len(events), 1)
