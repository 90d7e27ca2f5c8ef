# -*- test-case-name: tests.test_tls_sni -*-
"""
SNI pass-through for tcp mode: read the server name from a TLS ClientHello
without terminating TLS (HAProxy's C{req.ssl_sni} with C{tcp-request
inspect-delay}), and the routing objects that use it.

L{ClientHelloParser} is fed bytes and does no I/O; L{_SNIPhase} adapts it to
L{lbkit.tcp.TCPFrontendProtocol}'s accept phase.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Optional, Sequence

import attrs

from lbkit._model import Backend
from lbkit.error import ConfigError, LBKitError

__all__ = [
    "ClientHello", "ClientHelloParser", "InvalidClientHello", "Route", "sniIs", "sniEnds", "sniAbsent", "validHostName",
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
    @ivar serverName: The SNI host name (lower case), or L{None}.
    @ivar alpn: The ALPN protocols offered.
    @ivar complete: Whether the whole ClientHello was read (not cut short
        by the size limit or the inspection timeout).
    @ivar badServerName: The SNI host_name, byte for byte, when it is not a
        DNS host name (see L{validHostName}); C{serverName} is then
        L{None}.  tcp mode closes such a connection rather than route it.
    """

    isTLS: bool = False
    serverName: Optional[str] = None
    alpn: tuple[bytes, ...] = ()
    complete: bool = False
    badServerName: Optional[bytes] = None


_NOT_TLS = ClientHello()

#: The bytes a host name may hold: letters, digits, C{-} and C{.} (RFC 1123),
#: and C{_}, which real names use and which cannot split or end a name.
_HOST_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
#: Longest host_name accepted (OpenSSL's C{TLSEXT_MAXLEN_host_name}).
_MAX_HOST_NAME = 255


class InvalidClientHello(LBKitError, ValueError):
    """
    The TLS ClientHello names a server with something that is not a host
    name.  The message says what; the connection should be aborted.
    """


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

        @return: L{None} while more bytes are needed, else the
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
    """Read the server name and ALPN list out of a ClientHello body."""
    try:
        pos = 2 + 32  # legacy_version, random
        pos += 1 + body[pos]  # session id
        (n,) = struct.unpack_from("!H", body, pos)
        pos += 2 + n  # cipher suites
        pos += 1 + body[pos]  # compression methods
        if pos >= len(body):
            return ClientHello(isTLS=True, complete=True)
        (total,) = struct.unpack_from("!H", body, pos)
        pos += 2
        end = min(len(body), pos + total)
        raw: Optional[bytes] = None
        alpn: tuple[bytes, ...] = ()
        while pos + 4 <= end:
            kind, size = struct.unpack_from("!HH", body, pos)
            data = body[pos + 4:pos + 4 + size]
            pos += 4 + size
            if kind == _EXT_SERVER_NAME:
                raw = _serverName(data)
            elif kind == _EXT_ALPN:
                alpn = _alpn(data)
        if raw and not validHostName(raw):
            return ClientHello(isTLS=True, alpn=alpn, complete=True, badServerName=raw)
        serverName = raw.decode("ascii").lower().rstrip(".") if raw else None
        return ClientHello(isTLS=True, serverName=serverName, alpn=alpn, complete=True)
    except (IndexError, struct.error):
        return ClientHello(isTLS=True, complete=False)


def _serverName(data: bytes) -> Optional[bytes]:
    """The host_name entry of a server_name extension, as sent."""
    (total,) = struct.unpack_from("!H", data, 0)
    pos, end = 2, min(len(data), 2 + total)
    while pos + 3 <= end:
        kind, size = struct.unpack_from("!BH", data, pos)
        name = data[pos + 3:pos + 3 + size]
        pos += 3 + size
        if kind == 0:
            return name
    return None


def _alpn(data: bytes) -> tuple[bytes, ...]:
    (total,) = struct.unpack_from("!H", data, 0)
    pos, end = 2, min(len(data), 2 + total)
    found = []
    while pos < end:
        size = data[pos]
        found.append(data[pos + 1:pos + 1 + size])
        pos += 1 + size
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


# -- the accept phase ----------------------------------------------------------


@attrs.frozen
class _PhaseResult:
    """What L{TCPFrontendProtocol._parseProxyHeader} expects of a parser's result."""

    source: Any
    destination: Any
    rest: bytes


class _SNIPhase:
    """
    The accept phase of a tcp frontend with routes: (an optional PROXY
    header, then) the ClientHello, buffered until its server name is known,
    the size limit is reached or C{timeoutInspect} passes.  Then it sets
    the protocol's C{backend} and gives every buffered byte back, to be
    replayed to the chosen server.

    It has the C{feed} interface of L{lbkit.proxyproto.ProxyHeaderParser},
    so the protocol runs it in its header phase.
    """

    def __init__(self, protocol: Any, acceptProxy: bool) -> None:
        frontend = protocol.factory.frontend
        self._protocol = protocol
        self._routes = frontend.routes
        self._default = frontend.backend
        self._hello = ClientHelloParser(frontend.inspectLimit)
        self._proxy: Any = None
        if acceptProxy:
            from lbkit.proxyproto import ProxyHeaderParser

            self._proxy = ProxyHeaderParser()
        self._source: Any = None
        self._destination: Any = None
        self._buffered: list[bytes] = []
        self._done = False
        self._timer: Any = None
        if frontend.timeoutInspect > 0:
            self._timer = protocol.reactor.callLater(frontend.timeoutInspect, self._timedOut)
        #: The ClientHello once known (for logs and subclasses).
        self.hello: Optional[ClientHello] = None

    def feed(self, data: bytes) -> Optional[_PhaseResult]:
        if self._done:
            return self._result(self._hello.finish())
        if self._proxy is not None:
            info = self._proxy.feed(data)  # raises InvalidProxyHeader
            if info is None:
                return None
            self._proxy = None
            self._source, self._destination = info.source, info.destination
            data = info.rest
        if not data:
            return None
        self._buffered.append(data)
        hello = self._hello.feed(data)
        if hello is None:
            return None
        return self._result(hello)

    def _result(self, hello: ClientHello) -> _PhaseResult:
        self._done = True
        self.stop()
        if hello.badServerName is not None:
            self.hello = hello
            raise InvalidClientHello(f"SNI host name {hello.badServerName[:64]!r} is not a DNS host name")
        if self.hello is None:
            self.hello = hello
            self._protocol.backend = chooseBackend(self._routes, self._default, hello)
            if self._protocol.context is not None:
                self._protocol.context.notes["sni"] = hello.serverName
        rest, self._buffered = b"".join(self._buffered), []
        return _PhaseResult(self._source, self._destination, rest)

    def _timedOut(self) -> None:
        self._timer = None
        if self._done or self._protocol._parser is not self:
            return
        if self._proxy is not None:
            # Not even the PROXY header came: close, as the PROXY phase would.
            self._done = True
            self._protocol.termination = "cR"
            self._protocol.transport.loseConnection()
            return
        self._done = True
        self._protocol._parseProxyHeader(b"")

    def stop(self) -> None:
        """Cancel the inspection timer (the connection ended or the phase did)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
