"""
Property tests (hypothesis): the faster head parsing and writing of issue
11 (the parse's lower-cased names, the framing and C{Connection} decisions
made from them, the one-pass head writers) give what the code before gave
(L{tests.headsmodel}): the same messages, errors, framing, options and
bytes.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lbkit.http._body import bodyLength
from lbkit.http._headers import connectionTokens, requestHead, responseHead
from lbkit.http._parse import BadMessage, Request, Response, parseRequestHead, parseResponseHead
from tests import headsmodel as model
from tests.helpers import fuzzSettings
from tests.test_fuzz_http import (
    FRAMING_FIELDS,
    anyOf,
    fieldValues,
    framingHeads,
    requestHeadBytes,
    responseHeadBytes,
)

_SETTINGS = fuzzSettings()
_EXAMPLES: int = _SETTINGS.max_examples

#: Names that mean something to the head writers, and a few that do not.
NAMES = [
    b"Host", b"Connection", b"Keep-Alive", b"Proxy-Connection", b"Upgrade", b"TE", b"Trailer",
    b"Transfer-Encoding", b"Content-Length", b"Proxy-Authorization", b"X-Forwarded-For",
    b"X-Forwarded-Proto", b"X-Forwarded-Host", b"X-SSL-Client-DN", b"Close", b"Cookie", b"X-Foo",
]
HOSTS = [(name, value) for name in (b"Host", b"host", b"HOST") for value in (b"example.com", b"Example.COM", b"other.example", b"example.com:443")]
OPTIONS = [b"close", b"keep-alive", b"upgrade", b"Close", b" Keep-Alive ", b"host", b"content-length", b""]


@st.composite
def casedNames(draw: st.DrawFn) -> bytes:
    """One of L{NAMES} (or another token) in some mix of cases."""
    name = draw(st.one_of(st.sampled_from(NAMES), st.sampled_from(NAMES), st.text("abcXYZ-", min_size=1, max_size=6).map(str.encode)))
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return bytes(c ^ 0x20 if flip and chr(c).isalpha() else c for c, flip in zip(name, flips, strict=True))


@st.composite
def values(draw: st.DrawFn) -> bytes:
    """A value: a list of options and header names, a number, or any field value."""
    options = st.one_of(st.sampled_from(OPTIONS + NAMES), casedNames())
    return draw(st.one_of(
        st.lists(options, min_size=1, max_size=3).map(b",".join),
        st.sampled_from([b"5", b"13", b"chunked", b"gzip, chunked"]),
        fieldValues(),
    ))


fieldLists = st.lists(st.tuples(casedNames(), values()).map(list), max_size=8)


@st.composite
def headerLists(draw: st.DrawFn) -> list[list[bytes]]:
    """Header lines, often with a C{Connection} header naming some of the others."""
    headers = draw(fieldLists)
    if headers and draw(st.booleans()):
        named = draw(st.lists(st.sampled_from([h[0] for h in headers] + OPTIONS), min_size=1, max_size=3))
        at = draw(st.integers(0, len(headers)))
        headers.insert(at, [draw(st.sampled_from([b"Connection", b"connection", b"CONNECTION"])), b", ".join(named)])
    return headers


framingLists = st.lists(st.one_of(st.tuples(casedNames(), values()), st.sampled_from(FRAMING_FIELDS)).map(list), max_size=5)
#: More examples for the head writers: a difference hides in rare mixes
#: (a Connection option naming a header that is there).
_WRITERS = fuzzSettings(4 * _EXAMPLES)


def outcome(parse: Callable[[bytes], Any], head: bytes) -> Any:
    """What C{parse} makes of C{head}: the message's fields, or its error."""
    try:
        message = parse(head)
    except BadMessage as e:
        return ("bad", e.status, str(e))
    if isinstance(message, Request):
        return (message.method, message.uri, message.path, message.query, message.version, message.headers)
    return (message.version, message.code, message.reason, message.headers)


