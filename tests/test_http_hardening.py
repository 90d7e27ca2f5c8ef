"""
http mode over real sockets on 127.0.0.1, for the http items of hardening
finding 10: the PROXY protocol from a balancer in front (C{acceptProxy})
and to servers (C{sendProxy}), sessions shut down with their server, a
deadline for request bodies, and the bytes logged for a response cut
short.  HAProxy is the oracle where it expresses the same thing.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

from twisted.internet import ssl
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, LoopingCall
from twisted.python.failure import Failure

from lbkit import Backend, Server, ServerState
from lbkit.health import HealthMonitor
from lbkit.http import Route, pathBegins, sourceIn
from lbkit.proxyproto import InvalidProxyHeader, ProxyHeaderParser, ProxyInfo, formatV2
from lbkit.testing import FakeCheck
from lbkit.tls import Certificates
from tests.helpers import startHAProxy
from tests.test_http2 import H2Client
from tests.test_http_integration import HTTPTestCase, OneShot, ServerFactory, backend, reactor
from tests.test_http_security import Exchange, RecordingProxyFactory
from tests.test_tls_pki import makePKI

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
#: What a balancer in front would say: client 203.0.113.9:40000 came to 192.0.2.1:80.
V1_HEADER = b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 80\r\n"
_DONE = Failure(ConnectionDone())


class ProxyRecorder(Protocol):
    """
    A raw HTTP/1.1 server that records every byte it receives; with
    C{expectHeader}, it first reads a PROXY header (kept in L{info}, or
    L{badHeader} set if what came first was not one).  It answers 200
    C{ok} to every request head (requests have no body here).
    """

    def __init__(self, expectHeader: bool) -> None:
        self.data = b""
        self.info: Optional[ProxyInfo] = None
        self.badHeader: Optional[bytes] = None
        self.requests = 0
        self._parser: Optional[ProxyHeaderParser] = ProxyHeaderParser() if expectHeader else None
        self._pending = b""
        #: Fires when this connection is lost.
        self.gone: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self._parser is not None:
            try:
                info = self._parser.feed(data)
            except InvalidProxyHeader:
                self._parser = None
                self.badHeader = self.data[:60]
                assert self.transport is not None
                self.transport.loseConnection()
                return
            if info is None:
                return
            self._parser = None
            self.info = info
            data = info.rest
        self._pending += data
        while b"\r\n\r\n" in self._pending:
            _, self._pending = self._pending.split(b"\r\n\r\n", 1)
            self.requests += 1
            assert self.transport is not None
            self.transport.write(OK)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        self.gone.callback(None)


class Held(OneShot):
    """A L{OneShot} whose L{gone} fires when its connection is lost."""

    def __init__(self, action: Callable[[OneShot], None]) -> None:
        OneShot.__init__(self, action)
        self.gone: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = _DONE) -> None:
        self.gone.callback(None)


class ProxiedH2Client(H2Client):
    """An L{H2Client} that sends C{header} in the clear, then starts TLS (as behind an L4 balancer)."""

    def __init__(self, header: bytes, creator: Any) -> None:
        H2Client.__init__(self)
        self.header = header
        self.creator = creator

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.header)
        self.transport.startTLS(self.creator)  # type: ignore[attr-defined]
        H2Client.connectionMade(self)


class HardeningTestCase(HTTPTestCase):
    """Recording servers, a frontend that keeps its log fields, TLS certificates."""

    timeout = 15

    def proxyRecorder(self, expectHeader: bool = True) -> tuple[int, ServerFactory]:
        """A L{ProxyRecorder} server: its port and factory (C{built} lists its connections)."""
        return self.custom(lambda: ProxyRecorder(expectHeader))

    def lbkit(self, routes: Any = (), default: Optional[Backend] = None, **kwargs: Any) -> int:
        """An lbkit frontend that records its access-log fields; its port."""
        return self.frontend(routes, default=default, factory=RecordingProxyFactory, **kwargs)

    def logged(self) -> list[dict[str, Any]]:
        """The access-log fields of the last frontend started."""
        factory = self._frontends[-1].factories[0]
        assert isinstance(factory, RecordingProxyFactory)
        return factory.logged

    def certificates(self) -> Certificates:
        self.pki = makePKI(self)
        return Certificates(default=self.pki.issue("a.pem", "a.example"))

    def clientTLS(self) -> Any:
        with open(self.pki.caFile, "rb") as f:
            ca = ssl.Certificate.loadPEM(f.read())
        return ssl.optionsForClientTLS("a.example", trustRoot=ca, acceptableProtocols=[b"h2"])

    @inlineCallbacks
    def h2client(self, port: int, header: bytes = b"") -> Any:
        """An HTTP/2 client over TLS, sending C{header} before TLS if given; closed in cleanup."""
        client = ProxiedH2Client(header, self.clientTLS())
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        self.lost.append(client.closed)
        self.addCleanup(lambda: client.transport.loseConnection() if client.transport else None)  # type: ignore[attr-defined]
        return client

    @inlineCallbacks
    def exchange(self, port: int, data: bytes) -> Any:
        """Send C{data} on a new connection; fire with every byte received until it closed."""
        client = Exchange(data)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        yield client.closed
        return client.raw


HAPROXY_ACCEPT = """
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
frontend fe
  bind {bind} accept-proxy
  option forwardfor
  default_backend be
