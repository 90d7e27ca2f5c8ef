# -*- test-case-name: tests.test_service -*-
"""
The children of a L{lbkit.service.LoadBalancerService} that follow its
backends: a health service per checked backend, a discovery per backend
whose servers come from an L{IServerSource <lbkit.interfaces.IServerSource>},
and a service per shared store (L{IStore}); each kept in step after a reload.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger

from lbkit._backend import Backend
from lbkit._model import Server
from lbkit.health import HealthService
from lbkit.interfaces import IStore
from lbkit.traffic import tablesOf

__all__ = ["ChildServices", "StoreService"]

_log = Logger(namespace="lbkit")


class ChildServices(MultiService):
    """
    What L{lbkit.service.LoadBalancerService} runs beside its listeners.
    Subclasses provide C{reactor}, C{backends()}, C{runsHealthChecks},
    C{runsStores}, C{healthServices}, C{healthChecks},
    C{discoveryServices}, C{discoverySources}, C{storeServices},
    C{listen} and C{_draining}.
    """

    reactor: Any
    listen: list[Any]
    runsHealthChecks: bool
    runsStores: bool
    healthServices: dict[Backend, HealthService]
    healthChecks: dict[Backend, Any]
    discoveryServices: dict[Backend, IService]
    discoverySources: dict[Backend, Any]
    storeServices: dict[int, StoreService]
    _draining: list[Deferred[Any]]

    def backends(self) -> list[Backend]:
        raise NotImplementedError

    def ensureHealth(self, backend: Backend) -> None:
        """Run a health service for C{backend} if it has a check and none runs."""
        if not self.runsHealthChecks or backend.health is None or backend in self.healthServices:
            return
        service = HealthService(backend, self.reactor)
        self.healthServices[backend] = service
        self.healthChecks[backend] = backend.health
        service.setServiceParent(self)

    def ensureDiscovery(self, backend: Backend) -> None:
        """Run the discovery of C{backend}'s servers if they come from a source and none runs."""
        source = backend.serverSource
        if source is None or backend in self.discoveryServices:
            return
        service: IService = source.makeService(self.reactor, lambda servers: self.serversDiscovered(backend, servers))
        self.discoveryServices[backend] = service
        self.discoverySources[backend] = source
        service.setServiceParent(self)

    def serversDiscovered(self, backend: Backend, servers: Sequence[Server]) -> list[str]:
        """
        Give C{backend} the C{servers} its discovery found
        (L{Backend.setServers}), log the changes, and check the new servers
        (L{HealthService.sync}).

        @return: One line per change.
        """
        changes = backend.setServers(servers, self.reactor.seconds())
        for line in changes:
            _log.info("lbkit: discovery: backend {backend}: {change}", backend=backend.name, change=line)
        health = self.healthServices.get(backend)
        if health is not None:
            health.sync()
        return changes

    def syncDiscovery(self) -> list[str]:
        """
        Keep the discoveries in step with the backends, after a reload
        changed them: a backend no longer used, or whose source changed
        (not L{sameAs <lbkit.interfaces.IServerSource.sameAs>} the running
        one), loses its discovery (one of the new source starts); a new
        backend with a source gets one; the others go on.

        @return: One line per backend whose discovery restarted or stopped.
        """
        changes: list[str] = []
        current = self.backends()
        for backend, service in list(self.discoveryServices.items()):
            if backend in current and self.discoverySources[backend] is backend.serverSource:
                continue
            del self.discoveryServices[backend], self.discoverySources[backend]
            self._keepUntilDone(maybeDeferred(service.disownServiceParent))
            if backend in current:
                restarted = backend.serverSource is not None
                changes.append(f"backend {backend.name}: discovery {'restarted' if restarted else 'stopped'}")
        for backend in current:
            self.ensureDiscovery(backend)
        return changes

    def _keepUntilDone(self, d: Deferred[Any]) -> None:
        """Have L{stopService} wait for C{d} too."""
        self._draining.append(d)

        def done(result: object) -> None:
            if d in self._draining:
                self._draining.remove(d)

        d.addBoth(done)

    def syncHealth(self) -> list[str]:
        """
        Keep the health checks in step with the backends, after a reload
        changed them: a backend no longer used, or whose check changed,
        loses its health service (one with the new check starts); a new
        backend with a check gets one; the others check the servers they
        have now (L{HealthService.sync}).

        @return: One line per backend whose checks restarted.
        """
        changes: list[str] = []
        current = self.backends()
        for backend, health in list(self.healthServices.items()):
            if backend not in current or self.healthChecks.get(backend) is not backend.health:
                del self.healthChecks[backend]
                del self.healthServices[backend]
                health.disownServiceParent()
                if backend in current and backend.health is not None:
                    changes.append(f"backend {backend.name}: health checks restarted")
        for backend in current:
            running = self.healthServices.get(backend)
            if running is None:
                self.ensureHealth(backend)
            else:
                running.sync()
        return changes

    def syncStores(self) -> list[str]:
        """
        Run each store the backends' persistence strategies share state
        through (their C{store} attribute, an L{IStore}), once each, and
        let each strategy C{attach} its backends to it; stop the stores no
        backend uses any longer (after a reload).

        @return: One line per store started or stopped.
        """
        if not self.runsStores:
            return []
        wanted: dict[int, Any] = {}
        for backend in self.backends():
            persistence = backend.persistence
            store = getattr(persistence, "store", None)
            if store is None or not IStore.providedBy(store):
                continue
            wanted.setdefault(id(store), store)
            attach = getattr(persistence, "attach", None)
            if attach is not None:
                attach(backend)
        tables: dict[int, list[Any]] = {}
        for table in {id(t): t for item in self.listen for t in tablesOf(item)}.values():
            if table.store is not None:  # stick tables shared through a store (lbkit.traffic)
                wanted.setdefault(id(table.store), table.store)
                tables.setdefault(id(table.store), []).append(table)
                if table.clock is None:
                    table.clock = self.reactor
                table.attach()
        changes: list[str] = []
        for key, running in list(self.storeServices.items()):
            if key not in wanted:
                del self.storeServices[key]
                changes.append(f"store {running.store!r} stopped")
                self._keepUntilDone(maybeDeferred(running.disownServiceParent))
        for key, store in wanted.items():
            if key not in self.storeServices:
                service = StoreService(store, self.reactor)
                self.storeServices[key] = service
                service.setServiceParent(self)
                changes.append(f"store {store!r} started")
            self.storeServices[key].tables = tables.get(key, [])
        return changes


class StoreService(Service):
    """
    Runs one L{IStore} while it runs: C{store.start(reactor)} when it
    starts, C{store.stop()} when it stops (the L{Deferred} of which it
    returns).
    """

    def __init__(self, store: Any, reactor: Any) -> None:
        self.store = store
        self.reactor = reactor
        #: The traffic tables sharing counts through it: told to publish what is left when it stops.
        self.tables: list[Any] = []

    def startService(self) -> None:
        Service.startService(self)
        self.store.start(self.reactor)

    def stopService(self) -> Deferred[None]:
        if not self.running:
            return succeed(None)  # each start has one stop, no more
        Service.stopService(self)
        for table in self.tables:
            table.detach()
        d: Deferred[None] = self.store.stop()
        return d
