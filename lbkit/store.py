# -*- test-case-name: tests.test_store -*-
"""
State shared by many lbkit processes: the stores behind
L{lbkit.persistence.StickySource}'s C{store} (docs/store.md)::

    from lbkit.persistence import StickySource
    from lbkit.store import Redis

    sticky = StickySource(expire=1800, store=Redis("tcp:10.0.0.5:6379"))

L{Redis} keeps a local copy of every table, answers from it, and writes
through to Redis in the background: each write is a C{SET} with C{PX}
(the entry expires in Redis as it does here) and a C{PUBLISH} on the
table's channel.  A second connection subscribes to those channels, so
each process learns what the others wrote without asking; on every
(re)connection it reads the tables again with C{SCAN} and C{PTTL}.  When
Redis is down or slow, nothing waits: the local copy serves, writes queue
up to a bound, and the connections come back with back-off.

L{Local} is the same contract within one process, for tests and embedders.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import OrderedDict
from typing import Any, Callable, Optional

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, FirstError, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from zope.interface import implementer, provider

from lbkit.interfaces import IStore

__all__ = ["Redis", "Local"]

_log = Logger(namespace="lbkit")

Listener = Callable[[str, str, float], None]

#: Writes in flight on the Redis connection at most; more wait in the queue.
MAX_IN_FLIGHT = 256

#: Keys read per C{SCAN} step when warming the local tables.
SCAN_COUNT = 500


class _Tables:
    """
    The local copy of a store's tables: a bounded map of C{(table, key)}
    to C{(value, expiry)}, least recently written first, and the
    listeners of each table.
    """

    def __init__(self, size: int, clock: Any) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = int(size)
        self._seconds: Callable[[], float] = time.monotonic if clock is None else clock.seconds
        self._entries: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._watchers: dict[str, list[Listener]] = {}

    def get(self, table: str, key: str) -> Optional[str]:
        entry = self._entries.get((table, key))
        if entry is None:
            return None
        if entry[1] <= self._seconds():
            del self._entries[(table, key)]
            return None
        return entry[0]

    def watch(self, table: str, listener: Listener) -> None:
        listeners = self._watchers.setdefault(table, [])
        if listener not in listeners:
            listeners.append(listener)
            self._watched(table, len(listeners) == 1)

    def _watched(self, table: str, first: bool) -> None:
        """A listener joined C{table} (the first one if C{first})."""

    def _store(self, table: str, key: str, value: str, ttl: float) -> None:
        entries = self._entries
        entries[(table, key)] = (value, self._seconds() + ttl)
        entries.move_to_end((table, key))
        while len(entries) > self.size:
            entries.popitem(last=False)

    def _apply(self, table: str, key: str, value: str, ttl: float) -> None:
        """Take an entry from elsewhere: keep it and tell the table's listeners."""
        if ttl <= 0:
            return
        self._store(table, key, value, ttl)
        for listener in list(self._watchers.get(table, ())):
            try:
                listener(key, value, ttl)
            except Exception:
                _log.failure("lbkit: store: a listener of {table} failed", table=table)

    def __len__(self) -> int:
        return len(self._entries)


@implementer(IStore)
class Local(_Tables):
    """
    A store within one process: L{set} tells every listener of the table
    at once (the writer's own included).  Share one between two
    L{lbkit.service.LoadBalancerService}s in a test, or use it where a
    C{store} is required and nothing needs sharing.

    @param size: At most this many entries; the least recently written is
        forgotten to make room.
    @param clock: An object with C{seconds()} (a reactor, a C{Clock});
        C{time.monotonic} if C{None}.
    """

    connected = True
    errors = 0
    dropped = 0

    def __init__(self, size: int = 100_000, clock: Any = None) -> None:
        _Tables.__init__(self, size, clock)

    def start(self, reactor: Any) -> None:
        pass

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def set(self, table: str, key: str, value: str, ttl: float) -> None:
        self._apply(table, key, value, ttl)


