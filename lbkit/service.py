# -*- test-case-name: tests.test_service -*-
"""
The L{IService} tree: embed a balancer in any Twisted application.

    from twisted.application import service
    from lbkit.service import LoadBalancerService

    application = service.Application("mine")
    LoadBalancerService(listen).setServiceParent(application)

See examples/embed.tac and docs/tcp.md.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from lbkit._model import definedAt
from lbkit.config import checkListen, loadSite
from lbkit.error import LBKitError

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

    @ivar port: The listening port while running, else L{None}.
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
            reason = result[0].value
            assert reason is not None
            raise ListenFailed(
                f"{self.label} cannot listen on {self.description!r}: {_why(reason)}", reason
            )
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

    Starting it listens on every endpoint, in C{listen} order; if one cannot
    listen, those already listening stop again and L{ListenFailed} is
    raised.  Stopping it stops listening; connections in progress go on
    until they end.

    @param listen: Frontends, stats pages and other L{IListener
        <lbkit.interfaces.IListener>}s, checked at once with
        L{lbkit.config.checkListen}.
    @param reactor: The reactor to use; the global one, looked up when the
        service starts, if L{None}.
    @raise lbkit.error.ConfigError: when C{listen} is wrong; the message
        names the file and line that created this service.
    """

    def __init__(self, listen: Sequence[Any], reactor: Any = None) -> None:
        MultiService.__init__(self)
        filename, line = definedAt()
        checkListen(listen, filename, line)
        self.listen = list(listen)
        self.reactor = reactor
        self._built = False
        self._listening = False
        self._origins: dict[int, Any] = {}

    def _build(self) -> None:
        if self._built:
            return
        self._built = True
        if self.reactor is None:
            from twisted.internet import reactor

            self.reactor = reactor
        for item in self.listen:
            bindSite = getattr(item, "bindSite", None)
            if bindSite is not None:
                bindSite(self.listen)
        for item in self.listen:
            child = item.makeService(self.reactor)
            self._origins[id(child)] = item
            child.setServiceParent(self)
        seen: set[int] = set()
        for item in self.listen:
            for backend in item.backends():
                if id(backend) in seen:
                    continue
                seen.add(id(backend))
                if backend.health is not None:
                    from lbkit.health import HealthService  # type: ignore[import-not-found,import-untyped,unused-ignore]

                    HealthService(backend, self.reactor).setServiceParent(self)

    def _where(self, child: IService) -> str:
        item = self._origins.get(id(child))
        filename, line = getattr(item, "definedAt", ("", 0))
        return f"{filename}:{line}: " if line else ""

    def privilegedStartService(self) -> None:
        self._build()
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
                raise
            started.append(child)
        self._listening = True

    def startService(self) -> None:
        if not self._listening:
            self.privilegedStartService()
        MultiService.startService(self)

    def stopService(self) -> Deferred[None]:
        self._listening = False
        return MultiService.stopService(self)  # type: ignore[no-any-return]

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
