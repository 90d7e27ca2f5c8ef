"""
The HTTP/1.x head parsing and writing of lbkit before issue 11's cuts
(main at 6043c43), kept as the model the faster code is checked against
(tests/test_http_heads.py): the same heads give the same messages, the
same errors and the same bytes.
"""

from __future__ import annotations

from typing import Optional

from lbkit.http._body import CHUNKED, UNTIL_CLOSE
from lbkit.http._headers import HOP, NEVER_HOP
from lbkit.http._parse import (
    _EXT_CTL,
    _FIELDS,
    _REQUEST_LINE,
    _TOKEN,
    _VERSIONS,
    MAX_HEADERS,
    BadMessage,
    Request,
    Response,
    _firstOnly,
    _otherForm,
    _parseHeaders,
)


def fastHeaders(head: bytes, start: int) -> Optional[list[list[bytes]]]:
    if _FIELDS.fullmatch(head, start) is None:
        return None
    return [[name, value.strip(b" \t")] for name, _, value in (line.partition(b":") for line in head[start:].split(b"\r\n"))]


def parseRequestHead(head: bytes) -> Request:
    m = _REQUEST_LINE.match(head)
    if m is not None:
        method, uri, version, eol = m.groups()
        if not eol:
            return _request(method, uri, version, [])
        headers = fastHeaders(head, m.end())
        if headers is not None:
            return _request(method, uri, version, headers)
    lines = head.split(b"\r\n")
    requestLine = lines[0]
    parts = requestLine.split(b" ")
    if len(parts) != 3:
        raise BadMessage(f"malformed request line {requestLine[:80]!r}")
    method, uri, version = parts
    if not _TOKEN.match(method):
        raise BadMessage(f"malformed method {method[:20]!r}")
    if version not in _VERSIONS:
        if version.startswith(b"HTTP/"):
            raise BadMessage(f"unsupported version {version[:20]!r}", 505)
        raise BadMessage(f"malformed request line {requestLine[:80]!r}")
    if not uri or any(c <= 0x20 or c >= 0x7F or c == 0x23 for c in uri):
        raise BadMessage("malformed request target")
    if b"\n" in head.replace(b"\r\n", b""):
        raise BadMessage("bare LF in request head")
    return _request(method, uri, version, _parseHeaders(lines[1:], 400))


def _request(method: bytes, uri: bytes, version: bytes, headers: list[list[bytes]]) -> Request:
    if len(headers) > MAX_HEADERS:
        raise BadMessage(f"more than {MAX_HEADERS} header lines", 431)
    host: Optional[bytes] = None
    cl: Optional[bytes] = None
    repeated = False
    for name, value in headers:
        n = len(name)
        if n == 4 and name.lower() == b"host":
            if host is None:
                host = value
            elif value.lower() != host.lower():
                raise BadMessage("conflicting Host headers")
            else:
                repeated = True
        elif n == 14 and name.lower() == b"content-length":
            if cl is None:
                cl = value
            elif value != cl:
                raise BadMessage("conflicting Content-Length headers")
            else:
                repeated = True
        elif n == 17 and version == b"HTTP/1.0" and name.lower() == b"transfer-encoding":
            raise BadMessage("Transfer-Encoding in an HTTP/1.0 request")
    if repeated:
        headers = _firstOnly(headers)
    if uri[0] != 0x2F or method == b"CONNECT":
        uri, headers = _otherForm(method, uri, host, headers)
    return Request(method, uri, version, headers)


def parseResponseHead(head: bytes) -> Response:
    end = head.find(b"\r\n")
    line = head if end < 0 else head[:end]
    parts = line.split(b" ", 2)
    version = parts[0]
    if (
        len(parts) < 2 or len(version) != 8 or not version.startswith(b"HTTP/1.") or not version[7:].isdigit()
        or len(parts[1]) != 3 or not parts[1].isdigit()
    ):
        raise BadMessage(f"malformed status line {line[:80]!r}", 502)
    reason = parts[2] if len(parts) > 2 else b""
    if _EXT_CTL.search(reason) is not None:
        raise BadMessage(f"control character in the reason phrase {reason[:40]!r}", 502)
    headers = [] if end < 0 else fastHeaders(head, end + 2)
    if headers is None:
        headers = _parseHeaders(head[end + 2 :].split(b"\r\n"), 502)
    return Response(parts[0], int(parts[1]), reason, headers)


