# -*- test-case-name: tests.test_proxyproto -*-
"""
Tests for L{lbkit.proxyproto}.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress
from twisted.trial.unittest import SynchronousTestCase

from lbkit.error import LBKitError
from lbkit.proxyproto import (
    InvalidProxyHeader,
    ProxyHeaderParser,
    ProxyInfo,
    formatV1,
    formatV2,
)

_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_SOURCE4 = IPv4Address("TCP", "192.168.0.1", 56324)
_DEST4 = IPv4Address("TCP", "192.168.0.11", 443)
_SOURCE6 = IPv6Address("TCP", "2001:db8::1", 56324)
_DEST6 = IPv6Address("TCP", "2001:db8::11", 443)
_SPEC_V1 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
_SPEC_V2 = (
    _SIGNATURE
    + b"\x21\x11\x00\x0c"
    + bytes([192, 168, 0, 1, 192, 168, 0, 11])
    + struct.pack("!HH", 56324, 443)
)


def _parse(*chunks: bytes) -> ProxyInfo | None:
    """Feed each chunk to a new parser; return what the last feed returned."""
    parser = ProxyHeaderParser()
    result = None
    for chunk in chunks:
        result = parser.feed(chunk)
    return result


def _v2(command: int, family: int, block: bytes, length: int | None = None) -> bytes:
    """Build a v2 header by hand."""
    if length is None:
        length = len(block)
    return _SIGNATURE + struct.pack("!BBH", command, family, length) + block


class FormatTests(SynchronousTestCase):
    """
    Tests for L{formatV1} and L{formatV2}.
    """

    def test_v1SpecExample(self) -> None:
        """formatV1 gives the spec's example line for a TCP4 connection."""
        self.assertEqual(formatV1(_SOURCE4, _DEST4), _SPEC_V1)

    def test_v1TCP6(self) -> None:
        """formatV1 writes TCP6 with compressed addresses for IPv6."""
        self.assertEqual(
            formatV1(_SOURCE6, _DEST6),
            b"PROXY TCP6 2001:db8::1 2001:db8::11 56324 443\r\n",
        )

    def test_v2SpecExample(self) -> None:
        """formatV2 gives the PROXY command, TCP4 family, 12 bytes of addresses."""
        self.assertEqual(formatV2(_SOURCE4, _DEST4), _SPEC_V2)

    def test_v2TCP6Length(self) -> None:
        """formatV2 writes the TCP6 family and a 36-byte address block."""
        header = formatV2(_SOURCE6, _DEST6)
        self.assertEqual(header[12:16], b"\x21\x21\x00\x24")
        self.assertEqual(len(header), 16 + 36)

    def test_unixIsUnknown(self) -> None:
        """Non-IP addresses give v1 UNKNOWN and v2 LOCAL with AF_UNSPEC."""
        unix = UNIXAddress(b"/tmp/sock")
        self.assertEqual(formatV1(unix, unix), b"PROXY UNKNOWN\r\n")
        self.assertEqual(formatV2(unix, unix), _SIGNATURE + b"\x20\x00\x00\x00")

    def test_udp(self) -> None:
        """UDP addresses give v1 UNKNOWN but a v2 UDP4 header that round-trips."""
        source = IPv4Address("UDP", "10.0.0.1", 53)
        dest = IPv4Address("UDP", "10.0.0.2", 5353)
        self.assertEqual(formatV1(source, dest), b"PROXY UNKNOWN\r\n")
        header = formatV2(source, dest)
        self.assertEqual(header[13], 0x12)
        self.assertEqual(ProxyHeaderParser(stream=False).feed(header), ProxyInfo(source, dest, b""))

    def test_mixedFamiliesMapped(self) -> None:
        """An IPv4 address paired with an IPv6 one is sent as ::ffff:a.b.c.d."""
        dest = IPv6Address("TCP", "::1", 80)
        self.assertEqual(
            formatV1(_SOURCE4, dest),
            b"PROXY TCP6 ::ffff:192.168.0.1 ::1 56324 80\r\n",
        )
        info = _parse(formatV2(_SOURCE4, dest))
        self.assertEqual(
            info,
            ProxyInfo(IPv6Address("TCP", "::ffff:192.168.0.1", 56324), dest, b""),
        )

    def test_scopeDropped(self) -> None:
        """An IPv6 scope is not sent: the header has no room for it."""
        source = IPv6Address("TCP", "fe80::1%eth0", 1)
        dest = IPv6Address("TCP", "fe80::2", 2)
        self.assertEqual(formatV1(source, dest), b"PROXY TCP6 fe80::1 fe80::2 1 2\r\n")

    def test_hostnameRejected(self) -> None:
        """A host that is not a numeric IP raises ValueError."""
        source = IPv4Address("TCP", "localhost", 1)
        self.assertRaises(ValueError, formatV1, source, _DEST4)
        self.assertRaises(ValueError, formatV2, source, _DEST4)

    def test_portOutOfRange(self) -> None:
        """A port above 65535 raises ValueError."""
        source = IPv4Address("TCP", "10.0.0.1", 65536)
        self.assertRaises(ValueError, formatV1, source, _DEST4)
        self.assertRaises(ValueError, formatV2, source, _DEST4)


