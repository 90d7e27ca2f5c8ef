"""
Tests for L{lbkit._model}: servers, backends, the connection queue and
address parsing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from lbkit import Backend, Context, Server, ServerState
from lbkit._address import parseAddress
from lbkit.error import ConfigError, NoServerAvailable, QueueTimeout
from lbkit.interfaces import IServerListener
from lbkit.testing import FakeEndpoint


@implementer(IServerListener)
class RecordingListener:
    """Records every change it is told about."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def stateChanged(self, server: Server, old: ServerState, new: ServerState, reason: str) -> None:
        self.events.append(("state", server, old, new, reason))

    def weightChanged(self, server: Server, old: int, new: int) -> None:
        self.events.append(("weight", server, old, new))


def acquire(backend: Backend) -> Server:
    """Reserve a slot, failing the test if none is free."""
    server = backend.tryAcquire(Context())
    assert server is not None
    return server


class ParseAddressTests(SynchronousTestCase):
    """
    Tests for L{parseAddress}.
    """

    def test_hostAndPort(self) -> None:
        """A name or IPv4 address and a port are split."""
        self.assertEqual(parseAddress("127.0.0.1:80"), ("127.0.0.1", 80))
        self.assertEqual(parseAddress("example.com:65535"), ("example.com", 65535))

    def test_bracketedIPv6(self) -> None:
        """An IPv6 address is written in brackets."""
        self.assertEqual(parseAddress("[::1]:8080"), ("::1", 8080))

    def test_errors(self) -> None:
        """Every malformed address raises ConfigError naming it."""
        for bad in [
            "127.0.0.1",
            ":80",
            "host:",
            "host:http",
            "host:0",
            "host:65536",
            "::1:80",
            "[::1]80",
            "[::1",
            "[nothost]:80",
        ]:
            e = self.assertRaises(ConfigError, parseAddress, bad)
            self.assertIn(repr(bad), str(e))

    def test_notAString(self) -> None:
        """A non-string address raises ConfigError."""
        self.assertRaises(ConfigError, parseAddress, 80)


class ServerTests(SynchronousTestCase):
    """
    Tests for L{Server}.
    """

    def test_endpointAddress(self) -> None:
        """A server may be given an endpoint instead of an address."""
        endpoint = FakeEndpoint()
        server = Server("a", endpoint)
        self.assertIs(server.endpoint(None), endpoint)

    def test_badSettings(self) -> None:
        """Out-of-range weight, maxconn and sendProxy raise ConfigError."""
        self.assertRaises(ConfigError, Server, "", "127.0.0.1:1")
        self.assertRaises(ConfigError, Server, "a", "127.0.0.1:1", weight=257)
        self.assertRaises(ConfigError, Server, "a", "127.0.0.1:1", weight=True)
        self.assertRaises(ConfigError, Server, "a", "127.0.0.1:1", maxconn=0)
        self.assertRaises(ConfigError, Server, "a", "127.0.0.1:1", sendProxy=3)

    def test_setWeightNotifiesListeners(self) -> None:
        """A new weight is announced to every listener, once."""
        server = Server("a", "127.0.0.1:1")
        listener = RecordingListener()
        server.addListener(listener)
        server.setWeight(7)
        server.setWeight(7)
        self.assertEqual(listener.events, [("weight", server, 1, 7)])
        self.assertEqual(server.weight, 7)

    def test_setWeightOutOfRange(self) -> None:
        """A weight outside 0-256 is refused."""
        server = Server("a", "127.0.0.1:1")
        self.assertRaises(ValueError, server.setWeight, 300)
        self.assertEqual(server.weight, 1)

    def test_setStateNotifiesListeners(self) -> None:
        """A state change is announced with its reason; the same state again is not."""
        server = Server("a", "127.0.0.1:1")
        listener = RecordingListener()
        server.addListener(listener)
        server.setState(ServerState.DOWN, "check failed")
        server.setState(ServerState.DOWN, "check failed")
        self.assertEqual(listener.events, [("state", server, ServerState.UP, ServerState.DOWN, "check failed")])

    def test_removeListener(self) -> None:
        """A removed listener hears nothing more."""
        server = Server("a", "127.0.0.1:1")
        listener = RecordingListener()
        server.addListener(listener)
        server.removeListener(listener)
        server.setWeight(3)
        self.assertEqual(listener.events, [])

    def test_observe(self) -> None:
        """Live-traffic outcomes reach every observer."""
        server = Server("a", "127.0.0.1:1")
        seen: list[tuple[Server, bool, str]] = []
        server.addObserver(lambda *args: seen.append(args))
        server.observe(False, "Layer4 connection problem")
        server.observe(True)
        self.assertEqual(seen, [(server, False, "Layer4 connection problem"), (server, True, "")])


