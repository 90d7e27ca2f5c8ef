# -*- test-case-name: tests.test_service -*-
"""
The L{IService} tree: embed a balancer in any Twisted application.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from lbkit.config import checkListen, loadSite

__all__ = ["LoadBalancerService", "ListeningService", "fromSiteFile"]

_log = Logger(namespace="lbkit")


class ListeningService(Service):
    """
    Listens on an endpoint string with a factory while running.  Failing to
    listen at start-up raises, so a process does not run half-configured.
    """

    def __init__(self, description: str, factory: Factory, reactor: Any, label: str) -> None:
        self.description = description
        self.factory = factory
        self.reactor = reactor
        self.label = label
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        endpoint = serverFromString(self.reactor, self.description)
        d = endpoint.listen(self.factory)
        result: list[Any] = []
        d.addBoth(result.append)
        if not result:
            raise RuntimeError(f"{self.label}: listening on {self.description!r} did not finish at once")
        if isinstance(result[0], Failure):
            result[0].raiseException()
        self.port = result[0]
        _log.info("lbkit: {label} listening on {endpoint}", label=self.label, endpoint=self.description)

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        Service.startService(self)

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        port, self.port = self.port, None
        if port is not None:
            return maybeDeferred(port.stopListening)  # type: ignore[call-overload,no-any-return]
        return None


class LoadBalancerService(MultiService):
    """
    Everything a C{listen} list declares, as one service: add it to your
    own L{twisted.application.service.Application} or L{MultiService}.

    @param listen: Frontends, stats pages and other L{IListener}s.
    @param reactor: The reactor to use; the global one, looked up when the
        service starts, if L{None}.
    """

    def __init__(self, listen: Sequence[Any], reactor: Any = None) -> None:
        MultiService.__init__(self)
        checkListen(listen, "<service>")
        self.listen = list(listen)
        self.reactor = reactor
        self._built = False

    def _build(self) -> None:
        if self._built:
            return
        self._built = True
        if self.reactor is None:
            from twisted.internet import reactor

            self.reactor = reactor
        for item in self.listen:
            item.makeService(self.reactor).setServiceParent(self)
        seen: set[int] = set()
        for item in self.listen:
            for backend in item.backends():
                if id(backend) in seen:
                    continue
                seen.add(id(backend))
                if backend.health is not None:
                    from lbkit.health import HealthService  # type: ignore[import-not-found,import-untyped,unused-ignore]

                    HealthService(backend, self.reactor).setServiceParent(self)

    def privilegedStartService(self) -> None:
        self._build()
        MultiService.privilegedStartService(self)

    def startService(self) -> None:
        self._build()
        MultiService.startService(self)

    def backends(self) -> list[Any]:
        """Every backend some listener sends traffic to, once each."""
        found: dict[int, Any] = {}
        for item in self.listen:
            for backend in item.backends():
                found.setdefault(id(backend), backend)
        return list(found.values())


def fromSiteFile(path: str, reactor: Any = None) -> LoadBalancerService:
    """
    Load a site file and return its service.

    @raise lbkit.error.ConfigError: when the file is wrong.
    """
    return LoadBalancerService(loadSite(path).listen, reactor)
