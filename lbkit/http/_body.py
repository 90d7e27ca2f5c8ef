# -*- test-case-name: tests.test_http_parse -*-
"""
HTTP/1.x message bodies, with no I/O: their framing (L{bodyLength}) and
where they end.

The proxy forwards HTTP/1.1 bodies exactly as they arrive (a chunked body
stays chunked), so reading a body only means finding where it ends:
L{BodyReader} counts a length or follows chunk sizes (L{ChunkedFramer})
without copying the data; in decode mode it also hands out the data of
the chunks (for HTTP/2 clients, which get no chunked framing).
"""

from __future__ import annotations

import re
from typing import Optional

from lbkit.http._parse import BadMessage

__all__ = [
    "bodyLength",
    "BodyReader",
    "ChunkedFramer",
    "CHUNKED",
    "UNTIL_CLOSE",
    "MAX_CHUNK",
    "DRAIN_LIMIT",
]

#: Body framing: a chunked body.
CHUNKED = -1
#: Body framing: a response body that ends when the server closes.
UNTIL_CLOSE = -2
#: The largest chunk size accepted: 2**52 - 1, as HAProxy (a value a
#: server storing sizes in a double or a signed 64-bit int still reads
#: right).
MAX_CHUNK = (1 << 52) - 1
#: At most this many bytes of a request body are read and dropped after the
#: server already answered; past it the client connection is closed.
DRAIN_LIMIT = 4 * 1024 * 1024

_HEX = re.compile(rb"^[0-9A-Fa-f]{1,16}\Z")  # \Z, not $: $ also matches before a final newline
# a chunk extension may hold no control character but HTAB
_EXT_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# a trailer line: a header field
_FIELD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\x00]*")


def bodyLength(headers: list[list[bytes]], response: bool, names: Optional[list[bytes]] = None) -> int:
    """
    The framing of a message body from its headers (RFC 9112 §6.3).

    A request's C{Transfer-Encoding} must be C{chunked} alone; a
    response's must end with C{chunked} (and name it once), or its body
    lasts until close.

    @param names: The lower-cased names of C{headers}, when known (as the
        parse found them): the usual case (no C{Transfer-Encoding}, at most
        one C{Content-Length}) is then told without a loop.
    @return: A byte count, L{CHUNKED}, or for a response without either
        header L{UNTIL_CLOSE} (a request without either has no body: 0).
    @raise BadMessage: on conflicting or invalid framing headers.
    """
    if names is not None and b"transfer-encoding" not in names:
        n = names.count(b"content-length")
        if n == 0:
            return UNTIL_CLOSE if response else 0
        if n == 1:
            value = headers[names.index(b"content-length")][1]
            if value.isdigit() and len(value) <= 18:
                return int(value)
    status = 502 if response else 400
    te: Optional[bytes] = None
    cl: Optional[bytes] = None
    for name, value in headers:
        if len(name) == 17 and name.lower() == b"transfer-encoding":
            te = value if te is None else te + b"," + value
        elif len(name) == 14 and name.lower() == b"content-length":
            if cl is not None and cl != value:
                raise BadMessage("conflicting Content-Length headers", status)
            cl = value
    if te is not None:
        if cl is not None:
            raise BadMessage("both Transfer-Encoding and Content-Length", status)
        if response:
            # only SP and HTAB are whitespace (RFC 9110 section 5.6.3):
            # "\x0bchunked" is another coding, not chunked
            codings = [c.strip(b" \t").lower() for c in te.split(b",")]
            if codings.count(b"chunked") > 1:
                raise BadMessage("Transfer-Encoding applies chunked twice", status)
            return CHUNKED if codings[-1] == b"chunked" else UNTIL_CLOSE
        # a request: chunked and nothing else, once (as HAProxy); empty
        # list elements are allowed (RFC 9110 section 5.6.1)
        codings = [c for c in (c.strip(b" \t").lower() for c in te.split(b",")) if c]
        if codings != [b"chunked"]:
            raise BadMessage(f"Transfer-Encoding other than chunked {te[:40]!r}", status)
        return CHUNKED
    if cl is not None:
        # digits only: the header parser has trimmed spaces and tabs, and
        # any other byte around the number is refused, not stripped
        if not cl.isdigit() or len(cl) > 18:
            raise BadMessage(f"invalid Content-Length {cl[:20]!r}", status)
        return int(cl)
    return UNTIL_CLOSE if response else 0


