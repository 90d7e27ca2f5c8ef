"""
Tests for L{lbkit._dispatch}: choosing a server, queueing, connecting and
retrying, with L{FakeEndpoint} servers on a L{MemoryReactorClock}.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectBindError
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Context, Server, ServerState
from lbkit._dispatch import (
    CONNECT_TIMEOUT,
    OUT_OF_RESOURCES,
    QUEUE_TIMEOUT,
    SERVER_REFUSED,
    Dispatch,
    DispatchFailed,
    DispatchState,
)
from lbkit.error import NoServerAvailable, QueueTimeout
from lbkit.testing import FakeEndpoint
from tests.helpers import StopFailsReactor

CLIENT = IPv4Address("TCP", "198.51.100.7", 51000)


class _Recorded(Dispatch[Protocol]):
    """A L{Dispatch} that records each L{Deferred} it returns, for the clean-up."""

    def __init__(self, results: list[Deferred[Any]], *args: Any, **kwargs: Any) -> None:
        Dispatch.__init__(self, *args, **kwargs)
        self._results = results

    def _begin(self) -> Deferred[Any]:
        d = Dispatch._begin(self)
        self._results.append(d)
        return d


class Fixture:
    """A backend of FakeEndpoint servers, and dispatches made for it."""

    def __init__(self, testCase: SynchronousTestCase, count: int = 1, **backendArgs: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.endpoints = [FakeEndpoint() for _ in range(count)]
        maxconn = backendArgs.pop("maxconn", None)
        self.servers = [Server(name, endpoint, maxconn=maxconn) for name, endpoint in zip("abcdefgh", self.endpoints)]  # noqa: B905
        self.backend = Backend("be", self.servers, **backendArgs)
        #: (server, protocol) for each protocol the dispatches built
        self.built: list[tuple[Server, Protocol]] = []
        self.chosen: list[Server] = []
        self.outcomes: list[tuple[str, bool]] = []
        for server in self.servers:
            server.addObserver(lambda s, ok, why: self.outcomes.append((s.name, ok)))
        self.dispatches: list[Dispatch[Protocol]] = []
        self.results: list[Deferred[Any]] = []
        testCase.addCleanup(self._cleanUp, testCase)

    def _protocol(self, server: Server) -> Protocol:
        protocol = Protocol()
        self.built.append((server, protocol))
        return protocol

    def dispatch(self, **kwargs: Any) -> Dispatch[Protocol]:
        kwargs.setdefault("serverChosen", self.chosen.append)
        dispatch: Dispatch[Protocol] = _Recorded(self.results,
            self.backend, Context(client=CLIENT, frontend="fe"), self.reactor, self._protocol, **kwargs
        )
        self.dispatches.append(dispatch)
        return dispatch

    def active(self) -> list[int]:
        return [s.active for s in self.servers]

    def _cleanUp(self, testCase: SynchronousTestCase) -> None:
        for dispatch in self.dispatches:
            dispatch.cancel()
            dispatch.release()
        for d in self.results:
            d.addErrback(lambda f: f.trap(CancelledError))
        testCase.assertEqual(self.reactor.getDelayedCalls(), [])
        testCase.assertEqual(self.active(), [0] * len(self.servers))


def failed(testCase: SynchronousTestCase, d: Deferred[Any]) -> DispatchFailed:
    """The L{DispatchFailed} C{d} failed with."""
    error = testCase.failureResultOf(d, DispatchFailed).value
    assert isinstance(error, DispatchFailed)
    return error


class ChooseAndConnectTests(SynchronousTestCase):
    """A free server is chosen and connected to."""

    def test_connects(self) -> None:
        """The Deferred fires with the server and the connected protocol, its slot held."""
        f = Fixture(self)
        dispatch = f.dispatch()
        d = dispatch.start()
        self.assertNoResult(d)
        self.assertEqual((dispatch.state, dispatch.attempts, dispatch.holding), (DispatchState.CONNECTING, 1, True))
        self.assertEqual((f.chosen, f.active()), (f.servers, [1]))
        f.reactor.advance(0.25)
        f.endpoints[0].succeed()
        server, protocol = self.successResultOf(d)
        self.assertEqual([(server, protocol)], f.built)
        self.assertIs(server, f.servers[0])
        self.assertEqual(dispatch.state, DispatchState.CONNECTED)
        self.assertEqual((dispatch.chosenAt, dispatch.connectedAt, dispatch.waited), (0.0, 0.25, 0.0))
        self.assertEqual(f.outcomes, [("a", True)])
        self.assertEqual(dispatch.tried, {f.servers[0]})

    def test_releaseOnce(self) -> None:
        """After success the slot is the caller's to give back, once."""
        f = Fixture(self)
        dispatch = f.dispatch()
        d = dispatch.start()
        f.endpoints[0].succeed()
        self.successResultOf(d)
        dispatch.release()
        dispatch.release()
        self.assertEqual((f.active(), dispatch.holding), ([0], False))

    def test_noServer(self) -> None:
        """With every server down it fails at once with SC, and counts it on the backend."""
        f = Fixture(self)
        f.servers[0].setState(ServerState.MAINT)
        d = f.dispatch().start()
        error = failed(self, d)
        self.assertEqual((error.termination, error.status), (SERVER_REFUSED, 503))
        assert error.reason is not None
        self.assertTrue(error.reason.check(NoServerAvailable))
        self.assertEqual((f.backend.noServerCount, f.endpoints[0].attempts, f.active()), (1, [], [0]))

    def test_pooledFirst(self) -> None:
        """A protocol from the pool is used without connecting, and is not reported to passive checks."""
        f = Fixture(self)
        kept = Protocol()
        dispatch = f.dispatch(pooled=lambda server: kept)
        f.reactor.advance(2)
        self.assertEqual(self.successResultOf(dispatch.start()), (f.servers[0], kept))
        self.assertEqual((dispatch.reused, dispatch.connectedAt, dispatch.chosenAt), (True, 2.0, 2.0))
        self.assertEqual((f.endpoints[0].attempts, f.outcomes, f.active()), ([], [], [1]))

    def test_poolEmpty(self) -> None:
        """When the pool has nothing for the server, it connects."""
        f = Fixture(self)
        asked: list[Server] = []
        dispatch = f.dispatch(pooled=lambda server: asked.append(server))
        d = dispatch.start()
        f.endpoints[0].succeed()
        self.successResultOf(d)
        self.assertEqual((asked, dispatch.reused), (f.servers, False))

    def test_startTwice(self) -> None:
        """A dispatch runs once at a time."""
        f = Fixture(self)
        dispatch = f.dispatch()
        dispatch.start()
        self.assertRaises(RuntimeError, dispatch.start)

    def test_raisingHookReleasesSlot(self) -> None:
        """A serverChosen hook that raises fails the dispatch with its error and gives the slot back."""
        f = Fixture(self)

        def hook(server: Server) -> None:
            raise ZeroDivisionError("hook bug")

        dispatch = f.dispatch(serverChosen=hook)
        self.failureResultOf(dispatch.start(), ZeroDivisionError)
        self.assertEqual((dispatch.state, dispatch.holding, f.active()), (DispatchState.FAILED, False, [0]))
        self.assertEqual(f.endpoints[0].attempts, [])