def _escapeGlob(text: str) -> str:
    """C{text} matched literally by a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


_protocols: Optional[tuple[Any, Any, type[Exception]]] = None


def _protocolClasses() -> tuple[Any, Any, type[Exception]]:
    """
    The txredisapi protocols, told about their store, and the exception
    of a lost connection: imported when a store starts, not before
    (txredisapi imports the global reactor, which must not happen before
    twistd installs the chosen one).
    """
    global _protocols
    if _protocols is None:
        import txredisapi

        class Commands(txredisapi.RedisProtocol):  # type: ignore[misc, name-defined]
            store: Redis

            def connectionLost(self, why: Failure) -> None:
                self.store._lost(self, why)  # first: the commands in flight fail next
                txredisapi.RedisProtocol.connectionLost(self, why)

        class Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc, name-defined]
            store: Redis

            def messageReceived(self, pattern: Any, channel: str, message: str) -> None:
                self.store._message(channel, message)

            def connectionLost(self, why: Failure) -> None:
                self.store._lost(self, why)
                txredisapi.SubscriberProtocol.connectionLost(self, why)

        _protocols = (Commands, Subscriber, txredisapi.ConnectionError)
    return _protocols


class _ProtocolFactory(Factory):
    """Builds one kind of txredisapi protocol for a L{Redis} store."""

    noisy = False

    def __init__(self, store: Redis, protocolClass: Any, reactor: Any) -> None:
        self.store = store
        self.protocolClass = protocolClass
        self.reactor = reactor
        #: The protocol built last (what L{ClientService} hands the store
        #: is a proxy of it).
        self.current: Any = None

    def buildProtocol(self, addr: Any) -> Any:
        p = self.protocolClass(charset="utf-8", replyTimeout=self.store.timeout, convertNumbers=False)
        p.factory = self
        p.store = self.store
        p.callLater = self.reactor.callLater  # its reply timeouts run on our reactor
        self.current = p
        return p


@implementer(IStreamClientEndpoint)
class _WatchedEndpoint:
    """An endpoint that tells the store of each failed connection attempt."""

    def __init__(self, endpoint: Any, store: Redis) -> None:
        self.endpoint = endpoint
        self.store = store

    def connect(self, factory: Any) -> Deferred[Any]:
        d: Deferred[Any] = self.endpoint.connect(factory)

        def failed(reason: Failure) -> Failure:
            self.store._attemptFailed(reason)
            return reason

        return d.addErrback(failed)


@provider(ILogObserver)
def _discard(event: dict[str, Any]) -> None:
    """Log nothing."""


class _QuietClientService(ClientService):
    """A L{ClientService} that does not log each retry: the store logs once per outage."""

    _log = Logger(namespace="lbkit.store", observer=_discard)


@implementer(IStore)
class Redis(_Tables):
    """
    A store in Redis, through txredisapi (see the module's docstring).

    @param endpoint: Where Redis listens: a client endpoint string.
    @param prefix: The start of every key and channel name it uses.
    @param timeout: Seconds Redis has to answer a command; a connection
        that answers later is dropped and made again.
    @param maxDelay: The longest wait, in seconds, between two attempts to
        connect (from half a second, growing by half each time, with jitter).
    @param queue: At most this many writes wait while Redis is
        unreachable; beyond, the oldest is dropped and counted.
    @param size: At most this many entries in the local copy.
    @param clock: An object with C{seconds()} for the local copy's
        expiry; C{time.monotonic} if C{None}.

    @ivar connected: Whether both connections (commands, and the
        subscription) are up.
    @ivar errors: Failed connection attempts, lost connections and failed
        commands, counted since it was made.
    @ivar dropped: Writes thrown away because the queue was full.
    @ivar written: Writes Redis acknowledged.
    @ivar outages: How many times Redis became unreachable.
    @ivar node: Its random name, in what it publishes (it ignores its own messages).
    """

    def __init__(
        self,
        endpoint: str = "tcp:127.0.0.1:6379",
        prefix: str = "lbkit:",
        *,
        timeout: float = 2.0,
        maxDelay: float = 30.0,
        queue: int = 10_000,
        size: int = 100_000,
        clock: Any = None,
    ) -> None:
        _Tables.__init__(self, size, clock)
        if timeout <= 0 or maxDelay <= 0:
            raise ValueError("timeout and maxDelay must be positive")
        if queue < 1:
            raise ValueError("queue must be at least 1")
        self.endpoint = endpoint
        self.prefix = prefix
        self.timeout = float(timeout)
        self.maxDelay = float(maxDelay)
        self.queue = int(queue)
        self.node = uuid.uuid4().hex
        self.errors = 0
        self.dropped = 0
        self.written = 0
        self.outages = 0
        self._users = 0
        self._stopping = False
        self._down = False
        self._services: list[ClientService] = []
        self._factories: list[_ProtocolFactory] = []
        self._reactor: Any = None
        self._commands: Any = None
        self._subscriber: Any = None
        self._pending: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._inFlight = 0
        self._stalled = False
        self._connectionError: type[Exception] = ConnectionError

    def __repr__(self) -> str:
        return f"<Redis {self.endpoint} prefix={self.prefix!r}>"

    @property
    def connected(self) -> bool:
        return self._commands is not None and self._subscriber is not None

    # -- lifecycle --------------------------------------------------------

    def start(self, reactor: Any) -> None:
        self._users += 1
        if self._users > 1:
            return
        self._stopping = False
        self._reactor = reactor
        commands, subscriber, self._connectionError = _protocolClasses()
        endpoint = _WatchedEndpoint(clientFromString(reactor, self.endpoint), self)
        first = min(0.5, self.maxDelay)
        policy = backoffPolicy(first, self.maxDelay, jitter=lambda: random.random() * first)
        self._factories = [_ProtocolFactory(self, commands, reactor), _ProtocolFactory(self, subscriber, reactor)]
        self._services = [
            _QuietClientService(endpoint, factory, policy, reactor, prepareConnection=prepare)
            for factory, prepare in zip(self._factories, (self._commandsReady, self._subscriberReady), strict=True)
        ]
        for service in self._services:
            service.startService()

    def stop(self) -> Deferred[None]:
        if self._users == 0:
            return succeed(None)
        self._users -= 1
        if self._users:
            return succeed(None)
        self._stopping = True
        services, self._services = self._services, []
        d = gatherResults([s.stopService() for s in services], consumeErrors=True)
        return d.addCallback(lambda _: None)

    # -- connections ------------------------------------------------------

    def _commandsReady(self, proxy: Any) -> None:
        self._commands = self._factories[0].current
        self._stalled = False
        self._flush()
        self._ready()

    def _subscriberReady(self, proxy: Any) -> None:
        protocol = self._factories[1].current
        channels = [self.prefix + table for table in self._watchers]
        if not channels:
            self._subscriber = protocol
            self._ready()
            return

        def subscribed(result: object) -> None:
            self._subscriber = protocol
            later = [self.prefix + t for t in self._watchers if self.prefix + t not in channels]
            if later:  # watched while this subscription was under way
                protocol.subscribe(later).addErrback(self._commandFailed)
            self._ready()

        def failed(reason: Failure) -> None:
            self._commandFailed(reason)
            if protocol.connected:
                protocol.transport.abortConnection()  # ClientService connects again

        # not in prepareConnection: ClientService cannot drop a connection
        # it is still preparing; a Redis that does not answer in time loses it
        d = protocol.subscribe(channels).addTimeout(self.timeout, self._reactor)
        d.addCallbacks(subscribed, failed)

    def _ready(self) -> None:
        if not self.connected:
            return
        if self._down:
            self._down = False
            _log.info("lbkit: store {store}: Redis reachable again; sharing resumes", store=self)
        for table in list(self._watchers):
            self._warm(table)

    def _lost(self, protocol: Any, why: Failure) -> None:
        if protocol is self._commands:
            self._commands = None
        elif protocol is self._subscriber:
            self._subscriber = None
        else:
            return
        if not self._stopping:
            self._failed(why)

    def _attemptFailed(self, why: Failure) -> None:
        if not self._stopping:
            self._failed(why)

    def _failed(self, why: Failure) -> None:
        self.errors += 1
        if not self._down:
            self._down = True
            self.outages += 1
            _log.warn(
                "lbkit: store {store}: Redis unreachable ({why}); serving from local state, reconnecting",
                store=self, why=why.getErrorMessage(),
            )

    # -- reading ----------------------------------------------------------

    def _watched(self, table: str, first: bool) -> None:
        if first and self.connected:
            maybeDeferred(self._subscriber.subscribe, [self.prefix + table]).addErrback(self._commandFailed)
            self._warm(table)

    def _message(self, channel: str, message: str) -> None:
        if not channel.startswith(self.prefix):
            return
        try:
            update = json.loads(message)
            node, key, value, ms = update["n"], update["k"], update["v"], update["t"]
        except (ValueError, KeyError, TypeError):
            self.errors += 1
            return
        if node != self.node:
            self._apply(channel[len(self.prefix) :], str(key), str(value), float(ms) / 1000.0)

    def _warm(self, table: str, cursor: str = "0", count: int = 0) -> None:
        """
        Read C{table}'s live entries from Redis into the local copy (SCAN,
        then GET and PTTL of each key), and log how many once done.
        """
        commands = self._commands
        if commands is None:
            return
        start = self.prefix + table + ":"
        d = maybeDeferred(commands.scan, cursor, pattern=_escapeGlob(start) + "*", count=SCAN_COUNT)

        def scanned(reply: Any) -> Any:
            following, keys = str(reply[0]), list(reply[1])
            reads = [
                gatherResults([commands.get(k), commands.execute_command("PTTL", k)], consumeErrors=True)
                for k in keys
            ]

            def read(results: list[Any]) -> None:
                found = count
                for name, (value, ms) in zip(keys, results, strict=True):
                    key = name[len(start) :]
                    if value is not None and int(ms) > 0 and (table, key) not in self._pending:
                        self._apply(table, key, str(value), int(ms) / 1000.0)
                        found += 1
                if following != "0":
                    self._warm(table, following, found)
                else:
                    _log.info(
                        "lbkit: store {store}: {table}: {count} entries read from Redis",
                        store=self, table=table, count=found,
                    )

            return gatherResults(reads, consumeErrors=True).addCallback(read)

        d.addCallback(scanned).addErrback(self._commandFailed)

    def _commandFailed(self, failure: Failure) -> None:
        if not self._stopping:
            self.errors += 1

    # -- writing ----------------------------------------------------------

    def set(self, table: str, key: str, value: str, ttl: float) -> None:
        if ttl <= 0:
            return
        entry = self._entries.get((table, key))
        if entry is not None and entry[0] == value and entry[1] - self._seconds() >= 0.9 * ttl:
            return  # refreshed a moment ago: Redis's copy still lives long enough
        self._store(table, key, value, ttl)
        self._queue(table, key, value, self._seconds() + ttl)
        self._flush()

    def _queue(self, table: str, key: str, value: str, expires: float, first: bool = False) -> None:
        pending = self._pending
        pending[(table, key)] = (value, expires)
        pending.move_to_end((table, key), last=not first)
        while len(pending) > self.queue:
            pending.popitem(last=False)
            self.dropped += 1

    def _flush(self) -> None:
        commands = self._commands
        pending = self._pending
        while commands is not None and not self._stalled and pending and self._inFlight < MAX_IN_FLIGHT:
            (table, key), (value, expires) = pending.popitem(last=False)
            ms = int((expires - self._seconds()) * 1000)
            if ms <= 0:
                continue
            message = json.dumps({"n": self.node, "k": key, "v": value, "t": ms}, separators=(",", ":"))
            self._inFlight += 1
            d = gatherResults(
                [
                    maybeDeferred(commands.set, f"{self.prefix}{table}:{key}", value, pexpire=ms),
                    maybeDeferred(commands.publish, self.prefix + table, message),
                ],
                consumeErrors=True,
            )
            d.addCallbacks(self._written, self._notWritten, errbackArgs=(table, key, value, expires))

    def _written(self, result: object) -> None:
        self._inFlight -= 1
        self.written += 1
        self._flush()

    def _notWritten(self, failure: Failure, table: str, key: str, value: str, expires: float) -> None:
        self._inFlight -= 1
        reason = failure.value.subFailure if isinstance(failure.value, FirstError) else failure
        if self._stopping or self._commands is None or reason.check(self._connectionError):
            # the connection went: write it again once one is back, unless
            # a newer value is waiting already
            self._stalled = True
            if (table, key) not in self._pending:
                self._queue(table, key, value, expires, first=True)
            return
        self.errors += 1
        self._flush()
