# -*- test-case-name: tests.test_model -*-
"""
L{Backend}: a group of servers with the policy that spreads traffic over
them (balancer, health check, persistence) and the maxconn queue.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterable, Sequence, Tuple

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit._breakers import RetryBudget, installBreakers
from lbkit._live import (
    addServer,
    removeServer,
    setBalancer,
    setPersistence,
    updateServer,
    updateSettings,
)
from lbkit._model import Context, Server, ServerState
from lbkit._origin import definedAt
from lbkit._preview import Preview, preview
from lbkit._settings import activeHookOf, sameTarget
from lbkit.balance._roundrobin import RoundRobin
from lbkit.error import ConfigError, NoServerAvailable, QueueTimeout
from lbkit.interfaces import IBalancer, IHealthCheck, IPersistence, IServerListener, IServerSource

__all__ = ["Backend", "backendsOf"]

_log = Logger(namespace="lbkit")
_Waiter = Tuple["Deferred[Server]", Context]


@implementer(IServerListener)
class Backend:
    """
    A group of servers, with the policy that spreads traffic over them.

    @ivar name: The backend's name.
    @ivar servers: Every configured server, in configuration (id) order.
    @ivar serverSource: The L{IServerSource} the servers come from (the
        C{servers} argument was one, e.g. L{lbkit.discovery.SRV}), or
        C{None} when the site file lists them.
    @ivar balance: The L{IBalancer}.
    @ivar health: An L{IHealthCheck} or C{None}.
    @ivar persistence: An L{IPersistence} or C{None}.
    @ivar retries: How many more servers to try after a failed connect.
    @ivar timeoutConnect: Seconds to wait for a server connection.
    @ivar timeoutServer: Seconds a server may stay silent (idle timeout).
    @ivar timeoutQueue: Seconds a connection waits for a free slot when all
        servers are at C{maxconn}.
    @ivar allBackups: Use every backup server at once (else only the first).
    @ivar retryOn: What a failed attempt is retried on; C{breakers}: the
        circuit breakers, or C{None} (L{lbkit._breakers}, docs/breakers.md).
    """

    #: Whether its decisions are explained (L{lbkit._explain.enableExplain}).
    explained = False

    def __init__(
        self,
        name: str,
        servers: Sequence[Server] | IServerSource = (),
        balance: IBalancer | None = None,
        health: IHealthCheck | None = None,
        persistence: IPersistence | None = None,
        *,
        retries: int = 3,
        timeoutConnect: float = 5.0,
        timeoutServer: float = 30.0,
        timeoutQueue: float | None = None,
        allBackups: bool = False,
        maxPending: int | None = None,
        maxRequests: int | None = None,
        maxRetries: int | None = None,
        retryBudget: RetryBudget | None = None,
        retryOn: Iterable[str | int] | None = None,
    ) -> None:
        self.definedAt = definedAt()
        if not isinstance(name, str) or not name:
            raise ConfigError(f"backend name must be a non-empty string, not {name!r}")
        self.name = name
        self.serverSource: IServerSource | None = None
        if IServerSource.providedBy(servers):  # none until its first answer
            self.serverSource, servers = servers, []  # type: ignore[assignment]
        servers = list(servers)  # type: ignore[arg-type]
        if not servers and self.serverSource is None:
            raise ConfigError(f"backend {name!r} has no servers")
        seen: set[str] = set()
        for i, server in enumerate(servers):
            if not isinstance(server, Server):
                raise ConfigError(f"backend {name!r}: servers must be lbkit.Server objects, not {server!r}")
            if server.name in seen:
                raise ConfigError(f"backend {name!r}: two servers are named {server.name!r}")
            if server.backend is not None:
                raise ConfigError(f"server {server.name!r} is already in backend {server.backend.name!r}")
            seen.add(server.name)
            server.backend = self
            server.id = i + 1
            server.addListener(self)
        self.servers = servers
        self.balance: IBalancer = RoundRobin() if balance is None else balance
        if not IBalancer.providedBy(self.balance):
            raise ConfigError(f"backend {name!r}: balance={balance!r} does not provide IBalancer")
        #: The balancer's C{activeChanged(server)} (L{IActiveBalancer}), or C{None}.
        self._activeHook: Callable[[Server], object] | None = activeHookOf(self.balance, self.definedAt)
        if health is not None and not IHealthCheck.providedBy(health):
            raise ConfigError(f"backend {name!r}: health={health!r} does not provide IHealthCheck")
        if persistence is not None and not IPersistence.providedBy(persistence):
            raise ConfigError(f"backend {name!r}: persistence={persistence!r} does not provide IPersistence")
        self.health = health
        self.persistence = persistence
        if not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"backend {name!r}: retries must be a non-negative integer")
        self.retries = retries
        self.timeoutConnect = float(timeoutConnect)
        self.timeoutServer = float(timeoutServer)
        self.timeoutQueue = self.timeoutConnect if timeoutQueue is None else float(timeoutQueue)
        self.allBackups = allBackups
        self.retryOn: frozenset[str | int] = frozenset()
        self.breakers: Any = None
        installBreakers(self, maxPending, maxRequests, maxRetries, retryBudget, retryOn)
        self._listeners: list[IServerListener] = []
        if IServerListener.providedBy(self.balance):
            self._listeners.append(self.balance)  # type: ignore[arg-type]
        self._queue: deque[_Waiter] = deque()
        self._anyMaxconn = any(s.maxconn is not None for s in servers)
        self._eligible: list[Server] = []
        #: Servers removed (L{setServers}), draining until idle.
        self._leaving: dict[Server, list[Deferred[Server]]] = {}
        self._recompute()
        self.noServerCount = 0
        #: Clients whose sticky server could not take them, sent elsewhere.
        self.redispatches = 0

    def __repr__(self) -> str:
        return f"<Backend {self.name} {len(self.servers)} servers>"

    # -- server state ----------------------------------------------------

    def _recompute(self) -> None:
        up = [s for s in self.servers if s.state is ServerState.UP and s.weight > 0]
        primary = [s for s in up if not s.backup]
        if primary:
            self._eligible = primary
        else:
            backups = [s for s in up if s.backup]
            self._eligible = backups if self.allBackups else backups[:1]

    def eligible(self) -> Sequence[Server]:
        """
        The servers that take new traffic now: UP non-backup servers, or, when there are
        none, the backup servers (all of them with C{allBackups}, else the first).
        """
        return self._eligible

    def addListener(self, listener: IServerListener) -> None:
        """Subscribe C{listener} to the changes of every server here."""
        self._listeners.append(listener)

    def removeListener(self, listener: IServerListener) -> None:
        """Unsubscribe C{listener}."""
        self._listeners.remove(listener)

    def stateChanged(self, server: Server, old: ServerState, new: ServerState, reason: str) -> None:
        self._recompute()
        active = sum(1 for s in self.servers if s.state is ServerState.UP and not s.backup)
        backup = sum(1 for s in self.servers if s.state is ServerState.UP and s.backup)
        because = f", reason: {reason}" if reason else ""
        _log.info(
            "Server {server} is {state}{because}. {active} active and {backup} backup servers left.",
            server=server.fullName, state=new.value, because=because, active=active, backup=backup,
        )
        if not self._eligible and old is ServerState.UP:
            _log.error("backend {backend} has no server available!", backend=self.name)
        for listener in list(self._listeners):
            listener.stateChanged(server, old, new, reason)
        self._dispatchQueue()

    def weightChanged(self, server: Server, old: int, new: int) -> None:
        self._recompute()
        for listener in list(self._listeners):
            listener.weightChanged(server, old, new)
        self._dispatchQueue()

    # -- choosing --------------------------------------------------------

    def _choose(self, context: Context) -> Server | None:
        """
        Choose a server with a free slot, or C{None} when every usable server is full.

        @raise NoServerAvailable: when no server is usable at all.
        """
        tried = context.tried
        if self.persistence is not None:
            sticky = self.persistence.recall(self, context)
            if sticky is not None:
                if (
                    (sticky.state is ServerState.UP or sticky.state is ServerState.DRAIN)
                    and sticky not in tried
                    and sticky.hasFreeSlot()
                ):
                    return sticky
                self.redispatches += 1
        candidates = self._eligible
        if tried:
            candidates = [s for s in candidates if s not in tried]
        if not candidates:
            raise NoServerAvailable(f"backend {self.name!r} has no server available")
        if self._anyMaxconn:
            candidates = [s for s in candidates if s.maxconn is None or s.active < s.maxconn]
            if not candidates:
                return None
        return self.balance.pick(candidates, context) or None

    def _reserve(self, server: Server, context: Context) -> Server:
        server.active += 1
        server.total += 1
        if server.active > server.maxActive:
            server.maxActive = server.active
        hook = self._activeHook
        if hook is not None:
            hook(server)
        if self.persistence is not None:
            self.persistence.remember(self, server, context)
        return server

    def tryAcquire(self, context: Context) -> Server | None:
        """
        Choose a server and reserve one of its connection slots.

        @return: The server (its C{active} count already raised: call
            L{release} when the connection ends or fails), or C{None} when
            every usable server is full and the caller should L{enqueue}.
        @raise NoServerAvailable: when no server is usable at all.
        """
        if self._queue:
            return None  # first come, first served
        server = self._choose(context)
        if server is None:
            return None
        return self._reserve(server, context)

    def enqueue(self, context: Context, clock: Any) -> Deferred[Server]:
        """
        Wait for a free slot, first come first served, at most
        C{timeoutQueue} seconds.

        @return: A L{Deferred} firing with a reserved server, or failing
            with L{QueueTimeout}.  Cancelling it leaves the queue.
        """
        def cancel(d: Deferred[Server]) -> None:
            if entry in self._queue:
                self._queue.remove(entry)

        d: Deferred[Server] = Deferred(cancel)
        entry = (d, context)
        self._queue.append(entry)
        d.addTimeout(self.timeoutQueue, clock, onTimeoutCancel=self._queueTimedOut)
        return d

    def _queueTimedOut(self, result: object, timeout: float) -> object:
        if isinstance(result, Failure) and result.check(CancelledError):
            raise QueueTimeout(f"no free slot in backend {self.name!r} within {timeout:g}s")
        return result

    def queueLength(self) -> int:
        """How many connections wait for a slot."""
        return len(self._queue)

    def release(self, server: Server) -> None:
        """Give back a slot taken by L{tryAcquire} or L{enqueue}; a waiting connection may take it."""
        server.active -= 1
        hook = self._activeHook
        if hook is not None:
            hook(server)
        if server.active <= 0 and server in self._leaving:
            self._forget(server)
        if self._queue:
            self._dispatchQueue()

    def reacquire(self, server: Server) -> None:
        """
        Take one more slot on C{server} without choosing (http mode retries
        a request on the server it just used); the caller has checked
        L{Server.hasFreeSlot}.  Give it back with L{release}.
        """
        server.active += 1
        if server.active > server.maxActive:
            server.maxActive = server.active
        hook = self._activeHook
        if hook is not None:
            hook(server)

    def _dispatchQueue(self) -> None:
        while self._queue:
            d, context = self._queue[0]
            try:
                server = self._choose(context)
            except NoServerAvailable as e:
                # nothing can serve this one (every server down): it gets its
                # answer now, as a new arrival would, and does not block the rest
                self._queue.popleft()
                d.errback(e)
                continue
            if server is None:
                return
            self._queue.popleft()
            d.callback(self._reserve(server, context))

    # -- reconfiguration (reload) ------------------------------------------

    def updateFrom(self, new: Backend, now: float = 0.0) -> list[str]:
        """
        Take the configuration of C{new}, a backend of the same name just
        loaded again from the site file, and keep this backend's live state.

        The servers are taken as L{setServers} takes them; when C{new}'s
        come from an L{IServerSource}, the servers here stay (the source's
        next answer changes them), and so does the running source when it
        is L{IServerSource.sameAs} the new one.  The balancer, retries,
        timeouts and C{allBackups} are taken from C{new} (a balancer of
        another class, or with other public settings, is listed among the
        changes); the health check too, unless configured alike; the
        persistence strategy is kept (with its stick table) when of the
        same class.  C{new} must not be used afterwards: its servers move
        here.

        @param now: The time, for the servers' C{lastChange}.
        @return: One line per change, for the log.
        """
        changes: list[str] = []
        drain: list[Server] = []
        if new.serverSource is None:
            if self.serverSource is not None:
                changes.append("servers listed in the site file replace the discovered ones")
                self.serverSource = None
            for server in new.servers:
                server.removeListener(new)
                server.backend = None
            drain = self._mergeServers(list(new.servers), now, changes)
        elif self.serverSource is None or not self.serverSource.sameAs(new.serverSource):
            changes.append(f"servers now come from {new.serverSource!r}")
            self.serverSource = new.serverSource
        updateSettings(self, new, changes)
        self._settle(drain, now, "removed from the site file")
        return changes

    def setServers(self, servers: Sequence[Server], now: float = 0.0) -> list[str]:
        """
        Make C{servers} (new L{Server} objects, in no backend yet) this
        backend's servers, as a reload does (L{lbkit.discovery} calls this
        with each new answer):

          - A server of the same name and address stays the same object:
            its state, counters and sessions are kept; a weight that
            differs from the one it was configured with is applied with
            L{Server.setWeight} (a weight set at run time survives an update
            that does not change the configured one); C{maxconn},
            C{backup}, C{sendProxy}, C{slowstart} and C{cookie} are taken.
          - A server whose address (or TLS settings) changed is replaced by
            the new one; the old one is set to MAINT and forgotten (its
            connections go on).
          - A new server joins, UP (its health checks decide from there).
          - A server no longer listed goes to DRAIN (if it was UP) and
            leaves once it has no connection (see L{whenGone}).

        @param now: The time, for the servers' C{lastChange}.
        @return: One line per change, for the log.
        @raise ConfigError: when C{servers} are not new L{Server} objects
            of distinct names; nothing changes then.
        """
        servers = list(servers)
        if len({s.name for s in servers}) < len(servers) or any(s.backend is not None for s in servers):
            raise ConfigError(f"backend {self.name!r}: setServers needs new servers of distinct names")
        changes: list[str] = []
        drain = self._mergeServers(servers, now, changes)
        self._settle(drain, now, "no longer discovered")
        return changes

    def _mergeServers(self, incoming: list[Server], now: float, changes: list[str]) -> list[Server]:
        """
        The server part of L{setServers} and L{updateFrom}: take C{incoming}
        (detached from any backend), appending to C{changes}.

        @return: The servers that start draining (L{_settle} sets them DRAIN).
        """
        mine = {s.name: s for s in self.servers}
        servers: list[Server] = []
        nextId = max([s.id for s in self.servers] + [0]) + 1
        for server in incoming:
            old = mine.pop(server.name, None)
            if old is not None and sameTarget(old, server):
                if old.givenEndpoint is not None:
                    old.givenEndpoint = server.givenEndpoint
                    old.address = server.address
                changes.extend(updateServer(self, old, server, now))
                servers.append(old)
                continue
            server.backend = self
            server.addListener(self)
            if old is None:
                server.id = nextId
                nextId += 1
                changes.append(f"server {server.name} added ({server.address})")
            else:
                server.id = old.id
                self._leaving.pop(old, None)
                old.removeListener(self)
                old.setState(ServerState.MAINT, "replaced (address changed)", now)
                changes.append(f"server {server.name} address {old.address} -> {server.address}")
            servers.append(server)
        drain: list[Server] = []
        for old in mine.values():
            if old not in self._leaving:
                changes.append(f"server {old.name} removed: draining until idle")
                self._leaving[old] = []
                drain.append(old)
            servers.append(old)
        self.servers = servers
        return drain

    def _settle(self, drain: list[Server], now: float, reason: str) -> None:
        """After L{_mergeServers}: recompute, drain C{drain}, forget idle leavers."""
        self._anyMaxconn = any(s.maxconn is not None for s in self.servers)
        self._recompute()
        for old in drain:
            if old.state is ServerState.UP:
                old.setState(ServerState.DRAIN, reason, now)
        for old in list(self._leaving):
            if old.active <= 0:
                self._forget(old)
        self._dispatchQueue()

    # -- live changes (lbkit._live, docs/beyond.md) ---------------------------

    def addServer(self, server: Server, now: float = 0.0) -> Server:
        """Add a new server at run time, UP (L{lbkit._live.addServer})."""
        return addServer(self, server, now)

    def removeServer(self, server: Server, timeout: float | None = None, clock: Any = None) -> Deferred[Server]:
        """Drain C{server}, then remove it; a L{Deferred} of its leaving (L{lbkit._live.removeServer})."""
        return removeServer(self, server, timeout, clock)

    def setBalancer(self, balancer: IBalancer) -> list[str]:
        """Swap the balancer at run time, which may adopt the old one's state (L{lbkit._live.setBalancer})."""
        return setBalancer(self, balancer)

    def setPersistence(self, persistence: IPersistence | None) -> list[str]:
        """Swap the persistence at run time; sticky clients stay (L{lbkit._live.setPersistence})."""
        return setPersistence(self, persistence)

    def preview(self, weights: Any = None, remove: Any = (), add: Any = ()) -> Preview:
        """What changing the servers so would do; nothing changes (L{lbkit._preview.preview})."""
        return preview(self, weights, remove, add)

    def whenGone(self, server: Server) -> Deferred[Server]:
        """
        A L{Deferred} firing with C{server} once it has left this backend:
        at once if it is not here, else when a reload removed it and its
        last connection ended.  (It never fires for a server that stays.)
        """
        d: Deferred[Server] = Deferred()
        waiting = self._leaving.get(server)
        if waiting is not None:
            waiting.append(d)
        elif server not in self.servers:
            d.callback(server)
        return d

    def leaving(self) -> list[Server]:
        """The servers a reload removed that still finish connections."""
        return list(self._leaving)

    def _forget(self, server: Server) -> None:
        waiting = self._leaving.pop(server, None)
        if server in self.servers:
            self.servers = [s for s in self.servers if s is not server]
            self._recompute()
        try:
            server.removeListener(self)
        except ValueError:
            pass  # not subscribed (any more)
        _log.info("Server {server} left the backend (removed).", server=server.fullName)
        for d in waiting or ():
            d.callback(server)


def backendsOf(listen: Sequence[Any]) -> list[Backend]:
    """
    Every backend the items of a C{listen} list send traffic to, once each,
    in first-seen order (what L{lbkit.config.Site.backends}, the running
    service, its reload and the stats pages list).
    """
    found: dict[int, Backend] = {}
    for item in listen:
        for backend in item.backends():
            found.setdefault(id(backend), backend)
    return list(found.values())