class ParseTests(SynchronousTestCase):
    """
    Tests for L{ProxyHeaderParser} with valid input.
    """

    def test_v1SpecExample(self) -> None:
        """The spec's v1 example parses to TCP IPv4Addresses."""
        self.assertEqual(_parse(_SPEC_V1), ProxyInfo(_SOURCE4, _DEST4, b""))

    def test_roundTrips(self) -> None:
        """Both versions round-trip IPv4 and IPv6 addresses."""
        for fmt in formatV1, formatV2:
            for source, dest in (_SOURCE4, _DEST4), (_SOURCE6, _DEST6):
                self.assertEqual(_parse(fmt(source, dest)), ProxyInfo(source, dest, b""))

    def test_byteByByte(self) -> None:
        """Feeding one byte at a time gives the same result as one chunk."""
        for header in _SPEC_V1, _SPEC_V2, formatV2(_SOURCE6, _DEST6):
            data = header + b"payload"
            parser = ProxyHeaderParser()
            results = [parser.feed(data[i : i + 1]) for i in range(len(header))]
            self.assertEqual(results[:-1], [None] * (len(header) - 1))
            self.assertEqual(results[-1], _parse(header))
            self.assertIsNotNone(results[-1])

    def test_restAfterHeader(self) -> None:
        """Bytes after the header come back in rest."""
        for header in _SPEC_V1, _SPEC_V2:
            info = _parse(header + b"GET / HTTP/1.1\r\n")
            assert info is not None
            self.assertEqual(info.rest, b"GET / HTTP/1.1\r\n")

    def test_restAcrossChunks(self) -> None:
        """Only the bytes after the header, in the final chunk, are in rest."""
        info = _parse(_SPEC_V1[:10], _SPEC_V1[10:] + b"hello")
        self.assertEqual(info, ProxyInfo(_SOURCE4, _DEST4, b"hello"))

    def test_emptyFeed(self) -> None:
        """Feeding no bytes needs more."""
        self.assertIsNone(_parse(b""))

    def test_v4MappedSpelling(self) -> None:
        """IPv4-mapped IPv6 hosts come back as ::ffff:a.b.c.d, however sent."""
        mapped = IPv6Address("TCP", "::ffff:192.168.0.1", 1)
        dest = IPv6Address("TCP", "::1", 2)
        expected = ProxyInfo(mapped, dest, b"")
        self.assertEqual(_parse(b"PROXY TCP6 ::ffff:c0a8:1 ::1 1 2\r\n"), expected)
        self.assertEqual(_parse(formatV2(mapped, dest)), expected)

    def test_v1Unknown(self) -> None:
        """v1 UNKNOWN gives no addresses, ignoring the rest of its line."""
        self.assertEqual(_parse(b"PROXY UNKNOWN\r\nx"), ProxyInfo(None, None, b"x"))
        self.assertEqual(_parse(b"PROXY UNKNOWN ffff:: ffff:: 1 2\r\n"), ProxyInfo(None, None, b""))

    def test_v1MaximumLength(self) -> None:
        """A 107-byte v1 line, the longest allowed, is accepted."""
        line = b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n"
        self.assertEqual(len(line), 107)
        self.assertEqual(_parse(line), ProxyInfo(None, None, b""))

    def test_v1Incomplete(self) -> None:
        """106 bytes of v1 header without CRLF need more."""
        self.assertIsNone(_parse(b"PROXY UNKNOWN " + b"x" * 92))

    def test_v2Local(self) -> None:
        """v2 LOCAL gives no addresses, whatever its family and block."""
        header = _v2(0x20, 0x11, b"\x00" * 12)
        self.assertEqual(_parse(header + b"x"), ProxyInfo(None, None, b"x"))

    def test_v2Unspec(self) -> None:
        """v2 PROXY with AF_UNSPEC gives no addresses."""
        self.assertEqual(_parse(_v2(0x21, 0x00, b"")), ProxyInfo(None, None, b""))

    def test_v2TLVsSkipped(self) -> None:
        """Type-length-value fields after the v2 addresses are skipped."""
        tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x00"
        header = _v2(0x21, 0x11, _SPEC_V2[16:] + tlvs)
        self.assertEqual(_parse(header + b"x"), ProxyInfo(_SOURCE4, _DEST4, b"x"))

    def test_v2Unix(self) -> None:
        """v2 UNIX families give UNIXAddresses; an all-NUL path is unnamed."""
        block = b"/run/a.sock".ljust(108, b"\x00") + b"\x00" * 108
        info = _parse(_v2(0x21, 0x31, block))
        assert info is not None
        self.assertEqual(info.rest, b"")
        assert isinstance(info.source, UNIXAddress)
        assert isinstance(info.destination, UNIXAddress)
        self.assertEqual(info.source.name, b"/run/a.sock")
        self.assertIsNone(info.destination.name)

    def test_v2UnixAbstract(self) -> None:
        """An abstract v2 UNIX name keeps its leading NUL."""
        block = b"\x00abstract".ljust(108, b"\x00") * 2
        info = _parse(_v2(0x21, 0x31, block))
        assert info is not None
        assert isinstance(info.source, UNIXAddress)
        self.assertEqual(info.source.name, b"\x00abstract")

    def test_v2MaximumLength(self) -> None:
        """A v2 header of 536 bytes, the cap, is accepted."""
        header = _v2(0x21, 0x11, _SPEC_V2[16:] + b"\x00" * (520 - 12))
        self.assertEqual(len(header), 536)
        self.assertEqual(_parse(header), ProxyInfo(_SOURCE4, _DEST4, b""))

    def test_feedAfterFinished(self) -> None:
        """Feeding a parser that has returned its ProxyInfo raises RuntimeError."""
        parser = ProxyHeaderParser()
        parser.feed(_SPEC_V1)
        self.assertRaises(RuntimeError, parser.feed, b"x")

    def test_feedAfterRejected(self) -> None:
        """Feeding a parser that has rejected its input raises RuntimeError."""
        parser = ProxyHeaderParser()
        self.assertRaises(InvalidProxyHeader, parser.feed, b"GET")
        self.assertRaises(RuntimeError, parser.feed, b"x")


