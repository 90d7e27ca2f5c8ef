# -*- test-case-name: tests.test_traffic_stats -*-
"""
Stick tables (L{lbkit.traffic.Table}) on the stats page, in
C{/stats.json} (C{tables}), in C{/metrics} and on the command socket
(C{show tables}, C{show table NAME}, C{clear table NAME [KEY]}).
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.web.template import Tag, tags

from lbkit.traffic import Table, tablesOf

__all__: list[str] = []

#: Keys shown per table on the page and in C{/stats.json} (the most
#: recently used); C{show table NAME} shows them all.
TABLE_ROWS = 50


def tablesIn(frontends: Sequence[Any]) -> list[Table]:
    """The tables the rules of C{frontends} use, each once, in order."""
    found: list[Table] = []
    for frontend in frontends:
        for table in tablesOf(frontend):
            if table not in found:
                found.append(table)
    return found


def findTable(frontends: Sequence[Any], name: str) -> Optional[Table]:
    """The table called C{name}, or C{None}."""
    for table in tablesIn(frontends):
        if table.name == name:
            return table
    return None


def tableData(table: Table, now: Optional[float] = None, limit: Optional[int] = TABLE_ROWS) -> dict[str, Any]:
    """One table (docs/stats.md, "table object")."""
    rows = table.rows(now, limit)
    return {
        "name": table.name,
        "key": repr(table.key),
        "size": table.size,
        "used": len(table),
        "expire": table.expire,
        "counters": dict(table.counters),
        "evicted": table.evicted,
        "entries": rows,
    }


def showTable(table: Table) -> str:
    """C{show table NAME}: a head line, then one line per key, HAProxy's way."""
    data = tableData(table, limit=None)
    lines = [f"# table: {table.name}, key: {data['key']}, size:{table.size}, used:{data['used']}, "
             f"expire:{table.expire:g}s, evicted:{table.evicted}"]
    for row in data["entries"]:
        fields = " ".join(
            f"{name}={row[name]}" if name == "conn_cur" else f"{name}({table.counters[name]:g}s)={row[name]}"
            for name in table.counters
        )
        lines.append(f"key={row['key']} exp={row['expiresIn']:.0f}s {fields}".rstrip())
    return "\n".join(lines)


def showTables(frontends: Sequence[Any]) -> str:
    """C{show tables}: one line per table."""
    lines = ["# name key size used counters"]
    for table in tablesIn(frontends):
        lines.append(f"{table.name} {table.key!r} {table.size} {len(table)} {table.describe()}")
    return "\n".join(lines)


def tableElements(tables: list[dict[str, Any]]) -> list[Tag]:
    """The page's section: one HTML table per stick table."""
    out = []
    for t in tables:
        counters = list(t["counters"])
        head = tags.tr(tags.th("Key"), *[tags.th(c) for c in counters], tags.th("Expires in"))
        rows = [head]
        for row in t["entries"]:
            rows.append(tags.tr(tags.td(row["key"], class_="name"), *[tags.td(str(row[c])) for c in counters],
                                tags.td(f"{row['expiresIn']:.0f}s")))
        shown = len(t["entries"])
        title = (f"Table {t['name']} ({t['key']}): {t['used']} of {t['size']} keys"
                 + (f", {shown} most recent shown" if shown < t["used"] else ""))
        out.append(tags.div(tags.h2(title), tags.table(*rows), class_="table", id=f"table-{t['name']}"))
    return out


def tableMetrics(tables: list[dict[str, Any]]) -> Iterator[Metric]:
    """Per table: keys held, its size, keys evicted (no per-key series: keys are unbounded in number)."""
    L = ["table"]
    used = GaugeMetricFamily("lbkit_table_keys", "Keys a stick table holds now.", labels=L)
    size = GaugeMetricFamily("lbkit_table_size", "Keys a stick table holds at most.", labels=L)
    evicted = CounterMetricFamily("lbkit_table_evicted", "Keys pushed out of a full stick table.", labels=L)
    for t in tables:
        used.add_metric([t["name"]], t["used"])
        size.add_metric([t["name"]], t["size"])
        evicted.add_metric([t["name"]], t["evicted"])
    yield from (used, size, evicted)