def framing(headers: list[list[bytes]], response: bool, names: Optional[list[bytes]] = None) -> Any:
    """L{bodyLength}'s answer, or its error."""
    try:
        if names is None:
            return model.bodyLength(headers, response)
        return bodyLength(headers, response, names)
    except BadMessage as e:
        return ("bad", e.status, str(e))


class ParseTests(SynchronousTestCase):
    """
    L{parseRequestHead} and L{parseResponseHead} (their fast paths
    included) parse as before, and find the lower-cased names.
    """

    def assertParsesAsBefore(self, parse: Callable[[bytes], Any], before: Callable[[bytes], Any], head: bytes) -> None:
        """C{parse} and C{before} make the same of C{head}, and the names found are the headers'."""
        self.assertEqual(outcome(parse, head), outcome(before, head))
        try:
            message = parse(head)
        except BadMessage:
            return
        self.assertEqual(message._lower, [h[0].lower() for h in message.headers])

    @_SETTINGS
    @given(st.one_of(anyOf(requestHeadBytes), framingHeads()))
    def test_request(self, head: bytes) -> None:
        """A request head, valid or not, parses as before."""
        self.assertParsesAsBefore(parseRequestHead, model.parseRequestHead, head)

    @_SETTINGS
    @given(anyOf(responseHeadBytes))
    def test_response(self, head: bytes) -> None:
        """A response head, valid or not, parses as before."""
        self.assertParsesAsBefore(parseResponseHead, model.parseResponseHead, head)

    @_WRITERS
    @given(
        st.lists(st.one_of(st.tuples(casedNames(), values()), st.sampled_from(FRAMING_FIELDS + HOSTS)), max_size=6),
        st.sampled_from([
            b"GET / HTTP/1.1", b"POST /a?b HTTP/1.0", b"GET http://example.com/p HTTP/1.1",
            b"CONNECT example.com:443 HTTP/1.1", b"OPTIONS * HTTP/1.1", b"GET  / HTTP/1.1",
        ]),
        st.sampled_from([b": ", b":", b":\t", b" : "]),
    )
    def test_requestFields(self, headers: list[tuple[bytes, bytes]], requestLine: bytes, colon: bytes) -> None:
        """A request head with framing, Host and the fields the writers care about parses as before."""
        head = b"\r\n".join([requestLine] + [n + colon + v for n, v in headers])
        self.assertParsesAsBefore(parseRequestHead, model.parseRequestHead, head)

    @_WRITERS
    @given(
        headerLists(),
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.9", b"HTTP/2.0", b"http/1.1", b"HTTP/1.10", b"HTTP/1.x"]),
        st.sampled_from([b"200", b"101", b"999", b"20", b"2000", b"20x", b""]),
        st.sampled_from([b" OK", b"", b" ", b"  two  spaces ", b" a\tb", b" no\x0bvt", b" \x7f", b" \xff", b" \x00", b" x\ry"]),
    )
    def test_responseFields(self, headers: list[list[bytes]], version: bytes, code: bytes, reason: bytes) -> None:
        """A response head with odd status lines and the fields the writers care about parses as before."""
        head = b"\r\n".join([version + b" " + code + reason] + [n + b": " + v for n, v in headers])
        self.assertParsesAsBefore(parseResponseHead, model.parseResponseHead, head)