class InvalidTests(SynchronousTestCase):
    """
    Tests for L{ProxyHeaderParser} rejecting malformed input.
    """

    def assertInvalid(self, data: bytes, message: str) -> None:
        """Assert that parsing C{data} raises with C{message} in its text."""
        exc = self.assertRaises(InvalidProxyHeader, _parse, data)
        self.assertIn(message, str(exc))

    def test_errorClasses(self) -> None:
        """InvalidProxyHeader is an LBKitError and a ValueError."""
        self.assertTrue(issubclass(InvalidProxyHeader, LBKitError))
        self.assertTrue(issubclass(InvalidProxyHeader, ValueError))

    def test_garbageRejectedEarly(self) -> None:
        """Bytes that cannot start a header are rejected at the first byte."""
        self.assertInvalid(b"G", "no PROXY protocol signature")
        self.assertInvalid(b"GET / HTTP/1.1\r\n", "no PROXY protocol signature")
        self.assertInvalid(b"\x16\x03\x01", "no PROXY protocol signature")

    def test_nearMissesRejected(self) -> None:
        """A prefix that diverges from either signature is rejected there."""
        self.assertIsNone(_parse(b"PROX"))
        self.assertInvalid(b"PROXX", "no PROXY protocol signature")
        self.assertIsNone(_parse(b"\r\n\r\n\x00\r\nQUI"))
        self.assertInvalid(b"\r\n\r\n\x00\r\nQUIX", "no PROXY protocol signature")
        self.assertInvalid(b"\r\n\r\n\r\n", "no PROXY protocol signature")

    def test_v1TooLong(self) -> None:
        """107 bytes of v1 header without CRLF are rejected."""
        self.assertInvalid(b"PROXY UNKNOWN " + b"x" * 93, "no CRLF")

    def test_v1CRLFTooLate(self) -> None:
        """A CRLF that would make the line 108 bytes is too late."""
        self.assertInvalid(b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", "no CRLF")

    def test_v1BareLF(self) -> None:
        """A v1 line ending in LF alone is rejected."""
        self.assertInvalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "without CR")

    def test_v1BadFamily(self) -> None:
        """A v1 family other than TCP4, TCP6 or UNKNOWN is rejected."""
        self.assertInvalid(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unknown family")
        self.assertInvalid(b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown family")
        self.assertInvalid(b"PROXY \r\n", "unknown family")

    def test_v1FieldCount(self) -> None:
        """A v1 TCP line without exactly six fields is rejected."""
        self.assertInvalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "5 fields")
        self.assertInvalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "7 fields")
        self.assertInvalid(b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "7 fields")

    def test_v1BadAddress(self) -> None:
        """v1 addresses that are not valid for the family are rejected."""
        for line in [
            b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.\xc3\xa9 5.6.7.8 1 2\r\n",
        ]:
            self.assertInvalid(line, "bad IPv")

    def test_v1ScopedAddress(self) -> None:
        """A v1 IPv6 address with a scope is rejected."""
        self.assertInvalid(b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "scoped")

    def test_v1BadPort(self) -> None:
        """v1 ports that are not decimals in 0..65535 without leading zeros are rejected."""
        for port in [b"65536", b"-1", b"+1", b"1_0", b"0x10", b"000001", b"\xd9\xa1", b"080", b"00", b"00000"]:
            line = b"PROXY TCP4 1.2.3.4 5.6.7.8 " + port + b" 2\r\n"
            self.assertInvalid(line, "bad port")

    def test_v2BadVersion(self) -> None:
        """A v2 version nibble other than 2 is rejected."""
        self.assertInvalid(_v2(0x11, 0x11, _SPEC_V2[16:]), "bad version 1")
        self.assertInvalid(_v2(0x31, 0x11, _SPEC_V2[16:]), "bad version 3")

    def test_v2UnsupportedCommand(self) -> None:
        """A v2 command other than LOCAL or PROXY is rejected."""
        self.assertInvalid(_v2(0x22, 0x11, _SPEC_V2[16:]), "unsupported command 2")

    def test_v2UnknownFamily(self) -> None:
        """A v2 PROXY family outside the spec's list is rejected."""
        self.assertInvalid(_v2(0x21, 0x41, b""), "unknown family 0x41")
        self.assertInvalid(_v2(0x21, 0x13, b"\x00" * 12), "unknown family 0x13")

    def test_v2DatagramOnStream(self) -> None:
        """
        A v2 PROXY header for UDP or UNIX datagram is refused by a stream
        parser (the default) as soon as its family byte arrives.
        """
        for family in (0x12, 0x22, 0x32):
            self.assertInvalid(_v2(0x21, family, b"")[:16], "datagram transport")
        self.assertEqual(_parse(_v2(0x20, 0x12, b"\x00" * 12)), ProxyInfo(None, None, b""))

    def test_v2TooLongEarly(self) -> None:
        """A v2 length beyond the 536-byte cap is rejected from the fixed part."""
        self.assertInvalid(_v2(0x21, 0x11, b"", length=521), "more than 536")
        self.assertInvalid(_v2(0x20, 0x00, b"", length=0xFFFF), "more than 536")

    def test_v2TruncatedBlock(self) -> None:
        """A v2 length shorter than the family's address block is rejected."""
        self.assertInvalid(_v2(0x21, 0x11, b"", length=11), "too short")
        self.assertInvalid(_v2(0x21, 0x21, b"", length=12), "too short")
        self.assertInvalid(_v2(0x21, 0x31, b"", length=215), "too short")