class QueueTests(SynchronousTestCase):
    """When every server is full, the dispatch waits in the backend's queue."""

    def test_waitsForSlot(self) -> None:
        """A waiter gets the slot the first connection gives back, and counts its time in the queue."""
        f = Fixture(self, maxconn=1)
        first = f.dispatch()
        d1 = first.start()
        f.endpoints[0].succeed()
        self.successResultOf(d1)
        f.reactor.advance(1)
        second = f.dispatch()
        d2 = second.start()
        self.assertEqual((second.state, second.queuedAt, second.server), (DispatchState.QUEUED, 1.0, None))
        f.reactor.advance(2)
        first.release()
        self.assertEqual((second.state, f.active()), (DispatchState.CONNECTING, [1]))
        f.endpoints[0].succeed()
        self.successResultOf(d2)
        self.assertEqual((second.waited, second.chosenAt), (2.0, 3.0))

    def test_queueTimeout(self) -> None:
        """No slot within timeoutQueue: sQ, after waiting that long."""
        f = Fixture(self, maxconn=1, timeoutQueue=3)
        first = f.dispatch()
        first.start()
        second = f.dispatch()
        d2 = second.start()
        f.reactor.advance(3)
        error = failed(self, d2)
        self.assertEqual((error.termination, second.waited, second.holding), (QUEUE_TIMEOUT, 3.0, False))
        assert error.reason is not None
        self.assertTrue(error.reason.check(QueueTimeout))
        self.assertEqual(f.backend.queueLength(), 0)

    def test_nothingCanServe(self) -> None:
        """A waiter whose servers all went down gets SC at once."""
        f = Fixture(self, maxconn=1)
        first = f.dispatch()
        first.start()
        d2 = f.dispatch().start()
        f.servers[0].setState(ServerState.DOWN)
        self.assertEqual(failed(self, d2).termination, SERVER_REFUSED)

    def test_cancelWhileQueued(self) -> None:
        """Cancelling a waiter leaves the queue; the next free slot is not given to it."""
        f = Fixture(self, maxconn=1)
        first = f.dispatch()
        first.start()
        f.endpoints[0].succeed()
        second = f.dispatch()
        d2 = second.start()
        f.reactor.advance(1)
        second.cancel()
        self.failureResultOf(d2, CancelledError)
        self.assertEqual((second.state, second.waited, f.backend.queueLength()), (DispatchState.CANCELLED, 1.0, 0))
        first.release()
        self.assertEqual((f.active(), second.holding, len(f.endpoints[0].attempts)), ([0], False, 1))


