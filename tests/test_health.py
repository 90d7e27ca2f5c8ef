"""
The health monitor's state machine (rise, fall, inter, fastinter,
downinter, timeouts, passive checks, slow start, admin states) on a
L{Clock}, with fake checks whose Deferreds the tests fire.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

import lbkit.health
from lbkit import Backend, Server, ServerState
from lbkit.error import CheckFailed, ConfigError
from lbkit.health import (
    BaseCheck,
    HealthMonitor,
    HealthService,
    HTTPCheck,
    TCPCheck,
    _agent,
    _base,
    _http,
    _monitor,
    _service,
    _tcp,
    monitorFor,
)
from lbkit.interfaces import IHealthCheck, IServerListener
from lbkit.testing import FakeCheck, FakeSession, RecordingListener


@implementer(IHealthCheck)
class PlainCheck:
    """A check with only what IHealthCheck asks for."""

    interval = 5.0
    rise = 1
    fall = 1
    timeout = 1.0

    def __init__(self) -> None:
        self.probes: list[Deferred[None]] = []

    def check(self, server: Server, reactor: Any) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.probes.append(d)
        return d


class MonitorTestCase(SynchronousTestCase):
    """Builds a server in a backend, a clock, and a monitor on demand."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.server = Server("srv", "127.0.0.1:8000", slowstart=0.0)
        self.backend = Backend("be", [self.server, Server("other", "127.0.0.1:8001")])
        self.recorder = RecordingListener()
        self.server.addListener(self.recorder)
        self.addCleanup(self.assertEqual, self.clock.getDelayedCalls(), [])

    def monitor(self, check: Any, firstDelay: float = 0.0, **kw: Any) -> HealthMonitor:
        monitor = HealthMonitor(self.server, check, self.clock, firstDelay=firstDelay, **kw)
        monitor.start()
        self.addCleanup(monitor.stop)
        return monitor

    def nextCheckIn(self) -> float:
        calls = [c for c in self.clock.getDelayedCalls() if c.func.__name__ == "_runCheck"]
        self.assertEqual(len(calls), 1)
        return calls[0].getTime() - self.clock.seconds()

    def transitions(self) -> list[tuple[str, str]]:
        return [(old, new) for old, new, _ in self.recorder.states]


