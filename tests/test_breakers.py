"""
Tests for L{lbkit._breakers} and L{lbkit.http._retry}: circuit breakers,
the retry budget and C{retryOn}, on a L{MemoryReactorClock} with
L{FakeEndpoint} servers (no sockets).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, RetryBudget, Server
from lbkit._breakers import PENDING_OVERFLOW, REQUEST_OVERFLOW, parseRetryOn
from lbkit._dispatch import SERVER_REFUSED, DispatchState
from lbkit.error import ConfigError
from lbkit.http._retry import RetryingServerProtocol
from lbkit.http._server import HTTPServerProtocol
from lbkit.testing import FakeEndpoint
from tests.test_dispatch import Fixture, failed
from tests.test_http import DONE, OK, Harness

UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"


class ConfigTests(SynchronousTestCase):
    """Bad breaker arguments raise ConfigError naming the problem; none set costs nothing."""

    def test_retryOnAliases(self) -> None:
        """HAProxy's and Envoy's names expand to lbkit's conditions and codes."""
        self.assertEqual(parseRetryOn("be", ("conn-failure", "gateway-error")),
                         frozenset(["connect-failure", 502, 503, 504]))
        self.assertEqual(parseRetryOn("be", ("none",)), frozenset())

    def test_retryOnBad(self) -> None:
        """An unknown name, a status outside 4xx/5xx, or a bare string is refused by name."""
        for bad, words in ((("bogus",), "'bogus'"), ((200,), "200"), ("503", "list or tuple")):
            e = self.assertRaises(ConfigError, Backend, "be", [Server("a", FakeEndpoint())], retryOn=bad)
            self.assertIn(words, str(e))

    def test_badLimits(self) -> None:
        """Negative limits and a bad budget are refused."""
        self.assertRaises(ConfigError, Backend, "be", [Server("a", FakeEndpoint())], maxPending=-1)
        self.assertRaises(ConfigError, Backend, "be", [Server("a", FakeEndpoint())], retryBudget=0.2)
        self.assertRaises(ConfigError, RetryBudget, budgetPercent=150)

    def test_nothingInstalled(self) -> None:
        """With no option set, the backend has no breakers and its methods are the class's own."""
        backend = Backend("be", [Server("a", FakeEndpoint())])
        self.assertIsNone(backend.breakers)
        self.assertNotIn("tryAcquire", backend.__dict__)
        self.assertNotIn("enqueue", backend.__dict__)


class DispatchBreakerTests(SynchronousTestCase):
    """The limits turn requests and retries away at once, counted."""

    def test_maxPending(self) -> None:
        """Beyond maxPending queued, a dispatch fails at once with PQ."""
        f = Fixture(self, maxconn=1, maxPending=1)
        f.dispatch().start()
        queued = f.dispatch().start()
        self.assertEqual(f.dispatches[1].state, DispatchState.QUEUED)
        third = failed(self, f.dispatch().start())
        self.assertEqual((third.termination, third.status), (PENDING_OVERFLOW, 503))
        self.assertEqual(f.backend.breakers.trips["maxPending"], 1)
        self.assertNoResult(queued)

    def test_maxRequests(self) -> None:
        """Beyond maxRequests holding a slot, a dispatch fails at once with PC."""
        f = Fixture(self, count=3, maxRequests=2)
        f.dispatch().start()
        f.dispatch().start()
        error = failed(self, f.dispatch().start())
        self.assertEqual(error.termination, REQUEST_OVERFLOW)
        self.assertEqual(f.backend.breakers.trips["maxRequests"], 1)

    def test_connectFailureNotListed(self) -> None:
        """Without connect-failure in retryOn, a refused connect is not retried."""
        f = Fixture(self, count=2, retryOn=("response-timeout",))
        d = f.dispatch().start()
        f.endpoints[0].fail()
        self.assertEqual(failed(self, d).termination, SERVER_REFUSED)
        self.assertEqual(f.endpoints[1].attempts, [])

    def test_maxRetries(self) -> None:
        """With maxRetries=1, a second concurrent retry is refused; the first's ends on release."""
        f = Fixture(self, count=2, maxRetries=1)
        first, second = f.dispatch(), f.dispatch()
        d1, d2 = first.start(), second.start()
        f.endpoints[0].fail()  # first retries on b
        f.endpoints[1].fail()  # second tried b first: refused its retry
        self.assertEqual(failed(self, d2).termination, SERVER_REFUSED)
        breakers = f.backend.breakers
        self.assertEqual((breakers.trips["maxRetries"], breakers.retried, len(breakers.retrying)),
                         (1, {"connect-failure": 1}, 1))
        f.endpoints[1].succeed()
        self.successResultOf(d1)
        first.release()
        self.assertEqual(len(breakers.retrying), 0)

    def test_retryBudget(self) -> None:
        """The budget allows max(minRetryConcurrency, percent of active) retries at once."""
        f = Fixture(self, count=2, retryBudget=RetryBudget(budgetPercent=0, minRetryConcurrency=0))
        d = f.dispatch().start()
        f.endpoints[0].fail()
        failed(self, d)
        self.assertEqual(f.backend.breakers.trips["retryBudget"], 1)
        self.assertEqual(f.endpoints[1].attempts, [])


