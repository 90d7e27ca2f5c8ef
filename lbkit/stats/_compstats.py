# -*- test-case-name: tests.test_compression_stats -*-
"""
Response compression (L{lbkit.http.Compression}) on the stats page, in
C{/stats.json} (a frontend's C{compression} object) and C{/metrics}:
HAProxy's C{comp_in}, C{comp_out} and C{comp_rsp}, and the responses sent
as they were (see docs/stats.md).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

from prometheus_client.core import CounterMetricFamily, Metric
from twisted.web.template import Tag, tags

__all__ = ["compressionRow", "compressionMetrics", "compressionTable"]

#: Snapshot key, factory counter.
_COUNTERS = (("in", "compIn"), ("out", "compOut"), ("compressed", "compRsp"), ("bypassed", "compByp"))


def _configured(frontend: Any) -> bool:
    if getattr(frontend, "compression", None) is not None:
        return True
    return any(getattr(r, "compression", None) not in (None, False) for r in getattr(frontend, "routes", ()))


def compressionRow(frontend: Any, factories: Sequence[Any]) -> Optional[dict[str, int]]:
    """
    A frontend's C{compression} object, C{{in, out, compressed, bypassed}}
    summed over its factories, or C{None} when neither it nor any of its
    routes compresses.
    """
    if not _configured(frontend):
        return None
    return {key: sum(getattr(f, name, 0) for f in factories) for key, name in _COUNTERS}


def compressionMetrics(frontends: list[dict[str, Any]]) -> Iterator[Metric]:
    """The C{lbkit_frontend_compression_*} families of the snapshot's C{frontends} (those that compress)."""
    L = ["frontend"]
    families = (
        (CounterMetricFamily("lbkit_frontend_compression_in_bytes",
                             "Response body bytes fed to the compressors (HAProxy's comp_in).", labels=L), "in"),
        (CounterMetricFamily("lbkit_frontend_compression_out_bytes",
                             "Compressed bytes the compressors emitted (HAProxy's comp_out).", labels=L), "out"),
        (CounterMetricFamily("lbkit_frontend_compressed_responses",
                             "Responses sent compressed (HAProxy's comp_rsp).", labels=L), "compressed"),
        (CounterMetricFamily("lbkit_frontend_compression_bypassed_responses",
                             "Responses under compression sent as they were (not eligible, or not accepted).",
                             labels=L), "bypassed"),
    )
    for fe in frontends:
        row = fe.get("compression")
        if row is not None:
            for family, key in families:
                family.add_metric([fe["name"]], row[key])
    yield from (family for family, _ in families)


def compressionTable(frontends: list[dict[str, Any]], formatBytes: Callable[[int], str]) -> list[Tag]:
    """The stats page's table of compressing frontends (nothing when none compresses)."""
    rows = [fe for fe in frontends if fe.get("compression") is not None]
    if not rows:
        return []
    header = tags.tr(*[tags.th(h) for h in ("Frontend", "Bytes in", "Bytes out", "Saved", "Compressed", "Bypassed")])
    body = []
    for fe in rows:
        c = fe["compression"]
        saved = f"{100 * (1 - c['out'] / c['in']):.1f}%" if c["in"] else "-"
        body.append(tags.tr(tags.td(fe["name"], class_="name"), tags.td(formatBytes(c["in"])),
                            tags.td(formatBytes(c["out"])), tags.td(saved), tags.td(str(c["compressed"])),
                            tags.td(str(c["bypassed"])), id=f"compression-{fe['name']}"))
    return [tags.div(tags.h2("Compression"), tags.table(header, *body), class_="compression")]