def bodyLength(headers: list[list[bytes]], response: bool) -> int:
    status = 502 if response else 400
    te: Optional[bytes] = None
    cl: Optional[bytes] = None
    for name, value in headers:
        if len(name) == 17 and name.lower() == b"transfer-encoding":
            te = value if te is None else te + b"," + value
        elif len(name) == 14 and name.lower() == b"content-length":
            if cl is not None and cl != value:
                raise BadMessage("conflicting Content-Length headers", status)
            cl = value
    if te is not None:
        if cl is not None:
            raise BadMessage("both Transfer-Encoding and Content-Length", status)
        if response:
            codings = [c.strip(b" \t").lower() for c in te.split(b",")]
            if codings.count(b"chunked") > 1:
                raise BadMessage("Transfer-Encoding applies chunked twice", status)
            return CHUNKED if codings[-1] == b"chunked" else UNTIL_CLOSE
        codings = [c for c in (c.strip(b" \t").lower() for c in te.split(b",")) if c]
        if codings != [b"chunked"]:
            raise BadMessage(f"Transfer-Encoding other than chunked {te[:40]!r}", status)
        return CHUNKED
    if cl is not None:
        if not cl.isdigit() or len(cl) > 18:
            raise BadMessage(f"invalid Content-Length {cl[:20]!r}", status)
        return int(cl)
    return UNTIL_CLOSE if response else 0


def connectionTokens(headers: list[list[bytes]]) -> set[bytes]:
    tokens: Optional[set[bytes]] = None
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            if tokens is None:
                tokens = set()
            if b"," in value:
                tokens.update([t.strip().lower() for t in value.split(b",")])
            else:
                tokens.add(value.strip().lower())
    if tokens is None:
        return set()
    tokens -= NEVER_HOP
    return tokens


def requestHead(
    request: Request,
    chunked: bool,
    upgrade: bool,
    forwardedFor: bool,
    client: bytes,
    scheme: bytes,
    clientDN: Optional[bytes],
) -> bytes:
    headers = request.headers
    tokens = connectionTokens(headers)
    out = [request.method, b" ", request.uri, b" ", request.version, b"\r\n"]
    append = out.append
    xff: Optional[bytes] = None
    mtls = clientDN is not None
    for name, value in headers:
        lower = name.lower()
        if lower in HOP or lower in tokens:
            continue
        if mtls and lower == b"x-ssl-client-dn":
            continue
        if forwardedFor and lower == b"x-forwarded-for":
            xff = value if xff is None else xff + b", " + value
            continue
        if forwardedFor and lower == b"x-forwarded-proto":
            continue
        append(name)
        append(b": ")
        append(value)
        append(b"\r\n")
    if chunked:
        append(b"Transfer-Encoding: chunked\r\n")
    if upgrade:
        protocol = header(headers, b"upgrade")
        if protocol is not None:
            append(b"Connection: Upgrade\r\nUpgrade: ")
            append(protocol)
            append(b"\r\n")
    elif request.version == b"HTTP/1.0":
        append(b"Connection: keep-alive\r\n")
    if clientDN:
        append(b"X-SSL-Client-DN: ")
        append(clientDN)
        append(b"\r\n")
    if forwardedFor:
        append(b"X-Forwarded-For: ")
        append(xff + b", " + client if xff else client)
        append(b"\r\nX-Forwarded-Proto: ")
        append(scheme)
        host = header(headers, b"host")
        if host is not None and header(headers, b"x-forwarded-host") is None:
            append(b"\r\nX-Forwarded-Host: ")
            append(host)
        append(b"\r\n")
    append(b"\r\n")
    return b"".join(out)


def responseHead(response: Response, interim: bool, tunnel: bool, close: bool, http10: bool) -> bytes:
    headers = response.headers
    tokens = connectionTokens(headers)
    out = [b"HTTP/1.1 %d " % response.code, response.reason, b"\r\n"]
    append = out.append
    for name, value in headers:
        lower = name.lower()
        if lower in HOP or lower in tokens:
            if lower == b"transfer-encoding" and not interim:
                pass
            elif tunnel and lower == b"upgrade":
                pass
            else:
                continue
        append(name)
        append(b": ")
        append(value)
        append(b"\r\n")
    if tunnel:
        append(b"Connection: Upgrade\r\n")
    elif not interim:
        if close:
            append(b"Connection: close\r\n")
        elif http10:
            append(b"Connection: keep-alive\r\n")
    append(b"\r\n")
    return b"".join(out)


def header(headers: list[list[bytes]], name: bytes) -> Optional[bytes]:
    """The first value of header C{name} (lower-case) in C{headers}, or C{None}."""
    for n, v in headers:
        if n.lower() == name:
            return v
    return None
