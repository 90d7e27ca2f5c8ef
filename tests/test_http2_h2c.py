"""
h2c with prior knowledge: a cleartext http frontend (C{http2=True}, the
default) speaks HTTP/2 to a client whose first bytes are the HTTP/2
connection preface, and HTTP/1.1 to any other; over real sockets on
127.0.0.1, with the C{h2} package and curl as clients, next to HAProxy.
"""

from __future__ import annotations

import json
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import RemoteSettingsChanged, ResponseReceived
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lbkit.http import Route, pathBegins
from lbkit.http._h2 import H2FrontendProtocol
from lbkit.proxyproto import formatV1
from tests.helpers import requireBinary, runProcess, startHAProxy
from tests.test_http import Harness
from tests.test_http2 import H2Client
from tests.test_http_integration import HTTPTestCase, backend, reactor

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

HAPROXY = """
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
frontend fe
  bind {bind}
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  default_backend be
backend be
  server s1 127.0.0.1:%d
"""


class H2CTests(HTTPTestCase):
    """Prior-knowledge HTTP/2 on a plain tcp: frontend."""

    @inlineCallbacks
    def h2client(self, port: int, first: bytes = b"") -> Any:
        """An L{H2Client} on a plain TCP connection (after C{first}, a PROXY header); closed in cleanup."""
        client = H2Client()
        if first:
            made = client.connectionMade

            def connectionMade() -> None:
                client.transport.write(first)  # type: ignore[union-attr]
                made()

            client.connectionMade = connectionMade  # type: ignore[method-assign]
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        self.lost.append(client.closed)
        self.addCleanup(lambda: client.transport.loseConnection() if client.transport else None)  # type: ignore[attr-defined]
        return client

    @inlineCallbacks
    def curl(self, port: int, *args: str, path: str = "/") -> Any:
        curl = requireBinary("/usr/bin/curl")
        runner = yield runProcess(self, reactor, [curl, "-sS", *args, "-w", "\n%{http_version}",
                                                  f"http://127.0.0.1:{port}{path}"])
        self.assertEqual(runner.exitCode, 0, runner.output)
        body, version = runner.stdout.decode("latin-1").rsplit("\n", 1)
        return body, version

    @inlineCallbacks
    def test_h2Client(self) -> Any:
        """Concurrent streams from the h2 library are routed and forwarded with scheme http."""
        a = backend("a", [self.site("a1")[0]])
        b = backend("b", [self.site("b1")[0]])
        port = self.frontend([Route(pathBegins("/b"), b)], default=a)
        client = yield self.h2client(port)
        paths = ["/a/1", "/b/1", "/a/2", "/b/2"]
        results = yield gatherResults([client.request(p, scheme="http") for p in paths])
        self.assertEqual([status for status, _, _ in results], [200] * 4)
        infos = [json.loads(body) for _, _, body in results]
        self.assertEqual([(i["server"], i["uri"]) for i in infos],
                         [("b1" if p.startswith("/b") else "a1", p) for p in paths])
        self.assertEqual({i["headers"]["x-forwarded-proto"][0] for i in infos}, {"http"})
        self.assertEqual(infos[0]["headers"]["host"], ["a.example"])
        [factory] = self.frontendFactories()
        self.assertEqual((factory.total, factory.current, factory.requests), (1, 1, 4))

    @inlineCallbacks
    def test_curlPriorKnowledge(self) -> Any:
        """curl --http2-prior-knowledge gets HTTP/2; plain curl on the same port still gets HTTP/1.1."""
        port = self.frontend(default=backend("app", [self.site("app1")[0]]))
        body, version = yield self.curl(port, "--http2-prior-knowledge", path="/x?y=1")
        self.assertEqual(version, "2")
        info = json.loads(body)
        self.assertEqual((info["server"], info["method"], info["uri"]), ("app1", "GET", "/x?y=1"))
        self.assertEqual(info["headers"]["x-forwarded-proto"], ["http"])
        self.assertEqual(info["headers"]["host"], [f"127.0.0.1:{port}"])
        body, version = yield self.curl(port, path="/z")
        self.assertEqual((version, json.loads(body)["uri"]), ("1.1", "/z"))
        [factory] = self.frontendFactories()
        self.assertEqual((factory.total, factory.requests), (2, 2))

    @inlineCallbacks
    def test_curlPost(self) -> Any:
        """A request body goes through an h2c stream intact."""
        port = self.frontend(default=backend("app", [self.site("app1")[0]]))
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"x" * 200000)
        body, version = yield self.curl(port, "--http2-prior-knowledge", "--data-binary", "@" + path, path="/up")
        self.assertEqual(version, "2")
        self.assertEqual(json.loads(body)["length"], 200000)

    @inlineCallbacks
    def test_prefaceInPieces(self) -> Any:
        """A preface that arrives a few bytes at a time is still recognised."""
        port = self.frontend(default=backend("app", [self.site("app1")[0]]))
        client = H2Client()
        client.connectionMade = lambda: None  # type: ignore[method-assign]
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        self.lost.append(client.closed)
        self.addCleanup(lambda: client.transport.loseConnection() if client.transport else None)  # type: ignore[attr-defined]
        client.conn.initiate_connection()
        data = client.conn.data_to_send()
        self.assertTrue(data.startswith(PREFACE))
        for i in range(0, 30, 5):
            client.transport.write(data[i : i + 5])  # type: ignore[union-attr]
            yield self.turn()
        client.transport.write(data[30:])  # type: ignore[union-attr]
        status, _, body = yield client.request("/p", scheme="http")
        self.assertEqual((status, json.loads(body)["uri"]), (200, "/p"))

    def turn(self) -> Any:
        """One reactor turn, so that each piece is a read of its own."""
        return task.deferLater(reactor, 0, lambda: None)

    @inlineCallbacks
    def test_behindProxyHeader(self) -> Any:
        """With acceptProxy, the PROXY header comes first, then the preface; the header's client is forwarded."""
        port = self.frontend(default=backend("app", [self.site("app1")[0]]), acceptProxy=True)
        header = formatV1(IPv4Address("TCP", "192.0.2.7", 4000), IPv4Address("TCP", "192.0.2.1", 80))
        client = yield self.h2client(port, header)
        status, _, body = yield client.request("/", scheme="http")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["headers"]["x-forwarded-for"], ["192.0.2.7"])

    @inlineCallbacks
    def test_http2False(self) -> Any:
        """With http2=False the preface is a bad request (505), as before, and reaches no server."""
        serverPort, site = self.site("app1")
        port = self.frontend(default=backend("app", [serverPort]), http2=False)
        c = yield self.client(port)
        c.send(PREFACE)
        [(response, _)] = yield c.responses(1)
        yield c.closed
        self.assertEqual(response.code, 505)
        self.assertEqual(site.connections, 0)

    @inlineCallbacks
    def test_notFirst(self) -> Any:
        """The preface after a first HTTP/1.1 request is a bad request: h2c is for a connection's first bytes."""
        port = self.frontend(default=backend("app", [self.site("app1")[0]]))
        c = yield self.client(port)
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        c.send(PREFACE)
        [(first, _), (second, _)] = yield c.responses(2)
        self.assertEqual((first.code, second.code), (200, 505))

    @inlineCallbacks
    def test_sameAsHAProxy(self) -> Any:
        """HAProxy detects the preface on a mode http frontend too: curl sees the same through both."""
        serverPort, _ = self.site("app1")
        haproxy, _ = startHAProxy(self, reactor, HAPROXY % serverPort)
        port = self.frontend(default=backend("app", [serverPort]))
        seen = []
        for target in (haproxy, port):
            body, version = yield self.curl(target, "--http2-prior-knowledge", "-H", "X-Test: 1", path="/p?q")
            info = json.loads(body)
            headers = info["headers"]
            seen.append((version, info["method"], info["uri"], headers["x-test"], headers["x-forwarded-proto"],
                         headers["x-forwarded-for"]))
        self.assertEqual(seen[0], ("2", "GET", "/p?q", ["1"], ["http"], ["127.0.0.1"]))
        self.assertEqual(seen[1], seen[0])


