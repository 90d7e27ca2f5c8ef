# -*- test-case-name: tests.test_tls_sni -*-
"""
SNI pass-through for tcp mode: read the server name from a TLS ClientHello
without terminating TLS (HAProxy's C{req.ssl_sni} with C{tcp-request
inspect-delay}), and the routing objects that use it.

Nothing here does I/O: L{ClientHelloParser} is fed bytes and returns a
L{ClientHello}, L{chooseBackend} picks a backend for it, and L{Inspector}
reads a connection's first bytes (PROXY header, ClientHello).
L{lbkit.tcp.TCPFrontendProtocol} runs them in its inspect phase, and owns
its timer.
"""

from __future__ import annotations

import struct
from typing import Callable, Optional, Sequence

import attrs

from lbkit._backend import Backend
from lbkit.error import ConfigError, LBKitError
from lbkit.proxyproto import ProxyHeaderParser, ProxyInfo

__all__ = [
    "ClientHello", "ClientHelloParser", "Inspected", "Inspector", "InvalidClientHello", "Matcher", "Route", "chooseBackend",
    "sniIs", "sniEnds", "sniAbsent", "validHostName",
]

_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_EXT_SERVER_NAME = 0x0000
_EXT_ALPN = 0x0010
#: Largest TLS record fragment allowed (2^14), plus room for expansion.
_MAX_RECORD = 16384 + 2048


@attrs.frozen
class ClientHello:
    """
    What the first bytes of a connection said.

    @ivar isTLS: Whether they began a TLS handshake with a ClientHello.
    @ivar serverName: The SNI host name (lower case), or C{None}.
    @ivar alpn: The ALPN protocols offered.
    @ivar complete: Whether the whole ClientHello was read (not cut short
        by the size limit or the inspection timeout) and well formed.
    @ivar badServerName: The SNI host_name, byte for byte, when it is not a
        DNS host name (see L{validHostName}); C{serverName} is then
        C{None}.  tcp mode closes such a connection rather than route it.
    @ivar malformed: When the whole ClientHello was read but its structure
        is not one RFC 8446 allows (a length that runs past its enclosing
        structure or leaves bytes after it, an extension or a server name
        type twice, an empty name), what is wrong; C{complete} is then
        false and C{serverName} C{None}.  tcp mode closes such a
        connection rather than route it.
    """

    isTLS: bool = False
    serverName: Optional[str] = None
    alpn: tuple[bytes, ...] = ()
    complete: bool = False
    badServerName: Optional[bytes] = None
    malformed: Optional[str] = None


_NOT_TLS = ClientHello()

#: The bytes a host name may hold: letters, digits, C{-} and C{.} (RFC 1123),
#: and C{_}, which real names use and which cannot split or end a name.
_HOST_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
#: Longest host_name accepted (OpenSSL's C{TLSEXT_MAXLEN_host_name}).
_MAX_HOST_NAME = 255


class InvalidClientHello(LBKitError, ValueError):
    """
    The TLS ClientHello is malformed, or names a server with something that
    is not a host name.  The message says what; the connection should be
    aborted.
    """


class _Malformed(Exception):
    """A ClientHello structure RFC 8446 refuses; the message says what."""


def validHostName(name: bytes) -> bool:
    """
    Whether an SNI host_name is a DNS host name lbkit will route on: 1 to
    255 bytes of letters, digits, C{-}, C{_} and C{.}, no empty label (one
    trailing dot is allowed).  Anything else -- NUL, control characters,
    spaces, bytes above 0x7F (IDNs travel as C{xn--} A-labels) -- could be
    read differently by the server, so it is refused.
    """
    if not 0 < len(name) <= _MAX_HOST_NAME or not _HOST_BYTES.issuperset(name):
        return False
    return b"" not in (name[:-1] if name.endswith(b".") else name).split(b".")


class ClientHelloParser:
    """
    Fed the first bytes a client sends, finds the ClientHello in them, even
    when it spans several TLS records or reads.

    @ivar limit: Give up (with an incomplete result) once the ClientHello
        would need more than this many bytes.
    """

    def __init__(self, limit: int = 32768) -> None:
        self.limit = limit
        self._buffer = b""
        self._handshake = b""
        self._offset = 0

    def feed(self, data: bytes) -> Optional[ClientHello]:
        """
        Add C{data}.

        @return: C{None} while more bytes are needed, else the
            L{ClientHello} (C{isTLS} false when this is not TLS).
        """
        self._buffer += data
        buf = self._buffer
        while True:
            if len(buf) - self._offset < 5:
                if self._offset == 0 and buf and buf[0] != _HANDSHAKE:
                    return _NOT_TLS
                return None
            kind, major, length = struct.unpack_from("!BBxH", buf, self._offset)
            if kind != _HANDSHAKE or major != 3 or length == 0 or length > _MAX_RECORD:
                return _NOT_TLS if self._offset == 0 else self.finish()
            end = self._offset + 5 + length
            if end > self.limit:
                return self.finish()
            if len(buf) < end:
                return None
            self._handshake += buf[self._offset + 5:end]
            self._offset = end
            result = self._parseHandshake()
            if result is not None:
                return result
            if self._offset >= self.limit:
                return self.finish()

    def _parseHandshake(self) -> Optional[ClientHello]:
        hs = self._handshake
        if len(hs) < 4:
            return None
        if hs[0] != _CLIENT_HELLO:
            return _NOT_TLS
        length = int.from_bytes(hs[1:4], "big")
        if length > self.limit:
            return self.finish()
        if len(hs) < 4 + length:
            return None
        return _parseClientHello(hs[4:4 + length])

    def finish(self) -> ClientHello:
        """
        What is known without waiting for more (at the inspection timeout
        or the size limit): TLS, but no server name.
        """
        started = bool(self._buffer) and self._buffer[0] == _HANDSHAKE
        return ClientHello(isTLS=started, complete=False)


