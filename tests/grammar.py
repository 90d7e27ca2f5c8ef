"""
Strict reference recognizers for what lbkit's sans-IO parsers read, written
from the specifications and independently of lbkit's code, for the fuzz
properties (tests/test_fuzz_*.py) and the atheris targets (fuzz/).

 - HTTP/1.1 (RFC 9112, RFC 9110 field syntax, RFC 3986 request targets):
   L{requestHead}, L{responseHead}, L{bodyFraming}, L{chunkedBody}.
 - The PROXY protocol, versions 1 and 2 (HAProxy's proxy-protocol.txt):
   L{proxyHeader}.
 - The TLS ClientHello (RFC 8446 section 4.1.2, RFC 6066 section 3 for SNI,
   RFC 7301 for ALPN): L{clientHello}.

Each raises L{Refused} for bytes the grammar refuses and L{Incomplete} when
more bytes could still make them valid.  The properties assert that whatever
lbkit accepts, the reference accepts too, with the same meaning.

Where lbkit is knowingly more lenient than the grammar, the leniency has a
name in L{LENIENCIES}; a recognizer called with C{allow} containing that
name accepts it too.  L{TODAY} is the set lbkit needs today, so a property
run with C{allow=TODAY} still catches any I{other} leniency, while one run
without a name shows that finding (those tests are marked C{todo}).  The
ones lbkit keeps on purpose are those HAProxy has too (docs/fuzzing.md
lists them); a fixed finding leaves the list, and its test stays as an
ordinary one that guards the fix.

An http(s) absolute-form request target is read as the origin-form
request it stands for (L{originForm}), as RFC 9112 section 3.2.2 has a
server do and as lbkit forwards it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Optional, Union

#: Name -> what the leniency accepts that the grammar refuses.  Each is kept
#: on purpose; docs/fuzzing.md says why (HAProxy accepts the same, or the
#: leniency cannot change where a message ends or which host it names).
LENIENCIES: dict[str, str] = {
    # -- HTTP/1.1 request heads -------------------------------------------
    "target-unwise": "characters RFC 3986 excludes (\" < > \\ ^ ` { | }, and [ ] outside a host) "
    "in the request target",
    "target-pct": "a '%' not followed by two hex digits in the request target",
    "field-ctl": "control characters other than HTAB (0x01-0x08, 0x0b, 0x0c, 0x0e-0x1f, 0x7f) "
    "in a field value (RFC 9110 5.5)",
    "host-repeat": "Host lines repeated with the same value (without case), read as one; "
    "RFC 9112 3.2 says such a request gets 400",
    # -- HTTP/1.1 response heads ------------------------------------------
    "status-no-sp": "a status line without the SP after the status code",
    # -- body framing ------------------------------------------------------
    "te-syntax": "in a response, a Transfer-Encoding element that is not a transfer-coding "
    "(token, parameters)",
    # -- chunked bodies ----------------------------------------------------
    "chunk-ext-syntax": "a chunk extension that is not ';' name ['=' token / quoted-string], "
    "or whitespace after the size with no ';'",
    # -- TLS ClientHello ---------------------------------------------------
    "sni-hostname": "an SNI host name with '_', a label that begins or ends with '-' or is over 63 "
    "bytes, or a name of 254 or 255 bytes (RFC 1123 LDH names are at most 253)",
}

#: The leniencies lbkit's parsers have today.
TODAY: frozenset[str] = frozenset(LENIENCIES)


class Refused(Exception):
    """The grammar refuses these bytes; the message names the rule."""


class Incomplete(Exception):
    """The bytes so far are a valid beginning; more are needed."""


# -- HTTP/1.1 -----------------------------------------------------------------

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN = re.compile(b"[" + _TCHAR + b"]+")
_VCHAR = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
_CTL = bytes(range(0x01, 0x09)) + b"\x0b\x0c" + bytes(range(0x0E, 0x20)) + b"\x7f"

_UNRESERVED = rb"A-Za-z0-9\-._~"
_SUB_DELIMS = rb"!$&'()*+,;="
_PCT = rb"%[0-9A-Fa-f]{2}"
_PCHAR = b"(?:[" + _UNRESERVED + _SUB_DELIMS + rb":@]|" + _PCT + b")"
_QUERY = b"(?:" + _PCHAR + rb"|[/?])*"
_ORIGIN_FORM = re.compile(b"(?:/" + _PCHAR + b"*)+(?:\\?" + _QUERY + b")?")
# absolute-URI = scheme ":" hier-part [ "?" query ]; the hier-part's
# characters are pchar, "/" and, in an IP-literal host, "[" and "]".
_ABSOLUTE_FORM = re.compile(
    rb"[A-Za-z][A-Za-z0-9+\-.]*:(?:" + _PCHAR + rb"|[/?\[\]])*"
)
_AUTHORITY_FORM = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|(?:[" + _UNRESERVED + _SUB_DELIMS + b"]|" + _PCT + b")*):[0-9]*"
)
_UNWISE = re.compile(rb'["<>\\^`{|}\[\]]')
_BAD_PCT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_HTTP_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")

Head = tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]]


def requestTarget(target: bytes, allow: frozenset[str] = frozenset()) -> bytes:
    """
    Check a request target against RFC 9112 section 3.2 and RFC 3986.

    @return: C{target}, unchanged.
    @raise Refused: when it is not one.
    """
    t = target
    if "target-unwise" in allow:
        t = _UNWISE.sub(b"a", t)
    if "target-pct" in allow:
        t = _BAD_PCT.sub(b"a", t)
    if t == b"*":
        return target
    for form in (_ORIGIN_FORM, _ABSOLUTE_FORM, _AUTHORITY_FORM):
        if form.fullmatch(t):
            return target
    raise Refused(f"request target {target[:60]!r}")


def fieldLine(line: bytes, allow: frozenset[str] = frozenset()) -> tuple[bytes, bytes]:
    """
    Check one field line (RFC 9112 section 5): C{token ":" OWS value OWS}.

    @return: The name and the value without its surrounding whitespace.
    """
    name, sep, rest = line.partition(b":")
    if not sep or not _TOKEN.fullmatch(name):
        raise Refused(f"field name in {line[:60]!r}")
    value = rest.strip(b" \t")
    allowed = _VCHAR + b" \t" + (_CTL if "field-ctl" in allow else b"")
    if value.translate(None, allowed):
        raise Refused(f"field value in {line[:60]!r}")
    return name, value


def requestHead(head: bytes, allow: frozenset[str] = frozenset()) -> Head:
    """
    Check a request head (the bytes before the blank line, without it), and
    read it as an origin server does (L{originForm}).

    @return: C{(method, target, version, [(name, value), ...])}.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise Refused(f"request line {lines[0][:60]!r}")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise Refused(f"method {method[:20]!r}")
    requestTarget(target, allow)
    if not _HTTP_VERSION.fullmatch(version):
        raise Refused(f"version {version[:20]!r}")
    return originForm((method, target, version, [fieldLine(line, allow) for line in lines[1:]]), allow)