class HTTPRetryTests(SynchronousTestCase):
    """retryOn in http mode: statuses, response-timeout, empty and junk responses."""

    def test_statusRetried(self) -> None:
        """A GET answered with a listed status is retried elsewhere; the client sees only the second answer."""
        h = Harness(self, ("s1", "s2"), retryOn=(503,))
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect("s1")
        self.assertIsInstance(server, RetryingServerProtocol)
        server.dataReceived(UNAVAILABLE)
        self.assertTrue(serverSide.disconnecting)
        server.connectionLost(DONE)
        server2, _ = h.connect("s2")
        server2.dataReceived(OK)
        self.assertEqual(client.value(), OK)
        self.assertEqual(h.backend.breakers.retried, {"503": 1})

    def test_statusPassedWhenNoRetryLeft(self) -> None:
        """With no retry left the server's own response goes to the client."""
        h = Harness(self, ("s1",), retryOn=(503,), retries=0)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, _ = h.connect()
        server.dataReceived(UNAVAILABLE)
        self.assertEqual(client.value(), UNAVAILABLE)

    def test_postStatusNotRetried(self) -> None:
        """A POST answered with a listed status is passed on."""
        h = Harness(self, ("s1", "s2"), retryOn=(503,))
        proto, client = h.accept()
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
        server, _ = h.connect("s1")
        server.dataReceived(UNAVAILABLE)
        self.assertEqual(client.value(), UNAVAILABLE)
        self.assertEqual(h.endpoints["s2"].attempts, [])

    def test_plainProtocolWithoutStatuses(self) -> None:
        """A backend that lists no status gets plain server connections."""
        h = Harness(self, ("s1",), retryOn=("response-timeout",))
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, _ = h.connect()
        self.assertIs(type(server), HTTPServerProtocol)
        server.dataReceived(OK)

    def test_responseTimeoutRetried(self) -> None:
        """A server silent past timeoutServer is left for another, with response-timeout listed."""
        h = Harness(self, ("s1", "s2"), timeoutServer=1, retryOn=("response-timeout",))
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect("s1")
        for _ in range(6):
            h.reactor.advance(0.25)
        self.assertTrue(serverSide.disconnecting)
        server.connectionLost(DONE)
        server2, _ = h.connect("s2")
        server2.dataReceived(OK)
        self.assertEqual(client.value(), OK)

    def test_emptyResponseNotListed(self) -> None:
        """Without empty-response, a server closing before the head gets 502 at once."""
        h = Harness(self, ("s1", "s2"), retryOn=("connect-failure",))
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, _ = h.connect("s1")
        server.connectionLost(DONE)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 "))
        self.assertEqual(h.endpoints["s2"].attempts, [])

    def test_junkResponseRetried(self) -> None:
        """With junk-response listed, an invalid head is retried elsewhere."""
        h = Harness(self, ("s1", "s2"), retryOn=("junk-response",))
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, _ = h.connect("s1")
        server.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")
        server.connectionLost(DONE)
        server2, _ = h.connect("s2")
        server2.dataReceived(OK)
        self.assertEqual(client.value(), OK)
