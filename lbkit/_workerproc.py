# -*- test-case-name: tests.test_workers -*-
"""
The pieces of L{lbkit.workers} that both sides share: the listening
sockets the supervisor holds for its workers, the JSON-lines messages
between them, and the counters a worker reports.

Messages are one JSON object per line.  The supervisor writes to a
worker's standard input; the worker writes to its standard output and
logs to its standard error (the supervisor relays those lines into its
own log).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import weakref
from typing import Any, Callable, Iterable, Sequence

from twisted.internet import tcp, unix
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    UNIXServerEndpoint,
    serverFromString,
)
from twisted.internet.error import CannotListenError
from twisted.protocols.tls import TLSMemoryBIOFactory

from lbkit._address import parseUDP
from lbkit._backend import backendsOf
from lbkit._latency import mergeReports
from lbkit._model import ServerState
from lbkit.traffic import Table, tablesOf

__all__: list[str] = []

#: The first file descriptor a worker finds its listening sockets at.
FIRST_FD = 3

#: Server counters a worker reports and the supervisor sums.
SERVER_COUNTERS = (
    "active", "maxActive", "total", "bytesIn", "bytesOut", "connectFailures",
    "retries", "requests", "responseErrors", "redispatches",
)
#: Backend and frontend-factory counters likewise.
BACKEND_COUNTERS = ("noServerCount", "redispatches")
FACTORY_COUNTERS = ("total", "current", "maxCurrent", "bytesIn", "bytesOut", "requests", "evicted", "dropped",
                    "compIn", "compOut", "compRsp", "compByp")
#: Counters that say how many now (summed over live workers only); the
#: others only grow, and a worker that ended keeps its share.
GAUGES = frozenset(["active", "maxActive", "current", "maxCurrent", "bytes", "objects"])
#: The counters (and gauges) of an C{http.Cache}, by its name (docs/cache.md).
CACHE_COUNTERS = ("hits", "misses", "revalidated", "stores", "evictions", "purged", "bytes", "objects")


def encode(message: dict[str, Any]) -> bytes:
    """One message as a line."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


class LineSplitter:
    """
    Split a byte stream into lines and hand each to C{deliver}; a line
    longer than C{limit} bytes is dropped (with what follows it up to the
    next newline).
    """

    def __init__(self, deliver: Callable[[bytes], None], limit: int = 1 << 24) -> None:
        self.deliver = deliver
        self.limit = limit
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        buffer = self._buffer + data
        *lines, self._buffer = buffer.split(b"\n")
        for line in lines:
            self.deliver(line)
        if len(self._buffer) > self.limit:
            self._buffer = b""


def frontendKey(item: Any) -> str:
    """What names a frontend in the counters: its name and endpoint."""
    return f"{getattr(item, 'name', '')}@{getattr(item, 'endpoint', '')}"