# an http(s) URI: scheme, authority (up to the path or query) and the rest
_HTTP_URI = re.compile(rb"(https?)://([^/?]*)(.*)", re.IGNORECASE | re.DOTALL)
# RFC 3986 host [":" port]; '%' is checked by requestTarget already
_HOST_PORT = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[" + _UNRESERVED + _SUB_DELIMS + rb"%]+)(?::[0-9]*)?")


def _hostKey(authority: bytes, scheme: bytes) -> bytes:
    """An authority as compared (RFC 3986 6.2.2 and 6.2.3): no case, no default or empty port."""
    key = authority.lower()
    for suffix in (b":443" if scheme == b"https" else b":80", b":"):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def originForm(model: Head, allow: frozenset[str] = frozenset()) -> Head:
    """
    A checked request as the origin server reads it: its Host (RFC 9112
    section 3.2: at most one Host line), repeated identical Content-Length
    lines as one (RFC 9110 section 8.6 lets a recipient merge them), and an
    http(s) absolute-form target as the origin-form request it stands for
    (RFC 9112 section 3.2.2): its path and query ("/" for an empty path),
    its authority the Host (added first when there is none).

    @raise Refused: for an http(s) URI without a host or with userinfo
        (RFC 9110 sections 4.2.1 and 4.2.4), or a Host line naming another
        host or port than the URI's authority (a server must ignore that
        Host; one that does not would be served another host than routed).
    """
    method, target, version, fields = model
    hosts = [v for n, v in fields if n.lower() == b"host"]
    if len(hosts) > 1:
        if "host-repeat" not in allow or len({h.lower() for h in hosts}) != 1:
            raise Refused("more than one Host line")
    lengths = [v for n, v in fields if n.lower() == b"content-length"]
    if len(hosts) > 1 or (len(lengths) > 1 and len(set(lengths)) == 1):
        kept, seen = [], set()
        for name, value in fields:
            lower = name.lower()
            if lower in seen and (lower == b"host" or (lower == b"content-length" and len(set(lengths)) == 1)):
                continue
            seen.add(lower)
            kept.append((name, value))
        fields = kept
    m = _HTTP_URI.fullmatch(target)
    if method == b"CONNECT" or m is None:
        return method, target, version, fields
    scheme, authority, rest = m.group(1).lower(), m.group(2), m.group(3)
    if not _HOST_PORT.fullmatch(authority):
        raise Refused(f"authority {authority[:40]!r} of an {scheme.decode()} URI")
    if not hosts:
        fields = [(b"Host", authority)] + fields
    elif _hostKey(hosts[0], scheme) != _hostKey(authority, scheme):
        raise Refused(f"Host {hosts[0][:40]!r} is not the target's authority {authority[:40]!r}")
    return method, rest if rest[:1] == b"/" else b"/" + rest, version, fields


