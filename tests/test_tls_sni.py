"""
SNI pass-through in tcp mode: the ClientHello parser, routing with fakes,
and real TLS clients (Python's ssl module, openssl s_client) reaching the
server their SNI names, end to end, through lbkit.
"""

from __future__ import annotations

import ssl
import struct
import sys
import textwrap
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbkit import Backend, Server, tcp
from lbkit.error import ConfigError
from lbkit.proxyproto import formatV1
from lbkit.tcp._sni import (
    ClientHello,
    ClientHelloParser,
    Inspector,
    InvalidClientHello,
    validHostName,
)
from lbkit.testing import HalfCloseableStringTransport
from lbkit.tls import loadKeyPair
from tests.helpers import (
    Collector,
    TrackingFactory,
    TrackingProxyFactory,
    listen,
    requireBinary,
    runProcess,
)
from tests.test_http_integration import reactor
from tests.test_tls_pki import makePKI


def clientHello(serverName: str | None = "a.example", alpn: tuple[str, ...] = ("h2", "http/1.1")) -> bytes:
    """The first bytes a Python ssl client sends for C{serverName}."""
    context = ssl.create_default_context()
    if serverName is None:
        context.check_hostname = False
    if alpn:
        context.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_hostname=serverName)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def reframe(hello: bytes, size: int) -> bytes:
    """The same handshake, cut into TLS records of at most C{size} bytes."""
    assert hello[0] == 0x16
    (length,) = struct.unpack("!H", hello[3:5])
    handshake = hello[5:5 + length]
    out = b""
    for i in range(0, len(handshake), size):
        piece = handshake[i:i + size]
        out += hello[:3] + struct.pack("!H", len(piece)) + piece
    return out


class ParserTests(SynchronousTestCase):
    """L{ClientHelloParser} finds the server name however the bytes come."""

    def test_whole(self) -> None:
        """A ClientHello in one read gives its name and ALPN list."""
        result = ClientHelloParser().feed(clientHello("A.Example"))
        self.assertEqual(result, ClientHello(isTLS=True, serverName="a.example", alpn=(b"h2", b"http/1.1"), complete=True))

    def test_byteByByte(self) -> None:
        """Fed one byte at a time, it answers at the last byte."""
        data = clientHello("b.example")
        parser = ClientHelloParser()
        for byte in data[:-1]:
            self.assertIsNone(parser.feed(bytes([byte])))
        result = parser.feed(data[-1:])
        assert result is not None
        self.assertEqual(result.serverName, "b.example")

    def test_severalRecords(self) -> None:
        """A ClientHello split over several TLS records is reassembled."""
        result = ClientHelloParser().feed(reframe(clientHello("c.example"), 50))
        assert result is not None
        self.assertEqual(result.serverName, "c.example")

    def test_noServerName(self) -> None:
        """A ClientHello without SNI is TLS with no name."""
        result = ClientHelloParser().feed(clientHello(None, alpn=()))
        self.assertEqual(result, ClientHello(isTLS=True, serverName=None, complete=True))

    def test_notTLS(self) -> None:
        """Plain text is recognised from its first byte."""
        result = ClientHelloParser().feed(b"G")
        self.assertEqual(result, ClientHello(isTLS=False))

    def test_limit(self) -> None:
        """A ClientHello larger than the limit gives up without a name."""
        result = ClientHelloParser(limit=100).feed(clientHello("a.example")[:120])
        self.assertEqual(result, ClientHello(isTLS=True, complete=False))

    def test_finish(self) -> None:
        """Cut short, it reports TLS without a name."""
        parser = ClientHelloParser()
        self.assertIsNone(parser.feed(clientHello("a.example")[:30]))
        self.assertEqual(parser.finish(), ClientHello(isTLS=True, complete=False))

    def test_badServerName(self) -> None:
        """A name that is not a host name is reported as such, never as C{serverName}."""
        result = ClientHelloParser().feed(rawClientHello(b"a\x00.b.example"))
        self.assertEqual(result, ClientHello(isTLS=True, complete=True, badServerName=b"a\x00.b.example"))
        result = ClientHelloParser().feed(rawClientHello(b"My_Host.b.example."))
        self.assertEqual(result, ClientHello(isTLS=True, serverName="my_host.b.example", complete=True))

    def test_validHostName(self) -> None:
        """Letters, digits, C{-}, C{_} and dots between non-empty labels make a host name."""
        for good in (b"a", b"a-1.example", b"xn--bcher-kva.example", b"_srv.example", b"a.example.", b"a" * 255):
            self.assertTrue(validHostName(good), good)
        for bad in (b"", b"a b", b"a\x00b", b"a\tb", b"\xc3\xa9.example", b"a..b", b".a", b"a..", b"*.a", b"a" * 256):
            self.assertFalse(validHostName(bad), bad)

    def test_garbageInside(self) -> None:
        """A malformed ClientHello body gives no name rather than an exception."""
        data = bytearray(clientHello("a.example"))
        data[5 + 4 + 34] = 0xFF  # session id length runs past the end
        result = ClientHelloParser().feed(bytes(data))
        assert result is not None
        self.assertIsNone(result.serverName)


