"""
HTTP/2 to servers (C{Server(proto="h2c")}, C{proto="h2"}), over real
sockets on 127.0.0.1: curl (HTTP/1.1 and HTTP/2 clients) and the in-process
HTTP/2 client of tests/test_http2.py, in front of the HTTP/2 test server of
tests/h2server.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Optional

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, RequestReceived, TrailersReceived, WindowUpdated
from twisted.internet import ssl
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server
from lbkit.config import loadSite
from lbkit.error import ConfigError
from lbkit.fromhaproxy import translate
from lbkit.http import Cache, Compression, Frontend, Mirror, Route, pathBegins
from lbkit.http._body import CHUNKED, ChunkedFramer
from lbkit.http._h2up import H2Pool, H2ServerProtocol, choosePool
from lbkit.http._parse import Request
from lbkit.http._pool import ConnectionPool
from lbkit.http._trailers import chunkedEnd, trailerFields
from lbkit.tls import Certificates
from tests.h2server import H2TestFactory
from tests.helpers import requireBinary, runProcess
from tests.test_http2 import H2Client, HTTP2TestCase, StreamResetError
from tests.test_http_integration import reactor


class ServerProtoTests(SynchronousTestCase):
    """C{Server(proto=...)} takes C{"h2"}, C{"h2c"} or L{None}, and says what is wrong otherwise."""

    def test_default(self) -> None:
        """A server speaks HTTP/1.1 unless told."""
        self.assertIsNone(Server("a", "127.0.0.1:1").proto)

    def test_h2ImpliesTLS(self) -> None:
        """C{proto="h2"} is HTTP/2 over TLS."""
        server = Server("a", "127.0.0.1:1", proto="h2", verify=False)
        self.assertEqual((server.proto, server.tls), ("h2", True))

    def test_h2cCleartext(self) -> None:
        """C{proto="h2c"} with C{tls=True} is refused."""
        e = self.assertRaises(ConfigError, Server, "a", "127.0.0.1:1", proto="h2c", tls=True)
        self.assertIn("proto='h2c' is cleartext", str(e))

    def test_unknown(self) -> None:
        """Another value is refused, naming it."""
        e = self.assertRaises(ConfigError, Server, "a", "127.0.0.1:1", proto="http/2")
        self.assertIn("proto must be None, 'h2' or 'h2c', not 'http/2'", str(e))

    def test_sendProxy(self) -> None:
        """A PROXY header does not fit a connection shared by many clients."""
        e = self.assertRaises(ConfigError, Server, "a", "127.0.0.1:1", proto="h2c", sendProxy=1)
        self.assertIn("sendProxy= does not apply", str(e))


class FromHAProxyTests(SynchronousTestCase):
    """HAProxy's C{proto h2} and C{alpn h2} server options translate to C{proto=}."""

    def test_translated(self) -> None:
        """C{proto h2} is h2c; with C{ssl} (or C{ssl alpn h2}) it is h2."""
        source, problems = translate(
            "defaults\n    mode http\nfrontend fe\n    bind 127.0.0.1:18110\n    default_backend g\n"
            "backend g\n    server g1 127.0.0.1:50051 proto h2\n"
            "    server g2 127.0.0.1:50052 ssl verify none proto h2\n"
            "    server g3 127.0.0.1:50053 ssl verify none alpn h2\n",
            "grpc.cfg",
        )
        self.assertEqual(problems, [])
        path = os.path.abspath(self.mktemp()) + ".py"
        with open(path, "w") as f:
            f.write(source)
        site = loadSite(path)
        [backend] = [b for item in site.listen for b in item.backends()]
        self.assertEqual([(s.proto, s.tls) for s in backend.servers], [("h2c", False), ("h2", True), ("h2", True)])


class TrailerTests(SynchronousTestCase):
    """Trailers between HTTP/1.1 chunked framing and HTTP/2 fields."""

    def test_chunkedEnd(self) -> None:
        """The last chunk carries the trailers, framing fields dropped."""
        self.assertEqual(chunkedEnd(None), b"0\r\n\r\n")
        self.assertEqual(chunkedEnd([(b"grpc-status", b"0"), (b"content-length", b"3")]),
                         b"0\r\ngrpc-status: 0\r\n\r\n")

    def test_framerCollects(self) -> None:
        """A decoding L{ChunkedFramer} keeps the trailer lines; L{trailerFields} reads them."""
        framer = ChunkedFramer(True)
        framer.feed(b"3\r\nabc\r\n0\r\nGrpc-Status: 0\r\nX-A:  b \r\n\r\n")
        self.assertTrue(framer.done)
        self.assertEqual(trailerFields(framer.trailers), [(b"grpc-status", b"0"), (b"x-a", b"b")])


