"""
Tests for the request rules that answer from the balancer or change what
routing sees (L{lbkit.http.deny}, L{lbkit.http.tarpit},
L{lbkit.http.redirect} and friends, L{lbkit.http.respond},
L{lbkit.http.setPath} ...), computed and conditional header rules, and
error pages (L{lbkit.http.errorPage}): first with L{StringTransport}s on a
L{MemoryReactorClock}, then over real sockets on 127.0.0.1 (HTTP/1.1 and
HTTP/2) in front of twisted.web, with HAProxy as the oracle for
redirects, and examples/rules.py run by C{twistd lbkit}.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Sequence

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from lbkit import Backend, Server, ServerState
from lbkit.error import ConfigError
from lbkit.http import (
    Answer,
    Frontend,
    Route,
    Tarpit,
    allOf,
    clientAddress,
    clientPort,
    deny,
    errorPage,
    headerIs,
    hostIs,
    pathBegins,
    redirect,
    redirectPrefix,
    redirectScheme,
    replacePath,
    respond,
    setHeader,
    setPath,
    setQuery,
    sourceIn,
    tarpit,
)
from lbkit.http._answers import AnsweringRule
from lbkit.interfaces import IAnsweringRule, IRequestRule
from lbkit.testing import FakeEndpoint, HTTPHarness, assertProvides
from tests.helpers import startHAProxy
from tests.test_examples import EXAMPLES, startProcess, stopCleanly, twistd
from tests.test_http2 import HTTP2TestCase
from tests.test_http_integration import HTTPTestCase, RawClient, backend, reactor

CLIENT = IPv4Address("TCP", "198.51.100.7", 51000)
FRONT = IPv4Address("TCP", "127.0.0.1", 8080)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """The status, headers (lower-case names) and body of one HTTP/1.1 response in C{data}."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    return int(lines[0].split(b" ")[1]), headers, body


class Harness:
    """A frontend with C{rules} on a L{MemoryReactorClock}, one backend of one server C{s1}."""

    def __init__(self, testCase: SynchronousTestCase, rules: Sequence[Any] = (), routes: Sequence[Any] = (),
                 **frontendArgs: Any) -> None:
        self.endpoint = FakeEndpoint(IPv4Address("TCP", "192.0.2.1", 80))
        self.server = Server("s1", self.endpoint)
        self.backend = Backend("be", [self.server])
        routeObjects = [Route(m, self.backend, requestRules=r) for m, r in routes]
        self.frontend = Frontend("tcp:8080", routeObjects, default=self.backend, name="fe", requestRules=rules,
                                 **frontendArgs)
        self.harness = HTTPHarness(self.frontend, clientAddress=CLIENT, frontendAddress=FRONT)
        self.reactor = self.harness.reactor
        self.logged = self.harness.logged
        self.testCase = testCase
        testCase.addCleanup(self._cleanUp)

    def request(self, data: bytes) -> Any:
        client = self.harness.accept()
        client.protocol.dataReceived(data)
        return client

    def _cleanUp(self) -> None:
        self.harness.close()
        self.testCase.assertEqual(self.reactor.getDelayedCalls(), [])