def _numbers(obj: Any, names: Iterable[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            found[name] = value
    responses = getattr(obj, "responses", None)
    if isinstance(responses, dict):
        found["responses"] = dict(responses)
    latency = getattr(obj, "latency", None)
    if latency is not None:  # timed: the supervisor has a stats page (docs/stats.md, "Latency")
        found["latency"] = latency.report()
    return found


def _caches(listen: Sequence[Any]) -> dict[str, Any]:
    """The response caches of C{listen}'s frontends and routes, by name."""
    found: dict[str, Any] = {}
    for item in listen:
        for cache in [getattr(item, "cache", None)] + [getattr(r, "cache", None) for r in getattr(item, "routes", ())]:
            if cache is not None:
                found.setdefault(cache.name, cache)
    return found


def countersOf(listen: Sequence[Any]) -> dict[str, Any]:
    """The counters of a worker's servers, backends, frontends and response caches."""
    servers: dict[str, Any] = {}
    backends: dict[str, Any] = {}
    for backend in backendsOf(listen):
        backends[backend.name] = _numbers(backend, BACKEND_COUNTERS)
        for server in backend.servers:
            servers[f"{backend.name}/{server.name}"] = _numbers(server, SERVER_COUNTERS)
    frontends: dict[str, Any] = {}
    for item in listen:
        factories = getattr(item, "factories", None)
        if factories:
            frontends[frontendKey(item)] = [_numbers(f, FACTORY_COUNTERS) for f in factories]
    caches = {name: _numbers(cache, CACHE_COUNTERS) for name, cache in _caches(listen).items()}
    tables = {t.name: t.report() for t in {id(t): t for item in listen for t in tablesOf(item)}.values()}
    return {"servers": servers, "backends": backends, "frontends": frontends, "caches": caches,
            "tables": tables}


def _add(total: dict[str, Any], part: dict[str, Any], gauges: bool) -> None:
    for name, value in part.items():
        if name == "responses":
            into = total.setdefault("responses", {})
            for key, count in value.items():
                into[key] = into.get(key, 0) + count
        elif name == "latency":
            total[name] = mergeReports(total.get(name), value, gauges)
        elif gauges or name not in GAUGES:
            total[name] = total.get(name, 0) + value


def sumCounters(reports: Iterable[dict[str, Any]], base: dict[str, Any], gauges: bool = True) -> dict[str, Any]:
    """
    The sum of several workers' counters, on top of C{base} (the counters
    of workers that ended; their gauges are not added when C{gauges} is
    false).
    """
    total: dict[str, Any] = {"servers": {}, "backends": {}, "frontends": {}, "caches": {}}
    for report, withGauges in [(base, False)] + [(r, gauges) for r in reports]:
        for kind in ("servers", "backends", "caches"):
            for key, numbers in report.get(kind, {}).items():
                _add(total[kind].setdefault(key, {}), numbers, withGauges)
        for key, factories in report.get("frontends", {}).items():
            into = total["frontends"].setdefault(key, [])
            for i, numbers in enumerate(factories):
                while len(into) <= i:
                    into.append({})
                _add(into[i], numbers, withGauges)
    # traffic tables: what the live workers hold now (an ended worker's keys are gone)
    byName: dict[str, list[Any]] = {}
    for report in reports if gauges else ():
        for name, table in report.get("tables", {}).items():
            byName.setdefault(name, []).append(table)
    total["tables"] = {name: Table.merged(parts) for name, parts in byName.items()}
    return total


def purgeCaches(listen: Sequence[Any], name: str, key: str | None, prefix: str | None) -> int:
    """A worker purges its caches called C{name} (of C{key}, or of every key under C{prefix}); return how many entries went."""
    cache = _caches(listen).get(name)
    if cache is None:
        return 0
    if key is not None:
        return int(cache.purge(key=key.encode("utf-8")))
    return int(cache.purge(prefix=(prefix or "").encode("utf-8")))


def purgeWorkers(processes: Sequence[Any], name: str, key: str | None, prefix: str | None) -> Deferred[int]:
    """The supervisor asks every worker process to L{purgeCaches}; fires with the entries they dropped in all."""
    asks = [p.ask({"op": "purge", "cache": name, "key": key, "prefix": prefix}) for p in processes]
    return gatherResults(asks, consumeErrors=True).addCallback(lambda replies: sum(r.get("purged", 0) for r in replies))


def applyCounters(listen: Sequence[Any], counters: dict[str, Any]) -> None:
    """Set the counters of the supervisor's own objects to C{counters}."""
    servers = counters.get("servers", {})
    backends = counters.get("backends", {})
    for backend in backendsOf(listen):
        _set(backend, backends.get(backend.name, {}), BACKEND_COUNTERS)
        for server in backend.servers:
            _set(server, servers.get(f"{backend.name}/{server.name}", {}), SERVER_COUNTERS)
    caches = counters.get("caches", {})
    for name, cache in _caches(listen).items():
        _set(cache, caches.get(name, {}), CACHE_COUNTERS)
    frontends = counters.get("frontends", {})
    for item in listen:
        factories = getattr(item, "factories", None) or []
        reported = frontends.get(frontendKey(item), [])
        for i, factory in enumerate(factories):
            _set(factory, reported[i] if i < len(reported) else {}, FACTORY_COUNTERS)
    tables = counters.get("tables", {})
    for table in {id(t): t for item in listen for t in tablesOf(item)}.values():
        table.reported = tables.get(table.name, Table.merged([]))


def _set(obj: Any, numbers: dict[str, Any], names: Iterable[str]) -> None:
    for name in names:
        if isinstance(getattr(obj, name, None), int):
            setattr(obj, name, numbers.get(name, 0))
    responses = getattr(obj, "responses", None)
    if isinstance(responses, dict):
        got = numbers.get("responses", {})
        for key in responses:
            responses[key] = got.get(key, 0)
    latency = getattr(obj, "latency", None)
    if latency is not None:
        latency.external = numbers.get("latency")


# -- server states -------------------------------------------------------------


def statesOf(listen: Sequence[Any]) -> list[list[Any]]:
    """Every server's state, weight and slow-start ramp, as the supervisor sends them."""
    return [
        [backend.name, server.name, server.state.value, server.weight, server.rampFactor]
        for backend in backendsOf(listen)
        for server in backend.servers
    ]


def applyStates(listen: Sequence[Any], states: Iterable[Sequence[Any]], now: float) -> None:
    """Give a worker's servers the states the supervisor sent."""
    servers = {(b.name, s.name): s for b in backendsOf(listen) for s in b.servers}
    for backendName, serverName, state, weight, ramp in states:
        server = servers.get((backendName, serverName))
        if server is None:
            continue
        if server.weight != weight:
            server.setWeight(weight)
        if server.rampFactor != ramp:
            server.setRampFactor(ramp)
        if server.state.value != state:
            server.setState(ServerState(state), "set by the supervisor", now)


class ObservationForwarder:
    """
    A worker's passive checks: what live traffic tells a server's
    C{observe} (HAProxy's C{observe}), sent to the supervisor, whose health
    monitors decide.  Only what changes a monitor's count goes: every
    failure, and a success only after a failure (it resets the count), so
    a healthy server costs no message.
    """

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self._send = send
        #: server -> whether the last outcome sent was a failure
        self._failing: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()

    def watch(self, listen: Sequence[Any]) -> None:
        """Observe every server of the backends whose check has C{observe}."""
        for backend in backendsOf(listen):
            if getattr(backend.health, "observe", None) is None:
                continue
            for server in backend.servers:
                if server not in self._failing:
                    self._failing[server] = False
                    server.addObserver(self._observed)

    def _observed(self, server: Any, ok: bool, reason: str) -> None:
        if ok and not self._failing.get(server):
            return
        self._failing[server] = not ok
        backend = server.backend
        if backend is not None:
            self._send({"op": "observe", "backend": backend.name, "server": server.name, "ok": ok, "reason": reason})


def applyObservation(listen: Sequence[Any], message: dict[str, Any]) -> None:
    """In the supervisor: replay a worker's observation on its own server."""
    for backend in backendsOf(listen):
        if backend.name == message.get("backend"):
            for server in backend.servers:
                if server.name == message.get("server"):
                    server.observe(bool(message.get("ok")), str(message.get("reason", "")))
                    return


# -- listening sockets ---------------------------------------------------------


class _HeldPort:
    """What a supervisor's shared listener holds: sockets it never accepts on."""

    def __init__(self, holder: SocketHolder, description: str) -> None:
        self.holder = holder
        self.description = description

    def getHost(self) -> Any:
        held = self.holder.ports[self.description][0]
        if held.family == socket.AF_UNIX:
            return UNIXAddress(held.getsockname())
        host, port = held.getsockname()[:2]
        address = IPv6Address if ":" in host else IPv4Address
        return address("UDP", host, port) if held.type == socket.SOCK_DGRAM else address("TCP", host, port)

    def stopListening(self) -> Deferred[None]:
        self.holder.release(self.description)
        return succeed(None)


def openSockets(reactor: Any, description: str, count: int) -> list[socket.socket]:
    """
    C{count} listening sockets on the address of C{description}: for a
    C{tcp:}, C{tcp6:} or C{ssl:} endpoint string, C{count} sockets with
    C{SO_REUSEPORT} (the kernel spreads new connections over them evenly);
    for C{udp:} (L{lbkit.udp}), C{count} datagram sockets likewise; for a
    C{unix:} one, one socket shared by every slot (a stale socket file is
    replaced, as Twisted does).

    @raise CannotListenError: when the address cannot be listened on.
    """
    if description.startswith("udp:"):
        port, interface = parseUDP(description)
        return _reusePortSockets(count, interface or "0.0.0.0", port, socket.SOCK_DGRAM, None)
    endpoint = serverFromString(reactor, description)
    if isinstance(endpoint, UNIXServerEndpoint):
        return [_unixSocket(endpoint)] * count
    if not isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint, SSL4ServerEndpoint)):
        raise CannotListenError("", 0, f"--workers shares only tcp:, tcp6:, ssl: and unix: listeners, not {description!r}")
    interface = endpoint._interface or ("::" if isinstance(endpoint, TCP6ServerEndpoint) else "0.0.0.0")
    return _reusePortSockets(count, interface, endpoint._port, socket.SOCK_STREAM, endpoint._backlog)


