# -*- test-case-name: tests.test_proxyproto -*-
"""
The PROXY protocol, versions 1 and 2, as specified by HAProxy, with no I/O.

A proxy puts one header in front of the bytes it relays so that the receiver
learns the addresses of the original connection.  L{formatV1} and L{formatV2}
build a header; a L{ProxyHeaderParser} is fed received bytes and returns a
L{ProxyInfo} once a whole header has arrived.

@see: U{https://www.haproxy.org/download/3.0/doc/proxy-protocol.txt}
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Literal, Union

from attrs import frozen
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress

from lbkit.error import LBKitError

__all__ = [
    "formatV1",
    "formatV2",
    "ProxyHeaderParser",
    "ProxyInfo",
    "InvalidProxyHeader",
]

_IP = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_Kind = Literal["TCP", "UDP"]

_V1_PREFIX = b"PROXY "
_V1_MAX_LENGTH = 107
_V1_UNKNOWN = b"PROXY UNKNOWN\r\n"

_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = struct.Struct("!12sBBH")
_V2_MAX_LENGTH = 536
_V2_LOCAL = 0x20
_V2_PROXY = 0x21
_V2_UNSPEC = 0x00
#: The transport nibble of a v2 family byte that means SOCK_DGRAM.
_V2_DGRAM = 0x2
_V2_INET = struct.Struct("!4s4sHH")
_V2_INET6 = struct.Struct("!16s16sHH")
_V2_UNIX = struct.Struct("!108s108s")
_V2_BLOCK_SIZES = {
    _V2_UNSPEC: 0,
    0x11: _V2_INET.size,  # TCP over IPv4
    0x12: _V2_INET.size,  # UDP over IPv4
    0x21: _V2_INET6.size,  # TCP over IPv6
    0x22: _V2_INET6.size,  # UDP over IPv6
    0x31: _V2_UNIX.size,  # UNIX stream
    0x32: _V2_UNIX.size,  # UNIX datagram
}


class InvalidProxyHeader(LBKitError, ValueError):
    """
    The bytes received are not a valid PROXY protocol header.

    The message says what is wrong.  The connection should be aborted.
    """


@frozen
class ProxyInfo:
    """
    What a complete PROXY protocol header said.

    @ivar source: The original client's address, or C{None} if the header
        gave none (v1 C{UNKNOWN}, v2 C{LOCAL} or C{AF_UNSPEC}); the receiver
        should then use the real connection's addresses.
    @ivar destination: The address the client connected to, or C{None} in the
        same cases as C{source}.
    @ivar rest: The bytes received after the header: payload that must be
        passed on.
    """

    source: IAddress | None
    destination: IAddress | None
    rest: bytes


def formatV1(source: IAddress, destination: IAddress) -> bytes:
    """
    Build a version 1 (text) header.

    @param source: The original client's address.
    @param destination: The address the client connected to.
    @return: C{PROXY TCP4 ...} or C{PROXY TCP6 ...} if both addresses are
        TCP L{IPv4Address}es or L{IPv6Address}es (an IPv4 address is mapped to
        IPv6 if the other is IPv6); C{PROXY UNKNOWN} otherwise.
    @raise ValueError: If a host is not a numeric IP address or a port is
        out of range.
    """
    endpoints = _ipEndpoints(source, destination)
    if endpoints is None or endpoints[0] != "TCP":
        return _V1_UNKNOWN
    _, srcIP, srcPort, dstIP, dstPort = endpoints
    family = "TCP4" if srcIP.version == 4 else "TCP6"
    src, dst = _hostText(srcIP), _hostText(dstIP)
    line = f"PROXY {family} {src} {dst} {srcPort} {dstPort}\r\n"
    return line.encode("ascii")


def formatV2(source: IAddress, destination: IAddress) -> bytes:
    """
    Build a version 2 (binary) header.

    @param source: The original client's address.
    @param destination: The address the client connected to.
    @return: A C{PROXY} command with the addresses if both are TCP or both
        UDP L{IPv4Address}es or L{IPv6Address}es (an IPv4 address is mapped to
        IPv6 if the other is IPv6); a C{LOCAL} command with C{AF_UNSPEC}
        otherwise.
    @raise ValueError: If a host is not a numeric IP address or a port is
        out of range.
    """
    endpoints = _ipEndpoints(source, destination)
    if endpoints is None:
        return _V2_SIGNATURE + struct.pack("!BBH", _V2_LOCAL, _V2_UNSPEC, 0)
    kind, srcIP, srcPort, dstIP, dstPort = endpoints
    family = (0x10 if srcIP.version == 4 else 0x20) | (1 if kind == "TCP" else 2)
    block = srcIP.packed + dstIP.packed + struct.pack("!HH", srcPort, dstPort)
    return _V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY, family, len(block)) + block


class ProxyHeaderParser:
    """
    Reads one PROXY protocol header, version 1 or 2, from bytes fed to it.

    The version is detected from the first bytes; anything that cannot start
    a header is rejected as soon as enough bytes have arrived to tell.  A
    parser reads a single header: it is finished once L{feed} has returned a
    L{ProxyInfo} or raised L{InvalidProxyHeader}.
    """

    def __init__(self, stream: bool = True) -> None:
        """
        @param stream: Whether the header arrives on a stream connection
            (TCP or UNIX stream: every lbkit frontend).  Then a v2 C{PROXY}
            header naming a datagram transport (UDP over IPv4 or IPv6, UNIX
            datagram) is refused: it cannot describe this connection, and
            its addresses must not be taken for the client's.  C{False}
            accepts every family.
        """
        self._buffer = b""
        self._finished = False
        self._stream = stream

    def feed(self, data: bytes) -> ProxyInfo | None:
        """
        Add received bytes.

        Called by the protocol that adapts this parser, with each chunk it
        receives, until the header is complete.

        @param data: The next bytes received; may be empty.
        @return: C{None} while more bytes are needed, then the L{ProxyInfo}.
        @raise InvalidProxyHeader: If the bytes are not a valid header.
        @raise RuntimeError: If the parser has already finished.
        """
        if self._finished:
            raise RuntimeError("ProxyHeaderParser has already finished")
        self._buffer += data
        try:
            info = self._parse(self._buffer)
        except InvalidProxyHeader:
            self._finished = True
            raise
        if info is not None:
            self._finished = True
            self._buffer = b""
        return info

    def _parse(self, buffer: bytes) -> ProxyInfo | None:
        if buffer.startswith(_V1_PREFIX):
            return _parseV1(buffer)
        if buffer.startswith(_V2_SIGNATURE):
            return _parseV2(buffer, self._stream)
        if _V1_PREFIX.startswith(buffer) or _V2_SIGNATURE.startswith(buffer):
            return None
        raise InvalidProxyHeader(f"no PROXY protocol signature at start of {buffer[:16]!r}")


def _ipEndpoints(
    source: IAddress, destination: IAddress
) -> tuple[_Kind, _IP, int, _IP, int] | None:
    """
    Extract same-family IPs and ports from two addresses of the same
    transport type, or C{None} if they are not both IP addresses of it.
    """
    if not (
        isinstance(source, (IPv4Address, IPv6Address))
        and isinstance(destination, (IPv4Address, IPv6Address))
        and source.type == destination.type
    ):
        return None
    srcIP, dstIP = _ipOf(source.host), _ipOf(destination.host)
    if srcIP.version != dstIP.version:
        srcIP, dstIP = _asIPv6(srcIP), _asIPv6(dstIP)
    for port in source.port, destination.port:
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port out of range: {port}")
    return source.type, srcIP, source.port, dstIP, destination.port


def _ipOf(host: str) -> _IP:
    """Parse a numeric host, dropping any IPv6 scope (C{%eth0})."""
    return ipaddress.ip_address(host.partition("%")[0])


def _asIPv6(ip: _IP) -> ipaddress.IPv6Address:
    """Map an IPv4 address into IPv6 (C{::ffff:a.b.c.d})."""
    if isinstance(ip, ipaddress.IPv6Address):
        return ip
    return ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + ip.packed)


def _hostText(ip: _IP) -> str:
    """
    Write an IP as text, an IPv4-mapped IPv6 one as C{::ffff:a.b.c.d} (as
    sockets report it, and on every Python version).
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


