# -*- test-case-name: tests.test_service -*-
"""
The L{IService<twisted.application.service.IService>} tree: embed a balancer in any Twisted application::

    from twisted.application import service
    from lbkit.service import LoadBalancerService

    application = service.Application("mine")
    LoadBalancerService(listen).setServiceParent(application)

See examples/embed.tac, docs/tcp.md and, for reload, graceful stop and
access logs, docs/operations.md.
"""

from __future__ import annotations

import signal
from typing import Any, Sequence

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from lbkit._backend import Backend, backendsOf
from lbkit._children import ChildServices
from lbkit._children import StoreService as StoreService

# ListeningService and ListenFailed live a layer down (frontends use them);
# they are part of this module's public face.
from lbkit._listening import ListenFailed as ListenFailed
from lbkit._listening import ListeningService as ListeningService
from lbkit._listening import listeningServices
from lbkit._origin import definedAt
from lbkit.config import Site, checkGrace, checkListen, loadSite
from lbkit.error import ConfigError
from lbkit.health import HealthService
from lbkit.logs import AccessLog, AccessLogDispatcher, AccessLogSink, checkAccessLog
from lbkit.reload import applySite

__all__ = ["LoadBalancerService", "ListeningService", "ListenFailed", "StoreService", "fromSiteFile"]

_log = Logger(namespace="lbkit")