class TrailerClient(H2Client):
    """An L{H2Client} that keeps the trailers of each stream, and sends some."""

    def __init__(self) -> None:
        H2Client.__init__(self)
        self.trailers: dict[int, dict[bytes, bytes]] = {}

    def dataReceived(self, data: bytes) -> None:
        receive = self.conn.receive_data

        def spy(data: bytes) -> Any:
            events = receive(data)
            for event in events:
                if isinstance(event, TrailersReceived):
                    self.trailers[event.stream_id] = dict(event.headers)
            return events

        self.conn.receive_data = spy  # type: ignore[method-assign]
        try:
            H2Client.dataReceived(self, data)
        finally:
            del self.conn.receive_data

    def withTrailers(self, path: str, body: bytes, trailers: list[tuple[bytes, bytes]]) -> Deferred[Any]:
        """POST C{body} (one DATA frame), then C{trailers}."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(b":method", b"POST"), (b":path", path.encode()), (b":scheme", b"https"),
                                     (b":authority", b"a.example")])
        self.conn.send_data(sid, body)
        self.conn.send_headers(sid, trailers, end_stream=True)
        d: Deferred[Any] = Deferred()
        self.results[sid] = d
        self.bodies[sid] = []
        self.flush()
        return d


class BlockedClient(H2Client):
    """An L{H2Client} that tells when an upload next waits for lbkit's window (L{whenBlocked})."""

    def __init__(self) -> None:
        H2Client.__init__(self)
        self.blocked: Optional[Deferred[int]] = None

    def whenBlocked(self) -> Deferred[int]:
        """Fires with the bytes sent so far once the upload stops at a closed window (now, if it has)."""
        d: Deferred[int] = Deferred()
        for sid, (_, offset) in self.uploads.items():
            if self.conn.local_flow_control_window(sid) <= 0:
                d.callback(offset)
                return d
        self.blocked = d
        return d

    def _upload(self, sid: int) -> None:
        H2Client._upload(self, sid)
        upload, blocked = self.uploads.get(sid), self.blocked
        if upload is not None and blocked is not None and self.conn.local_flow_control_window(sid) <= 0:
            self.blocked = None
            blocked.callback(upload[1])


class ChunkedTrailers(Protocol):
    """An HTTP/1.1 server answering each request with a chunked body and a trailer."""

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n"
            )


class RecordingServer(Protocol):
    """An HTTP/1.1 server that keeps what it reads and answers once a chunked body ended."""

    received: list[bytes]

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        if b"\r\n0\r\n" in b"".join(self.received) and b"".join(self.received).endswith(b"\r\n\r\n"):
            self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")  # type: ignore[union-attr]


class H2UpTestCase(HTTP2TestCase):
    """L{HTTP2TestCase} with HTTP/2 test servers."""

    def h2server(self, name: str = "h2", **kwargs: Any) -> tuple[int, H2TestFactory]:
        factory = H2TestFactory(name, **kwargs)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.ports.append(port)

        def closeAll() -> Any:
            for proto in list(factory.open):
                self.lost.append(proto.closed)
                proto.transport.abortConnection()  # type: ignore[attr-defined]

        self.addCleanup(closeAll)
        return port.getHost().port, factory

    def h2backend(self, port: int, **kwargs: Any) -> Backend:
        return Backend("app", [Server("h2a", f"127.0.0.1:{port}", proto="h2c")], **kwargs)

    @inlineCallbacks
    def curlPlain(self, port: int, *args: str, path: str = "/") -> Any:
        curl = requireBinary("/usr/bin/curl")
        runner = yield runProcess(self, reactor, [curl, "-sS", *args, f"http://127.0.0.1:{port}{path}"])
        self.assertEqual(runner.exitCode, 0, runner.output)
        return runner.stdout