def _parseV1(buffer: bytes) -> ProxyInfo | None:
    """Parse a buffer that starts with the v1 prefix."""
    end = buffer.find(b"\n", 0, _V1_MAX_LENGTH)
    if end == -1:
        if len(buffer) >= _V1_MAX_LENGTH:
            raise InvalidProxyHeader(f"v1 header has no CRLF in its first {_V1_MAX_LENGTH} bytes")
        return None
    if buffer[end - 1 : end] != b"\r":
        raise InvalidProxyHeader("v1 header ends in LF without CR")
    fields, rest = buffer[: end - 1].split(b" "), buffer[end + 1 :]
    family = fields[1]
    if family == b"UNKNOWN":
        return ProxyInfo(None, None, rest)
    if family not in (b"TCP4", b"TCP6"):
        raise InvalidProxyHeader(f"v1 header has unknown family {family!r}")
    if len(fields) != 6:
        raise InvalidProxyHeader(f"v1 header has {len(fields)} fields, not 6")
    version = 4 if family == b"TCP4" else 6
    return ProxyInfo(
        _v1Address(version, fields[2], fields[4]),
        _v1Address(version, fields[3], fields[5]),
        rest,
    )


def _v1Address(version: int, host: bytes, port: bytes) -> IAddress:
    """Parse one v1 host and port into an address of the given IP version."""
    try:
        text = host.decode("ascii")
        ip: _IP = ipaddress.IPv4Address(text) if version == 4 else ipaddress.IPv6Address(text)
    except ValueError:
        raise InvalidProxyHeader(f"v1 header has bad IPv{version} address {host!r}") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise InvalidProxyHeader(f"v1 header has scoped IPv6 address {host!r}")
    # a decimal in 0..65535 without leading zeros: the specification says
    # "Heading zeroes are not permitted in front of numbers"
    if not (port.isdigit() and len(port) <= 5 and int(port) <= 0xFFFF) or (len(port) > 1 and port[0] == 0x30):
        raise InvalidProxyHeader(f"v1 header has bad port {port!r}")
    if version == 4:
        return IPv4Address("TCP", str(ip), int(port))
    return IPv6Address("TCP", _hostText(ip), int(port))