class LoadBalancerService(ChildServices):
    """
    Everything a C{listen} list declares, as one service: add it to your
    own L{twisted.application.service.Application} or L{MultiService}.

    Starting it listens on every endpoint, in C{listen} order; if one cannot
    listen, those already listening stop again and L{ListenFailed} is
    raised.  Stopping it stops listening at once; with a grace period,
    connections in flight then have that long to finish (see
    L{ListeningService}) and L{stopService}'s L{Deferred} fires when all are
    gone; without one they go on until they end.

    L{reload} applies a site file again without stopping (docs/operations.md).

    @param listen: Frontends, stats pages and other L{IListener
        <lbkit.interfaces.IListener>}s, checked at once with
        L{lbkit.config.checkListen}.
    @param reactor: The reactor to use; the global one, looked up when the
        service starts, if C{None}.
    @param grace: Seconds connections may take to finish when it stops;
        C{None}: the site file's C{grace}, else C{defaultGrace}.
    @param accessLog: L{lbkit.logs.AccessLog} destinations; C{None}: the
        site file's C{accessLog}, else Twisted's log.
    @param site: The loaded site file this service runs, if any: what
        L{reload} reads again, and where C{grace} and C{accessLog} come
        from when not given.
    @param defaultGrace: The grace period when neither C{grace} nor the
        site says; C{None} stops listening without waiting.
    @param installSignalHandlers: Reload on SIGHUP and reopen the access-log
        files on SIGUSR1 while running (C{twistd lbkit} turns it on).
    @raise lbkit.error.ConfigError: when C{listen} is wrong; the message
        names the file and line that created this service.
    """

    #: Whether this service runs the backends' health checks (a worker
    #: process of L{lbkit.workers} does not: its supervisor does).
    runsHealthChecks = True

    #: Whether this service runs the stores its backends' persistence
    #: shares state through (L{lbkit.workers.WorkerSupervisor} does not:
    #: its workers do, each with its own connections).
    runsStores = True

    def __init__(
        self,
        listen: Sequence[Any],
        reactor: Any = None,
        *,
        grace: float | None = None,
        accessLog: Sequence[Any] | None = None,
        site: Site | None = None,
        defaultGrace: float | None = None,
        installSignalHandlers: bool = False,
    ) -> None:
        MultiService.__init__(self)
        filename, line = definedAt()
        checkListen(listen, filename, line)
        self.listen = list(listen)
        self.reactor = reactor
        self.grace = None if grace is None else checkGrace(grace)
        self.accessLog = None if accessLog is None else checkAccessLog(accessLog, "accessLog")
        self.site = site
        self.defaultGrace = defaultGrace
        self.installSignalHandlers = installSignalHandlers
        self._built = False
        self._listening = False
        self._origins: dict[int, Any] = {}
        #: The service of each item of C{listen}, by C{id(item)}.
        self.itemServices: dict[int, IService] = {}
        #: The health service of each backend that has a check, and the
        #: check it was started with.
        self.healthServices: dict[Backend, HealthService] = {}
        self.healthChecks: dict[Backend, Any] = {}
        #: The service running each store (L{IStore}) a backend's
        #: persistence uses, by C{id(store)}.
        self.storeServices: dict[int, StoreService] = {}
        #: The discovery service of each backend whose servers come from an
        #: L{IServerSource <lbkit.interfaces.IServerSource>}, and that source.
        self.discoveryServices: dict[Backend, IService] = {}
        self.discoverySources: dict[Backend, Any] = {}
        self._draining: list[Deferred[Any]] = []
        self._dispatcher = AccessLogDispatcher()
        #: The logger every frontend's access lines go through.
        self.accessLogger = Logger(namespace="lbkit.access", observer=self._dispatcher)
        #: The same destinations, for frontends that format their own
        #: lines (L{AccessLogSink.emit}); given to each factory as its
        #: C{accessSink}.
        self.accessSink: AccessLogSink = self._dispatcher.sink
        self._previousHandler: Any = None
        self._previousUsr1: Any = None
        self._reloading = False

    # -- settings ---------------------------------------------------------

    def effectiveGrace(self) -> float | None:
        """The grace period in force: given, else the site's, else the default."""
        if self.grace is not None:
            return self.grace
        if self.site is not None and self.site.grace is not None:
            return self.site.grace
        return self.defaultGrace

    def effectiveAccessLog(self) -> Sequence[AccessLog]:
        """The access-log destinations in force (empty: Twisted's log)."""
        if self.accessLog is not None:
            return self.accessLog
        if self.site is not None:
            return self.site.accessLog
        return ()

    # -- building ---------------------------------------------------------

    def _build(self) -> None:
        if self._built:
            return
        self._built = True
        if self.reactor is None:
            from twisted.internet import reactor

            self.reactor = reactor
        self._dispatcher.clock = self.reactor
        self.bindSite()
        for item in self.listen:
            self.addItem(item)
        for backend in self.backends():
            self.ensureDiscovery(backend)
            self.ensureHealth(backend)
        self.syncStores()

    def bindSite(self) -> None:
        """Tell the items that show the whole site (stats pages) what it is now."""
        for item in self.listen:
            bindSite = getattr(item, "bindSite", None)
            if bindSite is not None:
                bindSite(self.listen)
            bindReloader = getattr(item, "bindReloader", None)
            if bindReloader is not None:
                bindReloader(self.reload)
            bindAccessLog = getattr(item, "bindAccessLog", None)
            if bindAccessLog is not None:
                bindAccessLog(self.accessSink)

    def addItem(self, item: Any) -> IService:
        """Build the service of one C{listen} item and add it (it starts if we run)."""
        child: IService = item.makeService(self.reactor)
        self.adoptChild(item, child)
        return child

    def adoptChild(self, item: Any, child: IService) -> None:
        """
        Add C{child}, the service C{item.makeService} built (a reload builds
        and starts it first, to know it can listen), as C{item}'s service:
        its access lines go through L{accessLogger}, and a failure to listen
        names the line that created C{item}.
        """
        self._origins[id(child)] = item
        self.itemServices[id(item)] = child
        self.wireFactories(item)
        child.setServiceParent(self)

    def wireFactories(self, item: Any) -> None:
        """
        Send the access lines of C{item}'s factories through L{accessLogger},
        and give them L{accessSink} (as C{factory.accessSink}).
        """
        for factory in getattr(item, "factories", ()):
            if hasattr(factory, "accessLog"):
                factory.accessLog = self.accessLogger
                factory.accessSink = self.accessSink

    def _where(self, child: IService) -> str:
        item = self._origins.get(id(child))
        filename, line = getattr(item, "definedAt", ("", 0))
        return f"{filename}:{line}: " if line else ""

    # -- running ----------------------------------------------------------

    def privilegedStartService(self) -> None:
        self._build()
        self.replaceAccessLog(self.effectiveAccessLog())
        Service.privilegedStartService(self)
        started: list[IService] = []
        for child in self:
            try:
                child.privilegedStartService()
            except ListenFailed as e:
                for done in reversed(started):
                    if isinstance(done, ListeningService) and done.port is not None:
                        port, done.port = done.port, None
                        port.stopListening()
                e.message = self._where(child) + e.message
                self._dispatcher.close()
                raise
            started.append(child)
        self._listening = True

    def startService(self) -> None:
        if not self._listening:
            self.privilegedStartService()
        MultiService.startService(self)
        if self.installSignalHandlers:
            self._previousHandler = signal.signal(signal.SIGHUP, self._sighup)
            self._previousUsr1 = signal.signal(signal.SIGUSR1, self._sigusr1)

    def _sighup(self, signum: int, frame: Any) -> None:
        _log.info("lbkit: SIGHUP: reloading the site file")
        self.reactor.callFromThread(self._reloadLogged)

    def _sigusr1(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reopenAccessLogs)
        previous = self._previousUsr1
        if callable(previous):
            previous(signum, frame)  # twistd rotates twistd.log on SIGUSR1

    def _reloadLogged(self) -> None:
        self.reload().addErrback(lambda f: None)  # reload logged why

    def stopService(self) -> Deferred[None]:
        if self._previousHandler is not None:
            signal.signal(signal.SIGHUP, self._previousHandler)
            self._previousHandler = None
        if self._previousUsr1 is not None:
            signal.signal(signal.SIGUSR1, self._previousUsr1)
            self._previousUsr1 = None
        self._listening = False
        grace = self.effectiveGrace()
        for item in self.listen:
            child = self.itemServices.get(id(item))
            if child is not None:
                for listening in listeningServices(child):
                    listening.grace = grace
        stopped = MultiService.stopService(self)
        draining, self._draining = self._draining, []
        d = gatherResults([stopped, *draining], consumeErrors=True)

        def closed(result: object) -> None:
            self._dispatcher.close()

        return d.addBoth(closed)

    def backends(self) -> list[Backend]:
        """Every backend some listener sends traffic to, once each."""
        return backendsOf(self.listen)

    def replaceAccessLog(self, destinations: Sequence[AccessLog]) -> None:
        """
        Send the access lines to C{destinations} from now on (Twisted's log
        when empty), closing the ones no longer used.

        @raise ConfigError: when one cannot be opened; nothing changes then.
        """
        self._dispatcher.replace(destinations)

    def reopenAccessLogs(self) -> list[str]:
        """
        Open the access-log files again, by path: after C{logrotate}
        renamed them, new lines go to new files and none is lost (SIGUSR1,
        the command socket's C{reopen logs} and C{POST /admin/reopen} call
        this).  A file that cannot be opened (permissions dropped since
        start-up) keeps receiving lines where it was.

        @return: One line per file destination, also logged.
        """
        results = self._dispatcher.reopen()
        _log.info(
            "lbkit: access logs reopened: {results}", results="; ".join(results) or "no file destinations"
        )
        return results

    # -- reloading --------------------------------------------------------

    def reload(self, path: str | None = None) -> Deferred[list[str]]:
        """
        Load the site file again (or C{path}) and apply it without dropping
        a connection: see L{lbkit.reload} and docs/operations.md.

        A file that fails to load, a listener that cannot listen or an
        access log that cannot be opened leaves the running configuration
        as it was, logs why and fails the L{Deferred} with the
        L{ConfigError} or L{ListenFailed}.

        @return: Fires with one line per change made.
        """
        if path is None:
            path = self.site.path if self.site is not None else None
        if path is None:
            return self._reloadFailed(ConfigError("nothing to reload: this balancer was not started from a site file"))
        if self._reloading:
            return self._reloadFailed(ConfigError("a reload is in progress"))
        try:
            site = self.loadSite(path)
        except ConfigError as e:
            return self._reloadFailed(e)
        self._reloading = True
        try:
            d = applySite(self, site)
        except (ConfigError, ListenFailed) as e:
            self._reloading = False
            return self._reloadFailed(e)
        except Exception:
            # an unexpected error: log it, and never leave reloads refused
            self._reloading = False
            failure = Failure()
            _log.failure("lbkit: reload failed", failure)
            return fail(failure)

        def finished(result: Any) -> Any:
            self._reloading = False
            return result

        d.addBoth(finished)
        return d

    def loadSite(self, path: str) -> Site:
        """Load the site file a reload applies (a subclass may adjust it)."""
        return loadSite(path)

    def _reloadFailed(self, error: Exception) -> Deferred[list[str]]:
        _log.error(
            "lbkit: reload failed, the running configuration is unchanged: {why}", why=str(error)
        )
        return fail(error)

    def retire(self, item: Any) -> Deferred[None]:
        """
        Take out the service of C{item}, a listener a reload removed: it
        stops listening now and its connections get the grace period
        (L{stopService} waits for them too).

        @return: Fires once it stopped listening (its port is free).
        """
        child = self.itemServices.pop(id(item))
        self._origins.pop(id(child), None)
        listening = listeningServices(child)
        freed = gatherResults([c.stopListening() for c in listening])
        grace = self.effectiveGrace()
        parts: list[Deferred[Any]] = [freed]
        if grace is not None:
            parts += [c.drain(grace) for c in listening]
        parts.append(maybeDeferred(child.disownServiceParent))
        done = gatherResults(parts, consumeErrors=True)
        self._draining.append(done)

        def drained(result: object) -> None:
            if done in self._draining:
                self._draining.remove(done)

        done.addBoth(drained)
        return freed.addCallback(lambda _: None)


def fromSiteFile(path: str, reactor: Any = None, **kwargs: Any) -> LoadBalancerService:
    """
    Load a site file and return its service (which L{LoadBalancerService.reload}
    can load again); C{kwargs} go to L{LoadBalancerService}.

    @raise lbkit.error.ConfigError: when the file is wrong.
    """
    site = loadSite(path)
    return LoadBalancerService(site.listen, reactor, site=site, **kwargs)
