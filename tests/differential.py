"""
The pieces of L{tests.test_differential}: a recording server that reads
HTTP/1.1 strictly and says where each request it received begins and ends,
clients that send a corpus entry (L{tests.corpus}) as HTTP/1.x or HTTP/2
and note what they got back, and the comparison of what lbkit and HAProxy
did with the same entry.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import attrs
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.exceptions import H2Error
from hpack import Decoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)
from twisted.internet.defer import Deferred
from twisted.internet.error import TimeoutError
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from tests.corpus import BUG, DIFFERS, LENIENT, STRICTER, H1Case, H2Case

# -- the recording server ------------------------------------------------------

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(;[^\x00-\x08\x0a-\x1f\x7f]*)?\Z")
#: What no header value may hold (RFC 9110 section 5.5: reject or replace);
#: other control bytes are invalid but HAProxy forwards them, as lbkit.
_NOT_IN_VALUE = re.compile(rb"[\x00\r\n]")
#: Where a server would stop buffering a head.
_MAX_HEAD = 256 * 1024


@attrs.define
class Seen:
    """
    One request as the recording server read it.

    @ivar complete: Whether the server read all of it (head and body); if
        not, the connection ended or the test stopped looking first.
    @ivar body: The body, de-chunked.
    """

    method: bytes = b""
    target: bytes = b""
    version: bytes = b""
    headers: list[tuple[bytes, bytes]] = attrs.Factory(list)
    body: bytes = b""
    complete: bool = False
    raw: bytes = b""

    def header(self, name: bytes) -> Optional[bytes]:
        """The first value of header C{name} (lower-case), or L{None}."""
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def short(self) -> str:
        """A one-line description, for the divergence table."""
        if not self.method:
            return f"unfinished head {self.raw[:60]!r}"
        text = f"{self.method.decode('latin-1')} {self.target[:60].decode('latin-1')}"
        if self.body:
            text += f" body={self.body[:40]!r}"
        if not self.complete:
            text += " (cut)"
        return text


class StrictParser:
    """
    Splits the bytes of one connection into requests (RFC 9112, strictly:
    CRLF line ends, token header names, no folding, one valid framing).

    L{feed} returns the requests completed by the bytes given; after a
    framing error, L{error} says what it was and nothing more is parsed.
    """

    def __init__(self) -> None:
        self.buf = b""
        self.error: Optional[str] = None
        self.current: Optional[Seen] = None
        self._remaining = 0  # body bytes left (Content-Length framing)
        self._chunked = False
        self._chunkState = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailers
        self._start = b""

    def feed(self, data: bytes) -> list[Seen]:
        done: list[Seen] = []
        if self.error is not None:
            return done
        self.buf += data
        try:
            while self.buf and self.error is None:
                if self.current is None:
                    if not self._head():
                        break
                elif not self._body():
                    break
                if self.current is not None and self.current.complete:
                    done.append(self.current)
                    self.current = None
        except ValueError as e:
            self.error = str(e)
        return done

    def pending(self) -> Optional[Seen]:
        """The request under way (cut), or L{None} if between requests."""
        if self.current is not None:
            return self.current
        if self.buf and self.error is None:
            return Seen(raw=self.buf)
        return None

    def _head(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > _MAX_HEAD:
                raise ValueError("head too long")
            return False
        head, self.buf = self.buf[:end], self.buf[end + 4 :]
        lines = head.split(b"\r\n")
        if any(b"\r" in line or b"\n" in line for line in lines):
            raise ValueError("bare CR or LF in the head")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise ValueError(f"malformed request line {lines[0][:60]!r}")
        method, target, version = parts
        if not _TOKEN.match(method) or version not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise ValueError(f"malformed request line {lines[0][:60]!r}")
        if not target or any(c < 0x21 or c == 0x7F for c in target):
            raise ValueError(f"control byte in target {target[:60]!r}")
        fields = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.match(name):
                raise ValueError(f"malformed header line {line[:60]!r}")
            value = value.strip(b" \t")
            if _NOT_IN_VALUE.search(value):
                raise ValueError(f"NUL, CR or LF in header {name!r}")
            fields.append((name, value))
        seen = Seen(method, target, version, fields, raw=head + b"\r\n\r\n")
        te = [v for n, v in fields if n.lower() == b"transfer-encoding"]
        cl = [v for n, v in fields if n.lower() == b"content-length"]
        if te:
            codings = [c.strip(b" \t").lower() for c in b",".join(te).split(b",") if c.strip(b" \t")]
            if codings != [b"chunked"]:
                raise ValueError(f"transfer-encoding {b','.join(te)!r}")
            if cl:
                raise ValueError("both transfer-encoding and content-length")
            self._chunked = True
            self._chunkState = 0
        elif cl:
            if len(set(cl)) != 1 or not cl[0].isdigit():
                raise ValueError(f"content-length {cl!r}")
            self._chunked = False
            self._remaining = int(cl[0])
        else:
            self._chunked = False
            self._remaining = 0
        self.current = seen
        if not self._chunked and self._remaining == 0:
            seen.complete = True
        return True

    def _body(self) -> bool:
        seen = self.current
        assert seen is not None
        if not self._chunked:
            take = self.buf[: self._remaining]
            self.buf = self.buf[len(take) :]
            seen.body += take
            seen.raw += take
            self._remaining -= len(take)
            seen.complete = self._remaining == 0
            return seen.complete
        while not seen.complete:
            if self._chunkState == 1:
                take = self.buf[: self._remaining]
                if not take:
                    return False
                self.buf = self.buf[len(take) :]
                seen.body += take
                seen.raw += take
                self._remaining -= len(take)
                if self._remaining == 0:
                    self._chunkState = 2
                continue
            end = self.buf.find(b"\r\n")
            if end < 0:
                if b"\n" in self.buf or b"\r" in self.buf[:-1] or len(self.buf) > 4096:
                    raise ValueError("bad line in chunked body")
                return False
            line, self.buf = self.buf[:end], self.buf[end + 2 :]
            seen.raw += line + b"\r\n"
            if b"\n" in line or b"\r" in line:
                raise ValueError("bare CR or LF in chunked body")
            if self._chunkState == 0:
                m = _CHUNK_SIZE.match(line)
                if m is None:
                    raise ValueError(f"malformed chunk size line {line[:40]!r}")
                self._remaining = int(m.group(1), 16)
                self._chunkState = 1 if self._remaining else 3
            elif self._chunkState == 2:
                if line:
                    raise ValueError("no CRLF after chunk data")
                self._chunkState = 0
            elif not line:
                seen.complete = True
            else:
                name, colon, value = line.partition(b":")
                if not colon or not _TOKEN.match(name) or _NOT_IN_VALUE.search(value):
                    raise ValueError(f"malformed trailer {line[:40]!r}")
        return True


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
NOT_ALLOWED = b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 2\r\n\r\nno"


@attrs.define
class Event:
    """
    What a recording server saw: C{kind} is C{"request"} (a complete one),
    C{"cut"} (a request under way when the connection ended, or when the
    test looked) or C{"error"} (bytes it could not parse strictly).
    """

    kind: str
    connection: int
    seen: Seen
    error: str = ""
    #: For a cut request: whether its connection was closed (the proxy gave
    #: up on it) rather than left open (the server still waits for the rest).
    closed: bool = False


class RecordingServer(Protocol):
    """
    An HTTP/1.1 server that keeps every connection alive, answers each
    complete request (200 C{ok}; 405 to CONNECT, whose 2xx would open a
    tunnel), and reports requests and framing errors to its factory.  On a
    framing error it closes the connection.
    """

    factory: RecordingFactory

    def connectionMade(self) -> None:
        self.parser = StrictParser()
        self.number = self.factory.connections
        self.factory.connections += 1
        self.factory.open.add(self)
        #: The bytes of the request under way when it was last reported cut.
        self.reportedCut = b""

    def dataReceived(self, data: bytes) -> None:
        for seen in self.parser.feed(data):
            self.reportedCut = b""
            self.factory.events.append(Event("request", self.number, seen))
            assert self.transport is not None
            if seen.method == b"HEAD":
                self.transport.write(OK_HEAD)
            elif seen.method == b"CONNECT":
                self.transport.write(NOT_ALLOWED)
            else:
                self.transport.write(OK)
        if self.parser.error is not None:
            self.factory.events.append(
                Event("error", self.number, Seen(raw=self.parser.buf[:200]), self.parser.error)
            )
            self.parser.buf = b""
            assert self.transport is not None
            self.transport.loseConnection()
        self.factory.checkQuiet()

    def reportCut(self, closed: bool) -> None:
        """Report the request under way, if there is one not reported as it is."""
        cut = self.parser.pending()
        if cut is not None and cut.raw != self.reportedCut:
            self.reportedCut = cut.raw
            seen = attrs.evolve(cut, headers=list(cut.headers))
            self.factory.events.append(Event("cut", self.number, seen, closed=closed))

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.reportCut(True)
        self.factory.open.discard(self)
        self.factory.checkQuiet()


class RecordingFactory(Factory):
    """
    Builds L{RecordingServer}s, and keeps the list of L{Event}s all of
    them reported, in order.
    """

    protocol = RecordingServer  # type: ignore[assignment]
    noisy = False

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.connections = 0
        self.open: set[RecordingServer] = set()
        self._quiet: list[Deferred[None]] = []

    def quiet(self, reactor: Any, timeout: float) -> Deferred[None]:
        """
        Fires once no open connection is in the middle of a request (a
        proxy closing one it gave up on may take a moment), or after
        C{timeout} seconds if one still is.
        """
        d: Deferred[None] = Deferred()
        self._quiet.append(d)
        d.addTimeout(timeout, reactor)
        d.addErrback(lambda f: f.trap(TimeoutError))
        self.checkQuiet()
        return d

    def checkQuiet(self) -> None:
        """Fire the L{quiet} waiters if no open connection is in the middle of a request."""
        if any(server.parser.pending() is not None for server in self.open):
            return
        waiting, self._quiet = self._quiet, []
        for d in waiting:
            if not d.called:
                d.callback(None)

    def mark(self) -> int:
        """A position in L{events}, for L{since}."""
        return len(self.events)

    def since(self, mark: int) -> list[Event]:
        """The events after C{mark}, requests under way included (as C{"cut"})."""
        for server in sorted(self.open, key=lambda s: s.number):
            server.reportCut(False)
        return self.events[mark:]


# -- the clients -------------------------------------------------------------------


@attrs.define
class Outcome:
    """
    What the client got: the status of each response (for HTTP/2, per
    stream: a status, C{"RST:<code>"} or C{"-"}), and how it ended.
    """

    statuses: list[str] = attrs.Factory(list)
    ending: str = "open"

    def short(self) -> str:
        return " ".join(self.statuses or ["-"]) + f" [{self.ending}]"


class H1Probe(Protocol):
    """
    Writes an L{H1Case}'s bytes (in pieces, one per reactor turn, when it
    says so) and reads responses until it has as many as the case expects,
    the proxy closes, or L{done} is fired by the deadline.
    """

    def __init__(self, reactor: Any, case: H1Case) -> None:
        self.reactor = reactor
        self.case = case
        self.outcome = Outcome()
        self.buf = b""
        self.done: Deferred[Outcome] = Deferred()
        self._pieces = _pieces(case.data, case.split)
        self._next: Any = None
        self._expect: Optional[int] = None  # body bytes of the response under way
        self._chunked = False

    def connectionMade(self) -> None:
        self._write()

    def _write(self) -> None:
        self._next = None
        if self.done.called or not self._pieces or self.transport is None:
            return
        self.transport.write(self._pieces.pop(0))
        if self._pieces:
            self._next = self.reactor.callLater(0, self._write)

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        while not self.done.called:
            if self._expect is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head, self.buf = self.buf[:end], self.buf[end + 4 :]
                status, length, self._chunked = _responseHead(head)
                if 100 <= int(status or "0") < 200:
                    continue
                self.outcome.statuses.append(status)
                self._expect = length
            if self._chunked:
                end = self.buf.find(b"0\r\n\r\n")
                if end < 0:
                    return
                self.buf = self.buf[end + 5 :]
            else:
                assert self._expect is not None
                if len(self.buf) < self._expect:
                    return
                self.buf = self.buf[self._expect :]
            self._expect = None
            if len(self.outcome.statuses) >= self.case.responses:
                self.finish("answered")

    def finish(self, ending: str) -> None:
        """Stop: record how it ended, close, fire L{done}."""
        if self.done.called:
            return
        self.outcome.ending = ending
        if self._next is not None:
            self._next.cancel()
            self._next = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        self.done.callback(self.outcome)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        if self.buf and not self.done.called:
            status = _responseHead(self.buf.partition(b"\r\n\r\n")[0])[0]
            if status:
                self.outcome.statuses.append(status + "(cut)")
        self.finish("closed")


def _pieces(data: bytes, split: Any) -> list[bytes]:
    if not split:
        return [data]
    if isinstance(split, int):
        return [data[i : i + split] for i in range(0, len(data), split)]
    cuts = [0, *split, len(data)]
    return [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def _responseHead(head: bytes) -> tuple[str, int, bool]:
    """The status, Content-Length (0 if none) and whether chunked, of a response head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    status = parts[1].decode("latin-1") if len(parts) > 1 and lines[0].startswith(b"HTTP/") else "?"
    length, chunked = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length" and value.strip().isdigit():
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return status, length, chunked


