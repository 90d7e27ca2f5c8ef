# -*- test-case-name: tests.test_balance -*-
"""
The first server with a free slot (HAProxy's C{balance first}).
"""

from __future__ import annotations

from typing import Sequence

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.interfaces import IBalancer, IExplainingBalancer

__all__ = ["First"]


@implementer(IBalancer, IExplainingBalancer)
class First:
    """
    Fill servers in id (configuration) order: the first server with a free
    slot below its C{maxconn} takes the connection, and the next one only
    when it is full.  A server without C{maxconn} never fills up, so the
    servers after it take nothing.  Weights are ignored.

    Use it to keep as few servers busy as possible (so that the others can
    be powered down, or for licences billed per busy server); give every
    server a C{maxconn}.

    Cost: O(1) when the backend has already removed the full servers, which
    it does; O(n) in the worst case otherwise.
    """

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        for server in servers:
            if server.maxconn is None or server.active < server.maxconn:
                return server
        return None

    def explain(self, servers: Sequence[Server], context: Context, chosen: Server | None) -> str:
        """C{"first: s1 full -> s2"}, or C{"first: s1 has a free slot"}."""
        if chosen is None:
            return "first: every server full"
        # the backend hands only the servers with a free slot: the full ones come before, in its order
        order = list(chosen.backend.eligible()) if chosen.backend is not None else list(servers)
        full = [s.name for s in order[: order.index(chosen)] if s not in servers] if chosen in order else []
        if full:
            return f"first: {', '.join(full)} full -> {chosen.name}"
        return f"first: {chosen.name} has a free slot"