class RiseFallTests(MonitorTestCase):
    def test_firstCheckAfterFirstDelay(self) -> None:
        """The first check runs after firstDelay, not before."""
        check = FakeCheck(interval=2.0)
        self.monitor(check, firstDelay=0.5)
        self.clock.advance(0.49)
        self.assertEqual(check.probes, [])
        self.clock.advance(0.01)
        self.assertEqual(len(check.probes), 1)
        check.passLast()

    def test_fallFailuresMarkDown(self) -> None:
        """From fully-up, fall consecutive failures take the server DOWN, once."""
        check = FakeCheck(interval=2.0, fall=3, initState="fully-up")
        self.monitor(check)
        for i in range(3):
            self.clock.advance(self.nextCheckIn())
            self.assertEqual(self.server.state, ServerState.UP if i < 2 else ServerState.UP)
            check.failLast()
        self.assertEqual(self.server.state, ServerState.DOWN)
        self.assertEqual(self.transitions(), [("UP", "DOWN")])
        self.assertEqual(
            self.recorder.states[0][2], "Layer7 wrong status, code: 500, check duration: 0ms"
        )

    def test_passResetsFailures(self) -> None:
        """A pass between failures starts the fall count again."""
        check = FakeCheck(interval=2.0, fall=2, initState="fully-up")
        self.monitor(check)
        for outcome in ["fail", "pass", "fail", "pass", "fail"]:
            self.clock.advance(self.nextCheckIn())
            check.failLast() if outcome == "fail" else check.passLast()
        self.assertEqual(self.transitions(), [])

    def test_initUpFirstFailureMarksDown(self) -> None:
        """The default initial state is UP, and the first failed check takes it DOWN (HAProxy)."""
        check = FakeCheck(interval=2.0, fall=3)
        self.monitor(check)
        self.assertEqual(self.server.state, ServerState.UP)
        self.clock.advance(self.nextCheckIn())
        check.failLast()
        self.assertEqual(self.transitions(), [("UP", "DOWN")])

    def test_initUpFirstPassIsFullyUp(self) -> None:
        """After a first pass, a server that started UP needs fall failures."""
        check = FakeCheck(interval=2.0, fall=2)
        self.monitor(check)
        self.clock.advance(self.nextCheckIn())
        check.passLast()
        self.clock.advance(self.nextCheckIn())
        check.failLast()
        self.assertEqual(self.transitions(), [])
        self.clock.advance(self.nextCheckIn())
        check.failLast()
        self.assertEqual(self.transitions(), [("UP", "DOWN")])

    def test_riseToUp(self) -> None:
        """A DOWN server needs rise consecutive passes to come back UP."""
        check = FakeCheck(interval=2.0, rise=3, initState="fully-down")
        self.monitor(check)
        self.assertEqual(self.transitions(), [("UP", "DOWN")])
        for _ in range(2):
            self.clock.advance(self.nextCheckIn())
            check.passLast()
        self.clock.advance(self.nextCheckIn())
        check.failLast()  # the pass count starts again
        for _ in range(2):
            self.clock.advance(self.nextCheckIn())
            check.passLast()
        self.assertEqual(self.server.state, ServerState.DOWN)
        self.clock.advance(self.nextCheckIn())
        self.clock.advance(0.002)
        check.passLast()
        self.assertEqual(self.transitions(), [("UP", "DOWN"), ("DOWN", "UP")])
        self.assertEqual(self.recorder.states[-1][2], "Check passed, check duration: 2ms")

    def test_initDownFirstPassMarksUp(self) -> None:
        """initState="down" starts DOWN, and one pass brings the server UP."""
        check = FakeCheck(interval=2.0, rise=3, initState="down")
        self.monitor(check)
        self.assertEqual(self.server.state, ServerState.DOWN)
        self.clock.advance(self.nextCheckIn())
        check.passLast()
        self.assertEqual(self.server.state, ServerState.UP)

    def test_checkDurationInReason(self) -> None:
        """The reason says how long the check took, HAProxy style."""
        check = FakeCheck(interval=2.0, fall=1, initState="fully-up")
        self.monitor(check)
        self.clock.advance(self.nextCheckIn())
        self.clock.advance(0.003)
        check.failLast()
        self.assertEqual(self.recorder.states, [
            ("UP", "DOWN", "Layer7 wrong status, code: 500, check duration: 3ms"),
        ])
        self.assertEqual(self.server.lastCheck, {  # type: ignore[attr-defined]
            "status": "failed", "reason": "Layer7 wrong status, code: 500",
            "durationMs": 3, "time": self.clock.seconds(),
        })

    def test_timeoutCountsAsFailure(self) -> None:
        """A check that does not answer within timeout is cancelled and counts as a failure."""
        check = FakeCheck(interval=2.0, timeout=1.0, fall=1, initState="fully-up")
        self.monitor(check)
        self.clock.advance(self.nextCheckIn())
        probe = check.probes[0]
        self.clock.advance(0.999)
        self.assertEqual(self.transitions(), [])
        self.clock.advance(0.001)
        self.assertEqual(check.cancelled, [probe])
        self.assertEqual(self.recorder.states, [("UP", "DOWN", "Layer4 timeout, check duration: 1000ms")])

    def test_timeoutDefaultsToInterval(self) -> None:
        """Without timeout=, a check may take one interval (HAProxy without 'timeout check')."""
        self.assertEqual(TCPCheck(interval=3.0).timeout, 3.0)
        self.assertEqual(HTTPCheck(interval=3.0, timeout=None).timeout, 3.0)
        self.assertEqual(TCPCheck().timeout, 2.0)

    def test_checkErrorIsAFailure(self) -> None:
        """A check that raises counts as failed, and the bug is logged."""

        @attrs.frozen
        class Broken(BaseCheck):
            def check(self, server: Server, reactor: Any) -> Deferred[None]:
                raise ZeroDivisionError("oops")

        self.monitor(Broken(fall=1, initState="fully-up"))
        self.clock.advance(self.nextCheckIn())
        self.assertEqual(self.transitions(), [("UP", "DOWN")])
        self.assertIn('Check error, info: "ZeroDivisionError: oops"', self.recorder.states[0][2])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_plainCheckGetsDefaults(self) -> None:
        """A check providing only IHealthCheck gets fastinter = downinter = interval."""
        check = PlainCheck()
        monitor = self.monitor(check)
        self.assertEqual((monitor.fastinter, monitor.downinter, monitor.observe), (5.0, 5.0, None))
        self.clock.advance(self.nextCheckIn())
        check.probes[-1].errback(CheckFailed("no"))
        self.assertEqual(self.nextCheckIn(), 5.0)

    def test_disabledChecksDoNotRun(self) -> None:
        """While server.checkEnabled is False (admin "disable-health") no probe runs."""
        check = FakeCheck(interval=2.0)
        self.monitor(check)
        self.server.checkEnabled = False  # type: ignore[attr-defined]
        self.clock.advance(self.nextCheckIn())
        self.clock.advance(self.nextCheckIn())
        self.assertEqual(check.probes, [])
        self.server.checkEnabled = True  # type: ignore[attr-defined]
        self.clock.advance(self.nextCheckIn())
        self.assertEqual(len(check.probes), 1)
        check.passLast()


