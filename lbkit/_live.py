# -*- test-case-name: tests.test_live -*-
"""
Changing a running backend (docs/beyond.md): servers added and removed
(L{addServer}, L{removeServer}, removal draining first), the balancer and
the persistence swapped with their state handed over (L{setBalancer},
L{setPersistence}); what a reload changes in a backend's settings
(L{updateSettings}) goes through the same swaps.

L{lbkit.Backend}'s C{addServer}, C{removeServer}, C{setBalancer} and
C{setPersistence} call these functions.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from lbkit._breakers import updateBreakers
from lbkit._model import Context, Server, ServerState
from lbkit._settings import activeHookOf, balanceChanges, samePolicy
from lbkit.error import ConfigError
from lbkit.interfaces import (
    IAdoptingBalancer,
    IAdoptingPersistence,
    IBalancer,
    IExplainingPersistence,
    IHTTPPersistence,
    IPersistence,
    IServerListener,
    IStickyCount,
)

if TYPE_CHECKING:
    from lbkit._backend import Backend

__all__ = [
    "addServer", "removeServer", "setBalancer", "setPersistence", "updateServer", "updateSettings",
    "watchServers", "unwatchServers", "Handover",
]

_log = Logger(namespace="lbkit")

#: backend -> callables told (with no argument) after its servers changed at run time.
_watchers: weakref.WeakKeyDictionary[Any, list[Callable[[], object]]] = weakref.WeakKeyDictionary()


def watchServers(backend: Backend, callback: Callable[[], object]) -> None:
    """
    Have C{callback()} called after L{addServer} or L{removeServer} changed
    C{backend.servers} (a health service then checks the new servers).
    """
    _watchers.setdefault(backend, []).append(callback)


def unwatchServers(backend: Backend, callback: Callable[[], object]) -> None:
    """Undo L{watchServers}."""
    callbacks = _watchers.get(backend, [])
    if callback in callbacks:
        callbacks.remove(callback)


def _serversChanged(backend: Backend) -> None:
    for callback in list(_watchers.get(backend, ())):
        callback()


def addServer(backend: Backend, server: Server, now: float = 0.0) -> Server:
    """
    Add C{server} (a new L{Server}, in no backend) to C{backend} at run
    time: it joins UP (its health checks, if any, decide from there) and
    takes traffic from the next decision on.

    @raise ConfigError: when C{server} is not a new L{Server} or its name
        is taken; nothing changes then.
    """
    if not isinstance(server, Server):
        raise ConfigError(f"backend {backend.name!r}: addServer needs an lbkit.Server, not {server!r}")
    if server.backend is not None:
        raise ConfigError(f"server {server.name!r} is already in backend {server.backend.name!r}")
    if any(s.name == server.name for s in backend.servers):
        raise ConfigError(f"backend {backend.name!r} already has a server named {server.name!r}")
    server.backend = backend
    server.id = max([s.id for s in backend.servers] + [0]) + 1
    server.lastChange = now
    server.addListener(backend)
    backend.servers = [*backend.servers, server]  # a new list: caches built on the old one see the change
    backend._settle([], now, "")
    _log.info("Server {server} added ({address}).", server=server.fullName, address=server.address)
    _serversChanged(backend)
    return server


def removeServer(
    backend: Backend, server: Server, timeout: float | None = None, clock: Any = None
) -> Deferred[Server]:
    """
    Remove C{server} from C{backend} at run time, draining it first
    (L{Server.drain}): it leaves once its last connection and its last
    sticky client are gone.

    @return: A L{Deferred} firing with C{server} once it has left, or
        failing with L{lbkit.error.DrainTimeout} after C{timeout} seconds
        (the server then stays, in DRAIN).
    @raise ConfigError: when C{server} is not one of C{backend}'s.
    """
    if server not in backend.servers:
        raise ConfigError(f"backend {backend.name!r} has no server {server!r}")

    def drained(result: Server) -> Server:
        if server in backend.servers:
            backend._forget(server)
            # MAINT: a stale reference (a persistence entry) to it redispatches
            server.setState(ServerState.MAINT, "removed", server.lastChange)
            _serversChanged(backend)
        return result

    return server.drain(timeout, clock=clock).addCallback(drained)


#: L{setBalancer}'s default: work out the balancer's C{activeChanged} hook.
_COMPUTE: Any = object()


def setBalancer(backend: Backend, balancer: IBalancer, activeHook: Any = _COMPUTE) -> list[str]:
    """
    Make C{balancer} C{backend}'s balancer from the next decision on.  It
    takes over the state of the one it replaces when it provides
    L{IAdoptingBalancer}; connections in progress go on (the new balancer
    hears of their end).

    @param activeHook: The balancer's C{activeChanged} hook when already
        worked out (a reload: when the new backend was built, warning once
        about an undeclared one).
    @return: One line per change, for the log.
    @raise ConfigError: when C{balancer} is not an L{IBalancer}.
    """
    if not IBalancer.providedBy(balancer):
        raise ConfigError(f"backend {backend.name!r}: {balancer!r} does not provide IBalancer")
    old: Any = backend.balance
    if balancer is old:
        return []
    changes = balanceChanges(old, balancer)
    if IAdoptingBalancer.providedBy(balancer) and balancer.adopt(old):  # type: ignore[attr-defined]
        changes.append(f"balance {type(balancer).__name__} took over the state of {type(old).__name__}")
    hook = activeHookOf(balancer, backend.definedAt) if activeHook is _COMPUTE else activeHook
    listeners: list[Any] = backend._listeners
    if old in listeners:
        listeners.remove(old)
    backend.balance = balancer
    backend._activeHook = hook
    if IServerListener.providedBy(balancer):
        listeners.insert(0, balancer)  # the balancer hears first (IBalancer)
    return changes


def setPersistence(backend: Backend, persistence: IPersistence | None) -> list[str]:
    """
    Make C{persistence} (or C{None}) C{backend}'s persistence strategy,
    keeping sticky clients where they are: the new strategy takes the
    entries of the old one (L{IAdoptingPersistence}), or, when it cannot,
    the old one goes on being asked about the clients the new one does
    not know (a L{Handover}).

    @return: One line per change, for the log.
    @raise ConfigError: when C{persistence} is not an L{IPersistence}.
    """
    if persistence is not None and not IPersistence.providedBy(persistence):
        raise ConfigError(f"backend {backend.name!r}: {persistence!r} does not provide IPersistence")
    old = backend.persistence
    if old is persistence:
        return []
    label = type(persistence).__name__ if persistence is not None else "none"
    changes = [f"persistence {type(old).__name__ if old is not None else 'none'} -> {label}"]
    previous = old.current if isinstance(old, Handover) else old
    if persistence is None or old is None:
        backend.persistence = persistence
    elif IAdoptingPersistence.providedBy(persistence) and persistence.adopt(previous):  # type: ignore[attr-defined]
        changes.append(f"persistence {label} took over the entries of {type(previous).__name__}")
        # what an earlier handover still recalls goes on being recalled
        backend.persistence = Handover(persistence, old.previous) if isinstance(old, Handover) else persistence
    else:
        changes.append(f"persistence {type(previous).__name__} still recalls the clients {label} does not know")
        backend.persistence = Handover(persistence, old)  # old may be a Handover: the chain goes on
    return changes


@implementer(IHTTPPersistence, IStickyCount, IExplainingPersistence)
class Handover:
    """
    The persistence of a backend just after a swap the new strategy could
    not adopt: recall from the new one, else from the previous one (so a
    client stuck before the swap stays); remember in the new one.  Its
    http rewriting is the new strategy's (when it has any).

    @ivar current: The new strategy.
    @ivar previous: The one it replaced.
    """

    def __init__(self, current: IPersistence, previous: IPersistence) -> None:
        self.current = current
        self.previous = previous

    def __repr__(self) -> str:
        return f"<Handover {self.current!r} (previously {self.previous!r})>"

    def recall(self, backend: Backend, context: Context) -> Server | None:
        server = self.current.recall(backend, context)
        return server if server is not None else self.previous.recall(backend, context)

    def remember(self, backend: Backend, server: Server, context: Context) -> None:
        self.current.remember(backend, server, context)

    def rewriteRequest(self, backend: Backend, request: Any, context: Context) -> None:
        if IHTTPPersistence.providedBy(self.current):
            self.current.rewriteRequest(backend, request, context)  # type: ignore[attr-defined]

    def rewriteResponse(self, backend: Backend, server: Server, response: Any, context: Context) -> None:
        if IHTTPPersistence.providedBy(self.current):
            self.current.rewriteResponse(backend, server, response, context)  # type: ignore[attr-defined]

    def stickyClients(self, backend: Backend, server: Server) -> list[str]:
        found: list[str] = []
        for strategy in (self.current, self.previous):
            if IStickyCount.providedBy(strategy):
                found.extend(c for c in strategy.stickyClients(backend, server) if c not in found)  # type: ignore[attr-defined]
        return found

    def explainRecall(self, backend: Backend, context: Context) -> str:
        said = [
            s.explainRecall(backend, context) if IExplainingPersistence.providedBy(s) else type(s).__name__  # type: ignore[attr-defined]
            for s in (self.current, self.previous)
        ]
        return f"{said[0]}; before the swap: {said[1]}"

    def entries(self) -> list[tuple[str, str, float]]:
        """The entries of both strategies that keep a table (C{show table})."""
        rows: list[tuple[str, str, float]] = []
        for strategy in (self.current, self.previous):
            entries = getattr(strategy, "entries", None)
            if entries is not None:
                rows.extend(entries())
        return rows


def updateServer(backend: Backend, old: Server, new: Server, now: float) -> list[str]:
    """
    A reload lists C{old}, a server of C{backend}, again as C{new} (same
    name and target): take C{new}'s settings into C{old}, which stays.

    @return: One line per change, for the log.
    """
    changes: list[str] = []
    if backend._leaving.pop(old, None) is not None:
        changes.append(f"server {old.name} configured again: no longer leaving")
        if old.state is ServerState.DRAIN:
            old.setState(ServerState.UP, "configured again", now)
    for name in ("maxconn", "backup", "sendProxy", "slowstart", "cookie"):
        before, after = getattr(old, name), getattr(new, name)
        if before != after:
            setattr(old, name, after)
            changes.append(f"server {old.name} {name} {before!r} -> {after!r}")
    if new.weight != old.initialWeight:
        changes.append(f"server {old.name} weight {old.weight} -> {new.weight}")
        old.initialWeight = new.weight
        old.setWeight(new.weight)
    return changes


def updateSettings(backend: Backend, new: Backend, changes: list[str]) -> None:
    """
    The settings part of L{Backend.updateFrom}: take C{new}'s balancer
    (through L{setBalancer}, so it may adopt the running one's state),
    health check (unless configured alike), persistence (through
    L{setPersistence} when of another class: sticky clients stay; kept,
    with its table, when of the same class), timeouts and breakers.
    """
    if new.balance is not backend.balance:
        described = balanceChanges(backend.balance, new.balance)
        adopted = setBalancer(backend, new.balance, new._activeHook)
        if described:  # the same balancer configured alike is no change (even when it adopted)
            changes.extend(adopted)
    if not samePolicy(backend.health, new.health):
        changes.append("health check changed")
        backend.health = new.health
    current = backend.persistence
    if isinstance(current, Handover):
        current = current.current
    if type(current) is not type(new.persistence):
        changes.extend(setPersistence(backend, new.persistence))
    for name in ("retries", "timeoutConnect", "timeoutServer", "timeoutQueue", "allBackups"):
        before, after = getattr(backend, name), getattr(new, name)
        if before != after:
            setattr(backend, name, after)
            changes.append(f"{name} {before!r} -> {after!r}")
    changes.extend(updateBreakers(backend, new))
