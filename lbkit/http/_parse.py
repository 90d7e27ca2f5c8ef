# -*- test-case-name: tests.test_http_parse -*-
"""
HTTP/1.x message heads and body framing, with no I/O.

L{HeadReader} collects a head from the bytes of a connection however they
arrive, under one size limit (L{MAX_HEAD}); L{parseRequestHead} and
L{parseResponseHead} parse it.  Bodies are L{lbkit.http._body}'s.
"""

from __future__ import annotations

import re
from typing import Optional

__all__ = [
    "BadMessage",
    "Request",
    "Response",
    "parseRequestHead",
    "parseResponseHead",
    "HeadReader",
    "MAX_HEAD",
    "MAX_HEADERS",
    "PREFACE_HEAD",
]

#: The largest message head, in bytes, its blank line included; a larger
#: request head is a 431, a larger response head a 502.
MAX_HEAD = 65536
#: At most this many header lines in a request head (HAProxy's
#: tune.http.maxhdr is 101 counting the request line); more is a 431.
MAX_HEADERS = 100
#: The HTTP/2 connection preface (RFC 9113 §3.4) up to its blank line, as a
#: head reader sees it: a client speaking h2c with prior knowledge.
PREFACE_HEAD = b"PRI * HTTP/2.0"

# (\Z, not $: $ also matches before a final newline)
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_T = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# The common case in one regex each (C speed): a well-formed request line,
# and header lines "token:value" with no CR, LF or NUL in the value.
# Anything they do not match goes to the line-by-line parser, which has
# the last word (and the precise error message).
_REQUEST_LINE = re.compile(b"(" + _T + rb") ([^\x00-\x20\x7f-\xff#]+) (HTTP/1\.[01])(\r\n|\Z)")
_FIELDS = re.compile(_T + rb":[^\r\n\x00]*(?:\r\n" + _T + rb":[^\r\n\x00]*)*")
# a well-formed status line: version, code, reason (no control character
# but HTAB), end of line; anything else goes to the checks that say why
_STATUS_LINE = re.compile(rb"(HTTP/1\.[0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?(\r\n|\Z)")
# the status codes of responses, as sent (a dict lookup costs less than int())
_CODES = {b"%d" % code: code for code in range(100, 600)}
# a reason phrase may hold no control character but HTAB
_EXT_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# absolute-form: http or https, then an authority (RFC 3986 reg-name or
# IP literal, optional port; no userinfo), then path and query
_ABSOLUTE = re.compile(rb"([Hh][Tt][Tt][Pp][Ss]?)://([^/?]*)(.*)", re.S)
#: A CONNECT target: host (name, IPv4 or [IPv6]) and a port, both required.
_CONNECT_AUTHORITY = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+):[0-9]{1,5}")
_AUTHORITY = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]*)?")
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


