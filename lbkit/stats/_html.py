# -*- test-case-name: tests.test_stats -*-
"""
The HTML stats page: one table per frontend and per backend, one row per
server, built with L{twisted.web.template} from a L{Collector} snapshot.
"""

from __future__ import annotations

from typing import Any

from twisted.web.template import Element, Tag, XMLString, renderer, tags

from lbkit.stats._cachestats import cacheTable
from lbkit.stats._charts import charts, timeline
from lbkit.stats._collect import RESPONSE_CLASSES
from lbkit.stats._compstats import compressionTable
from lbkit.stats._tables import tableElements

__all__: list[str] = []

_STYLE = """
body { font-family: sans-serif; font-size: 13px; margin: 1em; }
h1 { font-size: 18px; } h2 { font-size: 14px; margin: 1.2em 0 0.3em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #999; padding: 2px 5px; text-align: right; white-space: nowrap; }
th { background: #ddd; } td.name, td.text { text-align: left; }
tr.total td { background: #eee; font-weight: bold; }
.UP { background: #c0f0c0; } .DOWN { background: #f0a0a0; }
.DRAIN { background: #a0c8f0; } .MAINT { background: #d8b88c; }
form { display: inline; margin: 0; } button { font-size: 11px; }
input.weight { width: 3em; font-size: 11px; }
p.note { color: #555; }
div.charts { margin: 4px 0; } svg.chart { vertical-align: top; margin-right: 4px; }
div.timeline { font-size: 11px; margin: 1px 0; } span.server-name { display: inline-block; width: 10em; }
"""

_TEMPLATE = """\
<html xmlns:t="http://twistedmatrix.com/ns/twisted.web.template/0.1" lang="en">
<head>
<meta charset="utf-8" />
<meta http-equiv="refresh" t:render="refresh" />
<title t:render="title" />
<style t:render="style" />
</head>
<body>
<h1 t:render="title" />
<p class="note" t:render="summary" />
<t:transparent t:render="frontends" />
<t:transparent t:render="backends" />
<t:transparent t:render="caches" />
<t:transparent t:render="compression" />
<t:transparent t:render="tables" />
</body>
</html>
"""


def formatDuration(seconds: float) -> str:
    """C{"45s"}, C{"3m05s"}, C{"2h07m"} or C{"4d3h"}."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def formatBytes(n: int) -> str:
    """C{"512"}, C{"1.5K"}, C{"20.0M"}, ..."""
    value = float(n)
    for unit in ("", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{n}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)  # pragma: no cover


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


_HEAD = (
    "Name", "State", "Weight", "Cur", "Max", "Limit", "Total", "Rate", "Queue",
    "Bytes in", "Bytes out", "Req/s", "Conn err", "Retries",
    "Redisp", "Q/C/R/T ms", "Last check", "Slow start",
)


def breakersLine(breakers: dict[str, Any]) -> str:
    """A backend's circuit breakers in one line: each limit set, how often it tripped, the retries."""
    trips = breakers["trips"]
    parts = []
    for name in ("maxPending", "maxRequests", "maxRetries"):
        if breakers[name] is not None:
            parts.append(f"{name} {breakers[name]} (tripped {trips[name]})")
    budget = breakers["retryBudget"]
    if budget is not None:
        parts.append(f"retry budget {budget['budgetPercent']:g}% (min {budget['minRetryConcurrency']}) "
                     f"(tripped {trips['retryBudget']})")
    retried = ", ".join(f"{k} {v}" for k, v in sorted(breakers["retried"].items())) or "none"
    return f"Circuit breakers: {'; '.join(parts) or 'no limits'}; retried: {retried}"


def mirrorLine(mirror: dict[str, Any]) -> str:
    """A shadow backend's mirrored traffic in one line: copies, losses, and status-class divergence."""
    diverged = ", ".join(f"{k} {v}" for k, v in mirror["divergence"].items()) or "none"
    return (f"Mirrored: {mirror['mirrored']} ({mirror['inFlight']} in flight, {mirror['answered']} answered, "
            f"{mirror['failed']} failed, {mirror['dropped']} dropped, {mirror['tooLarge']} too large); "
            f"agreed {mirror['agreed']}; diverged (primary/shadow): {diverged}")


def _times(times: dict[str, Any] | None) -> Tag:
    """HAProxy's qtime/ctime/rtime/ttime averages, as its log shows times."""
    if not times or not times["samples"]:
        return tags.td("-")
    text = f"{times['qtime']}/{times['ctime']}/{times['rtime']}/{times['ttime']}"
    return tags.td(text, class_="times", title=f"averages over the last {times['samples']} requests")


