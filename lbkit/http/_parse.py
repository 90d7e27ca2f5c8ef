# -*- test-case-name: tests.test_http_parse -*-
"""
HTTP/1.x message heads and body framing, with no I/O.

The proxy forwards bodies exactly as they arrive (a chunked body stays
chunked), so parsing a body only means finding where it ends:
L{ChunkedFramer} follows chunk sizes without copying the data.
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
    "ChunkedFramer",
    "bodyLength",
    "CHUNKED",
    "UNTIL_CLOSE",
    "MAX_HEADERS",
]

#: Body framing: a chunked body.
CHUNKED = -1
#: Body framing: a response body that ends when the server closes.
UNTIL_CLOSE = -2
#: At most this many header lines in a request head (HAProxy's
#: tune.http.maxhdr is 101 counting the request line); more is a 431.
MAX_HEADERS = 100
#: The largest chunk size accepted: 2**52 - 1, as HAProxy (a value a
#: server storing sizes in a double or a signed 64-bit int still reads
#: right).
MAX_CHUNK = (1 << 52) - 1

# (\Z, not $: $ also matches before a final newline)
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_T = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# The common case in one regex each (C speed): a well-formed request line,
# and header lines "token:value" with no CR, LF or NUL in the value.
# Anything they do not match goes to the line-by-line parser, which has
# the last word (and the precise error message).
_REQUEST_LINE = re.compile(b"(" + _T + rb") ([^\x00-\x20\x7f-\xff#]+) (HTTP/1\.[01])(\r\n|\Z)")
_FIELDS = re.compile(_T + rb":[^\r\n\x00]*(?:\r\n" + _T + rb":[^\r\n\x00]*)*")
_FIELD = re.compile(_T + rb":[^\r\n\x00]*")
_HEX = re.compile(rb"^[0-9A-Fa-f]{1,16}\Z")
# a chunk extension or a reason phrase may hold no control character but HTAB
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
        if lower is None:
            lower = self._lower = [h[0].lower() for h in self.headers]
        return lower

    def header(self, name: bytes) -> Optional[bytes]:
        """The first value of header C{name} (case-insensitive), or L{None}."""
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
        """The Host header without a port, lower-cased, or L{None}."""
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
    """

    __slots__ = ("version", "code", "reason", "headers")

    def __init__(self, version: bytes, code: int, reason: bytes, headers: list[list[bytes]]) -> None:
        self.version = version
        self.code = code
        self.reason = reason
        self.headers = headers

    def header(self, name: bytes) -> Optional[bytes]:
        """The first value of header C{name} (case-insensitive), or L{None}."""
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


def _fastHeaders(head: bytes, start: int) -> Optional[list[list[bytes]]]:
    """
    The header lines of C{head} from C{start}, when they are all plainly
    well formed; else L{None}.
    """
    if _FIELDS.fullmatch(head, start) is None:
        return None
    return [[name, value.strip(b" \t")] for name, _, value in (line.partition(b":") for line in head[start:].split(b"\r\n"))]


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
        headers = _fastHeaders(head, m.end())
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
    """
    The L{Request} of a parsed head, once the rules that span several
    header lines hold (RFC 9112 sections 3.2 and 6.1).
    """
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
    if uri[0] != 0x2F or method == b"CONNECT":  # not origin-form ("/..."), or a CONNECT
        uri, headers = _otherForm(method, uri, host, headers)
    return Request(method, uri, version, headers)


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
    headers = [] if end < 0 else _fastHeaders(head, end + 2)
    if headers is None:
        headers = _parseHeaders(head[end + 2 :].split(b"\r\n"), 502)
    return Response(parts[0], int(parts[1]), reason, headers)