def responseHead(head: bytes, allow: frozenset[str] = frozenset()) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    """
    Check a response head (the bytes before the blank line, without it).

    @return: C{(version, code, reason, [(name, value), ...])}.
    """
    lines = head.split(b"\r\n")
    statusLine = lines[0]
    version, sp, rest = statusLine.partition(b" ")
    if not _HTTP_VERSION.fullmatch(version):
        raise Refused(f"status line version {version[:20]!r}")
    code, sp2, reason = rest[:3], rest[3:4], rest[4:]
    if not sp or len(code) != 3 or code.translate(None, b"0123456789"):
        raise Refused(f"status code in {statusLine[:60]!r}")
    if sp2 != b" " and not (sp2 == b"" and "status-no-sp" in allow):
        raise Refused(f"no SP after the status code in {statusLine[:60]!r}")
    if reason.translate(None, _VCHAR + b" \t"):
        raise Refused(f"reason phrase {reason[:60]!r}")
    return version, int(code), reason, [fieldLine(line, allow) for line in lines[1:]]


#: L{bodyFraming} results, as in L{lbkit.http._parse}.
CHUNKED = -1
UNTIL_CLOSE = -2

_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_TRANSFER_CODING = re.compile(
    b"([" + _TCHAR + b"]+)(?:[ \t]*;[ \t]*[" + _TCHAR + b"]+[ \t]*=[ \t]*(?:[" + _TCHAR + b"]+|" + _QUOTED + b"))*"
)