def _parseClientHello(body: bytes) -> ClientHello:
    """
    Read the server name and ALPN list out of a ClientHello body, whose
    structure must be exactly as RFC 8446 section 4.1.2 (and RFC 6066
    section 3, RFC 7301 section 3.1 for the two extensions) has it.
    """
    try:
        if len(body) < 2 + 32:
            raise _Malformed("ClientHello cut short")
        pos = 2 + 32  # legacy_version, random
        _, pos = _vector(body, pos, 1, 0, 32, "legacy_session_id")
        suites, pos = _vector(body, pos, 2, 2, 0xFFFE, "cipher_suites")
        if len(suites) % 2:
            raise _Malformed("cipher_suites of an odd length")
        _, pos = _vector(body, pos, 1, 1, 0xFF, "legacy_compression_methods")
        raw: Optional[bytes] = None
        alpn: tuple[bytes, ...] = ()
        if pos < len(body):
            extensions, pos = _vector(body, pos, 2, 0, 0xFFFF, "extensions")
            if pos != len(body):
                raise _Malformed("bytes after the extensions")
            raw, alpn = _extensions(extensions)
    except _Malformed as e:
        return ClientHello(isTLS=True, complete=False, malformed=str(e))
    if raw is not None and not validHostName(raw):
        return ClientHello(isTLS=True, alpn=alpn, complete=True, badServerName=raw)
    serverName = raw.decode("ascii").lower().rstrip(".") if raw is not None else None
    return ClientHello(isTLS=True, serverName=serverName, alpn=alpn, complete=True)


def _vector(data: bytes, pos: int, lengthSize: int, low: int, high: int, what: str) -> tuple[bytes, int]:
    """
    The TLS vector at C{pos} of C{data} (its length in C{lengthSize} bytes,
    between C{low} and C{high}), and the position after it.

    @raise _Malformed: when it does not fit, or its length is out of bounds.
    """
    start = pos + lengthSize
    if start > len(data):
        raise _Malformed(f"{what} cut short")
    n = int.from_bytes(data[pos:start], "big")
    if not low <= n <= high:
        raise _Malformed(f"{what} of {n} bytes")
    if start + n > len(data):
        raise _Malformed(f"{what} of {n} bytes runs past its end")
    return data[start:start + n], start + n


def _extensions(data: bytes) -> tuple[Optional[bytes], tuple[bytes, ...]]:
    """The host_name (as sent) and the ALPN list in the extensions of a ClientHello."""
    raw: Optional[bytes] = None
    alpn: tuple[bytes, ...] = ()
    seen = set()
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise _Malformed("extension cut short")
        kind = int.from_bytes(data[pos:pos + 2], "big")
        if kind in seen:  # RFC 8446 section 4.2
            raise _Malformed(f"extension {kind} twice")
        seen.add(kind)
        ext, pos = _vector(data, pos + 2, 2, 0, 0xFFFF, f"extension {kind}")
        if kind == _EXT_SERVER_NAME:
            raw = _serverName(ext)
        elif kind == _EXT_ALPN:
            alpn = _alpn(ext)
    return raw, alpn


def _serverName(data: bytes) -> Optional[bytes]:
    """The host_name entry of a server_name extension, as sent."""
    names, end = _vector(data, 0, 2, 1, 0xFFFF, "server_name_list")
    if end != len(data):
        raise _Malformed("bytes after the server_name_list")
    found: Optional[bytes] = None
    types = set()
    pos = 0
    while pos < len(names):
        kind = names[pos]
        if kind in types:  # RFC 6066 section 3
            raise _Malformed(f"two server names of type {kind}")
        types.add(kind)
        name, pos = _vector(names, pos + 1, 2, 1, 0xFFFF, "server name")
        if kind == 0:
            found = name
    return found


def _alpn(data: bytes) -> tuple[bytes, ...]:
    """The protocols of an application_layer_protocol_negotiation extension."""
    protocols, end = _vector(data, 0, 2, 2, 0xFFFF, "protocol_name_list")
    if end != len(data):
        raise _Malformed("bytes after the protocol_name_list")
    found = []
    pos = 0
    while pos < len(protocols):
        name, pos = _vector(protocols, pos, 1, 1, 0xFF, "protocol name")
        found.append(name)
    return tuple(found)


# -- routing -----------------------------------------------------------------

#: A tcp-mode matcher: given the L{ClientHello}, does the route apply?
Matcher = Callable[[ClientHello], bool]