class BadMessage(ValueError):
    """
    A malformed message: the proxy answers 400 (request) or 502 (response)
    and closes the connection.

    @ivar status: The status code to answer with.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Request:
    """
    A request head, as balancers and route matchers see it.

    @ivar method: e.g. C{b"GET"}.
    @ivar uri: The request target: path plus optional C{?query} (an
        absolute-form target as sent is reduced to this, its authority
        being the Host), or C{*}, or a C{CONNECT} authority.
    @ivar path: The target without its query.
    @ivar query: The query without C{?} (may be empty).
    @ivar version: C{b"HTTP/1.1"} or C{b"HTTP/1.0"}.
    @ivar headers: C{[name, value]} pairs in arrival order, names as sent.
    @ivar _lower: The lower-cased names of C{headers}: found by the parse,
        forgotten (C{None}) by the methods that change the headers, found
        again when looked for.
    """

    __slots__ = ("method", "uri", "path", "query", "version", "headers", "_lower")

    def __init__(self, method: bytes, uri: bytes, version: bytes, headers: list[list[bytes]]) -> None:
        self.method = method
        self.uri = uri
        path, _, query = uri.partition(b"?")
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self._lower: Optional[list[bytes]] = None

    def _names(self) -> list[bytes]:
        lower = self._lower
        if lower is None or len(lower) != len(self.headers):  # (the length: headers edited directly)
            lower = self._lower = [h[0].lower() for h in self.headers]
        return lower

    def header(self, name: bytes) -> Optional[bytes]:
        """The first value of header C{name} (case-insensitive), or C{None}."""
        name = name.lower()
        for i, n in enumerate(self._names()):
            if n == name:
                return self.headers[i][1]
        return None

    def headerValues(self, name: bytes) -> list[bytes]:
        """Every value of header C{name} (case-insensitive)."""
        name = name.lower()
        return [self.headers[i][1] for i, n in enumerate(self._names()) if n == name]

    def removeHeader(self, name: bytes) -> None:
        """Remove every header named C{name}."""
        name = name.lower()
        self.headers = [h for h in self.headers if h[0].lower() != name]
        self._lower = None

    def setHeader(self, name: bytes, value: bytes) -> None:
        """Replace every header named C{name} with one C{name: value}."""
        self.removeHeader(name)
        self.headers.append([name, value])
        self._lower = None

    def addHeader(self, name: bytes, value: bytes) -> None:
        """Add a C{name: value} header after the others."""
        self.headers.append([name, value])
        self._lower = None

    @property
    def host(self) -> Optional[bytes]:
        """The Host header without a port, lower-cased, or C{None}."""
        host = self.header(b"host")
        if host is None:
            return None
        host = host.strip().lower()
        if host.startswith(b"["):
            return host.partition(b"]")[0] + b"]"
        return host.partition(b":")[0]

    def __repr__(self) -> str:
        return f"<Request {self.method.decode('latin-1')} {self.uri.decode('latin-1')}>"


class Response:
    """
    A response head.

    @ivar version: e.g. C{b"HTTP/1.1"}.
    @ivar code: The status code.
    @ivar reason: The reason phrase.
    @ivar headers: C{[name, value]} pairs in arrival order.
    @ivar _lower: As parsed, the lower-cased names of C{headers}, for the
        framing decisions made before anything edits them (C{headers} is
        edited directly, so they are not kept up to date); else C{None}.
    """

    __slots__ = ("version", "code", "reason", "headers", "_lower")

    def __init__(self, version: bytes, code: int, reason: bytes, headers: list[list[bytes]]) -> None:
        self.version = version
        self.code = code
        self.reason = reason
        self.headers = headers
        self._lower: Optional[list[bytes]] = None

    def header(self, name: bytes) -> Optional[bytes]:
        """The first value of header C{name} (case-insensitive), or C{None}."""
        name = name.lower()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def headerValues(self, name: bytes) -> list[bytes]:
        """Every value of header C{name} (case-insensitive)."""
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]


def _parseHeaders(lines: list[bytes], status: int) -> list[list[bytes]]:
    headers = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or not _TOKEN.match(name):
            if line[:1] in (b" ", b"\t"):
                raise BadMessage("obsolete header line folding", status)
            raise BadMessage(f"malformed header line {line[:60]!r}", status)
        value = value.strip(b" \t")
        if b"\r" in value or b"\n" in value or b"\x00" in value:
            raise BadMessage(f"invalid character in header {name!r}", status)
        headers.append([name, value])
    return headers


def _fastHeaders(head: bytes, start: int) -> Optional[tuple[list[list[bytes]], list[bytes]]]:
    """
    The header lines of C{head} from C{start} and their lower-cased names,
    when the lines are all plainly well formed; else C{None}.
    """
    if _FIELDS.fullmatch(head, start) is None:
        return None
    headers: list[list[bytes]] = []
    names: list[bytes] = []
    pair, lower = headers.append, names.append
    for line in head[start:].split(b"\r\n"):
        name, _, value = line.partition(b":")
        pair([name, value.strip(b" \t")])
        lower(name.lower())
    return headers, names


def parseRequestHead(head: bytes) -> Request:
    """
    Parse a request head: the bytes before the blank line, without it.

    An absolute-form target (C{GET http://host/path}) becomes the
    origin-form request it stands for (RFC 9112 section 3.2.2): C{uri} is
    its path and query, and its authority is the Host.  Identical repeated
    C{Host} or C{Content-Length} headers are merged into the first.

    @raise BadMessage: when malformed (400), with more than L{MAX_HEADERS}
        header lines (431), or of another HTTP version (505).
    """
    m = _REQUEST_LINE.match(head)
    if m is not None:
        method, uri, version, eol = m.groups()
        if not eol:
            return _request(method, uri, version, [])
        fast = _fastHeaders(head, m.end())
        if fast is not None:
            return _request(method, uri, version, *fast)
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


def _request(
    method: bytes, uri: bytes, version: bytes, headers: list[list[bytes]], names: Optional[list[bytes]] = None
) -> Request:
    """
    The L{Request} of a parsed head, once the rules that span several
    header lines hold (RFC 9112 sections 3.2 and 6.1).

    @param names: The lower-cased names of C{headers}, when known.
    """
    if len(headers) > MAX_HEADERS:
        raise BadMessage(f"more than {MAX_HEADERS} header lines", 431)
    if names is None:
        names = [h[0].lower() for h in headers]
    count = names.count
    if count(b"host") > 1 or count(b"content-length") > 1 or (version == b"HTTP/1.0" and b"transfer-encoding" in names):
        if _repeated(headers, version):
            headers = _firstOnly(headers)
            names = [h[0].lower() for h in headers]
    if uri[0] != 0x2F or method == b"CONNECT":  # not origin-form ("/..."), or a CONNECT
        host = headers[names.index(b"host")][1] if b"host" in names else None
        uri, other = _otherForm(method, uri, host, headers)
        if other is not headers:  # (a Host added)
            headers = other
            names = [h[0].lower() for h in headers]
    request = Request(method, uri, version, headers)
    request._lower = names
    return request


def _repeated(headers: list[list[bytes]], version: bytes) -> bool:
    """
    Whether C{headers} repeat C{Host} or C{Content-Length} with the same
    value (to be merged into the first).

    @raise BadMessage: for repeated headers that differ, or a
        C{Transfer-Encoding} in an HTTP/1.0 request.
    """
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
    return repeated


def _firstOnly(headers: list[list[bytes]]) -> list[list[bytes]]:
    """C{headers} without the second and later C{Host} and C{Content-Length} lines."""
    kept = []
    had: set[bytes] = set()
    for h in headers:
        lower = h[0].lower()
        if lower == b"host" or lower == b"content-length":
            if lower in had:
                continue
            had.add(lower)
        kept.append(h)
    return kept


def _hostKey(authority: bytes, scheme: bytes) -> bytes:
    """C{authority} as compared: lower-cased, without the scheme's default port."""
    key = authority.lower()
    default = b":443" if scheme == b"https" else b":80"
    if key.endswith(default):
        return key[: -len(default)]
    if key.endswith(b":"):
        return key[:-1]
    return key


def _otherForm(
    method: bytes, uri: bytes, host: Optional[bytes], headers: list[list[bytes]]
) -> tuple[bytes, list[list[bytes]]]:
    """
    A target that is not origin-form: C{*} and a C{CONNECT} authority go
    on as they are; an http(s) absolute-form target becomes its path and
    query, with its authority as the Host (added first when there is none).

    @raise BadMessage: for any other target, an invalid authority (empty,
        with userinfo, a bad port) or a Host header naming another host.
    """
    if uri == b"*":
        return uri, headers
    if method == b"CONNECT" and _ABSOLUTE.fullmatch(uri) is None:
        # authority-form (RFC 9112 §3.2.3): host and a port, naming the
        # same host and port as the Host header (as HAProxy checks)
        m = _CONNECT_AUTHORITY.fullmatch(uri)
        if m is None:
            raise BadMessage(f"malformed CONNECT target {uri[:40]!r}")
        if host is not None and host.lower() != uri.lower():
            raise BadMessage("Host header does not match the CONNECT target")
        return uri, headers
    if method == b"CONNECT":
        return uri, headers
    m = _ABSOLUTE.fullmatch(uri)
    if m is None:
        raise BadMessage(f"malformed request target {uri[:40]!r}")
    scheme, authority, rest = m.groups()
    scheme = scheme.lower()
    if _AUTHORITY.fullmatch(authority) is None:
        raise BadMessage(f"invalid authority in request target {authority[:40]!r}")
    if host is None:
        headers = [[b"Host", authority]] + headers
    elif _hostKey(host, scheme) != _hostKey(authority, scheme):
        raise BadMessage("Host header does not match the request target")
    return (rest if rest[:1] == b"/" else b"/" + rest), headers


def parseResponseHead(head: bytes) -> Response:
    """
    Parse a response head: the bytes before the blank line, without it.

    The version is C{HTTP/1.} and a digit (RFC 9112 section 2.3; a later
    minor version is read as 1.1, RFC 9110 section 2.5).

    @raise BadMessage: when malformed (status 502).
    """
    m = _STATUS_LINE.match(head)
    if m is not None:
        version, code, reason, eol = m.groups()
        fast = _fastHeaders(head, m.end()) if eol else ([], [])
        if fast is not None:
            response = Response(version, _CODES.get(code) or int(code), reason or b"", fast[0])
            response._lower = fast[1]
            return response
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
        # a bare CR or LF would end the status line early for a client
        raise BadMessage(f"control character in the reason phrase {reason[:40]!r}", 502)
    fast = ([], []) if end < 0 else _fastHeaders(head, end + 2)
    if fast is None:
        headers = _parseHeaders(head[end + 2 :].split(b"\r\n"), 502)
        fast = headers, [h[0].lower() for h in headers]
    response = Response(version, int(parts[1]), reason, fast[0])
    response._lower = fast[1]
    return response


class HeadReader:
    """
    Collects one message head at a time from the bytes of a connection,
    however they are split: L{feed} returns the head once its blank line
    arrived, with the bytes after it.

    One limit holds however the bytes arrive, in one read or many: a head
    (blank line included) over L{MAX_HEAD} bytes is refused.  A request
    head is refused too as soon as it holds a blank line ended by a bare LF
    (instead of waiting for a CRLF CRLF that never comes), and empty lines
    before a request line are skipped (RFC 9112 section 2.2).

    @ivar buffered: The bytes of a head not complete yet.
    """

    __slots__ = ("buffered", "_request")

    def __init__(self, request: bool = True) -> None:
        """
        @param request: Whether the heads are requests (refused with 431 or
            400) or responses (refused with 502).
        """
        self.buffered = b""
        self._request = request

    def feed(self, data: bytes) -> Optional[tuple[bytes, bytes]]:
        """
        @return: C{None} while the head is incomplete (its bytes are kept),
            else the head without its blank line, and the bytes after it.
        @raise BadMessage: for a head too large, or a bare LF ending a
            request head's line before its blank line; nothing is kept.
        """
        buf = self.buffered + data if self.buffered else data
        request = self._request
        if request:
            while buf[:2] == b"\r\n":
                buf = buf[2:]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self.buffered = b""
                raise self._tooLarge()
            if request and (b"\n\n" in buf or b"\n\r\n" in buf):
                # a head ended by a blank line after a bare LF: refused now
                self.buffered = b""
                raise BadMessage("bare LF in request head")
            self.buffered = buf
            return None
        self.buffered = b""
        if end + 4 > MAX_HEAD:
            # the same limit when the whole head came in one read
            raise self._tooLarge()
        return buf[:end], buf[end + 4 :]

    def _tooLarge(self) -> BadMessage:
        if self._request:
            return BadMessage("request head too large", 431)
        return BadMessage("response head too large", 502)
