# -*- test-case-name: tests.test_cache_stats -*-
"""
The response caches (L{lbkit.http.Cache}) on the stats page, in
C{/stats.json}, C{/metrics}, and purging them through the admin API
(C{POST /admin/purge}) and the command socket (C{purge cache ...}); see
docs/cache.md.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

from twisted.internet.defer import Deferred
from twisted.web.template import Tag, tags

from lbkit.stats._admin import AdminError

__all__ = ["cachesOf", "cacheRows", "cacheTable", "runPurge"]

#: The stats page's columns: heading, snapshot key.
_COLUMNS = [("Hits", "hits"), ("Misses", "misses"), ("Revalidated", "revalidated"), ("Stored", "stores"),
            ("Evicted", "evictions"), ("Purged", "purged"), ("Objects", "objects"), ("Bytes", "bytes"),
            ("Max bytes", "maxBytes")]


def cachesOf(frontends: Sequence[Any]) -> list[Any]:
    """The caches of C{frontends} and of their routes, each once, in configuration order."""
    found: list[Any] = []
    for frontend in frontends:
        candidates = [getattr(frontend, "cache", None)] + [getattr(r, "cache", None) for r in getattr(frontend, "routes", ())]
        for cache in candidates:
            if cache is not None and all(cache is not c for c in found):
                found.append(cache)
    return found


def cacheRows(frontends: Sequence[Any]) -> list[dict[str, Any]]:
    """The C{caches} of a snapshot: each cache's counters, and which frontends use it (docs/stats.md)."""
    rows = []
    for cache in cachesOf(frontends):
        row = cache.stats()
        row["frontends"] = [str(getattr(f, "name", "")) for f in frontends if cache in cachesOf([f])]
        rows.append(row)
    return rows


def cacheTable(rows: list[dict[str, Any]], formatBytes: Callable[[int], str]) -> list[Tag]:
    """The stats page's table of caches (nothing when there are none)."""
    if not rows:
        return []
    header = tags.tr(tags.th("Cache"), tags.th("Frontends"), *[tags.th(h) for h, _ in _COLUMNS], tags.th("Hit ratio"))
    body = []
    for row in rows:
        looked = row["hits"] + row["misses"]
        cells = [formatBytes(row[k]) if k in ("bytes", "maxBytes") else str(row[k]) for _, k in _COLUMNS]
        ratio = f"{100 * row['hits'] / looked:.1f}%" if looked else "-"
        body.append(tags.tr(tags.td(row["name"], class_="name"), tags.td(", ".join(row["frontends"]), class_="text"),
                            *[tags.td(c) for c in cells], tags.td(ratio), id=f"cache-{row['name']}"))
    return [tags.div(tags.h2("Response caches"), tags.table(header, *body), class_="caches")]


def runPurge(collector: Any, user: str, via: str, name: str, key: str | None, prefix: str | None) -> Union[int, Deferred[int]]:
    """
    Purge the cache called C{name} of the entries of C{key} (C{host/path?query})
    or of every key starting with C{prefix}, and log it on the
    C{lbkit.admin} logger.  With worker processes (the collector's
    C{purger}), every worker purges its own.

    @return: How many entries were dropped (a L{Deferred} of it with workers).
    @raise AdminError: on an unknown cache, or neither or both of C{key} and C{prefix}.
    """
    if (key is None) == (prefix is None):
        raise AdminError(400, "give a key or a prefix (and not both)")
    caches = [c for c in cachesOf(collector.frontends()) if c.name == name]
    if not caches:
        known = ", ".join(sorted({c.name for c in cachesOf(collector.frontends())})) or "none"
        raise AdminError(404, f"no cache {name!r} (caches: {known})")
    what = f"key {key!r}" if key is not None else f"prefix {prefix!r}"
    if key is not None:
        count = sum(c.purge(key=key.encode("utf-8")) for c in caches)
    else:
        assert prefix is not None
        count = sum(c.purge(prefix=prefix.encode("utf-8")) for c in caches)

    def logged(count: int) -> int:
        collector.log.info(
            "admin: {user} ({via}) purged cache {cache} {what}: {count} entries",
            user=user, via=via, cache=name, what=what, count=count, action="purge",
        )
        return count

    purger = collector.purger
    if purger is not None:
        d: Deferred[int] = purger(name, key, prefix)
        return d.addCallback(lambda workers: logged(int(count) + workers))
    return logged(int(count))
