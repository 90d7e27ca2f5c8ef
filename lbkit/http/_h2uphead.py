# -*- test-case-name: tests.test_h2up -*-
"""
http mode: the HTTP/2 header block of a request to an HTTP/2 server
(L{requestHeaders}), from the HTTP/1.1 head lbkit built for it (rules,
persistence and C{X-Forwarded-*} applied), with no I/O.
"""

from __future__ import annotations

from lbkit.http._body import bodyLength
from lbkit.http._headers import HOP, connectionTokens
from lbkit.http._parse import parseRequestHead

__all__ = ["requestHeaders"]


def requestHeaders(head: bytes, scheme: bytes, trailers: bool) -> tuple[list[tuple[bytes, bytes]], int]:
    """
    The HTTP/2 header block of an HTTP/1.1 request head lbkit built, and
    its body's framing.

    @param trailers: Send C{te: trailers} (the client sent it).
    @raise BadMessage: if the head cannot be parsed again.
    """
    request = parseRequestHead(head[:-4] if head.endswith(b"\r\n\r\n") else head)
    fields = request.headers
    framing = bodyLength(fields, False)
    tokens = connectionTokens(fields)
    authority = request.header(b"host") or b""
    out = [(b":method", request.method), (b":scheme", scheme), (b":authority", authority), (b":path", request.uri)]
    append = out.append
    for name, value in fields:
        lower = name.lower()
        if lower in HOP or lower in tokens or lower == b"host":
            continue
        append((lower, value))
    if trailers:
        append((b"te", b"trailers"))
    return out, framing