class InspectorTests(SynchronousTestCase):
    """L{Inspector}: a connection's first bytes, with no I/O."""

    def test_proxyThenHello(self) -> None:
        """The PROXY header comes first; everything after it is kept, in order, to replay."""
        source, destination = IPv4Address("TCP", "10.1.2.3", 5555), IPv4Address("TCP", "10.0.0.1", 443)
        hello = clientHello("a.example")
        inspector = Inspector(acceptProxy=True, helloLimit=32768)
        self.assertIsNone(inspector.feed(formatV1(source, destination)[:10]))
        self.assertTrue(inspector.waitingForProxy)
        self.assertIsNone(inspector.feed(formatV1(source, destination)[10:] + hello[:20]))
        self.assertFalse(inspector.waitingForProxy)
        done = inspector.feed(hello[20:] + b"more")
        assert done is not None and done.proxy is not None and done.hello is not None
        self.assertEqual((done.proxy.source, done.hello.serverName, done.rest), (source, "a.example", hello + b"more"))

    def test_proxyOnly(self) -> None:
        """Without routes, the inspection ends with the PROXY header."""
        header = formatV1(IPv4Address("TCP", "10.1.2.3", 5555), IPv4Address("TCP", "10.0.0.1", 80))
        done = Inspector(acceptProxy=True, helloLimit=None).feed(header + b"GET /")
        assert done is not None
        self.assertEqual((done.hello, done.rest), (None, b"GET /"))

    def test_finish(self) -> None:
        """At the timeout, what came is given back with a nameless ClientHello."""
        inspector = Inspector(acceptProxy=False, helloLimit=32768)
        data = clientHello("a.example")[:40]
        self.assertIsNone(inspector.feed(data))
        done = inspector.finish()
        self.assertEqual((done.hello, done.rest), (ClientHello(isTLS=True, complete=False), data))

    def test_badServerName(self) -> None:
        """A name that is not a host name raises, and the ClientHello is kept for the log."""
        inspector = Inspector(acceptProxy=False, helloLimit=32768)
        self.assertRaises(InvalidClientHello, inspector.feed, rawClientHello(b"a\x00.b.example"))
        assert inspector.hello is not None
        self.assertEqual(inspector.hello.badServerName, b"a\x00.b.example")


