# -*- test-case-name: tests.test_health -*-
"""
L{HealthMonitor}: the state machine that runs one server's checks and
turns their results (and, with C{observe}, live traffic) into UP and DOWN
transitions, with slow start after each recovery.

The machine has two health states, each with a consecutive-result count::

    UP,   failures = 0        --pass-->  UP, failures = 0          (interval)
    UP,   failures = k        --fail-->  UP, k + 1; DOWN at fall  (fastinter)
    DOWN, passes = 0          --fail-->  DOWN, passes = 0          (downinter)
    DOWN, passes = k          --pass-->  DOWN, k + 1; UP at rise  (fastinter)

A pass resets the failure count and a failure the pass count.  The
machine publishes its transitions with L{Server.setState}, so the backend
logs them once and balancers and stats hear of them; it never changes an
administrative state (MAINT, DRAIN), only remembers the health for when
the operator sets the server ready again.
"""

from __future__ import annotations

import random as _random
from enum import Enum
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, TimeoutError, maybeDeferred
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit._model import Server, ServerListenerMixin, ServerState
from lbkit.error import CheckFailed
from lbkit.health._base import connectReason
from lbkit.interfaces import IHealthCheck, IServerListener

__all__ = ["HealthMonitor", "monitorFor", "RAMP_STEPS"]

_log = Logger(namespace="lbkit.health")

#: A slow start raises a server's ramp factor in this many equal steps.
RAMP_STEPS = 20

_ADMIN = (ServerState.MAINT, ServerState.DRAIN)


def monitorFor(server: Server) -> Optional[HealthMonitor]:
    """
    The running L{HealthMonitor} of C{server}, or C{None}: how an admin
    interface reaches L{HealthMonitor.setAdmin}.  (A running monitor sets
    itself as C{server.healthMonitor}.)
    """
    monitor = server.healthMonitor
    return monitor if isinstance(monitor, HealthMonitor) and monitor.running else None


class _Health(Enum):
    UP = "UP"
    DOWN = "DOWN"


def _policy(check: Any, name: str, default: Any) -> Any:
    """An option of C{check}, or C{default} for checks that lack it."""
    value = getattr(check, name, None)
    return default if value is None else value


def _reasonOf(failure: Failure) -> tuple[str, bool]:
    """The reason a check failed, and whether it looks like a bug in it."""
    if failure.check(CheckFailed):
        return failure.getErrorMessage(), False
    if failure.check(TimeoutError):
        return "Layer4 timeout", False
    if failure.check(ConnectError):
        return connectReason(failure), False
    return f"Check error, info: \"{type(failure.value).__name__}: {failure.getErrorMessage()}\"", True


def _setRamp(server: Server, factor: float) -> None:
    """
    Set C{server.rampFactor} and tell its listeners, so balancers that use
    C{effectiveWeight} see the new share at once.
    """
    if server.rampFactor != factor:
        server.setRampFactor(factor)