class H2cTests(H2UpTestCase):
    """Requests from HTTP/1.1 and HTTP/2 clients go to a C{proto="h2c"} server as HTTP/2 streams."""

    @inlineCallbacks
    def test_http11Client(self) -> None:
        """An HTTP/1.1 request arrives as an HTTP/2 one, with lbkit's forwarding headers."""
        port, server = self.h2server()
        fe = self.frontend(default=self.h2backend(port))
        out = yield self.curlPlain(fe, "-H", "X-Test: 1", path="/info?x=1")
        info = json.loads(out)
        self.assertEqual((info["method"], info["path"]), ("GET", "/info?x=1"))
        self.assertEqual(info["authority"], f"127.0.0.1:{fe}")
        self.assertEqual(info["headers"]["x-test"], "1")
        self.assertEqual(info["headers"]["x-forwarded-for"], "127.0.0.1")
        self.assertNotIn("host", info["headers"])
        self.assertEqual(server.connections, 1)

    @inlineCallbacks
    def test_keptAndMultiplexed(self) -> None:
        """Concurrent streams of an HTTP/2 client share one connection to the server."""
        port, server = self.h2server()
        fe = self.tlsFrontend(default=self.h2backend(port))
        client = yield self.h2client(fe)
        results = yield gatherResults([client.request(f"/info/{i}") for i in range(20)])
        self.assertEqual([json.loads(body)["path"] for _, _, body in results], [f"/info/{i}" for i in range(20)])
        more = yield client.request("/info/again")
        self.assertEqual(more[0], 200)
        self.assertEqual((server.connections, server.streams), (1, 21))
        [factory] = self.frontendFactories()
        self.assertIsInstance(factory.pool, H2Pool)
        self.assertEqual(factory.pool.h2Count(), 1)

    @inlineCallbacks
    def test_bigUploads(self) -> None:
        """Request bodies larger than the stream window arrive whole, chunked or with a length."""
        port, server = self.h2server()
        fe = self.frontend(default=self.h2backend(port))
        data = os.urandom(300000)
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        out = yield self.curlPlain(fe, "--data-binary", "@" + path, path="/up")
        info = json.loads(out)
        self.assertEqual((info["method"], info["length"], info["sha256"]),
                         ("POST", len(data), hashlib.sha256(data).hexdigest()))
        out = yield self.curlPlain(fe, "-H", "Transfer-Encoding: chunked", "--data-binary", "@" + path, path="/up")
        info = json.loads(out)
        self.assertEqual((info["length"], info["sha256"]), (len(data), hashlib.sha256(data).hexdigest()))

    @inlineCallbacks
    def test_uploadBackPressure(self) -> None:
        """
        While the server's window is closed, lbkit stops taking the
        client's upload (no WINDOW_UPDATE to it): what it holds stays
        within the windows, and the whole body arrives once the server reads.
        """
        port, server = self.h2server()
        server.ackRequests = False
        fe = self.tlsFrontend(default=self.h2backend(port))
        client = yield self.h2client(fe, BlockedClient())
        data = os.urandom(3000000)
        answer = client.request("/info", method="POST", body=data)
        yield server.whenReceived(65535)  # the server's stream window, filled
        # from now on lbkit takes only what fits in its own buffer: the
        # client stops at a closed window, the windows' worth sent (its own
        # 65535, what lbkit holds, and the server's 65535)
        offset = yield client.whenBlocked()
        self.assertLess(offset, 400000)
        server.ackAll()
        status, _, body = yield answer
        info = json.loads(body)
        self.assertEqual((status, info["length"], info["sha256"]), (200, len(data), hashlib.sha256(data).hexdigest()))

    @inlineCallbacks
    def test_compressed(self) -> None:
        """With compression on the frontend, a response from an HTTP/2 server is compressed for both kinds of client."""
        port, server = self.h2server()
        fe = self.frontend(default=self.h2backend(port), compression=Compression(types=("application/",)))
        out = yield self.curlPlain(fe, "--compressed", "-D", "-", path="/big/100000")
        head, body = out.split(b"\r\n\r\n", 1)
        self.assertIn(b"content-encoding: ", head.lower())
        self.assertEqual(body, b"0123456789abcdef" * 6250)
        fe2 = self.tlsFrontend(default=self.h2backend(port), compression=Compression(types=("application/",)))
        out = yield self.curl(fe2, "--http2", "--compressed", "-D", "-", path="/big/100000")
        head, body = out.split("\r\n\r\n", 1)
        self.assertIn("content-encoding: ", head.lower())
        self.assertEqual(body, "0123456789abcdef" * 6250)

    @inlineCallbacks
    def test_mirroredToHTTP11Shadow(self) -> None:
        """Requests to an HTTP/2 server are mirrored to an HTTP/1.1 shadow as to any other (the pools apart)."""
        port, server = self.h2server()
        shadowPort, _ = self.site("shadow")
        mirror = Mirror(Backend("shadow", [Server("sh1", f"127.0.0.1:{shadowPort}")]))
        fe = self.frontend([Route(pathBegins("/"), self.h2backend(port), requestRules=[mirror])])
        for path in ("/info/1", "/info/2"):
            out = yield self.curlPlain(fe, path=path)
            self.assertEqual(json.loads(out)["path"], path)
        yield mirror.idle()
        self.assertEqual((mirror.mirrored, mirror.answered, mirror.failed), (2, 2, 0))

    @inlineCallbacks
    def test_cached(self) -> None:
        """A response from an HTTP/2 server is stored by the frontend's cache and served from it."""
        port, server = self.h2server()
        fe = self.frontend(default=self.h2backend(port), cache=Cache(defaultTTL=60))
        first = yield self.curlPlain(fe, path="/big/50000")
        second = yield self.curlPlain(fe, path="/big/50000")
        self.assertEqual((first, second), (b"0123456789abcdef" * 3125,) * 2)
        self.assertEqual(server.streams, 1)

    @inlineCallbacks
    def test_bigDownloads(self) -> None:
        """A response of unknown length is chunked for an HTTP/1.1 client and arrives whole on both."""
        port, server = self.h2server()
        fe = self.frontend(default=self.h2backend(port))
        out = yield self.curlPlain(fe, "-D", "-", path="/big/1000000")
        head, body = out.split(b"\r\n\r\n", 1)
        self.assertIn(b"transfer-encoding: chunked", head.lower())
        self.assertEqual(body, b"0123456789abcdef" * 62500)
        fe2 = self.tlsFrontend(default=self.h2backend(port))
        client = yield self.h2client(fe2)
        status, _, body = yield client.request("/big/1000000")
        self.assertEqual((status, len(body)), (200, 1000000))

    @inlineCallbacks
    def test_slowClientHoldsItsStream(self) -> None:
        """
        An HTTP/2 client that does not read holds back its own stream's
        window towards the server (no WINDOW_UPDATE), not the other streams.
        """
        port, server = self.h2server()
        fe = self.tlsFrontend(default=self.h2backend(port))
        client = yield self.h2client(fe)
        client.autoAck = False
        slow = client.request("/big/4000000")
        first: Deferred[None] = Deferred()
        client.firstData[1] = first
        yield first
        client2 = yield self.h2client(fe)
        status, _, body = yield client2.request("/info/other")  # the server connection is not held up
        self.assertEqual(status, 200)
        [proto] = server.open
        out, sent, _ = proto.pendingOut[1]
        # what the server could send: the client's window (65535) and what
        # lbkit holds for it, within the upstream stream window
        self.assertLess(sent, 300000)
        self.assertEqual(proto.conn.local_flow_control_window(1), 0)
        client.ackAll()
        status, _, body = yield slow
        self.assertEqual((status, len(body)), (200, 4000000))


