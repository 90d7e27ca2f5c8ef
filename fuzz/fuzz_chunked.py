#!/usr/bin/env python3
"""
Coverage-guided fuzzing (atheris) of lbkit's chunked body decoders:
L{ChunkedFramer}, framing only (HTTP/1.1) and in decode mode (HTTP/2).

The first input byte says where to split the rest.  A crash is any exception
but L{BadMessage}; a different outcome whole, split in two or byte by byte;
a body the framer ends where the strict reference grammar (L{tests.grammar},
with the leniencies known today) does not; or a dechunker that decodes an
accepted body to other data than the reference.

    python fuzz/fuzz_chunked.py -max_total_time=20 fuzz/corpus/chunked
"""

from __future__ import annotations

import _common
import atheris

with atheris.instrument_imports(include=["lbkit.http._parse", "lbkit.http._body", "tests.grammar"]):
    from lbkit.http._body import ChunkedFramer
    from lbkit.http._parse import BadMessage
    from tests import grammar
    from tests.grammar import TODAY, Incomplete, Refused

SEEDS = [
    b"\x03" + b"5\r\nhello\r\n0\r\n\r\n",
    b"\x10" + b"5;name=value;q=\"a b\"\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nNEXT",
    b"\x00" + b"00000001 \t;a\r\nx\r\n000\r\n\r\n",
    b"\x07" + b"1\r\n",
]


def frame(pieces: list[bytes]) -> tuple[str, int]:
    """A framer's outcome over C{pieces}: ("done", end), ("more", n) or ("bad", -1)."""
    framer = ChunkedFramer()
    consumed = 0
    try:
        for piece in pieces:
            n = framer.feed(piece)
            assert 0 <= n <= len(piece), (n, len(piece))
            consumed += n
            assert n == len(piece) or framer.done
            if framer.done:
                return "done", consumed
    except BadMessage:
        return "bad", -1
    return "more", consumed


def dechunk(pieces: list[bytes]) -> bytes:
    framer = ChunkedFramer(decode=True)
    for p in pieces:
        if framer.done:
            break
        framer.feed(p)
    assert framer.pieces is not None
    return b"".join(framer.pieces)


def testOneInput(data: bytes) -> None:
    if not data:
        return
    stream = data[1:]
    whole = frame([stream])
    assert frame(_common.splitAt(stream, data[0])) == whole
    assert frame([stream[i : i + 1] for i in range(len(stream))]) == whole
    if whole[0] == "bad":
        return
    try:
        end, decoded, _ = grammar.chunkedBody(stream, TODAY)
    except Incomplete:
        assert whole[0] == "more", whole
        return
    except Refused as e:
        raise AssertionError(f"the framer accepted a chunked body the grammar refuses: {e}") from None
    assert whole == ("done", end), (whole, end)
    assert dechunk([stream[:end]]) == decoded
    assert dechunk(_common.splitAt(stream[:end], data[0])) == decoded


if __name__ == "__main__":
    _common.main(testOneInput, SEEDS)
