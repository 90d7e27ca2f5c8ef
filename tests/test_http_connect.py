"""
HTTP/1.1 C{CONNECT} (lbkit.http._tunnel): refused with 405 unless a route
says C{allowConnect=True}, then tunnelled after the server's 2xx; over
real sockets on 127.0.0.1, and next to HAProxy for the same requests.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import gatherResults, inlineCallbacks

from lbkit.error import ConfigError
from lbkit.http import HTTPFrontendProtocol, HTTPProxyFactory, Route, methodIs, pathBegins
from tests.helpers import startHAProxy
from tests.test_http_integration import HTTPTestCase, OneShot, backend, reactor

CONNECT = b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"

HAPROXY = """
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
  timeout tunnel 5s
frontend fe
  bind {bind}
  default_backend be
backend be
  server s1 127.0.0.1:%d
"""


class Established(OneShot):
    """A server that answers a CONNECT with 200, then echoes every byte (the tunnel), recording the head."""

    heads: list[bytes] = []

    def __init__(self) -> None:
        OneShot.__init__(self, self.established)

    def established(self, p: OneShot) -> None:
        assert self.transport is not None
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        self.heads.append(head)
        self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.dataReceived = self.transport.write  # type: ignore[method-assign,assignment]
        if rest:
            self.transport.write(rest)


class Refusing(OneShot):
    """A proxy that wants credentials: 407 with a body, keeping the connection."""

    def __init__(self) -> None:
        OneShot.__init__(self, self.refuse)

    def refuse(self, p: OneShot) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 4\r\n\r\nauth")


class Fields(HTTPFrontendProtocol):
    """Records the access-log fields of every request."""

    seen: list[dict[str, Any]] = []

    def finished(self, fields: dict[str, Any]) -> None:
        self.seen.append(fields)


class FieldsFactory(HTTPProxyFactory):
    protocol = Fields


class ConnectTests(HTTPTestCase):
    """A CONNECT is refused unless its route allows it; an allowed one tunnels."""

    def setUp(self) -> None:
        HTTPTestCase.setUp(self)
        Established.heads = []
        Fields.seen = []

    @inlineCallbacks
    def test_refused405(self) -> Any:
        """Without allowConnect: 405 with Allow, Connection: close, logged (PR), and no server is asked."""
        serverPort, site = self.site("app")
        port = self.frontend(default=backend("app", [serverPort]), factory=FieldsFactory)
        c = yield self.client(port)
        c.send(CONNECT + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        [(response, body)] = yield c.responses(1)
        yield c.closed
        self.assertEqual(response.code, 405)
        headers = {n.lower(): v for n, v in response.headers}
        self.assertEqual(headers[b"allow"], b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE")
        self.assertEqual(headers[b"connection"], b"close")
        self.assertEqual(body, b"This method is not allowed here.\n")
        self.assertEqual(site.connections, 0)
        [fields] = Fields.seen
        self.assertEqual((fields["status"], fields["termination"], fields["server"]), (405, "PR", "<NOSRV>"))
        self.assertEqual(fields["request"], "CONNECT a.example:443 HTTP/1.1")
        [factory] = self.frontendFactories()
        self.assertEqual(factory.responses["4xx"], 1)

    @inlineCallbacks
    def test_refusedByOtherRoutes(self) -> Any:
        """A route that does not allow CONNECT refuses it even if another (not taking it) does."""
        serverPort, site = self.site("app")
        tunnelPort, _ = self.custom(Established)
        port = self.frontend([Route(pathBegins("/x"), backend("t", [tunnelPort]), allowConnect=True)],
                             default=backend("app", [serverPort]))
        c = yield self.client(port)
        c.send(CONNECT)
        [(response, _)] = yield c.responses(1)
        self.assertEqual(response.code, 405)
        self.assertEqual((site.connections, Established.heads), (0, []))

    @inlineCallbacks
    def test_allowedTunnels(self) -> Any:
        """With allowConnect, the CONNECT goes to the route's server and bytes flow both ways after its 200."""
        tunnelPort, _ = self.custom(Established)
        port = self.frontend([Route(methodIs("CONNECT"), backend("t", [tunnelPort]), allowConnect=True)],
                             factory=FieldsFactory)
        c = yield self.client(port)
        c.send(CONNECT + b"early \x00")
        yield c.waitData(b"early \x00")
        head, tunnel = c.raw.split(b"\r\n\r\n", 1)
        self.assertEqual(head, b"HTTP/1.1 200 Connection established")
        self.assertEqual(tunnel, b"early \x00")
        c.transport.write(b"\xffmore")
        yield c.waitData(b"\xffmore")
        [head] = Established.heads
        self.assertTrue(head.startswith(b"CONNECT a.example:443 HTTP/1.1\r\n"), head)
        self.assertNotIn(b"upgrade", head.lower())
        c.transport.loseConnection()
        yield c.closed
        yield gatherResults(list(self.lost))
        [fields] = Fields.seen
        self.assertEqual((fields["status"], fields["server"]), (200, "t1"))

    @inlineCallbacks
    def test_allowedButRefused(self) -> Any:
        """A server's non-2xx answer to an allowed CONNECT is a normal response: no tunnel, the connection goes on."""
        refusing, _ = self.custom(Refusing)
        app, _ = self.site("app")
        port = self.frontend([Route(methodIs("CONNECT"), backend("t", [refusing]), allowConnect=True)],
                             default=backend("app", [app]))
        c = yield self.client(port)
        c.send(CONNECT)
        c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        [(first, body), (second, _)] = yield c.responses(2)
        self.assertEqual((first.code, body, second.code), (407, b"auth", 200))

    @inlineCallbacks
    def test_serverEndsTunnel(self) -> Any:
        """The server closing the tunnel closes the client connection too."""
        tunnelPort, servers = self.custom(Established)
        port = self.frontend([Route(methodIs("CONNECT"), backend("t", [tunnelPort]), allowConnect=True)])
        c = yield self.client(port)
        c.send(CONNECT + b"x")
        yield c.waitData(b"x")
        [server] = servers.built
        server.transport.loseConnection()  # type: ignore[union-attr]
        yield c.closed

    @inlineCallbacks
    def test_sameAsHAProxy(self) -> Any:
        """
        HAProxy forwards a CONNECT and tunnels after the 2xx: a route with
        allowConnect gives the client the same bytes (lbkit is stricter
        only without it).
        """
        tunnelPort, _ = self.custom(Established)
        haproxy, _ = startHAProxy(self, reactor, HAPROXY % tunnelPort)
        port = self.frontend([Route(methodIs("CONNECT"), backend("t", [tunnelPort]), allowConnect=True)])
        seen = []
        for target in (haproxy, port):
            c = yield self.client(target)
            c.send(CONNECT + b"ping")
            yield c.waitData(b"ping")
            c.transport.write(b"pong")
            yield c.waitData(b"pong")
            head, tunnel = c.raw.split(b"\r\n\r\n", 1)
            seen.append((head.split(b"\r\n")[0], tunnel))
            c.transport.loseConnection()
        self.assertEqual(seen[0], (b"HTTP/1.1 200 Connection established", b"pingpong"))
        self.assertEqual(seen[1], seen[0])
        self.assertEqual([h.split(b"\r\n")[0] for h in Established.heads], [b"CONNECT a.example:443 HTTP/1.1"] * 2)

    def test_allowConnectChecked(self) -> None:
        """allowConnect must be a bool: else a ConfigError naming the site file's line."""
        with self.assertRaises(ConfigError) as e:
            Route(pathBegins("/"), backend("b", [1]), allowConnect="yes")  # type: ignore[arg-type]
        self.assertIn("test_http_connect.py:", str(e.exception))
        self.assertIn("allowConnect must be True or False", str(e.exception))