def _reusePortSockets(count: int, interface: str, port: int, kind: int, backlog: int | None) -> list[socket.socket]:
    """
    C{count} sockets of C{kind} bound to one address with C{SO_REUSEPORT}
    (listening with C{backlog}, for stream sockets); the kernel spreads new
    connections (or clients, for datagrams) over them.
    """
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(family, kind)
            opened.append(s)
            if backlog is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((interface, port))
            port = s.getsockname()[1]  # port 0: the others take the one it got
            if backlog is not None:
                s.listen(backlog)
            s.setblocking(False)
    except OSError as e:
        for s in opened:
            s.close()
        raise CannotListenError(interface, port, e) from None
    return opened


def _unixSocket(endpoint: UNIXServerEndpoint) -> socket.socket:
    path = endpoint._address
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
        s.bind(path)
        os.chmod(path, endpoint._mode)
        s.listen(endpoint._backlog)
        s.setblocking(False)
    except OSError as e:
        s.close()
        raise CannotListenError(None, path, e) from None
    return s


class _AdoptedUNIXPort(unix.Port):
    """
    A worker's port on the supervisor's UNIX socket: stopping it must not
    remove the socket file, nor shut the socket down (which would refuse
    connections for every process sharing it): the supervisor keeps both
    for the next worker.
    """

    _shouldShutdown = False

    def connectionLost(self, reason: Any) -> None:
        tcp.Port.connectionLost(self, reason)


