# -*- test-case-name: tests.test_stats -*-
"""
Reading the live objects of a running balancer into plain data: the one
place that knows where every counter lives.  The HTML page, C{/stats.json},
C{/metrics} and the command socket all render what L{Collector.snapshot}
returns; its shape is documented in docs/stats.md.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterable, Sequence

from twisted.logger import Logger
from zope.interface import implementer

from lbkit._backend import Backend, backendsOf
from lbkit._latency import Latency, timeBackend
from lbkit._model import Server, ServerListenerMixin, ServerState
from lbkit.http import mirrorStats
from lbkit.interfaces import IServerListener
from lbkit.stats._cachestats import cacheRows
from lbkit.stats._compstats import compressionRow
from lbkit.stats._history import History
from lbkit.stats._tables import tableData, tablesIn

__all__: list[str] = []

#: The version of the C{/stats.json} schema; raised on incompatible changes.
SCHEMA_VERSION = 1

#: The keys of C{server.responses} (http mode), in display order.
RESPONSE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")


class _RateMeter:
    """
    Per-second rates of ever-growing counters, sampled whenever they are
    read (no timer): the rate is the growth since the newest sample at least
    C{window} seconds old (or the oldest one kept).

    @ivar window: Seconds the rates average over.
    """

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._samples: dict[tuple[int, str], deque[tuple[float, int]]] = {}

    def rate(self, owner: object, counter: str, now: float, value: int) -> float:
        samples = self._samples.setdefault((id(owner), counter), deque())
        if not samples or now - samples[-1][0] >= 1.0:
            samples.append((now, value))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        then, old = samples[0]
        if now - then < 0.5:
            return 0.0
        return max(0.0, (value - old) / (now - then))


def _sumAttr(objects: Iterable[Any], name: str) -> int | None:
    """The sum of attribute C{name} over C{objects}; C{None} if none has it."""
    found = False
    total = 0
    for obj in objects:
        value = getattr(obj, name, None)
        if value is not None:
            found = True
            total += value
    return total if found else None


def _responses(*sources: Any) -> dict[str, int] | None:
    """
    The response counts by class (http mode) of the first source that has
    a C{responses} dict, or the sum over C{sources[1:]} when only those do;
    C{None} in tcp mode.
    """
    counts: dict[str, int] | None = None
    for source in sources:
        got = getattr(source, "responses", None)
        if isinstance(got, dict) and any(got.values()):
            if counts is None:
                counts = {key: 0 for key in RESPONSE_CLASSES}
            for key, value in got.items():
                counts[key] = counts.get(key, 0) + int(value)
            if source is sources[0]:
                break
    return counts


def _lastCheck(last: Any) -> dict[str, Any]:
    """
    The C{last}, C{status} and C{durationMs} of a check result: the health
    monitor's dict (C{status}, C{reason}, C{durationMs}) or plain text.
    """
    if last is None:
        return {"last": None, "status": None, "durationMs": None}
    if isinstance(last, dict):
        status = last.get("status")
        duration = last.get("durationMs")
        text = str(last.get("reason") or status or "")
        if duration is not None:
            text += f" in {duration}ms"
        return {"last": text, "status": status, "durationMs": duration}
    return {"last": str(last), "status": None, "durationMs": None}


def frontendsOf(listen: Sequence[Any]) -> list[Any]:
    """The items of a C{listen} list that send traffic to backends."""
    return [item for item in listen if list(item.backends())]


def modeOf(frontend: Any) -> str:
    """C{"tcp"}, C{"http"} or the frontend's own C{mode} attribute."""
    mode = getattr(frontend, "mode", None)
    if isinstance(mode, str):
        return mode
    parts = type(frontend).__module__.split(".")
    if len(parts) > 1 and parts[0] == "lbkit" and parts[1] in ("tcp", "http"):
        return parts[1]
    return "other"


def _times(latency: Latency | None, others: Sequence[Latency] = ()) -> dict[str, Any] | None:
    """The C{times} of a row: HAProxy's averages and the histograms."""
    if latency is None:
        return None
    return {**latency.averages(), "histograms": latency.histograms(others)}


def _errors(backend: dict[str, Any]) -> int:
    """A backend row's errors, for its chart: 5xx answers, failed connects, refusals for want of a server."""
    return int((backend["responses"] or {}).get("5xx", 0) + backend["errors"]["connect"] + backend["noServer"])


def _headTimes(backends: list[dict[str, Any]]) -> list[int] | None:
    """The summed cumulative histogram of the time to the response head of backend rows."""
    found: list[int] | None = None
    for be in backends:
        if be.get("times"):
            buckets = be["times"]["histograms"]["response"]["buckets"]
            found = list(buckets) if found is None else [a + b for a, b in zip(found, buckets, strict=True)]
    return found