def bodyFraming(headers: list[tuple[bytes, bytes]], response: bool, allow: frozenset[str] = frozenset()) -> int:
    """
    The framing of a message body by RFC 9112 section 6.3, from its fields.

    @return: A byte count, L{CHUNKED} or L{UNTIL_CLOSE}.
    @raise Refused: on framing the RFC says is faulty.
    """

    def trim(v: bytes) -> bytes:
        return v.strip(b" \t")  # OWS (RFC 9110 5.6.3): not VT, FF or other ASCII whitespace

    lenientCodings = response and "te-syntax" in allow
    te = [v for n, v in headers if n.lower() == b"transfer-encoding"]
    cl = [v for n, v in headers if n.lower() == b"content-length"]
    if te:
        if cl:
            raise Refused("both Transfer-Encoding and Content-Length")
        codings = []
        for value in te:
            for element in value.split(b","):
                element = trim(element)
                if not element:
                    continue
                m = _TRANSFER_CODING.fullmatch(element)
                if m is None:
                    if not lenientCodings:
                        raise Refused(f"transfer-coding {element[:30]!r}")
                    codings.append(element.lower())
                elif m.group(1).lower() == b"chunked" and m.group(0) != m.group(1):
                    if not lenientCodings:
                        raise Refused("chunked takes no parameters")
                    codings.append(element.lower())  # lbkit: not chunked, another coding
                else:
                    codings.append(m.group(1).lower())
        if codings.count(b"chunked") > 1:
            raise Refused("chunked applied more than once")
        if codings and codings[-1] == b"chunked":
            return CHUNKED
        if response:
            return UNTIL_CLOSE
        raise Refused("request Transfer-Encoding without final chunked")
    if cl:
        values = {trim(v) for v in cl}
        for v in values:
            if not v or v.translate(None, b"0123456789"):
                raise Refused(f"Content-Length {v[:20]!r}")
        if len({int(v) for v in values}) != 1:
            raise Refused("different Content-Length values")
        return int(values.pop())
    return UNTIL_CLOSE if response else 0


_CHUNK_EXT = re.compile(
    b"(?:[ \t]*;[ \t]*[" + _TCHAR + b"]+(?:[ \t]*=[ \t]*(?:[" + _TCHAR + b"]+|" + _QUOTED + b"))?)*"
)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]+)(.*)", re.DOTALL)


def chunkedBody(stream: bytes, allow: frozenset[str] = frozenset()) -> tuple[int, bytes, list[bytes]]:
    """
    Read a chunked body (RFC 9112 section 7.1) from the start of C{stream}.

    @return: C{(end, data, trailerLines)}: where the body ends in
        C{stream}, its decoded data and its trailer lines.
    """
    pos = 0
    data = []

    def line() -> bytes:
        nonlocal pos
        end = stream.find(b"\n", pos)
        if end < 0:
            raise Incomplete()
        text = stream[pos:end]
        pos = end + 1
        if not text.endswith(b"\r"):
            raise Refused("bare LF")
        return text[:-1]

    while True:
        sizeLine = line()
        m = _CHUNK_SIZE.fullmatch(sizeLine)
        if m is None:
            raise Refused(f"chunk size line {sizeLine[:40]!r}")
        size, ext = int(m.group(1), 16), m.group(2)
        if size >= 2**63:
            raise Refused(f"chunk size {m.group(1)[:40]!r} overflows")
        if not _CHUNK_EXT.fullmatch(ext):
            if "chunk-ext-syntax" not in allow or not re.fullmatch(rb"[ \t]*(?:;[^\r\n]*)?", ext):
                raise Refused(f"chunk extension {ext[:40]!r}")
        if size == 0:
            break
        if len(stream) < pos + size:
            raise Incomplete()
        data.append(stream[pos : pos + size])
        pos += size
        if line():  # (a refusal may wait for the end of the line, as lbkit's does)
            raise Refused("no CRLF after chunk data")
    trailers = []
    while True:
        trailer = line()
        if not trailer:
            return pos, b"".join(data), trailers
        fieldLine(trailer, allow)
        trailers.append(trailer)


# -- the PROXY protocol -----------------------------------------------------------

_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_DEC_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = re.compile(_DEC_OCTET + rb"(?:\." + _DEC_OCTET + rb"){3}")
_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_V1_LINE = re.compile(rb"PROXY (TCP4|TCP6) ([^ ]+) ([^ ]+) ([^ ]+) ([^ ]+)")

#: One end of a connection, as the reference sees it: C{("TCP4", ip, port)},
#: C{("UDP6", ip, port)}, C{("UNIX", path)} (path L{None} when unnamed).
Endpoint = tuple[object, ...]
ProxyModel = tuple[Optional[Endpoint], Optional[Endpoint], bytes]


def _v1Port(port: bytes, allow: frozenset[str]) -> int:
    if _PORT.fullmatch(port):  # "Heading zeroes are not permitted in front of numbers"
        if int(port) <= 0xFFFF:
            return int(port)
    raise Refused(f"v1 port {port!r}")