class BodyReader:
    """
    Finds the end of one message body at a time in a byte stream: a
    C{Content-Length} count, a chunked body (L{ChunkedFramer}), or a
    response body that lasts until the connection closes.

    L{start} sets the framing of the next body; L{feed} is then given each
    piece and returns how many of its leading bytes are the body's (to
    forward); once L{done} is true the body is complete, and the bytes of
    the piece after it are not the body's.

    @ivar framing: A byte count, L{CHUNKED} or L{UNTIL_CLOSE} (from
        L{bodyLength}).
    @ivar remaining: With a byte count, how many are still to come.
    @ivar done: Whether the whole body has been fed.
    """

    __slots__ = ("framing", "remaining", "done", "framer")

    def __init__(self, framing: int = 0) -> None:
        self.start(framing)

    def start(self, framing: int, decode: bool = False) -> None:
        """
        Read a new body with this framing.

        @param decode: Whether a chunked body's data is wanted too: its
            L{framer} then collects it in C{framer.pieces}.
        """
        self.framing = framing
        self.remaining = framing if framing > 0 else 0
        self.done = framing == 0
        self.framer: Optional[ChunkedFramer] = ChunkedFramer(decode) if framing == CHUNKED else None

    def feed(self, data: bytes) -> int:
        """
        @return: How many leading bytes of C{data} belong to the body.
        @raise BadMessage: on malformed chunked framing.
        """
        remaining = self.remaining
        if remaining:
            n = len(data)
            if n < remaining:
                self.remaining = remaining - n
                return n
            self.remaining = 0
            self.done = True
            return remaining
        framer = self.framer
        if framer is not None:
            n = framer.feed(data)
            if framer.done:
                self.done = True
            return n
        if self.framing == UNTIL_CLOSE:
            return len(data)
        return 0


class ChunkedFramer:
    """
    Finds the end of a chunked body in a byte stream, without copying it.

    Feed it each piece with L{feed}; it returns how many bytes of the
    piece belong to the body.  When that is less than the piece's length,
    or when L{done} becomes true, the body ended there.  In decode mode it
    also appends the data of the chunks (sizes, extensions and trailers
    left out) to L{pieces}, which the caller empties.

    It is strict: CRLF line ends, chunk sizes of hex digits up to
    L{MAX_CHUNK}, extensions without control characters other than HTAB,
    trailer lines that are header fields, lines of at most 4096 bytes
    (however they arrive).

    @ivar pieces: In decode mode, the chunk data found so far (slices of
        what was fed); else C{None}.
    @ivar trailers: In decode mode, the trailer lines found (C{b"name:
        value"}, see L{lbkit.http._trailers}); else empty.
    """

    __slots__ = ("done", "pieces", "trailers", "_state", "_remaining", "_line")

    # states: 0 size line, 1 data, 2 CRLF after data, 3 trailers
    def __init__(self, decode: bool = False) -> None:
        self.done = False
        self.pieces: Optional[list[bytes]] = [] if decode else None
        self.trailers: list[bytes] = []
        self._state = 0
        self._remaining = 0
        self._line = b""

    def feed(self, data: bytes) -> int:
        """
        @return: The number of leading bytes of C{data} that are part of the
            chunked body.
        @raise BadMessage: on a malformed chunk size or framing.
        """
        i = 0
        n = len(data)
        pieces = self.pieces
        while i < n and not self.done:
            state = self._state
            if state == 1:
                take = min(self._remaining, n - i)
                if pieces is not None:
                    pieces.append(data if take == n else data[i : i + take])
                i += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = 2
                continue
            end = data.find(b"\n", i)
            if end < 0:
                self._line += data[i:]
                if len(self._line) > 4096:
                    raise BadMessage("chunk line too long")
                return n
            line = self._line + data[i:end] if self._line else data[i:end]
            self._line = b""
            if len(line) > 4096:  # the same limit however the line arrived
                raise BadMessage("chunk line too long")
            i = end + 1
            if line[-1:] != b"\r":
                raise BadMessage("bare LF in chunked body")
            line = line[:-1]
            if state == 0:
                # strictly hex digits (int() would take "0x", "_", "+", "-")
                size, semicolon, extensions = line.partition(b";")
                size = size.rstrip(b" \t")
                if not _HEX.match(size):
                    raise BadMessage(f"malformed chunk size {size[:20]!r}")
                remaining = int(size, 16)
                if remaining > MAX_CHUNK:
                    raise BadMessage(f"chunk size too large {size[:20]!r}")
                if semicolon and _EXT_CTL.search(extensions) is not None:
                    raise BadMessage("control character in a chunk extension")
                self._remaining = remaining
                self._state = 3 if remaining == 0 else 1
            elif state == 2:
                if line:
                    raise BadMessage("missing CRLF after chunk data")
                self._state = 0
            else:  # trailers: header fields until an empty line
                if not line:
                    self.done = True
                elif _FIELD.fullmatch(line) is None:
                    raise BadMessage(f"malformed trailer line {line[:60]!r}")
                elif pieces is not None:
                    self.trailers.append(line)
        return i
