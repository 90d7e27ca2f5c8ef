#!/usr/bin/env python3
"""
Coverage-guided fuzzing (atheris) of lbkit's PROXY protocol parser,
L{ProxyHeaderParser}, versions 1 and 2.

The first input byte says where to split the rest.  A crash is any exception
but L{InvalidProxyHeader} (and L{RuntimeError} when fed after finishing, as
documented); a different outcome whole and split; or a header lbkit accepts
while the specification (L{tests.grammar}, with the leniencies known today)
refuses it or reads other addresses.

    python fuzz/fuzz_proxyproto.py -max_total_time=20 fuzz/corpus/proxyproto
"""

from __future__ import annotations

import ipaddress
import struct

import _common
import atheris

with atheris.instrument_imports(include=["lbkit.proxyproto", "tests.grammar"]):
    from lbkit.proxyproto import InvalidProxyHeader, ProxyHeaderParser
    from tests import grammar
    from tests.grammar import TODAY, Incomplete, Refused
from twisted.internet.address import IPv4Address, UNIXAddress

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
SEEDS = [
    b"\x05PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /",
    b"\x20PROXY TCP6 2001:db8::1 ::ffff:1.2.3.4 1 65535\r\n",
    b"\x00PROXY UNKNOWN ffff:: ffff:: 1 2\r\n",
    b"\x11" + SIG + b"\x21\x11\x00\x0c" + bytes([1, 2, 3, 4, 5, 6, 7, 8]) + struct.pack("!HH", 80, 443),
    b"\x11" + SIG + b"\x21\x21\x00\x2a" + bytes(range(32)) + struct.pack("!HH", 80, 443) + b"\x04\x00\x03abc",
    b"\x02" + SIG + b"\x21\x31\x00\xd8" + b"/tmp/a".ljust(108, b"\x00") + b"\x00abstract".ljust(108, b"\x00"),
    b"\x40" + SIG + b"\x20\x00\x00\x00payload",
]


def endpoint(address: object) -> object:
    if address is None:
        return None
    if isinstance(address, UNIXAddress):
        return ("UNIX", address.name)
    family = "4" if isinstance(address, IPv4Address) else "6"
    return (address.type + family, ipaddress.ip_address(address.host), address.port)  # type: ignore[attr-defined]


def parse(pieces: list[bytes]) -> tuple[str, object]:
    parser = ProxyHeaderParser()
    for i, piece in enumerate(pieces):
        try:
            info = parser.feed(piece)
        except InvalidProxyHeader:
            try:
                parser.feed(b"")
            except RuntimeError:
                return "bad", None
            raise AssertionError("a refused parser accepted more bytes") from None
        if info is not None:
            try:
                parser.feed(b"")
            except RuntimeError:
                pass
            else:
                raise AssertionError("a finished parser accepted more bytes")
            return "done", (endpoint(info.source), endpoint(info.destination), info.rest + b"".join(pieces[i + 1 :]))
    return "more", None


def testOneInput(data: bytes) -> None:
    if not data:
        return
    stream = data[1:]
    whole = parse([stream])
    assert parse(_common.splitAt(stream, data[0])) == whole
    if whole[0] == "bad":
        return
    try:
        expected = grammar.proxyHeader(stream, TODAY)
    except Incomplete:
        assert whole[0] == "more", whole
        return
    except Refused as e:
        raise AssertionError(f"lbkit accepted a PROXY header the specification refuses: {e}") from None
    assert whole == ("done", expected), (whole, expected)


if __name__ == "__main__":
    _common.main(testOneInput, SEEDS)