class ReentrancyTests(MonitorTestCase):
    def test_listenerStopsMonitor(self) -> None:
        """A listener that stops the monitor when told of a transition leaves no timer behind."""
        self.server.slowstart = 5.0
        check = FakeCheck(interval=1.0, rise=1, fall=1, initState="fully-down")
        monitor = self.monitor(check)

        @implementer(IServerListener)
        class Stopper:
            def stateChanged(self, server: Server, old: ServerState, new: ServerState, reason: str) -> None:
                if new is ServerState.UP:
                    monitor.stop()

            def weightChanged(self, server: Server, old: int, new: int) -> None:
                pass

        self.server.addListener(Stopper())
        self.clock.advance(0)
        check.passLast()
        self.assertEqual(self.server.state, ServerState.UP)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.server.rampFactor, 1.0)


class IntervalTests(MonitorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.check = FakeCheck(interval=10.0, fastinter=1.0, downinter=30.0, rise=2, fall=2,
                               initState="fully-up")
        self.monitor(self.check)
        self.clock.advance(self.nextCheckIn())

    def test_interWhileUp(self) -> None:
        """A healthy UP server is checked every interval."""
        self.check.passLast()
        self.assertEqual(self.nextCheckIn(), 10.0)

    def test_fastinterWhileGoingDown(self) -> None:
        """An UP server with a failure is checked every fastinter."""
        self.check.failLast()
        self.assertEqual(self.nextCheckIn(), 1.0)

    def test_downinterWhileDown(self) -> None:
        """A fully DOWN server is checked every downinter."""
        self.check.failLast()
        self.clock.advance(self.nextCheckIn())
        self.check.failLast()
        self.assertEqual(self.server.state, ServerState.DOWN)
        self.assertEqual(self.nextCheckIn(), 30.0)

    def test_fastinterWhileComingUp(self) -> None:
        """A DOWN server with a pass is checked every fastinter."""
        self.check.failLast()
        self.clock.advance(self.nextCheckIn())
        self.check.failLast()
        self.clock.advance(self.nextCheckIn())
        self.check.passLast()
        self.assertEqual(self.nextCheckIn(), 1.0)

    def test_intervalCountsFromCheckStart(self) -> None:
        """A check that took time shortens the wait, so checks keep their cadence."""
        self.clock.advance(4.0)
        self.check.passLast()
        self.assertEqual(self.nextCheckIn(), 6.0)

    def test_jitter(self) -> None:
        """spread multiplies each interval by 1 +/- spread, from the random source."""
        self.check.passLast()
        monitor = HealthMonitor(self.server, FakeCheck(interval=10.0, spread=0.1), self.clock,
                                random=lambda: 0.75)
        self.assertAlmostEqual(monitor._nextDelay(), 10.5)
        monitor = HealthMonitor(self.server, FakeCheck(interval=10.0, spread=0.1), self.clock,
                                random=lambda: 0.0)
        self.assertAlmostEqual(monitor._nextDelay(), 9.0)


class PassiveTests(MonitorTestCase):
    def test_ignoredWithoutObserve(self) -> None:
        """Without observe=, live traffic errors change nothing."""
        self.monitor(FakeCheck(interval=2.0, errorLimit=1))
        self.server.observe(False, "Layer4 connection problem")
        self.assertEqual(self.transitions(), [])
        self.clock.advance(self.nextCheckIn())

    def test_consecutiveErrorsMarkDown(self) -> None:
        """errorLimit consecutive errors mark the server DOWN between active checks."""
        check = FakeCheck(interval=10.0, fastinter=1.0, rise=2, observe="layer4", errorLimit=3)
        self.monitor(check, firstDelay=5.0)
        for ok in [False, False, True, False, False]:
            self.server.observe(ok, "" if ok else "Layer4 connection problem")
        self.assertEqual(self.transitions(), [])
        self.server.observe(False, "Layer4 connection problem: refused")
        self.assertEqual(self.recorder.states, [(
            "UP", "DOWN",
            'Health analyze, info: "Detected 3 consecutive errors, last one was: '
            'Layer4 connection problem: refused"',
        )])
        # re-tested at fastinter; rise passes bring it back
        self.assertEqual(self.nextCheckIn(), 1.0)
        self.clock.advance(1.0)
        check.passLast()
        self.assertEqual(self.server.state, ServerState.DOWN)
        self.clock.advance(self.nextCheckIn())
        check.passLast()
        self.assertEqual(self.transitions(), [("UP", "DOWN"), ("DOWN", "UP")])

    def test_backoff(self) -> None:
        """After a passive mark-down, no re-test runs before backoff seconds."""
        check = FakeCheck(interval=10.0, fastinter=1.0, observe="layer4", errorLimit=1, backoff=30.0)
        self.monitor(check, firstDelay=5.0)
        self.server.observe(False, "Layer4 connection problem")
        self.assertEqual(self.server.state, ServerState.DOWN)
        self.assertEqual(self.nextCheckIn(), 30.0)
        self.clock.advance(30.0)
        check.passLast()

    def test_inFlightCheckIgnoredAfterMarkDown(self) -> None:
        """A check in flight when traffic marks the server down does not count towards rise."""
        check = FakeCheck(interval=10.0, fastinter=1.0, rise=1, observe="layer4", errorLimit=1)
        self.monitor(check)
        self.clock.advance(0)
        probe = check.probes[0]
        self.server.observe(False, "Layer4 connection problem")
        self.assertEqual(check.cancelled, [probe])
        self.assertEqual(self.server.state, ServerState.DOWN)
        self.assertEqual(self.nextCheckIn(), 1.0)

    def test_layer7CountsResponses(self) -> None:
        """observe="layer7" counts 5xx responses; connects neither count nor reset."""
        self.monitor(FakeCheck(interval=2.0, observe="layer7", errorLimit=2), firstDelay=1.0)
        self.server.observe(False, "Layer7 status 503")
        self.server.observe(True, "")  # a connect: not an answer
        self.server.observe(False, "Layer7 status 500")
        self.assertEqual(self.transitions(), [("UP", "DOWN")])

    def test_layer7GoodResponseResets(self) -> None:
        """observe="layer7": a good response resets the error count."""
        self.monitor(FakeCheck(interval=2.0, observe="layer7", errorLimit=2), firstDelay=1.0)
        self.server.observe(False, "Layer7 status 503")
        self.server.observe(True, "Layer7 status 200")
        self.server.observe(False, "Layer7 status 500")
        self.assertEqual(self.transitions(), [])
        self.clock.advance(self.nextCheckIn())

    def test_layer4IgnoresResponses(self) -> None:
        """observe="layer4" ignores http responses."""
        self.monitor(FakeCheck(interval=2.0, observe="layer4", errorLimit=1), firstDelay=1.0)
        self.server.observe(False, "Layer7 status 503")
        self.assertEqual(self.transitions(), [])
        self.clock.advance(self.nextCheckIn())

    def test_failCheck(self) -> None:
        """onError="fail-check" counts as one failed check and checks at fastinter."""
        check = FakeCheck(interval=10.0, fastinter=1.0, fall=2, initState="fully-up",
                          observe="layer4", errorLimit=1, onError="fail-check")
        self.monitor(check, firstDelay=5.0)
        self.server.observe(False, "Layer4 connection problem")
        self.assertEqual(self.transitions(), [])
        self.assertEqual(self.nextCheckIn(), 1.0)
        self.clock.advance(1.0)
        check.failLast()
        self.assertEqual(self.transitions(), [("UP", "DOWN")])

    def test_suddenDeath(self) -> None:
        """onError="sudden-death": one more failed check takes the server down."""
        check = FakeCheck(interval=10.0, fastinter=1.0, fall=3, initState="fully-up",
                          observe="layer4", errorLimit=1, onError="sudden-death")
        self.monitor(check, firstDelay=5.0)
        self.server.observe(False, "Layer4 connection problem")
        self.assertEqual(self.transitions(), [])
        self.clock.advance(self.nextCheckIn())
        check.failLast()
        self.assertEqual(self.transitions(), [("UP", "DOWN")])

    def test_fastinterOnly(self) -> None:
        """onError="fastinter" only brings the next check closer."""
        check = FakeCheck(interval=10.0, fastinter=1.0, observe="layer4", errorLimit=1,
                          onError="fastinter")
        self.monitor(check, firstDelay=5.0)
        self.server.observe(False, "Layer4 connection problem")
        self.assertEqual(self.transitions(), [])
        self.assertEqual(self.nextCheckIn(), 1.0)
        self.clock.advance(1.0)
        check.passLast()


class SlowStartTests(MonitorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.server.slowstart = 10.0
        self.check = FakeCheck(interval=100.0, rise=1, fall=1, initState="fully-down")
        self.monitor(self.check)

    def test_rampAfterComingUp(self) -> None:
        """A server coming UP ramps its rampFactor from 0 to 1 over slowstart, publishing each step."""
        self.clock.advance(0)
        self.check.passLast()
        self.assertEqual(self.server.state, ServerState.UP)
        seen = [self.server.rampFactor]
        for _ in range(20):
            self.clock.advance(0.5)
            seen.append(self.server.rampFactor)
        self.assertEqual(seen[:3], [0.0, 0.05, 0.1])
        self.assertAlmostEqual(seen[10], 0.5)
        self.assertEqual(seen[-1], 1.0)
        self.assertEqual(len(self.recorder.weights), 21)  # the drop to 0, then 20 steps
        self.assertFalse([c for c in self.clock.getDelayedCalls() if c.func.__name__ == "_rampStep"])
        self.server.setWeight(10)
        self.server.rampFactor = 0.25
        self.assertEqual(self.server.effectiveWeight, 2)
        self.server.rampFactor = 1.0
        self.clock.advance(self.nextCheckIn())
        self.check.passLast()

    def test_downStopsRamp(self) -> None:
        """Going DOWN during slow start ends it (factor back to 1, no timer)."""
        self.server.slowstart = 1000.0
        self.clock.advance(0)
        self.check.passLast()
        self.clock.advance(self.nextCheckIn())
        self.assertEqual(self.server.rampFactor, 0.1)
        self.check.failLast()
        self.assertEqual(self.server.state, ServerState.DOWN)
        self.assertEqual(self.server.rampFactor, 1.0)
        self.assertFalse([c for c in self.clock.getDelayedCalls() if c.func.__name__ == "_rampStep"])

    def test_noRampAtStartup(self) -> None:
        """A server that starts UP takes its full share at once (HAProxy)."""
        server = Server("fresh", "127.0.0.1:1", slowstart=10.0)
        Backend("b2", [server])
        monitor = HealthMonitor(server, FakeCheck(interval=1.0), self.clock, firstDelay=0.5)
        monitor.start()
        self.assertEqual(server.rampFactor, 1.0)
        monitor.stop()

    def test_stopEndsRamp(self) -> None:
        """Stopping the monitor mid-ramp gives the server its full weight back."""
        self.clock.advance(0)
        self.check.passLast()
        self.clock.advance(0.5)
        self.assertEqual(self.server.rampFactor, 0.05)
        HealthMonitor.stop(monitorFor(self.server))  # type: ignore[arg-type]
        self.assertEqual(self.server.rampFactor, 1.0)


class AdminTests(MonitorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.check = FakeCheck(interval=1.0, rise=1, fall=1, initState="fully-up")
        self.mon = self.monitor(self.check)
        self.clock.advance(0)

    def test_maintNotOverridden(self) -> None:
        """Failing checks keep a server in MAINT, but the monitor remembers it is DOWN."""
        self.server.setState(ServerState.MAINT, "set by admin")
        self.check.failLast()
        self.assertEqual(self.server.state, ServerState.MAINT)
        self.assertFalse(self.mon.healthy)
        self.mon.setAdmin(None)
        self.assertEqual(self.server.state, ServerState.DOWN)
        self.assertEqual(self.transitions(), [("UP", "MAINT"), ("MAINT", "DOWN")])

    def test_drainNotOverridden(self) -> None:
        """Passing and failing checks leave DRAIN alone."""
        self.mon.setAdmin(ServerState.DRAIN)
        self.check.failLast()
        self.clock.advance(1.0)
        self.check.passLast()
        self.assertEqual(self.server.state, ServerState.DRAIN)
        self.mon.setAdmin(None)
        self.assertEqual(self.server.state, ServerState.UP)

    def test_readyByStateIsCorrected(self) -> None:
        """An admin who sets a dead server UP directly sees the checks' DOWN right after."""
        self.server.setState(ServerState.MAINT)
        self.check.failLast()
        self.server.setState(ServerState.UP, "set by admin")
        self.clock.advance(0)
        self.assertEqual(self.server.state, ServerState.DOWN)
        self.assertEqual(self.recorder.states[-1][2], "health check state after leaving maintenance")

    def test_leavingMaintStartsSlowStart(self) -> None:
        """A healthy server leaving MAINT ramps up like one coming back UP."""
        self.server.slowstart = 2.0
        self.check.passLast()
        self.mon.setAdmin(ServerState.MAINT)
        self.mon.setAdmin(None)
        self.assertEqual(self.server.rampFactor, 0.0)
        self.clock.advance(2.0)
        self.assertEqual(self.server.rampFactor, 1.0)

    def test_setAdminRejectsHealthStates(self) -> None:
        """setAdmin takes MAINT, DRAIN or None only."""
        self.assertRaises(ValueError, self.mon.setAdmin, ServerState.UP)
        self.check.passLast()

    def test_monitorFor(self) -> None:
        """monitorFor finds the running monitor of a server."""
        self.assertIs(monitorFor(self.server), self.mon)
        self.check.passLast()
        self.mon.stop()
        self.assertIsNone(monitorFor(self.server))

    def test_shutdownSessions(self) -> None:
        """onMarkedDown="shutdown-sessions" aborts every session when checks mark the server DOWN."""
        self.mon.stop()
        check = FakeCheck(interval=1.0, fall=1, initState="fully-up", onMarkedDown="shutdown-sessions")
        self.monitor(check)
        sessions = [FakeSession(self.server) for _ in range(3)]
        self.clock.advance(0)
        check.failLast()
        self.assertEqual([s.aborted for s in sessions], [True, True, True])
        self.assertEqual(self.server.sessions, set())

    def test_sessionsKeptByDefault(self) -> None:
        """Without onMarkedDown, sessions of a server marked DOWN run on."""
        session = FakeSession(self.server)
        self.check.failLast()
        self.assertFalse(session.aborted)


class ServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.check = FakeCheck(interval=2.0)
        self.servers = [Server(f"s{i}", f"127.0.0.1:{9000 + i}") for i in range(4)]
        self.backend = Backend("be", self.servers, health=self.check)
        self.service = HealthService(self.backend, self.clock, random=lambda: 0.5)
        self.addCleanup(self.assertEqual, self.clock.getDelayedCalls(), [])

    def test_spreadsFirstChecks(self) -> None:
        """The first checks of a backend's servers are spread evenly over one interval."""
        self.service.startService()
        self.addCleanup(self.service.stopService)
        times = sorted(c.getTime() for c in self.clock.getDelayedCalls())
        self.assertEqual(times, [0.25, 0.75, 1.25, 1.75])

    def test_stopLeavesNothing(self) -> None:
        """Stopping cancels the checks in flight and every timer."""
        self.service.startService()
        self.clock.advance(1.0)
        inFlight = list(self.check.probes)
        self.assertEqual(len(inFlight), 2)
        self.service.stopService()
        self.assertEqual(self.check.cancelled, inFlight)
        self.assertEqual(self.service.monitors, {})

    def test_monitorsPerServer(self) -> None:
        """One monitor per server, named after it."""
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(sorted(self.service.monitors), ["s0", "s1", "s2", "s3"])

    def test_syncChecksNewServer(self) -> None:
        """A server a reload adds is checked, first at a random point of one interval (the service's random)."""
        self.service.startService()
        self.addCleanup(self.service.stopService)
        new = Server("s9", "127.0.0.1:9009")
        self.backend.updateFrom(Backend("be", [Server(s.name, s.address) for s in self.servers] + [new], health=self.check))
        before = set(self.clock.getDelayedCalls())
        self.service.sync()
        self.assertIs(self.service.monitors["s9"].server, new)
        [first] = [c for c in self.clock.getDelayedCalls() if c not in before]
        self.assertEqual(first.getTime(), 2.0 * 0.5)

    def test_syncStopsLeavingServerWhenGone(self) -> None:
        """A server a reload removes is checked while it finishes its connections, and no longer once it left."""
        self.service.startService()
        self.addCleanup(self.service.stopService)
        leaving = self.servers[3]
        monitor = self.service.monitors["s3"]
        self.backend.reacquire(leaving)  # one connection still open
        self.backend.updateFrom(Backend("be", [Server(s.name, s.address) for s in self.servers[:3]], health=self.check))
        self.service.sync()
        self.assertTrue(monitor.running)
        self.backend.release(leaving)
        self.assertFalse(monitor.running)
        self.assertEqual(sorted(self.service.monitors), ["s0", "s1", "s2"])

    def test_needsHealth(self) -> None:
        """A backend without a check cannot have a HealthService."""
        self.assertRaises(ValueError, HealthService, Backend("nohealth", [Server("x", "127.0.0.1:1")]), self.clock)


class ConfigTests(SynchronousTestCase):
    def test_exports(self) -> None:
        """lbkit.health exports its public names, the same objects as the private modules'."""
        self.assertIs(lbkit.health.TCPCheck, _tcp.TCPCheck)
        self.assertIs(lbkit.health.HTTPCheck, _http.HTTPCheck)
        self.assertIs(lbkit.health.AgentCheck, _agent.AgentCheck)
        self.assertIs(lbkit.health.HealthService, _service.HealthService)
        self.assertIs(lbkit.health.HealthMonitor, _monitor.HealthMonitor)
        self.assertIs(lbkit.health.BaseCheck, _base.BaseCheck)
        for name in lbkit.health.__all__:
            self.assertTrue(hasattr(lbkit.health, name), name)

    def test_defaults(self) -> None:
        """Defaults are HAProxy's: 2 s, rise 2, fall 3, fastinter = downinter = timeout = interval."""
        c = TCPCheck()
        self.assertEqual((c.interval, c.rise, c.fall, c.timeout, c.fastinter, c.downinter), (2.0, 2, 3, 2.0, 2.0, 2.0))
        c = TCPCheck(interval=5, fastinter=1)
        self.assertEqual((c.timeout, c.fastinter, c.downinter), (5, 1, 5))

    def test_badValues(self) -> None:
        """Bad options raise ConfigError saying which and why."""
        for kw, words in [
            (dict(interval=0), "interval must be a positive number"),
            (dict(rise=0), "rise must be a positive integer"),
            (dict(fall=1.5), "fall must be a positive integer"),
            (dict(timeout=-1), "timeout must be a positive number"),
            (dict(observe="layer9"), "observe must be one of"),
            (dict(onError="explode"), "onError must be one of"),
            (dict(initState="maybe"), "initState must be one of"),
            (dict(port=70000), "port must be from 1 to 65535"),
            (dict(spread=0.9), "spread must be from 0 to 0.5"),
            (dict(onMarkedDown="kill"), "onMarkedDown must be one of"),
        ]:
            e = self.assertRaises(ConfigError, TCPCheck, **kw)
            self.assertIn(words, str(e))
            self.assertTrue(str(e).startswith("TCPCheck: "), str(e))

    def test_backendAcceptsChecks(self) -> None:
        """Backend(health=...) accepts every built-in check."""
        for check in [TCPCheck(), HTTPCheck("/healthz"), lbkit.health.AgentCheck(port=9999)]:
            Backend("be", [Server("a", "127.0.0.1:1")], health=check)
