"""
Tests for the http-mode proxy protocols, with L{StringTransport}s, a
L{FakeEndpoint} per server and a L{MemoryReactorClock}: no sockets, no real
time.
"""

from __future__ import annotations

import errno
from typing import Any, Sequence

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server, ServerState
from lbkit.error import ConfigError
from lbkit.health import HealthMonitor
from lbkit.http import (
    HTTP_LOG_FORMAT,
    Frontend,
    HTTPFrontendProtocol,
    HTTPServerProtocol,
    Route,
    pathBegins,
    setHeader,
)
from lbkit.http._acceptproxy import AcceptProxyFactory
from lbkit.http._states import TRANSITIONS, State
from lbkit.interfaces import ISession
from lbkit.proxyproto import formatV2
from lbkit.testing import (
    FakeCheck,
    FakeEndpoint,
    HalfCloseableStringTransport,
    HTTPHarness,
    assertProvides,
)

CLIENT = IPv4Address("TCP", "198.51.100.7", 51000)
FRONT = IPv4Address("TCP", "127.0.0.1", 8080)
DONE = Failure(ConnectionDone())
LOST = Failure(ConnectionLost())
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Harness:
    """
    An http frontend and backends on a L{MemoryReactorClock}, fed by hand:
    the public L{HTTPHarness}, with servers made from names and answers as
    C{(protocol, transport)} pairs.
    """

    def __init__(
        self,
        testCase: SynchronousTestCase,
        names: Sequence[str] = ("s1",),
        routes: Sequence[tuple[Any, Sequence[str]]] = (),
        frontendArgs: dict[str, Any] | None = None,
        **backendArgs: Any,
    ) -> None:
        self.testCase = testCase
        self.endpoints: dict[str, FakeEndpoint] = {}
        self.servers: dict[str, Server] = {}

        def backend(name: str, serverNames: Sequence[str]) -> Backend:
            servers = []
            for n in serverNames:
                self.endpoints[n] = FakeEndpoint(IPv4Address("TCP", "192.0.2.1", 80))
                self.servers[n] = Server(n, self.endpoints[n])
                servers.append(self.servers[n])
            return Backend(name, servers, **backendArgs)

        self.backend = backend("be", names)
        routeObjects = [Route(m, backend(f"r{i}", ns)) for i, (m, ns) in enumerate(routes)]
        self.frontend = Frontend("tcp:8080", routeObjects, default=self.backend, name="fe", **(frontendArgs or {}))
        self.harness = HTTPHarness(self.frontend, clientAddress=CLIENT, frontendAddress=FRONT)
        self.reactor = self.harness.reactor
        self.factory = self.harness.factory
        self.logged = self.harness.logged
        testCase.addCleanup(self._cleanUp)

    def accept(self) -> tuple[HTTPFrontendProtocol, HalfCloseableStringTransport]:
        """A client connects."""
        client = self.harness.accept()
        return client.protocol, client.transport

    def connect(self, name: str = "s1") -> tuple[HTTPServerProtocol, HalfCloseableStringTransport]:
        """The pending connect to server C{name} succeeds."""
        side = self.harness.connect(self.servers[name])
        return side.protocol, side.transport

    def _cleanUp(self) -> None:
        self.harness.close()
        self.testCase.assertEqual(self.reactor.getDelayedCalls(), [])
        self.testCase.assertEqual({n: s.active for n, s in self.servers.items()}, {n: 0 for n in self.servers})


def head(transport: HalfCloseableStringTransport) -> tuple[bytes, dict[bytes, bytes]]:
    """The first line and headers (lower-case names) of what C{transport} got."""
    text = transport.value().split(b"\r\n\r\n", 1)[0]
    lines = text.split(b"\r\n")
    return lines[0], {k.lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}


