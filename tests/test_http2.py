"""
HTTP/2 to clients over TLS (ALPN), over real sockets on 127.0.0.1: curl and
an in-process client built on the C{h2} package, in front of twisted.web
sites speaking HTTP/1.1.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Optional

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from twisted.internet import ssl, task
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from lbkit import Backend, Server, ServerState
from lbkit.http import HTTPFrontendProtocol, HTTPProxyFactory, Route, pathBegins
from lbkit.tls import Certificates, h2Available
from tests.helpers import freePort, requireBinary, runProcess
from tests.test_http_integration import HTTPTestCase, Info, OneShot, TrackingSite, backend, reactor
from tests.test_tls_pki import makePKI


class Big(Info):
    """
    L{Info}, plus C{/big/N}: N bytes with a Content-Length, and
    C{/bigchunked/N}: N bytes chunked.
    """

    def render(self, request: Request) -> Any:
        path = request.path
        if path.startswith(b"/big/"):
            return _pattern(int(path[5:]))
        if path.startswith(b"/bigchunked/"):
            data = _pattern(int(path[12:]))
            for i in range(0, len(data), 100000):
                request.write(data[i : i + 100000])
            request.finish()
            return NOT_DONE_YET
        return super().render(request)


def _pattern(n: int) -> bytes:
    return (b"0123456789abcdef" * (n // 16 + 1))[:n]


class StreamResetError(RuntimeError):
    """A stream of an L{H2Client} was reset by the server."""

    def __init__(self, code: ErrorCodes) -> None:
        RuntimeError.__init__(self, f"stream reset: {code!r}")
        self.code = code


class H2Client(Protocol):
    """
    A small HTTP/2 client: L{request} fires with C{(status, headers, body)}
    per stream, or fails with L{StreamResetError} (the error code of a
    RST_STREAM).

    @ivar goAway: The error code of the GOAWAY received, if any.
    """

    def __init__(self, config: Optional[H2Configuration] = None) -> None:
        self.conn = H2Connection(config or H2Configuration(client_side=True, header_encoding=None))
        self.goAway: Optional[ErrorCodes] = None
        self.results: dict[int, Deferred[tuple[int, dict[bytes, bytes], bytes]]] = {}
        self.heads: dict[int, dict[bytes, bytes]] = {}
        self.bodies: dict[int, list[bytes]] = {}
        self.uploads: dict[int, list[Any]] = {}
        self.closed: Deferred[None] = Deferred()
        self.firstData: dict[int, Deferred[None]] = {}
        #: When false, received data is not acknowledged (see L{ackAll}).
        self.autoAck = True
        self.unacked: list[tuple[int, int]] = []

    def connectionMade(self) -> None:
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)  # type: ignore[union-attr]

    def request(
        self, path: str, method: str = "GET", body: Optional[bytes] = None, length: bool = True,
        authority: str = "a.example", scheme: str = "https",
    ) -> Deferred[tuple[int, dict[bytes, bytes], bytes]]:
        sid = self.conn.get_next_available_stream_id()
        headers = [(b":method", method.encode()), (b":path", path.encode()), (b":scheme", scheme.encode()),
                   (b":authority", authority.encode())]
        if body is not None and length:
            headers.append((b"content-length", b"%d" % len(body)))
        self.conn.send_headers(sid, headers, end_stream=body is None)
        d: Deferred[tuple[int, dict[bytes, bytes], bytes]] = Deferred()
        self.results[sid] = d
        self.bodies[sid] = []
        if body is not None:
            self.uploads[sid] = [body, 0]
            self._upload(sid)
        self.flush()
        return d

    def _upload(self, sid: int) -> None:
        body, offset = self.uploads[sid]
        while offset < len(body):
            size = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(body) - offset)
            if size <= 0:
                break
            self.conn.send_data(sid, body[offset : offset + size])
            offset += size
        self.uploads[sid][1] = offset
        if offset == len(body):
            del self.uploads[sid]
            self.conn.end_stream(sid)

    def ackAll(self) -> None:
        self.autoAck = True
        for size, sid in self.unacked:
            self.conn.acknowledge_received_data(size, sid)
        self.unacked = []
        self.flush()

    def received(self, sid: int) -> int:
        return sum(len(b) for b in self.bodies.get(sid, ()))

    def reset(self, sid: int) -> None:
        self.conn.reset_stream(sid, ErrorCodes.CANCEL)
        self.flush()

    def dataReceived(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, ResponseReceived):
                self.heads[event.stream_id] = dict(event.headers)
            elif isinstance(event, DataReceived):
                self.bodies[event.stream_id].append(event.data)
                if self.autoAck:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                else:
                    self.unacked.append((event.flow_controlled_length, event.stream_id))
                waiting = self.firstData.pop(event.stream_id, None)
                if waiting is not None:
                    waiting.callback(None)
            elif isinstance(event, StreamEnded):
                head = self.heads.pop(event.stream_id, {})
                body = b"".join(self.bodies.pop(event.stream_id))
                self.results.pop(event.stream_id).callback((int(head[b":status"]), head, body))
            elif isinstance(event, StreamReset):
                d = self.results.pop(event.stream_id, None)
                if d is not None:
                    d.errback(Failure(StreamResetError(event.error_code)))
            elif isinstance(event, WindowUpdated):
                for sid in list(self.uploads):
                    self._upload(sid)
            elif isinstance(event, ConnectionTerminated):
                self.goAway = event.error_code
        self.flush()

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        for d in self.results.values():
            d.errback(Failure(RuntimeError("connection lost")))
        self.results.clear()
        self.closed.callback(None)


class HTTP2TestCase(HTTPTestCase):
    """
    L{HTTPTestCase} with a PKI, TLS frontends and HTTP/2 clients.
    """

    def setUp(self) -> None:
        HTTPTestCase.setUp(self)
        self.pki = makePKI(self)
        self.certs = Certificates(default=self.pki.issue("a.pem", "a.example"))

    def bigSite(self, name: str) -> int:
        site = TrackingSite(Big(name))
        site.lost = self.lost
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.ports.append(port)
        return int(port.getHost().port)

    def tlsFrontend(self, routes: Any = (), default: Optional[Backend] = None, **kwargs: Any) -> int:
        return self.frontend(routes, default=default, tls=self.certs, **kwargs)

    @inlineCallbacks
    def h2client(self, port: int, client: Optional[H2Client] = None) -> Any:
        """A connected L{H2Client} (C{client}, or a new one); closed in cleanup."""
        with open(self.pki.caFile, "rb") as f:
            ca = ssl.Certificate.loadPEM(f.read())
        creator = ssl.optionsForClientTLS("a.example", trustRoot=ca, acceptableProtocols=[b"h2"])
        client = client or H2Client()
        yield connectProtocol(wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port)), client)
        self.lost.append(client.closed)
        self.addCleanup(lambda: client.transport.loseConnection() if client.transport else None)  # type: ignore[attr-defined]
        return client

    @inlineCallbacks
    def curl(self, port: int, *args: str, path: str = "/") -> Any:
        curl = requireBinary("/usr/bin/curl")
        runner = yield runProcess(self, reactor, [
            curl, "-sS", "--cacert", self.pki.caFile, "--resolve", f"a.example:{port}:127.0.0.1",
            *args, f"https://a.example:{port}{path}",
        ])
        self.assertEqual(runner.exitCode, 0, runner.output)
        return runner.stdout.decode("latin-1")


class HTTP2Tests(HTTP2TestCase):
    """
    A TLS http frontend speaks HTTP/2 to clients that negotiate it, and
    proxies each stream like an HTTP/1.1 request.
    """

    def test_available(self) -> None:
        """With the C{h2} package installed, HTTP/2 is available."""
        self.assertTrue(h2Available())

    @inlineCallbacks
    def test_curl(self) -> None:
        """curl --http2 gets the backend's answer over HTTP/2."""
        port = self.tlsFrontend(default=backend("app", [self.site("app1")[0]]))
        out = yield self.curl(port, "--http2", "-w", "\n%{http_version}", path="/hello?x=1")
        body, version = out.rsplit("\n", 1)
        self.assertEqual(version, "2")
        info = json.loads(body)
        self.assertEqual(info["server"], "app1")
        self.assertEqual(info["method"], "GET")
        self.assertEqual(info["uri"], "/hello?x=1")
        self.assertEqual(info["headers"]["host"], [f"a.example:{port}"])
        self.assertEqual(info["headers"]["x-forwarded-proto"], ["https"])
        self.assertEqual(info["headers"]["x-forwarded-for"], ["127.0.0.1"])

    @inlineCallbacks
    def test_curlPost(self) -> None:
        """A POST body larger than the stream window streams through to the server intact."""
        port = self.tlsFrontend(default=backend("app", [self.site("app1")[0]]))
        data = os.urandom(300000)
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        out = yield self.curl(port, "--http2", "--data-binary", "@" + path, "-w", "\n%{http_version}", path="/up")
        body, version = out.rsplit("\n", 1)
        self.assertEqual(version, "2")
        info = json.loads(body)
        self.assertEqual((info["method"], info["length"]), ("POST", len(data)))
        self.assertEqual(info["sha256"], hashlib.sha256(data).hexdigest())

    @inlineCallbacks
    def test_http2Disabled(self) -> None:
        """With C{http2=False}, curl --http2 falls back to HTTP/1.1."""
        port = self.tlsFrontend(default=backend("app", [self.site("app1")[0]]), http2=False)
        out = yield self.curl(port, "--http2", "-w", "\n%{http_version}")
        body, version = out.rsplit("\n", 1)
        self.assertEqual(version, "1.1")
        self.assertEqual(json.loads(body)["server"], "app1")

    @inlineCallbacks
    def test_http11Fallback(self) -> None:
        """A client offering only http/1.1 is still served HTTP/1.1 when h2 is offered."""
        port = self.tlsFrontend(default=backend("app", [self.site("app1")[0]]))
        out = yield self.curl(port, "--http1.1", "-w", "\n%{http_version}")
        body, version = out.rsplit("\n", 1)
        self.assertEqual(version, "1.1")
        self.assertEqual(json.loads(body)["server"], "app1")

    @inlineCallbacks
    def test_concurrentStreamsRouted(self) -> None:
        """Concurrent streams on one connection are routed by path to two backends."""
        a = backend("a", [self.site("a1")[0]])
        b = backend("b", [self.site("b1")[0]])
        port = self.tlsFrontend([Route(pathBegins("/b"), b)], default=a)
        client = yield self.h2client(port)
        paths = ["/a/1", "/b/1", "/a/2", "/b/2", "/b/3", "/a/3"]
        results = yield gatherResults([client.request(p) for p in paths])
        served = [(json.loads(body)["server"], json.loads(body)["uri"]) for _, _, body in results]
        self.assertEqual(served, [("b1" if p.startswith("/b") else "a1", p) for p in paths])
        self.assertEqual([status for status, _, _ in results], [200] * len(paths))
        [factory] = self.frontendFactories()
        self.assertEqual((factory.total, factory.requests), (1, len(paths)))

    @inlineCallbacks
    def test_roundRobinLikeHTTP1(self) -> None:
        """Streams are balanced like HTTP/1.1 requests: round robin over the servers, in stream order."""
        ports = [self.site(f"s{i}")[0] for i in (1, 2, 3)]
        port = self.tlsFrontend(default=backend("s", ports))
        client = yield self.h2client(port)
        results = yield gatherResults([client.request(f"/{i}") for i in range(7)])
        h2order = [json.loads(body)["server"] for _, _, body in results]
        port1 = self.frontend(default=backend("s", ports))
        h1order = []
        for i in range(7):
            _, body = yield self.get(port1, f"/{i}")
            h1order.append(json.loads(body)["server"])
        self.assertEqual(h2order, h1order)
        self.assertEqual(h2order, ["s1", "s2", "s3", "s1", "s2", "s3", "s1"])

    @inlineCallbacks
    def test_largeResponses(self) -> None:
        """Responses larger than the stream window arrive whole, with length or chunked."""
        port = self.tlsFrontend(default=backend("app", [self.bigSite("app1")]))
        client = yield self.h2client(port)
        results = yield gatherResults([
            client.request("/big/1000000"), client.request("/bigchunked/700001"), client.request("/chunked"),
        ])
        self.assertEqual(results[0][2], _pattern(1000000))
        self.assertEqual(results[0][1][b"content-length"], b"1000000")
        self.assertEqual(results[1][2], _pattern(700001))
        self.assertNotIn(b"transfer-encoding", results[1][1])
        self.assertEqual(results[2][2], b"part1,part2")

    @inlineCallbacks
    def test_uploadWithoutLength(self) -> None:
        """A request body without content-length goes to the server chunked, and arrives whole."""
        port = self.tlsFrontend(default=backend("app", [self.site("app1")[0]]))
        client = yield self.h2client(port)
        data = os.urandom(200000)
        status, _, body = yield client.request("/up", "PUT", data, length=False)
        info = json.loads(body)
        self.assertEqual((status, info["method"], info["length"]), (200, "PUT", len(data)))
        self.assertEqual(info["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(info["headers"]["transfer-encoding"], ["chunked"])

    @inlineCallbacks
    def test_noServer503(self) -> None:
        """With no server up, the stream gets a 503 and the connection goes on."""
        down = backend("down", [self.site("d1")[0]])
        down.servers[0].setState(ServerState.MAINT)
        port = self.tlsFrontend([Route(pathBegins("/down"), down)], default=backend("app", [self.site("app1")[0]]))
        client = yield self.h2client(port)
        (status, head, body), (status2, _, body2) = yield gatherResults([client.request("/down"), client.request("/up")])
        self.assertEqual((status, head[b"content-type"], body), (503, b"text/plain", b"No server is available to handle this request.\n"))
        self.assertEqual((status2, json.loads(body2)["server"]), (200, "app1"))

    @inlineCallbacks
    def test_connectFailure503(self) -> None:
        """A server that refuses connections gives the stream a 503."""
        port = self.tlsFrontend(default=Backend("dead", [Server("dead1", f"127.0.0.1:{freePort()}")], retries=0))
        client = yield self.h2client(port)
        status, _, body = yield client.request("/")
        self.assertEqual(status, 503)

    @inlineCallbacks
    def test_clientResetClosesServer(self) -> None:
        """A RST_STREAM from the client closes the server connection of that stream."""
        started: Deferred[None] = Deferred()

        def answerSlowly(p: OneShot) -> None:
            p.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")  # type: ignore[union-attr]
            started.callback(None)

        serverPort, factory = self.custom(lambda: OneShot(answerSlowly))
        port = self.tlsFrontend([Route(pathBegins("/slow"), backend("slow", [serverPort]))],
                                default=backend("app", [self.site("app1")[0]]))
        client = yield self.h2client(port)
        d = client.request("/slow")
        d.addErrback(lambda f: None)
        client.firstData[1] = Deferred()
        yield started
        serverGone = factory.lost[-1]  # this server connection's
        yield client.firstData[1]
        self.assertFalse(serverGone.called)
        client.reset(1)
        yield serverGone
        status, _, body = yield client.request("/again")  # the connection still works
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_accessLog(self) -> None:
        """Each stream is logged like an HTTP/1.1 request, marked HTTP/2.0."""
        events: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "lbkit.access":
                events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        port = self.tlsFrontend(default=backend("app", [self.site("app1")[0]]), log=True)
        client = yield self.h2client(port)
        yield gatherResults([client.request("/one"), client.request("/two")])
        self.assertEqual(
            sorted((e["request"], e["status"], e["backend"], e["server"], e["termination"]) for e in events),
            [("GET /one HTTP/2.0", 200, "app", "app1", "--"), ("GET /two HTTP/2.0", 200, "app", "app1", "--")],
        )

    @inlineCallbacks
    def test_serverTimeout504(self) -> None:
        """A server that does not answer within C{timeoutServer} gives the stream a 504."""
        serverPort, _ = self.custom(lambda: OneShot(lambda p: None))
        port = self.tlsFrontend(default=backend("mute", [serverPort], timeoutServer=0.3))
        client = yield self.h2client(port)
        status, _, body = yield client.request("/")
        self.assertEqual((status, body), (504, b"The server didn't respond in time.\n"))

    @inlineCallbacks
    def test_idleConnectionClosed(self) -> None:
        """A connection with no stream for C{timeoutClient} gets GOAWAY and is closed."""
        port = self.tlsFrontend(default=backend("app", [self.site("app1")[0]]), timeoutClient=0.3)
        client = yield self.h2client(port)
        status, _, _ = yield client.request("/")
        self.assertEqual(status, 200)
        yield client.closed

    @inlineCallbacks
    def test_gracefulStop(self) -> None:
        """Stopping the frontend lets the stream in flight finish, then closes the connection."""
        held: list[OneShot] = []
        arrived: Deferred[None] = Deferred()

        def hold(p: OneShot) -> None:
            held.append(p)
            arrived.callback(None)

        serverPort, _ = self.custom(lambda: OneShot(hold))
        port = self.tlsFrontend(default=backend("slow", [serverPort]))
        client = yield self.h2client(port)
        d = client.request("/")
        yield arrived
        service = self.services[-1]
        service.grace = 10
        stopped = service.stopService()
        held[0].transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # type: ignore[union-attr]
        status, _, body = yield d
        self.assertEqual((status, body), (200, b"ok"))
        yield client.closed
        yield stopped

    @inlineCallbacks
    def test_head(self) -> None:
        """A HEAD request gets the head only, ended in its HEADERS frame."""
        port = self.tlsFrontend(default=backend("app", [self.bigSite("app1")]))
        client = yield self.h2client(port)
        status, head, body = yield client.request("/big/5000", "HEAD")
        self.assertEqual((status, head[b"content-length"], body), (200, b"5000", b""))
        status, head, body = yield client.request("/big/10")  # the server connection is reusable
        self.assertEqual(body, _pattern(10))

    @inlineCallbacks
    def test_flowControlPausesServer(self) -> None:
        """
        A client that does not open its window gets no more than the window,
        and the server connection is paused meanwhile (lbkit buffers a bounded
        amount); once it opens the window, the rest flows.
        """
        port = self.tlsFrontend(default=backend("app", [self.bigSite("app1")]))
        client = yield self.h2client(port)
        client.autoAck = False
        size = 8000000
        d = client.request(f"/big/{size}")
        [factory] = self.frontendFactories()
        for _ in range(200):
            yield task.deferLater(reactor, 0.02, lambda: None)
            streams = [s for p in factory.connections for s in getattr(p, "streams", {}).values()]
            if streams and streams[0].producerPaused and client.received(1) >= 65535:
                break
        [stream] = streams
        self.assertTrue(stream.producerPaused)
        self.assertEqual(client.received(1), 65535)
        self.assertLess(sum(len(c) for c in stream._out), 2**20)
        client.ackAll()
        status, _, body = yield d
        self.assertEqual((status, len(body)), (200, size))
        self.assertEqual(body, _pattern(size))

    @inlineCallbacks
    def test_clientNotReadingCut(self) -> None:
        """A client that keeps its window shut for C{timeoutClient} gets its stream reset."""
        port = self.tlsFrontend(default=backend("app", [self.bigSite("app1")]), timeoutClient=0.5)
        client = yield self.h2client(port)
        client.autoAck = False
        failures: list[Failure] = []
        yield client.request("/big/8000000").addErrback(failures.append)
        [failure] = failures
        self.assertIn("stream reset", failure.getErrorMessage())
        self.assertEqual(client.received(1), 65535)  # one window's worth, then nothing


class HookedProtocol(HTTPFrontendProtocol):
    """
    A user's protocol subclass: routes C{/special} itself and records each
    hook call with what it reads of the exchange.
    """

    calls: list[tuple[Any, ...]] = []
    special: Optional[Backend] = None

    def routeRequest(self, request: Any) -> tuple[Backend, Any]:
        self.calls.append(("route", id(self), request.path, self.client.host, self.frontend.name, self.context.request is request))
        if request.path.startswith(b"/special") and self.special is not None:
            return self.special, None
        return HTTPFrontendProtocol.routeRequest(self, request)

    def serverChosen(self, server: Server) -> None:
        self.calls.append(("chosen", id(self), self.request.path, self.backend.name, server.name, self.server is server))

    def finished(self, fields: dict[str, Any]) -> None:
        self.calls.append(("finished", id(self), fields["request"], fields["server"], self.factory is not None))


class HookedFactory(HTTPProxyFactory):
    protocol = HookedProtocol


class HTTP2HookTests(HTTP2TestCase):
    """
    A frontend's protocol subclass (C{factory=} with a C{protocol}) has its
    hooks called for each HTTP/2 stream, as for an HTTP/1.1 request.
    """

    @inlineCallbacks
    def test_hooksPerStream(self) -> None:
        """routeRequest, serverChosen and finished run once per stream, each stream on its own instance."""
        HookedProtocol.calls = calls = []
        HookedProtocol.special = backend("special", [self.site("special1")[0]])
        self.addCleanup(setattr, HookedProtocol, "special", None)
        port = self.tlsFrontend(default=backend("app", [self.site("app1")[0]]), factory=HookedFactory)
        client = yield self.h2client(port)
        results = yield gatherResults([client.request("/one"), client.request("/special/two")])
        self.assertEqual([json.loads(body)["server"] for _, _, body in results], ["app1", "special1"])
        byInstance: dict[int, list[tuple[Any, ...]]] = {}
        for call in calls:
            byInstance.setdefault(call[1], []).append((call[0],) + call[2:])
        self.assertEqual(
            sorted(byInstance.values()),
            [
                [
                    ("route", b"/one", "127.0.0.1", "fe", True),
                    ("chosen", b"/one", "app", "app1", True),
                    ("finished", "GET /one HTTP/2.0", "app1", True),
                ],
                [
                    ("route", b"/special/two", "127.0.0.1", "fe", True),
                    ("chosen", b"/special/two", "special", "special1", True),
                    ("finished", "GET /special/two HTTP/2.0", "special1", True),
                ],
            ],
        )


class HTTP2EarlyAnswerTests(HTTP2TestCase):
    """A response complete before the request body ends the stream at once."""

    @inlineCallbacks
    def test_earlyAnswerEndsStream(self) -> None:
        """A 413 sent while the body is still coming ends the stream (then RST_STREAM NO_ERROR); the connection goes on."""
        answer = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large"
        serverPort, _ = self.custom(lambda: OneShot(lambda p: p.transport.write(answer)))  # type: ignore[union-attr]
        okPort = self.site("ok1")[0]
        port = self.tlsFrontend(
            [Route(pathBegins("/ok"), backend("ok", [okPort]))],
            default=backend("upload", [serverPort]),
            timeoutHttpRequest=60,
        )
        client = yield self.h2client(port)
        conn = client.conn
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(b":method", b"POST"), (b":path", b"/up"), (b":scheme", b"https"),
                                (b":authority", b"a.example"), (b"content-length", b"10")])
        conn.send_data(sid, b"12345")  # and the other five never come
        d: Deferred[Any] = Deferred()
        client.results[sid] = d
        client.bodies[sid] = []
        client.flush()
        status, _, body = yield d
        self.assertEqual((status, body), (413, b"too large"))
        status, _, body = yield client.request("/ok")
        self.assertEqual((status, json.loads(body)["server"]), (200, "ok1"))

    test_earlyAnswerEndsStream.timeout = 10  # type: ignore[attr-defined]
