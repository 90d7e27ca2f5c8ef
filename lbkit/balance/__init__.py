"""
Balance algorithms: each one an L{lbkit.interfaces.IBalancer}.

HAProxy's set (C{roundrobin}, C{static-rr}, C{leastconn}, C{first},
C{source}, C{uri}, C{hdr}, C{url_param}, C{random}) plus two schedulers
from LVS (C{sed}, C{nq}).  See C{docs/balance.md}.
"""

from lbkit.balance._first import First
from lbkit.balance._header import Header
from lbkit.balance._leastconn import LeastConn
from lbkit.balance._nq import NeverQueue
from lbkit.balance._random import Random
from lbkit.balance._roundrobin import RoundRobin
from lbkit.balance._sed import ShortestExpectedDelay
from lbkit.balance._source import Source
from lbkit.balance._staticrr import StaticRR
from lbkit.balance._uri import URI
from lbkit.balance._urlparam import URLParam

__all__ = [
    "RoundRobin",
    "StaticRR",
    "LeastConn",
    "First",
    "Source",
    "URI",
    "Header",
    "URLParam",
    "Random",
    "ShortestExpectedDelay",
    "NeverQueue",
]
