# -*- test-case-name: tests.test_service -*-
"""
L{ListeningService}: listen on an endpoint string with a factory while
running, and stop gracefully (like Twisted's C{strports.service}, plus
draining).  Every frontend, stats page and demo server is one; the
application layer (L{lbkit.service}) puts them together.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from lbkit._drain import DrainingFactory
from lbkit._resources import guardAccept
from lbkit.error import LBKitError

__all__ = ["ListeningService", "ListenFailed", "listeningServices", "setPortSource"]

_log = Logger(namespace="lbkit")

#: Where shared listeners get their ports when not from their endpoint
#: string: set by the multi-process supervisor and its workers
#: (L{lbkit.workers}); C{None} in a single process.
_portSource: Any = None


def setPortSource(source: Any) -> Any:
    """
    Make C{source} give the ports of listeners from now on (C{None}: their
    endpoint strings, as by default): C{source.listen(service)} returns an
    L{IListeningPort} for C{service}, or C{None} to listen as usual; it may
    raise L{CannotListenError}.

    @return: The source it replaces.
    """
    global _portSource
    previous, _portSource = _portSource, source
    return previous


def portFromSource(service: Any) -> Any:
    """
    The port the source set with L{setPortSource} gives C{service} (an
    object with C{shared} and C{description}), or C{None} to listen as
    usual (no source, or it leaves this one to the caller).
    """
    if _portSource is None:
        return None
    return _portSource.listen(service)


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

    @ivar port: The listening port while running, else C{None}.
    @ivar grace: Seconds connections may take to finish when stopping; 0
        aborts them at once; C{None} (the default) does not wait for them.
    @ivar shared: Whether every worker process accepts on this listener
        (frontends) or only the supervisor serves it (stats pages, the
        command socket); see L{lbkit.workers}.
    """

    shared = False

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
        result: list[Any] = []
        if _portSource is not None:
            try:
                port = _portSource.listen(self)
            except Exception:
                result.append(Failure())
            else:
                if port is not None:
                    result.append(port)
        if not result:
            endpoint = serverFromString(self.reactor, self.description)
            endpoint.listen(self.factory).addBoth(result.append)
        if not result:
            raise RuntimeError(f"{self.label}: listening on {self.description!r} did not finish at once")
        if isinstance(result[0], Failure):
            reason = result[0].value
            assert reason is not None
            raise ListenFailed(
                f"{self.label} cannot listen on {self.description!r}: {_why(reason)}", reason
            )
        self.port = result[0]
        if getattr(self.port, "inactive", False):
            return  # a worker's stand-in for what only its supervisor serves
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
            if getattr(port, "inactive", False):
                return
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


def listeningServices(service: IService) -> list[ListeningService]:
    """C{service} itself, or its children, that listen."""
    if isinstance(service, ListeningService):
        return [service]
    return [c for c in service if isinstance(c, ListeningService)] if isinstance(service, MultiService) else []
