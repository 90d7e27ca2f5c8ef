#!/usr/bin/env python3
"""
Coverage-guided fuzzing (atheris) of lbkit's HTTP/1.1 heads:
L{parseRequestHead}, L{parseResponseHead} and L{bodyLength}.

Each input is tried as a request head and as a response head.  A crash is
any exception but L{BadMessage} (with its documented status), or a head
lbkit accepts while the strict reference grammar (L{tests.grammar}, with
the leniencies known today) refuses it or reads it differently.

    python fuzz/fuzz_http_head.py -max_total_time=20 fuzz/corpus/http_head
"""

from __future__ import annotations

import _common
import atheris

with atheris.instrument_imports(include=["lbkit.http._parse", "lbkit.http._body", "tests.grammar"]):
    from lbkit.http._body import UNTIL_CLOSE, bodyLength
    from lbkit.http._parse import BadMessage, parseRequestHead, parseResponseHead
    from tests import grammar
    from tests.grammar import TODAY, Refused

SEEDS = [
    b"GET / HTTP/1.1\r\nHost: a.example",
    b"POST /upload?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nX-A:  b c ",
    b"PUT http://a.example:8080/p HTTP/1.0\r\nContent-Length: 5\r\nContent-Length: 5",
    b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443",
    b"OPTIONS * HTTP/1.1",
    b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nServer: x",
    b"HTTP/1.0 404 \r\nTransfer-Encoding: chunked",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade",
]


def framing(headers: list[list[bytes]], response: bool) -> None:
    """bodyLength raises only BadMessage, and frames as RFC 9112 does."""
    try:
        framed = bodyLength(headers, response)
    except BadMessage as e:
        assert e.status == (502 if response else 400), e.status
        return
    if response and framed == UNTIL_CLOSE:
        return
    expected = grammar.bodyFraming([(n, v) for n, v in headers], response, TODAY)
    assert framed == expected, (headers, framed, expected)


def testOneInput(data: bytes) -> None:
    try:
        request = parseRequestHead(data)
    except BadMessage as e:
        assert e.status in (400, 431, 505), e.status
    else:
        try:
            model = grammar.requestHead(data, TODAY)
        except Refused as e:
            raise AssertionError(f"lbkit accepted a request head the grammar refuses: {e}") from None
        assert (request.method, request.uri, request.version, [tuple(h) for h in request.headers]) == model
        assert (request.path, request.query) == request.uri.partition(b"?")[::2]
        framing(request.headers, False)
    try:
        response = parseResponseHead(data)
    except BadMessage as e:
        assert e.status == 502, e.status
    else:
        try:
            rmodel = grammar.responseHead(data, TODAY)
        except Refused as e:
            raise AssertionError(f"lbkit accepted a response head the grammar refuses: {e}") from None
        assert (response.version, response.code, response.reason, [tuple(h) for h in response.headers]) == rmodel
        framing(response.headers, True)


if __name__ == "__main__":
    _common.main(testOneInput, SEEDS)
