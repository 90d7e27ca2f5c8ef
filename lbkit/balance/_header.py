# -*- test-case-name: tests.test_balance_hash -*-
"""
Hash of a request header (HAProxy's C{balance hdr(<name>)}).
"""

from __future__ import annotations

from zope.interface import implementer

from lbkit._model import Context
from lbkit.balance._hashing import _HashBalancer
from lbkit.error import ConfigError
from lbkit.interfaces import IAdoptingBalancer, IBalancer, IExplainingBalancer, IHashingBalancer

__all__ = ["Header"]


def _domainOnly(value: bytes) -> bytes:
    """
    The main domain label of a host name: C{b"1wt"} for C{b"www.1wt.eu:80"}.
    """
    host = value.split(b":", 1)[0].rstrip(b".")
    labels = host.split(b".")
    return labels[-2] if len(labels) >= 2 else labels[0]


@implementer(IBalancer, IExplainingBalancer, IAdoptingBalancer, IHashingBalancer)
class Header(_HashBalancer):
    """
    Hash the value of the request header C{name} onto the servers by
    weight, e.g. C{Header(b"Host")} to give each virtual host its server,
    or an API key header to keep each tenant on one server.

    When the header is absent or empty, or in tcp mode, the pick falls back
    to round robin.

    @ivar name: The header name (case-insensitive).
    @ivar useDomainOnly: Hash only the main domain label of the value.
    """

    def __init__(self, name: bytes | str, useDomainOnly: bool = False, **hashOptions: object) -> None:
        """
        @param name: The header to hash (HAProxy's C{hdr(<name>)}).
        @param useDomainOnly: Hash only the main domain label of a host
            name: C{1wt} of C{www.1wt.eu} (HAProxy's C{use_domain_only}).
        @param hashOptions: C{hashType}, C{hashBalanceFactor} and the
            table options, as for every hashing balancer.
        """
        super().__init__(**hashOptions)  # type: ignore[arg-type]
        if isinstance(name, str):
            name = name.encode("ascii")
        if not isinstance(name, bytes) or not name:
            raise ConfigError(f"Header: name must be a non-empty header name, not {name!r}")
        self.name = name
        self.useDomainOnly = bool(useDomainOnly)

    def _key(self, context: Context) -> bytes | None:
        request = context.request
        if request is None:
            return None
        value: bytes | None = request.header(self.name)
        if not value:
            return None
        value = value.strip()
        if self.useDomainOnly:
            value = _domainOnly(value.lower())
        return value or None
