# -*- test-case-name: tests.test_balance_hash -*-
"""
Hash of the client address (HAProxy's C{balance source}).
"""

from __future__ import annotations

import ipaddress

from zope.interface import implementer

from lbkit._model import Context
from lbkit.balance._hashing import _HashBalancer
from lbkit.interfaces import IAdoptingBalancer, IBalancer, IExplainingBalancer, IHashingBalancer

__all__ = ["Source"]


def _addressBytes(host: str) -> bytes | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.packed
    return address.packed


@implementer(IBalancer, IExplainingBalancer, IAdoptingBalancer, IHashingBalancer)
class Source(_HashBalancer):
    """
    Hash the client's IP address (v4 or v6; a v4-mapped v6 address counts
    as the v4 address) onto the servers by weight, so a client keeps going
    to the same server while the set of servers does not change.

    Use it for tcp-mode protocols that need a client to stay on one server
    and cannot carry a cookie.  Clients behind one NAT all land on one
    server.  With the default C{hashType="map-based"} most clients move
    when a server goes down or comes back; C{"consistent"} moves only that
    server's clients.  When the address is unknown (a UNIX socket) the pick
    falls back to round robin.

    Keyword arguments: see L{_HashBalancer.__init__}.
    """

    def _key(self, context: Context) -> bytes | None:
        host = getattr(context.client, "host", None)
        if not isinstance(host, str):
            return None
        return _addressBytes(host)
