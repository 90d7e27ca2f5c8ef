"""
Traffic control over stick tables: per-key counters (L{Table}, keyed by
L{bySource}, L{byHeader}, L{byCookie}, L{byParam} or L{byPath}), rules
that fill them (L{track}), matchers over them for any rule's C{when=}
(L{above}, L{below}, L{atLeast}, L{atMost}), and limits
(L{RateLimit}, L{ConnLimit}), for C{requestRules} of an http frontend or
route and C{rules} of a tcp frontend.  See docs/traffic.md.
"""

from lbkit.traffic._keys import SourceKey, byCookie, byHeader, byParam, byPath, bySource
from lbkit.traffic._rules import (
    ConnLimit,
    RateLimit,
    Track,
    above,
    atLeast,
    atMost,
    below,
    bindClocks,
    carryOver,
    counter,
    tablesOf,
    track,
)
from lbkit.traffic._table import COUNTERS, Table

__all__ = [
    "Table",
    "COUNTERS",
    "bySource",
    "SourceKey",
    "byHeader",
    "byCookie",
    "byParam",
    "byPath",
    "track",
    "Track",
    "above",
    "below",
    "atLeast",
    "atMost",
    "RateLimit",
    "ConnLimit",
    "tablesOf",
    "bindClocks",
    "carryOver",
    "counter",
]