class HandOverTests(SynchronousTestCase):
    """The hand-over from HTTP/1.1 to HTTP/2, on fakes: counted once, no timer left."""

    def test_handedOver(self) -> None:
        """The preface makes the connection an HTTP/2 one, counted once; its end leaves nothing behind."""
        h = Harness(self)
        proto, transport = h.accept()
        client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        proto.dataReceived(client.data_to_send())
        events = client.receive_data(transport.value())
        self.assertTrue(any(isinstance(e, RemoteSettingsChanged) for e in events))
        [h2] = h.factory.connections
        self.assertIsInstance(h2, H2FrontendProtocol)
        self.assertEqual((h.factory.total, h.factory.current), (1, 1))
        self.assertIs(proto.h2c, h2)
        transport.clear()
        client.send_headers(1, [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"),
                                (b":authority", b"a")], end_stream=True)
        proto.dataReceived(client.data_to_send())
        server, serverTransport = h.connect()
        self.assertIn(b"X-Forwarded-Proto: http\r\n", serverTransport.value())
        server.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        events = client.receive_data(transport.value())
        [response] = [e for e in events if isinstance(e, ResponseReceived)]
        self.assertEqual(dict(response.headers)[b":status"], b"200")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((h.factory.total, h.factory.current, h.factory.connections), (1, 0, set()))
        # (the harness's cleanup checks that no timer is left, once the pool is closed)

    def test_http2Off(self) -> None:
        """With http2=False the same bytes are a 505."""
        h = Harness(self, frontendArgs={"http2": False})
        proto, transport = h.accept()
        proto.dataReceived(PREFACE)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 505 "))
        self.assertEqual(h.factory.connections, {proto})
