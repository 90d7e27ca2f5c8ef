# -*- test-case-name: tests.test_health -*-
"""
L{HealthService}: one L{HealthMonitor} per server of a backend, as an
L{IService<twisted.application.service.IService>}.
"""

from __future__ import annotations

import random as _random
from typing import TYPE_CHECKING, Any, Callable

from twisted.application.service import Service
from twisted.logger import Logger

from lbkit._live import unwatchServers, watchServers
from lbkit._model import Server
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
    timer and every check in flight.  When the backend's servers change
    (a reload), L{sync} follows them.

    @param backend: The backend; its C{health} is the L{IHealthCheck}.
    @param reactor: What checks connect with.
    @param clock: What monitors schedule with; C{reactor} if C{None}.
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

    def _interval(self) -> float:
        check = self.backend.health
        assert check is not None
        return float(check.interval)

    def _startMonitor(self, server: Server, firstDelay: float) -> None:
        check = self.backend.health
        assert check is not None
        monitor = HealthMonitor(server, check, self.reactor, self.clock, firstDelay=firstDelay, random=self._random)
        self.monitors[server.name] = monitor
        monitor.start()

    def startService(self) -> None:
        Service.startService(self)
        watchServers(self.backend, self.sync)  # servers added or removed at run time
        servers = self.backend.servers
        interval = self._interval()
        phase = self._random()
        for i, server in enumerate(servers):
            self._startMonitor(server, interval * (i + phase) / len(servers))
        _log.info(
            "lbkit: checking {count} servers of backend {backend} with {check}",
            count=len(servers), backend=self.backend.name, check=type(self.backend.health).__name__,
        )

    def sync(self) -> None:
        """
        Check the servers the backend has now (after L{Backend.updateFrom
        <lbkit._backend.Backend.updateFrom>}): a server that left, or was
        replaced by another of the same name, loses its monitor; a new one
        gets one, its first check at a random point of one interval; a
        server a reload removed keeps its monitor until it is gone (its
        last connection ended).  Does nothing while stopped.
        """
        if not self.running:
            return
        servers = {s.name: s for s in self.backend.servers}
        for name, monitor in list(self.monitors.items()):
            if servers.get(name) is not monitor.server:
                self._stopMonitor(monitor.server)
        for server in self.backend.servers:
            if server.name not in self.monitors:
                self._startMonitor(server, self._interval() * self._random())
        for server in self.backend.leaving():
            self.backend.whenGone(server).addCallback(self._stopMonitor)

    def _stopMonitor(self, server: Server) -> None:
        monitor = self.monitors.get(server.name)
        if monitor is not None and monitor.server is server:
            del self.monitors[server.name]
            monitor.stop()

    def stopService(self) -> None:
        Service.stopService(self)
        unwatchServers(self.backend, self.sync)
        monitors, self.monitors = self.monitors, {}
        for monitor in monitors.values():
            monitor.stop()
