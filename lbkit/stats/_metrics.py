# -*- test-case-name: tests.test_stats -*-
"""
Prometheus metrics: a custom collector that reads the live objects on each
scrape.  The names are documented in docs/stats.md.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector as _PromCollector

from lbkit._latency import BUCKETS
from lbkit._model import ServerState
from lbkit.stats._compstats import compressionMetrics
from lbkit.stats._tables import tableMetrics

__all__: list[str] = []


def _g(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _c(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


#: The histograms of L{lbkit._latency.METRICS}: name suffix and help text.
_HISTOGRAMS = (
    ("queue", "queue_time_seconds", "Time requests waited for a server slot (Tw)."),
    ("connect", "connect_time_seconds", "Time new server connections took to connect (Tc)."),
    ("response", "response_time_seconds", "Time from the request head to the response head (Tw+Tc+Tr)."),
    ("total", "total_time_seconds", "Time from the request head to the end of the response (Ta)."),
)
#: HAProxy's averages over the last 1,024 requests (qtime, ctime, rtime, ttime).
_AVERAGES = (
    ("qtime", "queue_time_average_seconds", "Average queue time over the last 1024 requests (HAProxy's qtime)."),
    ("ctime", "connect_time_average_seconds", "Average connect time over the last 1024 requests (ctime)."),
    ("rtime", "response_time_average_seconds", "Average response time over the last 1024 requests (rtime)."),
    ("ttime", "total_time_average_seconds", "Average total time over the last 1024 requests (ttime)."),
)
_BOUNDS = [repr(float(b)) for b in BUCKETS] + ["+Inf"]


def _timings(prefix: str, L: list[str], rows: list[tuple[list[str], Any]]) -> Iterator[Metric]:
    """The latency histograms and averages of C{rows}, C{(labels, times)}."""
    for key, suffix, doc in _HISTOGRAMS:
        family = HistogramMetricFamily(f"{prefix}_{suffix}", doc, labels=L)
        for v, times in rows:
            h = times["histograms"][key]
            family.add_metric(v, list(zip(_BOUNDS, h["buckets"], strict=True)), h["sum"])
        yield family
    for key, suffix, doc in _AVERAGES:
        gauge = _g(f"{prefix}_{suffix}", doc, L)
        for v, times in rows:
            gauge.add_metric(v, times[key] / 1000)
        yield gauge


class MetricsCollector(_PromCollector):
    """
    Exposes a L{lbkit.stats._collect.Collector}'s snapshot as metric
    families.  Register it on a private C{CollectorRegistry}.
    """

    def __init__(self, collector: Any) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Metric]:
        snap = self.collector.snapshot()
        yield from self._frontends(snap["frontends"])
        yield from self._backends(snap["backends"])
        yield from self._servers([sv for be in snap["backends"] for sv in be["servers"]])
        yield from self._accessLogs(snap.get("accessLog", []))
        yield from self._caches(snap.get("caches", []))
        yield from compressionMetrics(snap["frontends"])
        yield from tableMetrics(snap.get("tables", []))

    def _caches(self, caches: list[dict[str, Any]]) -> Iterator[Metric]:
        L = ["cache"]
        counters: list[tuple[Any, str]] = [
            (_c("lbkit_cache_hits", "Requests answered from the response cache (304s included).", L), "hits"),
            (_c("lbkit_cache_misses", "Requests the response cache sent to a server.", L), "misses"),
            (_c("lbkit_cache_revalidated", "Stale entries a server's 304 refreshed.", L), "revalidated"),
            (_c("lbkit_cache_stores", "Responses stored in the response cache.", L), "stores"),
            (_c("lbkit_cache_evictions", "Entries dropped to make room.", L), "evictions"),
            (_c("lbkit_cache_purged", "Entries purged through the admin API or the command socket.", L), "purged"),
            (_g("lbkit_cache_bytes", "Bytes the response cache holds now.", L), "bytes"),
            (_g("lbkit_cache_max_bytes", "The most bytes the response cache may hold.", L), "maxBytes"),
            (_g("lbkit_cache_objects", "Entries the response cache holds now.", L), "objects"),
        ]
        for cache in caches:
            for family, key in counters:
                family.add_metric([cache["name"]], cache[key])
        yield from (family for family, _ in counters)

    def _accessLogs(self, destinations: list[dict[str, Any]]) -> Iterator[Metric]:
        L = ["destination"]
        dropped = _c("lbkit_access_log_dropped", "Access-log lines dropped: the destination could not keep up or failed.", L)
        pending = _g("lbkit_access_log_pending_bytes", "Access-log bytes buffered, not yet written.", L)
        for d in destinations:
            dropped.add_metric([d["destination"]], d["dropped"])
            pending.add_metric([d["destination"]], d["pending"])
        yield from (dropped, pending)

    def _frontends(self, frontends: list[dict[str, Any]]) -> Iterator[Metric]:
        L = ["frontend"]
        cur = _g("lbkit_frontend_current_sessions", "Client connections open now.", L)
        tot = _c("lbkit_frontend_sessions", "Client connections accepted.", L)
        bin_ = _c("lbkit_frontend_bytes_in", "Bytes received from clients.", L)
        bout = _c("lbkit_frontend_bytes_out", "Bytes sent to clients.", L)
        req = _c("lbkit_frontend_requests", "HTTP requests received (http mode).", L)
        resp = _c("lbkit_frontend_responses", "HTTP responses by status class (http mode).", L + ["code"])
        for fe in frontends:
            v = [fe["name"]]
            cur.add_metric(v, fe["sessions"]["current"])
            tot.add_metric(v, fe["sessions"]["total"])
            bin_.add_metric(v, fe["bytes"]["in"])
            bout.add_metric(v, fe["bytes"]["out"])
            if fe["requests"] is not None:
                req.add_metric(v, fe["requests"]["total"])
            for code, n in (fe["responses"] or {}).items():
                resp.add_metric(v + [code], n)
        yield from (cur, tot, bin_, bout, req, resp)

    def _backends(self, backends: list[dict[str, Any]]) -> Iterator[Metric]:
        L = ["backend"]
        up = _g("lbkit_backend_up", "1 when the backend has a server taking traffic.", L)
        srv = _g("lbkit_backend_servers_up", "Non-backup servers that are UP.", L)
        queue = _g("lbkit_backend_queue_current", "Connections waiting for a free server slot.", L)
        cur = _g("lbkit_backend_current_sessions", "Connections to the backend's servers now.", L)
        tot = _c("lbkit_backend_sessions", "Connections sent to the backend's servers.", L)
        nosrv = _c("lbkit_backend_no_server", "Connections refused because no server was available.", L)
        bin_ = _c("lbkit_backend_bytes_in", "Bytes sent to the backend's servers.", L)
        bout = _c("lbkit_backend_bytes_out", "Bytes received from the backend's servers.", L)
        trips = _c("lbkit_backend_breaker_trips", "Requests or retries a circuit breaker turned away, by limit.",
                   L + ["limit"])
        retried = _c("lbkit_backend_retries_by_condition", "Retries started, by the condition retried on.",
                     L + ["condition"])
        mirrored = _c("lbkit_backend_mirror_copies", "Mirror copies (http.Mirror) to this shadow backend, by outcome.",
                      L + ["outcome"])
        diverged = _c("lbkit_backend_mirror_divergence", "Mirror copies whose status class differed from the primary's.",
                      L + ["primary", "shadow"])
        for be in backends:
            v = [be["name"]]
            mirror = be.get("mirror")
            if mirror is not None:
                for outcome in ("mirrored", "answered", "failed", "timedOut", "dropped", "tooLarge", "agreed"):
                    mirrored.add_metric(v + [outcome], mirror[outcome])
                for pair, n in mirror["divergence"].items():
                    diverged.add_metric(v + pair.split("/"), n)
            breakers = be.get("breakers")
            if breakers is not None:
                for limit, n in breakers["trips"].items():
                    trips.add_metric(v + [limit], n)
                for condition, n in breakers["retried"].items():
                    retried.add_metric(v + [condition], n)
            up.add_metric(v, 1 if be["status"] == "UP" else 0)
            srv.add_metric(v, be["serversUp"])
            queue.add_metric(v, be["queue"]["current"])
            cur.add_metric(v, be["sessions"]["current"])
            tot.add_metric(v, be["sessions"]["total"])
            nosrv.add_metric(v, be["noServer"])
            bin_.add_metric(v, be["bytes"]["in"])
            bout.add_metric(v, be["bytes"]["out"])
        yield from (up, srv, queue, cur, tot, nosrv, bin_, bout, trips, retried, mirrored, diverged)
        yield from _timings("lbkit_backend", L, [([be["name"]], be["times"]) for be in backends if be.get("times")])

    def _servers(self, servers: list[dict[str, Any]]) -> Iterator[Metric]:
        L = ["backend", "server"]
        up = _g("lbkit_server_up", "1 when the server is UP, else 0.", L)
        state = _g("lbkit_server_state", "1 for the server's current state, 0 for the others.", L + ["state"])
        since = _g("lbkit_server_state_seconds", "Seconds since the server's last state change.", L)
        weight = _g("lbkit_server_weight", "The server's current weight.", L)
        cur = _g("lbkit_server_current_sessions", "Connections to the server now.", L)
        mx = _g("lbkit_server_max_sessions", "Most concurrent connections seen.", L)
        limit = _g("lbkit_server_session_limit", "The server's maxconn (absent when unlimited).", L)
        tot = _c("lbkit_server_sessions", "Connections sent to the server.", L)
        req = _c("lbkit_server_requests", "HTTP requests sent to the server (http mode).", L)
        bin_ = _c("lbkit_server_bytes_in", "Bytes sent to the server (from clients).", L)
        bout = _c("lbkit_server_bytes_out", "Bytes received from the server (to clients).", L)
        resp = _c("lbkit_server_responses", "HTTP responses by status class (http mode).", L + ["code"])
        err = _c("lbkit_server_connect_errors", "Failed connection attempts.", L)
        retr = _c("lbkit_server_retries", "Connections retried on another server after failing here.", L)
        redisp = _c("lbkit_server_redispatches", "Sticky clients sent elsewhere because the server was unusable.", L)
        check = _g("lbkit_server_check_enabled", "1 when the server's health check is enabled.", L)
        passed = _g("lbkit_server_check_passed", "1 when the last health check passed, 0 when it failed.", L)
        took = _g("lbkit_server_check_duration_seconds", "How long the last health check took.", L)
        ramp = _g("lbkit_server_slowstart_ratio", "Slow-start progress, 0 to 1 (1 when not ramping).", L)
        for sv in servers:
            v = [sv["backend"] or "", sv["name"]]
            up.add_metric(v, 1 if sv["state"] == "UP" else 0)
            for s in ServerState:
                state.add_metric(v + [s.value], 1 if sv["state"] == s.value else 0)
            since.add_metric(v, sv["stateSeconds"])
            weight.add_metric(v, sv["weight"])
            sessions = sv["sessions"]
            cur.add_metric(v, sessions["current"])
            mx.add_metric(v, sessions["max"])
            if sessions["limit"] is not None:
                limit.add_metric(v, sessions["limit"])
            tot.add_metric(v, sessions["total"])
            if sv["requests"] is not None:
                req.add_metric(v, sv["requests"]["total"])
            bin_.add_metric(v, sv["bytes"]["in"])
            bout.add_metric(v, sv["bytes"]["out"])
            for code, n in (sv["responses"] or {}).items():
                resp.add_metric(v + [code], n)
            err.add_metric(v, sv["errors"]["connect"])
            retr.add_metric(v, sv["retries"])
            redisp.add_metric(v, sv["redispatches"])
            check.add_metric(v, 1 if sv["check"]["enabled"] else 0)
            if sv["check"]["status"] in ("passed", "failed"):
                passed.add_metric(v, 1 if sv["check"]["status"] == "passed" else 0)
            if sv["check"]["durationMs"] is not None:
                took.add_metric(v, sv["check"]["durationMs"] / 1000)
            percent = sv["slowstart"]["percent"]
            ramp.add_metric(v, 1.0 if percent is None else percent / 100)
        yield from (up, state, since, weight, cur, mx, limit, tot, req, bin_, bout, resp, err, retr, redisp, check, passed, took, ramp)
        timed = [([sv["backend"] or "", sv["name"]], sv["times"]) for sv in servers if sv.get("times")]
        yield from _timings("lbkit_server", L, timed)