def _hasResponses(snapshot: dict[str, Any]) -> bool:
    """Whether anything counts http responses (else the columns are left out)."""
    if any(fe["responses"] is not None for fe in snapshot["frontends"]):
        return True
    return any(
        be["responses"] is not None or any(sv["responses"] is not None for sv in be["servers"])
        for be in snapshot["backends"]
    )


class StatsElement(Element):
    """
    The whole page.

    @param snapshot: What L{Collector.snapshot} returned.
    @param refresh: Seconds between automatic reloads.
    @param admin: C{None} for the read-only page, else C{(user, token)} to
        add the admin buttons (forms posting to C{server}, relative to
        C{/admin/}).
    """

    loader = XMLString(_TEMPLATE)

    def __init__(self, snapshot: dict[str, Any], refresh: float, admin: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.refreshSeconds = refresh
        self.admin = admin
        self.http = _hasResponses(snapshot)

    def _header(self) -> Tag:
        names = list(_HEAD)
        if self.http:
            names[12:12] = RESPONSE_CLASSES
        if self.admin is not None:
            names.append("Admin")
        return tags.tr(*[tags.th(h) for h in names])

    def _responseCells(self, responses: dict[str, int] | None) -> list[Tag]:
        if not self.http:
            return []
        if responses is None:
            return [tags.td("-") for _ in RESPONSE_CLASSES]
        return [tags.td(str(responses.get(key, 0))) for key in RESPONSE_CLASSES]

    @renderer
    def refresh(self, request: Any, tag: Tag) -> Tag:
        return tag(content=f"{self.refreshSeconds:g}")

    @renderer
    def title(self, request: Any, tag: Tag) -> Tag:
        return tag("lbkit statistics" + (" (admin)" if self.admin else ""))

    @renderer
    def style(self, request: Any, tag: Tag) -> Tag:
        return tag(_STYLE)

    @renderer
    def summary(self, request: Any, tag: Tag) -> Tag:
        snap = self.snapshot
        text = (
            f"Up {formatDuration(snap['uptime'])}; {len(snap['frontends'])} frontends, "
            f"{len(snap['backends'])} backends; refreshes every {self.refreshSeconds:g}s. "
        )
        logs = snap.get("accessLog") or []
        if logs:
            dropped = sum(d["dropped"] for d in logs)
            text += f"Access log: {dropped} lines dropped"
            worst = [f"{d['destination']} {d['dropped']}" for d in logs if d["dropped"]]
            text += f" ({', '.join(worst)}). " if worst else ". "
        links: list[Any] = [tags.a("JSON", href="stats.json"), " ", tags.a("metrics", href="metrics")]
        if self.admin is not None:
            text += f"Logged in as {self.admin[0]}. "
            links = [tags.a("JSON", href="../stats.json"), " ", tags.a("metrics", href="../metrics")]
        return tag(text, *links)

    @renderer
    def frontends(self, request: Any, tag: Tag) -> list[Tag]:
        out = []
        for fe in self.snapshot["frontends"]:
            sessions = fe["sessions"]
            requests = fe["requests"]
            row = tags.tr(
                tags.td("Frontend", class_="name"),
                tags.td("OPEN", class_="UP"),
                tags.td("-"),
                tags.td(str(sessions["current"])),
                tags.td(_num(sessions["max"])),
                tags.td("-"),
                tags.td(str(sessions["total"])),
                tags.td(_num(sessions["rate"])),
                tags.td("-"),
                tags.td(formatBytes(fe["bytes"]["in"])),
                tags.td(formatBytes(fe["bytes"]["out"])),
                tags.td(_num(requests["rate"]) if requests else "-"),
                *self._responseCells(fe["responses"]),
                *[tags.td("-") for _ in range(6)],
                *([tags.td("")] if self.admin else []),
                class_="total",
                id=f"frontend-{fe['name']}",
            )
            title = f"Frontend {fe['name']} ({fe['mode']}, {fe['endpoint']}) \u2192 {', '.join(fe['backends'])}"
            out.append(tags.div(tags.h2(title), tags.table(self._header(), row), charts(fe.get("history")),
                                class_="frontend", id=f"frontend-{fe['name']}-charts"))
        return out

    @renderer
    def caches(self, request: Any, tag: Tag) -> list[Tag]:
        return cacheTable(self.snapshot.get("caches", []), formatBytes)

    @renderer
    def compression(self, request: Any, tag: Tag) -> list[Tag]:
        return compressionTable(self.snapshot["frontends"], formatBytes)

    @renderer
    def tables(self, request: Any, tag: Tag) -> list[Tag]:
        return tableElements(self.snapshot.get("tables", []))

    @renderer
    def backends(self, request: Any, tag: Tag) -> list[Tag]:
        out = []
        for be in self.snapshot["backends"]:
            rows = [self._header()]
            rows.extend(self._serverRow(sv) for sv in be["servers"])
            rows.append(self._backendRow(be))
            policy = ", ".join(
                f"{k} {be[k]}" for k in ("balance", "health", "persistence") if be[k] is not None
            )
            title = f"Backend {be['name']} ({policy}): {be['serversUp']} up, {be['backupsUp']} backup up"
            parts = [tags.h2(title), tags.table(*rows)]
            if be.get("breakers"):
                parts.append(tags.p(breakersLine(be["breakers"]), class_="breakers"))
            if be.get("mirror"):
                parts.append(tags.p(mirrorLine(be["mirror"]), class_="mirror"))
            parts.append(charts(be.get("history")))
            parts.extend(timeline(sv["name"], sv["timeline"]) for sv in be["servers"] if sv.get("timeline"))
            out.append(tags.div(*parts, class_="backend", id=f"backend-{be['name']}"))
        return out

    def _serverRow(self, sv: dict[str, Any]) -> Tag:
        sessions = sv["sessions"]
        check = sv["check"]
        last = check["last"] or "-"
        if check["configured"] and not check["enabled"]:
            last = f"disabled ({last})" if check["last"] else "disabled"
        ramp = sv["slowstart"]["percent"]
        weight = str(sv["weight"])
        if sv["effectiveWeight"] != sv["weight"]:
            weight += f" ({sv['effectiveWeight']})"
        cells = [
            tags.td(sv["name"] + (" (backup)" if sv["backup"] else ""), class_="name"),
            tags.td(f"{sv['state']} {formatDuration(sv['stateSeconds'])}", class_=f"state {sv['state']}"),
            tags.td(weight),
            tags.td(str(sessions["current"])),
            tags.td(str(sessions["max"])),
            tags.td(_num(sessions["limit"])),
            tags.td(str(sessions["total"])),
            tags.td(_num(sessions["rate"])),
            tags.td("-"),
            tags.td(formatBytes(sv["bytes"]["in"])),
            tags.td(formatBytes(sv["bytes"]["out"])),
            tags.td(_num(sv["requests"]["rate"]) if sv["requests"] else "-"),
            *self._responseCells(sv["responses"]),
            tags.td(str(sv["errors"]["connect"])),
            tags.td(str(sv["retries"])),
            tags.td(str(sv["redispatches"])),
            _times(sv.get("times")),
            tags.td(last, class_="text DOWN" if check["status"] == "failed" else "text"),
            tags.td("-" if ramp is None else f"{ramp}%"),
        ]
        if self.admin is not None:
            cells.append(tags.td(self._buttons(sv), class_="text"))
        return tags.tr(*cells, class_="server", id=f"server-{sv['backend']}-{sv['name']}")

    def _buttons(self, sv: dict[str, Any]) -> Tag:
        assert self.admin is not None
        hidden = [
            tags.input(type="hidden", name="backend", value=sv["backend"]),
            tags.input(type="hidden", name="server", value=sv["name"]),
            tags.input(type="hidden", name="token", value=self.admin[1]),
            tags.input(type="hidden", name="from", value="page"),
        ]
        buttons = [
            tags.button(label, type="submit", name="action", value=label)
            for label in ("ready", "drain", "maint")
        ]
        health = "disable-health" if sv["check"]["enabled"] else "enable-health"
        return tags.form(
            *hidden,
            *buttons,
            " ",
            tags.input(type="number", name="weight", min="0", max="256", value=str(sv["weight"]), class_="weight"),
            tags.button("weight", type="submit", name="action", value="weight"),
            " ",
            tags.button(health, type="submit", name="action", value=health),
            method="post",
            action="server",
        )

    def _backendRow(self, be: dict[str, Any]) -> Tag:
        sessions = be["sessions"]
        return tags.tr(
            tags.td("Backend", class_="name"),
            tags.td(be["status"], class_=f"state {be['status']}"),
            tags.td(str(sum(s["weight"] for s in be["servers"] if s["state"] == "UP"))),
            tags.td(str(sessions["current"])),
            tags.td("-"),
            tags.td("-"),
            tags.td(str(sessions["total"])),
            tags.td(_num(sessions["rate"])),
            tags.td(str(be["queue"]["current"])),
            tags.td(formatBytes(be["bytes"]["in"])),
            tags.td(formatBytes(be["bytes"]["out"])),
            tags.td(_num(be["requests"]["rate"]) if be["requests"] else "-"),
            *self._responseCells(be["responses"]),
            tags.td(str(be["errors"]["connect"])),
            tags.td(str(be["retries"])),
            tags.td(str(be["redispatches"])),
            _times(be.get("times")),
            tags.td(f"no server: {be['noServer']}", class_="text"),
            tags.td("-"),
            *([tags.td("")] if self.admin else []),
            class_="total",
        )