class BackendChoiceTests(SynchronousTestCase):
    """
    Which servers a L{Backend} chooses.
    """

    def test_badSettings(self) -> None:
        """No servers, duplicate names, reused servers and bad retries raise ConfigError."""
        self.assertRaises(ConfigError, Backend, "be", [])
        self.assertRaises(ConfigError, Backend, "be", [Server("a", "127.0.0.1:1"), Server("a", "127.0.0.1:2")])
        server = Server("a", "127.0.0.1:1")
        Backend("one", [server])
        self.assertRaises(ConfigError, Backend, "two", [server])
        self.assertRaises(ConfigError, Backend, "be", [Server("b", "127.0.0.1:1")], retries=-1)

    def test_backupsOnlyWithoutPrimary(self) -> None:
        """Backup servers are used only when no normal server is UP, the first one only."""
        a, b, c = Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2", backup=True), Server("c", "127.0.0.1:3", backup=True)
        backend = Backend("be", [a, b, c])
        self.assertEqual(list(backend.eligible()), [a])
        a.setState(ServerState.DOWN)
        self.assertEqual(list(backend.eligible()), [b])
        self.assertIs(acquire(backend), b)
        a.setState(ServerState.UP)
        self.assertEqual(list(backend.eligible()), [a])

    def test_allBackups(self) -> None:
        """With allBackups, every backup server takes turns when the primaries are down."""
        a, b, c = Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2", backup=True), Server("c", "127.0.0.1:3", backup=True)
        backend = Backend("be", [a, b, c], allBackups=True)
        a.setState(ServerState.MAINT)
        self.assertEqual(list(backend.eligible()), [b, c])
        self.assertEqual({acquire(backend).name for _ in range(4)}, {"b", "c"})

    def test_downAndMaintNeverChosen(self) -> None:
        """DOWN and MAINT servers never get a connection."""
        a, b, c = Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2"), Server("c", "127.0.0.1:3")
        backend = Backend("be", [a, b, c])
        a.setState(ServerState.DOWN)
        c.setState(ServerState.MAINT)
        self.assertEqual({acquire(backend).name for _ in range(6)}, {"b"})

    def test_drainNotChosenForNewTraffic(self) -> None:
        """A draining server takes no new connections."""
        a, b = Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2")
        backend = Backend("be", [a, b])
        a.setState(ServerState.DRAIN)
        self.assertEqual({acquire(backend).name for _ in range(4)}, {"b"})

    def test_zeroWeightNotChosen(self) -> None:
        """A server of weight 0 takes no new connections."""
        a, b = Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2")
        backend = Backend("be", [a, b])
        a.setWeight(0)
        self.assertEqual({acquire(backend).name for _ in range(4)}, {"b"})

    def test_noServerAvailable(self) -> None:
        """With every server unusable, tryAcquire raises NoServerAvailable."""
        a, b = Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2", backup=True)
        backend = Backend("be", [a, b])
        a.setState(ServerState.DOWN)
        b.setState(ServerState.MAINT)
        self.assertRaises(NoServerAvailable, backend.tryAcquire, Context())

    def test_triedServersSkipped(self) -> None:
        """A server already tried for a connection is not chosen again."""
        a, b = Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2")
        backend = Backend("be", [a, b])
        context = Context(tried={a})
        self.assertEqual({backend.tryAcquire(context) for _ in range(3)}, {b})
        context.tried.add(b)
        self.assertRaises(NoServerAvailable, backend.tryAcquire, context)

    def test_maxconnRespected(self) -> None:
        """A server never holds more than maxconn connections; release frees a slot."""
        a = Server("a", "127.0.0.1:1", maxconn=2)
        backend = Backend("be", [a])
        self.assertIs(acquire(backend), a)
        self.assertIs(acquire(backend), a)
        self.assertIsNone(backend.tryAcquire(Context()))
        self.assertEqual((a.active, a.maxActive, a.total), (2, 2, 2))
        backend.release(a)
        self.assertIs(acquire(backend), a)

    def test_fullServerSkipped(self) -> None:
        """A full server is skipped while another has room."""
        a, b = Server("a", "127.0.0.1:1", maxconn=1), Server("b", "127.0.0.1:2")
        backend = Backend("be", [a, b])
        self.assertIs(acquire(backend), a)
        self.assertEqual({acquire(backend).name for _ in range(3)}, {"b"})

    def test_weightChangeForwarded(self) -> None:
        """Backend listeners hear of weight changes of its servers."""
        a = Server("a", "127.0.0.1:1")
        backend = Backend("be", [a])
        listener = RecordingListener()
        backend.addListener(listener)
        a.setWeight(5)
        a.setState(ServerState.DRAIN, "admin")
        backend.removeListener(listener)
        a.setWeight(6)
        self.assertEqual(
            listener.events,
            [("weight", a, 1, 5), ("state", a, ServerState.UP, ServerState.DRAIN, "admin")],
        )