def _parseV2(buffer: bytes, stream: bool) -> ProxyInfo | None:
    """
    Parse a buffer that starts with the v2 signature; with C{stream}, refuse
    a datagram transport.
    """
    if len(buffer) < _V2_FIXED.size:
        return None
    _, versionCommand, family, length = _V2_FIXED.unpack_from(buffer)
    if versionCommand >> 4 != 2:
        raise InvalidProxyHeader(f"v2 header has bad version {versionCommand >> 4}")
    if versionCommand not in (_V2_LOCAL, _V2_PROXY):
        raise InvalidProxyHeader(f"v2 header has unsupported command {versionCommand & 0x0F}")
    total = _V2_FIXED.size + length
    if total > _V2_MAX_LENGTH:
        raise InvalidProxyHeader(f"v2 header is {total} bytes long, more than {_V2_MAX_LENGTH}")
    if versionCommand == _V2_PROXY:
        if family not in _V2_BLOCK_SIZES:
            raise InvalidProxyHeader(f"v2 header has unknown family 0x{family:02x}")
        if stream and family & 0x0F == _V2_DGRAM:
            raise InvalidProxyHeader(
                f"v2 header names a datagram transport (family 0x{family:02x}) on a stream connection"
            )
        if length < _V2_BLOCK_SIZES[family]:
            raise InvalidProxyHeader(
                f"v2 address block of {length} bytes is too short for family 0x{family:02x}"
            )
    if len(buffer) < total:
        return None
    rest = buffer[total:]
    if versionCommand == _V2_LOCAL:
        return ProxyInfo(None, None, rest)
    # Type-length-value fields after the addresses are skipped.
    source, destination = _v2Addresses(family, buffer[_V2_FIXED.size : total])
    return ProxyInfo(source, destination, rest)


def _v2Addresses(family: int, block: bytes) -> tuple[IAddress | None, IAddress | None]:
    """Decode the address block of a v2 C{PROXY} command."""
    kind: _Kind = "TCP" if family & 0x0F == 1 else "UDP"
    if family >> 4 == 1:
        src4, dst4, srcPort, dstPort = _V2_INET.unpack_from(block)
        return (
            IPv4Address(kind, str(ipaddress.IPv4Address(src4)), srcPort),
            IPv4Address(kind, str(ipaddress.IPv4Address(dst4)), dstPort),
        )
    if family >> 4 == 2:
        src6, dst6, srcPort, dstPort = _V2_INET6.unpack_from(block)
        return (
            IPv6Address(kind, _hostText(ipaddress.IPv6Address(src6)), srcPort),
            IPv6Address(kind, _hostText(ipaddress.IPv6Address(dst6)), dstPort),
        )
    if family >> 4 == 3:
        srcPath, dstPath = _V2_UNIX.unpack_from(block)
        return UNIXAddress(_unixName(srcPath)), UNIXAddress(_unixName(dstPath))
    return None, None


def _unixName(raw: bytes) -> bytes | None:
    """
    Decode a NUL-padded C{sun_path}: a filesystem path ends at its first NUL;
    an abstract name (leading NUL) loses only its trailing padding.
    """
    name = raw.rstrip(b"\x00") if raw.startswith(b"\x00") else raw.partition(b"\x00")[0]
    return name or None