@implementer(IServerListener)
class Collector(ServerListenerMixin):
    """
    Finds the frontends, backends and servers of a C{listen} list and reads
    their live counters.  It subscribes to every backend to learn when each
    server changed state.

    @ivar listen: The bound C{listen} list.
    @ivar clock: Supplies C{seconds()}; set by the page when it starts.
    @ivar log: Where run-time changes are logged (namespace
        C{lbkit.admin}); replaceable in tests.
    """

    def __init__(self) -> None:
        self.listen: list[Any] = []
        self.clock: Any = None
        self.log = Logger(namespace="lbkit.admin")
        self.bound = False
        self._since: dict[int, float] = {}
        self._rates = _RateMeter()
        #: The charts' data (L{History}).
        self.history = History()
        self._started = time.time()
        self._subscribed: set[int] = set()
        #: Reloads the site file (L{lbkit.service.LoadBalancerService.reload}),
        #: set by the service; C{None} when the page runs outside one.
        self.reloader: Any = None
        #: With workers (L{lbkit.workers}): returns one row per worker
        #: process, shown as C{/stats.json}'s C{workers}.
        self.workers: Any = None
        #: With workers: replaces them (L{lbkit.workers.WorkerSupervisor.restartWorkers}).
        self.restarter: Any = None
        #: With workers: purges their response caches (L{lbkit.stats._cachestats.runPurge}).
        self.purger: Any = None
        #: The service's L{lbkit.logs.AccessLogSink}, set by the service;
        #: C{None} when the page runs outside one.
        self.accessLog: Any = None

    # -- wiring -----------------------------------------------------------

    def bind(self, listen: Sequence[Any]) -> None:
        """Show what C{listen} declares; may be called again to replace it."""
        self.listen = list(listen)
        self.bound = True
        for backend in backendsOf(self.listen):
            timeBackend(backend)
            if id(backend) not in self._subscribed:
                self._subscribed.add(id(backend))
                backend.addListener(self)

    def start(self, clock: Any) -> None:
        """Start measuring time with C{clock}."""
        self.clock = clock
        self._started = clock.seconds()

    def now(self) -> float:
        return float(self.clock.seconds()) if self.clock is not None else time.time()

    def stateChanged(self, server: Server, old: ServerState, new: ServerState, reason: str) -> None:
        now = self._since[id(server)] = self.now()
        self.history.changed(server, now, old.value, new.value)

    # -- finding ----------------------------------------------------------

    def frontends(self) -> list[Any]:
        return frontendsOf(self.listen)

    def backends(self) -> list[Backend]:
        return backendsOf(self.listen)

    def findServer(self, backendName: str, serverName: str) -> Server | None:
        """The server called C{serverName} in the backend C{backendName}."""
        for backend in self.backends():
            if backend.name == backendName:
                for server in backend.servers:
                    if server.name == serverName:
                        return server
        return None

    # -- reading ----------------------------------------------------------

    def _stateSince(self, server: Server) -> float:
        since = self._since.get(id(server))
        if since is None:
            since = server.lastChange if server.lastChange > 0 else self._started
        return since

    def server(self, server: Server, now: float | None = None) -> dict[str, Any]:
        """One server's row (docs/stats.md, "server object")."""
        if now is None:
            now = self.now()
        requests = getattr(server, "requests", None) or None
        ramp = float(server.rampFactor)
        return {
            "name": server.name,
            "backend": server.backend.name if server.backend is not None else None,
            "id": server.id,
            "address": server.address,
            "state": server.state.value,
            "stateSeconds": max(0.0, now - self._stateSince(server)),
            "weight": server.weight,
            "initialWeight": server.initialWeight,
            "effectiveWeight": server.effectiveWeight,
            "backup": server.backup,
            "sessions": {
                "current": server.active,
                "max": server.maxActive,
                "limit": server.maxconn,
                "total": server.total,
                "rate": self._rates.rate(server, "total", now, server.total),
            },
            "requests": None if requests is None else {
                "total": requests,
                "rate": self._rates.rate(server, "requests", now, requests),
            },
            "bytes": {"in": server.bytesIn, "out": server.bytesOut},
            "responses": _responses(server),
            "errors": {
                "connect": server.connectFailures,
                "response": getattr(server, "responseErrors", 0),
            },
            "retries": server.retries,
            "redispatches": getattr(server, "redispatches", 0),
            "check": {
                "configured": server.backend is not None and server.backend.health is not None,
                "enabled": bool(getattr(server, "checkEnabled", True)),
                **_lastCheck(getattr(server, "lastCheck", None)),
            },
            "slowstart": {
                "configured": server.slowstart > 0,
                "percent": None if ramp >= 1.0 else int(ramp * 100),
            },
            "times": _times(server.latency),
            "timeline": self.history.timeline(server, server.state.value, now, self._started),
        }

    def backend(self, backend: Backend, now: float | None = None) -> dict[str, Any]:
        """One backend and its servers (docs/stats.md, "backend object")."""
        if now is None:
            now = self.now()
        latency = timeBackend(backend)  # (servers a reload or discovery added are timed from now on)
        servers = [self.server(s, now) for s in backend.servers]
        total = sum(s.total for s in backend.servers)
        requests = _sumAttr(backend.servers, "requests") or None
        eligible = backend.eligible()
        row = {
            "name": backend.name,
            "status": "UP" if eligible else "DOWN",
            "balance": type(backend.balance).__name__,
            "health": type(backend.health).__name__ if backend.health is not None else None,
            "persistence": type(backend.persistence).__name__ if backend.persistence is not None else None,
            "serversUp": sum(1 for s in backend.servers if s.state is ServerState.UP and not s.backup),
            "backupsUp": sum(1 for s in backend.servers if s.state is ServerState.UP and s.backup),
            "queue": {"current": backend.queueLength(), "max": getattr(backend, "maxQueue", None)},
            "sessions": {
                "current": sum(s.active for s in backend.servers),
                "total": total,
                "rate": self._rates.rate(backend, "total", now, total),
            },
            "requests": None if requests is None else {
                "total": requests,
                "rate": self._rates.rate(backend, "requests", now, requests),
            },
            "bytes": {
                "in": sum(s.bytesIn for s in backend.servers),
                "out": sum(s.bytesOut for s in backend.servers),
            },
            "responses": _responses(backend, *backend.servers),
            "errors": {"connect": sum(s.connectFailures for s in backend.servers)},
            "noServer": backend.noServerCount,
            "retries": sum(s.retries for s in backend.servers),
            "redispatches": getattr(
                backend, "redispatches", sum(getattr(s, "redispatches", 0) for s in backend.servers)
            ),
            "breakers": backend.breakers.stats() if backend.breakers is not None else None,
            "mirror": mirrorStats(backend),
            "times": _times(latency, [s.latency for s in backend.servers if s.latency is not None]),
            "servers": servers,
        }
        row["history"] = self.history.sample(
            "backend", backend, now, requests or total, _errors(row), _headTimes([row]),
        )
        return row

    def frontend(self, frontend: Any, now: float | None = None) -> dict[str, Any]:
        """One frontend (docs/stats.md, "frontend object")."""
        if now is None:
            now = self.now()
        factories = list(getattr(frontend, "factories", []))
        total = _sumAttr(factories, "total") or 0
        requests = getattr(frontend, "requests", None)
        if requests is None:
            requests = _sumAttr(factories, "requests")
        extra: dict[str, Any] = {}
        evicted = _sumAttr(factories, "evicted")
        if evicted is not None:  # udp: sessions closed to make room, datagrams dropped
            extra["udp"] = {"evicted": evicted, "dropped": _sumAttr(factories, "dropped") or 0}
        compression = compressionRow(frontend, factories)
        if compression is not None:  # (http mode with compression somewhere; docs/stats.md)
            extra["compression"] = compression
        return {
            "name": str(getattr(frontend, "name", frontend.endpoint)),
            "endpoint": frontend.endpoint,
            "mode": modeOf(frontend),
            "backends": [b.name for b in backendsOf([frontend])],
            "sessions": {
                "current": _sumAttr(factories, "current") or 0,
                "max": _sumAttr(factories, "maxCurrent"),
                "total": total,
                "rate": self._rates.rate(frontend, "total", now, total),
            },
            "requests": None if requests is None else {
                "total": requests,
                "rate": self._rates.rate(frontend, "requests", now, requests),
            },
            "bytes": {
                "in": _sumAttr(factories, "bytesIn") or 0,
                "out": _sumAttr(factories, "bytesOut") or 0,
            },
            "responses": _responses(frontend, *factories),
            **extra,
        }

    def accessLogs(self) -> list[dict[str, Any]]:
        """The access-log destinations (docs/stats.md, "accessLog object")."""
        sink = self.accessLog
        return [] if sink is None else sink.stats()

    def snapshot(self) -> dict[str, Any]:
        """Everything, as C{/stats.json} serves it."""
        now = self.now()
        backends = [self.backend(b, now) for b in self.backends()]
        frontends = []
        for f in self.frontends():
            row = self.frontend(f, now)
            requests = row["requests"]["total"] if row["requests"] else row["sessions"]["total"]
            theirs = [be for be in backends if be["name"] in row["backends"]]
            row["history"] = self.history.sample(
                "frontend", f, now, requests, (row["responses"] or {}).get("5xx", 0), _headTimes(theirs)
            )
            frontends.append(row)
        snapshot = {
            "version": SCHEMA_VERSION,
            "time": time.time(),
            "uptime": max(0.0, now - self._started),
            "frontends": frontends,
            "backends": backends,
            "accessLog": self.accessLogs(),
            **({"tables": [tableData(t) for t in tables]} if (tables := tablesIn(self.frontends())) else {}),
            **({} if self.workers is None else {"workers": self.workers()}),
        }
        caches = cacheRows(self.frontends())
        if caches:  # (docs/cache.md; absent when no frontend has a cache)
            snapshot["caches"] = caches
        return snapshot