class BackendQueueTests(SynchronousTestCase):
    """
    The queue of connections waiting for a free slot.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.server = Server("a", "127.0.0.1:1", maxconn=1)
        self.backend = Backend("be", [self.server], timeoutQueue=3)
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def test_firstComeFirstServed(self) -> None:
        """Waiters get freed slots in arrival order, one per slot."""
        acquire(self.backend)
        first = self.backend.enqueue(Context(), self.clock)
        second = self.backend.enqueue(Context(), self.clock)
        self.assertEqual(self.backend.queueLength(), 2)
        self.assertNoResult(first)
        self.backend.release(self.server)
        self.assertIs(self.successResultOf(first), self.server)
        self.assertNoResult(second)
        self.backend.release(self.server)
        self.assertIs(self.successResultOf(second), self.server)
        self.assertEqual(self.backend.queueLength(), 0)
        self.backend.release(self.server)
        self.assertEqual(self.server.active, 0)

    def test_newcomerWaitsBehindQueue(self) -> None:
        """While some connection waits, a new one does not jump the queue."""
        other = Server("b", "127.0.0.1:2", maxconn=1)
        backend = Backend("be2", [other], timeoutQueue=3)
        acquire(backend)
        waiter = backend.enqueue(Context(), self.clock)
        other.active -= 1  # a slot frees without a release (e.g. a weight change)
        self.assertIsNone(backend.tryAcquire(Context()))
        other.setWeight(2)  # any change dispatches the queue
        self.assertIs(self.successResultOf(waiter), other)
        backend.release(other)

    def test_timeout(self) -> None:
        """A waiter fails with QueueTimeout after timeoutQueue seconds and leaves the queue."""
        acquire(self.backend)
        waiter = self.backend.enqueue(Context(), self.clock)
        self.clock.advance(2.9)
        self.assertNoResult(waiter)
        self.clock.advance(0.1)
        self.failureResultOf(waiter, QueueTimeout)
        self.assertEqual(self.backend.queueLength(), 0)
        self.backend.release(self.server)
        self.assertEqual(self.server.active, 0)

    def test_cancel(self) -> None:
        """Cancelling a waiter takes it out of the queue."""
        acquire(self.backend)
        waiter = self.backend.enqueue(Context(), self.clock)
        waiter.cancel()
        self.failureResultOf(waiter, CancelledError)
        self.assertEqual(self.backend.queueLength(), 0)
        self.backend.release(self.server)
        self.assertEqual(self.server.active, 0)

    def test_serverBackUpServesQueue(self) -> None:
        """A waiter is served when a server comes back up."""
        a, b = Server("a", "127.0.0.1:1", maxconn=1), Server("b", "127.0.0.1:2", maxconn=1)
        backend = Backend("be2", [a, b], timeoutQueue=3)
        b.setState(ServerState.MAINT)
        acquire(backend)
        waiter = backend.enqueue(Context(), self.clock)
        b.setState(ServerState.UP)
        self.assertIs(self.successResultOf(waiter), b)


class QueueAllDownTests(SynchronousTestCase):
    def test_queuedFailWhenAllDown(self) -> None:
        """When every server goes DOWN, queued connections get their answer at once, in order."""
        clock = Clock()
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
