"""
Property tests (hypothesis) for L{lbkit.proxyproto.ProxyHeaderParser}:
valid v1 and v2 headers (TCP4, TCP6, UNIX, LOCAL, UNKNOWN, with TLVs) parse
to exactly what was sent however they are split; any bytes give a result or
L{InvalidProxyHeader}; and what the parser accepts, the specification (the
reference in L{tests.grammar}) accepts too.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Optional

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress
from twisted.trial.unittest import SynchronousTestCase

from lbkit.proxyproto import InvalidProxyHeader, ProxyHeaderParser, ProxyInfo
from tests import grammar
from tests.grammar import TODAY, Incomplete, ProxyModel, Refused
from tests.helpers import fuzzSettings, mutated, splitAt, strictProperty

_SETTINGS = fuzzSettings()
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

# -- generators for valid headers ------------------------------------------------

ports = st.integers(0, 0xFFFF)


def ipv6Text(ip: ipaddress.IPv6Address, style: int) -> bytes:
    """One of the RFC 4291 spellings of C{ip}."""
    if style == 0:
        return str(ip).encode()
    if style == 1:
        return ip.exploded.encode()
    if style == 2:
        return str(ip).upper().encode()
    v4 = ipaddress.IPv4Address(ip.packed[12:])
    text = ":".join(f"{int(g, 16):x}" for g in ip.exploded.split(":")[:6]) + ":" + str(v4)  # x:x:x:x:x:x:d.d.d.d
    return text.encode() if len(text) <= 39 else str(ip).encode()  # (the spec's longest is 39)


@st.composite
def v1Headers(draw: st.DrawFn) -> tuple[bytes, ProxyModel]:
    """A valid version 1 line and what it says."""
    family = draw(st.sampled_from(["TCP4", "TCP6", "UNKNOWN"]))
    if family == "UNKNOWN":
        tail = draw(st.one_of(st.just(b""), st.binary(max_size=60).map(lambda b: b" " + b.replace(b"\n", b""))))
        return b"PROXY UNKNOWN" + tail[:90] + b"\r\n", (None, None, b"")
    if family == "TCP4":
        src, dst = draw(st.ip_addresses(v=4)), draw(st.ip_addresses(v=4))
        texts = [str(src).encode(), str(dst).encode()]
    else:
        src, dst = draw(st.ip_addresses(v=6)), draw(st.ip_addresses(v=6))
        texts = [ipv6Text(src, draw(st.integers(0, 3))), ipv6Text(dst, draw(st.integers(0, 3)))]
    sport, dport = draw(ports), draw(ports)
    line = b"PROXY %s %s %s %d %d\r\n" % (family.encode(), texts[0], texts[1], sport, dport)
    return line, ((family, src, sport), (family, dst, dport), b"")


tlvs = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=20)), max_size=4).map(
    lambda items: b"".join(struct.pack("!BH", t, len(v)) + v for t, v in items)
)
unixPaths = st.one_of(
    st.binary(min_size=1, max_size=107).map(lambda b: b.replace(b"\x00", b"/")),
    st.binary(min_size=1, max_size=100).map(lambda b: b"\x00" + b.rstrip(b"\x00")).filter(lambda b: len(b) > 1),
)


@st.composite
def v2Headers(draw: st.DrawFn) -> tuple[bytes, ProxyModel]:
    """A valid version 2 header (with TLVs) and what it says."""
    kind = draw(st.sampled_from(["TCP4", "TCP6", "UNIX", "UNSPEC", "LOCAL"]))
    extra = draw(tlvs)
    model: ProxyModel
    if kind == "TCP4":
        src, dst, sport, dport = draw(st.ip_addresses(v=4)), draw(st.ip_addresses(v=4)), draw(ports), draw(ports)
        command, family = 0x21, 0x11
        block = src.packed + dst.packed + struct.pack("!HH", sport, dport)
        model = (("TCP4", src, sport), ("TCP4", dst, dport), b"")
    elif kind == "TCP6":
        src, dst, sport, dport = draw(st.ip_addresses(v=6)), draw(st.ip_addresses(v=6)), draw(ports), draw(ports)
        command, family = 0x21, 0x21
        block = src.packed + dst.packed + struct.pack("!HH", sport, dport)
        model = (("TCP6", src, sport), ("TCP6", dst, dport), b"")
    elif kind == "UNIX":
        src, dst = draw(unixPaths), draw(unixPaths)
        command, family = 0x21, 0x31
        block = src.ljust(108, b"\x00") + dst.ljust(108, b"\x00")
        model = (("UNIX", src), ("UNIX", dst), b"")
    elif kind == "UNSPEC":
        command, family, block = 0x21, 0x00, b""
        model = (None, None, b"")
    else:  # LOCAL: the family and any address block are ignored
        command, family = 0x20, draw(st.integers(0, 255))
        block = draw(st.binary(max_size=40))
        model = (None, None, b"")
    body = block + extra
    return SIGNATURE + struct.pack("!BBH", command, family, len(body)) + body, model


headers = st.one_of(v1Headers(), v2Headers())
headerBytes = headers.map(lambda pair: pair[0])
cuts = st.lists(st.integers(0, 1000), max_size=6)

PIECES = [
    b"\r\n", b"\r", b"\n", b" ", b"  ", b"\x00", b"\xff", b"0", b"00", b"9", b"65536", b"99999", b":", b"::",
    b".", b"%eth0", b"TCP4", b"TCP6", b"UDP4", b"UNKNOWN", b"PROXY ", SIGNATURE, b"\x20", b"\x21", b"\x22",
    b"\x11", b"\x12", b"\x31", b"\x32", b"\x02\x18", b"\xff\xff", b"\x00\x0c", b"\x00\x24", b"\x00\xd8",
]
inputs = st.one_of(
    mutated(headerBytes, PIECES), mutated(headerBytes, PIECES), mutated(headerBytes, PIECES), st.binary(max_size=60)
)


# -- running the parser ----------------------------------------------------------------


def endpoint(address: Optional[IAddress]) -> Optional[grammar.Endpoint]:
    """An lbkit address as the reference describes it."""
    if address is None:
        return None
    if isinstance(address, UNIXAddress):
        return ("UNIX", address.name)
    assert isinstance(address, (IPv4Address, IPv6Address)), address
    family = "4" if isinstance(address, IPv4Address) else "6"
    return (address.type + family, ipaddress.ip_address(address.host), address.port)


def parse(data: bytes, at: list[int]) -> tuple[str, Optional[ProxyModel]]:
    """
    Feed C{data} cut at C{at} to a parser: C{("done", model)} (the rest
    includes the pieces not fed), C{("more", None)} or C{("bad", None)}.
    """
    parser = ProxyHeaderParser()
    pieces = splitAt(data, at)
    for i, piece in enumerate(pieces):
        try:
            info = parser.feed(piece)
        except InvalidProxyHeader:
            return "bad", None
        if info is not None:
            assert isinstance(info, ProxyInfo)
            return "done", (endpoint(info.source), endpoint(info.destination), info.rest + b"".join(pieces[i + 1 :]))
    return "more", None


class ProxyHeaderParserTests(SynchronousTestCase):
    """L{ProxyHeaderParser} reads exactly the headers the PROXY protocol specification allows."""

    def assertAcceptsOnlyGrammar(self, data: bytes, allow: frozenset[str]) -> None:
        """If lbkit accepts C{data}, the specification does, with the same addresses and rest."""
        outcome, model = parse(data, [])
        if outcome == "bad":
            return
        try:
            expected = grammar.proxyHeader(data, allow)
        except Incomplete:
            self.assertEqual(outcome, "more", f"lbkit accepted {data!r}, the specification wants more")
            return
        except Refused as e:
            self.fail(f"lbkit accepted {data!r} ({outcome}), which the specification refuses: {e}")
        self.assertEqual((outcome, model), ("done", expected))

    @_SETTINGS
    @given(headers, st.binary(max_size=20), cuts)
    def test_roundTrip(self, pair: tuple[bytes, ProxyModel], payload: bytes, at: list[int]) -> None:
        """A valid header, however split, gives exactly its addresses, and the bytes after it as rest."""
        header, (source, destination, _) = pair
        self.assertEqual(parse(header + payload, at), ("done", (source, destination, payload)))
        self.assertEqual(grammar.proxyHeader(header + payload), (source, destination, payload))

    @_SETTINGS
    @given(headers, cuts)
    def test_noneUntilComplete(self, pair: tuple[bytes, ProxyModel], at: list[int]) -> None:
        """Every piece before the header's last byte gives None; the last gives the result."""
        header, _ = pair
        parser = ProxyHeaderParser()
        pieces = splitAt(header, at)
        self.assertEqual([parser.feed(piece) for piece in pieces[:-1]], [None] * (len(pieces) - 1))
        self.assertIsNotNone(parser.feed(pieces[-1]))
        self.assertRaises(RuntimeError, parser.feed, b"")

    @_SETTINGS
    @given(inputs, cuts)
    def test_onlyInvalidProxyHeaderAnySplit(self, data: bytes, at: list[int]) -> None:
        """Any bytes, split anywhere, give the same outcome as in one piece, and only InvalidProxyHeader."""
        self.assertEqual(parse(data, at), parse(data, []))

    @_SETTINGS
    @given(inputs)
    def test_finishedParserRefusesMore(self, data: bytes) -> None:
        """Once a parser has answered or refused, feeding it again raises RuntimeError, as documented."""
        parser = ProxyHeaderParser()
        try:
            if parser.feed(data) is None:
                return
        except InvalidProxyHeader:
            pass
        self.assertRaises(RuntimeError, parser.feed, b"x")

    @_SETTINGS
    @given(inputs)
    def test_acceptsOnlyGrammar(self, data: bytes) -> None:
        """What lbkit accepts, the specification accepts (allowing only the leniencies known today)."""
        self.assertAcceptsOnlyGrammar(data, TODAY)

    test_strictV1Ports = strictProperty(
        inputs, "assertAcceptsOnlyGrammar",
        "Refuses a v1 port with leading zeros ('Heading zeroes are not permitted').",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n", b"PROXY TCP6 ::1 ::2 1 00000\r\n",
    )
    test_strictV2UDP = strictProperty(
        inputs, "assertAcceptsOnlyGrammar",
        "Refuses a v2 PROXY header for UDP (families 0x12, 0x22, 0x32) on a TCP listener.",
        SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12),
        SIGNATURE + b"\x21\x22\x00\x24" + bytes(36),
        SIGNATURE + b"\x21\x32\x00\xd8" + bytes(216),
    )