class FramingTests(SynchronousTestCase):
    """
    L{bodyLength} and L{connectionTokens} given the names answer as
    without them, and as before.
    """

    @_SETTINGS
    @given(framingLists, st.booleans())
    def test_bodyLength(self, headers: list[list[bytes]], response: bool) -> None:
        """The framing (or the error) is the same with the names."""
        names = [h[0].lower() for h in headers]
        self.assertEqual(framing(headers, response, names), framing(headers, response))
        try:
            expected: Any = model.bodyLength(headers, response)
        except BadMessage as e:
            expected = ("bad", e.status, str(e))
        try:
            got: Any = bodyLength(headers, response)
        except BadMessage as e:
            got = ("bad", e.status, str(e))
        self.assertEqual(got, expected)

    @_SETTINGS
    @given(headerLists())
    def test_connectionTokens(self, headers: list[list[bytes]]) -> None:
        """The options are the same with the names, without, and before."""
        expected = model.connectionTokens(headers)
        self.assertEqual(connectionTokens(headers), expected)
        self.assertEqual(connectionTokens(headers, [h[0].lower() for h in headers]), expected)


def edited(request: Request, edits: list[tuple[str, bytes, bytes]]) -> Request:
    """C{request} after C{edits}: L{Request}'s own methods, or an append to its list."""
    for action, name, value in edits:
        if action == "add":
            request.addHeader(name, value)
        elif action == "set":
            request.setHeader(name, value)
        elif action == "remove":
            request.removeHeader(name)
        else:
            request.headers.append([name, value])
    return request


editLists = st.lists(st.tuples(st.sampled_from(["add", "set", "remove", "append"]), casedNames(), values()), max_size=3)


class HeadWriterTests(SynchronousTestCase):
    """
    L{requestHead} and L{responseHead} write the bytes they wrote before,
    whatever the headers, the options and the edits since the parse.
    """

    @_WRITERS
    @given(
        headerLists(), editLists, st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]), st.booleans(), st.booleans(), st.booleans(),
        st.sampled_from([None, b"", b"/CN=client"]), st.sampled_from([b"http", b"https"]), st.booleans(),
    )
    def test_requestHead(
        self, headers: list[list[bytes]], edits: list[tuple[str, bytes, bytes]], version: bytes, chunked: bool,
        upgrade: bool, forwardedFor: bool, clientDN: Optional[bytes], scheme: bytes, parsed: bool,
    ) -> None:
        """A request's head goes to the server as before."""
        if parsed:  # (with the names the parse found)
            head = b"\r\n".join([b"GET /a?b HTTP/1.1"] + [n + b": " + v for n, v in headers])
            try:
                request = parseRequestHead(head)
            except BadMessage:
                return
            request.version = version
        else:
            request = Request(b"GET", b"/a?b", version, [list(h) for h in headers])
        edited(request, edits)
        args = (chunked, upgrade, forwardedFor, b"192.0.2.7", scheme, clientDN)
        expected = model.requestHead(request, *args)
        self.assertEqual(requestHead(request, *args), expected)

    @_WRITERS
    @given(
        headerLists(), st.sampled_from([100, 101, 200, 204, 404, 503, 999]), st.booleans(), st.booleans(),
        st.booleans(), st.booleans(), st.sampled_from(["none", "append", "replace", "rename", "reassign"]),
    )
    def test_responseHead(
        self, headers: list[list[bytes]], code: int, interim: bool, tunnel: bool, close: bool, http10: bool, edit: str
    ) -> None:
        """A response's head goes to the client as before, after any edit of its list."""
        head = b"\r\n".join([b"HTTP/1.1 %d Fine" % (code if code < 600 else 200)] + [n + b": " + v for n, v in headers])
        try:
            response = parseResponseHead(head)
        except BadMessage:
            response = Response(b"HTTP/1.1", code, b"Fine", [list(h) for h in headers])
        response.code = code
        if edit == "append":
            response.headers.append([b"Connection", b"x-foo, Close"])
            response.headers.append([b"X-Foo", b"1"])
        elif edit == "replace" and response.headers:
            response.headers[0] = [b"Connection", b"server"]
        elif edit == "rename" and response.headers:
            response.headers[-1][0] = b"Keep-Alive"
        elif edit == "reassign":
            response.headers = response.headers[::-1]
        expected = model.responseHead(response, interim, tunnel, close, http10)
        self.assertEqual(responseHead(response, interim, tunnel, close, http10), expected)
