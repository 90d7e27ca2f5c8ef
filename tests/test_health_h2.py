"""
L{HTTPCheck} towards HTTP/2-only servers: C{Server(proto="h2c")} and
C{proto="h2"} (TLS, ALPN h2), against the h2 test server and grpcio, on
real sockets.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.internet.threads import deferToThread

from lbkit import Backend, Server, ServerState, tcp
from lbkit.error import CheckFailed
from lbkit.health import HTTPCheck
from lbkit.service import LoadBalancerService
from tests import test_h2up
from tests.h2server import H2TestFactory
from tests.helpers import freePort
from tests.test_grpc import GRPCTestCase
from tests.test_h2up import H2UpTestCase
from tests.test_health_integration import waitForState
from tests.test_http_integration import reactor


class H2CheckTests(H2UpTestCase):
    """HTTPCheck speaks HTTP/2 with prior knowledge to a C{proto="h2c"} server."""

    def server(self, port: int, **kwargs: Any) -> Server:
        return Server("h2a", f"127.0.0.1:{port}", proto="h2c", **kwargs)

    @inlineCallbacks
    def test_passes(self) -> None:
        """A 200 answer passes, and the server saw an HTTP/2 stream with the check's path and headers."""
        port, factory = self.h2server()
        check = HTTPCheck("/info", headers={"X-Probe": "1", "Connection": "close"}, host="app.example")
        yield check.check(self.server(port), reactor)
        self.assertEqual(factory.streams, 1)
        seen = factory.seen[0]
        self.assertEqual(seen[b":path"], b"/info")
        self.assertEqual(seen[b":authority"], b"app.example")
        self.assertEqual(seen[b"x-probe"], b"1")
        self.assertNotIn(b"connection", seen)

    @inlineCallbacks
    def test_bodyMatch(self) -> None:
        """The body is read and matched as over HTTP/1.1."""
        port, factory = self.h2server()
        yield HTTPCheck("/info", body='"path": "/info"').check(self.server(port), reactor)
        d = HTTPCheck("/info", body="nowhere").check(self.server(port), reactor)
        failure = yield self.assertFailure(d, CheckFailed)
        self.assertEqual(str(failure), 'Layer7 wrong content, code: 200, info: "body did not match"')

    @inlineCallbacks
    def test_forbiddenHeader(self) -> None:
        """A header HTTP/2 forbids (C{te} other than C{trailers}) fails the check at once, saying why."""
        port, factory = self.h2server()
        d = HTTPCheck("/info", headers={"TE": "gzip"}).check(self.server(port), reactor)
        failure = yield self.assertFailure(d, CheckFailed)
        self.assertIn("HTTP/2 refuses the request head", str(failure))
        self.assertEqual(factory.streams, 0)

    @inlineCallbacks
    def test_wrongStatus(self) -> None:
        """A status outside C{status} fails with its code."""
        port, factory = self.h2server()
        d = HTTPCheck("/info", status=204).check(self.server(port), reactor)
        failure = yield self.assertFailure(d, CheckFailed)
        self.assertEqual(str(failure), "Layer7 wrong status, code: 200")

    @inlineCallbacks
    def test_reset(self) -> None:
        """A stream reset before the answer fails the check."""
        port, factory = self.h2server()
        d = HTTPCheck("/reset-head").check(self.server(port), reactor)
        failure = yield self.assertFailure(d, CheckFailed)
        self.assertIn("stream reset by the server", str(failure))

    @inlineCallbacks
    def test_closedPort(self) -> None:
        """Nothing listening: a Layer4 failure."""
        d = HTTPCheck("/").check(self.server(freePort()), reactor)
        failure = yield self.assertFailure(d, CheckFailed)
        self.assertEqual(str(failure), 'Layer4 connection problem, info: "Connection refused"')

    @inlineCallbacks
    def test_notHTTP2(self) -> None:
        """An HTTP/1.1 server answering the preface fails as an invalid response."""

        class Answer(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")  # type: ignore[union-attr]

        port = reactor.listenTCP(0, Factory.forProtocol(Answer), interface="127.0.0.1")
        self.ports.append(port)
        d = HTTPCheck("/").check(self.server(port.getHost().port), reactor)
        failure = yield self.assertFailure(d, CheckFailed)
        self.assertTrue(str(failure).startswith("Layer7 invalid response"), str(failure))

    @inlineCallbacks
    def test_cancelAfterConnectIsLayer7Timeout(self) -> None:
        """The monitor's timeout on a held answer reports a Layer7 timeout."""
        port, factory = self.h2server()
        d = HTTPCheck("/hold").check(self.server(port), reactor)
        yield factory.whenHeld(1)
        d.cancel()
        failure = yield self.assertFailure(d, CheckFailed)
        self.assertEqual(str(failure), "Layer7 timeout")


class H2TLSCheckTests(H2UpTestCase):
    """HTTPCheck speaks HTTP/2 over TLS with ALPN h2 to a C{proto="h2"} server."""

    tlsServer = test_h2up.H2OverTLSTests.tlsServer

    def server(self, port: int) -> Server:
        return Server("t1", f"127.0.0.1:{port}", proto="h2", ca=self.pki.caFile, sni="server.example")

    @inlineCallbacks
    def test_passes(self) -> None:
        """The check negotiates h2, the certificate is checked and the stream is answered."""
        factory = H2TestFactory()
        port = self.tlsServer([b"h2"], factory)
        yield HTTPCheck("/info", body="/info").check(self.server(port), reactor)
        self.assertEqual(factory.seen[0][b":scheme"], b"https")

    @inlineCallbacks
    def test_noH2(self) -> None:
        """A server that takes only http/1.1 with ALPN refuses the handshake: a Layer6 failure."""
        factory = ServerFactory.forProtocol(Protocol)
        port = self.tlsServer([b"http/1.1"], factory)
        d = HTTPCheck("/").check(self.server(port), reactor)
        failure = yield self.assertFailure(d, CheckFailed)
        self.assertTrue(str(failure).startswith('Layer6 invalid response, info: "TLS: '), str(failure))


class GRPCCheckTests(GRPCTestCase):
    """HTTPCheck against a live grpcio server over h2c passes; against a stopped one it fails."""

    @inlineCallbacks
    def test_liveAndDead(self) -> None:
        """
        grpcio resets a plain GET (RST_STREAM INTERNAL_ERROR): the check
        fails, saying so.  A POST with C{content-type: application/grpc}
        to the health service's path is answered 200 (C{grpc-status} 12,
        unimplemented, as this server has no health service): the check
        passes; once the server stops, it fails at layer 4.
        """
        port, service, grpcServer = self.grpcServer()
        server = Server("g1", f"127.0.0.1:{port}", proto="h2c")
        failure = yield self.assertFailure(HTTPCheck("/").check(server, reactor), CheckFailed)
        self.assertIn("stream reset by the server", str(failure))
        check = HTTPCheck("/grpc.health.v1.Health/Check", method="POST", status=200,
                          headers={"content-type": "application/grpc", "te": "trailers"})
        yield check.check(server, reactor)
        yield deferToThread(lambda: grpcServer.stop(0).wait(5))
        d = check.check(server, reactor)
        failure = yield self.assertFailure(d, CheckFailed)
        self.assertTrue(str(failure).startswith("Layer4 connection problem"), str(failure))


class GRPCMonitorTests(GRPCTestCase):
    """A running site's monitor keeps a live grpcio server UP with the HTTP/2 check, and takes it DOWN when it stops."""

    @inlineCallbacks
    def test_upThenDown(self) -> None:
        port, service, grpcServer = self.grpcServer()
        server = Server("g1", f"127.0.0.1:{port}", proto="h2c")
        check = HTTPCheck("/grpc.health.v1.Health/Check", method="POST", status=200, interval=0.2, rise=1,
                          fall=1, initState="fully-down",
                          headers={"content-type": "application/grpc", "te": "trailers"})
        up = waitForState(server, ServerState.UP)
        site = LoadBalancerService([tcp.Frontend("tcp:0:interface=127.0.0.1", Backend("grpc", [server], health=check),
                                                 log=False)], reactor)
        site.startService()
        self.addCleanup(site.stopService)
        _, reason = yield up
        self.assertTrue(reason.startswith("Layer7 check passed"), reason)
        down = waitForState(server, ServerState.DOWN)
        yield deferToThread(lambda: grpcServer.stop(0).wait(5))
        _, reason = yield down
        self.assertTrue(reason.startswith("Layer4 connection problem"), reason)
