#!/usr/bin/env python3
"""
Coverage-guided fuzzing (atheris) of lbkit's TLS ClientHello parser,
L{ClientHelloParser} (SNI and ALPN for tcp-mode routing).

The first input byte says where to split the rest.  The parser documents no
exception, so a crash is any exception; a different answer whole and split;
a server name that is not lower-case ASCII; or a complete ClientHello (one
lbkit would route on) that the reference (L{tests.grammar}, with the
leniencies known today) refuses, or reads another server name or ALPN list
from.

    python fuzz/fuzz_clienthello.py -max_total_time=20 fuzz/corpus/clienthello
"""

from __future__ import annotations

import ssl
from typing import Optional

import _common
import atheris

with atheris.instrument_imports(include=["lbkit.tcp._sni", "tests.grammar"]):
    from lbkit.tcp._sni import ClientHello, ClientHelloParser
    from tests import grammar
    from tests.grammar import TODAY, Incomplete, Refused


def pythonClientHello(serverName: Optional[str], alpn: list[str]) -> bytes:
    """The first bytes Python's ssl module sends."""
    context = ssl.create_default_context()
    context.check_hostname = False
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=serverName)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def seeds() -> list[bytes]:
    hello = pythonClientHello("a.example", ["h2", "http/1.1"])
    small = (
        b"\x16\x03\x01\x00\x3a\x01\x00\x00\x36\x03\x03" + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00"
        + b"\x00\x0b\x00\x00\x00\x07\x00\x05\x00\x00\x02a."
    )
    return [b"\x30" + hello, b"\x00" + pythonClientHello(None, []), b"\x10" + small, b"\x00GET / HTTP/1.1\r\n"]


def parse(pieces: list[bytes], limit: int) -> Optional[ClientHello]:
    parser = ClientHelloParser(limit)
    for piece in pieces:
        result = parser.feed(piece)
        if result is not None:
            assert isinstance(result, ClientHello)
            return result
    return None


def testOneInput(data: bytes) -> None:
    if not data:
        return
    stream = data[1:]
    limit = 32768 if data[0] & 1 else 300
    result = parse([stream], limit)
    assert parse(_common.splitAt(stream, data[0] >> 1), limit) == result
    if result is None or not result.complete:
        return
    assert result.isTLS and isinstance(result.alpn, tuple)
    if result.serverName is not None:
        assert result.serverName == result.serverName.lower().rstrip(".")
        result.serverName.encode("ascii")
    if result.badServerName is not None:
        return  # refused: the inspect phase closes the connection
    try:
        expected = grammar.clientHello(stream, TODAY)
    except (Refused, Incomplete) as e:
        raise AssertionError(f"lbkit read {result} from a ClientHello RFC 8446 refuses: {e!r}") from None
    assert (result.serverName, result.alpn) == expected, (result, expected)


if __name__ == "__main__":
    _common.main(testOneInput, seeds())
