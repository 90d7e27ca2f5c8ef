# -*- test-case-name: tests.test_health -*-
"""
L{HealthService}: one L{HealthMonitor} per server of a backend, as an
L{IService}.
"""

from __future__ import annotations

import random as _random
from typing import TYPE_CHECKING, Any, Callable

from twisted.application.service import Service
from twisted.logger import Logger

from lbkit.health._monitor import HealthMonitor

if TYPE_CHECKING:
    from lbkit._backend import Backend

__all__ = ["HealthService"]

_log = Logger(namespace="lbkit.health")


class HealthService(Service):
    """
    Checks every server of C{backend} with C{backend.health} while running.

    The first checks of the servers are spread evenly over one interval,
    from a random phase, so that neither the servers of one backend nor
    several backends are all checked at once.  Stopping cancels every
    timer and every check in flight.

    @param backend: The backend; its C{health} is the L{IHealthCheck}.
    @param reactor: What checks connect with.
    @param clock: What monitors schedule with; C{reactor} if L{None}.
    @param random: A source of floats in [0, 1) (phase and jitter).
    @ivar monitors: Server name to its L{HealthMonitor}, while running.
    """

    def __init__(
        self,
        backend: Backend,
        reactor: Any,
        clock: Any = None,
        *,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if backend.health is None:
            raise ValueError(f"backend {backend.name!r} has no health check")
        self.backend = backend
        self.reactor = reactor
        self.clock = reactor if clock is None else clock
        self._random = random
        self.monitors: dict[str, HealthMonitor] = {}

    def startService(self) -> None:
        Service.startService(self)
        check = self.backend.health
        assert check is not None
        servers = self.backend.servers
        interval = float(check.interval)
        phase = self._random()
        for i, server in enumerate(servers):
            monitor = HealthMonitor(
                server, check, self.reactor, self.clock,
                firstDelay=interval * (i + phase) / len(servers),
                random=self._random,
            )
            self.monitors[server.name] = monitor
            monitor.start()
        _log.info(
            "lbkit: checking {count} servers of backend {backend} with {check}",
            count=len(servers), backend=self.backend.name, check=type(check).__name__,
        )

    def stopService(self) -> None:
        Service.stopService(self)
        monitors, self.monitors = self.monitors, {}
        for monitor in monitors.values():
            monitor.stop()
