"""
Tests for tcp-mode connection rules (L{lbkit.tcp.reject}): with fakes on a
L{MemoryReactorClock}, then over real sockets on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import ClientCreator
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbkit import Backend, Server
from lbkit.error import ConfigError
from lbkit.http import allOf, notMatching, pathBegins, sourceIn
from lbkit.interfaces import IConnectionRule
from lbkit.proxyproto import formatV1
from lbkit.tcp import Frontend, TCPFrontendProtocol, reject
from lbkit.testing import FakeEndpoint, HalfCloseableStringTransport, assertProvides
from tests.helpers import Collector, Echo, TrackingFactory, TrackingProxyFactory, listen
from tests.test_tcp import captureLogs
from tests.test_tcp import reactor as _reactor

reactor: Any = _reactor
CLIENT = IPv4Address("TCP", "198.51.100.7", 51000)
FRONT = IPv4Address("TCP", "127.0.0.1", 8080)
DONE = Failure(ConnectionDone())


class RejectTests(SynchronousTestCase):
    """
    reject closes a connection at once, before any server is chosen, when
    its matcher takes the client's address.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.endpoint = FakeEndpoint()

    def accept(self, rules: Any, client: IPv4Address = CLIENT, **kwargs: Any) -> tuple[Any, Any]:
        frontend = Frontend("tcp:8080", Backend("be", [Server("a", self.endpoint)]), name="fe", rules=rules, **kwargs)
        proto = frontend.buildFactory(self.reactor).buildProtocol(client)
        assert isinstance(proto, TCPFrontendProtocol)
        transport = HalfCloseableStringTransport(hostAddress=FRONT, peerAddress=client)
        proto.makeConnection(transport)
        self.addCleanup(lambda: proto._clientGone or proto.connectionLost(DONE))
        return proto, transport

    def test_interface(self) -> None:
        """reject provides IConnectionRule."""
        assertProvides(self, IConnectionRule, reject())

    def test_rejected(self) -> None:
        """A matching client is aborted at once, never connected to a server, and logged PR."""
        events = captureLogs(self, "lbkit.access")
        rule = reject(when=sourceIn("198.51.100.0/24"))
        proto, transport = self.accept([rule])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.endpoint.attempts, [])
        self.assertEqual(rule.rejected, 1)
        proto.connectionLost(DONE)
        self.assertEqual([(e["termination"], e["server"]) for e in events], [("PR", "<NOSRV>")])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_notMatching(self) -> None:
        """Another client goes through to a server."""
        proto, transport = self.accept([reject(when=notMatching(sourceIn("198.51.100.0/24")))])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(self.endpoint.attempts), 1)

    def test_afterProxyHeader(self) -> None:
        """With acceptProxy, the address the rule sees is the PROXY header's source."""
        rule = reject(when=sourceIn("10.0.0.0/8"))
        proto, transport = self.accept([rule], acceptProxy=True)
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(formatV1(IPv4Address("TCP", "10.1.2.3", 4000), FRONT))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.endpoint.attempts, [])

    def test_config(self) -> None:
        """Only rules, and only matchers of the client's address, are taken."""
        be = Backend("be", [Server("a", FakeEndpoint())])
        e = self.assertRaises(ConfigError, Frontend, "tcp:0", be, rules=[object()])
        self.assertIn("does not provide IConnectionRule", str(e))
        e = self.assertRaises(ConfigError, reject, when=pathBegins("/"))
        self.assertIn("reads the request", str(e))
        e = self.assertRaises(ConfigError, reject, when=allOf(sourceIn("10.0.0.0/8"), pathBegins("/")))
        self.assertIn("reads the request", str(e))
        self.assertEqual(reject(when=allOf(sourceIn("10.0.0.0/8"))).when.clientOnly, True)  # type: ignore[union-attr]


class RealSocketRejectTests(TestCase):
    """
    Over real sockets: a rejected client's connection is closed at once,
    and the server never sees a connection.
    """

    timeout = 20

    @inlineCallbacks
    def test_rejected(self) -> Any:
        """A client from 127.0.0.0/8 gets nothing; the server is never connected to."""
        factory = TrackingFactory(Echo)
        serverPort = listen(self, reactor, factory)
        backend = Backend("be", [Server("a", f"127.0.0.1:{serverPort}")])
        frontend = Frontend("tcp:0", backend, name="fe", log=False, rules=[reject(when=sourceIn("127.0.0.0/8"))])
        proxyFactory = TrackingProxyFactory(frontend, reactor)
        port = listen(self, reactor, proxyFactory)
        client = Collector(b"ping")
        yield ClientCreator(reactor, lambda: client).connectTCP("127.0.0.1", port)
        received = yield client.done
        self.assertEqual(received, b"")
        yield proxyFactory.built[0].allGone()
        self.assertEqual(proxyFactory.built[0].termination, "PR")
        self.assertEqual(factory.built, [])
