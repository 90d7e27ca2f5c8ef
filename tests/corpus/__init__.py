"""
The request corpus of L{tests.test_differential}: ambiguous and malformed
HTTP/1.1 and HTTP/2 requests, each sent through lbkit and through HAProxy to
a recording server (see docs/security.md).

An entry says what it sends, where it comes from (a HAProxy reg-test, the
hardening findings, an RFC), and what is expected of lbkit when it is not
"the same as HAProxy":

 - C{None}: lbkit forwards exactly the requests HAProxy forwards (or
   neither forwards anything), and the server reads them alike.
 - C{"lbkit-stricter"}: HAProxy forwards it, lbkit refuses it on purpose;
   C{why} says why.
 - C{"differs"}: both forward it, but the server reads a different request
   from each (a normalisation one of them makes); C{why} says which.
 - C{"lbkit-lenient"}: HAProxy refuses it, lbkit forwards it, and that is
   harmless: lbkit forwards an unambiguous, rewritten form; C{why} says so.
 - C{"lbkit-bug"}: lbkit forwards what HAProxy refuses, or its server reads
   other requests than lbkit parsed, and that is a bug not fixed yet;
   C{why} says what goes wrong.  Remove the mark with the fix (the test
   fails on a mark that no longer holds).
"""

from __future__ import annotations

from typing import Optional, Union

import attrs

__all__ = ["H1Case", "H2Case", "Frame", "headers", "data", "raw", "STRICTER", "DIFFERS", "LENIENT", "BUG"]

#: lbkit refuses what HAProxy forwards, on purpose.
STRICTER = "lbkit-stricter"
#: Both forward it; the server reads a different request from each.
DIFFERS = "differs"
#: HAProxy refuses it; lbkit forwards a rewritten, unambiguous form.
LENIENT = "lbkit-lenient"
#: A known lbkit bug, not fixed yet.
BUG = "lbkit-bug"


@attrs.frozen
class H1Case:
    """
    One HTTP/1.x corpus entry.

    @ivar name: Unique, short, kebab-case.
    @ivar source: Where the case comes from: a HAProxy reg-test file (and
        its client), a hardening finding, an RFC section.
    @ivar data: The exact bytes the client writes.
    @ivar why: What it probes, and for an C{expect}, why it is expected.
    @ivar split: Send C{data} in small writes, one per reactor turn: an int
        is the size of each piece, a tuple the offsets to cut at.
    @ivar responses: How many responses a well-behaved proxy sends before
        the client can stop reading (pipelined requests: more than one).
    @ivar incomplete: The request is deliberately unfinished: the client
        stops waiting after a short deadline, and a server may see it cut.
    @ivar expect: C{None}, L{STRICTER}, L{DIFFERS}, L{LENIENT} or L{BUG}
        (see the module).
    """

    name: str
    source: str
    data: bytes
    why: str = ""
    split: Union[int, tuple[int, ...]] = 0
    responses: int = 1
    incomplete: bool = False
    expect: Optional[str] = None


@attrs.frozen
class Frame:
    """
    One HTTP/2 frame to send: C{kind} is C{"headers"} (C{headers} a list of
    C{(name, value)} byte pairs, sent as given), C{"continued"} (the same
    block split over HEADERS and CONTINUATION), C{"data"} (C{payload}), or
    C{"raw"} (C{payload} written as it is, for what no library would send).
    """

    kind: str
    stream: int = 1
    headers: tuple[tuple[bytes, bytes], ...] = ()
    payload: bytes = b""
    end: bool = False


def headers(*pairs: tuple[bytes, bytes], stream: int = 1, end: bool = True) -> Frame:
    """A HEADERS frame (with END_HEADERS; END_STREAM unless C{end=False})."""
    return Frame("headers", stream, tuple(pairs), b"", end)


def data(payload: bytes, stream: int = 1, end: bool = True) -> Frame:
    """A DATA frame (END_STREAM unless C{end=False})."""
    return Frame("data", stream, (), payload, end)


def raw(payload: bytes) -> Frame:
    """Bytes written as they are, after the frames before them."""
    return Frame("raw", 0, (), payload, False)


@attrs.frozen
class H2Case:
    """
    One HTTP/2 corpus entry: frames sent on a new TLS connection that
    negotiated C{h2} (after the preface and SETTINGS).

    @ivar frames: The frames, in order.
    @ivar incomplete: Some stream is deliberately left open.
    (The other fields are those of L{H1Case}.)
    """

    name: str
    source: str
    frames: tuple[Frame, ...]
    why: str = ""
    incomplete: bool = False
    expect: Optional[str] = None
