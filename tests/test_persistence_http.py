"""
Cookie persistence end to end: a real HTTP client with a cookie jar
(treq) through an http frontend to real Twisted web servers on 127.0.0.1.
"""

from __future__ import annotations

from http.cookiejar import CookieJar
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from lbkit import Backend, Server, http
from lbkit.persistence import Cookie


class Recorder(Resource):
    """Answers with its name and records every Cookie header it sees."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.cookies: list[bytes | None] = []

    def render_GET(self, request: Request) -> bytes:
        self.cookies.append(request.getHeader(b"cookie"))
        return self.name.encode() + b"\n"


class TrackingSite(Site):
    """A Site that can drop every connection it accepted, as a dying server does."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.channels: list[Any] = []
        self.closed: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        self.channels.append(channel)
        lost: Deferred[None] = Deferred()
        self.closed.append(lost)
        original = channel.connectionLost

        def connectionLost(reason: Any) -> None:
            original(reason)
            lost.callback(None)

        channel.connectionLost = connectionLost
        return channel

    def dropAll(self) -> Deferred[Any]:
        """Abort every open connection; fires when all are gone."""
        for channel in self.channels:
            # Site wraps each HTTPChannel; the transport is on the inner one
            transport = getattr(getattr(channel, "_channel", channel), "transport", None)
            if transport is not None:
                transport.abortConnection()
        return gatherResults(self.closed)

    def log(self, request: Any) -> None:
        pass


class CookieJarTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        self.recorders = {}
        self.ports = {}
        self.sites: dict[str, TrackingSite] = {}
        servers = []
        for name in ("s1", "s2"):
            recorder = self.recorders[name] = Recorder(name)
            site = self.sites[name] = TrackingSite(recorder)
            port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
            self.ports[name] = port
            self.addCleanup(self._stop, name)
            servers.append(Server(name, f"127.0.0.1:{port.getHost().port}"))
        self.backend = Backend("app", servers, persistence=Cookie("SERVERID", indirect=True, nocache=True))
        frontend = http.Frontend("tcp:0:interface=127.0.0.1", default=self.backend, log=False)
        service = frontend.makeService(reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.url = f"http://127.0.0.1:{service.port.getHost().port}/"  # type: ignore[attr-defined]
        self.jar = CookieJar()
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        self.client = HTTPClient(Agent(reactor, pool=pool), cookiejar=self.jar)

    def _stop(self, name: str) -> Any:
        port = self.ports.pop(name, None)
        if port is None:
            return None
        return gatherResults([port.stopListening(), self.sites[name].dropAll()])

    @inlineCallbacks
    def fetch(self, n: int) -> Any:
        answers = []
        for _ in range(n):
            response = yield self.client.get(self.url)
            self.assertEqual(response.code, 200)
            body = yield response.text()
            answers.append(body.strip())
        return answers

    @inlineCallbacks
    def test_staysThenMovesOnce(self) -> Any:
        """100 requests stay on one server; when it dies the client moves once and stays."""
        answers = yield self.fetch(100)
        self.assertEqual(len(answers), 100)
        self.assertEqual(len(set(answers)), 1, answers)
        first = answers[0]
        other = "s2" if first == "s1" else "s1"
        yield self._stop(first)
        answers = yield self.fetch(20)
        self.assertEqual(answers, [other] * 20)

    @inlineCallbacks
    def test_indirectHidesCookie(self) -> Any:
        """With indirect, no server ever sees the persistence cookie."""
        yield self.fetch(10)
        seen = [c for r in self.recorders.values() for c in r.cookies]
        self.assertEqual(len(seen), 10)
        self.assertFalse([c for c in seen if c and b"SERVERID" in c], seen)
        self.assertIn("SERVERID", [c.name for c in self.jar])
