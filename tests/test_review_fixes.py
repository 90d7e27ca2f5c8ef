"""
Regression tests for defects found in review: request smuggling through a
Connection header, a spoofed X-Forwarded-Proto, connect timeouts in http
mode, a cancelled IPv4 connect passing for a server failure, a raising
serverChosen hook leaking a slot, and a closing http connection whose
client never reads.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.error import UserError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Context, Server
from lbkit._connect import connectServer
from lbkit.tcp import Frontend as TCPFrontend
from lbkit.tcp import TCPFrontendProtocol, TCPProxyFactory
from lbkit.testing import FakeEndpoint, HalfCloseableStringTransport
from tests.test_http import CLIENT, FRONT, Harness, head


class SmugglingTests(SynchronousTestCase):
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


class _Connector:
    """A connector whose stopConnecting fails the attempt at once, as Twisted's does."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def stopConnecting(self) -> None:
        self.factory.clientConnectionFailed(self, Failure(UserError()))


class _Reactor(MemoryReactorClock):
    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30, bindAddress: Any = None) -> Any:
        MemoryReactorClock.connectTCP(self, host, port, factory, timeout, bindAddress)
        return _Connector(factory)


class CancelledConnectTests(SynchronousTestCase):
    def test_cancelIsCancelled(self) -> None:
        """Cancelling an IPv4 connect fails it with CancelledError, not the connector's UserError."""
        reactor = _Reactor()
        server = Server("s", "127.0.0.1:9")
        d: Deferred[Any] = connectServer(reactor, server, TCPFrontendProtocol(), 5)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(reactor.getDelayedCalls(), [])


class RaisingHook(TCPFrontendProtocol):
    def serverChosen(self, server: Server) -> None:
        raise RuntimeError("hook failed")


class RaisingFactory(TCPProxyFactory):
    protocol = RaisingHook


class HookTests(SynchronousTestCase):
    def test_raisingHookReleasesSlot(self) -> None:
        """A serverChosen hook that raises does not leak the server's slot."""
        reactor = MemoryReactorClock()
        server = Server("s", FakeEndpoint())
        backend = Backend("b", [server])
        frontend = TCPFrontend("tcp:0", backend, factory=RaisingFactory, log=False)
        factory = frontend.buildFactory(reactor)
        proto = factory.buildProtocol(CLIENT)
        transport = HalfCloseableStringTransport(hostAddress=FRONT, peerAddress=CLIENT)
        proto.makeConnection(transport)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        proto.connectionLost(Failure(ConnectionError()))
        self.assertEqual(server.active, 0)
        self.assertEqual(backend.tryAcquire(Context()), server)
        backend.release(server)
        for call in reactor.getDelayedCalls():
            call.cancel()


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


class FramingTests(SynchronousTestCase):
    def test_unrequested101Is502(self) -> None:
        """A 101 answer to a request that did not ask to upgrade is refused with 502, no tunnel."""
        h = Harness(self, retries=0)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n")
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 "), client.value()[:40])

    def test_transferCodingsRefused(self) -> None:
        """A 'gzip, chunked' request body is refused with 400 (as HAProxy refuses it), and no server is tried."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        )
        self.assertTrue(client.value().startswith(b"HTTP/1.1 400 "), client.value()[:40])
        self.assertEqual(h.endpoints["s1"].pending, [])


class ReloadTimeoutTests(SynchronousTestCase):
    def test_reloadRecomputesTick(self) -> None:
        """A reload that shortens a timeout makes the running factory check more often."""
        from lbkit import http
        from lbkit.reload import _takeOver

        backend = Backend("b", [Server("s", "127.0.0.1:1")])
        old = http.Frontend("tcp:0", default=backend, timeoutClient=30)
        factory = old.buildFactory(MemoryReactorClock())
        self.assertEqual(factory.tickInterval, 2.5)  # timeoutHttpRequest 10 s / 4
        _takeOver(old, http.Frontend("tcp:0", default=backend, timeoutClient=2))
        self.assertEqual(factory.tickInterval, 0.5)


class QueueTests(SynchronousTestCase):
    def test_queuedFailWhenAllDown(self) -> None:
        """When every server goes DOWN, queued connections get their answer at once, in order."""
        from lbkit import ServerState
        from lbkit.error import NoServerAvailable

        clock = MemoryReactorClock()
        server = Server("s", "127.0.0.1:1", maxconn=1)
        backend = Backend("b", [server], timeoutQueue=30)
        held = backend.tryAcquire(Context())
        self.assertIs(held, server)
        waiters = [backend.enqueue(Context(), clock) for _ in range(3)]
        server.setState(ServerState.DOWN, "test")
        for d in waiters:
            self.failureResultOf(d, NoServerAvailable)
        self.assertEqual(backend.queueLength(), 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        backend.release(server)


class PassiveLayer7Tests(SynchronousTestCase):
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


class ReloadStatsPageTests(SynchronousTestCase):
    def test_changedAdminIsReplaced(self) -> None:
        """A reload that changes a stats page's admin users listens again instead of keeping the old ones."""
        from lbkit import stats
        from lbkit.reload import matchListeners

        old = stats.Page("tcp:0", admin=stats.Admin(users={"op": "old"}))
        new = stats.Page("tcp:0", admin=stats.Admin(users={"op": "new"}))
        same = stats.Page("tcp:0", admin=stats.Admin(users={"op": "old"}))
        self.assertEqual(matchListeners([old], [new])[2], [(old, new)])
        self.assertEqual(matchListeners([old], [same])[0], [(old, same)])


class AccessLogErrorTests(SynchronousTestCase):
    def test_writeErrorIsCounted(self) -> None:
        """An access-log write that fails (full disk) is dropped and counted, not raised into the proxy."""
        from lbkit.logs import AccessLog, AccessLogDispatcher

        dispatcher = AccessLogDispatcher()
        dispatcher.replace([AccessLog("/dev/full")])
        event = {"log_format": "x {a}", "a": 1, "log_namespace": "lbkit.access", "log_time": 0.0}
        for _ in range(3):
            dispatcher(event)  # the file is buffered: writes may fail on flush
        self.assertGreaterEqual(getattr(dispatcher.writers[0], "dropped", 0), 1)
        dispatcher.replace([])


class ReloadErrorTests(SynchronousTestCase):
    def test_unexpectedErrorDoesNotBlockReloads(self) -> None:
        """A reload that fails with an unexpected error fails, and the next reload is not refused."""
        import os

        import lbkit.reload
        from lbkit.service import LoadBalancerService

        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                "from lbkit import Backend, Server, tcp\n"
                "b = Backend('b', [Server('s', '127.0.0.1:1')])\n"
                "listen = [tcp.Frontend('tcp:0:interface=127.0.0.1', b)]\n"
            )
        from lbkit.config import loadSite

        site = loadSite(os.path.abspath(path))
        service = LoadBalancerService(site.listen, MemoryReactorClock())
        calls: list[int] = []

        def boom(service: Any, site: Any) -> Any:
            calls.append(1)
            raise RuntimeError("unexpected")

        self.patch(lbkit.reload, "applySite", boom)
        self.failureResultOf(service.reload(os.path.abspath(path)), RuntimeError)
        self.failureResultOf(service.reload(os.path.abspath(path)), RuntimeError)
        self.assertEqual(len(calls), 2)  # the second was attempted, not refused as "in progress"
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