@implementer(IServerListener)
class HealthMonitor(ServerListenerMixin):
    """
    Runs C{check} against C{server} on C{clock}, forever, until L{stop}.

    Every timing and passive-check option comes from the check (see
    L{lbkit.health.BaseCheck}); a check that provides only
    L{IHealthCheck}'s C{interval}, C{rise}, C{fall} and C{timeout} gets
    the defaults for the rest.

    @param server: The server to watch.
    @param check: The L{IHealthCheck}.
    @param reactor: What the check connects with.
    @param clock: What the monitor schedules with; C{reactor} if C{None}.
    @param firstDelay: Seconds before the first check (the service spreads
        the servers of a backend over one interval).
    @param random: A source of floats in [0, 1) for C{spread} jitter.
    """

    def __init__(
        self,
        server: Server,
        check: IHealthCheck,
        reactor: Any,
        clock: Any = None,
        *,
        firstDelay: float = 0.0,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.server = server
        self.check = check
        self.reactor = reactor
        self.clock = reactor if clock is None else clock
        self.firstDelay = firstDelay
        self._random = random
        self.interval = float(check.interval)
        self.rise = int(check.rise)
        self.fall = int(check.fall)
        self.timeout = float(_policy(check, "timeout", self.interval))
        self.fastinter = float(_policy(check, "fastinter", self.interval))
        self.downinter = float(_policy(check, "downinter", self.interval))
        self.spread = float(_policy(check, "spread", 0.0))
        self.initState = str(_policy(check, "initState", "up"))
        self.observe: Optional[str] = getattr(check, "observe", None)
        self.errorLimit = int(_policy(check, "errorLimit", 10))
        self.onError = str(_policy(check, "onError", "mark-down"))
        self.backoff = float(_policy(check, "backoff", 0.0))
        self.onMarkedDown: Optional[str] = getattr(check, "onMarkedDown", None)
        self.passReason = str(_policy(check, "passReason", "Check passed"))

        self.running = False
        self._health = _Health.UP
        self._passes = 0
        self._failures = 0
        self._errors = 0
        self._fast = False
        self._generation = 0
        self._call: Optional[IDelayedCall] = None
        self._inFlight: Optional[Deferred[None]] = None
        self._rampCall: Optional[IDelayedCall] = None
        self._rampStart = 0.0
        self._reconcileCall: Optional[IDelayedCall] = None

    def __repr__(self) -> str:
        return f"<HealthMonitor {self.server.fullName} {self._health.value}>"

    # -- public -----------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Whether the checks say the server is UP (whatever its admin state)."""
        return self._health is _Health.UP

    def start(self) -> None:
        """
        Take the configured initial state and schedule the first check
        after C{firstDelay}.
        """
        if self.running:
            return
        self.running = True
        self.server.healthMonitor = self
        self.server.addListener(self)
        self.server.addObserver(self._observed)
        self._passes = self._failures = self._errors = 0
        self._fast = False
        if self.initState in ("up", "fully-up"):
            self._health = _Health.UP
            self._failures = self.fall - 1 if self.initState == "up" else 0
        else:
            self._health = _Health.DOWN
            self._passes = self.rise - 1 if self.initState == "down" else 0
        generation = self._generation
        if self._health is _Health.DOWN:
            self._publish(ServerState.DOWN, "initial state, waiting for health checks")
        if generation == self._generation:
            self._schedule(self.firstDelay)

    def stop(self) -> None:
        """
        Stop checking: cancel the next check, the check in flight and the
        slow start (the server keeps its full weight); leave no timer.
        """
        if not self.running:
            return
        self.running = False
        self._generation += 1
        if self.server.healthMonitor is self:
            self.server.healthMonitor = None
        self.server.removeListener(self)
        self.server.removeObserver(self._observed)
        for name in ("_call", "_rampCall", "_reconcileCall"):
            call = getattr(self, name)
            setattr(self, name, None)
            if call is not None and call.active():
                call.cancel()
        _setRamp(self.server, 1.0)
        inFlight, self._inFlight = self._inFlight, None
        if inFlight is not None:
            inFlight.cancel()

    def setAdmin(self, state: Optional[ServerState], reason: str = "set by operator") -> None:
        """
        Set an administrative state: C{ServerState.MAINT} or
        C{ServerState.DRAIN}, or C{None} for "ready", which puts back the
        state the checks found (UP, with slow start, or DOWN).
        """
        if state is None:
            target = ServerState.UP if self.healthy else ServerState.DOWN
        elif state in _ADMIN:
            target = state
        else:
            raise ValueError(f"setAdmin takes ServerState.MAINT, ServerState.DRAIN or None, not {state!r}")
        self.server.setState(target, reason, self.clock.seconds())

    # -- IServerListener: watch the operator -------------------------------

    def stateChanged(self, server: Server, old: ServerState, new: ServerState, reason: str) -> None:
        if not self.running or old not in _ADMIN or new in _ADMIN:
            return
        # Leaving MAINT or DRAIN: the checks decide again, at once.
        if (new is ServerState.UP) != self.healthy:
            if self._reconcileCall is None:
                self._reconcileCall = self.clock.callLater(0, self._reconcile)
        elif new is ServerState.UP and old is ServerState.MAINT:
            self._startRamp()

    def _reconcile(self) -> None:
        self._reconcileCall = None
        if self.server.state not in _ADMIN:
            if self.healthy:
                self._publish(ServerState.UP, "health check state after leaving maintenance")
                self._startRamp()
            else:
                self._publish(ServerState.DOWN, "health check state after leaving maintenance")

    # -- active checks ----------------------------------------------------

    def _nextDelay(self) -> float:
        if self._fast:
            self._fast = False
            delay = self.fastinter
        elif self._health is _Health.UP:
            delay = self.fastinter if self._failures else self.interval
        else:
            delay = self.fastinter if self._passes else self.downinter
        if self.spread:
            delay *= 1.0 + self.spread * (2.0 * self._random() - 1.0)
        return delay

    def _schedule(self, delay: float) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self.clock.callLater(max(0.0, delay), self._runCheck)

    def _runCheck(self) -> None:
        self._call = None
        if not getattr(self.server, "checkEnabled", True):
            self._schedule(self.interval)
            return
        generation = self._generation
        started = self.clock.seconds()
        d: Deferred[None] = maybeDeferred(self.check.check, self.server, self.reactor)
        self._inFlight = d
        d.addTimeout(self.timeout, self.clock)
        d.addCallbacks(
            lambda _: self._checked(generation, started, None),
            lambda f: self._checked(generation, started, f),
        )
        d.addErrback(lambda f: _log.failure("health monitor of {server} failed", f, server=self.server.fullName))

    def _checked(self, generation: int, started: float, failure: Optional[Failure]) -> None:
        if generation != self._generation:
            return  # stopped, or overtaken by a passive mark-down
        self._inFlight = None
        now = self.clock.seconds()
        duration = f"check duration: {int(round((now - started) * 1000))}ms"
        if failure is None:
            reason = self.passReason
            self._recordCheck(True, reason, now - started)
            self._passed(f"{reason}, {duration}")
        else:
            reason, isBug = _reasonOf(failure)
            if isBug:
                _log.failure("health check of {server} raised", failure, server=self.server.fullName)
            self._recordCheck(False, reason, now - started)
            self._failed(f"{reason}, {duration}")
        if generation != self._generation:
            return  # a listener of the transition stopped us
        # Intervals run from the start of a check, so checks keep their cadence.
        self._schedule(self._nextDelay() - (now - started))

    def _recordCheck(self, ok: bool, reason: str, duration: float) -> None:
        self.server.lastCheck = {
            "status": "passed" if ok else "failed",
            "reason": reason,
            "durationMs": int(round(duration * 1000)),
            "time": self.clock.seconds(),
        }

    def _passed(self, reason: str) -> None:
        self._failures = 0
        if self._health is _Health.UP:
            self._reconcileState(reason)
            return
        self._passes += 1
        if self._passes >= self.rise:
            self._goUp(reason)

    def _failed(self, reason: str) -> None:
        self._passes = 0
        if self._health is _Health.DOWN:
            self._reconcileState(reason)
            return
        self._failures += 1
        if self._failures >= self.fall:
            self._goDown(reason)

    def _reconcileState(self, reason: str) -> None:
        """Correct a health state someone else overwrote (not an admin one)."""
        wanted = ServerState.UP if self.healthy else ServerState.DOWN
        if self.server.state not in _ADMIN and self.server.state is not wanted:
            self._publish(wanted, reason)

    # -- transitions --------------------------------------------------------

    def _goUp(self, reason: str) -> None:
        self._health = _Health.UP
        self._passes = self._failures = self._errors = 0
        self._publish(ServerState.UP, reason)
        if self.server.state is ServerState.UP:
            self._startRamp()

    def _goDown(self, reason: str) -> None:
        self._health = _Health.DOWN
        self._passes = self._failures = self._errors = 0
        self._stopRamp()
        self._publish(ServerState.DOWN, reason)
        if self.onMarkedDown == "shutdown-sessions" and self.server.state is ServerState.DOWN:
            sessions = list(self.server.sessions)
            if sessions:
                _log.info(
                    "Server {server}: shutting down {count} sessions (on-marked-down)",
                    server=self.server.fullName, count=len(sessions),
                )
            for session in sessions:
                session.abortSession()

    def _publish(self, state: ServerState, reason: str) -> None:
        if self.server.state in _ADMIN:
            _log.info(
                "Server {server} health is {state} (kept in {admin}), reason: {reason}.",
                server=self.server.fullName, state=state.value, admin=self.server.state.value, reason=reason,
            )
            return
        self.server.setState(state, reason, self.clock.seconds())

    # -- slow start ---------------------------------------------------------

    def _startRamp(self) -> None:
        if self.server.slowstart <= 0 or not self.running:
            return
        self._stopRamp()
        self._rampStart = self.clock.seconds()
        _setRamp(self.server, 0.0)
        if not self.running:
            return
        self._rampCall = self.clock.callLater(self.server.slowstart / RAMP_STEPS, self._rampStep)

    def _rampStep(self) -> None:
        self._rampCall = None
        elapsed = self.clock.seconds() - self._rampStart
        factor = min(1.0, elapsed / self.server.slowstart)
        if factor > 0.999999:
            factor = 1.0
        _setRamp(self.server, factor)
        if factor < 1.0 and self.running and self._rampCall is None:
            self._rampCall = self.clock.callLater(self.server.slowstart / RAMP_STEPS, self._rampStep)

    def _stopRamp(self) -> None:
        if self._rampCall is not None:
            if self._rampCall.active():
                self._rampCall.cancel()
            self._rampCall = None
        _setRamp(self.server, 1.0)

    # -- passive checks -----------------------------------------------------

    def _observed(self, server: Server, ok: bool, reason: str) -> None:
        if (
            not self.running
            or self.observe is None
            or self._health is _Health.DOWN
            or not getattr(server, "checkEnabled", True)
        ):
            return
        layer7 = reason.startswith("Layer7")
        if self.observe == "layer4" and layer7:
            return
        if ok:
            if self.observe == "layer7" and not layer7:
                return  # a connect is not an answer
            self._errors = 0
            return
        self._errors += 1
        if self._errors < self.errorLimit:
            return
        count, self._errors = self._errors, 0
        why = f'Health analyze, info: "Detected {count} consecutive errors, last one was: {reason}"'
        if self.onError == "mark-down":
            self._generation += 1  # a check in flight no longer counts
            generation = self._generation
            inFlight, self._inFlight = self._inFlight, None
            if self._call is not None and self._call.active():
                self._call.cancel()
            self._call = None
            if inFlight is not None:
                inFlight.cancel()
            self._goDown(why)
            if generation == self._generation:
                self._schedule(max(self.fastinter, self.backoff))
            return
        if self.onError == "fail-check":
            generation = self._generation
            self._failed(why)
            if generation != self._generation:
                return
        elif self.onError == "sudden-death":
            self._failures = max(self._failures, self.fall - 1)
        self._fast = True  # the next check comes after fastinter
        if self._inFlight is None and self._call is not None and self._call.active():
            if self._call.getTime() - self.clock.seconds() > self.fastinter:
                self._fast = False
                self._schedule(self.fastinter)