class AnswerTests(SynchronousTestCase):
    """
    Answering rules answer in place of a server, log the request like
    others, and keep or close the connection as HAProxy does.
    """

    def test_interfaces(self) -> None:
        """Every built-in answering rule provides IAnsweringRule, and so IRequestRule."""
        for rule in [deny(), tarpit(), redirect("/x"), redirectScheme(), redirectPrefix("http://a"), respond(200),
                     setPath("/a"), replacePath("a", "b"), setQuery("a=1")]:
            assertProvides(self, IAnsweringRule, rule)
            assertProvides(self, IRequestRule, rule)

    def test_deny(self) -> None:
        """deny answers 403 with Connection: close, closes, connects to no server, logs PR."""
        h = Harness(self, [deny()])
        client = h.request(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = parse(client.transport.value())
        self.assertEqual(status, 403)
        self.assertEqual(headers[b"connection"], b"close")
        self.assertEqual(body, b"Request forbidden by administrative rules.\n")
        self.assertEqual(int(headers[b"content-length"]), len(body))
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(h.endpoint.attempts, [])
        [fields] = h.logged
        self.assertEqual((fields["status"], fields["termination"], fields["server"]), (403, "PR", "<NOSRV>"))
        self.assertEqual(h.harness.factory.responses["4xx"], 1)

    def test_denyStatusAndPage(self) -> None:
        """deny(status=) answers that status, with the frontend's error page for it."""
        h = Harness(self, [deny(status=429)], errorPages={429: errorPage(b"slow down", contentType="text/x")})
        client = h.request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = parse(client.transport.value())
        self.assertEqual((status, headers[b"content-type"], body), (429, b"text/x", b"slow down"))

    def test_whenNotMatching(self) -> None:
        """A rule whose when= does not match lets the request through to a server."""
        h = Harness(self, [deny(when=pathBegins("/admin"))])
        client = h.request(b"GET /public HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(client.transport.value(), b"")
        side = h.harness.connect(h.server)
        self.assertTrue(side.transport.value().startswith(b"GET /public HTTP/1.1\r\n"))
        side.protocol.dataReceived(OK)
        self.assertTrue(client.transport.value().endswith(b"ok"))

    def test_redirectKeepsAlive(self) -> None:
        """A redirect answers with Location and keeps the connection for the next request (LR)."""
        h = Harness(self, [redirectPrefix("https://b.example", when=pathBegins("/old"))])
        client = h.request(b"GET /old/x?q=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = parse(client.transport.value())
        self.assertEqual((status, headers[b"location"], body), (302, b"https://b.example/old/x?q=1", b""))
        self.assertNotIn(b"connection", headers)
        self.assertFalse(client.transport.disconnecting)
        self.assertEqual(h.logged[0]["termination"], "LR")
        client.transport.clear()
        client.protocol.dataReceived(b"GET /new HTTP/1.1\r\nHost: a\r\n\r\n")
        side = h.harness.connect(h.server)
        side.protocol.dataReceived(OK)
        self.assertTrue(client.transport.value().endswith(b"ok"))

    def test_pipelinedAfterAnswer(self) -> None:
        """Requests pipelined behind an answered one are served in order."""
        h = Harness(self, [respond(200, b"hi", when=pathBegins("/local"))])
        client = h.request(b"GET /local HTTP/1.1\r\nHost: a\r\n\r\nGET /local HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(client.transport.value().count(b"HTTP/1.1 200 OK"), 2)
        self.assertEqual(len(h.logged), 2)

    def test_respond(self) -> None:
        """respond answers its status, body, content type and headers (LR, keep-alive)."""
        h = Harness(self, [respond(503, "down for maintenance", headers=[("Retry-After", "60")])])
        client = h.request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = parse(client.transport.value())
        self.assertEqual(status, 503)
        self.assertEqual(body, b"down for maintenance")
        self.assertEqual(headers[b"content-type"], b"text/plain; charset=utf-8")
        self.assertEqual(headers[b"retry-after"], b"60")
        self.assertFalse(client.transport.disconnecting)
        self.assertEqual(h.harness.factory.responses["5xx"], 1)

    def test_respondHead(self) -> None:
        """A HEAD request gets the head of the answer and no body."""
        h = Harness(self, [respond(200, b"body")])
        client = h.request(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(client.transport.value().endswith(b"Content-Length: 4\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"))

    def test_bodyNotRead(self) -> None:
        """An answer given before the request body was read closes the connection."""
        h = Harness(self, [respond(200, b"no")])
        client = h.request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12345")
        status, headers, _ = parse(client.transport.value())
        self.assertEqual((status, headers[b"connection"]), (200, b"close"))
        self.assertTrue(client.transport.disconnecting)

    def test_routeRules(self) -> None:
        """A route's answering rules run once the request took that route, after the frontend's."""
        h = Harness(self, [setPath("/api/v2")], routes=[(pathBegins("/api"), [respond(200, b"api")])])
        client = h.request(b"GET /whatever HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(client.transport.value().endswith(b"api"))
        self.assertEqual(h.logged[0]["backend"], "be")

    def test_rewrites(self) -> None:
        """setPath, replacePath and setQuery change the request the server gets, in order."""
        h = Harness(self, [replacePath("^/app/(.*)", r"/\1"), setQuery("v=2", when=pathBegins("/x")),
                           setPath("/never", when=hostIs("other"))])
        h.request(b"GET /app/x?v=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        side = h.harness.connect(h.server)
        self.assertTrue(side.transport.value().startswith(b"GET /x?v=2 HTTP/1.1\r\n"))
        side.protocol.dataReceived(OK)

    def test_ruleRaises(self) -> None:
        """A rule that raises drops the request (IC) and is logged."""

        class Broken(AnsweringRule):
            def apply(self, request: Any, exchange: Any) -> Any:
                raise RuntimeError("boom")

        h = Harness(self, [Broken()])
        client = h.request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(client.transport.value(), b"")
        self.assertEqual(h.logged[0]["termination"], "IC")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_userRule(self) -> None:
        """A user's IAnsweringRule answers with an Answer of its own."""

        class Teapot(AnsweringRule):
            def apply(self, request: Any, exchange: Any) -> Any:
                return Answer(418, [(b"X-Client", exchange.client.host.encode())], b"short and stout")

        h = Harness(self, [Teapot()])
        client = h.request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = parse(client.transport.value())
        self.assertEqual((status, headers[b"x-client"], body), (418, b"198.51.100.7", b"short and stout"))
        self.assertIn(b"I'm a Teapot", client.transport.value().split(b"\r\n")[0])


    def test_plainUserRule(self) -> None:
        """A user's class with only @implementer(IAnsweringRule) (docs/rules.md) plugs in."""

        @implementer(IAnsweringRule)
        class Teapot:
            def answerRequest(self, request: Any, exchange: Any) -> Any:
                if request.path == b"/coffee":
                    return Answer(418, [(b"X-Reason", b"tea only")], b"I'm a teapot\n")
                return None

            def applyToRequest(self, request: Any, exchange: Any) -> None:
                pass

            def applyToResponse(self, response: Any, exchange: Any) -> None:
                pass

        h = Harness(self, [Teapot()])
        client = h.request(b"GET /coffee HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(parse(client.transport.value())[0], 418)
        client = h.request(b"GET /tea HTTP/1.1\r\nHost: a\r\n\r\n")
        side = h.harness.connect(h.server)
        side.protocol.dataReceived(OK)
        self.assertTrue(client.transport.value().endswith(b"ok"))

    def test_notAnAnswer(self) -> None:
        """A rule returning something else than an Answer drops the request (IC)."""

        class Wrong(AnsweringRule):
            def apply(self, request: Any, exchange: Any) -> Any:
                return 404

        h = Harness(self, [Wrong()])
        h.request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(h.logged[0]["termination"], "IC")
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)


class TarpitTests(SynchronousTestCase):
    """
    tarpit holds the connection for its delay, then answers 500 and
    closes; at most C{limit} are held, the rest answered at once.
    """

    def test_held(self) -> None:
        """Nothing is sent before the delay; then 500, close, termination PT."""
        rule = tarpit(delay=5.0, limit=1)
        h = Harness(self, [rule])
        client = h.request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(client.transport.value(), b"")
        self.assertEqual(rule.held, 1)
        self.assertEqual(client.transport.producerState, "paused")
        h.reactor.advance(4.9)
        self.assertEqual(client.transport.value(), b"")
        h.reactor.advance(0.1)
        status, headers, _ = parse(client.transport.value())
        self.assertEqual((status, headers[b"connection"]), (500, b"close"))
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(rule.held, 0)
        self.assertEqual((h.logged[0]["status"], h.logged[0]["termination"]), (500, "PT"))

    def test_bound(self) -> None:
        """Beyond the limit, the 500 goes at once, and is counted."""
        rule = tarpit(delay=5.0, limit=1)
        self.assertIsInstance(rule, Tarpit)
        h = Harness(self, [rule])
        first = h.request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        second = h.request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(first.transport.value(), b"")
        self.assertEqual(parse(second.transport.value())[0], 500)
        self.assertEqual((rule.held, rule.overflowed), (1, 1))
        h.reactor.advance(5)
        self.assertEqual(parse(first.transport.value())[0], 500)

    def test_clientLeaves(self) -> None:
        """A client that leaves while held frees its place and its timer."""
        rule = tarpit(delay=5.0)
        h = Harness(self, [rule])
        client = h.request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        client.transport.loseConnection()
        client.protocol.connectionLost(Exception("gone"))  # type: ignore[arg-type]
        self.assertEqual(rule.held, 0)
        self.assertEqual([c for c in h.reactor.getDelayedCalls() if c.getTime() == 5.0], [])
        self.assertEqual(h.logged[0]["termination"], "PT")


class RedirectTests(SynchronousTestCase):
    """
    The Location of each redirect, as HAProxy builds it (checked against
    HAProxy itself in L{HAProxyOracleTests}).
    """

    def location(self, rule: Any, target: bytes, host: bytes = b"a.example") -> tuple[int, bytes]:
        h = Harness(self, [rule])
        client = h.request(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, host))
        status, headers, _ = parse(client.transport.value())
        return status, headers[b"location"]

    def test_location(self) -> None:
        """redirect puts its location, exactly."""
        self.assertEqual(self.location(redirect("https://x.example/", code=307), b"/a?b"), (307, b"https://x.example/"))

    def test_scheme(self) -> None:
        """redirectScheme keeps the Host and the target; code 301 by default."""
        self.assertEqual(self.location(redirectScheme("https"), b"/a?b=1", b"a.example:8080"),
                         (301, b"https://a.example:8080/a?b=1"))

    def test_schemeWithoutHost(self) -> None:
        """An HTTP/1.0 request without Host gets an empty host, as from HAProxy."""
        h = Harness(self, [redirectScheme("https")])
        client = h.request(b"GET /a HTTP/1.0\r\n\r\n")
        status, headers, _ = parse(client.transport.value())
        self.assertEqual((status, headers[b"location"]), (301, b"https:///a"))

    def test_prefix(self) -> None:
        """redirectPrefix puts the target after the prefix; "/" adds nothing; dropQuery drops the query."""
        self.assertEqual(self.location(redirectPrefix("http://b"), b"/a?q"), (302, b"http://b/a?q"))
        self.assertEqual(self.location(redirectPrefix("/"), b"/a?q"), (302, b"/a?q"))
        self.assertEqual(self.location(redirectPrefix("http://b", dropQuery=True), b"/a?q"), (302, b"http://b/a"))


class HeaderRuleTests(SynchronousTestCase):
    """
    Header rules take a C{when=} and a value computed from the request.
    """

    def test_computedAndConditional(self) -> None:
        """clientAddress, clientPort and a callable are computed; when= decides."""
        h = Harness(self, [
            setHeader("X-Real-IP", clientAddress),
            setHeader("X-Port", clientPort),
            setHeader("X-Path", lambda request, exchange: request.path.upper()),
            setHeader("X-Internal", "1", when=sourceIn("10.0.0.0/8")),
            setHeader("X-Beta", "1", when=headerIs("X-Channel", "beta")),
        ])
        h.request(b"GET /p HTTP/1.1\r\nHost: a\r\nX-Channel: beta\r\n\r\n")
        side = h.harness.connect(h.server)
        head = side.transport.value()
        self.assertIn(b"X-Real-IP: 198.51.100.7\r\n", head)
        self.assertIn(b"X-Port: 51000\r\n", head)
        self.assertIn(b"X-Path: /P\r\n", head)
        self.assertIn(b"X-Beta: 1\r\n", head)
        self.assertNotIn(b"X-Internal", head)
        side.protocol.dataReceived(OK)

    def test_badComputedValue(self) -> None:
        """A computed value with CR or LF fails the request rather than split a header."""
        h = Harness(self, [setHeader("X-Bad", lambda request, exchange: "a\r\nb: c")])
        client = h.request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        h.harness.connect(h.server)
        self.assertEqual(h.logged[0]["termination"], "IC")
        self.assertTrue(client.transport.disconnecting or client.transport.value() == b"")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class ConfigTests(SynchronousTestCase):
    """
    Rules and error pages are checked when the site is loaded; each
    ConfigError says what is wrong.
    """

    def test_errors(self) -> None:
        """Bad arguments raise ConfigError naming the rule."""
        cases = [
            (lambda: redirect("/x", code=200), "redirect: code"),
            (lambda: redirectScheme("ht tp"), "not a URI scheme"),
            (lambda: deny(status=200), "deny: status"),
            (lambda: tarpit(delay="soon"), "tarpit: delay"),  # type: ignore[arg-type]
            (lambda: respond(204, b"x"), "has no body"),
            (lambda: respond(200, headers=[("Content-Length", "3")]), "Content-Length"),
            (lambda: setPath("x"), "must start with '/'"),
            (lambda: setPath("/a b"), "may not hold"),
            (lambda: replacePath("(", "x"), "replacePath"),
            (lambda: deny(when="yes"), "when= must be a matcher"),
            (lambda: errorPage("/no/such/file"), "/no/such/file"),
        ]
        for make, words in cases:
            e = self.assertRaises(ConfigError, make)
            self.assertIn(words, str(e))

    def test_frontendChecks(self) -> None:
        """A frontend refuses a rule that is none, and error pages it cannot serve."""
        be = Backend("be", [Server("s1", FakeEndpoint())])
        e = self.assertRaises(ConfigError, Frontend, "tcp:0", default=be, requestRules=[object()])
        self.assertIn("does not provide IRequestRule", str(e))
        e = self.assertRaises(ConfigError, Frontend, "tcp:0", default=be, errorPages={200: b"x"})
        self.assertIn("200 is not an error status", str(e))
        e = self.assertRaises(ConfigError, Frontend, "tcp:0", default=be, errorPages={503: "maint.html"})
        self.assertIn("errorPages[503] must be bytes or http.errorPage", str(e))

    def test_badRequestPage(self) -> None:
        """A malformed request head gets the frontend's 400 page."""
        h = Harness(self, errorPages={400: errorPage(b"bad", contentType="text/plain")})
        client = h.request(b"GET / HTTP/1.1\r\nHost a\r\n\r\n")
        status, headers, body = parse(client.transport.value())
        self.assertEqual((status, headers[b"content-type"], body), (400, b"text/plain", b"bad"))
        self.assertTrue(client.transport.disconnecting)

    def test_errorPageFile(self) -> None:
        """errorPage reads a file when the site loads."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"<h1>down</h1>")
        page = errorPage(path)
        self.assertEqual((page.body, page.contentType), (b"<h1>down</h1>", b"text/html; charset=utf-8"))

    def test_noRulesNoCost(self) -> None:
        """A frontend without answering rules says so, in one attribute."""
        be = Backend("be", [Server("s1", FakeEndpoint())])
        self.assertFalse(Frontend("tcp:0", default=be, requestRules=[setHeader("a", "b")]).answering)
        self.assertTrue(Frontend("tcp:0", [Route(pathBegins("/"), be, requestRules=[deny()])]).answering)

    def test_matcherAllOf(self) -> None:
        """Combined matchers work in when=."""
        h = Harness(self, [deny(when=allOf(pathBegins("/a"), headerIs("X", "1")))])
        client = h.request(b"GET /a HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n")
        self.assertEqual(parse(client.transport.value())[0], 403)


# -- over real sockets -----------------------------------------------------------


class RealSocketTests(HTTPTestCase):
    """
    Through a real lbkit frontend in front of a twisted.web server: what
    a client sees of each answer, and what the server sees of rewrites.
    """

    @inlineCallbacks
    def test_answers(self) -> Any:
        """deny closes; redirect and respond keep the connection; other requests reach the server."""
        port = self.frontend(default=backend("app", [self.site("app1")[0]]), requestRules=[
            deny(when=pathBegins("/admin")),
            redirectPrefix("https://new.example", when=pathBegins("/old")),
            respond(200, b"pong", headers=[("X-Local", "1")], when=pathBegins("/ping")),
            setPath("/rewritten", when=pathBegins("/r")),
            setHeader("X-Real-IP", clientAddress),
        ])
        c = yield self.client(port)
        c.send(b"GET /old/page?x=1 HTTP/1.1\r\nHost: test\r\n\r\n")
        c.send(b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n")
        c.send(b"GET /r?q=2 HTTP/1.1\r\nHost: test\r\n\r\n")
        c.send(b"GET /admin HTTP/1.1\r\nHost: test\r\n\r\n")
        (redirected, _), (ponged, body), (proxied, info), (denied, _) = yield c.responses(4)
        self.assertEqual((redirected.code, redirected.header(b"location")), (302, b"https://new.example/old/page?x=1"))
        self.assertEqual((ponged.code, body, ponged.header(b"x-local")), (200, b"pong", b"1"))
        self.assertEqual(ponged.header(b"content-type"), b"text/plain; charset=utf-8")
        served = json.loads(info)
        self.assertEqual(served["uri"], "/rewritten?q=2")
        self.assertEqual(served["headers"]["x-real-ip"], ["127.0.0.1"])
        self.assertEqual((denied.code, denied.header(b"connection")), (403, b"close"))
        yield c.closed

    @inlineCallbacks
    def test_errorPage(self) -> Any:
        """A 503 lbkit gives itself carries the frontend's page."""
        be = backend("app", [self.site("app1")[0]])
        be.servers[0].setState(ServerState.DOWN)
        port = self.frontend(default=be, errorPages={503: errorPage(b"<h1>back soon</h1>")})
        response, body = yield self.get(port, "/")
        self.assertEqual((response.code, body), (503, b"<h1>back soon</h1>"))
        self.assertEqual(response.header(b"content-type"), b"text/html; charset=utf-8")

    @inlineCallbacks
    def test_tarpit(self) -> Any:
        """A tarpit answers 500 after its (short) delay; beyond its limit, at once."""
        rule = tarpit(delay=0.2, limit=1)
        port = self.frontend(default=backend("app", [self.site("app1")[0]]), requestRules=[rule])
        heldNow: Deferred[None] = Deferred()
        apply = rule.apply

        def applied(request: Any, exchange: Any) -> Any:
            answer = apply(request, exchange)
            if not heldNow.called:
                heldNow.callback(None)
            return answer

        rule.apply = applied  # type: ignore[method-assign]
        first = yield self.client(port)
        first.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        yield heldNow
        second = yield self.client(port)
        second.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        [(over, _)] = yield second.responses(1)
        self.assertEqual(over.code, 500)
        self.assertEqual(first.parsed, [])
        [(held, _)] = yield first.responses(1)
        self.assertEqual((held.code, held.header(b"connection")), (500, b"close"))
        yield gatherResults([first.closed, second.closed])
        self.assertEqual((rule.held, rule.overflowed), (0, 1))


class HTTP2RuleTests(HTTP2TestCase):
    """
    Over HTTP/2: answers from the balancer and error pages end the stream,
    not the connection.
    """

    @inlineCallbacks
    def test_answersAndPages(self) -> Any:
        """redirect, respond, deny and an error page, each on its own stream of one connection."""
        down = backend("down", [self.site("d1")[0]])
        down.servers[0].setState(ServerState.DOWN)
        port = self.tlsFrontend(
            [Route(pathBegins("/down"), down)],
            default=backend("app", [self.site("app1")[0]]),
            requestRules=[
                redirectScheme("http", when=pathBegins("/plain"), code=308),
                respond(200, b"pong", when=pathBegins("/ping")),
                deny(when=pathBegins("/admin")),
            ],
            errorPages={503: errorPage(b"maintenance", contentType="text/plain"), 403: b"<p>no</p>"},
        )
        client = yield self.h2client(port)
        results = yield gatherResults([client.request(p) for p in ("/plain/a?b=1", "/ping", "/admin", "/down", "/ok")])
        (s1, h1, _), (s2, _, b2), (s3, h3, b3), (s4, h4, b4), (s5, _, b5) = results
        self.assertEqual((s1, h1[b"location"]), (308, b"http://a.example/plain/a?b=1"))
        self.assertEqual((s2, b2), (200, b"pong"))
        self.assertEqual((s3, b3, h3[b"content-type"]), (403, b"<p>no</p>", b"text/html; charset=utf-8"))
        self.assertEqual((s4, b4, h4[b"content-type"]), (503, b"maintenance", b"text/plain"))
        self.assertEqual((s5, json.loads(b5)["server"]), (200, "app1"))
        self.assertIsNone(client.goAway)
        status, _, body = yield client.request("/ping", method="POST", body=b"x" * 100000)
        self.assertEqual((status, body), (200, b"pong"))
        status, _, body = yield client.request("/ok")
        self.assertEqual(status, 200)


HAPROXY_CONFIG = """
global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind {bind}
    http-request redirect location https://x.example/fixed?y=2 code 307 if { path_beg /loc }
    http-request redirect scheme https code 301 if { path_beg /sch }
    http-request redirect scheme https code 308 drop-query if { path_beg /sdrop }
    http-request redirect prefix https://b.example code 302 if { path_beg /pre }
    http-request redirect prefix https://b.example/ code 302 if { path_beg /trail }
    http-request redirect prefix / code 303 if { path_beg /slash }
    http-request redirect prefix https://b.example code 302 drop-query if { path_beg /drop }
    http-request deny if { path_beg /deny }
    http-request deny deny_status 429 if { path_beg /slow }
    http-request return status 503 content-type "text/plain" string "maintenance" if { path_beg /ret }
    default_backend be
backend be
    server s1 127.0.0.1:%(port)d
"""


def lbkitRules() -> list[Any]:
    """The rules of L{HAPROXY_CONFIG}, in lbkit's words."""
    return [
        redirect("https://x.example/fixed?y=2", code=307, when=pathBegins("/loc")),
        redirectScheme("https", code=301, when=pathBegins("/sch")),
        redirectScheme("https", code=308, dropQuery=True, when=pathBegins("/sdrop")),
        redirectPrefix("https://b.example", when=pathBegins("/pre")),
        redirectPrefix("https://b.example/", when=pathBegins("/trail")),
        redirectPrefix("/", code=303, when=pathBegins("/slash")),
        redirectPrefix("https://b.example", dropQuery=True, when=pathBegins("/drop")),
        deny(when=pathBegins("/deny")),
        deny(status=429, when=pathBegins("/slow")),
        respond(503, b"maintenance", contentType="text/plain", when=pathBegins("/ret")),
    ]


class HAProxyOracleTests(HTTPTestCase):
    """
    The same requests through HAProxy, configured with the equivalent
    C{http-request redirect / deny / return} lines, and through lbkit: the
    same status, Location and (for C{return}) body.
    """

    timeout = 30

    @inlineCallbacks
    def test_sameAnswers(self) -> Any:
        """Every case gets from lbkit what it gets from HAProxy."""
        serverPort = self.site("app1")[0]
        haproxy, _ = startHAProxy(self, reactor, HAPROXY_CONFIG % {"port": serverPort})
        lbkit = self.frontend(default=backend("app", [serverPort]), requestRules=lbkitRules())
        cases = [
            (b"/loc/a?x=1", b"a.example"),
            (b"/sch/a?x=1", b"a.example"),
            (b"/sch/a?x=1", b"a.example:8080"),
            (b"/sch", b"A.Example"),
            (b"/sch/p", b"a.example:80"),
            (b"/sch/p", b"a.example:443"),
            (b"/sch/p", None),
            (b"/sdrop/a?x=1", b"a.example"),
            (b"/pre/x?y", b"h"),
            (b"/pre", b"h"),
            (b"/trail/x", b"h"),
            (b"/slash/q?z=1", b"h"),
            (b"/drop/a?b=1", b"h"),
            (b"/deny", b"h"),
            (b"/slow", b"h"),
            (b"/ret", b"h"),
            (b"/other", b"h"),
        ]
        for target, host in cases:
            if host is None:
                request = b"GET %s HTTP/1.0\r\n\r\n" % target
            else:
                request = b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, host)
            seen = []
            for port in (haproxy, lbkit):
                c = yield self.client(port)
                c.send(request)
                [(response, body)] = yield c.responses(1)
                c.transport.loseConnection()
                seen.append((response.code, response.header(b"location"), body if target == b"/ret" else None))
            self.assertEqual(seen[1], seen[0], f"{target!r} Host {host!r}: lbkit {seen[1]}, haproxy {seen[0]}")


class ExampleTests(TestCase):
    """
    examples/rules.py, started as a user would (C{twistd lbkit}), answers
    as its docstring says.
    """

    timeout = 30

    @inlineCallbacks
    def ask(self, target: bytes) -> Any:
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", 8089), client)
        client.send(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8089\r\n\r\n" % target)
        [(response, body)] = yield client.responses(1)
        client.transport.loseConnection()  # type: ignore[union-attr]
        yield client.closed
        return response, body

    @inlineCallbacks
    def test_rulesExample(self) -> Any:
        """Each rule of the example answers, and the rest reaches the demo servers."""
        cwd = tempfile.mkdtemp(prefix="lbkit-ex-")
        self.addCleanup(shutil.rmtree, cwd, True)
        watcher, process = startProcess(self, twistd("lbkit", "--config", os.path.join(EXAMPLES, "rules.py")), cwd)
        for label in ("frontend rules", "demo server web1", "demo server web2"):
            yield watcher.waitFor(f"{label} listening on")
        response, body = yield self.ask(b"/")
        self.assertEqual((response.code, body.strip() in (b"web1", b"web2")), (200, True))
        response, _ = yield self.ask(b"/account/me?x=1")
        self.assertEqual((response.code, response.header(b"location")), (301, b"https://127.0.0.1:8089/account/me?x=1"))
        response, _ = yield self.ask(b"/old/page")
        self.assertEqual((response.code, response.header(b"location")), (302, b"/new/page"))
        response, body = yield self.ask(b"/admin")
        self.assertEqual((response.code, body), (403, b"<h1>Forbidden</h1>\n"))
        response, body = yield self.ask(b"/healthz")
        self.assertEqual((response.code, body), (200, b"ok\n"))
        response, body = yield self.ask(b"/maintenance/")
        self.assertEqual(response.code, 503)
        self.assertIn(b"Back soon", body)
        yield stopCleanly(self, watcher, process)
        # (Ta, the last timer, is how long lbkit took to answer: 0 ms, or a
        # few on a loaded machine)
        self.assertRegex(watcher.output, r"rules rules/<NOSRV> 0/-1/-1/-1/\d+ 403")