class SocketHolder:
    """
    The supervisor's port source (L{lbkit._listening.setPortSource}): a
    shared listener gets one socket per worker slot, opened once with
    C{SO_REUSEPORT} and never accepted on here; worker slot I{i} (and its
    replacements) accepts on socket I{i}.  Listening again on the same
    endpoint string (a reload) gets the same sockets, so the workers'
    copies stay valid and no connection queued on them is lost.
    """

    def __init__(self, reactor: Any, slots: int = 1) -> None:
        self.reactor = reactor
        self.slots = slots
        #: The open listening sockets, by endpoint string, one per slot.
        self.ports: dict[str, list[socket.socket]] = {}
        self.users: dict[str, int] = {}

    def listen(self, service: Any) -> Any:
        if not service.shared:
            return None
        description = service.description
        if description not in self.ports:
            self.ports[description] = openSockets(self.reactor, description, self.slots)
        self.users[description] = self.users.get(description, 0) + 1
        return _HeldPort(self, description)

    def release(self, description: str) -> None:
        self.users[description] = max(0, self.users.get(description, 0) - 1)

    def descriptions(self) -> set[str]:
        """The endpoint strings of the sockets in use."""
        return {d for d in self.ports if self.users.get(d, 0) > 0}

    def sockets(self, slot: int) -> list[tuple[str, int, int]]:
        """C{(endpoint string, file descriptor, address family)} of slot C{slot}'s sockets in use."""
        return [(d, self.ports[d][slot].fileno(), int(self.ports[d][slot].family)) for d in sorted(self.descriptions())]

    def closeUnused(self) -> list[str]:
        """Close the sockets no listener uses any more; return their endpoint strings."""
        closed = [d for d in self.ports if self.users.get(d, 0) == 0]
        for description in closed:
            _close(self.ports.pop(description))
            self.users.pop(description, None)
        return closed

    def closeAll(self) -> None:
        for sockets in self.ports.values():
            _close(sockets)
        self.ports.clear()
        self.users.clear()


def _close(sockets: list[socket.socket]) -> None:
    """Close a listener's sockets; a UNIX socket's file goes too."""
    for s in sockets:
        if s.fileno() < 0:
            continue  # the same socket in several slots (unix:)
        path = s.getsockname() if s.family == socket.AF_UNIX else None
        s.close()
        if path and os.path.exists(path):
            os.remove(path)


class _NullPort:
    """A worker's stand-in for a listener only the supervisor serves."""

    inactive = True

    def getHost(self) -> Any:
        return None

    def stopListening(self) -> Deferred[None]:
        return succeed(None)


class SocketAdopter:
    """
    A worker's port source: shared listeners accept on the sockets the
    supervisor opened (inherited file descriptors); the others (stats
    pages, the command socket) do not listen in a worker.
    """

    def __init__(self, reactor: Any, sockets: Iterable[Sequence[Any]]) -> None:
        self.reactor = reactor
        self.sockets = {description: (fd, family) for description, fd, family in sockets}

    def listen(self, service: Any) -> Any:
        if not service.shared:
            return _NullPort()
        found = self.sockets.get(service.description)
        if found is None:
            raise CannotListenError("", 0, "the supervisor did not open this endpoint (it restarts workers to add one)")
        fd, family = found
        factory: Any = service.factory
        if service.description.startswith("udp:"):
            return self.reactor.adoptDatagramPort(fd, socket.AddressFamily(family), factory)
        if family == socket.AF_UNIX:
            port = _AdoptedUNIXPort._fromListeningDescriptor(self.reactor, fd, factory)
            port.startListening()
            return port
        endpoint = serverFromString(self.reactor, service.description)
        if isinstance(endpoint, SSL4ServerEndpoint):
            factory = TLSMemoryBIOFactory(endpoint._sslContextFactory, False, factory)
        return self.reactor.adoptStreamPort(fd, socket.AddressFamily(family), factory)