def bodyLength(headers: list[list[bytes]], response: bool) -> int:
    """
    The framing of a message body from its headers (RFC 9112 §6.3).

    A request's C{Transfer-Encoding} must be C{chunked} alone; a
    response's must end with C{chunked} (and name it once), or its body
    lasts until close.

    @return: A byte count, L{CHUNKED}, or for a response without either
        header L{UNTIL_CLOSE} (a request without either has no body: 0).
    @raise BadMessage: on conflicting or invalid framing headers.
    """
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
            # only SP and HTAB are whitespace (RFC 9110 section 5.6.3):
            # "\x0bchunked" is another coding, not chunked
            codings = [c.strip(b" \t").lower() for c in te.split(b",")]
            if codings.count(b"chunked") > 1:
                raise BadMessage("Transfer-Encoding applies chunked twice", status)
            return CHUNKED if codings[-1] == b"chunked" else UNTIL_CLOSE
        # a request: chunked and nothing else, once (as HAProxy); empty
        # list elements are allowed (RFC 9110 section 5.6.1)
        codings = [c for c in (c.strip(b" \t").lower() for c in te.split(b",")) if c]
        if codings != [b"chunked"]:
            raise BadMessage(f"Transfer-Encoding other than chunked {te[:40]!r}", status)
        return CHUNKED
    if cl is not None:
        # digits only: the header parser has trimmed spaces and tabs, and
        # any other byte around the number is refused, not stripped
        if not cl.isdigit() or len(cl) > 18:
            raise BadMessage(f"invalid Content-Length {cl[:20]!r}", status)
        return int(cl)
    return UNTIL_CLOSE if response else 0


class ChunkedFramer:
    """
    Finds the end of a chunked body in a byte stream, without copying or
    decoding it.

    Feed it each piece with L{feed}; it returns how many bytes of the
    piece belong to the body.  When that is less than the piece's length,
    or when L{done} becomes true, the body ended there.

    It is strict: CRLF line ends, chunk sizes of hex digits up to
    L{MAX_CHUNK}, extensions without control characters other than HTAB,
    trailer lines that are header fields, lines of at most 4096 bytes
    (however they arrive).
    """

    __slots__ = ("done", "_state", "_remaining", "_line")

    # states: 0 size line, 1 data, 2 CRLF after data, 3 trailers
    def __init__(self) -> None:
        self.done = False
        self._state = 0
        self._remaining = 0
        self._line = b""

    def feed(self, data: bytes) -> int:
        """
        @return: The number of leading bytes of C{data} that are part of the
            chunked body.
        @raise BadMessage: on a malformed chunk size or framing.
        """
        i = 0
        n = len(data)
        while i < n and not self.done:
            state = self._state
            if state == 1:
                take = min(self._remaining, n - i)
                i += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = 2
                continue
            end = data.find(b"\n", i)
            if end < 0:
                self._line += data[i:]
                if len(self._line) > 4096:
                    raise BadMessage("chunk line too long")
                return n
            line = self._line + data[i:end] if self._line else data[i:end]
            self._line = b""
            if len(line) > 4096:  # the same limit however the line arrived
                raise BadMessage("chunk line too long")
            i = end + 1
            if line[-1:] != b"\r":
                raise BadMessage("bare LF in chunked body")
            line = line[:-1]
            if state == 0:
                # strictly hex digits (int() would take "0x", "_", "+", "-")
                size, semicolon, extensions = line.partition(b";")
                size = size.rstrip(b" \t")
                if not _HEX.match(size):
                    raise BadMessage(f"malformed chunk size {size[:20]!r}")
                remaining = int(size, 16)
                if remaining > MAX_CHUNK:
                    raise BadMessage(f"chunk size too large {size[:20]!r}")
                if semicolon and _EXT_CTL.search(extensions) is not None:
                    raise BadMessage("control character in a chunk extension")
                self._remaining = remaining
                self._state = 3 if remaining == 0 else 1
            elif state == 2:
                if line:
                    raise BadMessage("missing CRLF after chunk data")
                self._state = 0
            else:  # trailers: header fields until an empty line
                if not line:
                    self.done = True
                elif _FIELD.fullmatch(line) is None:
                    raise BadMessage(f"malformed trailer line {line[:60]!r}")
        return i
