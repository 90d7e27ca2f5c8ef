# -*- test-case-name: tests.test_service -*-
"""
The L{IService} tree: embed a balancer in any Twisted application.

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
from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from lbkit._drain import DrainingFactory
from lbkit._model import definedAt
from lbkit.config import Site, checkGrace, checkListen, loadSite
from lbkit.error import ConfigError, LBKitError
from lbkit.logs import AccessLog, AccessLogDispatcher, checkAccessLog

__all__ = ["LoadBalancerService", "ListeningService", "ListenFailed", "fromSiteFile"]

_log = Logger(namespace="lbkit")


class ListenFailed(CannotListenError, LBKitError):
    """
    A listener could not start listening, e.g. because its port is taken.

    Its message is one line a user can act on::

        site.py:14: frontend demo cannot listen on 'tcp:8080:interface=127.0.0.1':
        [Errno 98] Address already in use

    @ivar reason: The original exception.
    """

    def __init__(self, message: str, reason: BaseException) -> None:
        CannotListenError.__init__(
            self,
            getattr(reason, "interface", ""),
            getattr(reason, "port", 0),
            getattr(reason, "socketError", reason),
        )
        self.message = message
        self.reason = reason

    def __str__(self) -> str:
        return self.message


def _why(reason: BaseException) -> str:
    if isinstance(reason, CannotListenError):
        return str(reason.socketError)
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__


class ListeningService(Service):
    """
    Listens on an endpoint string with a factory while running.  Failing to
    listen at start-up raises L{ListenFailed}, so a process does not run
    half-configured.

    Stopping it stops listening at once.  With a C{grace} period, and a
    factory that tracks its connections (L{lbkit._drain.DrainingFactory}:
    every tcp and http frontend), it then asks them to finish (idle http
    keep-alive connections close now, requests in flight get
    C{Connection: close}), waits up to C{grace} seconds, and aborts what is
    left; L{stopService}'s L{Deferred} fires when the last one is gone.

    @ivar port: The listening port while running, else L{None}.
    @ivar grace: Seconds connections may take to finish when stopping; 0
        aborts them at once; L{None} (the default) does not wait for them.
    """

    def __init__(self, description: str, factory: Factory, reactor: Any, label: str) -> None:
        self.description = description
        self.factory = factory
        self.reactor = reactor
        self.label = label
        self.port: IListeningPort | None = None
        self.grace: float | None = None
        self._acceptGuard: Any = None

    def privilegedStartService(self) -> None:
        if self.port is not None:
            return  # listening already (a reload starts listeners before adding them)
        Service.privilegedStartService(self)
        endpoint = serverFromString(self.reactor, self.description)
        d = endpoint.listen(self.factory)
        result: list[Any] = []
        d.addBoth(result.append)
        if not result:
            raise RuntimeError(f"{self.label}: listening on {self.description!r} did not finish at once")
        if isinstance(result[0], Failure):
            reason = result[0].value
            assert reason is not None
            raise ListenFailed(
                f"{self.label} cannot listen on {self.description!r}: {_why(reason)}", reason
            )
        self.port = result[0]
        from lbkit._resources import guardAccept

        self._acceptGuard = guardAccept(self.port, self.reactor, self.label)
        _log.info("lbkit: {label} listening on {endpoint}", label=self.label, endpoint=self.description)

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        Service.startService(self)

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        stopped = self.stopListening()
        if self.grace is None or self.drainingFactory() is None:
            return stopped
        return gatherResults([stopped, self.drain(self.grace)]).addCallback(lambda _: None)

    def stopListening(self) -> Deferred[None]:
        """Stop accepting connections; fires once the port is closed."""
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        guard, self._acceptGuard = getattr(self, "_acceptGuard", None), None
        if guard is not None:
            guard.stop()
        d: Deferred[Any] = maybeDeferred(port.stopListening)  # type: ignore[call-overload]

        def stopped(result: object) -> None:
            _log.info("lbkit: {label} stopped listening on {endpoint}", label=self.label, endpoint=self.description)

        return d.addCallback(stopped)

    def drainingFactory(self) -> DrainingFactory | None:
        """The factory (under any wrapping, e.g. TLS) that tracks connections."""
        factory: Any = self.factory
        while factory is not None and not isinstance(factory, DrainingFactory):
            factory = getattr(factory, "wrappedFactory", None)
        return factory

    def drain(self, grace: float) -> Deferred[None]:
        """
        Ask the open connections to finish, wait up to C{grace} seconds for
        them, then abort the rest.  Fires when none is left.
        """
        factory = self.drainingFactory()
        if factory is None:
            return succeed(None)
        factory.stopGracefully()
        idle = factory.whenIdle()
        if not idle.called:
            _log.info(
                "lbkit: {label}: {count} connections have {grace:g}s to finish",
                label=self.label, count=len(factory.connections), grace=grace,
            )

        def kill() -> None:
            _log.info(
                "lbkit: {label}: grace period over, closing {count} connections",
                label=self.label, count=len(factory.connections),
            )
            factory.killAll()

        timer = self.reactor.callLater(grace, kill) if not idle.called else None

        def done(result: object) -> None:
            if timer is not None and timer.active():
                timer.cancel()
            pool = getattr(factory, "pool", None)
            if pool is not None:
                pool.closeAll()  # connections put back while draining

        return idle.addCallback(done)


class LoadBalancerService(MultiService):
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
        service starts, if L{None}.
    @param grace: Seconds connections may take to finish when it stops;
        L{None}: the site file's C{grace}, else C{defaultGrace}.
    @param accessLog: L{lbkit.logs.AccessLog} destinations; L{None}: the
        site file's C{accessLog}, else Twisted's log.
    @param site: The loaded site file this service runs, if any: what
        L{reload} reads again, and where C{grace} and C{accessLog} come
        from when not given.
    @param defaultGrace: The grace period when neither C{grace} nor the
        site says; L{None} stops listening without waiting.
    @param installSignalHandlers: Reload on SIGHUP while running (C{twistd
        lbkit} turns it on).
    @raise lbkit.error.ConfigError: when C{listen} is wrong; the message
        names the file and line that created this service.
    """

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
        self.healthServices: dict[Any, IService] = {}
        self.healthChecks: dict[Any, Any] = {}
        self._draining: list[Deferred[Any]] = []
        self._dispatcher = AccessLogDispatcher()
        #: The logger every frontend's access lines go through.
        self.accessLogger = Logger(namespace="lbkit.access", observer=self._dispatcher)
        self._previousHandler: Any = None
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
        self.bindSite()
        for item in self.listen:
            self.addItem(item)
        for backend in self.backends():
            self.ensureHealth(backend)

    def bindSite(self) -> None:
        """Tell the items that show the whole site (stats pages) what it is now."""
        for item in self.listen:
            bindSite = getattr(item, "bindSite", None)
            if bindSite is not None:
                bindSite(self.listen)
            bindReloader = getattr(item, "bindReloader", None)
            if bindReloader is not None:
                bindReloader(self.reload)

    def addItem(self, item: Any) -> IService:
        """Build the service of one C{listen} item and add it (it starts if we run)."""
        child = item.makeService(self.reactor)
        self._origins[id(child)] = item
        self.itemServices[id(item)] = child
        self.wireFactories(item)
        child.setServiceParent(self)
        return child  # type: ignore[no-any-return]

    def wireFactories(self, item: Any) -> None:
        """Send the access lines of C{item}'s factories through L{accessLogger}."""
        for factory in getattr(item, "factories", ()):
            if hasattr(factory, "accessLog"):
                factory.accessLog = self.accessLogger

    def ensureHealth(self, backend: Any) -> None:
        """Run a health service for C{backend} if it has a check and none runs."""
        if backend.health is None or backend in self.healthServices:
            return
        from lbkit.health import HealthService  # type: ignore[import-not-found,import-untyped,unused-ignore]

        service = HealthService(backend, self.reactor)
        self.healthServices[backend] = service
        self.healthChecks[backend] = backend.health
        service.setServiceParent(self)

    def _where(self, child: IService) -> str:
        item = self._origins.get(id(child))
        filename, line = getattr(item, "definedAt", ("", 0))
        return f"{filename}:{line}: " if line else ""

    # -- running ----------------------------------------------------------

    def privilegedStartService(self) -> None:
        self._build()
        self._dispatcher.replace(self.effectiveAccessLog())
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

    def _sighup(self, signum: int, frame: Any) -> None:
        _log.info("lbkit: SIGHUP: reloading the site file")
        self.reactor.callFromThread(self._reloadLogged)

    def _reloadLogged(self) -> None:
        self.reload().addErrback(lambda f: None)  # reload logged why

    def stopService(self) -> Deferred[None]:
        if self._previousHandler is not None:
            signal.signal(signal.SIGHUP, self._previousHandler)
            self._previousHandler = None
        self._listening = False
        grace = self.effectiveGrace()
        for item in self.listen:
            child = self.itemServices.get(id(item))
            if child is not None:
                for listening in _listeningServices(child):
                    listening.grace = grace
        stopped = MultiService.stopService(self)
        draining, self._draining = self._draining, []
        d = gatherResults([stopped, *draining], consumeErrors=True)

        def closed(result: object) -> None:
            self._dispatcher.close()

        return d.addBoth(closed)

    def backends(self) -> list[Any]:
        """Every backend some listener sends traffic to, once each."""
        found: dict[int, Any] = {}
        for item in self.listen:
            for backend in item.backends():
                found.setdefault(id(backend), backend)
        return list(found.values())

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
        from lbkit.reload import applySite

        if path is None:
            path = self.site.path if self.site is not None else None
        if path is None:
            return self._reloadFailed(ConfigError("nothing to reload: this balancer was not started from a site file"))
        if self._reloading:
            return self._reloadFailed(ConfigError("a reload is in progress"))
        try:
            site = loadSite(path)
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
        listening = _listeningServices(child)
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


def _listeningServices(service: IService) -> list[ListeningService]:
    """C{service} itself, or its children, that listen."""
    if isinstance(service, ListeningService):
        return [service]
    return [c for c in service if isinstance(c, ListeningService)] if isinstance(service, MultiService) else []


def fromSiteFile(path: str, reactor: Any = None, **kwargs: Any) -> LoadBalancerService:
    """
    Load a site file and return its service (which L{LoadBalancerService.reload}
    can load again); C{kwargs} go to L{LoadBalancerService}.

    @raise lbkit.error.ConfigError: when the file is wrong.
    """
    site = loadSite(path)
    return LoadBalancerService(site.listen, reactor, site=site, **kwargs)