class RouteConfigTests(SynchronousTestCase):
    """The routing objects check what they are given."""

    def setUp(self) -> None:
        self.a = Backend("a", [Server("a1", "127.0.0.1:1")])
        self.d = Backend("d", [Server("d1", "127.0.0.1:2")])

    def test_matchers(self) -> None:
        """sniIs, sniEnds and sniAbsent look at the server name."""
        hello = ClientHello(isTLS=True, serverName="x.a.example", complete=True)
        self.assertTrue(tcp.sniIs("X.A.example")(hello))
        self.assertFalse(tcp.sniIs("a.example")(hello))
        self.assertTrue(tcp.sniEnds(".a.example")(hello))
        self.assertFalse(tcp.sniAbsent()(hello))
        self.assertTrue(tcp.sniAbsent()(ClientHello()))

    def test_badRoutes(self) -> None:
        """Wrong route objects are configuration errors."""
        self.assertRaises(ConfigError, tcp.sniIs)
        self.assertRaises(ConfigError, tcp.Route, "a.example", self.a)
        self.assertRaises(ConfigError, tcp.Route, tcp.sniIs("a.example"), "a")
        self.assertRaises(ConfigError, tcp.Frontend, "tcp:0", self.d, routes=[self.a])

    def test_backends(self) -> None:
        """A frontend's backends include its routes' ones."""
        fe = tcp.Frontend("tcp:0", self.d, routes=[tcp.Route(tcp.sniIs("a.example"), self.a)])
        self.assertEqual(fe.backends(), [self.d, self.a])


class RoutingFakeTests(SynchronousTestCase):
    """Routing on a L{MemoryReactorClock} with a L{StringTransport}."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.a = Backend("a", [Server("a1", "127.0.0.1:1001")])
        self.b = Backend("b", [Server("b1", "127.0.0.1:1002")])
        self.d = Backend("d", [Server("d1", "127.0.0.1:1009")])

    def connect(self, **kwargs: Any) -> tuple[Any, HalfCloseableStringTransport]:
        fe = tcp.Frontend(
            "tcp:0", self.d, log=False,
            routes=[tcp.Route(tcp.sniIs("a.example"), self.a), tcp.Route(tcp.sniIs("b.example"), self.b)],
            **kwargs,
        )
        protocol = fe.buildFactory(self.reactor).buildProtocol(None)
        transport = HalfCloseableStringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def connectedPorts(self) -> list[int]:
        return [c[1] for c in self.reactor.tcpClients]

    def test_routeByName(self) -> None:
        """The ClientHello's name picks the backend; nothing connects before."""
        protocol, transport = self.connect()
        data = clientHello("b.example")
        protocol.dataReceived(data[:10])
        self.assertEqual(self.connectedPorts(), [])
        protocol.dataReceived(data[10:])
        self.assertEqual(self.connectedPorts(), [1002])
        self.assertIs(protocol.backend, self.b)
        self.assertEqual(b"".join(protocol._pending), data)
        self.assertEqual(protocol.context.notes["sni"], "b.example")
        protocol.connectionLost()
        self.reactor.advance(60)

    def test_unknownName(self) -> None:
        """A name no route takes goes to the default backend."""
        protocol, _ = self.connect()
        protocol.dataReceived(clientHello("z.example"))
        self.assertEqual(self.connectedPorts(), [1009])
        protocol.connectionLost()

    def test_notTLS(self) -> None:
        """Plain text goes to the default backend at once, bytes kept."""
        protocol, _ = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(self.connectedPorts(), [1009])
        self.assertEqual(b"".join(protocol._pending), b"GET / HTTP/1.0\r\n\r\n")
        protocol.connectionLost()

    def test_timeout(self) -> None:
        """A client silent for C{timeoutInspect} goes to the default backend."""
        protocol, _ = self.connect(timeoutInspect=2.0)
        self.reactor.advance(1.9)
        self.assertEqual(self.connectedPorts(), [])
        self.reactor.advance(0.2)
        self.assertEqual(self.connectedPorts(), [1009])
        protocol.connectionLost()

    def test_partialThenTimeout(self) -> None:
        """Half a ClientHello, then the timeout: default backend, bytes kept."""
        protocol, _ = self.connect(timeoutInspect=2.0)
        data = clientHello("a.example")[:40]
        protocol.dataReceived(data)
        self.reactor.advance(2.0)
        self.assertEqual(self.connectedPorts(), [1009])
        self.assertEqual(b"".join(protocol._pending), data)
        protocol.connectionLost()

    def test_lostWhileInspecting(self) -> None:
        """A client gone during inspection leaves no inspection timer behind."""
        protocol, _ = self.connect(timeoutInspect=2.0)
        protocol.dataReceived(clientHello("a.example")[:40])
        protocol.connectionLost()
        self.assertEqual([c for c in self.reactor.getDelayedCalls() if c.active()], [])
        self.reactor.advance(60)
        self.assertEqual(self.connectedPorts(), [])

    def test_proxyHeaderTimeout(self) -> None:
        """With C{acceptProxy}, no PROXY header within C{timeoutInspect} closes the client as cR."""
        protocol, transport = self.connect(acceptProxy=True, timeoutInspect=2.0)
        protocol.dataReceived(b"PROXY TCP4 10.1")
        self.reactor.advance(2.0)
        self.assertTrue(transport.disconnecting)
        self.assertEqual((protocol.termination, self.connectedPorts()), ("cR", []))
        protocol.connectionLost()
        self.assertEqual([c for c in self.reactor.getDelayedCalls() if c.active()], [])

    def test_proxyHeaderFirst(self) -> None:
        """With C{acceptProxy}, the PROXY header comes first, then the ClientHello."""
        from twisted.internet.address import IPv4Address

        protocol, _ = self.connect(acceptProxy=True)
        header = formatV1(IPv4Address("TCP", "10.1.2.3", 5555), IPv4Address("TCP", "10.0.0.1", 443))
        hello = clientHello("a.example")
        protocol.dataReceived(header + hello[:20])
        protocol.dataReceived(hello[20:])
        self.assertEqual(self.connectedPorts(), [1001])
        self.assertEqual(protocol.context.client.host, "10.1.2.3")
        self.assertEqual(b"".join(protocol._pending), hello)
        protocol.connectionLost()