backend be
  server s1 127.0.0.1:%d
"""


class AcceptProxyTests(HardeningTestCase):
    """
    C{http.Frontend(acceptProxy=True)}: every connection starts with a
    PROXY header, whose source is the client everywhere.
    """

    @inlineCallbacks
    def test_v1NamesTheClient(self) -> Any:
        """The v1 header's source is what routes, X-Forwarded-For and the log see, for each request of the connection."""
        proxied, other = self.site("proxied")[0], self.site("other")[0]
        port = self.lbkit(
            [Route(sourceIn("203.0.113.0/24"), backend("proxied", [proxied]))],
            default=backend("other", [other]),
            acceptProxy=True,
        )
        c = yield self.client(port)
        c.send(V1_HEADER + GET)
        [(response, body)] = yield c.responses(1)
        info = json.loads(body)
        self.assertEqual((response.code, info["server"]), (200, "proxied"))
        self.assertEqual(info["headers"]["x-forwarded-for"], ["203.0.113.9"])
        c.send(GET)
        [_, (response, body)] = yield c.responses(2)
        self.assertEqual(json.loads(body)["server"], "proxied")
        self.assertEqual([f["client"] for f in self.logged()], ["203.0.113.9:40000"] * 2)

    @inlineCallbacks
    def test_v2NamesTheClient(self) -> Any:
        """A v2 header (IPv6 here) names the client just as well."""
        proxied, other = self.site("proxied")[0], self.site("other")[0]
        port = self.lbkit(
            [Route(sourceIn("2001:db8::/32"), backend("proxied", [proxied]))],
            default=backend("other", [other]),
            acceptProxy=True,
        )
        header = formatV2(IPv6Address("TCP", "2001:db8::7", 40000), IPv6Address("TCP", "2001:db8::1", 80))
        c = yield self.client(port)
        c.send(header + GET)
        [(response, body)] = yield c.responses(1)
        info = json.loads(body)
        self.assertEqual(info["server"], "proxied")
        self.assertEqual(info["headers"]["x-forwarded-for"], ["2001:db8::7"])

    @inlineCallbacks
    def test_noHeaderRefusedAsHAProxy(self) -> Any:
        """A connection without a valid PROXY header is cut without an answer, by HAProxy and lbkit alike."""
        serverPort, site = self.site("app")
        haproxy, _ = startHAProxy(self, reactor, HAPROXY_ACCEPT % serverPort)
        port = self.lbkit(default=backend("app", [serverPort]), acceptProxy=True)
        for data in (GET, b"PROXY garbage\r\n" + GET):
            expected = yield self.exchange(haproxy, data)
            got = yield self.exchange(port, data)
            self.assertEqual((expected, got), (b"", b""), data)
        self.assertEqual(site.connections, 0)
        self.assertEqual(self.logged(), [])

    @inlineCallbacks
    def test_forwardedForAsHAProxy(self) -> Any:
        """HAProxy and lbkit both put the header's source in X-Forwarded-For."""
        serverPort, site = self.site("app")
        haproxy, _ = startHAProxy(self, reactor, HAPROXY_ACCEPT % serverPort)
        port = self.lbkit(default=backend("app", [serverPort]), acceptProxy=True)
        seen = []
        for target in (haproxy, port):
            c = yield self.client(target)
            c.send(V1_HEADER + GET)
            [(response, body)] = yield c.responses(1)
            seen.append(json.loads(body)["headers"]["x-forwarded-for"])
            c.transport.loseConnection()
        self.assertEqual(seen, [["203.0.113.9"], ["203.0.113.9"]])

    @inlineCallbacks
    def test_tlsHTTP2(self) -> Any:
        """On a TLS frontend the header comes before the handshake; HTTP/2 streams see its source."""
        port = self.lbkit(default=backend("app", [self.site("app")[0]]), tls=self.certificates(), acceptProxy=True)
        client = yield self.h2client(port, V1_HEADER)
        status, _, body = yield client.request("/")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["headers"]["x-forwarded-for"], ["203.0.113.9"])
        self.assertEqual(self.logged()[0]["client"], "203.0.113.9:40000")