#: The client's side of HTTP/2: what the corpus asks for is sent as is.
H2_CONFIG = dict(
    client_side=True,
    header_encoding=None,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=False,
)


class H2Probe(Protocol):
    """
    Sends an L{H2Case}'s frames with the C{h2} library (raw frames from
    C{hyperframe} when C{h2} refuses one), and reads the frames that come
    back itself, so that whatever the proxy answers is noted: a status, a
    RST_STREAM, a GOAWAY.  It stops when every stream it opened is over,
    the proxy closes, or L{done} is fired by the deadline.
    """

    def __init__(self, case: H2Case) -> None:
        self.case = case
        self.conn = H2Connection(H2Configuration(**H2_CONFIG))  # type: ignore[arg-type]
        self.decoder = Decoder()
        self.streams = sorted({f.stream for f in case.frames if f.kind != "raw"})
        self.results: dict[int, str] = {}
        self.goaway = ""
        self.buf = b""
        self._block: dict[int, bytes] = {}
        self.done: Deferred[Outcome] = Deferred()

    def connectionMade(self) -> None:
        self.conn.initiate_connection()
        out = self.conn.data_to_send()
        for frame in self.case.frames:
            out += self._encode(frame)
        assert self.transport is not None
        self.transport.write(out)

    def _encode(self, frame: Any) -> bytes:
        if frame.kind == "raw":
            payload: bytes = frame.payload
            return payload
        if frame.kind == "continued":
            block = self.conn.encoder.encode(list(frame.headers))
            first = HeadersFrame(frame.stream, block[: len(block) // 2])
            if frame.end:
                first.flags.add("END_STREAM")
            rest = ContinuationFrame(frame.stream, block[len(block) // 2 :])
            rest.flags.add("END_HEADERS")
            return first.serialize() + rest.serialize()
        try:
            if frame.kind == "headers":
                self.conn.send_headers(frame.stream, list(frame.headers), end_stream=frame.end)
            else:
                self.conn.send_data(frame.stream, frame.payload, end_stream=frame.end)
            return self.conn.data_to_send()
        except H2Error:
            pass
        # h2 refused (a frame its stream state forbids): build it by hand
        raw: Frame
        if frame.kind == "headers":
            raw = HeadersFrame(frame.stream, self.conn.encoder.encode(list(frame.headers)))
            raw.flags.add("END_HEADERS")
        else:
            raw = DataFrame(frame.stream, frame.payload)
        if frame.end:
            raw.flags.add("END_STREAM")
        return raw.serialize()

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 9 and not self.done.called:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                return
            body, self.buf = self.buf[9 : 9 + length], self.buf[9 + length :]
            try:
                frame.parse_body(memoryview(body))
            except Exception as e:  # noqa: BLE001 - anything unreadable ends the probe
                self.goaway = f"bad frame {e}"
                self.finish("closed")
                return
            self._frame(frame)
        if self.streams and all(s in self.results for s in self.streams):
            self.finish("answered")

    def _frame(self, frame: Any) -> None:
        assert self.transport is not None
        sid = frame.stream_id
        if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
            self.transport.write(SettingsFrame(0, flags=["ACK"]).serialize())
        elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
            self.transport.write(PingFrame(0, frame.opaque_data, flags=["ACK"]).serialize())
        elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
            self._block[sid] = self._block.get(sid, b"") + frame.data
            if "END_HEADERS" in frame.flags:
                fields = dict(self.decoder.decode(self._block.pop(sid), raw=True))
                status = fields.get(b":status", b"?").decode("latin-1")
                if not status.startswith("1") and sid not in self.results:
                    self.results[sid] = status
            if "END_STREAM" in frame.flags:
                self.results.setdefault(sid, "?")
        elif isinstance(frame, RstStreamFrame):
            self.results.setdefault(sid, f"RST:{frame.error_code}")
        elif isinstance(frame, GoAwayFrame):
            self.goaway = f"GOAWAY:{frame.error_code}"

    def finish(self, ending: str) -> None:
        """Stop: record how it ended, close, fire L{done}."""
        if self.done.called:
            return
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        statuses = [self.results.get(s, "-") for s in self.streams]
        if self.goaway:
            ending += " " + self.goaway
        self.done.callback(Outcome(statuses, ending))

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.finish("closed")


# -- comparing -------------------------------------------------------------------

_HOP = {
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"content-length", b"host",
}


@attrs.define
class SideResult:
    """
    One proxy's handling of one entry: what the client got, what the server
    read, whether the fence request after it came through clean, and (for
    lbkit) the requests its access log says it sent to a server.
    """

    outcome: Outcome
    events: list[Event]
    fenced: bool
    logged: Optional[list[tuple[bytes, bytes]]] = None

    @property
    def complete(self) -> list[Seen]:
        """The requests the server read whole: those the proxy forwarded."""
        return [e.seen for e in self.events if e.kind == "request"]

    @property
    def aborted(self) -> list[Seen]:
        """Requests the proxy began to send, then gave up on by closing the connection."""
        return [e.seen for e in self.events if e.kind == "cut" and e.closed]

    @property
    def hanging(self) -> list[Seen]:
        """Requests the server still waits to read the rest of, on an open connection."""
        return [e.seen for e in self.events if e.kind == "cut" and not e.closed]

    @property
    def errors(self) -> list[Event]:
        return [e for e in self.events if e.kind == "error"]

    def short(self) -> str:
        seen = [s.short() for s in self.complete]
        seen += [s.short() + " then closed" for s in self.aborted]
        seen += [s.short() + " STILL WAITING" for s in self.hanging]
        errors = "".join(f"; ERROR {e.error}" for e in self.errors)
        fence = "" if self.fenced else "; NEXT REQUEST LOST"
        return f"client {self.outcome.short()}; server read: {'; '.join(seen) or 'nothing'}{errors}{fence}"


@attrs.frozen
class Divergence:
    """One way lbkit and HAProxy (or lbkit and the server) disagreed on an entry."""

    case: str
    kind: str
    allowed: bool
    detail: str


def meaning(seen: Seen) -> tuple[Any, ...]:
    """
    What a request means to a server, normalisations aside: method, origin
    form target, host (without a default port), the end-to-end headers
    (names lower-cased) and the body.
    """
    target = seen.target
    m = re.match(rb"(?i)https?://([^/?]*)(.*)", target, re.S)
    host = seen.header(b"host") or b""
    if m is not None:
        host = host or m.group(1)
        target = m.group(2) or b"/"
    host = host.lower()
    for default in (b":80", b":443", b":"):
        if host.endswith(default):
            host = host[: -len(default)]
            break
    fields = sorted((n.lower(), v) for n, v in seen.headers if n.lower() not in _HOP)
    return (seen.method, target, host, tuple(fields), seen.body)


#: The divergence kinds each C{expect} of an entry allows.
_ALLOWS = {STRICTER: {STRICTER}, DIFFERS: {DIFFERS}, LENIENT: {"forwards-refused"}, BUG: {"forwards-refused", "desync"}}


def compare(case: Any, haproxy: SideResult, lbkit: SideResult) -> list[Divergence]:
    """
    The divergences of one entry: lbkit forwarding what HAProxy refused,
    lbkit and its server disagreeing on where requests end, lbkit refusing
    what HAProxy forwarded, or the server reading different requests; each
    allowed or not by the entry's C{expect}.

    A request a proxy began to forward and then abandoned by closing the
    server connection counts as refused: the server read no request.
    """
    out: list[Divergence] = []
    allows = _ALLOWS.get(case.expect, set())
    detail = f"haproxy: {haproxy.short()} | lbkit: {lbkit.short()}"

    def add(kind: str, why: str = "", allowed: Optional[bool] = None) -> None:
        ok = kind in allows if allowed is None else allowed
        out.append(Divergence(case.name, kind, ok, (why + " | " if why else "") + detail))

    hap, lb = haproxy.complete, lbkit.complete
    if len(lb) > len(hap):
        add("forwards-refused", f"lbkit forwarded {len(lb)} request(s), HAProxy {len(hap)}")
    # desync: what lbkit says it sent is not what its server read
    problems = []
    if lbkit.errors:
        problems.append("the server could not parse what lbkit sent")
    if lbkit.hanging:
        problems.append("the server waits for the rest of a request lbkit is done with")
    if not lbkit.fenced:
        problems.append("the next request after it was lost")
    if not case.incomplete and lbkit.outcome.ending.startswith("deadline"):
        problems.append("the client sent it whole and got no answer")
        if lbkit.aborted:
            problems.append("the server was still waiting for more of it")
    sentLines = sorted(lbkit.logged or [])
    readLines = sorted((s.method, s.target) for s in lb + lbkit.aborted + lbkit.hanging if s.method)
    if sentLines != readLines:
        problems.append(f"lbkit logged {sentLines}, the server read {readLines}")
    if problems:
        add("desync", "; ".join(problems))
    if len(lb) < len(hap):
        add(STRICTER)
    elif len(lb) == len(hap) and [meaning(s) for s in lb] != [meaning(s) for s in hap]:
        add(DIFFERS)
    if case.expect is not None and not any(d.kind in allows for d in out):
        add("stale", f"marked {case.expect!r}, but that is no longer so: remove the mark", False)
    anomalies = []
    if haproxy.errors:
        anomalies.append("the server could not parse what HAProxy sent")
    if haproxy.hanging:
        anomalies.append("the server waits for the rest of a request HAProxy is done with")
    if not haproxy.fenced:
        anomalies.append("the next request after it was lost")
    if not case.incomplete and haproxy.outcome.ending.startswith("deadline"):
        anomalies.append("the client sent it whole and got no answer")
    if anomalies:
        add("haproxy-anomaly", "; ".join(anomalies), True)
    return out


def table(divergences: list[Divergence]) -> str:
    """The divergences as a plain-text table, failures first."""
    rows = sorted(divergences, key=lambda d: (d.allowed, d.case))
    lines = [f"{'':4} {'entry':38} {'kind':18} detail"]
    for d in rows:
        mark = "ok" if d.allowed else "FAIL"
        lines.append(f"{mark:4} {d.case:38} {d.kind:18} {d.detail}")
    return "\n".join(lines)


__all__ = [
    "StrictParser", "Seen", "RecordingFactory", "RecordingServer", "Event", "H1Probe", "H2Probe",
    "Outcome", "SideResult", "Divergence", "compare", "meaning", "table", "H2_CONFIG", "H2Case",
]
