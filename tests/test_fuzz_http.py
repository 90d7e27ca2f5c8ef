"""
Property tests (hypothesis) for the HTTP/1.1 parsers: request and response
heads, body framing, the chunked framer and the HTTP/2 side's dechunker.

Three kinds of property, for each parser:
 - valid messages built from a model parse back to exactly that model,
   however the bytes are split;
 - any bytes give a result or L{BadMessage}, never another exception;
 - whatever lbkit accepts, the strict reference grammar in L{tests.grammar}
   accepts too, with the same meaning (the request smuggling property).
   Leniencies lbkit has today are named in L{tests.grammar.LENIENCIES};
   a C{todo} test per leniency shows each one.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lbkit.http._body import CHUNKED, UNTIL_CLOSE, ChunkedFramer, bodyLength
from lbkit.http._parse import BadMessage, parseRequestHead, parseResponseHead
from tests import grammar
from tests.grammar import TODAY, Incomplete, Refused
from tests.helpers import fuzzSettings, mutated, splitAt, strictProperty, strictTodo

_SETTINGS = fuzzSettings()

# -- generators for valid messages -------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
SUB_DELIMS = "!$&'()*+,;="
VCHAR = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))

tokens = st.text(TCHAR, min_size=1, max_size=10).map(str.encode)
methods = tokens.filter(lambda method: method != b"CONNECT")
pctEncoded = st.integers(0, 255).map(lambda b: b"%%%02X" % b)
pchars = st.lists(
    st.one_of(st.sampled_from(list(UNRESERVED + SUB_DELIMS + ":@")).map(str.encode), pctEncoded),
    max_size=8,
).map(b"".join)
queries = st.lists(
    st.one_of(st.sampled_from(list(UNRESERVED + SUB_DELIMS + ":@/?")).map(str.encode), pctEncoded),
    max_size=8,
).map(b"".join)
regNames = st.text(UNRESERVED, min_size=1, max_size=12).map(str.encode)
hosts = st.one_of(
    regNames,
    st.ip_addresses(v=4).map(lambda ip: str(ip).encode()),
    st.ip_addresses(v=6).map(lambda ip: b"[%s]" % str(ip).encode()),
)


@st.composite
def originForms(draw: st.DrawFn) -> bytes:
    """An origin-form target: C{1*( "/" segment ) [ "?" query ]}."""
    path = b"".join(b"/" + s for s in draw(st.lists(pchars, min_size=1, max_size=4)))
    query = draw(st.one_of(st.none(), queries))
    return path if query is None else path + b"?" + query


@st.composite
def requestLines(draw: st.DrawFn) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]], bytes, list[tuple[bytes, bytes]]]:
    """
    A method, a request target of one of the four forms and a version, with
    the Host lines to send and, as the model: the target and Host lines the
    request stands for (RFC 9112 section 3.2.2: an absolute-form target is
    its path and query, its authority the Host).
    """
    form = draw(st.sampled_from(["origin", "absolute", "authority", "asterisk"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    if form == "absolute":
        scheme = draw(st.sampled_from([b"http", b"https", b"HTTP", b"Https"]))
        port = draw(st.one_of(st.just(b""), st.integers(0, 65535).map(lambda p: b":%d" % p)))
        path = draw(st.one_of(st.just(b""), originForms(), queries.map(lambda q: b"?" + q)))
        authority = draw(hosts) + port
        target = scheme + b"://" + authority + path
        origin = path if path[:1] == b"/" else b"/" + path
        if draw(st.booleans()):  # a Host line naming the same host
            sent = [(b"Host", authority.upper())]
            return draw(methods), target, version, sent, origin, sent
        return draw(methods), target, version, [], origin, [(b"Host", authority)]
    if form == "origin":
        method, target = draw(methods), draw(originForms())
    elif form == "authority":
        method, target = b"CONNECT", draw(hosts) + b":%d" % draw(st.integers(0, 65535))
    else:
        method, target = b"OPTIONS", b"*"
    return method, target, version, [], target, []


@st.composite
def fieldValues(draw: st.DrawFn) -> bytes:
    """A field value: visible characters and obs-text, SP and HTAB inside only."""
    words = draw(st.lists(st.binary(min_size=1, max_size=8).map(lambda b: bytes(VCHAR[c % len(VCHAR)] for c in b)), max_size=4))
    seps = draw(st.lists(st.sampled_from([b" ", b"\t", b"  ", b" \t"]), min_size=len(words), max_size=len(words)))
    return b"".join(w + s for w, s in zip(words, seps, strict=True)).rstrip(b" \t")


ows = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t "])


# (a Host or Content-Length line would have to agree with the others)
fieldNames = tokens.filter(lambda name: name.lower() not in (b"host", b"content-length"))


@st.composite
def fields(draw: st.DrawFn) -> tuple[bytes, tuple[bytes, bytes]]:
    """One field line and the C{(name, value)} it means."""
    name, value = draw(fieldNames), draw(fieldValues())
    return name + b":" + draw(ows) + value + draw(ows), (name, value)


@st.composite
def requestHeads(draw: st.DrawFn) -> tuple[bytes, grammar.Head]:
    """A valid request head and its model (the request it stands for)."""
    method, target, version, host, origin, hostModel = draw(requestLines())
    lines = draw(st.lists(fields(), max_size=8))
    head = b"\r\n".join(
        [b" ".join([method, target, version])] + [n + b": " + v for n, v in host] + [line for line, _ in lines]
    )
    return head, (method, origin, version, hostModel + [model for _, model in lines])


@st.composite
def responseHeads(draw: st.DrawFn) -> tuple[bytes, tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]]:
    """A valid response head and its model."""
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    code = draw(st.integers(100, 599))
    reason = draw(st.one_of(st.just(b""), fieldValues()))
    lines = draw(st.lists(fields(), max_size=8))
    head = b"\r\n".join([b"%s %d %s" % (version, code, reason)] + [line for line, _ in lines])
    return head, (version, code, reason, [model for _, model in lines])


quotedStrings = st.lists(
    st.one_of(
        st.sampled_from(list(b"\t !" + bytes(range(0x23, 0x5C)) + bytes(range(0x5D, 0x7F)) + b"\x80\xff")).map(lambda c: bytes([c])),
        st.sampled_from(list(b'\t "\\a\x80')).map(lambda c: b"\\" + bytes([c])),
    ),
    max_size=6,
).map(lambda parts: b'"' + b"".join(parts) + b'"')
bws = st.sampled_from([b"", b" ", b"\t"])


@st.composite
def chunkExtensions(draw: st.DrawFn) -> bytes:
    """C{*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )}."""
    out = b""
    for _ in range(draw(st.integers(0, 2))):
        out += draw(bws) + b";" + draw(bws) + draw(tokens)
        if draw(st.booleans()):
            out += draw(bws) + b"=" + draw(bws) + draw(st.one_of(tokens, quotedStrings))
    return out


@st.composite
def chunkedBodies(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A valid chunked body and the data it carries."""
    chunks = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=5))
    body = b""
    for data in chunks:
        size = draw(st.sampled_from([b"%x", b"%X", b"0%x", b"000%x"])) % len(data)
        body += size + draw(chunkExtensions()) + b"\r\n" + data + b"\r\n"
    body += b"0" * draw(st.integers(1, 3)) + draw(chunkExtensions()) + b"\r\n"
    for line, _ in draw(st.lists(fields(), max_size=3)):
        body += line + b"\r\n"
    return body + b"\r\n", b"".join(chunks)