#: A Python ssl-module client that checks the server's certificate for the
#: name it asks for, sends a line, and prints what comes back.
SSL_ECHO_CLIENT = textwrap.dedent(
    """
    import socket, ssl, sys
    port, ca, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        with ctx.wrap_socket(s, server_hostname=name) as t:
            t.sendall(b"hello " + name.encode())
            print(t.recv(1000).decode())
    """
)


class Tagged(Protocol):
    """Answers each read with C{name:} and what it read, then closes."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(self.factory.name.encode() + b":" + data)  # type: ignore[attr-defined]
        self.transport.loseConnection()


class PassThroughTests(TestCase):
    """
    Real TLS servers for a.example, b.example and a default behind a tcp
    frontend with SNI routes: each client's TLS session ends at the server
    its SNI names; lbkit holds no key.
    """

    timeout = 30

    def setUp(self) -> None:
        self.pki = makePKI(self)
        backends = {}
        for name in ("a.example", "b.example", "default.example"):
            options = loadKeyPair(self.pki.issue(f"{name}.pem", name)).options(None, None)
            factory = Factory.forProtocol(Tagged)
            factory.name = name  # type: ignore[attr-defined]
            port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            backends[name] = Backend(name, [Server(name, f"127.0.0.1:{port.getHost().port}")])
        fe = tcp.Frontend(
            "tcp:0:interface=127.0.0.1", backend=backends["default.example"], log=False,
            routes=[tcp.Route(tcp.sniIs("a.example"), backends["a.example"]),
                    tcp.Route(tcp.sniIs("b.example"), backends["b.example"])],
            factory=TrackingProxyFactory,
        )
        self.factory = fe.buildFactory(reactor)
        self.port = listen(self, reactor, self.factory)

    def allGone(self) -> Any:
        return gatherResults([p.allGone() for p in self.factory.built])  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_pythonClients(self) -> None:
        """Each name reaches its own server, whose certificate verifies for it."""
        for name, expect in [("a.example", "a.example"), ("b.example", "b.example")]:
            runner = yield runProcess(self, reactor, [
                sys.executable, "-c", SSL_ECHO_CLIENT, str(self.port), self.pki.caFile, name,
            ])
            self.assertEqual(runner.exitCode, 0, runner.output)
            self.assertEqual(runner.stdout.decode().strip(), f"{expect}:hello {name}")
        yield self.allGone()

    @inlineCallbacks
    def test_opensslClient(self) -> None:
        """openssl s_client -servername sees the named server's certificate."""
        openssl = requireBinary("/usr/bin/openssl")
        for name, subject in [("b.example", "b.example"), ("other.example", "default.example")]:
            runner = yield runProcess(self, reactor, [
                openssl, "s_client", "-connect", f"127.0.0.1:{self.port}", "-servername", name,
                "-CAfile", self.pki.caFile, "-verify_return_error", "-brief",
            ], stdin=b"ping\n")
            self.assertIn(f"CN = {subject}".encode(), runner.output)
            self.assertIn(b"Verification: OK", runner.output)
        yield self.allGone()


