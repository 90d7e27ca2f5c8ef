"""
The per-request exchange lifecycle over real sockets on 127.0.0.1: the
plain path (a pooled connection, a round-robin turn, a small response
written with its head, no pause to undo) and the slower paths it falls
back to (a new connection, the queue, a retry, a body, a chunked
response, hooks), one after another on the same client connection.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor as _globalReactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol

from lbkit import Backend, Server
from lbkit.http import HTTPFrontendProtocol
from lbkit.http._frontend import HTTPProxyFactory
from tests.helpers import freePort
from tests.test_http_integration import HTTPTestCase, OneShot, backend

reactor: Any = _globalReactor


def served(body: bytes) -> str:
    """The name of the L{tests.test_http_integration.Info} server that answered."""
    return str(json.loads(body)["server"])


class KeepAliveLifecycleTests(HTTPTestCase):
    """One client connection's requests, each on a pooled server connection where one is idle."""

    @inlineCallbacks
    def test_pooledConnectionsReused(self) -> Any:
        """Keep-alive requests take turns on two servers, each over the one connection it made first."""
        (p1, site1), (p2, site2) = self.site("a1"), self.site("a2")
        port = self.frontend(default=backend("a", [p1, p2]))
        c = yield self.client(port)
        names = []
        for i in range(6):
            c.send(f"GET /x/{i} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            responses = yield c.responses(i + 1)
            response, body = responses[i]
            self.assertEqual(response.code, 200)
            self.assertEqual(json.loads(body)["uri"], f"/x/{i}")
            names.append(served(body))
        self.assertEqual(names, ["a1", "a2"] * 3)
        self.assertEqual((site1.connections, site2.connections), (1, 1))
        self.assertFalse(c.transport.disconnecting)

    @inlineCallbacks
    def test_plainAndSlowResponsesInTurn(self) -> Any:
        """A chunked response, a bodiless one and an upload between small ones: every answer is whole and in order."""
        p1, site = self.site("a1")
        port = self.frontend(default=backend("a", [p1]))
        c = yield self.client(port)
        requests = [
            b"GET /small HTTP/1.1\r\nHost: test\r\n\r\n",
            b"GET /chunked HTTP/1.1\r\nHost: test\r\n\r\n",
            b"GET /small HTTP/1.1\r\nHost: test\r\n\r\n",
            b"GET /status/204 HTTP/1.1\r\nHost: test\r\n\r\n",
            b"POST /up HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /small HTTP/1.1\r\nHost: test\r\n\r\n",
        ]
        for i, request in enumerate(requests):
            c.send(request)
            yield c.responses(i + 1)
        [small1, chunked, small2, empty, upload, small3] = c.parsed
        self.assertEqual(chunked[1], b"6\r\npart1,\r\n5\r\npart2\r\n0\r\n\r\n")  # (as framed)
        self.assertEqual((empty[0].code, empty[1]), (204, b""))
        self.assertEqual(json.loads(upload[1])["length"], 5)
        for response, body in (small1, small2, small3):
            self.assertEqual((response.code, json.loads(body)["uri"]), (200, "/small"))
        self.assertEqual(site.connections, 1)

    @inlineCallbacks
    def test_weightedTurns(self) -> Any:
        """Servers of two weights (not the plain turn) share requests by weight, one connection each."""
        (p1, site1), (p2, site2) = self.site("w1"), self.site("w2")
        be = Backend("w", [Server("w1", f"127.0.0.1:{p1}", weight=2), Server("w2", f"127.0.0.1:{p2}")])
        port = self.frontend(default=be)
        c = yield self.client(port)
        for i in range(6):
            c.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            yield c.responses(i + 1)
        self.assertEqual([served(body) for _, body in c.parsed], ["w1", "w2", "w1"] * 2)
        self.assertEqual((site1.connections, site2.connections), (1, 1))

    @inlineCallbacks
    def test_observersSeeResponses(self) -> Any:
        """A passive-health observer, when there is one, hears of every response, a 5xx as a failure."""
        p1, _ = self.site("o1")
        be = backend("o", [p1])
        seen: list[tuple[bool, str]] = []
        be.servers[0].addObserver(lambda server, ok, reason: seen.append((ok, reason)))
        port = self.frontend(default=be)
        c = yield self.client(port)
        for i, path in enumerate(["/", "/status/503", "/"]):
            c.send(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            yield c.responses(i + 1)
        self.assertEqual([r.code for r, _ in c.parsed], [200, 503, 200])
        self.assertEqual(
            [entry for entry in seen if entry[1].startswith("Layer7")],
            [(True, "Layer7 response"), (False, "Layer7 wrong status, code: 503"), (True, "Layer7 response")],
        )

    @inlineCallbacks
    def test_pipelined(self) -> Any:
        """Requests sent in one write are answered in order, the second after the first's plain path."""
        p1, _ = self.site("a1")
        port = self.frontend(default=backend("a", [p1]))
        c = yield self.client(port)
        c.send(b"GET /1 HTTP/1.1\r\nHost: test\r\n\r\nGET /2 HTTP/1.1\r\nHost: test\r\n\r\n")
        c.headRequests.append(False)
        responses = yield c.responses(2)
        self.assertEqual([json.loads(body)["uri"] for _, body in responses], ["/1", "/2"])


class Held(Protocol):
    """A server that answers each request head only when the test calls L{answer}."""

    waiting: list[Held] = []

    def __init__(self) -> None:
        self.buf = b""
        self.arrived: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" in self.buf:
            self.buf = b""
            Held.waiting.append(self)
            arrived, self.arrived = self.arrived, Deferred()
            arrived.callback(None)

    def answer(self, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class QueueLifecycleTests(HTTPTestCase):
    """A request that finds its only server full waits in the queue, then takes the connection freed."""

    @inlineCallbacks
    def test_fullServerWaits(self) -> Any:
        """The second client's request waits until the first is answered, then goes over the same server connection."""
        Held.waiting = []
        self.addCleanup(setattr, Held, "waiting", [])
        sport, factory = self.custom(Held)
        be = Backend("b", [Server("s1", f"127.0.0.1:{sport}", maxconn=1)], timeoutQueue=10)
        port = self.frontend(default=be)
        first = yield self.client(port)
        second = yield self.client(port)
        first.send(b"GET /first HTTP/1.1\r\nHost: test\r\n\r\n")
        yield _waitFor(lambda: bool(Held.waiting))
        second.send(b"GET /second HTTP/1.1\r\nHost: test\r\n\r\n")
        yield _waitFor(lambda: be.queueLength() == 1)
        self.assertEqual(second.parsed, [])
        Held.waiting.pop(0).answer(b"one")
        [(response, body)] = yield first.responses(1)
        self.assertEqual((response.code, body), (200, b"one"))
        yield _waitFor(lambda: bool(Held.waiting))
        Held.waiting.pop(0).answer(b"two")
        [(response, body)] = yield second.responses(1)
        self.assertEqual((response.code, body), (200, b"two"))
        self.assertEqual(len(factory.built), 1)
        # the first client's connection goes on after the wait of another
        first.send(b"GET /third HTTP/1.1\r\nHost: test\r\n\r\n")
        yield _waitFor(lambda: bool(Held.waiting))
        Held.waiting.pop(0).answer(b"three")
        responses = yield first.responses(2)
        self.assertEqual(responses[1][1], b"three")


class RetryLifecycleTests(HTTPTestCase):
    """A refused connect is retried on another server; the client sees only the answer."""

    @inlineCallbacks
    def test_retryAfterRefusedConnect(self) -> Any:
        """Every keep-alive request is answered by the server that listens, whichever the turn gave."""
        p2, site = self.site("up")
        be = Backend("r", [Server("down", f"127.0.0.1:{freePort()}"), Server("up", f"127.0.0.1:{p2}")], retries=2)
        port = self.frontend(default=be)
        c = yield self.client(port)
        for i in range(4):
            c.send(f"GET /{i} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            responses = yield c.responses(i + 1)
            response, body = responses[i]
            self.assertEqual((response.code, served(body)), (200, "up"))
        self.assertEqual(site.connections, 1)
        self.assertGreaterEqual(be.servers[0].connectFailures, 1)

    @inlineCallbacks
    def test_serverClosesPooledConnection(self) -> Any:
        """A pooled connection the server closed after answering is not reused: the next request connects again."""
        answered: list[OneShot] = []

        def answerAndClose(p: OneShot) -> None:
            answered.append(p)
            assert p.transport is not None
            p.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            p.transport.loseConnection()

        sport, factory = self.custom(lambda: OneShot(answerAndClose))
        port = self.frontend(default=Backend("c", [Server("s1", f"127.0.0.1:{sport}")]))
        c = yield self.client(port)
        for i in range(3):
            c.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            responses = yield c.responses(i + 1)
            self.assertEqual((responses[i][0].code, responses[i][1]), (200, b"ok"))
        self.assertEqual(len(factory.built), 3)


class Hooked(HTTPFrontendProtocol):
    """Records its hooks: a subclass that overrides them has them called on every request."""

    calls: list[tuple[str, str]] = []

    def routeRequest(self, request: Any) -> tuple[Backend, Any]:
        Hooked.calls.append(("route", request.path.decode()))
        return HTTPFrontendProtocol.routeRequest(self, request)

    def serverChosen(self, server: Server) -> None:
        Hooked.calls.append(("chosen", server.name))


class HookedFactory(HTTPProxyFactory):
    protocol = Hooked


class HookLifecycleTests(HTTPTestCase):
    """The plain path skips only the hooks nobody overrides."""

    @inlineCallbacks
    def test_overriddenHooksCalled(self) -> Any:
        """routeRequest and serverChosen of a subclass run for each keep-alive request."""
        Hooked.calls = calls = []
        (p1, _), (p2, _) = self.site("h1"), self.site("h2")
        port = self.frontend(default=backend("h", [p1, p2]), factory=HookedFactory)
        c = yield self.client(port)
        for i in range(3):
            c.send(f"GET /{i} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            yield c.responses(i + 1)
        self.assertEqual([served(body) for _, body in c.parsed], ["h1", "h2", "h1"])
        self.assertEqual(calls, [
            ("route", "/0"), ("chosen", "h1"), ("route", "/1"), ("chosen", "h2"), ("route", "/2"), ("chosen", "h1"),
        ])


def _turn() -> Deferred[None]:
    """A Deferred that fires a moment later."""
    d: Deferred[None] = Deferred()
    reactor.callLater(0.01, d.callback, None)
    return d


@inlineCallbacks
def _waitFor(condition: Any) -> Any:
    """Fires once C{condition()} is true (checked every reactor turn)."""
    while not condition():
        yield _turn()