class RequestTests(SynchronousTestCase):
    """
    A request goes to a server once its head is complete; its response goes
    back.
    """

    def test_delayedBinding(self) -> None:
        """No server is connected to before the head is complete; the client is paused meanwhile."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n")
        self.assertEqual(h.endpoints["s1"].attempts, [])
        proto.dataReceived(b"\r\n")
        self.assertEqual(len(h.endpoints["s1"].pending), 1)
        self.assertEqual(client.producerState, "paused")

    def test_relay(self) -> None:
        """The request head goes to the server and the response to the client."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET /x?y=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n")
        server, serverSide = h.connect()
        line, headers = head(serverSide)
        self.assertEqual(line, b"GET /x?y=1 HTTP/1.1")
        self.assertEqual(headers[b"host"], b"example.com")
        self.assertEqual(headers[b"accept"], b"*/*")
        self.assertEqual(client.producerState, "producing")
        self.assertIs(client.producer, serverSide)
        server.dataReceived(OK)
        self.assertEqual(client.value(), OK)
        self.assertFalse(client.disconnecting)

    def test_forwardedHeaders(self) -> None:
        """X-Forwarded-For is appended to, X-Forwarded-Proto and -Host are added."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n")
        server, serverSide = h.connect()
        _, headers = head(serverSide)
        self.assertEqual(headers[b"x-forwarded-for"], b"10.0.0.1, 198.51.100.7")
        self.assertEqual(headers[b"x-forwarded-proto"], b"http")
        self.assertEqual(headers[b"x-forwarded-host"], b"example.com")

    def test_forwardedForOff(self) -> None:
        """With forwardedFor=False no X-Forwarded-* header is added."""
        h = Harness(self, frontendArgs={"forwardedFor": False})
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        server, serverSide = h.connect()
        self.assertNotIn(b"X-Forwarded", serverSide.value())

    def test_hopByHopRequestHeaders(self) -> None:
        """Hop-by-hop headers, and those Connection names, do not reach the server."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: 300\r\n"
            b"TE: trailers\r\nTrailer: X\r\nProxy-Authorization: secret\r\nProxy-Connection: x\r\n"
            b"X-Private: 1\r\nX-Public: 2\r\n\r\n"
        )
        server, serverSide = h.connect()
        _, headers = head(serverSide)
        for name in [b"connection", b"keep-alive", b"te", b"trailer", b"proxy-authorization",
                     b"proxy-connection", b"x-private"]:
            self.assertNotIn(name, headers)
        self.assertEqual(headers[b"x-public"], b"2")

    def test_hopByHopResponseHeaders(self) -> None:
        """Hop-by-hop response headers, and those Connection names, do not reach the client."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n"
            b"X-Secret: 1\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nX-Fine: 2\r\nContent-Length: 0\r\n\r\n"
        )
        _, headers = head(client)
        for name in [b"connection", b"keep-alive", b"x-secret", b"proxy-authenticate", b"upgrade"]:
            self.assertNotIn(name, headers)
        self.assertEqual(headers[b"x-fine"], b"2")

    def test_requestBodyContentLength(self) -> None:
        """A Content-Length body streams to the server as it arrives."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
        server, serverSide = h.connect()
        self.assertTrue(serverSide.value().endswith(b"\r\n\r\n01234"))
        self.assertIs(serverSide.producer, client)
        proto.dataReceived(b"56789")
        self.assertTrue(serverSide.value().endswith(b"0123456789"))
        self.assertIsNone(serverSide.producer)

    def test_requestBodyChunked(self) -> None:
        """A chunked body is passed on unchanged, with its Transfer-Encoding."""
        h = Harness(self)
        proto, client = h.accept()
        body = b"5\r\nhello\r\n0\r\n\r\n"
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body[:7])
        server, serverSide = h.connect()
        proto.dataReceived(body[7:])
        _, headers = head(serverSide)
        self.assertEqual(headers[b"transfer-encoding"], b"chunked")
        self.assertTrue(serverSide.value().endswith(b"\r\n\r\n" + body))

    def test_routes(self) -> None:
        """The first matching route picks the backend; otherwise the default."""
        h = Harness(self, routes=[(pathBegins("/blog"), ["blog1"])])
        proto, client = h.accept()
        proto.dataReceived(b"GET /blog/1 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(h.endpoints["blog1"].pending), 1)
        server, _ = h.connect("blog1")
        server.dataReceived(OK)
        proto.dataReceived(b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(h.endpoints["s1"].pending), 1)
        h.connect("s1")

    def test_requestRules(self) -> None:
        """Frontend request and response rules apply."""
        h = Harness(self, frontendArgs={"requestRules": [setHeader("X-Via", "lbkit")],
                                        "responseRules": [setHeader("Server", "lbkit")]})
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(head(serverSide)[1][b"x-via"], b"lbkit")
        self.assertEqual(head(client)[1][b"server"], b"lbkit")

    def test_routeRules(self) -> None:
        """A route's own request and response rules apply to the requests it takes."""
        h = Harness(self, routes=[(pathBegins("/r"), ["r1"])])
        route = h.frontend.routes[0]
        route.requestRules.append(setHeader("X-Route", "r"))
        route.responseRules.append(setHeader("X-Route", "r"))
        proto, client = h.accept()
        proto.dataReceived(b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect("r1")
        server.dataReceived(OK)
        self.assertEqual(head(serverSide)[1][b"x-route"], b"r")
        self.assertEqual(head(client)[1][b"x-route"], b"r")

    def test_accessLogFields(self) -> None:
        """Each finished request yields its log fields; the line renders."""
        h = Harness(self)
        events: list[LogEvent] = []
        observer: Any = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        proto, client = h.accept()
        proto.dataReceived(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        h.reactor.advance(0.25)
        server, _ = h.connect()
        server.dataReceived(OK)
        [fields] = h.logged
        self.assertEqual(
            {k: fields[k] for k in ["client", "frontend", "backend", "server", "status", "bytes", "termination",
                                    "retries", "request", "Tc"]},
            {"client": "198.51.100.7:51000", "frontend": "fe", "backend": "be", "server": "s1", "status": 200,
             "bytes": len(OK), "termination": "--", "retries": 0, "request": "GET /x HTTP/1.1", "Tc": 250},
        )
        lines = [formatEvent(e) for e in events if e.get("log_namespace") == "lbkit.access"]
        self.assertEqual(len(lines), 1)
        self.assertIn('fe be/s1 ', lines[0])
        self.assertIn(f' 200 {len(OK)} -- 0 "GET /x HTTP/1.1"', lines[0])
        self.assertTrue(HTTP_LOG_FORMAT)


class KeepAliveTests(SynchronousTestCase):
    """
    Client keep-alive, pipelining and the server connection pool.
    """

    def test_serverConnectionReused(self) -> None:
        """A second request on the same client connection reuses the pooled server connection."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(OK)
        self.assertEqual(h.factory.pool.idleCount(), 1)
        proto.dataReceived(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(h.endpoints["s1"].pending, [])
        self.assertIn(b"GET /2 HTTP/1.1", serverSide.value())
        server.dataReceived(OK)
        self.assertEqual(client.value(), OK + OK)

    def test_pipelined(self) -> None:
        """Pipelined requests are sent one at a time, answered in order."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        self.assertNotIn(b"/2", serverSide.value())
        server.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        self.assertIn(b"GET /2", serverSide.value())
        server.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
        self.assertEqual(client.value().count(b"200 OK"), 2)
        self.assertTrue(client.value().endswith(b"2"))

    def test_connectionClose(self) -> None:
        """Connection: close from the client closes after the response."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        server, _ = h.connect()
        server.dataReceived(OK)
        self.assertTrue(client.disconnecting)
        self.assertIn(b"Connection: close", client.value())

    def test_http10KeepAlive(self) -> None:
        """HTTP/1.0 closes unless it asks for keep-alive."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        server, _ = h.connect()
        server.dataReceived(OK)
        self.assertTrue(client.disconnecting)
        proto2, client2 = h.accept()
        proto2.dataReceived(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        server.dataReceived(OK)
        self.assertFalse(client2.disconnecting)
        self.assertIn(b"Connection: keep-alive", client2.value())

    def test_serverCloseNotReused(self) -> None:
        """A response with Connection: close is not pooled."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(h.factory.pool.idleCount(), 0)
        self.assertTrue(serverSide.disconnecting)
        self.assertFalse(client.disconnecting)

    def test_untilCloseResponse(self) -> None:
        """A response without length ends when the server closes; so does the client connection."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(b"HTTP/1.1 200 OK\r\n\r\npart1")
        server.dataReceived(b"part2")
        self.assertFalse(client.disconnecting)
        server.connectionLost(DONE)
        self.assertTrue(client.value().endswith(b"part1part2"))
        self.assertIn(b"Connection: close", client.value())
        self.assertTrue(client.disconnecting)

    def test_pooledConnectionResumed(self) -> None:
        """A server connection paused by a slow client is resumed before it is pooled."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        serverSide.pauseProducing()  # the client's buffer filled up
        server.dataReceived(OK)
        self.assertEqual(h.factory.pool.idleCount(), 1)
        self.assertEqual(serverSide.producerState, "producing")

    def test_idleKeepAliveClosed(self) -> None:
        """An idle keep-alive client is closed silently after timeoutHttpRequest."""
        h = Harness(self, frontendArgs={"timeoutHttpRequest": 2})
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, _ = h.connect()
        server.dataReceived(OK)
        h.reactor.advance(3)
        self.assertTrue(client.disconnecting)
        self.assertEqual(client.value(), OK)

    def test_poolIdleTimeout(self) -> None:
        """Pooled connections idle past poolIdleTimeout are closed."""
        h = Harness(self, frontendArgs={"poolIdleTimeout": 4})
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(OK)
        proto.connectionLost(DONE)
        h.reactor.advance(2)
        self.assertFalse(serverSide.disconnecting)
        h.reactor.advance(2)
        h.reactor.advance(2)
        self.assertTrue(serverSide.disconnecting)
        server.connectionLost(DONE)

    def test_poolMaxIdle(self) -> None:
        """More idle connections than maxIdlePerServer are closed."""
        h = Harness(self, frontendArgs={"maxIdlePerServer": 1})
        protos = [h.accept()[0] for _ in range(2)]
        for proto in protos:
            proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        conns = [h.connect() for _ in protos]
        for server, _ in conns:
            server.dataReceived(OK)
        self.assertEqual(h.factory.pool.idleCount(), 1)
        self.assertEqual([t.disconnecting for _, t in conns], [False, True])


class ErrorTests(SynchronousTestCase):
    """
    Malformed requests, timeouts and server failures get the right answer.
    """

    def assertAnswered(self, client: HalfCloseableStringTransport, status: int) -> None:
        """C{client} got a C{status} answer and is being closed."""
        self.assertTrue(client.value().startswith(b"HTTP/1.1 %d " % status), client.value()[:80])
        self.assertIn(b"Connection: close", client.value())
        self.assertTrue(client.disconnecting)

    def test_malformed(self) -> None:
        """A malformed request gets 400 and is closed; no server is contacted."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET /\r\n\r\n")
        self.assertAnswered(client, 400)
        self.assertEqual(h.endpoints["s1"].attempts, [])

    def test_smuggling(self) -> None:
        """Transfer-Encoding with Content-Length is a 400."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.assertAnswered(client, 400)

    def test_badVersion(self) -> None:
        """HTTP/2.0 in a request line is a 505."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/2.0\r\n\r\n")
        self.assertAnswered(client, 505)

    def test_headTooLarge(self) -> None:
        """A head over 64 KiB is a 431."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"x" * 70000)
        self.assertAnswered(client, 431)

    def test_slowHead(self) -> None:
        """A head not complete within timeoutHttpRequest gets 408."""
        h = Harness(self, frontendArgs={"timeoutHttpRequest": 5})
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n")
        h.reactor.advance(4)
        self.assertEqual(client.value(), b"")
        h.reactor.advance(2)
        self.assertAnswered(client, 408)

    def test_allDown(self) -> None:
        """When every server is DOWN the answer is 503."""
        h = Harness(self, ("s1", "s2"))
        for s in h.servers.values():
            s.setState(ServerState.DOWN)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertAnswered(client, 503)
        self.assertEqual(h.logged[0]["termination"], "SC")
        self.assertEqual(h.logged[0]["server"], "<NOSRV>")

    def test_connectRefusedRetries(self) -> None:
        """A refused connect is retried on the other server."""
        h = Harness(self, ("s1", "s2"))
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        h.endpoints["s1"].fail()
        server, _ = h.connect("s2")
        server.dataReceived(OK)
        self.assertEqual(client.value(), OK)
        self.assertEqual(h.logged[0]["retries"], 1)

    def test_connectRefusedEverywhere(self) -> None:
        """When every attempt is refused the answer is 503 (SC) after the retries."""
        h = Harness(self, ("s1", "s2"), retries=2)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        tried = []
        for _ in range(3):
            [name] = [n for n, e in h.endpoints.items() if e.pending]
            tried.append(name)
            h.endpoints[name].fail()
        self.assertAnswered(client, 503)
        self.assertEqual(h.logged[0]["termination"], "SC")
        self.assertEqual(sorted(tried[:2]), ["s1", "s2"])
        self.assertEqual([e.pending for e in h.endpoints.values()], [[], []])
        self.assertEqual(h.logged[0]["retries"], 2)

    def test_connectTimeout(self) -> None:
        """A connect that takes longer than timeoutConnect is given up, then 503."""
        h = Harness(self, retries=0, timeoutConnect=2)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        h.reactor.advance(2)
        self.assertAnswered(client, 503)
        self.assertEqual(h.logged[0]["termination"], "sC")

    def test_serverClosesBeforeHeadRetried(self) -> None:
        """A GET whose server closes before a response head is retried elsewhere."""
        h = Harness(self, ("s1", "s2"))
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, _ = h.connect("s1")
        server.connectionLost(DONE)
        server2, _ = h.connect("s2")
        server2.dataReceived(OK)
        self.assertEqual(client.value(), OK)

    def test_postNotRetried(self) -> None:
        """A POST whose server closes before a response head gets 502."""
        h = Harness(self, ("s1", "s2"))
        proto, client = h.accept()
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
        server, _ = h.connect("s1")
        server.connectionLost(DONE)
        self.assertAnswered(client, 502)
        self.assertEqual(h.endpoints["s2"].attempts, [])

    def test_putWithBodyNotRetried(self) -> None:
        """A PUT whose body was already sent is not retried (the body is gone)."""
        h = Harness(self, ("s1", "s2"))
        proto, client = h.accept()
        proto.dataReceived(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
        server, _ = h.connect("s1")
        server.connectionLost(DONE)
        self.assertAnswered(client, 502)

    def test_reusedConnectionClosedRetried(self) -> None:
        """A pooled connection the server closed meanwhile is replaced, even for one server."""
        h = Harness(self, ("s1",), retries=0)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, _ = h.connect()
        server.dataReceived(OK)
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server.connectionLost(DONE)
        server2, _ = h.connect()
        server2.dataReceived(OK)
        self.assertEqual(client.value(), OK + OK)

    def test_invalidResponse(self) -> None:
        """A garbage response head is a 502."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")
        self.assertAnswered(client, 502)
        server.connectionLost(DONE)

    def test_serverTimeout(self) -> None:
        """A server silent past timeoutServer gets 504, and its connection is dropped."""
        h = Harness(self, timeoutServer=1)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        h.reactor.advance(0.5)
        self.assertEqual(client.value(), b"")
        for _ in range(4):
            h.reactor.advance(0.25)
        self.assertAnswered(client, 504)
        self.assertTrue(serverSide.disconnecting)
        self.assertEqual(h.logged[0]["termination"], "sH")

    def test_clientGoneMidResponse(self) -> None:
        """A client that leaves mid-response closes the server connection."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        proto.connectionLost(LOST)
        self.assertTrue(serverSide.disconnecting)
        self.assertEqual(h.factory.pool.idleCount(), 0)
        self.assertEqual(h.logged[0]["termination"], "CD")

    def test_clientGoneWhileConnecting(self) -> None:
        """A client that leaves while the server connect is pending cancels it."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        proto.connectionLost(LOST)
        self.assertTrue(h.endpoints["s1"].attempts[0].cancelled)

    def test_serverGoneMidResponse(self) -> None:
        """A server that leaves mid-response drops the client connection."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        server.connectionLost(LOST)
        self.assertTrue(client.disconnected)
        self.assertEqual(h.logged[0]["termination"], "SD")


class InterimAndBodylessTests(SynchronousTestCase):
    """
    1xx, HEAD, 204 and 304 responses.
    """

    def test_continue(self) -> None:
        """100 Continue is passed on, then the final response."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(client.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        proto.dataReceived(b"hi")
        self.assertTrue(serverSide.value().endswith(b"\r\n\r\nhi"))
        server.dataReceived(OK)
        self.assertTrue(client.value().endswith(OK))

    def test_noInterimToHTTP10(self) -> None:
        """An HTTP/1.0 client never gets a 1xx response, only the final one."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
        server, serverSide = h.connect()
        server.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(client.value(), b"")
        server.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 "))

    def test_headResponse(self) -> None:
        """A HEAD response has no body even with a Content-Length; the connection is reused."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, _ = h.connect()
        server.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        self.assertEqual(h.factory.pool.idleCount(), 1)
        self.assertIn(b"Content-Length: 1000", client.value())

    def test_noContent(self) -> None:
        """204 and 304 responses have no body."""
        h = Harness(self)
        proto, client = h.accept()
        for code in (204, 304):
            proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            if code == 204:
                server, _ = h.connect()
            server.dataReceived(b"HTTP/1.1 %d X\r\n\r\n" % code)
            self.assertEqual(h.factory.pool.idleCount(), 1)
        self.assertEqual(len(h.logged), 2)

    def test_upgradeTunnel(self) -> None:
        """A 101 answer to an Upgrade request turns the connection into a tunnel."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: k\r\n\r\n"
        )
        server, serverSide = h.connect()
        _, headers = head(serverSide)
        self.assertEqual(headers[b"upgrade"], b"websocket")
        self.assertEqual(headers[b"connection"], b"Upgrade")
        server.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhi")
        _, headers = head(client)
        self.assertEqual(headers[b"upgrade"], b"websocket")
        self.assertTrue(client.value().endswith(b"\r\n\r\nhi"))
        proto.dataReceived(b"from client")
        self.assertTrue(serverSide.value().endswith(b"from client"))
        server.dataReceived(b"from server")
        self.assertTrue(client.value().endswith(b"from server"))
        server.connectionLost(DONE)
        self.assertTrue(client.disconnecting)

    def test_tunnelTimeout(self) -> None:
        """A tunnel idle past timeoutTunnel is closed."""
        h = Harness(self, frontendArgs={"timeoutTunnel": 4})
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
        for _ in range(10):
            h.reactor.advance(1)
        self.assertTrue(client.disconnected)


class FrontendConfigTests(SynchronousTestCase):
    """
    L{Frontend} checks its arguments.
    """

    def test_needsBackend(self) -> None:
        """A frontend without default or routes is a ConfigError."""
        self.assertRaises(ConfigError, Frontend, "tcp:0")

    def test_defaultIsLastRoute(self) -> None:
        """Without a default, the last route's backend is the default."""
        b = Backend("b", [Server("s", "127.0.0.1:1")])
        self.assertIs(Frontend("tcp:0", [Route(pathBegins("/"), b)]).default, b)

    def test_badArguments(self) -> None:
        """Non-string endpoints, non-Route routes and non-Backend defaults are ConfigErrors."""
        b = Backend("b", [Server("s", "127.0.0.1:1")])
        self.assertRaises(ConfigError, Frontend, 8080, default=b)  # type: ignore[arg-type]
        self.assertRaises(ConfigError, Frontend, "tcp:0", ["x"], default=b)  # type: ignore[list-item]
        self.assertRaises(ConfigError, Frontend, "tcp:0", default="b")  # type: ignore[arg-type]

    def test_backends(self) -> None:
        """backends() lists each routed and default backend once."""
        a = Backend("a", [Server("s", "127.0.0.1:1")])
        b = Backend("b", [Server("t", "127.0.0.1:2")])
        fe = Frontend("tcp:0", [Route(pathBegins("/a"), a), Route(pathBegins("/b"), a)], default=b)
        self.assertEqual(list(fe.backends()), [a, b])


class ConnectionTokenTests(SynchronousTestCase):
    """
    The Connection header cannot remove the headers that frame the body
    (request smuggling), in either direction.
    """

    def test_connectionCannotDropContentLength(self) -> None:
        """'Connection: content-length' does not remove the framing the body is forwarded with."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length, host\r\n"
            b"Content-Length: 5\r\n\r\nhello"
        )
        server, serverSide = h.connect()
        line, headers = head(serverSide)
        self.assertEqual(headers[b"content-length"], b"5")
        self.assertEqual(headers[b"host"], b"a")
        self.assertTrue(serverSide.value().endswith(b"\r\n\r\nhello"))
        server.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def test_responseCannotDropContentLength(self) -> None:
        """A server's 'Connection: content-length' does not strip the length sent to the client."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok")
        line, headers = head(client)
        self.assertEqual(headers[b"content-length"], b"2")


class ForwardedProtoTests(SynchronousTestCase):
    def test_forwardedProtoNotSpoofed(self) -> None:
        """The client's own X-Forwarded-Proto is dropped; the server sees lbkit's only."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n")
        server, serverSide = h.connect()
        values = [
            line.split(b":", 1)[1].strip()
            for line in serverSide.value().split(b"\r\n\r\n")[0].split(b"\r\n")
            if line.lower().startswith(b"x-forwarded-proto:")
        ]
        self.assertEqual(values, [b"http"])
        server.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")


class ConnectTimeoutTests(SynchronousTestCase):
    def test_connectTimeoutIs503(self) -> None:
        """A connect that times out (the connector's own timeout) answers 503 sC, as documented."""
        h = Harness(self, retries=0)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        h.endpoints["s1"].fail(ConnectTimeoutError())
        self.assertTrue(client.value().startswith(b"HTTP/1.1 503 "), client.value()[:40])
        self.assertEqual(h.logged[-1]["termination"], "sC")


class NeverReadingClientTests(SynchronousTestCase):
    def test_closingConnectionIsAborted(self) -> None:
        """A connection lbkit closes is aborted after timeoutClient if the client never reads."""
        h = Harness(self, frontendArgs={"timeoutClient": 5.0})
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(client.disconnecting)
        self.assertFalse(client.disconnected)
        h.reactor.advance(5.0)
        self.assertTrue(client.disconnected)  # aborted
        proto.connectionLost(Failure(ConnectionError()))


class UnrequestedUpgradeTests(SynchronousTestCase):
    def test_unrequested101Is502(self) -> None:
        """A 101 answer to a request that did not ask to upgrade is refused with 502, no tunnel."""
        h = Harness(self, retries=0)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n")
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 "), client.value()[:40])


class TransferCodingTests(SynchronousTestCase):
    def test_transferCodingsRefused(self) -> None:
        """A 'gzip, chunked' request body is refused with 400 (as HAProxy refuses it), and no server is tried."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        )
        self.assertTrue(client.value().startswith(b"HTTP/1.1 400 "), client.value()[:40])
        self.assertEqual(h.endpoints["s1"].pending, [])


class PassiveHealthReportTests(SynchronousTestCase):
    def test_goodResponseReportedAsLayer7(self) -> None:
        """The http proxy reports a good response as a Layer7 success, so layer7 passive checks reset."""
        h = Harness(self)
        seen: list[tuple[bool, str]] = []
        h.servers["s1"].addObserver(lambda server, ok, reason: seen.append((ok, reason)))
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(seen[0], (True, ""))  # the connect
        self.assertTrue(seen[1][0] and seen[1][1].startswith("Layer7"), seen)


# -- hardening finding 10 (http mode) -------------------------------------------


GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def oneServer(
    testCase: SynchronousTestCase, frontendArgs: dict[str, Any] | None = None, **serverArgs: Any
) -> tuple[HTTPHarness, Server]:
    """An L{HTTPHarness} over one server C{s1} made with C{serverArgs}; closed in cleanup."""
    server = Server("s1", FakeEndpoint(IPv4Address("TCP", "192.0.2.1", 80)), **serverArgs)
    frontend = Frontend("tcp:8080", default=Backend("be", [server]), name="fe", **(frontendArgs or {}))
    harness = HTTPHarness(frontend, clientAddress=CLIENT, frontendAddress=FRONT)

    def close() -> None:
        harness.close()
        testCase.assertEqual(harness.reactor.getDelayedCalls(), [])

    testCase.addCleanup(close)
    return harness, server


class SessionTests(SynchronousTestCase):
    """
    A request on a server connection is one of that server's sessions,
    which C{onMarkedDown="shutdown-sessions"} cuts.
    """

    def test_providesISession(self) -> None:
        """The http frontend protocol is an ISession."""
        h = Harness(self)
        proto, _ = h.accept()
        assertProvides(self, ISession, proto)

    def test_sessionWhileOnServer(self) -> None:
        """A request is in its server's sessions from when it is sent until its response ends."""
        h = Harness(self)
        proto, _ = h.accept()
        proto.dataReceived(GET)
        server = h.servers["s1"]
        self.assertEqual(server.sessions, set())  # still connecting
        conn, _ = h.connect()
        self.assertEqual(server.sessions, {proto})
        conn.dataReceived(OK)
        self.assertEqual(server.sessions, set())

    def test_abortSession(self) -> None:
        """abortSession cuts both connections, logging SK with the bytes sent so far."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(GET)
        conn, serverSide = h.connect()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        proto.abortSession()
        self.assertTrue(client.disconnected)
        self.assertTrue(serverSide.disconnected)
        [fields] = h.logged
        self.assertEqual((fields["termination"], fields["bytes"]), ("SK", len(client.value())))
        self.assertEqual(h.servers["s1"].sessions, set())
        proto.abortSession()  # a second call does no harm
        self.assertEqual(len(h.logged), 1)

    def test_abortSessionBetweenRequests(self) -> None:
        """Between requests abortSession does nothing (the connection is not on a server)."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(GET)
        conn, _ = h.connect()
        conn.dataReceived(OK)
        proto.abortSession()
        self.assertFalse(client.disconnecting)

    def test_shutdownSessions(self) -> None:
        """A health check with onMarkedDown="shutdown-sessions" cuts the response in flight (SK)."""
        h = Harness(self)
        server = h.servers["s1"]
        check = FakeCheck(interval=1.0, fall=1, initState="fully-up", onMarkedDown="shutdown-sessions")
        monitor = HealthMonitor(server, check, h.reactor)
        monitor.start()
        self.addCleanup(monitor.stop)
        h.reactor.advance(0)
        proto, client = h.accept()
        proto.dataReceived(GET)
        conn, serverSide = h.connect()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        check.failLast()
        self.assertTrue(client.disconnected)
        self.assertTrue(serverSide.disconnected)
        self.assertEqual(h.logged[0]["termination"], "SK")


class RequestBodyDeadlineTests(SynchronousTestCase):
    """
    C{timeoutRequestBody}: the whole request body must arrive within that
    many seconds of going to the server.
    """

    def trickle(self, h: Harness, seconds: int) -> tuple[HTTPFrontendProtocol, HalfCloseableStringTransport,
                                                         HalfCloseableStringTransport]:
        """POST a 100-byte body, one byte a second for C{seconds} seconds."""
        proto, client = h.accept()
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        conn, serverSide = h.connect()
        for _ in range(seconds):
            h.reactor.advance(1)
            if client.disconnecting:
                break
            proto.dataReceived(b"x")
        return proto, client, serverSide

    def test_trickleCut(self) -> None:
        """A body still trickling when the deadline passes gets 408, and its server connection is aborted."""
        h = Harness(self, frontendArgs=dict(timeoutRequestBody=5))
        proto, client, serverSide = self.trickle(h, 4)
        self.assertEqual(client.value(), b"")
        self.trickleMore(h, proto, client, 2)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 408 "), client.value()[:40])
        self.assertTrue(client.disconnecting)
        self.assertTrue(serverSide.disconnected)
        [fields] = h.logged
        self.assertEqual((fields["status"], fields["termination"]), (408, "cD"))

    def trickleMore(self, h: Harness, proto: HTTPFrontendProtocol, client: HalfCloseableStringTransport,
                    seconds: int) -> None:
        for _ in range(seconds):
            h.reactor.advance(1)
            if client.disconnecting:
                return
            proto.dataReceived(b"x")

    def test_noDeadlineByDefault(self) -> None:
        """Without timeoutRequestBody, a body that keeps trickling keeps going."""
        h = Harness(self)
        proto, client, serverSide = self.trickle(h, 60)
        self.assertEqual(client.value(), b"")
        self.assertFalse(serverSide.disconnecting)
        self.assertTrue(serverSide.value().endswith(b"x" * 60))
        proto.dataReceived(b"x" * 40)
        h.harness.servers[0].respond(OK)
        self.assertEqual(client.value(), OK)

    def test_cutOnceAnswerStarted(self) -> None:
        """If the server already answered part of its response, the exchange is cut, cD."""
        h = Harness(self, frontendArgs=dict(timeoutRequestBody=2))
        proto, client = h.accept()
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nx")
        conn, serverSide = h.connect()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        self.trickleMore(h, proto, client, 4)
        self.assertTrue(client.disconnected)
        self.assertTrue(serverSide.disconnected)
        self.assertEqual(h.logged[0]["termination"], "cD")

    def test_completeBodyUnaffected(self) -> None:
        """A body that arrived in time is not cut later, however slow the server is to answer."""
        h = Harness(self, frontendArgs=dict(timeoutRequestBody=2), timeoutServer=20)
        proto, client = h.accept()
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
        conn, _ = h.connect()
        h.reactor.advance(10)
        conn.dataReceived(OK)
        self.assertEqual(client.value(), OK)

    def test_config(self) -> None:
        """timeoutRequestBody must be a number of seconds over 0, or None."""
        b = Backend("b", [Server("s", "127.0.0.1:1")])
        self.assertIsNone(Frontend("tcp:0", default=b).timeoutRequestBody)
        self.assertEqual(Frontend("tcp:0", default=b, timeoutRequestBody=3).timeoutRequestBody, 3.0)
        for bad in (0, -1, "soon"):
            self.assertRaises(ConfigError, Frontend, "tcp:0", default=b, timeoutRequestBody=bad)


class AbortedResponseBytesTests(SynchronousTestCase):
    """
    A response cut short logs the bytes that reached the client, not 0.
    """

    def test_serverGone(self) -> None:
        """The server leaves mid-body: the log has the head and body bytes passed on."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(GET)
        conn, _ = h.connect()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        conn.connectionLost(LOST)
        self.assertEqual((h.logged[0]["termination"], h.logged[0]["bytes"]), ("SD", len(client.value())))

    def test_clientGone(self) -> None:
        """The client leaves mid-body: the log has what was sent to it."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(GET)
        conn, _ = h.connect()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        conn.dataReceived(b"defg")
        proto.connectionLost(LOST)
        self.assertEqual((h.logged[0]["termination"], h.logged[0]["bytes"]), ("CD", len(client.value())))

    def test_serverTimeout(self) -> None:
        """The server falls silent mid-body past timeoutServer: sD, with the bytes sent."""
        h = Harness(self, timeoutServer=1)
        proto, client = h.accept()
        proto.dataReceived(GET)
        conn, _ = h.connect()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        for _ in range(8):
            h.reactor.advance(0.25)
        self.assertEqual((h.logged[0]["termination"], h.logged[0]["bytes"]), ("sD", len(client.value())))
        self.assertGreater(h.logged[0]["bytes"], 3)


class QueueAndResourceTests(SynchronousTestCase):
    """
    The time spent queued is logged when the queue times out, and lbkit's
    own lack of resources is answered 503 RC without blaming the server.
    """

    def test_queueTimeoutLogsTw(self) -> None:
        """A request that times out in the queue logs Tw, the time it waited."""
        h, _ = oneServer(self, maxconn=1)
        h.frontend.default.timeoutQueue = 3.0
        first = h.request(GET)
        h.connect()
        second = h.request(GET)
        h.reactor.advance(3)
        self.assertTrue(second.received().startswith(b"HTTP/1.1 503 "))
        [fields] = h.logged
        self.assertEqual((fields["termination"], fields["Tw"]), ("sQ", 3000))
        first.lose()

    def test_resourceErrorIs503RC(self) -> None:
        """A connect that fails for lack of file descriptors gets 503 RC; the server is not charged."""
        h = Harness(self, retries=0)
        proto, client = h.accept()
        proto.dataReceived(GET)
        h.endpoints["s1"].fail(OSError(errno.EMFILE, "Too many open files"))
        self.assertTrue(client.value().startswith(b"HTTP/1.1 503 "), client.value()[:40])
        self.assertEqual(h.logged[0]["termination"], "RC")
        server = h.servers["s1"]
        self.assertEqual((server.connectFailures, server.retries, server.state), (0, 0, ServerState.UP))

    def test_resourceErrorRetried(self) -> None:
        """After a resource failure the request is retried, and the retry is not counted against the server."""
        h = Harness(self, ("s1", "s2"), retries=1)
        proto, client = h.accept()
        proto.dataReceived(GET)
        [first] = [n for n, e in h.endpoints.items() if e.pending]
        h.endpoints[first].fail(OSError(errno.EMFILE, "Too many open files"))
        [second] = [n for n, e in h.endpoints.items() if e.pending]
        conn, _ = h.connect(second)
        conn.dataReceived(OK)
        self.assertEqual(client.value(), OK)
        self.assertEqual(h.servers[first].retries, 0)


class SendProxyUnitTests(SynchronousTestCase):
    """
    C{Server(sendProxy=...)}: a new server connection starts with the
    client's PROXY header and serves that client connection only.
    """

    def test_headerFirst(self) -> None:
        """The PROXY header, naming the client and the address it reached, comes before the request."""
        h, _ = oneServer(self, sendProxy=1)
        h.request(GET)
        server = h.connect()
        self.assertTrue(
            server.received().startswith(b"PROXY TCP4 198.51.100.7 127.0.0.1 51000 8080\r\nGET / HTTP/1.1\r\n"),
            server.received()[:80],
        )

    def test_v2(self) -> None:
        """sendProxy=2 sends a v2 header."""
        h, _ = oneServer(self, sendProxy=2)
        h.request(GET)
        server = h.connect()
        self.assertTrue(server.received().startswith(formatV2(CLIENT, FRONT) + b"GET / "))

    def test_privateConnection(self) -> None:
        """The connection is kept for its client connection only: another client gets a new one."""
        h, s1 = oneServer(self, sendProxy=1)
        a = h.request(GET)
        serverA = h.connect()
        serverA.respond(OK)
        self.assertEqual(h.factory.pool.idleCount(), 0)
        b = h.request(GET, peer=IPv4Address("TCP", "198.51.100.8", 52000))
        serverB = h.connect()
        self.assertTrue(serverB.received().startswith(b"PROXY TCP4 198.51.100.8 "))
        serverB.respond(OK)
        a.send(GET)
        self.assertEqual(h.pending(), [])
        self.assertEqual(serverA.received().count(b"GET / "), 2)
        serverA.respond(OK)
        self.assertEqual(a.received(), OK + OK)
        self.assertEqual(b.received(), OK)
        a.lose()
        self.assertTrue(serverA.transport.disconnecting)
        self.assertFalse(serverB.transport.disconnecting)

    def test_closedWhenClientCloses(self) -> None:
        """After the last request of a client connection (Connection: close), its server connection closes."""
        h, _ = oneServer(self, sendProxy=1)
        h.request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        server = h.connect()
        server.respond(OK)
        self.assertTrue(server.transport.disconnecting)

    def test_noPoolNoKeeping(self) -> None:
        """With maxIdlePerServer=0 no connection is kept, private ones included."""
        h, _ = oneServer(self, dict(maxIdlePerServer=0), sendProxy=1)
        h.request(GET)
        server = h.connect()
        server.respond(OK)
        self.assertTrue(server.transport.disconnecting)


class AcceptProxyUnitTests(SynchronousTestCase):
    """
    C{acceptProxy=True}: each connection's PROXY header is read before
    HTTP, through the factory the frontend listens with.
    """

    def setUp(self) -> None:
        self.endpoint = FakeEndpoint(IPv4Address("TCP", "192.0.2.1", 80))
        self.frontend = Frontend(
            "tcp:8080", default=Backend("be", [Server("s1", self.endpoint)]), name="fe", acceptProxy=True,
            timeoutClient=5,
        )
        self.reactor = MemoryReactorClock()
        self.proxyFactory = self.frontend.buildFactory(self.reactor)
        self.factory = AcceptProxyFactory(self.proxyFactory, self.proxyFactory)

    def connect(self) -> tuple[Any, HalfCloseableStringTransport]:
        protocol = self.factory.buildProtocol(CLIENT)
        transport = HalfCloseableStringTransport(hostAddress=FRONT, peerAddress=CLIENT)
        protocol.makeConnection(transport)
        self.addCleanup(self.cleanUp, protocol, transport)
        return protocol, transport

    def cleanUp(self, protocol: Any, transport: HalfCloseableStringTransport) -> None:
        protocol.connectionLost(DONE)
        self.assertEqual(self.proxyFactory.connections, set())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_headerInPieces(self) -> None:
        """A header arriving in pieces names the client; the request after it is served."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"PROXY TCP4 203.0.113.9 19")
        self.assertEqual(self.endpoint.attempts, [])
        protocol.dataReceived(b"2.0.2.7 40000 80\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        inner = protocol.wrapped
        self.assertIsInstance(inner, HTTPFrontendProtocol)
        self.assertEqual(inner.client, IPv4Address("TCP", "203.0.113.9", 40000))
        self.assertEqual(inner.transport.getHost(), IPv4Address("TCP", "192.0.2.7", 80))
        self.assertEqual(len(self.endpoint.pending), 1)
        self.assertEqual(self.proxyFactory.connections, {inner})

    def test_localKeepsRealAddress(self) -> None:
        """A v2 LOCAL header (a health check from the balancer) keeps the connection's own addresses."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00" + GET)
        self.assertEqual(protocol.wrapped.client, CLIENT)

    def test_noHeaderCut(self) -> None:
        """A connection that starts with anything else is aborted, with no answer and no server."""
        protocol, transport = self.connect()
        protocol.dataReceived(GET)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")
        self.assertIsNone(protocol.wrapped)
        self.assertEqual(self.proxyFactory.connections, set())

    def test_headerTimeout(self) -> None:
        """Waiting for the header is bounded by timeoutClient."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"PROXY ")
        self.assertEqual(self.proxyFactory.connections, {protocol})
        self.reactor.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(protocol.wrapped)
        self.assertEqual(self.proxyFactory.connections, set())

    def test_stopWhileWaiting(self) -> None:
        """A frontend that stops closes the connections still waiting for their header."""
        protocol, transport = self.connect()
        self.proxyFactory.stopGracefully()
        self.assertTrue(transport.disconnecting)

    def test_offPassesThrough(self) -> None:
        """With acceptProxy off (a reload may turn it off), connections go to the frontend's protocol directly."""
        self.frontend.acceptProxy = False
        protocol = self.factory.buildProtocol(CLIENT)
        self.assertIsInstance(protocol, HTTPFrontendProtocol)

    def test_makeService(self) -> None:
        """The frontend listens through the PROXY header reader, outside TLS."""
        service: Any = self.frontend.makeService(self.reactor)
        self.assertIsInstance(service.factory, AcceptProxyFactory)


class ExchangeStateTests(SynchronousTestCase):
    """
    An exchange moves through the states of one table
    (L{lbkit.http._states.TRANSITIONS}), whichever way its request goes.
    """

    def test_everyStateEnds(self) -> None:
        """From every state, closing, aborting or losing the client ends the exchange."""
        for state in State:
            for event in ("close", "abort", "lost"):
                self.assertIs(TRANSITIONS[state][event], State.DONE, (state, event))

    def test_onlyDeclaredMoves(self) -> None:
        """Every move of the table goes to a state, and a request never goes back to HEAD before an answer."""
        self.assertEqual(set(TRANSITIONS), set(State))
        self.assertNotIn("next", TRANSITIONS[State.WAITING])
        self.assertNotIn("next", TRANSITIONS[State.SENT])
        self.assertEqual(TRANSITIONS[State.TUNNEL].keys(), {"close", "abort", "lost"})

    def test_keepAliveRequest(self) -> None:
        """A kept-alive request goes HEAD, WAITING, SENT, STREAMING and back to HEAD."""
        h = Harness(self)
        proto, client = h.accept()
        assert proto.exchange is not None
        seen = [proto.exchange.state]
        proto.dataReceived(GET)
        seen.append(proto.exchange.state)
        server, _ = h.connect()
        seen.append(proto.exchange.state)
        server.dataReceived(OK[:-2])
        seen.append(proto.exchange.state)
        server.dataReceived(OK[-2:])
        seen.append(proto.exchange.state)
        self.assertEqual(seen, [State.HEAD, State.WAITING, State.SENT, State.STREAMING, State.HEAD])

    def test_earlyAnswerDrains(self) -> None:
        """An answer before the request body ends goes to DRAINING until the body is read, then HEAD."""
        h = Harness(self)
        proto, client = h.accept()
        assert proto.exchange is not None
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12345")
        server, _ = h.connect()
        server.dataReceived(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        self.assertIs(proto.exchange.state, State.DRAINING)
        proto.dataReceived(b"67890")
        self.assertIs(proto.exchange.state, State.HEAD)
        self.assertEqual([f["status"] for f in h.logged], [413])

    def test_failureEnds(self) -> None:
        """A request no server can take is answered 503 and ends the exchange (DONE)."""
        h = Harness(self, retries=0)
        proto, client = h.accept()
        assert proto.exchange is not None
        proto.dataReceived(GET)
        h.endpoints["s1"].fail()
        self.assertIs(proto.exchange.state, State.DONE)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 503 "))