def _v1Address(family: bytes, host: bytes) -> Union[ipaddress.IPv4Address, ipaddress.IPv6Address]:
    if family == b"TCP4":
        if not _IPV4.fullmatch(host):
            raise Refused(f"v1 IPv4 address {host!r}")
        return ipaddress.IPv4Address(host.decode())
    # RFC 4291 section 2.2 text forms; no zone (scope) suffix.
    if not re.fullmatch(rb"[0-9A-Fa-f:.]+", host):
        raise Refused(f"v1 IPv6 address {host!r}")
    try:
        return ipaddress.IPv6Address(host.decode())
    except ValueError:
        raise Refused(f"v1 IPv6 address {host!r}") from None


def _unixPath(raw: bytes) -> Optional[bytes]:
    # A pathname ends at its first NUL; an abstract name (leading NUL) is the
    # whole field, less the NUL padding at its end.
    if raw[:1] == b"\x00":
        name = raw
        while name.endswith(b"\x00"):
            name = name[:-1]
    else:
        name = raw.split(b"\x00", 1)[0]
    return name or None


def proxyHeader(data: bytes, allow: frozenset[str] = frozenset()) -> ProxyModel:
    """
    Read a PROXY protocol header, version 1 or 2, from the start of C{data}.

    @return: C{(source, destination, rest)}; both L{None} for v1 UNKNOWN,
        v2 LOCAL and v2 AF_UNSPEC.
    """
    if data.startswith(b"PROXY "):
        end = data.find(b"\n", 0, 107)
        if end < 0:
            if len(data) >= 107:
                raise Refused("v1 line longer than 107 bytes")
            raise Incomplete()
        if data[end - 1 : end] != b"\r":
            raise Refused("v1 line ends in a bare LF")
        line, rest = data[: end - 1], data[end + 1 :]
        if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
            return None, None, rest  # "the receiver must ignore anything presented before the CRLF"
        m = _V1_LINE.fullmatch(line)
        if m is None:
            raise Refused(f"v1 line {line!r}")
        family, src, dst, sport, dport = m.groups()
        name = family.decode()
        return (
            (name, _v1Address(family, src), _v1Port(sport, allow)),
            (name, _v1Address(family, dst), _v1Port(dport, allow)),
            rest,
        )
    if data.startswith(_V2_SIGNATURE):
        if len(data) < 16:
            raise Incomplete()
        command, family, length = data[12], data[13], int.from_bytes(data[14:16], "big")
        if command not in (0x20, 0x21):
            raise Refused(f"v2 version/command 0x{command:02x}")
        if command == 0x21:
            # (a datagram family cannot describe a stream connection)
            families = {0x00: 0, 0x11: 12, 0x21: 36, 0x31: 216}
            if family not in families:
                raise Refused(f"v2 family 0x{family:02x}")
            if length < families[family]:
                raise Refused("v2 address block too short")
        if len(data) < 16 + length:
            raise Incomplete()
        block, rest = data[16 : 16 + length], data[16 + length :]
        # Any TLVs after the addresses may be skipped ("a receiver may choose
        # to skip over and ignore those bytes").
        if command == 0x20 or family == 0x00:
            return None, None, rest
        kind = "TCP" if family & 0x0F == 1 else "UDP"
        if family >> 4 == 1:
            return (
                (kind + "4", ipaddress.IPv4Address(block[0:4]), int.from_bytes(block[8:10], "big")),
                (kind + "4", ipaddress.IPv4Address(block[4:8]), int.from_bytes(block[10:12], "big")),
                rest,
            )
        if family >> 4 == 2:
            return (
                (kind + "6", ipaddress.IPv6Address(block[0:16]), int.from_bytes(block[32:34], "big")),
                (kind + "6", ipaddress.IPv6Address(block[16:32]), int.from_bytes(block[34:36], "big")),
                rest,
            )
        return ("UNIX", _unixPath(block[0:108])), ("UNIX", _unixPath(block[108:216])), rest
    if b"PROXY ".startswith(data) or _V2_SIGNATURE.startswith(data):
        raise Incomplete()
    raise Refused("no PROXY signature")


# -- the TLS ClientHello ----------------------------------------------------------

_LABEL = re.compile(rb"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")


