# -*- test-case-name: tests.test_health -*-
"""
What every health check shares: timing (C{interval}, C{fastinter},
C{downinter}, C{timeout}, C{rise}, C{fall}), where to probe (C{addr},
C{port}) and what live traffic does (C{observe}, C{errorLimit},
C{onError}, C{backoff}), as one frozen configuration class, L{BaseCheck}.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, ConnectingCancelledError, ConnectionRefusedError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit._address import hostEndpoint
from lbkit._connect import serverEndpoint
from lbkit._model import Server
from lbkit.error import CheckFailed, ConfigError
from lbkit.interfaces import IHealthCheckOptions

__all__ = ["BaseCheck", "OBSERVE_MODES", "ON_ERROR_MODES", "INIT_STATES", "connectReason", "connectFailure"]

#: Values of C{observe}.
OBSERVE_MODES = (None, "layer4", "layer7")
#: Values of C{onError}.
ON_ERROR_MODES = ("fastinter", "fail-check", "sudden-death", "mark-down")
#: Values of C{initState}.
INIT_STATES = ("fully-up", "up", "down", "fully-down")
#: Values of C{onMarkedDown}.
ON_MARKED_DOWN = (None, "shutdown-sessions")


def _positive(kind: type) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float) if kind is float else int)
            or value <= 0
        ):
            what = "a positive number of seconds" if kind is float else "a positive integer"
            raise ConfigError(f"{type(instance).__name__}: {attribute.name} must be {what}, not {value!r}")

    return check


def _nonNegative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{type(instance).__name__}: {attribute.name} must be a number >= 0, not {value!r}")


def _oneOf(choices: tuple[Any, ...]) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ConfigError(
                f"{type(instance).__name__}: {attribute.name} must be one of "
                f"{', '.join(repr(c) for c in choices)}, not {value!r}"
            )

    return check


def _port(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigError(f"{type(instance).__name__}: port must be from 1 to 65535 or None, not {value!r}")


def _addr(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{type(instance).__name__}: addr must be a host name or IP address, not {value!r}")


def _orInterval(value: Optional[float], instance: Any) -> float:
    """A converter: an unset (C{None}) timing falls back to C{interval}."""
    return instance.interval if value is None else value  # type: ignore[no-any-return]


def _optionalTiming() -> Any:
    return attrs.field(
        default=None,
        converter=attrs.Converter(_orInterval, takes_self=True),  # type: ignore[misc,call-overload]
        validator=_positive(float),
        kw_only=True,
    )


def connectReason(failure: Failure) -> str:
    """
    The HAProxy-style reason for a failed check connection, e.g.
    C{'Layer4 connection problem, info: "Connection refused"'} or
    C{"Layer4 timeout"}.
    """
    if failure.check(ConnectTimeout):
        return "Layer4 timeout"
    if failure.check(ConnectionRefusedError):
        return 'Layer4 connection problem, info: "Connection refused"'
    if failure.check(ConnectError):
        return f'Layer4 connection problem, info: "{failure.getErrorMessage()}"'
    return f'Layer4 connection problem, info: "{failure.getErrorMessage()}"'


@implementer(IHealthCheckOptions)
@attrs.frozen
class BaseCheck:
    """
    The options every check takes, all keyword-only.  Subclass it and write
    L{check} to make a new kind of check (see examples/custom_check.py);
    the monitor honours every option below for any subclass.

    Timing, as HAProxy's server options of the same names:

    @ivar interval: Seconds between two checks of a server that is UP and
        healthy (HAProxy's C{inter}); default 2.
    @ivar rise: Consecutive passes that bring a DOWN server UP; default 2.
    @ivar fall: Consecutive failures that take an UP server DOWN; default 3.
    @ivar timeout: Seconds one check may take (connect and answer) before
        it counts as failed; defaults to C{interval}, as HAProxy does when
        C{timeout check} is unset.
    @ivar fastinter: Seconds between checks while a server is changing
        state (UP with some failures, or DOWN with some passes, or just
        marked down by live traffic); defaults to C{interval}.
    @ivar downinter: Seconds between checks of a server that is fully DOWN;
        defaults to C{interval}.
    @ivar spread: Random jitter applied to every interval, as a fraction
        from 0 to 0.5 (HAProxy's C{spread-checks}, in percent there);
        default 0.  First checks are always spread evenly over one interval
        whatever this says.
    @ivar initState: Where a server starts: C{"up"} (the default, as
        HAProxy: UP, but the first failed check takes it DOWN),
        C{"fully-up"} (UP, C{fall} failures needed), C{"down"} (DOWN, the
        first pass brings it UP) or C{"fully-down"} (DOWN, C{rise} passes
        needed).
    @ivar addr: Where to probe: this host instead of the server's own (HAProxy's
        C{addr}).
    @ivar port: Probe this port instead of the server's own (HAProxy's
        C{port}).
    @ivar observe: Live traffic (passive checks, HAProxy's C{observe},
        Envoy's outlier detection): C{None} (the default: ignore live traffic),
        C{"layer4"} (count failed connects; a successful connect resets
        the count) or C{"layer7"} (also count 5xx responses; a good
        response resets the count).
    @ivar errorLimit: Consecutive errors that trigger C{onError}; default 10.
    @ivar onError: What C{errorLimit} errors do: C{"mark-down"} (the
        default: DOWN at once, re-tested by active checks, C{rise} passes to
        come back), C{"fail-check"} (count as one failed check),
        C{"sudden-death"} (one more failed check takes it DOWN) or
        C{"fastinter"} (only check sooner).  Each also switches to
        C{fastinter}.
    @ivar backoff: After live traffic marked a server DOWN, wait at least
        this many seconds before the first re-test (Envoy's ejection time);
        default 0 (re-test after C{fastinter}).
    @ivar onMarkedDown: C{"shutdown-sessions"} to abort every session of a
        server when its checks mark it DOWN; default C{None} (sessions run
        on).
    """

    interval: float = attrs.field(default=2.0, validator=_positive(float), kw_only=True)
    rise: int = attrs.field(default=2, validator=_positive(int), kw_only=True)
    fall: int = attrs.field(default=3, validator=_positive(int), kw_only=True)
    timeout: float = _optionalTiming()
    fastinter: float = _optionalTiming()
    downinter: float = _optionalTiming()
    spread: float = attrs.field(default=0.0, validator=_nonNegative, kw_only=True)
    initState: str = attrs.field(default="up", validator=_oneOf(INIT_STATES), kw_only=True)
    addr: Optional[str] = attrs.field(default=None, validator=_addr, kw_only=True)
    port: Optional[int] = attrs.field(default=None, validator=_port, kw_only=True)
    observe: Optional[str] = attrs.field(default=None, validator=_oneOf(OBSERVE_MODES), kw_only=True)
    errorLimit: int = attrs.field(default=10, validator=_positive(int), kw_only=True)
    onError: str = attrs.field(default="mark-down", validator=_oneOf(ON_ERROR_MODES), kw_only=True)
    backoff: float = attrs.field(default=0.0, validator=_nonNegative, kw_only=True)
    onMarkedDown: Optional[str] = attrs.field(default=None, validator=_oneOf(ON_MARKED_DOWN), kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.spread > 0.5:
            raise ConfigError(f"{type(self).__name__}: spread must be from 0 to 0.5, not {self.spread!r}")

    #: The reason shown when a check passes.
    passReason = "Check passed"

    def check(self, server: Server, reactor: Any) -> Deferred[None]:
        """
        Probe C{server} once; subclasses write this.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement check()")

    def target(self, server: Server) -> tuple[str, int]:
        """
        The host and port to probe: the server's, unless C{addr} or C{port}
        say otherwise.
        """
        return (self.addr or server.host, self.port or server.port)

    def endpointFor(self, server: Server, reactor: Any) -> IStreamClientEndpoint:
        """
        The client endpoint a check of C{server} connects with: the
        server's own endpoint, or one to C{addr}/C{port} when set.  Its
        connect timeout is C{timeout}.
        """
        if self.addr is None and self.port is None:
            return serverEndpoint(server, reactor, timeout=self.timeout)
        host, port = self.target(server)
        if not host:
            raise ConfigError(f"{type(self).__name__}: server {server.name!r} has no host; set addr=")
        return hostEndpoint(reactor, host, port, self.timeout)


def connectFailure(reason: Failure) -> Failure:
    """
    Turn a failed or cancelled connect into what a check fails with: a
    L{CheckFailed} with L{connectReason}, or, when the connect was
    cancelled (the monitor's timeout), a L{CancelledError} the monitor
    reports as C{"Layer4 timeout"}.
    """
    if reason.check(CheckFailed, CancelledError):
        return reason
    if reason.check(ConnectingCancelledError):
        return Failure(CancelledError())
    return Failure(CheckFailed(connectReason(reason)))