# -- arbitrary and mutated bytes ---------------------------------------------------

PIECES = [
    b"\r\n", b"\r", b"\n", b" ", b"\t", b"\x00", b"\x0b", b"\x0c", b"\x01", b"\x7f", b"\x80", b"\xff",
    b"#", b"%", b"%4", b":", b";", b"=", b",", b'"', b"\\", b"/", b"?", b"[", b"|", b"0", b"a", b"F",
    b"-", b"+", b"ffffffffffffffff", b"8000000000000000", b"\r\n\r\n", b"HTTP/1.1", b"chunked",
    b"\r\nTransfer-Encoding: chunked", b"\r\nContent-Length: 5", b"\r\nContent-Length: 6",
]


def anyOf(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Mostly mutated valid messages, some arbitrary bytes."""
    return st.one_of(mutated(valid, PIECES), mutated(valid, PIECES), mutated(valid, PIECES), st.binary(max_size=80))


requestHeadBytes = requestHeads().map(lambda pair: pair[0])
responseHeadBytes = responseHeads().map(lambda pair: pair[0])
cuts = st.lists(st.integers(0, 2000), max_size=8)


# -- framing helpers ------------------------------------------------------------------

FRAMING_FIELDS = [
    (name, value)
    for name in (b"Content-Length", b"content-length", b"Transfer-Encoding", b"TRANSFER-ENCODING")
    for value in (
        b"5", b"05", b"0", b"5, 5", b"\x0b5", b"5\x0c", b"-1", b"+5", b"0x5", b"1_0", b"99999999999999999999",
        b"", b"chunked", b"CHUNKED", b"gzip, chunked", b"chunked, chunked", b"chunked,", b",chunked",
        b"gzip", b"identity", b"chunked;q=1", b"g@zip, chunked", b"\x0bchunked", b"chunked\x0c",
        b"gzip;level=\"9\" , chunked", b"chunked, gzip",
    )
]


@st.composite
def framingHeads(draw: st.DrawFn) -> bytes:
    """A request head with a few framing fields, some of them odd."""
    head = draw(requestHeadBytes)
    for name, value in draw(st.lists(st.sampled_from(FRAMING_FIELDS), max_size=3)):
        head += b"\r\n" + name + b": " + value
    return head


def frame(stream: bytes, at: list[int]) -> tuple[str, int]:
    """
    Run a L{ChunkedFramer} over C{stream} cut at C{at}: C{("done", end)},
    C{("more", len)} or C{("bad", -1)}.
    """
    framer = ChunkedFramer()
    consumed = 0
    try:
        for piece in splitAt(stream, at):
            n = framer.feed(piece)
            assert 0 <= n <= len(piece), (n, piece)
            consumed += n
            if n < len(piece):
                assert framer.done
            if framer.done:
                return "done", consumed
    except BadMessage:
        return "bad", -1
    assert consumed == len(stream)
    return "more", consumed


def dechunk(stream: bytes, at: list[int]) -> bytes:
    """The data L{ChunkedFramer} in decode mode takes from C{stream} cut at C{at}."""
    framer = ChunkedFramer(decode=True)
    for piece in splitAt(stream, at):
        if framer.done:
            break
        framer.feed(piece)
    assert framer.pieces is not None
    return b"".join(framer.pieces)


# -- the tests --------------------------------------------------------------------------


requestHeadInputs = anyOf(requestHeadBytes)
responseHeadInputs = anyOf(responseHeadBytes)
framingInputs = st.tuples(framingHeads(), st.booleans())
chunkedInputs = anyOf(chunkedBodies().map(lambda pair: pair[0]))


class RequestHeadTests(SynchronousTestCase):
    """L{parseRequestHead} reads RFC 9112 request heads and nothing else."""

    def assertAcceptsOnlyGrammar(self, head: bytes, allow: frozenset[str]) -> None:
        """If lbkit accepts C{head}, the reference grammar does, with the same meaning."""
        try:
            request = parseRequestHead(head)
        except BadMessage:
            return
        try:
            model = grammar.requestHead(head, allow)
        except Refused as e:
            self.fail(f"lbkit accepted {head!r}, which the grammar refuses: {e}")
        self.assertEqual((request.method, request.uri, request.version, [tuple(h) for h in request.headers]), model)

    @_SETTINGS
    @given(requestHeads())
    def test_roundTrip(self, pair: tuple[bytes, grammar.Head]) -> None:
        """Every valid request head parses to exactly the method, target, version and fields sent."""
        head, (method, target, version, headers) = pair
        request = parseRequestHead(head)
        self.assertEqual(
            (request.method, request.uri, request.version, [tuple(h) for h in request.headers]),
            (method, target, version, headers),
        )
        path, _, query = target.partition(b"?")
        self.assertEqual((request.path, request.query), (path, query))
        self.assertEqual(grammar.requestHead(head), (method, target, version, headers))

    @_SETTINGS
    @given(requestHeadInputs)
    def test_onlyBadMessage(self, head: bytes) -> None:
        """Any bytes give a request or BadMessage (400, 431 or 505), never another exception."""
        try:
            request = parseRequestHead(head)
            bodyLength(request.headers, False)
        except BadMessage as e:
            self.assertIn(e.status, (400, 431, 505))

    @_SETTINGS
    @given(requestHeadInputs)
    def test_acceptsOnlyGrammar(self, head: bytes) -> None:
        """What lbkit accepts, RFC 9112 accepts (allowing only the leniencies known today)."""
        self.assertAcceptsOnlyGrammar(head, TODAY)

    test_strictTargetFragment = strictProperty(
        requestHeadInputs, "assertAcceptsOnlyGrammar",
        "Refuses a '#' in the request target (a fragment is never sent, RFC 9112 3.2).",
        b"GET /a#b HTTP/1.1\r\nHost: a", b"GET http://a/#b HTTP/1.1",
    )
    test_strictTargetObsText = strictProperty(
        requestHeadInputs, "assertAcceptsOnlyGrammar",
        "Refuses bytes >= 0x80 in the request target (RFC 3986 has no such characters).",
        b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a", b"GET http://\xc3\xa9/ HTTP/1.1",
    )
    test_strictTargetUnwise = strictTodo(
        requestHeadInputs, "assertAcceptsOnlyGrammar", "target-unwise",
        "documented leniency, as HAProxy: characters RFC 3986 excludes are accepted in the request target",
        b"GET /a|b HTTP/1.1", b'GET /a"b HTTP/1.1', b"GET /{x} HTTP/1.1", b"GET /a[1] HTTP/1.1",
    )
    test_strictTargetPercent = strictTodo(
        requestHeadInputs, "assertAcceptsOnlyGrammar", "target-pct",
        "documented leniency, as HAProxy: malformed percent-encoding is accepted in the request target",
        b"GET /a%zz HTTP/1.1", b"GET /a% HTTP/1.1",
    )
    test_strictTargetForm = strictProperty(
        requestHeadInputs, "assertAcceptsOnlyGrammar",
        "Refuses a request target in none of the four forms of RFC 9112 3.2 (origin, absolute, "
        "authority, asterisk), and an http(s) URI without a host, with userinfo or naming another "
        "host than the Host line.",
        b"GET a HTTP/1.1", b"GET ?x HTTP/1.1", b"GET @ HTTP/1.1", b"GET http:///x HTTP/1.1",
        b"GET http://u@a/ HTTP/1.1", b"GET http://a/ HTTP/1.1\r\nHost: b", b"GET http://a:80/ HTTP/1.1\r\nHost: a:8080",
    )
    test_strictFieldControls = strictTodo(
        requestHeadInputs, "assertAcceptsOnlyGrammar", "field-ctl",
        "documented leniency, as HAProxy: control characters other than HTAB, CR, LF and NUL are "
        "accepted in field values",
        b"GET / HTTP/1.1\r\nX: a\x01b", b"GET / HTTP/1.1\r\nX: \x0bchunked", b"GET / HTTP/1.1\r\nX: a\x7f",
    )
    test_strictHostRepeat = strictTodo(
        requestHeadInputs, "assertAcceptsOnlyGrammar", "host-repeat",
        "documented leniency, as HAProxy: identical repeated Host lines are merged into the first",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: A",
    )


class ResponseHeadTests(SynchronousTestCase):
    """L{parseResponseHead} reads RFC 9112 response heads and nothing else."""

    def assertAcceptsOnlyGrammar(self, head: bytes, allow: frozenset[str]) -> None:
        """If lbkit accepts C{head}, the reference grammar does, with the same meaning."""
        try:
            response = parseResponseHead(head)
        except BadMessage:
            return
        try:
            model = grammar.responseHead(head, allow)
        except Refused as e:
            self.fail(f"lbkit accepted {head!r}, which the grammar refuses: {e}")
        self.assertEqual(
            (response.version, response.code, response.reason, [tuple(h) for h in response.headers]), model
        )

    @_SETTINGS
    @given(responseHeads())
    def test_roundTrip(self, pair: tuple[bytes, tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]]) -> None:
        """Every valid response head parses to exactly the version, status, reason and fields sent."""
        head, model = pair
        response = parseResponseHead(head)
        self.assertEqual(
            (response.version, response.code, response.reason, [tuple(h) for h in response.headers]), model
        )
        self.assertEqual(grammar.responseHead(head), model)

    @_SETTINGS
    @given(responseHeadInputs)
    def test_onlyBadMessage(self, head: bytes) -> None:
        """Any bytes give a response or BadMessage (502), never another exception."""
        try:
            response = parseResponseHead(head)
            bodyLength(response.headers, True)
        except BadMessage as e:
            self.assertEqual(e.status, 502)

    @_SETTINGS
    @given(responseHeadInputs)
    def test_acceptsOnlyGrammar(self, head: bytes) -> None:
        """What lbkit accepts, RFC 9112 accepts (allowing only the leniencies known today)."""
        self.assertAcceptsOnlyGrammar(head, TODAY)

    test_strictStatusVersion = strictProperty(
        responseHeadInputs, "assertAcceptsOnlyGrammar",
        "Refuses a status line whose version is not 'HTTP/' digit '.' digit (RFC 9112 2.3).",
        b"HTTP/1.x 200 OK", b"HTTP/1.1\x00 200 OK", b"HTTP/1.\r1 100 ", b"HTTP/1.10 200 OK", b"HTTP/1. 200 OK",
    )
    test_strictReasonPhrase = strictProperty(
        responseHeadInputs, "assertAcceptsOnlyGrammar",
        "Refuses control characters, a bare CR or a bare LF in the reason phrase.",
        b"HTTP/1.1 200 OK\nContent-Length: 0\r\nContent-Length: 5", b"HTTP/1.1 200 O\rK", b"HTTP/1.1 200 \x00",
        b"HTTP/1.1 100 \n0:", b"HTTP/1.1 200 O\x7fK",
    )
    test_strictStatusSpace = strictTodo(
        responseHeadInputs, "assertAcceptsOnlyGrammar", "status-no-sp",
        "documented leniency, as HAProxy: a status line without SP after the code is accepted",
        b"HTTP/1.1 200",
    )
    test_strictFieldNameLF = strictProperty(
        responseHeadInputs, "assertAcceptsOnlyGrammar",
        "Refuses a field name ending in a bare LF in a response head.",
        b"HTTP/1.1 200 OK\r\nContent-Length\n: 5", b"HTTP/1.0 404 \r\nTransfer-Encodin\n:+ chunked",
        b"HTTP/1.1 200 OK\r\nX: 1\r\nContent-Length\n: 5",
    )
    test_strictFieldControls = strictTodo(
        responseHeadInputs, "assertAcceptsOnlyGrammar", "field-ctl",
        "documented leniency, as HAProxy: control characters other than HTAB, CR, LF and NUL are "
        "accepted in field values",
        b"HTTP/1.1 200 OK\r\nX: a\x01b",
    )


class BodyLengthTests(SynchronousTestCase):
    """L{bodyLength} frames a body as RFC 9112 section 6.3 says."""

    def assertFramesAsGrammar(self, message: tuple[bytes, bool], allow: frozenset[str]) -> None:
        """If lbkit frames the message of this head, the reference frames it the same way."""
        head, response = message
        try:
            headers = parseRequestHead(head).headers
            framing = bodyLength(headers, response)
        except BadMessage:
            return
        if response and framing == UNTIL_CLOSE:
            return  # reading until close is always safe for a response
        try:
            expected = grammar.bodyFraming([(n, v) for n, v in headers], response, allow)
        except Refused as e:
            self.fail(f"lbkit framed {head!r} as {framing}, which the grammar refuses: {e}")
        self.assertEqual(framing, expected)

    @_SETTINGS
    @given(framingInputs)
    def test_framesAsGrammar(self, message: tuple[bytes, bool]) -> None:
        """Content-Length and Transfer-Encoding mean what RFC 9112 says (allowing today's leniencies)."""
        self.assertFramesAsGrammar(message, TODAY)

    def test_constants(self) -> None:
        """The reference's framing constants are lbkit's."""
        self.assertEqual((grammar.CHUNKED, grammar.UNTIL_CLOSE), (CHUNKED, UNTIL_CLOSE))

    test_strictChunkedTwice = strictProperty(
        framingInputs, "assertFramesAsGrammar", "Refuses Transfer-Encoding naming chunked more than once (RFC 9112 6.1).",
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked", False),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked", False),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked", True),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked", True),
    )
    test_strictTransferCodingSyntax = strictTodo(
        framingInputs, "assertFramesAsGrammar", "te-syntax",
        "documented leniency: in a response, a transfer-coding that is not a token is accepted "
        "before a final chunked, which alone decides the framing (a request may only say chunked)",
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: g@zip, chunked", False),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: g@zip, chunked", True),
    )
    test_strictFramingWhitespace = strictProperty(
        framingInputs, "assertFramesAsGrammar",
        "Reads VT, FF (or other ASCII whitespace besides SP and HTAB) around a Content-Length or "
        "Transfer-Encoding value as part of it: 'Transfer-Encoding: \\x0bchunked' is not chunked.",
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: \x0bchunked", False),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\x0c", False),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: \x0bchunked", True),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\x0c", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\x0c", True),
    )