def _key(address: IAddress | None) -> tuple[object, ...]:
    """An IP address's type, numeric host and port, ignoring host spelling."""
    assert isinstance(address, (IPv4Address, IPv6Address))
    return (address.type, ipaddress.ip_address(address.host), address.port)


_ports = st.integers(min_value=0, max_value=0xFFFF)
_v4Pairs = st.tuples(
    st.builds(
        lambda ip, port: IPv4Address("TCP", str(ip), port),
        st.ip_addresses(v=4),
        _ports,
    ),
    st.builds(
        lambda ip, port: IPv4Address("TCP", str(ip), port),
        st.ip_addresses(v=4),
        _ports,
    ),
)
_v6Pairs = st.tuples(
    st.builds(
        lambda ip, port: IPv6Address("TCP", str(ip), port),
        st.ip_addresses(v=6),
        _ports,
    ),
    st.builds(
        lambda ip, port: IPv6Address("TCP", str(ip), port),
        st.ip_addresses(v=6),
        _ports,
    ),
)


class PropertyTests(SynchronousTestCase):
    """
    Property tests: formatting then parsing is the identity.
    """

    @given(
        pair=st.one_of(_v4Pairs, _v6Pairs),
        version=st.sampled_from([formatV1, formatV2]),
        payload=st.binary(max_size=20),
        data=st.data(),
    )
    def test_roundTripAnySplit(
        self,
        pair: tuple[IPv4Address, IPv4Address] | tuple[IPv6Address, IPv6Address],
        version: Callable[[IAddress, IAddress], bytes],
        payload: bytes,
        data: st.DataObject,
    ) -> None:
        """Any header split at any points parses to its addresses and payload."""
        source, dest = pair
        stream = version(source, dest) + payload
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4), "cuts"))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        parser = ProxyHeaderParser()
        results = []
        for chunk in chunks:
            results.append(parser.feed(chunk))
            if results[-1] is not None:
                break
        received = b"".join(chunks[len(results) :])
        info = results[-1]
        assert info is not None
        self.assertEqual(results[:-1], [None] * (len(results) - 1))
        self.assertEqual([_key(info.source), _key(info.destination)], [_key(source), _key(dest)])
        self.assertEqual(info.rest + received, payload)