HAPROXY_SEND = """
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
frontend fe
  bind {bind}
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:%d send-proxy
"""


class SendProxyTests(HardeningTestCase):
    """
    C{Server(sendProxy=1 or 2)} in http mode: each new server connection
    starts with the PROXY header of the client that caused it, and is
    never used for another client connection.
    """

    @inlineCallbacks
    def test_v1HeaderFirst(self) -> Any:
        """The server connection starts with one v1 header naming the client; later requests of that client reuse it."""
        serverPort, recorder = self.proxyRecorder()
        port = self.lbkit(default=Backend("be", [Server("s1", f"127.0.0.1:{serverPort}", sendProxy=1)]))
        c = yield self.client(port)
        c.send(GET)
        yield c.responses(1)
        c.send(GET)
        yield c.responses(2)
        [conn] = recorder.built
        assert isinstance(conn, ProxyRecorder)
        self.assertIsNone(conn.badHeader)
        self.assertEqual(conn.info.source, c.transport.getHost())  # type: ignore[union-attr]
        self.assertEqual(conn.info.destination, IPv4Address("TCP", "127.0.0.1", port))  # type: ignore[union-attr]
        self.assertEqual(conn.requests, 2)
        self.assertTrue(conn.data.startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 "))
        self.assertEqual(conn.data.count(b"PROXY"), 1)

    @inlineCallbacks
    def test_v2HeaderFirst(self) -> Any:
        """With sendProxy=2 the server connection starts with a v2 header naming the client."""
        serverPort, recorder = self.proxyRecorder()
        port = self.lbkit(default=Backend("be", [Server("s1", f"127.0.0.1:{serverPort}", sendProxy=2)]))
        c = yield self.client(port)
        c.send(GET)
        yield c.responses(1)
        [conn] = recorder.built
        assert isinstance(conn, ProxyRecorder)
        self.assertTrue(conn.data.startswith(formatV2(c.transport.getHost(), IPv4Address("TCP", "127.0.0.1", port))))
        self.assertEqual(conn.requests, 1)

    @inlineCallbacks
    def test_notSharedAcrossClientsAsHAProxy(self) -> Any:
        """Clients A, B, A: two server connections, A's reused by A only, through HAProxy and lbkit alike."""
        results = []
        for proxy in ("haproxy", "lbkit"):
            serverPort, recorder = self.proxyRecorder()
            server = Server("s1", f"127.0.0.1:{serverPort}", sendProxy=1)
            if proxy == "haproxy":
                port, _ = startHAProxy(self, reactor, HAPROXY_SEND % serverPort)
            else:
                port = self.lbkit(default=Backend("be", [server]))
            a = yield self.client(port)
            a.send(GET)
            yield a.responses(1)
            b = yield self.client(port)
            b.send(GET)
            yield b.responses(1)
            a.send(GET)
            yield a.responses(2)
            ports = {a.transport.getHost().port: "A", b.transport.getHost().port: "B"}
            results.append([(ports[p.info.source.port], p.requests) for p in recorder.built])  # type: ignore[attr-defined]
            a.transport.loseConnection()
            b.transport.loseConnection()
        self.assertEqual(results, [[("A", 2), ("B", 1)]] * 2)

    @inlineCallbacks
    def test_closedWithItsClient(self) -> Any:
        """A server connection that carries a client's PROXY header closes when that client leaves."""
        serverPort, recorder = self.proxyRecorder()
        port = self.lbkit(default=Backend("be", [Server("s1", f"127.0.0.1:{serverPort}", sendProxy=1)]))
        c = yield self.client(port)
        c.send(GET)
        yield c.responses(1)
        [conn] = recorder.built
        assert isinstance(conn, ProxyRecorder)
        self.assertEqual(conn.info.source, c.transport.getHost())  # type: ignore[union-attr]
        c.transport.loseConnection()
        yield conn.gone
        self.assertEqual(self._frontends[-1].factories[0].pool.idleCount(), 0)

    @inlineCallbacks
    def test_chainedFromAcceptProxy(self) -> Any:
        """Behind a balancer (acceptProxy), the header sent on is the one received."""
        serverPort, recorder = self.proxyRecorder()
        port = self.lbkit(
            default=Backend("be", [Server("s1", f"127.0.0.1:{serverPort}", sendProxy=1)]), acceptProxy=True
        )
        c = yield self.client(port)
        c.send(V1_HEADER + GET)
        yield c.responses(1)
        [conn] = recorder.built
        assert isinstance(conn, ProxyRecorder)
        self.assertTrue(conn.data.startswith(V1_HEADER + b"GET / HTTP/1.1\r\n"), conn.data[:80])

    @inlineCallbacks
    def test_http2(self) -> Any:
        """An HTTP/2 stream's server connection starts with its client's header too, and closes after the stream."""
        serverPort, recorder = self.proxyRecorder()
        port = self.lbkit(
            default=Backend("be", [Server("s1", f"127.0.0.1:{serverPort}", sendProxy=1)]), tls=self.certificates()
        )
        client = yield self.h2client(port)
        status, _, body = yield client.request("/")
        self.assertEqual((status, body), (200, b"ok"))
        [conn] = recorder.built
        assert isinstance(conn, ProxyRecorder)
        self.assertEqual(conn.info.source, client.transport.getHost())  # type: ignore[union-attr]
        yield conn.gone  # one stream, one exchange: the connection is not kept


class ShutdownSessionsTests(HardeningTestCase):
    """
    A health check with C{onMarkedDown="shutdown-sessions"} cuts the
    requests in flight on a server it marks DOWN.
    """

    def monitor(self, server: Server) -> tuple[FakeCheck, Clock]:
        """A monitor that marks C{server} DOWN at the first failed probe: its check and clock."""
        clock = Clock()
        check = FakeCheck(interval=1.0, fall=1, initState="fully-up", onMarkedDown="shutdown-sessions")
        monitor = HealthMonitor(server, check, reactor, clock)
        monitor.start()
        self.addCleanup(monitor.stop)
        clock.advance(0)
        return check, clock

    def slowServer(self) -> tuple[int, ServerFactory]:
        """A server that sends a response head and 3 of its 1000 body bytes, then nothing."""

        def answerSlowly(p: OneShot) -> None:
            p.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")  # type: ignore[union-attr]

        return self.custom(lambda: Held(answerSlowly))

    @inlineCallbacks
    def test_responseInFlightCut(self) -> Any:
        """A response in flight is cut when its server is marked DOWN, and logged SK with the bytes sent."""
        serverPort, factory = self.slowServer()
        server = Server("s1", f"127.0.0.1:{serverPort}")
        port = self.lbkit(default=Backend("be", [server]))
        check, _ = self.monitor(server)
        c = yield self.client(port)
        c.send(GET)
        yield c.waitData(b"abc")
        check.failLast()
        self.assertIs(server.state, ServerState.DOWN)
        yield c.closed
        yield factory.built[0].gone  # type: ignore[attr-defined]
        [fields] = self.logged()
        self.assertEqual((fields["status"], fields["termination"]), (200, "SK"))
        self.assertEqual(fields["bytes"], len(c.raw))
        self.assertEqual(server.sessions, set())

    @inlineCallbacks
    def test_http2StreamOnly(self) -> Any:
        """Over HTTP/2 only the stream is reset: the connection goes on with other requests."""
        serverPort, factory = self.slowServer()
        server = Server("s1", f"127.0.0.1:{serverPort}")
        port = self.lbkit(
            [Route(pathBegins("/slow"), Backend("slow", [server]))],
            default=backend("app", [self.site("app")[0]]),
            tls=self.certificates(),
        )
        check, _ = self.monitor(server)
        client = yield self.h2client(port)
        slow = client.request("/slow")
        client.firstData[1] = Deferred()
        yield client.firstData[1]
        check.failLast()
        yield self.assertFailure(slow, RuntimeError)
        yield factory.built[0].gone  # type: ignore[attr-defined]
        status, _, _ = yield client.request("/other")
        self.assertEqual(status, 200)
        self.assertEqual([f["termination"] for f in self.logged()], ["SK", "--"])


HAPROXY_BUFFER = """
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  timeout http-request 500ms
frontend fe
  bind {bind}
  option http-buffer-request
  default_backend be
backend be
  server s1 127.0.0.1:%d
"""


class RequestBodyDeadlineTests(HardeningTestCase):
    """
    C{http.Frontend(timeoutRequestBody=N)}: a request body that takes
    longer than N seconds, however steadily it trickles, is cut with 408.
    """

    @inlineCallbacks
    def trickle(self, port: int) -> Any:
        """POST a 100-byte body one byte every 0.1 s; fire with the response."""
        c = yield self.client(port)
        c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        dribble = LoopingCall(c.transport.write, b"x")
        dribble.clock = reactor
        dribble.start(0.1)
        self.addCleanup(lambda: dribble.stop() if dribble.running else None)
        [(response, _)] = yield c.responses(1)
        dribble.stop()
        return response

    @inlineCallbacks
    def test_trickledBodyCut(self) -> Any:
        """A body trickling past the deadline gets 408, its server connection is closed, the log says cD."""
        serverPort, factory = self.custom(lambda: Held(lambda p: None))
        port = self.lbkit(default=backend("be", [serverPort]), timeoutRequestBody=0.5)
        response = yield self.trickle(port)
        self.assertEqual(response.code, 408)
        yield factory.built[0].gone  # type: ignore[attr-defined]
        [fields] = self.logged()
        self.assertEqual((fields["status"], fields["termination"]), (408, "cD"))

    @inlineCallbacks
    def test_sameStatusAsHAProxy(self) -> Any:
        """HAProxy with http-buffer-request and timeout http-request answers the trickled body with 408 too."""
        serverPort, _ = self.custom(lambda: Held(lambda p: None))
        haproxy, _ = startHAProxy(self, reactor, HAPROXY_BUFFER % serverPort)
        port = self.lbkit(default=backend("be", [serverPort]), timeoutRequestBody=0.5)
        expected = yield self.trickle(haproxy)
        got = yield self.trickle(port)
        self.assertEqual((expected.code, got.code), (408, 408))


class AbortedResponseBytesTests(HardeningTestCase):
    """
    A response cut short is logged with the bytes the client got, not 0.
    """

    @inlineCallbacks
    def test_serverGoneMidBody(self) -> Any:
        """The server closes after part of the body: the log's bytes are what the client received."""
        servers: list[OneShot] = []

        def answerPart(p: OneShot) -> None:
            p.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 300)  # type: ignore[union-attr]
            servers.append(p)

        serverPort, factory = self.custom(lambda: Held(answerPart))
        port = self.lbkit(default=backend("be", [serverPort]))
        c = yield self.client(port)
        c.send(GET)
        yield c.waitData(b"x" * 300)
        servers[0].transport.loseConnection()  # type: ignore[union-attr]
        yield c.closed
        [fields] = self.logged()
        self.assertEqual((fields["status"], fields["termination"]), (200, "SD"))
        self.assertGreater(fields["bytes"], 300)
        self.assertEqual(fields["bytes"], len(c.raw))