def sniIs(*names: str) -> Matcher:
    """
    Match connections whose TLS server name is one of C{names} (case does
    not matter).
    """
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"sniIs needs one or more host names, not {names!r}")
    wanted = frozenset(n.lower().rstrip(".") for n in names)

    def match(hello: ClientHello) -> bool:
        return hello.serverName in wanted

    match.__qualname__ = f"sniIs{tuple(sorted(wanted))!r}"
    return match


def sniEnds(*suffixes: str) -> Matcher:
    """
    Match connections whose TLS server name ends with one of C{suffixes},
    e.g. C{sniEnds(".example.com")}.
    """
    if not suffixes or not all(isinstance(s, str) and s for s in suffixes):
        raise ConfigError(f"sniEnds needs one or more name suffixes, not {suffixes!r}")
    wanted = tuple(s.lower() for s in suffixes)

    def match(hello: ClientHello) -> bool:
        return hello.serverName is not None and hello.serverName.endswith(wanted)

    return match


def sniAbsent() -> Matcher:
    """Match connections that are not TLS or send no server name."""

    def match(hello: ClientHello) -> bool:
        return hello.serverName is None

    return match


class Route:
    """
    A tcp-mode route: connections whose ClientHello C{matcher} accepts go to
    C{backend}.  Routes are tried in order; the frontend's C{backend} takes
    the rest.
    """

    def __init__(self, matcher: Matcher, backend: Backend) -> None:
        if not callable(matcher):
            raise ConfigError(f"tcp.Route: matcher must be callable, e.g. tcp.sniIs('a.example'), not {matcher!r}")
        if not isinstance(backend, Backend):
            raise ConfigError(f"tcp.Route: backend must be an lbkit.Backend, not {backend!r}")
        self.matcher = matcher
        self.backend = backend

    def __repr__(self) -> str:
        return f"<tcp.Route {getattr(self.matcher, '__qualname__', self.matcher)} -> {self.backend.name}>"


def chooseBackend(routes: Sequence[Route], default: Backend, hello: ClientHello) -> Backend:
    """The backend of the first route that matches C{hello}, else C{default}."""
    for route in routes:
        if route.matcher(hello):
            return route.backend
    return default


# -- the inspect phase ---------------------------------------------------------


@attrs.frozen
class Inspected:
    """
    What the inspect phase of a tcp connection read.

    @ivar proxy: The PROXY header, when one was expected.
    @ivar hello: The L{ClientHello}, when routes wait for one.
    @ivar rest: Every byte after the PROXY header, to replay to the server.
    """

    proxy: Optional[ProxyInfo]
    hello: Optional[ClientHello]
    rest: bytes


class Inspector:
    """
    The inspect phase of a tcp connection, with no I/O: an optional PROXY
    header, then (with routes) the ClientHello, buffered until its server
    name is known or the size limit is reached.  The protocol that feeds it
    owns the inspection timer and calls L{finish} when it fires.

    @ivar hello: The ClientHello once read (also when it was refused).
    """

    def __init__(self, acceptProxy: bool, helloLimit: Optional[int]) -> None:
        """
        @param acceptProxy: Expect a PROXY header (v1 or v2) first.
        @param helloLimit: Read the ClientHello, buffering at most this many
            bytes; C{None}: do not.
        """
        self._proxy = ProxyHeaderParser() if acceptProxy else None
        self._hello = ClientHelloParser(helloLimit) if helloLimit is not None else None
        self._info: Optional[ProxyInfo] = None
        self._buffered: list[bytes] = []
        self.hello: Optional[ClientHello] = None

    @property
    def waitingForProxy(self) -> bool:
        """Whether the PROXY header is still incomplete."""
        return self._proxy is not None

    def feed(self, data: bytes) -> Optional[Inspected]:
        """
        Add C{data}.

        @return: C{None} while more is needed, else what was read.
        @raise InvalidProxyHeader: The PROXY header is malformed.
        @raise InvalidClientHello: The ClientHello is malformed, or names a
            server with something that is not a host name.
        """
        if self._proxy is not None:
            info = self._proxy.feed(data)
            if info is None:
                return None
            self._proxy = None
            self._info = info
            data = info.rest
        if data:
            self._buffered.append(data)
        if self._hello is None:
            return self._result(None)
        if not data:
            return None
        hello = self._hello.feed(data)
        if hello is None:
            return None
        if hello.badServerName is not None:
            self.hello = hello
            raise InvalidClientHello(f"SNI host name {hello.badServerName[:64]!r} is not a DNS host name")
        if hello.malformed is not None:
            self.hello = hello
            raise InvalidClientHello(hello.malformed)
        return self._result(hello)

    def finish(self) -> Inspected:
        """
        What was read, without waiting for more (the inspection timed out
        after the PROXY header): a ClientHello that says TLS at most.
        """
        return self._result(self._hello.finish() if self._hello is not None else None)

    def _result(self, hello: Optional[ClientHello]) -> Inspected:
        self.hello = hello
        rest, self._buffered = b"".join(self._buffered), []
        return Inspected(self._info, hello, rest)