def rawClientHello(hostName: bytes) -> bytes:
    """
    A minimal TLS 1.2 ClientHello, built by hand, whose SNI host_name is
    C{hostName} byte for byte (an ssl library refuses to send bad names).
    """
    name = b"\x00" + struct.pack("!H", len(hostName)) + hostName
    serverNameList = struct.pack("!H", len(name)) + name
    extensions = struct.pack("!HH", 0, len(serverNameList)) + serverNameList
    body = (
        b"\x03\x03" + bytes(range(32))  # legacy_version, random
        + b"\x00"  # no session id
        + struct.pack("!H", 2) + b"\x13\x01"  # one cipher suite
        + b"\x01\x00"  # compression: null
        + struct.pack("!H", len(extensions)) + extensions
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


class BadServerNameTests(TestCase):
    """
    A ClientHello whose SNI name is not a DNS host name (control
    characters, spaces, NUL, bytes above 0x7F) is refused: the connection
    is closed before any server is contacted, whatever the routes say.
    """

    timeout = 10

    def setUp(self) -> None:
        self.servers: dict[str, TrackingFactory] = {}
        backends = {}
        for name in ("good", "default"):
            factory = TrackingFactory(Tagged)
            factory.name = name  # type: ignore[attr-defined]
            self.servers[name] = factory
            backends[name] = Backend(name, [Server(name, f"127.0.0.1:{listen(self, reactor, factory)}")])
        fe = tcp.Frontend(
            "tcp:0:interface=127.0.0.1", backend=backends["default"], log=False,
            routes=[tcp.Route(tcp.sniEnds(".good.example"), backends["good"])],
            factory=TrackingProxyFactory,
        )
        self.factory = fe.buildFactory(reactor)
        self.port = listen(self, reactor, self.factory)

    @inlineCallbacks
    def send(self, hostName: bytes) -> Any:
        """Send a ClientHello naming C{hostName}; fire with what came back once closed."""
        client = Collector(rawClientHello(hostName))
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), client)
        received = yield client.done
        yield self.factory.built[-1].allGone()  # type: ignore[attr-defined]
        return received

    @inlineCallbacks
    def test_goodNameRoutes(self) -> None:
        """The hand-built ClientHello with a valid name reaches its route's server."""
        received = yield self.send(b"x.good.example")
        self.assertTrue(received.startswith(b"good:\x16\x03"), received[:20])

    @inlineCallbacks
    def test_badNamesRefused(self) -> None:
        """Each bad name gets the connection closed (PR), and no server is connected."""
        for bad in (b"evil\x00.good.example", b"a b.good.example", b"a\r\n.good.example",
                    b"\x7f.good.example", "é.good.example".encode(), b"a..good.example", b".good.example"):
            received = yield self.send(bad)
            self.assertEqual(received, b"", bad)
            self.assertEqual(self.factory.built[-1].termination, "PR", bad)
        self.assertEqual([len(f.built) for f in self.servers.values()], [0, 0])
        self.assertEqual(len(self.flushLoggedErrors()), 0)
