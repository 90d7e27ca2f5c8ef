"""
Tests for L{lbkit.http._parse} and L{lbkit.http._body}: message heads,
body framing and the chunked framer, with no I/O.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lbkit.http._body import CHUNKED, MAX_CHUNK, UNTIL_CLOSE, BodyReader, ChunkedFramer, bodyLength
from lbkit.http._parse import (
    MAX_HEAD,
    MAX_HEADERS,
    BadMessage,
    HeadReader,
    parseRequestHead,
    parseResponseHead,
)


class RequestHeadTests(SynchronousTestCase):
    """
    L{parseRequestHead} parses good heads and rejects bad ones with 400 or
    505.
    """

    def assertBad(self, head: bytes, status: int = 400) -> None:
        """Parsing C{head} raises L{BadMessage} with C{status}."""
        e = self.assertRaises(BadMessage, parseRequestHead, head)
        self.assertEqual(e.status, status)

    def test_requestLine(self) -> None:
        """The method, target, path, query and version are split out."""
        r = parseRequestHead(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com")
        self.assertEqual(
            (r.method, r.uri, r.path, r.query, r.version),
            (b"GET", b"/a/b?x=1&y=2", b"/a/b", b"x=1&y=2", b"HTTP/1.1"),
        )

    def test_headersInOrder(self) -> None:
        """Headers keep their order and the case of their names; values are trimmed."""
        r = parseRequestHead(b"GET / HTTP/1.1\r\nHost:  a \r\nX-One: 1\r\nx-one: 2")
        self.assertEqual(r.headers, [[b"Host", b"a"], [b"X-One", b"1"], [b"x-one", b"2"]])

    def test_headerLookup(self) -> None:
        """header() finds the first value case-insensitively; headerValues() all."""
        r = parseRequestHead(b"GET / HTTP/1.1\r\nX-One: 1\r\nx-one: 2")
        self.assertEqual(r.header(b"X-ONE"), b"1")
        self.assertEqual(r.headerValues(b"x-One"), [b"1", b"2"])
        self.assertIsNone(r.header(b"missing"))

    def test_headerEditing(self) -> None:
        """addHeader, setHeader and removeHeader change the headers and lookups."""
        r = parseRequestHead(b"GET / HTTP/1.1\r\nA: 1\r\na: 2\r\nB: 3")
        self.assertEqual(r.header(b"a"), b"1")
        r.setHeader(b"A", b"9")
        self.assertEqual(r.headerValues(b"a"), [b"9"])
        r.addHeader(b"C", b"4")
        self.assertEqual(r.header(b"c"), b"4")
        r.removeHeader(b"b")
        self.assertEqual(r.headers, [[b"A", b"9"], [b"C", b"4"]])

    def test_host(self) -> None:
        """host is the Host header lower-cased without its port."""
        self.assertEqual(parseRequestHead(b"GET / HTTP/1.1\r\nHost: WWW.Example.com:8080").host, b"www.example.com")
        self.assertEqual(parseRequestHead(b"GET / HTTP/1.1\r\nHost: [::1]:80").host, b"[::1]")
        self.assertIsNone(parseRequestHead(b"GET / HTTP/1.1").host)

    def test_http10(self) -> None:
        """HTTP/1.0 requests are accepted."""
        self.assertEqual(parseRequestHead(b"GET / HTTP/1.0").version, b"HTTP/1.0")

    def test_repr(self) -> None:
        """A request's repr shows its method and target."""
        self.assertEqual(repr(parseRequestHead(b"POST /x HTTP/1.1")), "<Request POST /x>")

    def test_malformedRequestLine(self) -> None:
        """A request line without exactly three parts is a 400."""
        self.assertBad(b"GET /")
        self.assertBad(b"GET  / HTTP/1.1")
        self.assertBad(b"GET / HTTP/1.1 extra")
        self.assertBad(b"")

    def test_badMethod(self) -> None:
        """A method that is not a token is a 400."""
        self.assertBad(b"G(ET / HTTP/1.1")

    def test_badVersion(self) -> None:
        """HTTP/2.0 and HTTP/0.9 are 505; anything else not a version is 400."""
        self.assertBad(b"GET / HTTP/2.0", 505)
        self.assertBad(b"GET / HTTP/0.9", 505)
        self.assertBad(b"GET / FOO/1.1")
        self.assertBad(b"GET / http/1.1")

    def test_badTarget(self) -> None:
        """A target with control characters is a 400."""
        self.assertBad(b"GET /a\x00b HTTP/1.1")
        self.assertBad(b"GET /a\x7fb HTTP/1.1")

    def test_bareLF(self) -> None:
        """A bare LF in the head is a 400."""
        self.assertBad(b"GET / HTTP/1.1\r\nA: 1\nB: 2")
        self.assertBad(b"GET / HTTP/1.1\nHost: a")

    def test_targetCharacters(self) -> None:
        """A target with a fragment or a byte of 0x80 or more is a 400."""
        self.assertBad(b"GET /a#b HTTP/1.1")
        self.assertBad(b"GET /a\x80 HTTP/1.1\r\nHost: a")
        self.assertBad(b"GET /\xff HTTP/1.1")

    def test_targetForms(self) -> None:
        """Origin-form, '*', a CONNECT authority and http(s) URIs are accepted; other targets are a 400."""
        self.assertEqual(parseRequestHead(b"OPTIONS * HTTP/1.1\r\nHost: a").uri, b"*")
        self.assertEqual(parseRequestHead(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443").uri, b"a:443")
        for target in [b"a/b", b"?q", b"ftp://a/b", b"http:/a", b"a.example:80"]:
            self.assertBad(b"GET " + target + b" HTTP/1.1\r\nHost: a")

    def test_absoluteForm(self) -> None:
        """An absolute-form target is reduced to its path and query, its authority becoming the Host."""
        r = parseRequestHead(b"GET http://Admin.Example/secret?x=1 HTTP/1.1\r\nX: 1")
        self.assertEqual((r.uri, r.path, r.query, r.host), (b"/secret?x=1", b"/secret", b"x=1", b"admin.example"))
        self.assertEqual(r.headers, [[b"Host", b"Admin.Example"], [b"X", b"1"]])
        self.assertEqual(parseRequestHead(b"GET HTTPS://[::1]:8443 HTTP/1.0").uri, b"/")
        self.assertEqual(parseRequestHead(b"GET http://a?q HTTP/1.1").uri, b"/?q")
        r = parseRequestHead(b"GET http://a.example:80/x HTTP/1.1\r\nHost: A.example")
        self.assertEqual((r.uri, r.headers), (b"/x", [[b"Host", b"A.example"]]))
        self.assertEqual(parseRequestHead(b"GET https://a/x HTTP/1.1\r\nHost: a:443").uri, b"/x")
        self.assertEqual(parseRequestHead(b"GET http://a:/x HTTP/1.1\r\nHost: a").uri, b"/x")

    def test_absoluteFormOtherHost(self) -> None:
        """A Host that names another host than the absolute target, or another port, is a 400."""
        self.assertBad(b"GET http://admin.example/ HTTP/1.1\r\nHost: public.example")
        self.assertBad(b"GET http://a:8080/ HTTP/1.1\r\nHost: a")
        self.assertBad(b"GET https://a:80/ HTTP/1.1\r\nHost: a")
        self.assertBad(b"GET http://a/ HTTP/1.1\r\nHost: ")

    def test_absoluteFormBadAuthority(self) -> None:
        """An empty authority, userinfo or a port that is not a number is a 400."""
        for target in [b"http:///x", b"http://u@a/x", b"http://a:b@c/", b"http://a:x/", b"http://a b/"]:
            self.assertBad(b"GET " + target + b" HTTP/1.1")

    def test_duplicateHost(self) -> None:
        """Different Host headers are a 400; identical ones (in any case) are merged into the first."""
        self.assertBad(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b")
        self.assertBad(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a:80")
        r = parseRequestHead(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nHOST: A")
        self.assertEqual(r.headers, [[b"Host", b"a"], [b"X", b"1"]])

    def test_duplicateContentLength(self) -> None:
        """Different Content-Lengths are a 400; identical ones are merged into the first."""
        self.assertBad(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 05")
        r = parseRequestHead(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nHost: a\r\ncontent-length: 5")
        self.assertEqual(r.headers, [[b"Content-Length", b"5"], [b"Host", b"a"]])

    def test_transferEncodingHTTP10(self) -> None:
        """An HTTP/1.0 request with Transfer-Encoding is a 400 (RFC 9112 section 6.1)."""
        self.assertBad(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked")

    def test_headerCount(self) -> None:
        """MAX_HEADERS header lines are accepted; one more is a 431."""
        self.assertEqual(len(parseRequestHead(b"GET / HTTP/1.1" + b"\r\nX: 1" * MAX_HEADERS).headers), MAX_HEADERS)
        self.assertBad(b"GET / HTTP/1.1" + b"\r\nX: 1" * (MAX_HEADERS + 1), 431)
        self.assertBad(b"GET / HTTP/1.1" + b"\r\nX : 1" * (MAX_HEADERS + 1))  # malformed first

    def test_badHeaders(self) -> None:
        """A header without a colon, with a space before the colon, or folded is a 400."""
        self.assertBad(b"GET / HTTP/1.1\r\nNoColon")
        self.assertBad(b"GET / HTTP/1.1\r\nHost : a")
        self.assertBad(b"GET / HTTP/1.1\r\n: empty")
        self.assertBad(b"GET / HTTP/1.1\r\nA: 1\r\n  folded")
        self.assertBad(b"GET / HTTP/1.1\r\nA: x\x00y")
        self.assertBad(b"GET / HTTP/1.1\r\nA: x\ry")


class ResponseHeadTests(SynchronousTestCase):
    """
    L{parseResponseHead} parses status lines and headers; bad ones are 502.
    """

    def test_statusLine(self) -> None:
        """Version, code, reason and headers are split out."""
        r = parseResponseHead(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0")
        self.assertEqual((r.version, r.code, r.reason), (b"HTTP/1.1", 404, b"Not Found"))
        self.assertEqual(r.header(b"content-length"), b"0")
        self.assertEqual(r.headerValues(b"CONTENT-LENGTH"), [b"0"])
        self.assertIsNone(r.header(b"x"))

    def test_noReason(self) -> None:
        """A status line without a reason phrase is accepted."""
        r = parseResponseHead(b"HTTP/1.0 200")
        self.assertEqual((r.code, r.reason), (200, b""))

    def test_bad(self) -> None:
        """A malformed status line or header is a 502."""
        for head in [b"HTTP/1.1 20 OK", b"HTTP/2 200 OK", b"garbage", b"HTTP/1.1 abc OK", b"HTTP/1.1 200 OK\r\nbad",
                     b"HTTP/1.x 200 OK", b"HTTP/1.\r1 200 OK", b"HTTP/1.10 200 OK", b"HTTP/2.0 200 OK", b"HTTP/0.9 200 OK"]:
            e = self.assertRaises(BadMessage, parseResponseHead, head)
            self.assertEqual(e.status, 502, head)


class BodyLengthTests(SynchronousTestCase):
    """
    L{bodyLength} follows RFC 9112 section 6.3.
    """

    def test_contentLength(self) -> None:
        """Content-Length gives a byte count."""
        self.assertEqual(bodyLength([[b"Content-Length", b"42"]], False), 42)

    def test_chunked(self) -> None:
        """A request's chunked coding, or a response's final one, means chunked framing."""
        self.assertEqual(bodyLength([[b"Transfer-Encoding", b"Chunked"]], False), CHUNKED)
        self.assertEqual(bodyLength([[b"Transfer-Encoding", b", chunked,"]], False), CHUNKED)
        self.assertEqual(bodyLength([[b"transfer-encoding", b"gzip"], [b"Transfer-Encoding", b"chunked"]], True), CHUNKED)
        self.assertEqual(bodyLength([[b"Transfer-Encoding", b"gzip, chunked"]], True), CHUNKED)

    def test_requestCodings(self) -> None:
        """A request Transfer-Encoding other than chunked alone, once, is rejected (as HAProxy does)."""
        for values in [
            [b"gzip, chunked"],
            [b"identity, chunked"],
            [b"chunked, chunked"],
            [b"chunked", b"chunked"],
            [b"gzip", b"chunked"],
            [b"chunked;x=1"],
            [b""],
            [b"\x0bchunked"],
        ]:
            e = self.assertRaises(BadMessage, bodyLength, [[b"Transfer-Encoding", v] for v in values], False)
            self.assertEqual(e.status, 400, values)

    def test_responseCodings(self) -> None:
        """A response naming chunked twice is a 502; one whose last coding has VT or FF around chunked lasts until close."""
        for values in [[b"chunked, chunked"], [b"chunked", b"chunked"], [b"chunked, gzip, chunked"]]:
            e = self.assertRaises(BadMessage, bodyLength, [[b"Transfer-Encoding", v] for v in values], True)
            self.assertEqual(e.status, 502, values)
        for value in [b"\x0bchunked", b"chunked\x0c", b"gzip, \x0cchunked"]:
            self.assertEqual(bodyLength([[b"Transfer-Encoding", value]], True), UNTIL_CLOSE, value)
        self.assertEqual(bodyLength([[b"Transfer-Encoding", b"gzip ,\tchunked "]], True), CHUNKED)

    def test_neither(self) -> None:
        """Without either header a request has no body and a response lasts until close."""
        self.assertEqual(bodyLength([], False), 0)
        self.assertEqual(bodyLength([], True), UNTIL_CLOSE)

    def test_teAndCl(self) -> None:
        """Transfer-Encoding with Content-Length is rejected (request smuggling)."""
        headers = [[b"Content-Length", b"5"], [b"Transfer-Encoding", b"chunked"]]
        self.assertEqual(self.assertRaises(BadMessage, bodyLength, headers, False).status, 400)
        self.assertEqual(self.assertRaises(BadMessage, bodyLength, headers, True).status, 502)

    def test_multipleContentLength(self) -> None:
        """Repeated equal Content-Lengths are accepted; different ones rejected."""
        self.assertEqual(bodyLength([[b"Content-Length", b"5"], [b"content-length", b"5"]], False), 5)
        self.assertRaises(BadMessage, bodyLength, [[b"Content-Length", b"5"], [b"Content-Length", b"6"]], False)

    def test_invalidContentLength(self) -> None:
        """A Content-Length that is not a plain number is rejected."""
        for value in [b"-1", b"+5", b"0x10", b"5, 5", b"", b"1" * 19, b"\xd9\xa3", b"\x0b5", b"5\x0c", b"5\x1c"]:
            self.assertRaises(BadMessage, bodyLength, [[b"Content-Length", value]], False)

    def test_requestWithoutFinalChunked(self) -> None:
        """A request whose last coding is not chunked is rejected; a response reads until close."""
        self.assertRaises(BadMessage, bodyLength, [[b"Transfer-Encoding", b"gzip"]], False)
        self.assertEqual(bodyLength([[b"Transfer-Encoding", b"gzip"]], True), UNTIL_CLOSE)


def chunk(data: bytes) -> bytes:
    """C{data} as one chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class ChunkedFramerTests(SynchronousTestCase):
    """
    L{ChunkedFramer} finds the end of a chunked body, however it is split.
    """

    def test_simple(self) -> None:
        """A whole body in one piece is consumed up to its end; the rest is left."""
        body = chunk(b"hello") + chunk(b" world") + b"0\r\n\r\n"
        framer = ChunkedFramer()
        self.assertEqual(framer.feed(body + b"NEXT"), len(body))
        self.assertTrue(framer.done)

    def test_extensionsAndTrailers(self) -> None:
        """Chunk extensions and trailer fields are part of the body."""
        body = b"5;name=value\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"
        framer = ChunkedFramer()
        self.assertEqual(framer.feed(body), len(body))
        self.assertTrue(framer.done)

    def test_notDoneYet(self) -> None:
        """A body missing its last CRLF is not done."""
        framer = ChunkedFramer()
        self.assertEqual(framer.feed(b"0\r\n"), 3)
        self.assertFalse(framer.done)

    def test_badSize(self) -> None:
        """Chunk sizes that are not plain hex digits are rejected."""
        for size in [b"x", b"", b"-1", b"+5", b"0x5", b"1_0", b" ", b"1" * 17, b"5 x", b"\x0b5"]:
            self.assertRaises(BadMessage, ChunkedFramer().feed, size + b"\r\nhello\r\n0\r\n\r\n")

    def test_sizeLimit(self) -> None:
        """A chunk size up to MAX_CHUNK (2**52 - 1) is accepted; a larger one is rejected."""
        framer = ChunkedFramer()
        piece = b"%x\r\nhello" % MAX_CHUNK
        self.assertEqual(framer.feed(piece), len(piece))
        self.assertFalse(framer.done)
        for size in [b"%x" % (MAX_CHUNK + 1), b"ffffffffffffffff", b"8000000000000000"]:
            self.assertRaises(BadMessage, ChunkedFramer().feed, size + b"\r\nhello\r\n0\r\n\r\n")

    def test_extensions(self) -> None:
        """Extensions may hold HTAB and quotes but no other control character (a bare CR among them)."""
        body = b"5;a=\"b c\"\t; d\r\nhello\r\n0;e\r\n\r\n"
        self.assertEqual(ChunkedFramer().feed(body), len(body))
        for ext in [b";a\rb", b";a\x00", b";\x1b", b";a\x7f"]:
            self.assertRaises(BadMessage, ChunkedFramer().feed, b"5" + ext + b"\r\nhello\r\n0\r\n\r\n")

    def test_badTrailers(self) -> None:
        """A trailer line that is not a well-formed header field is rejected."""
        for trailer in [b"bad trailer", b"X-T: a\rb", b" folded", b"X T: 1", b": 1", b"X-T: a\x00"]:
            self.assertRaises(BadMessage, ChunkedFramer().feed, b"5\r\nhello\r\n0\r\nX-A: 1\r\n" + trailer + b"\r\n\r\n")

    def test_missingCRLFAfterData(self) -> None:
        """Data longer than its chunk size is rejected."""
        self.assertRaises(BadMessage, ChunkedFramer().feed, b"3\r\nhello\r\n0\r\n\r\n")

    def test_bareLF(self) -> None:
        """Chunk lines must end with CRLF."""
        self.assertRaises(BadMessage, ChunkedFramer().feed, b"5\nhello\r\n0\r\n\r\n")
        self.assertRaises(BadMessage, ChunkedFramer().feed, b"5\r\nhello\n0\r\n\r\n")

    def test_longLine(self) -> None:
        """A chunk line that never ends is rejected past 4 KiB."""
        framer = ChunkedFramer()
        framer.feed(b"5;" + b"x" * 4000)
        self.assertRaises(BadMessage, framer.feed, b"x" * 200)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.binary(max_size=40), max_size=6),
        st.lists(st.integers(min_value=0, max_value=400), max_size=12),
        st.binary(max_size=20),
    )
    def test_anySplit(self, chunks: list[bytes], cuts: list[int], rest: bytes) -> None:
        """Split anywhere, the framer accepts exactly the body's bytes."""
        body = b"".join(chunk(c) for c in chunks if c) + b"0\r\nT: 1\r\n\r\n"
        stream = body + rest
        points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
        framer = ChunkedFramer()
        consumed = 0
        for a, b in zip(points, points[1:], strict=False):
            if framer.done:
                break
            piece = stream[a:b]
            n = framer.feed(piece)
            consumed += n
            if n < len(piece):
                self.assertTrue(framer.done)
                break
        self.assertTrue(framer.done)
        self.assertEqual(consumed, len(body))


    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=6), st.lists(st.integers(min_value=0, max_value=400), max_size=12))
    def test_decodeAnySplit(self, chunks: list[bytes], cuts: list[int]) -> None:
        """In decode mode, the data of the chunks comes out whole, however the body is split."""
        body = b"".join(chunk(c) for c in chunks) + b"0\r\nX-T: 1\r\n\r\n"
        framer = ChunkedFramer(decode=True)
        bounds = [0] + sorted(min(c, len(body)) for c in cuts) + [len(body)]
        for a, b in zip(bounds, bounds[1:], strict=False):
            framer.feed(body[a:b])
        self.assertTrue(framer.done)
        self.assertEqual(b"".join(framer.pieces or []), b"".join(chunks))


class HeadReaderTests(SynchronousTestCase):
    """
    L{HeadReader} collects a head however its bytes arrive, with one size
    limit.
    """

    def test_whole(self) -> None:
        """A head and what follows it come back apart; leading empty lines are skipped."""
        reader = HeadReader()
        self.assertEqual(reader.feed(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nBODY"), (b"GET / HTTP/1.1\r\nHost: a", b"BODY"))
        self.assertEqual(reader.buffered, b"")

    def test_split(self) -> None:
        """Bytes of an incomplete head are kept until its blank line arrives."""
        reader = HeadReader()
        self.assertIsNone(reader.feed(b"GET / HTTP/1.1\r\nHo"))
        self.assertIsNone(reader.feed(b"st: a\r\n\r"))
        self.assertEqual(reader.feed(b"\nX"), (b"GET / HTTP/1.1\r\nHost: a", b"X"))

    def test_oneLimit(self) -> None:
        """A head one byte over MAX_HEAD is refused whether it comes in one read or byte by byte."""
        start = b"GET / HTTP/1.1\r\nX: "
        head = start + b"p" * (MAX_HEAD - len(start) - 3) + b"\r\n\r\n"
        self.assertEqual(len(head), MAX_HEAD + 1)
        for request, status in [(True, 431), (False, 502)]:
            e = self.assertRaises(BadMessage, HeadReader(request).feed, head)
            self.assertEqual(e.status, status)
            reader = HeadReader(request)
            with self.assertRaises(BadMessage):
                for i in range(0, len(head), 4096):
                    reader.feed(head[i : i + 4096])
            self.assertEqual(reader.buffered, b"")

    def test_bareLF(self) -> None:
        """A request head whose blank line follows a bare LF is refused at once."""
        for head in [b"GET / HTTP/1.1\nHost: a\n\n", b"GET / HTTP/1.1\r\nHost: a\n\r\n"]:
            e = self.assertRaises(BadMessage, HeadReader().feed, head)
            self.assertEqual(e.status, 400)


class BodyReaderTests(SynchronousTestCase):
    """L{BodyReader} finds where a body of any framing ends."""

    def test_length(self) -> None:
        """A Content-Length body ends after its count; the bytes after it are not the body's."""
        reader = BodyReader(10)
        self.assertEqual((reader.feed(b"12345"), reader.done), (5, False))
        self.assertEqual((reader.feed(b"67890NEXT"), reader.done), (5, True))

    def test_chunked(self) -> None:
        """A chunked body ends after its last chunk and trailers."""
        reader = BodyReader(CHUNKED)
        body = chunk(b"hello") + b"0\r\n\r\n"
        self.assertEqual((reader.feed(body + b"NEXT"), reader.done), (len(body), True))

    def test_untilClose(self) -> None:
        """A body until close takes everything and never ends by itself."""
        reader = BodyReader(UNTIL_CLOSE)
        self.assertEqual((reader.feed(b"abc"), reader.done), (3, False))

    def test_restart(self) -> None:
        """start() reads a new body: none (length 0) is done at once."""
        reader = BodyReader(CHUNKED)
        reader.start(0)
        self.assertTrue(reader.done)
        reader.start(3)
        self.assertEqual((reader.feed(b"abcd"), reader.done), (3, True))


class ConnectTargetTests(SynchronousTestCase):
    """A CONNECT target is host:port naming what Host names (as HAProxy checks)."""

    def test_wellFormedConnectKept(self) -> None:
        """CONNECT host:port with a matching Host is parsed with its target as sent."""
        request = parseRequestHead(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443")
        self.assertEqual(request.uri, b"example.com:443")

    def test_malformedConnectRefused(self) -> None:
        """A CONNECT target without a port, with an empty port, a path, or another host than Host's is a 400."""
        for target, host in [
            (b"hostname", b"hostname"),
            (b"hostname:", b"hostname"),
            (b"/", b"hostname"),
            (b"hostname1:80", b"hostname2:80"),
            (b"hostname:80", b"hostname:443"),
        ]:
            with self.assertRaises(BadMessage, msg=target):
                parseRequestHead(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + host)