class RetryTests(SynchronousTestCase):
    """A failed connect is retried on another server, up to the backend's retries."""

    def test_refusedRetriesAnother(self) -> None:
        """After a refusal the next server is tried; the first is charged and its slot freed."""
        f = Fixture(self, count=2)
        dispatch = f.dispatch()
        d = dispatch.start()
        f.endpoints[0].fail()
        self.assertEqual((f.chosen, dispatch.attempts, f.active()), (f.servers, 2, [0, 1]))
        self.assertEqual(dispatch.tried, set(f.servers))
        f.endpoints[1].succeed()
        self.assertIs(self.successResultOf(d)[0], f.servers[1])
        a = f.servers[0]
        self.assertEqual((a.connectFailures, a.retries), (1, 1))
        self.assertEqual(f.outcomes, [("a", False), ("b", True)])

    def test_refusedEverywhere(self) -> None:
        """Refused on every attempt: SC after 1 + retries attempts, nothing held."""
        f = Fixture(self, retries=2)
        dispatch = f.dispatch()
        d = dispatch.start()
        for _ in range(3):
            f.endpoints[0].fail()
        error = failed(self, d)
        self.assertEqual((error.termination, error.status, dispatch.attempts), (SERVER_REFUSED, 503, 3))
        self.assertEqual((f.servers[0].connectFailures, len(f.endpoints[0].attempts), f.active()), (3, 3, [0]))

    def test_timedOut(self) -> None:
        """A connect that outlasts timeoutConnect is abandoned; the last one ends as sC."""
        f = Fixture(self, retries=1, timeoutConnect=2)
        d = f.dispatch().start()
        f.reactor.advance(2)
        self.assertTrue(f.endpoints[0].attempts[0].cancelled)
        f.reactor.advance(2)
        self.assertEqual(failed(self, d).termination, CONNECT_TIMEOUT)
        self.assertEqual(f.servers[0].connectFailures, 2)

    def test_outOfResources(self) -> None:
        """lbkit's own shortage (EMFILE) ends as RC, charging the server nothing."""
        f = Fixture(self, count=2, retries=1)
        dispatch = f.dispatch()
        d = dispatch.start()
        shortage = ConnectBindError(errno.EMFILE, "Too many open files")
        f.endpoints[0].fail(shortage)
        f.endpoints[1].fail(shortage)
        self.assertEqual(failed(self, d).termination, OUT_OF_RESOURCES)
        self.assertEqual([(s.connectFailures, s.retries) for s in f.servers], [(0, 0), (0, 0)])
        self.assertEqual(f.outcomes, [])

    def test_cancelWhileConnecting(self) -> None:
        """Cancelling stops the connect; nobody is charged and the slot is freed once."""
        f = Fixture(self)
        dispatch = f.dispatch()
        d = dispatch.start()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(f.endpoints[0].attempts[0].cancelled)
        self.assertEqual((dispatch.state, f.active(), f.servers[0].connectFailures), (DispatchState.CANCELLED, [0], 0))
        self.assertEqual(f.outcomes, [])

    def test_cancelDirectConnect(self) -> None:
        """A cancelled IPv4 connect whose connector reports its own error is still only cancelled."""
        reactor = StopFailsReactor()
        server = Server("s", "127.0.0.1:9")
        backend = Backend("be", [server])
        dispatch: Dispatch[Protocol] = Dispatch(backend, Context(), reactor, lambda s: Protocol())
        d = dispatch.start()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual((server.active, server.connectFailures, len(reactor.tcpClients)), (0, 0, 1))
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_retryAfterLaterFailure(self) -> None:
        """retry(): the connection failed later; the next server is chosen, counting a retry."""
        f = Fixture(self, count=2)
        dispatch = f.dispatch()
        d = dispatch.start()
        f.endpoints[0].succeed()
        self.successResultOf(d)
        d = dispatch.retry("SH", 502)
        self.assertEqual((f.active(), dispatch.attempts, f.servers[0].retries), ([0, 1], 2, 1))
        f.endpoints[1].succeed()
        self.assertIs(self.successResultOf(d)[0], f.servers[1])

    def test_retryExhausted(self) -> None:
        """retry() with no retry left fails with the caller's termination and status."""
        f = Fixture(self, retries=0)
        dispatch = f.dispatch()
        d = dispatch.start()
        f.endpoints[0].succeed()
        self.successResultOf(d)
        error = failed(self, dispatch.retry("SH", 502))
        self.assertEqual((error.termination, error.status, error.reason), ("SH", 502, None))
        self.assertEqual((f.active(), dispatch.holding), ([0], False))

    def test_again(self) -> None:
        """again(): a dead pooled connection; the same server is connected to, not counted as a new attempt."""
        f = Fixture(self, count=2)
        dispatch = f.dispatch(pooled=lambda server: Protocol())
        self.successResultOf(dispatch.start())
        d = dispatch.again("SH", 502)
        self.assertEqual((f.chosen, dispatch.attempts, f.active()), ([f.servers[0]], 1, [1, 0]))
        f.endpoints[0].succeed()
        self.assertIs(self.successResultOf(d)[0], f.servers[0])
        self.assertFalse(dispatch.reused)

    def test_againSlotTaken(self) -> None:
        """again() when a waiter took the server's slot: as retry, so this one waits its turn."""
        f = Fixture(self, maxconn=1, retries=1)
        pool = [Protocol()]
        dispatch = f.dispatch(pooled=lambda server: pool.pop() if pool else None)
        self.successResultOf(dispatch.start())
        waiter = f.dispatch()
        waiting = waiter.start()
        d = dispatch.again("SH", 502)
        self.assertEqual((waiter.state, dispatch.state, dispatch.attempts), (DispatchState.CONNECTING, DispatchState.QUEUED, 0))
        waiter.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.assertEqual((dispatch.state, dispatch.attempts), (DispatchState.CONNECTING, 1))
        f.endpoints[0].succeed()
        self.successResultOf(d)





