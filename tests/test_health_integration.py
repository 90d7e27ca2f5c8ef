"""
Health checks end to end on 127.0.0.1: a two-server backend behind a real
tcp frontend, started by L{LoadBalancerService}; one server stops
listening, is marked DOWN within fall x inter (+ one interval), traffic
moves to the other; it listens again, comes back UP within rise x inter
(+ one interval), and takes traffic again.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from lbkit import Backend, Server, ServerState, tcp
from lbkit.health import HTTPCheck, TCPCheck
from lbkit.interfaces import IServerListener
from lbkit.service import ListeningService, LoadBalancerService
from tests.helpers import TrackingProxyFactory
from tests.test_health_checks import TrackingFactory

reactor: Any = _reactor

INTER = 0.1
RISE = 2
FALL = 3
SLACK = 0.5  # scheduling noise on a loaded machine


class _Name(Resource):
    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render(self, request: Request) -> bytes:
        return f"{self.name}\n".encode()


class Web:
    """A tiny HTTP server that can stop and start again on the same port."""

    def __init__(self, name: str) -> None:
        self.name = name
        site = Site(_Name(name))
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]
        self.tracking = TrackingFactory(site)
        self.port = 0
        self.listening: IListeningPort | None = None

    @inlineCallbacks
    def start(self) -> Any:
        endpoint = TCP4ServerEndpoint(reactor, self.port, interface="127.0.0.1")
        self.listening = yield endpoint.listen(self.tracking)
        self.port = self.listening.getHost().port  # type: ignore[attr-defined]

    @inlineCallbacks
    def stop(self) -> Any:
        listening, self.listening = self.listening, None
        if listening is not None:
            yield listening.stopListening()
        for p in list(self.tracking.protocols):
            p.transport.abortConnection()
        yield self.tracking.allGone()


def waitForState(server: Server, state: ServerState) -> Deferred[tuple[float, str]]:
    """Fires with (time, reason) when C{server} next moves to C{state}."""
    d: Deferred[tuple[float, str]] = Deferred()

    @implementer(IServerListener)
    class Waiter:
        def stateChanged(self, s: Server, old: ServerState, new: ServerState, reason: str) -> None:
            if new is state and not d.called:
                server.removeListener(self)
                d.callback((reactor.seconds(), reason))

        def weightChanged(self, s: Server, old: int, new: int) -> None:
            pass

    server.addListener(Waiter())
    return d


class _Client(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"GET / HTTP/1.0\r\nHost: lb\r\n\r\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.done.callback(self.data)


class _ClientFactory(Factory):
    noisy = False

    def buildProtocol(self, addr: Any) -> _Client:
        return _Client()


class _Frontends(TrackingProxyFactory):
    """Remembers every factory built, to wait for its connections at the end."""

    factories: list[TrackingProxyFactory] = []

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        _Frontends.factories.append(self)


class FailoverTests(TestCase):
    timeout = 20

    @inlineCallbacks
    def setUp(self) -> Any:
        self.webs = [Web("web1"), Web("web2")]
        for web in self.webs:
            yield web.start()
            self.addCleanup(web.stop)
        self.servers = [Server(w.name, f"127.0.0.1:{w.port}") for w in self.webs]

    def startBalancer(self, check: Any) -> None:
        self.backend = Backend("app", self.servers, health=check)
        frontend = tcp.Frontend("tcp:0:interface=127.0.0.1", self.backend, log=False, factory=_Frontends)
        self.service = LoadBalancerService([frontend], reactor)
        self.service.startService()
        self.addCleanup(self.stopBalancer)
        listening = [s for s in self.service if isinstance(s, ListeningService)][0]
        assert listening.port is not None
        self.frontPort = listening.port.getHost().port  # type: ignore[attr-defined]

    @inlineCallbacks
    def stopBalancer(self) -> Any:
        yield self.service.stopService()
        # Wait for the proxied connections to finish closing.
        yield gatherResults([p.allGone() for f in _Frontends.factories for p in f.built])
        _Frontends.factories.clear()

    @inlineCallbacks
    def request(self) -> Any:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.frontPort)
        client = yield endpoint.connect(_ClientFactory())
        data = yield client.done
        return data.rsplit(b"\r\n\r\n", 1)[-1].strip().decode()

    @inlineCallbacks
    def failover(self, check: Any) -> Any:
        self.startBalancer(check)
        web1, server1 = self.webs[0], self.servers[0]
        answers = yield self.requests(6)
        self.assertEqual(sorted(set(answers)), ["web1", "web2"])

        down = waitForState(server1, ServerState.DOWN)
        killedAt = reactor.seconds()
        yield web1.stop()
        downAt, reason = yield down
        self.assertLessEqual(downAt - killedAt, FALL * INTER + INTER + SLACK)
        self.assertIn("check duration", reason)
        answers = yield self.requests(6)
        self.assertEqual(answers, ["web2"] * 6)

        up = waitForState(server1, ServerState.UP)
        restartedAt = reactor.seconds()
        yield web1.start()
        upAt, reason = yield up
        self.assertLessEqual(upAt - restartedAt, RISE * INTER + INTER + SLACK)
        answers = yield self.requests(6)
        self.assertEqual(sorted(set(answers)), ["web1", "web2"])
        return reason

    @inlineCallbacks
    def requests(self, n: int) -> Any:
        answers = []
        for _ in range(n):
            answer = yield self.request()
            answers.append(answer)
        return answers

    @inlineCallbacks
    def test_httpCheckFailover(self) -> None:
        """With an HTTPCheck, a stopped server leaves within fall x inter and returns within rise x inter."""
        reason = yield self.failover(HTTPCheck("/", interval=INTER, rise=RISE, fall=FALL, body="web"))
        self.assertTrue(reason.startswith("Layer7 check passed, check duration: "), reason)

    @inlineCallbacks
    def test_tcpCheckFailover(self) -> None:
        """With a TCPCheck, a stopped server leaves within fall x inter and returns within rise x inter."""
        reason = yield self.failover(TCPCheck(interval=INTER, rise=RISE, fall=FALL))
        self.assertTrue(reason.startswith("Layer4 check passed, check duration: "), reason)

    @inlineCallbacks
    def test_passiveMarksDownBeforeActive(self) -> None:
        """Connect failures of live traffic mark a server DOWN long before a slow active check would."""
        self.startBalancer(TCPCheck(interval=30.0, fastinter=INTER, rise=1, observe="layer4", errorLimit=1,
                                    initState="fully-up"))
        server1 = self.servers[0]
        down = waitForState(server1, ServerState.DOWN)
        yield self.webs[0].stop()
        for _ in range(4):  # round robin sends one of these to web1, which refuses it
            yield self.request()
        at, reason = yield down
        self.assertIn("Detected 1 consecutive errors", reason)
        self.assertIn("Layer4 connection problem", reason)
        up = waitForState(server1, ServerState.UP)
        yield self.webs[0].start()
        yield up
