# -*- test-case-name: tests.test_balance_hash -*-
"""
Hash of a URL query parameter (HAProxy's C{balance url_param(<name>)}).
"""

from __future__ import annotations

from zope.interface import implementer

from lbkit._model import Context
from lbkit.balance._hashing import _HashBalancer
from lbkit.error import ConfigError
from lbkit.interfaces import IAdoptingBalancer, IBalancer, IExplainingBalancer, IHashingBalancer

__all__ = ["URLParam"]


def _param(query: bytes, name: bytes) -> bytes | None:
    """
    The value of the first C{name=value} in C{query}, or C{None} when there
    is none or it is empty.
    """
    prefix = name + b"="
    for part in query.split(b"&"):
        if part.startswith(prefix):
            value = part[len(prefix):]
            return value or None
    return None


@implementer(IBalancer, IExplainingBalancer, IAdoptingBalancer, IHashingBalancer)
class URLParam(_HashBalancer):
    """
    Hash the value of the query-string parameter C{name} onto the servers
    by weight, e.g. C{URLParam(b"userid")} to keep each user on one server
    when the application puts the user in its URLs.

    When the parameter is absent or has no value, or in tcp mode, the pick
    falls back to round robin.  The name is matched exactly
    (case-sensitive); the value is hashed as sent, not URL-decoded.
    Parameters in POST bodies are not looked at (HAProxy's C{check_post}
    is not supported).

    @ivar name: The parameter name.
    """

    def __init__(self, name: bytes | str, **hashOptions: object) -> None:
        """
        @param name: The parameter to hash (HAProxy's C{url_param(<name>)}).
        @param hashOptions: C{hashType}, C{hashBalanceFactor} and the
            table options, as for every hashing balancer.
        """
        super().__init__(**hashOptions)  # type: ignore[arg-type]
        if isinstance(name, str):
            name = name.encode("utf-8")
        if not isinstance(name, bytes) or not name or b"&" in name or b"=" in name:
            raise ConfigError(f"URLParam: name must be a non-empty parameter name, not {name!r}")
        self.name = name

    def _key(self, context: Context) -> bytes | None:
        request = context.request
        if request is None:
            return None
        query: bytes = request.query
        if not query:
            return None
        return _param(query, self.name)
