# -*- test-case-name: tests.test_h2up -*-
"""
http mode: trailers (the header fields after a body), with no I/O.

HTTP/2 carries them as a last HEADERS frame, HTTP/1.1 only in a chunked
body's last chunk.  lbkit passes them on between the two
(docs/http.md, "HTTP/2 and gRPC to servers"): L{chunkedEnd} writes the
last chunk of an HTTP/1.1 body with them, L{trailerFields} reads the
trailer lines of one, and L{passTrailers} hands them to a client side
that sends them itself (an HTTP/2 stream).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

__all__ = ["NOT_TRAILERS", "chunkedEnd", "trailerFields", "passTrailers", "wantsTrailers"]

#: Fields a trailers block may not carry (RFC 9110 §6.5.1): framing,
#: routing and connection-specific ones.  They are dropped when passed on.
NOT_TRAILERS = frozenset([
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
    b"content-length", b"host", b"te", b"trailer", b"content-type", b"content-encoding", b"content-range",
])


def trailerFields(lines: Iterable[bytes]) -> list[tuple[bytes, bytes]]:
    """
    The fields of the trailer lines of a chunked body (C{b"name: value"},
    already checked by L{lbkit.http._body.ChunkedFramer}): names lower
    case, values trimmed, the fields of L{NOT_TRAILERS} dropped.
    """
    fields = []
    for line in lines:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name not in NOT_TRAILERS:
            fields.append((name, value.strip(b" \t")))
    return fields


def chunkedEnd(fields: Optional[Iterable[tuple[bytes, bytes]]]) -> bytes:
    """The last chunk of an HTTP/1.1 chunked body, carrying C{fields} as its trailers."""
    if not fields:
        return b"0\r\n\r\n"
    out = [b"0\r\n"]
    for name, value in fields:
        if name[:1] != b":" and name not in NOT_TRAILERS:
            out.append(name + b": " + value + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def passTrailers(sink: Any, fields: list[tuple[bytes, bytes]]) -> None:
    """
    Give C{fields}, the trailers of the response C{sink} (an exchange, or
    what wraps one as C{sink.exchange}) is relaying, to its client side, if
    that sends trailers itself (C{writeTrailers}: an HTTP/2 stream); else
    they are dropped (the body is not chunked on the way out).
    """
    exchange = getattr(sink, "exchange", sink)
    write = getattr(getattr(exchange, "side", None), "writeTrailers", None)
    if write is not None and fields:
        write(fields)


def wantsTrailers(headers: Iterable[Any]) -> bool:
    """Whether a request's C{TE} header accepts trailers (C{te: trailers})."""
    for name, value in headers:
        if len(name) == 2 and name.lower() == b"te" and b"trailers" in value.lower():
            return True
    return False
