"""
Tests for L{lbkit.http} routes, request matchers and header rules.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from lbkit import Backend, Context, Server
from lbkit.error import ConfigError
from lbkit.http import (
    Route,
    addHeader,
    allOf,
    anyOf,
    deleteHeader,
    headerExists,
    headerIs,
    headerMatches,
    hostIs,
    hostMatches,
    methodIs,
    notMatching,
    pathBegins,
    pathEnds,
    pathIs,
    pathMatches,
    setHeader,
    sourceIn,
)
from lbkit.http._parse import Request, parseRequestHead, parseResponseHead
from lbkit.interfaces import IRequestMatcher

CTX = Context(client=IPv4Address("TCP", "10.1.2.3", 5000), frontend="fe")


def req(head: bytes) -> Request:
    """Parse a request head."""
    return parseRequestHead(head)


GET = req(b"GET /static/app.js?v=1 HTTP/1.1\r\nHost: WWW.Example.com:8080\r\nX-Mode: beta\r\nX-Mode: two")
POST = req(b"POST /api/items HTTP/1.1\r\nHost: api.example.com")


class MatcherTests(SynchronousTestCase):
    """
    Every built-in matcher decides as documented.
    """

    def test_repr(self) -> None:
        """Every matcher shows what it matches in its repr."""
        for m in [
            pathBegins("/"), pathIs("/"), pathEnds(".js"), pathMatches("x"), hostIs("a"), hostMatches("a"),
            headerExists("a"), headerIs("a", "b"), headerMatches("a", "b"), methodIs("GET"), sourceIn("10.0.0.0/8"),
            allOf(pathBegins("/")), anyOf(pathBegins("/")), notMatching(pathBegins("/")),
        ]:
            self.assertNotIn("object at 0x", repr(m))

    def test_pathBegins(self) -> None:
        """pathBegins matches any of its prefixes, ignoring the query."""
        self.assertTrue(pathBegins("/api", "/static/").matches(GET, CTX))
        self.assertTrue(pathBegins(b"/api").matches(POST, CTX))
        self.assertFalse(pathBegins("/web").matches(GET, CTX))

    def test_pathIs(self) -> None:
        """pathIs matches the exact path only."""
        self.assertTrue(pathIs("/static/app.js").matches(GET, CTX))
        self.assertFalse(pathIs("/static/app.js?v=1", "/static").matches(GET, CTX))

    def test_pathEnds(self) -> None:
        """pathEnds matches a suffix of the path, not of the query."""
        self.assertTrue(pathEnds(".css", ".js").matches(GET, CTX))
        self.assertFalse(pathEnds("v=1").matches(GET, CTX))

    def test_pathMatches(self) -> None:
        """pathMatches searches the path with a regular expression."""
        self.assertTrue(pathMatches(r"^/static/.*\.js$").matches(GET, CTX))
        self.assertFalse(pathMatches(r"^/api").matches(GET, CTX))

    def test_hostIs(self) -> None:
        """hostIs compares the Host without its port, case-insensitively."""
        self.assertTrue(hostIs("www.example.COM").matches(GET, CTX))
        self.assertFalse(hostIs("www.example.com:8080").matches(GET, CTX))
        self.assertFalse(hostIs("x").matches(req(b"GET / HTTP/1.0"), CTX))

    def test_hostMatches(self) -> None:
        """hostMatches searches the Host case-insensitively; no Host never matches."""
        self.assertTrue(hostMatches(r"^API\.").matches(POST, CTX))
        self.assertFalse(hostMatches(r"^api\.").matches(GET, CTX))
        self.assertFalse(hostMatches(".*").matches(req(b"GET / HTTP/1.0"), CTX))

    def test_headerExists(self) -> None:
        """headerExists matches a present header whatever its case."""
        self.assertTrue(headerExists("x-mode").matches(GET, CTX))
        self.assertFalse(headerExists("x-mode").matches(POST, CTX))

    def test_headerIs(self) -> None:
        """headerIs matches when any value of the header equals one given."""
        self.assertTrue(headerIs("X-Mode", "two").matches(GET, CTX))
        self.assertTrue(headerIs("X-Mode", "alpha", "beta").matches(GET, CTX))
        self.assertFalse(headerIs("X-Mode", "Beta").matches(GET, CTX))

    def test_headerMatches(self) -> None:
        """headerMatches searches every value of the header."""
        self.assertTrue(headerMatches("x-mode", "^t").matches(GET, CTX))
        self.assertFalse(headerMatches("x-mode", "^z").matches(GET, CTX))

    def test_methodIs(self) -> None:
        """methodIs compares methods, given in any case."""
        self.assertTrue(methodIs("post", "PUT").matches(POST, CTX))
        self.assertFalse(methodIs("POST").matches(GET, CTX))

    def test_sourceIn(self) -> None:
        """sourceIn matches client addresses inside its networks."""
        self.assertTrue(sourceIn("10.0.0.0/8").matches(GET, CTX))
        self.assertFalse(sourceIn("192.168.0.0/16", "::1/128").matches(GET, CTX))
        v6 = Context(client=IPv6Address("TCP", "2001:db8::5", 1))
        self.assertTrue(sourceIn("2001:db8::/32").matches(GET, v6))
        self.assertFalse(sourceIn("10.0.0.0/8").matches(GET, Context()))

    def test_sourceInBadNetwork(self) -> None:
        """sourceIn rejects a malformed network with ConfigError."""
        self.assertRaises(ConfigError, sourceIn, "10.0.0.300/8")

    def test_combinators(self) -> None:
        """allOf, anyOf and notMatching combine matchers as and, or and not."""
        yes, no = pathBegins("/"), pathBegins("/nope")
        self.assertTrue(allOf(yes, yes).matches(GET, CTX))
        self.assertFalse(allOf(yes, no).matches(GET, CTX))
        self.assertTrue(anyOf(no, yes).matches(GET, CTX))
        self.assertFalse(anyOf(no, no).matches(GET, CTX))
        self.assertTrue(notMatching(no).matches(GET, CTX))
        self.assertFalse(notMatching(yes).matches(GET, CTX))
        self.assertTrue(allOf().matches(GET, CTX))
        self.assertFalse(anyOf().matches(GET, CTX))

    def test_combinatorsCheckTheirArguments(self) -> None:
        """Combinators reject what does not provide IRequestMatcher."""
        self.assertRaises(ConfigError, allOf, "/x")  # type: ignore[arg-type]
        self.assertRaises(ConfigError, anyOf, pathBegins("/"), None)  # type: ignore[arg-type]
        self.assertRaises(ConfigError, notMatching, 3)  # type: ignore[arg-type]

    def test_userMatcher(self) -> None:
        """A user's own IRequestMatcher works in a Route and in combinators."""

        @implementer(IRequestMatcher)
        class OddPath:
            def matches(self, request: Request, context: Context) -> bool:
                return len(request.path) % 2 == 1

        backend = Backend("b", [Server("s", "127.0.0.1:1")])
        self.assertIs(Route(OddPath(), backend).backend, backend)
        self.assertTrue(notMatching(OddPath()).matches(req(b"GET /a HTTP/1.1"), CTX))