class ChunkedFramerTests(SynchronousTestCase):
    """L{ChunkedFramer} finds the end of RFC 9112 chunked bodies and refuses others."""

    def assertAcceptsOnlyGrammar(self, stream: bytes, allow: frozenset[str]) -> None:
        """
        If lbkit ends a chunked body in C{stream}, the reference ends it at
        the same byte; if lbkit waits for more, so does the reference.
        """
        outcome, end = frame(stream, [])
        if outcome == "bad":
            return
        try:
            expectedEnd, data, _ = grammar.chunkedBody(stream, allow)
        except Incomplete:
            self.assertEqual(outcome, "more", f"lbkit ended {stream!r} at {end}, the grammar wants more")
            return
        except Refused as e:
            self.fail(f"lbkit accepted the chunked body {stream[:end]!r} ({outcome}); the grammar: {e}")
        self.assertEqual((outcome, end), ("done", expectedEnd))
        self.assertEqual(dechunk(stream[:end], []), data)

    @_SETTINGS
    @given(chunkedBodies(), st.binary(max_size=20), cuts)
    def test_roundTrip(self, pair: tuple[bytes, bytes], rest: bytes, at: list[int]) -> None:
        """A valid chunked body ends exactly at its last byte, however it is split."""
        body, data = pair
        self.assertEqual(frame(body + rest, at), ("done", len(body)))
        self.assertEqual(grammar.chunkedBody(body + rest)[:2], (len(body), data))

    @_SETTINGS
    @given(chunkedBodies(), cuts)
    def test_dechunkerRoundTrip(self, pair: tuple[bytes, bytes], at: list[int]) -> None:
        """The HTTP/2 side's dechunker gives back exactly the data of a valid body, however it is split."""
        body, data = pair
        self.assertEqual(dechunk(body, at), data)

    @_SETTINGS
    @given(chunkedInputs, cuts)
    def test_onlyBadMessageAnySplit(self, stream: bytes, at: list[int]) -> None:
        """Any bytes, split anywhere, give the same outcome as in one piece, and only BadMessage."""
        self.assertEqual(frame(stream, at), frame(stream, []))

    @_SETTINGS
    @given(chunkedInputs)
    def test_acceptsOnlyGrammar(self, stream: bytes) -> None:
        """What the framer accepts, RFC 9112 accepts (allowing only the leniencies known today)."""
        self.assertAcceptsOnlyGrammar(stream, TODAY)

    def test_longLineAnySplit(self) -> None:
        """A chunk line over the 4 KiB limit is refused whether it arrives whole or in pieces."""
        stream = b"5;" + b"x" * 5000 + b"\r\nhello\r\n0\r\n\r\n"
        self.assertEqual(frame(stream, list(range(100, 5000, 100))), ("bad", -1))
        self.assertEqual(frame(stream, []), ("bad", -1))
        limit = b"5;" + b"x" * 4092 + b"\r\nhello\r\n0\r\n\r\n"  # a 4096-byte line: the longest
        self.assertEqual(frame(limit, list(range(100, 5000, 100))), ("done", len(limit)))
        self.assertEqual(frame(limit, []), ("done", len(limit)))

    test_strictSizeOverflow = strictProperty(
        chunkedInputs, "assertAcceptsOnlyGrammar",
        "Refuses a chunk size of 2**63 or more (does not fit a signed 64-bit integer).",
        b"8000000000000000\r\n", b"ffffffffffffffff\r\n",
    )
    test_strictExtensionSyntax = strictTodo(
        chunkedInputs, "assertAcceptsOnlyGrammar", "chunk-ext-syntax",
        "documented leniency, as HAProxy: chunk extensions are not checked against their grammar "
        "(only for control characters)",
        b"1;a b\r\nx\r\n0\r\n\r\n", b"1 \r\nx\r\n0\r\n\r\n", b"0;\x01\r\n\r\n",
    )
    test_strictExtensionCR = strictProperty(
        chunkedInputs, "assertAcceptsOnlyGrammar", "Refuses a bare CR inside a chunk extension.",
        b"1;a\rb\r\nx\r\n0\r\n\r\n",
    )
    test_strictTrailers = strictProperty(
        chunkedInputs, "assertAcceptsOnlyGrammar", "Refuses a trailer line that is not a field line (token ':' value).",
        b"0\r\nnot a field\r\n\r\n", b"0\r\n: x\r\n\r\n", b"0\r\nX\r: y\r\n\r\n",
    )