class TrailersEndToEndTests(H2UpTestCase):
    """Trailers pass between HTTP/2 servers and clients, and to chunked HTTP/1.1."""

    @inlineCallbacks
    def test_h2Both(self) -> None:
        """An HTTP/2 client gets the server's trailers after the body."""
        port, server = self.h2server()
        fe = self.tlsFrontend(default=self.h2backend(port))
        client = yield self.h2client(fe, TrailerClient())
        status, _, body = yield client.request("/trailers")
        self.assertEqual((status, body), (200, b"payload"))
        self.assertEqual(client.trailers[1], {b"x-checksum": b"abc123", b"grpc-status": b"0"})

    @inlineCallbacks
    def test_requestTrailersH2Both(self) -> None:
        """An HTTP/2 client's trailers reach an HTTP/2 server as trailers."""
        port, server = self.h2server()
        fe = self.tlsFrontend(default=self.h2backend(port))
        client = yield self.h2client(fe, TrailerClient())
        status, _, body = yield client.withTrailers("/info", b"abc", [(b"x-sum", b"7")])
        info = json.loads(body)
        self.assertEqual((info["length"], info["trailers"]), (3, {"x-sum": "7"}))

    @inlineCallbacks
    def test_chunkedTrailersToH2Client(self) -> None:
        """Chunked trailers from an HTTP/1.1 server reach an HTTP/2 client as trailers."""
        port, _ = self.custom(ChunkedTrailers)
        fe = self.tlsFrontend(default=Backend("app", [Server("a1", f"127.0.0.1:{port}")]))
        client = yield self.h2client(fe, TrailerClient())
        status, _, body = yield client.request("/")
        self.assertEqual((status, body), (200, b"hello"))
        self.assertEqual(client.trailers[1], {b"x-sum": b"42"})

    @inlineCallbacks
    def test_h2ClientTrailersToHTTP11Server(self) -> None:
        """An HTTP/2 client's trailers reach an HTTP/1.1 server in the last chunk."""
        received: list[bytes] = []

        def make() -> Protocol:
            server = RecordingServer()
            server.received = received
            return server

        port, _ = self.custom(make)
        fe = self.tlsFrontend(default=Backend("app", [Server("a1", f"127.0.0.1:{port}")]))
        client = yield self.h2client(fe, TrailerClient())
        status, _, _ = yield client.withTrailers("/", b"abc", [(b"x-sum", b"7")])
        self.assertEqual(status, 204)
        self.assertTrue(b"".join(received).endswith(b"3\r\nabc\r\n0\r\nx-sum: 7\r\n\r\n"), received)

    @inlineCallbacks
    def test_chunkedTrailersFromHTTP11Client(self) -> None:
        """Chunked trailers from an HTTP/1.1 client reach an HTTP/2 server as trailers."""
        port, server = self.h2server()
        fe = self.frontend(default=self.h2backend(port))
        client = yield self.client(fe)
        client.send(b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n0\r\nX-Sum: 7\r\n\r\n")
        [(response, body)] = yield client.responses(1)
        info = json.loads(body)
        self.assertEqual((info["length"], info["trailers"]), (3, {"x-sum": "7"}))

    @inlineCallbacks
    def test_http11ClientChunkedTrailers(self) -> None:
        """An HTTP/1.1 client gets them in the last chunk."""
        port, server = self.h2server()
        fe = self.frontend(default=self.h2backend(port))
        out = yield self.curlPlain(fe, "--raw", "-H", "TE: trailers", path="/trailers")
        self.assertEqual(out, b"7\r\npayload\r\n0\r\nx-checksum: abc123\r\ngrpc-status: 0\r\n\r\n")
        self.assertEqual(server.seen[0].get(b"te"), b"trailers")

    @inlineCallbacks
    def test_teTrailersFromH2Client(self) -> None:
        """C{te: trailers} from an HTTP/2 client reaches an HTTP/2 server (gRPC needs it)."""
        port, server = self.h2server()
        fe = self.tlsFrontend(default=self.h2backend(port))
        yield self.curl(fe, "--http2", "-H", "te: trailers", path="/info")
        self.assertEqual(server.seen[0].get(b"te"), b"trailers")


class RefusalTests(H2UpTestCase):
    """Streams the server did not process are sent again; resets reach the client."""

    @inlineCallbacks
    def test_refusedStreamReplayed(self) -> None:
        """REFUSED_STREAM: the request, body and all, is sent again and answered."""
        port, server = self.h2server()
        fe = self.frontend(default=self.h2backend(port))
        out = yield self.curlPlain(fe, "--data-binary", "hello", path="/refuse")
        info = json.loads(out)
        self.assertEqual((info["path"], info["length"], info["sha256"]),
                         ("/refuse", 5, hashlib.sha256(b"hello").hexdigest()))
        self.assertTrue(server.refused)

    @inlineCallbacks
    def test_refusedLongBodyFails(self) -> None:
        """A refused request whose body was too long to keep (over 64 KiB) is not sent again: 502."""
        port, server = self.h2server()
        fe = self.frontend(default=self.h2backend(port))
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"x" * 100000)
        out = yield self.curlPlain(fe, "--data-binary", "@" + path, "-o", "/dev/null", "-w", "%{http_code}",
                                   path="/refuse")
        self.assertEqual(out, b"502")
        self.assertEqual(server.streams, 1)

    @inlineCallbacks
    def test_upgradeRefused(self) -> None:
        """A protocol upgrade cannot go to an HTTP/2 server: 502."""
        port, server = self.h2server()
        fe = self.frontend(default=self.h2backend(port))
        out = yield self.curlPlain(fe, "-H", "Connection: Upgrade", "-H", "Upgrade: websocket", "-o", "/dev/null",
                                   "-w", "%{http_code}", path="/ws")
        self.assertEqual(out, b"502")
        self.assertEqual(server.streams, 0)

    @inlineCallbacks
    def test_goAwayReplayed(self) -> None:
        """A stream above the last stream id of a GOAWAY goes on a new connection."""
        port, server = self.h2server()
        fe = self.frontend(default=self.h2backend(port))
        out = yield self.curlPlain(fe, "--data-binary", "x" * 1000, path="/goaway")
        info = json.loads(out)
        self.assertEqual((info["path"], info["length"]), ("/goaway", 1000))
        self.assertEqual(server.connections, 2)

    @inlineCallbacks
    def test_resetBeforeHead(self) -> None:
        """A reset before the response head is a 502."""
        port, server = self.h2server()
        fe = self.frontend(default=self.h2backend(port))
        out = yield self.curlPlain(fe, "-o", "/dev/null", "-w", "%{http_code}", path="/reset-head")
        self.assertEqual(out, b"502")

    @inlineCallbacks
    def test_resetAfterHeadH2(self) -> None:
        """A reset mid-body resets the HTTP/2 client's stream."""
        port, server = self.h2server()
        fe = self.tlsFrontend(default=self.h2backend(port))
        client = yield self.h2client(fe)
        e = yield self.assertFailure(client.request("/cancel-body"), StreamResetError)
        self.assertEqual(e.code, ErrorCodes.CANCEL)

    @inlineCallbacks
    def test_resetAfterHeadHTTP11(self) -> None:
        """A reset mid-body closes an HTTP/1.1 client's connection: curl sees the body cut."""
        port, server = self.h2server()
        fe = self.frontend(default=self.h2backend(port))
        curl = requireBinary("/usr/bin/curl")
        runner = yield runProcess(self, reactor, [curl, "-sS", f"http://127.0.0.1:{fe}/reset-body"])
        self.assertNotEqual(runner.exitCode, 0)

    @inlineCallbacks
    def test_clientGoneResetsStream(self) -> None:
        """An HTTP/1.1 client that goes away mid-response has its stream to the server reset (CANCEL)."""
        port, server = self.h2server()
        fe = self.frontend(default=self.h2backend(port))
        client = yield self.client(fe)
        client.send(b"GET /big/4000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        yield client.waitData(b"0123456789abcdef")
        reset: Deferred[Any] = Deferred()
        server.resetWaiters.append(reset)
        client.transport.abortConnection()
        code = yield reset
        self.assertEqual(code, ErrorCodes.CANCEL)

    @inlineCallbacks
    def test_burstPastALowLimit(self) -> None:
        """
        A burst before the server's SETTINGS are known, far past its
        MAX_CONCURRENT_STREAMS of 2: every request is answered, on more
        connections.
        """
        port, server = self.h2server(maxStreams=2)
        fe = self.tlsFrontend(default=self.h2backend(port))
        client = yield self.h2client(fe)
        held = [client.request("/hold") for i in range(12)]
        yield server.whenHeld(12)  # none answered yet: 2 on each of 6 connections
        self.assertEqual(server.connections, 6)
        server.release()
        results = yield gatherResults(held)
        self.assertEqual([r[0] for r in results], [200] * 12)
        self.assertEqual(server.errors, [])

    @inlineCallbacks
    def test_maxConcurrentStreams(self) -> None:
        """Past the server's MAX_CONCURRENT_STREAMS, another connection is opened."""
        port, server = self.h2server(maxStreams=2)
        fe = self.tlsFrontend(default=self.h2backend(port))
        client = yield self.h2client(fe)
        first = yield client.request("/info/first")  # the server's SETTINGS are known now
        self.assertEqual(first[0], 200)
        held = [client.request("/hold") for _ in range(5)]
        yield server.whenHeld(5)
        self.assertEqual(server.errors, [])
        self.assertEqual(server.connections, 3)
        server.release()
        results = yield gatherResults(held)
        self.assertEqual([r[0] for r in results], [200] * 5)


def _trustRoot(path: str) -> Any:
    with open(path, "rb") as f:
        return ssl.Certificate.loadPEM(f.read())


class FakeSink:
    """The exchange side of an L{H2UpStream}: records what it is told."""

    upgrading = False
    dispatch = object()

    def __init__(self, decodesChunked: bool = False) -> None:
        self.decodesChunked = decodesChunked
        self.written: list[bytes] = []
        self.writeResponse = self.written.append
        self.request = Request(b"GET", b"/", b"HTTP/1.1", [[b"Host", b"x"], [b"TE", b"trailers"]])
        self.events: list[Any] = []
        self.h2Replay: Any = None

    def responseHead(self, conn: Any, response: Any, framing: int) -> bytes:
        self.events.append(("head", response.code, framing))
        return b"HEAD;"

    def interimResponse(self, response: Any) -> None:
        self.events.append(("interim", response.code))

    def responseDone(self, conn: Any) -> None:
        self.events.append("done")

    def serverFailed(self, conn: Any, reason: Any, sentNothing: bool) -> None:
        self.events.append(("failed", reason))

    def abortExchange(self, termination: str) -> None:
        self.events.append(("abort", termination))

    def detachServer(self, conn: Any) -> None:
        self.events.append("detached")
        conn.abort()

    def resend(self, again: bool, condition: Any, termination: str, status: int) -> None:
        self.events.append(("resend", again))


class H2ServerProtocolTests(SynchronousTestCase):
    """L{H2ServerProtocol} and its streams on a L{StringTransport}, against an C{h2} server state machine."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = ConnectionPool(self.clock, idleTimeout=30.0)
        self.server = Server("s", "127.0.0.1:1", proto="h2c")
        choosePool(self.pool, [Backend("b", [self.server])])
        self.proto = H2ServerProtocol(self.server, self.pool)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.peer = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.peer.initiate_connection()
        self.exchange()

    def exchange(self) -> list[Any]:
        """Pass bytes both ways until neither side has more; the server's events."""
        events: list[Any] = []
        while True:
            out = self.transport.value()
            self.transport.clear()
            if out:
                events += self.peer.receive_data(out)
            back = self.peer.data_to_send()
            if back:
                self.proto.dataReceived(back)
            if not out and not back:
                return events

    def stream(self, sink: FakeSink, head: bytes = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n") -> Any:
        stream = self.pool.get(self.server)
        self.assertIsNotNone(stream)
        stream.startExchange(sink, head, head.split(b" ", 1)[0])
        return stream

    def test_choosePool(self) -> None:
        """A pool becomes an L{H2Pool} only when a backend has an HTTP/2 server."""
        plain = ConnectionPool(self.clock)
        choosePool(plain, [Backend("b", [Server("a", "127.0.0.1:2")])])
        self.assertNotIsInstance(plain, H2Pool)
        self.assertIsInstance(self.pool, H2Pool)

    def test_poolOnReload(self) -> None:
        """A reload that brings an HTTP/2 server makes the running frontend's pool an L{H2Pool}."""
        frontend = Frontend("tcp:0", default=Backend("b", [Server("a", "127.0.0.1:2")]))
        factory = frontend.buildFactory(self.clock)
        self.assertNotIsInstance(factory.pool, H2Pool)
        frontend.default = Backend("b", [Server("a", "127.0.0.1:2", proto="h2c")])
        factory.updateTimeouts()  # what lbkit.reload does for a running frontend
        self.assertIsInstance(factory.pool, H2Pool)

    def test_requestHead(self) -> None:
        """The head lbkit built goes as HEADERS: pseudo-headers first, te: trailers kept, Host gone."""
        sink = FakeSink()
        self.stream(sink)
        [received] = [e for e in self.exchange() if isinstance(e, RequestReceived)]
        self.assertEqual(received.headers[:4], [(b":method", b"GET"), (b":scheme", b"http"),
                                                (b":authority", b"a"), (b":path", b"/x")])
        self.assertIn((b"te", b"trailers"), received.headers)
        self.assertNotIn(b"host", dict(received.headers))

    def test_chunkedForHTTP11(self) -> None:
        """A response of unknown length is chunked for an HTTP/1.1 client, trailers in the last chunk."""
        sink = FakeSink()
        stream = self.stream(sink)
        self.exchange()
        sid = stream.streamId
        self.peer.send_headers(sid, [(b":status", b"200")])
        self.peer.send_data(sid, b"hello")
        self.peer.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
        self.exchange()
        self.assertEqual(sink.events, [("head", 200, CHUNKED), "done"])
        self.assertEqual(b"".join(sink.written), b"HEAD;5\r\nhello\r\n0\r\ngrpc-status: 0\r\n\r\n")

    def test_pausedClientHoldsWindow(self) -> None:
        """DATA the client side does not take is not acknowledged (no WINDOW_UPDATE) until it resumes."""
        sink = FakeSink(decodesChunked=True)
        stream = self.stream(sink)
        self.exchange()
        sid = stream.streamId
        self.peer.send_headers(sid, [(b":status", b"200")])
        self.exchange()
        stream.pauseProducing()
        for _ in range(12):
            self.peer.send_data(sid, b"x" * 16384)
        events = self.exchange()
        self.assertEqual([e for e in events if isinstance(e, WindowUpdated) and e.stream_id == sid], [])
        self.assertEqual(len(b"".join(sink.written)), len(b"HEAD;") + 12 * 16384)  # passed on all the same
        stream.resumeProducing()
        events = self.exchange()
        self.assertEqual([e.delta for e in events if isinstance(e, WindowUpdated) and e.stream_id == sid],
                         [12 * 16384])

    def test_refusedReplays(self) -> None:
        """REFUSED_STREAM before a head: the request is sent again, with its body."""
        sink = FakeSink()
        stream = self.stream(sink, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
        stream.send(b"abc")
        self.exchange()
        self.peer.reset_stream(stream.streamId, ErrorCodes.REFUSED_STREAM)
        self.exchange()
        self.assertEqual(sink.events, ["detached", ("resend", True)])
        self.assertEqual(sink.h2Replay, (sink.request, b"abc"))

    def test_idleCloses(self) -> None:
        """A connection with no stream for poolIdleTimeout sends GOAWAY and closes."""
        sink = FakeSink()
        stream = self.stream(sink)
        self.exchange()
        self.peer.send_headers(stream.streamId, [(b":status", b"204")], end_stream=True)
        self.exchange()
        stream.release(True)
        self.clock.advance(29)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(any(isinstance(e, ConnectionTerminated) for e in self.exchange()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unusedCloses(self) -> None:
        """A connection made for a request that went away meanwhile closes after poolIdleTimeout."""
        unused = H2ServerProtocol(self.server, self.pool)
        transport = StringTransport()
        unused.makeConnection(transport)
        self.clock.advance(30)
        self.assertTrue(transport.disconnecting)

    def test_connectFailed(self) -> None:
        """Streams handed out while a connection was being made go elsewhere when its connect fails."""
        connecting = H2ServerProtocol(self.server, self.pool)
        other = self.pool.get(self.server)  # the first connection has room: it is chosen first
        self.assertIs(other.h2, self.proto)
        waiting = connecting.newStream()
        sink = FakeSink()
        waiting.startExchange(sink, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"GET")
        connecting.connectFailed(Failure(ConnectionRefusedError()))
        self.assertEqual(sink.events, ["detached", ("resend", True)])
        self.assertNotIn(connecting, self.pool._h2[self.server])


class H2OverTLSTests(H2UpTestCase):
    """C{proto="h2"}: HTTP/2 over TLS, chosen with ALPN."""

    def tlsServer(self, protocols: list[bytes], factory: Any) -> int:
        pem = self.pki.issue("server.pem", "server.example")
        with open(pem, "rb") as f:
            cert = ssl.PrivateCertificate.loadPEM(f.read())
        options = ssl.CertificateOptions(privateKey=cert.privateKey.original, certificate=cert.original,
                                         acceptableProtocols=protocols)
        port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")
        self.ports.append(port)
        return int(port.getHost().port)

    def tlsBackend(self, port: int) -> Backend:
        return Backend("app", [Server("t1", f"127.0.0.1:{port}", proto="h2", ca=self.pki.caFile,
                                      sni="server.example")])

    @inlineCallbacks
    def test_h2(self) -> None:
        """Requests reach an HTTP/2 server over TLS, its certificate checked."""
        factory = H2TestFactory()
        fe = self.frontend(default=self.tlsBackend(self.tlsServer([b"h2"], factory)))
        out = yield self.curlPlain(fe, path="/info/tls")
        info = json.loads(out)
        self.assertEqual((info["path"], info["authority"]), ("/info/tls", f"127.0.0.1:{fe}"))
        self.assertEqual(factory.seen[0][b":scheme"], b"https")
        for proto in list(factory.open):
            self.lost.append(proto.closed)

    @inlineCallbacks
    def test_noH2(self) -> None:
        """A server that does not take h2 with ALPN gets no request: 502, and a log line saying why."""
        # (not a twisted.web Site: its factory adds h2 to the ALPN list)
        factory = ServerFactory.forProtocol(ChunkedTrailers)
        fe = self.frontend(default=self.tlsBackend(self.tlsServer([b"http/1.1"], factory)))
        logged: list[str] = []
        observer = lambda event: logged.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        out = yield self.curlPlain(fe, "-o", "/dev/null", "-w", "%{http_code}", path="/")
        self.assertEqual(out, b"502")
        # (Twisted's TLS fails the handshake when no protocol is common: an alert)
        self.assertTrue([line for line in logged if "app/t1: HTTP/2 connection lost before the server's SETTINGS"
                         in line and "alert" in line], logged)


class HTTP3ClientTests(H2UpTestCase):
    """HTTP/3 clients reach an HTTP/2 server too."""

    @inlineCallbacks
    def test_h3ToH2c(self) -> None:
        """GETs and a POST over HTTP/3 go as HTTP/2 streams to a C{proto="h2c"} server and come back whole."""
        from tests.h3client import fetch
        from tests.test_http3 import freePort

        port, server = self.h2server()
        pki = self.pki
        certs = Certificates(pki.issue("site.pem", "localhost", ("localhost",)))
        fe = freePort()
        frontend = Frontend(f"tcp:{fe}:interface=127.0.0.1", default=self.h2backend(port), name="h3", tls=certs,
                            http3=True, log=False)
        self._frontends = getattr(self, "_frontends", []) + [frontend]
        service = frontend.makeService(reactor)
        service.startService()
        self.services.append(service)
        answers = yield deferToThread(fetch, fe, [(b"GET", b"/info/a"), (b"GET", b"/big/100000"),
                                                  (b"POST", b"/info/up", [], b"abc" * 10000)], pki.caFile)
        self.assertEqual([a.status for a in answers], [200, 200, 200])
        self.assertEqual(json.loads(answers[0].body)["path"], "/info/a")
        self.assertEqual(len(answers[1].body), 100000)
        self.assertEqual(json.loads(answers[2].body)["length"], 30000)
        self.assertEqual(server.connections, 1)
