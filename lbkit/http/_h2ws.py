# -*- test-case-name: tests.test_http2_websocket -*-
"""
WebSocket over HTTP/2 (RFC 8441), to an HTTP/1.1 WebSocket server.

An HTTP/2 frontend advertises C{SETTINGS_ENABLE_CONNECT_PROTOCOL}; an
extended C{CONNECT} with C{:protocol websocket} is sent to the server as
the HTTP/1.1 handshake of RFC 6455 (L{websocketRequest}: C{GET :path} with
C{Upgrade: websocket}, a C{Sec-WebSocket-Key} lbkit makes and
C{Sec-WebSocket-Version: 13}).  On the server's C{101} the stream is
answered C{:status 200} (L{tunnelHeaders}) and its DATA frames carry the
WebSocket bytes both ways (L{lbkit.http._h2stream.H2Stream} does the
flow control); any other answer goes to the stream as a normal response.
No I/O here.
"""

from __future__ import annotations

import base64
import os

from lbkit.http._headers import HOP, connectionTokens
from lbkit.http._parse import Request, Response

__all__ = ["websocketRequest", "tunnelHeaders"]

#: What the client's fields may not carry into the HTTP/1.1 handshake:
#: lbkit writes the key and the version itself (RFC 8441 §5: an HTTP/2
#: client sends neither key nor accept).
_OWN = frozenset([b"sec-websocket-key", b"sec-websocket-version"])
#: Response fields of the HTTP/1.1 handshake that mean nothing on a stream.
_HANDSHAKE_ONLY = frozenset([b"sec-websocket-accept"])


def websocketRequest(path: bytes, fields: list[list[bytes]]) -> Request:
    """
    The HTTP/1.1 handshake request of an extended CONNECT for C{path}:
    C{fields} (host first, from L{lbkit.http._h2head}) less any key or
    version, plus C{Upgrade: websocket} (the exchange adds
    C{Connection: Upgrade}), a fresh random C{Sec-WebSocket-Key} and
    C{Sec-WebSocket-Version: 13}.
    """
    headers = [f for f in fields if f[0] not in _OWN]
    headers.append([b"upgrade", b"websocket"])
    headers.append([b"sec-websocket-key", base64.b64encode(os.urandom(16))])
    headers.append([b"sec-websocket-version", b"13"])
    return Request(b"GET", path, b"HTTP/1.1", headers)


def tunnelHeaders(response: Response) -> list[tuple[bytes, bytes]]:
    """
    The HEADERS of the stream once the server switched to WebSocket:
    C{:status 200} and the server's fields (the subprotocol and the
    extensions it chose, say), without hop-by-hop ones and without
    C{Sec-WebSocket-Accept}.
    """
    headers = [(b":status", b"200")]
    tokens = connectionTokens(response.headers)
    for name, value in response.headers:
        lower = name.lower()
        if lower in HOP or lower in tokens or lower in _HANDSHAKE_ONLY:
            continue
        headers.append((lower, value))
    return headers