class _Reader:
    """Reads a TLS vector structure, refusing any overrun."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Refused("a length runs past its enclosing structure")
        piece = self.data[self.pos : self.pos + n]
        self.pos += n
        return piece

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, lengthSize: int, low: int, high: int) -> bytes:
        n = self.number(lengthSize)
        if not low <= n <= high:
            raise Refused(f"vector length {n} outside {low}..{high}")
        return self.take(n)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise Refused("bytes after the end of a structure")

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def hostName(name: bytes, allow: frozenset[str] = frozenset()) -> str:
    """
    Check an SNI HostName (RFC 6066 section 3: an ASCII DNS host name) and
    normalize it as lbkit does (lower case; one trailing dot dropped).
    """
    text = name[:-1] if name.endswith(b".") else name
    if re.search(rb"[\x00-\x1f\x7f]", name):
        raise Refused(f"control character in SNI {name!r}")
    if re.search(rb"[\x80-\xff]", name):
        raise Refused(f"non-ASCII SNI {name!r}")
    labels = text.split(b".")
    if not (len(text) <= 253 and all(_LABEL.fullmatch(label) for label in labels)):
        lenient = len(name) <= 255 and all(re.fullmatch(rb"[A-Za-z0-9_\-]+", label) for label in labels)
        if not ("sni-hostname" in allow and lenient):
            raise Refused(f"SNI {name!r} is not a DNS host name")
    return name.decode("ascii").lower()[: len(text)]


def clientHello(data: bytes, allow: frozenset[str] = frozenset()) -> tuple[Optional[str], tuple[bytes, ...]]:
    """
    Read the ClientHello at the start of C{data}, which may span several
    TLS records, and check its structure exactly.

    @return: C{(serverName, alpn)}: the SNI host name normalized by
        L{hostName} (L{None} without one) and the ALPN protocols offered.
    """
    pos = 0
    handshake = b""
    while True:
        if len(data) - pos < 5:
            raise Incomplete()
        kind, major, length = data[pos], data[pos + 1], int.from_bytes(data[pos + 3 : pos + 5], "big")
        # RFC 8446 caps a plaintext record at 2**14; lbkit allows 2048 more.
        if kind != 0x16 or major != 3 or not 0 < length <= 2**14 + 2048:
            raise Refused("not a TLS handshake record")
        if len(data) < pos + 5 + length:
            raise Incomplete()
        handshake += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(handshake) >= 4:
            if handshake[0] != 0x01:
                raise Refused("not a ClientHello")
            size = int.from_bytes(handshake[1:4], "big")
            if len(handshake) >= 4 + size:
                break
    body = _Reader(handshake[4 : 4 + size])
    body.take(2 + 32)  # legacy_version, random
    body.vector(1, 0, 32)  # legacy_session_id
    suites = body.vector(2, 2, 2**16 - 2)
    if len(suites) % 2:
        raise Refused("odd cipher_suites length")
    body.vector(1, 1, 2**8 - 1)  # legacy_compression_methods
    serverName: Optional[str] = None
    alpn: tuple[bytes, ...] = ()
    if body.left:
        extensions = _Reader(body.vector(2, 0, 2**16 - 1))
        body.end()
        seen = set()
        while extensions.left:
            kind = extensions.number(2)
            if kind in seen:
                raise Refused(f"extension {kind} twice")
            seen.add(kind)
            ext = _Reader(extensions.vector(2, 0, 2**16 - 1))
            if kind == 0x0000:
                names = _Reader(ext.vector(2, 1, 2**16 - 1))
                ext.end()
                types = set()
                while names.left:
                    nameType = names.number(1)
                    if nameType in types:
                        raise Refused("two names of one type in server_name")
                    types.add(nameType)
                    name = names.vector(2, 1, 2**16 - 1)
                    if nameType == 0:
                        serverName = hostName(name, allow) or None
            elif kind == 0x0010:
                protocols = _Reader(ext.vector(2, 2, 2**16 - 1))
                ext.end()
                found = []
                while protocols.left:
                    found.append(protocols.vector(1, 1, 2**8 - 1))
                alpn = tuple(found)
    body.end()
    return serverName, alpn
