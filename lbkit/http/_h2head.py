# -*- test-case-name: tests.test_http2_security -*-
"""
HTTP/2 request heads, checked as RFC 9113 §8.1.1, §8.2 and §8.3 (and RFC
9110's grammar) say, and turned into the fields of an HTTP/1.1 request: no
I/O.

The C{h2} package runs with C{validate_inbound_headers=False}: every rule
about header blocks is checked here, once, so that a malformed request is a
stream error (RST_STREAM PROTOCOL_ERROR) that leaves the client's other
streams alone, as HAProxy does, instead of the connection error C{h2} makes
of it.  (C{h2} still checks, unconditionally and as a connection error, that
a content-length is digits and that DATA frames do not disagree with it;
when the stream ends with its HEADERS or with trailers, L{H2Stream} checks
the length itself.)

The client's framing headers are never copied: content-length is parsed
here and written again by lbkit, transfer-encoding is refused.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Deque, Optional

__all__ = ["MalformedRequest", "H2RequestHead", "checkRequestHead", "checkTrailers", "sendWindowed", "quietFrameBuffer"]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: A regular field name: a token, lower case (RFC 9113 §8.2.1).
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")
#: An origin-form :path: "/" then visible ASCII except "#" (no CTL, SP,
#: DEL or byte >= 0x80: what an HTTP/1.1 request line can carry as is).
_PATH = re.compile(rb"/[\x21\x22\x24-\x7e]*\Z")
_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*\Z")
#: host [":" port], host an IP literal or a reg-name without "," (ambiguous
#: in a Host header, HAProxy refuses it too) and without userinfo.
_AUTHORITY = re.compile(rb"(?:\[[0-9A-Za-z:.]+\]|[A-Za-z0-9\-._~!$&'()*+;=%]+)(?::[0-9]*)?\Z")
#: What a field value may not hold (RFC 9113 §8.2.1); nor may it start or
#: end with SP or HTAB.
_NUL_CR_LF = re.compile(rb"[\x00\r\n]")
_DIGITS = re.compile(rb"[0-9]{1,18}\Z")
#: Connection-specific fields, malformed in HTTP/2 (RFC 9113 §8.2.2).
_CONNECTION_SPECIFIC = frozenset([b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"])
#: Fields a trailers block may not carry: framing, routing and
#: connection-specific ones (RFC 9110 §6.5.1; HAProxy resets the stream).
_NOT_TRAILERS = _CONNECTION_SPECIFIC | frozenset([b"content-length", b"host", b"te", b"trailer", b"content-type", b"content-encoding", b"content-range"])
_PSEUDO = frozenset([b":method", b":scheme", b":path", b":authority", b":protocol"])
#: Methods that do not anticipate a body (RFC 9110 §8.6): a bodyless request
#: with one of them goes without Content-Length, any other with
#: C{Content-Length: 0}.
_NO_BODY_EXPECTED = frozenset([b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE", b"CONNECT"])


class MalformedRequest(ValueError):
    """A request head RFC 9113 calls malformed; the message says why."""


class H2RequestHead:
    """
    A checked HTTP/2 request head, ready for HTTP/1.1.

    @ivar method: The :method.
    @ivar path: The :path (the HTTP/1.1 request target), or C{b""} for CONNECT.
    @ivar fields: C{[name, value]} pairs: C{host} first (from :authority
        when there is one), then the client's fields without any host,
        content-length (and C{te: trailers}, which only an HTTP/2 server
        gets), then lbkit's own C{content-length} when the
        request has a declared or an empty body.
    @ivar contentLength: The declared body length, or C{None} (then a body,
        if DATA follows, goes chunked).
    @ivar protocol: The :protocol of an extended CONNECT (RFC 8441: a
        token, C{b"websocket"}, say), else C{None}.
    """

    __slots__ = ("method", "path", "fields", "contentLength", "protocol")

    def __init__(
        self, method: bytes, path: bytes, fields: list[list[bytes]], contentLength: Optional[int],
        protocol: Optional[bytes] = None,
    ) -> None:
        self.method = method
        self.path = path
        self.fields = fields
        self.contentLength = contentLength
        self.protocol = protocol


def checkRequestHead(headers: list[tuple[bytes, bytes]], ended: bool) -> H2RequestHead:
    """
    Check the header block of a request and build its HTTP/1.1 fields.

    @param headers: The decoded header block, as the C{h2} package gives it.
    @param ended: Whether the HEADERS frame ended the stream (no body).
    @raise MalformedRequest: when the head is malformed.
    """
    pseudo: dict[bytes, bytes] = {}
    fields: list[list[bytes]] = []
    host: Optional[bytes] = None
    hosts = 0
    length: Optional[bytes] = None
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                raise MalformedRequest(f"pseudo-header {_show(name)} after a regular field")
            if name not in _PSEUDO:
                raise MalformedRequest(f"pseudo-header {_show(name)} not allowed in a request")
            if name in pseudo:
                raise MalformedRequest(f"pseudo-header {_show(name)} repeated")
            pseudo[name] = value
            continue
        regular = True
        if _NAME.match(name) is None:
            raise MalformedRequest(f"invalid field name {_show(name)}")
        if value and (_NUL_CR_LF.search(value) is not None or value[0] in b" \t" or value[-1] in b" \t"):
            raise MalformedRequest(f"invalid value in field {_show(name)}")
        if name in _CONNECTION_SPECIFIC:
            raise MalformedRequest(f"connection-specific field {_show(name)}")
        if name == b"te":
            if value.lower() != b"trailers":
                raise MalformedRequest("te other than trailers")
            fields.append([b"te", b"trailers"])  # hop-by-hop: only HTTP/2 servers get it
            continue
        if name == b"content-length":
            if _DIGITS.match(value) is None or (length is not None and value != length):
                raise MalformedRequest("invalid content-length")
            length = value
            continue  # lbkit writes its own
        if name == b"host":
            hosts += 1
            host = value
            continue
        fields.append([name, value])
    method = pseudo.get(b":method")
    if method is None:
        raise MalformedRequest("no :method")
    if _TOKEN.match(method) is None:
        raise MalformedRequest(f"invalid :method {_show(method)}")
    authority = pseudo.get(b":authority")
    protocol = pseudo.get(b":protocol")
    if protocol is not None:
        # extended CONNECT (RFC 8441 §4): a CONNECT with all four pseudo-headers
        if method != b"CONNECT":
            raise MalformedRequest(":protocol on a request other than CONNECT")
        if _TOKEN.match(protocol) is None:
            raise MalformedRequest(f"invalid :protocol {_show(protocol)}")
        if authority is None:
            raise MalformedRequest("extended CONNECT without :authority")
    if method == b"CONNECT" and protocol is None:
        if b":scheme" in pseudo or b":path" in pseudo or authority is None:
            raise MalformedRequest("CONNECT needs :authority and neither :scheme nor :path")
        path = b""
    else:
        scheme = pseudo.get(b":scheme")
        path = pseudo.get(b":path")  # type: ignore[assignment]
        if scheme is None or path is None:
            raise MalformedRequest("no :scheme or :path")
        if _SCHEME.match(scheme) is None:
            raise MalformedRequest(f"invalid :scheme {_show(scheme)}")
        if path == b"*":
            if method != b"OPTIONS":
                raise MalformedRequest(":path * is only for OPTIONS")
        elif _PATH.match(path) is None:
            raise MalformedRequest(f"invalid :path {_show(path)}")
    if authority is not None:
        # :authority wins; a host field is dropped (RFC 9113 §8.3.1, as HAProxy does)
        if _AUTHORITY.match(authority) is None:
            raise MalformedRequest(f"invalid :authority {_show(authority)}")
        host = authority
    elif host is None:
        raise MalformedRequest("neither :authority nor host")
    elif hosts > 1 or _AUTHORITY.match(host) is None:
        raise MalformedRequest("invalid host")
    fields.insert(0, [b"host", host])
    contentLength = None if length is None else int(length)
    if ended:
        if contentLength:
            raise MalformedRequest(f"content-length {contentLength} on a stream ended by its HEADERS")
        contentLength = 0
        if method not in _NO_BODY_EXPECTED:
            fields.append([b"content-length", b"0"])
    elif contentLength is not None:
        fields.append([b"content-length", b"%d" % contentLength])
    return H2RequestHead(method, path, fields, contentLength, protocol)


def checkTrailers(headers: list[tuple[bytes, bytes]]) -> None:
    """
    Check a trailers block (which lbkit does not forward).

    @raise MalformedRequest: when it holds a pseudo-header, a field that
        frames or routes the message (RFC 9110 §6.5.1: content-length,
        host, a connection-specific field...), or an invalid field.
    """
    for name, value in headers:
        if name[:1] == b":":
            raise MalformedRequest(f"pseudo-header {_show(name)} in trailers")
        if name in _NOT_TRAILERS:
            raise MalformedRequest(f"{_show(name)} is not allowed in trailers")
        if _NAME.match(name) is None or _NUL_CR_LF.search(value) is not None:
            raise MalformedRequest(f"invalid trailer field {_show(name)}")


def _show(data: bytes) -> str:
    """C{data} for a log line: printable, at most 40 bytes."""
    return repr(data[:40])[1:]


def sendWindowed(conn: Any, sid: int, out: Deque[bytes], offset: int) -> tuple[int, int]:
    """
    Queue DATA frames of stream C{sid} on the h2 connection C{conn} from the
    chunks C{out} (the first one from C{offset}), as far as the flow-control
    windows and the frame size allow; sent chunks leave C{out}.

    @return: The offset into C{out[0]} afterwards, and the bytes queued.
    """
    sent = 0
    while out:
        window = conn.local_flow_control_window(sid)
        if window <= 0:
            break
        chunk = out[0]
        size = min(window, conn.max_outbound_frame_size, len(chunk) - offset)
        conn.send_data(sid, chunk[offset : offset + size])
        sent += size
        if offset + size == len(chunk):
            out.popleft()
            offset = 0
        else:
            offset += size
    return offset, sent


def _noBody() -> str:
    return "..."


def quietFrameBuffer(server: bool) -> Any:
    """A new L{QuietFrameBuffer<_quietFrameBuffer>} for a connection's C{incoming_buffer}."""
    return _quietFrameBuffer()(server=server)


@functools.cache
def _quietFrameBuffer() -> Any:
    """
    The class C{QuietFrameBuffer}, made at the first HTTP/2 connection:
    C{h2}'s connection, events and frames are imported by the first one,
    not when lbkit is (issue 11: a process that never speaks HTTP/2 does
    not pay their RSS).
    """
    from h2.frame_buffer import FrameBuffer

    class QuietFrameBuffer(FrameBuffer):
        """
        C{h2}'s frame reader (a connection's C{incoming_buffer}), but each
        frame's C{repr} leaves its body out:
        C{h2} formats every frame it receives for a trace log nobody reads,
        and for a DATA frame that means copying and hex-encoding its whole
        payload (a fifth of the time a large response took).
        """

        def __next__(self) -> Any:
            frame = FrameBuffer.__next__(self)
            frame._body_repr = _noBody  # type: ignore[method-assign]
            return frame

    return QuietFrameBuffer