class RouteTests(SynchronousTestCase):
    """
    L{Route} checks its arguments.
    """

    def test_badArguments(self) -> None:
        """A non-matcher or a non-backend is a ConfigError."""
        backend = Backend("b", [Server("s", "127.0.0.1:1")])
        self.assertRaises(ConfigError, Route, "/x", backend)  # type: ignore[arg-type]
        self.assertRaises(ConfigError, Route, pathBegins("/x"), "backend")  # type: ignore[arg-type]

    def test_repr(self) -> None:
        """A route's repr names its matcher and backend."""
        backend = Backend("blog", [Server("s", "127.0.0.1:1")])
        self.assertEqual(repr(Route(pathBegins("/b"), backend)), "<Route pathBegins(b'/b',) -> blog>")


class HeaderRuleTests(SynchronousTestCase):
    """
    L{addHeader}, L{setHeader} and L{deleteHeader} edit requests and
    responses.
    """

    def test_add(self) -> None:
        """addHeader appends, keeping existing headers of that name."""
        r = req(b"GET / HTTP/1.1\r\nX-A: 1")
        addHeader("X-A", "2").applyToRequest(r, None)
        self.assertEqual(r.headerValues(b"x-a"), [b"1", b"2"])

    def test_set(self) -> None:
        """setHeader replaces every header of that name by one."""
        r = req(b"GET / HTTP/1.1\r\nx-a: 1\r\nX-A: 2\r\nB: 3")
        setHeader(b"X-A", b"9").applyToRequest(r, None)
        self.assertEqual(r.headers, [[b"B", b"3"], [b"X-A", b"9"]])
        self.assertEqual(r.header(b"x-a"), b"9")

    def test_delete(self) -> None:
        """deleteHeader removes every header of that name."""
        r = req(b"GET / HTTP/1.1\r\nx-a: 1\r\nX-A: 2\r\nB: 3")
        deleteHeader("x-A").applyToRequest(r, None)
        self.assertEqual(r.headers, [[b"B", b"3"]])
        self.assertIsNone(r.header(b"x-a"))

    def test_response(self) -> None:
        """Rules apply to responses too."""
        r = parseResponseHead(b"HTTP/1.1 200 OK\r\nServer: secret\r\nX-A: 1")
        deleteHeader("server").applyToResponse(r, None)
        setHeader("X-A", "2").applyToResponse(r, None)
        addHeader("X-B", "3").applyToResponse(r, None)
        self.assertEqual(r.headers, [[b"X-A", b"2"], [b"X-B", b"3"]])

    def test_rejectsCRLF(self) -> None:
        """A value with CR or LF is refused (header injection)."""
        self.assertRaises(ValueError, setHeader, "X", "a\r\nEvil: 1")
        self.assertRaises(ValueError, addHeader, "X", "a\nb")

    def test_rejectsBadName(self) -> None:
        """A name that is not a token is refused."""
        self.assertRaises(ValueError, setHeader, "X Y", "1")
        self.assertRaises(ValueError, addHeader, "", "1")
        self.assertRaises(ValueError, addHeader, "X-A\n", "1")  # a final newline too