class RunTests(SynchronousTestCase):
    """
    run(), runRetry() and runAgain() report to callables instead of a
    Deferred (http mode), and reset() reuses a dispatch for the next request.
    """

    def setUp(self) -> None:
        self.got: list[Any] = []

    def dispatch(self, f: Fixture, **kwargs: Any) -> Dispatch[Protocol]:
        return f.dispatch(
            connected=lambda server, protocol: self.got.append((server, protocol)),
            failed=lambda reason: self.got.append(reason.value),
            **kwargs,
        )

    def test_pooledSynchronously(self) -> None:
        """With a pooled protocol, connected is called before run() returns, and no Deferred is made."""
        f = Fixture(self)
        kept = Protocol()
        dispatch = self.dispatch(f, pooled=lambda server: kept)
        dispatch.run()
        self.assertEqual((self.got, f.results, dispatch.state), ([(f.servers[0], kept)], [], DispatchState.CONNECTED))
        dispatch.release()

    def test_connectedLater(self) -> None:
        """A connect reports when it is made, the slot held."""
        f = Fixture(self)
        dispatch = self.dispatch(f)
        dispatch.run()
        self.assertEqual((self.got, dispatch.state), ([], DispatchState.CONNECTING))
        f.endpoints[0].succeed()
        [(server, protocol)] = self.got
        self.assertEqual((server, dispatch.holding, f.active()), (f.servers[0], True, [1]))
        dispatch.release()

    def test_failedReported(self) -> None:
        """No server: failed gets the DispatchFailed, synchronously."""
        f = Fixture(self)
        f.servers[0].setState(ServerState.MAINT)
        self.dispatch(f).run()
        [error] = self.got
        self.assertIsInstance(error, DispatchFailed)
        self.assertEqual(error.termination, SERVER_REFUSED)

    def test_cancelNotReported(self) -> None:
        """A cancelled run reports nothing and gives the slot back."""
        f = Fixture(self)
        dispatch = self.dispatch(f)
        dispatch.run()
        dispatch.cancel()
        self.assertEqual((self.got, dispatch.state, f.active()), ([], DispatchState.CANCELLED, [0]))

    def test_connectedRaises(self) -> None:
        """An error in the connected callable goes to failed; the caller still holds the slot to give back."""
        f = Fixture(self)
        errors: list[Any] = []

        def connected(server: Server, protocol: Protocol) -> None:
            raise ZeroDivisionError("caller bug")

        dispatch = f.dispatch(pooled=lambda server: Protocol(), connected=connected, failed=errors.append)
        dispatch.run()
        [reason] = errors
        self.assertTrue(reason.check(ZeroDivisionError))
        self.assertTrue(dispatch.holding)
        dispatch.release()

    def test_resetReuses(self) -> None:
        """reset() makes a finished dispatch new: attempts, times and server start over."""
        f = Fixture(self, count=2)
        dispatch = self.dispatch(f, pooled=lambda server: Protocol())
        dispatch.run()
        dispatch.release()
        f.reactor.advance(5)
        dispatch.reset(f.backend, Context(client=CLIENT, frontend="fe"))
        self.assertEqual((dispatch.state, dispatch.server, dispatch.attempts, dispatch.chosenAt), (DispatchState.IDLE, None, 0, -1.0))
        dispatch.run()
        self.assertEqual((len(self.got), dispatch.attempts, dispatch.chosenAt), (2, 1, 5.0))
        self.assertEqual([server for server, _ in self.got], f.servers)  # round robin went on
        dispatch.release()

    def test_runRetryAndAgain(self) -> None:
        """runRetry() chooses another server, runAgain() the same one, both reporting to the callables."""
        f = Fixture(self, count=2)
        dispatch = self.dispatch(f, pooled=lambda server: Protocol())
        dispatch.run()
        dispatch.runAgain("SH", 502)
        f.endpoints[0].succeed()
        dispatch.runRetry("SH", 502)
        self.assertEqual([server.name for server, _ in self.got], ["a", "a", "b"])
        self.assertEqual(dispatch.attempts, 2)
        dispatch.release()

    def test_needsCallables(self) -> None:
        """run() without the callables, or while running, raises."""
        f = Fixture(self)
        self.assertRaises(TypeError, f.dispatch().run)
        dispatch = self.dispatch(f)
        dispatch.run()
        self.assertRaises(RuntimeError, dispatch.run)
        self.assertRaises(RuntimeError, dispatch.reset, f.backend, Context())
