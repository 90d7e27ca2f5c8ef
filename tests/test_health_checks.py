"""
The built-in checks against real sockets on 127.0.0.1 (TCPCheck, HTTPCheck,
AgentCheck), and their contracts without sockets.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from lbkit import Backend, Server
from lbkit.error import CheckFailed, ConfigError
from lbkit.health import AgentCheck, HTTPCheck, TCPCheck, parseAgentReply

reactor: Any = _reactor


class TrackingFactory(WrappingFactory):
    """Wraps a server factory and tells when all its connections are gone."""

    noisy = False

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._waiting: list[Deferred[None]] = []

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def allGone(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if not self.protocols:
            d.callback(None)
        else:
            self._waiting.append(d)
        return d


@inlineCallbacks
def listen(testCase: TestCase, factory: Any, port: int = 0) -> Any:
    """
    Listen on 127.0.0.1 with C{factory}; clean up by closing the port and
    waiting for every accepted connection to end.

    @return: A L{Deferred} firing with C{(listeningPort, trackingFactory)}.
    """
    tracking = TrackingFactory(factory)
    listening: IListeningPort = yield TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(tracking)

    def cleanup() -> Deferred[Any]:
        d = Deferred.fromCoroutine(_close(listening, tracking))
        return d

    testCase.addCleanup(cleanup)
    return listening, tracking


async def _close(listening: IListeningPort, tracking: TrackingFactory) -> None:
    await listening.stopListening()  # type: ignore[misc]
    for p in list(tracking.protocols):
        p.transport.abortConnection()  # type: ignore[attr-defined]
    await tracking.allGone()


@inlineCallbacks
def closedPort(testCase: TestCase) -> Any:
    """A port number on 127.0.0.1 where nothing listens."""
    port: IListeningPort = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(Protocol))
    number = port.getHost().port  # type: ignore[attr-defined]
    yield port.stopListening()
    return number


class _Page(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[bytes, bytes | None, bytes]] = []
        self.hung: list[Request] = []
        self.hangStarted: Deferred[None] = Deferred()

    def render(self, request: Request) -> Any:
        self.requests.append((request.method, request.getHeader(b"host"), request.path))
        path = request.path
        if path == b"/ok":
            return b"all good"
        if path == b"/fail":
            request.setResponseCode(500)
            return b"broken"
        if path == b"/redirect":
            request.setResponseCode(302)
            return b""
        if path == b"/nocontent":
            request.setResponseCode(204)
            return b""
        if path == b"/big":
            return b"x" * 100000 + b"NEEDLE"
        if path == b"/hang":
            self.hung.append(request)
            if not self.hangStarted.called:
                self.hangStarted.callback(None)
            return NOT_DONE_YET
        request.setResponseCode(404)
        return b"not found"


def makeSite() -> tuple[Site, _Page]:
    page = _Page()
    site = Site(page)
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site, page


class ContractTests(SynchronousTestCase):
    def test_tcpCancelIsLeftToTheMonitor(self) -> None:
        """Cancelling a TCP check (the monitor's timeout) stops the connect and stays a CancelledError."""
        memory = MemoryReactorClock()
        d = TCPCheck(timeout=3).check(Server("s", "127.0.0.1:1234"), memory)
        host, port, factory, timeout, bind = memory.tcpClients[0]
        self.assertEqual((host, port, timeout), ("127.0.0.1", 1234, 3))
        d.cancel()
        self.failureResultOf(d, CancelledError)

    def test_checkAddressOverride(self) -> None:
        """addr and port send the check elsewhere than the traffic."""
        memory = MemoryReactorClock()
        for check in [TCPCheck(addr="127.0.0.9", port=8081), TCPCheck(port=8082)]:
            d = check.check(Server("s", "127.0.0.1:1234"), memory)
            d.cancel()
            self.failureResultOf(d, CancelledError)
        self.assertEqual([c[:2] for c in memory.tcpClients], [("127.0.0.9", 8081), ("127.0.0.1", 8082)])

    def test_httpStatusMatching(self) -> None:
        """status takes a code, a range or a list; the default passes 2xx and 3xx."""
        self.assertTrue(HTTPCheck().statusMatches(302))
        self.assertFalse(HTTPCheck().statusMatches(404))
        self.assertTrue(HTTPCheck(status=204).statusMatches(204))
        self.assertFalse(HTTPCheck(status=204).statusMatches(200))
        self.assertTrue(HTTPCheck(status=[200, 401]).statusMatches(401))
        self.assertTrue(HTTPCheck(status=range(500, 504)).statusMatches(503))

    def test_httpBodyMatching(self) -> None:
        """body takes a substring (str or bytes) or a compiled regex."""
        self.assertTrue(HTTPCheck(body="good").bodyMatches(b"all good"))
        self.assertTrue(HTTPCheck(body=b"good").bodyMatches(b"all good"))
        self.assertFalse(HTTPCheck(body="bad").bodyMatches(b"all good"))
        self.assertTrue(HTTPCheck(body=re.compile(r"^all\s+\w+$")).bodyMatches(b"all good"))
        self.assertTrue(HTTPCheck(body=re.compile(rb"go+d")).bodyMatches(b"all good"))

    def test_httpBadOptions(self) -> None:
        """Bad HTTPCheck options raise ConfigError."""
        for kw in [dict(path="healthz"), dict(method="GE T"), dict(status=99), dict(status=[]),
                   dict(body=5), dict(host="a b"), dict(headers={"x": 1}), dict(maxBody=0),
                   dict(method="GET\n"), dict(headers={"X-A\n": "1"})]:
            self.assertRaises(ConfigError, HTTPCheck, **kw)

    def test_agentNeedsPort(self) -> None:
        """AgentCheck requires port=."""
        self.assertRaises(ConfigError, AgentCheck)

    def test_parseAgentReply(self) -> None:
        """Agent replies are words: state, weight percent, maxconn, and a # message."""
        r = parseAgentReply(b"up 75%\n")
        self.assertEqual((r.state, r.percent, r.maxconn), ("up", 75, None))
        r = parseAgentReply(b"maxconn:30, drain")
        self.assertEqual((r.state, r.maxconn), ("drain", 30))
        r = parseAgentReply(b"down #disk full\r\n")
        self.assertEqual((r.state, r.message), ("down", "disk full"))
        r = parseAgentReply(b"whatever")
        self.assertEqual((r.state, r.percent), (None, None))

    def test_agentApply(self) -> None:
        """An agent reply changes weight and maxconn, and fails the check for down words."""
        server = Server("s", "127.0.0.1:1", weight=8)
        Backend("be", [server])
        check = AgentCheck(port=1)
        check.apply(server, parseAgentReply(b"50% maxconn:7"))
        self.assertEqual((server.weight, server.maxconn), (4, 7))
        check.apply(server, parseAgentReply(b"drain"))
        self.assertEqual(server.weight, 0)
        check.apply(server, parseAgentReply(b"ready"))
        self.assertEqual(server.weight, 8)
        e = self.assertRaises(CheckFailed, check.apply, server, parseAgentReply(b"stopped #deploy"))
        self.assertEqual(str(e), 'Layer7 agent reports stopped, info: "deploy"')


class TCPCheckTests(TestCase):
    timeout = 10

    @inlineCallbacks
    def test_listeningPortPasses(self) -> None:
        """A port that accepts the connection passes."""
        port, tracking = yield listen(self, Factory.forProtocol(Protocol))
        server = Server("s", f"127.0.0.1:{port.getHost().port}")
        result = yield TCPCheck().check(server, reactor)
        self.assertIsNone(result)

    @inlineCallbacks
    def test_closedPortFails(self) -> None:
        """A refused connection fails with a Layer4 reason."""
        number = yield closedPort(self)
        d = TCPCheck().check(Server("s", f"127.0.0.1:{number}"), reactor)
        e = yield self.assertFailure(d, CheckFailed)
        self.assertEqual(str(e), 'Layer4 connection problem, info: "Connection refused"')

    @inlineCallbacks
    def test_checkPortOverride(self) -> None:
        """port= checks another port than the traffic's."""
        number = yield closedPort(self)
        port, tracking = yield listen(self, Factory.forProtocol(Protocol))
        server = Server("s", f"127.0.0.1:{number}")
        yield TCPCheck(port=port.getHost().port).check(server, reactor)


class HTTPCheckTests(TestCase):
    timeout = 10

    @inlineCallbacks
    def setUp(self) -> Any:
        self.site, self.page = makeSite()
        port, self.tracking = yield listen(self, self.site)
        self.port = port.getHost().port
        self.server = Server("s", f"127.0.0.1:{self.port}")

    def run_(self, check: HTTPCheck) -> Deferred[None]:
        return check.check(self.server, reactor)

    @inlineCallbacks
    def test_okPasses(self) -> None:
        """A 200 answer passes; the request uses the method, path and a Host header."""
        yield self.run_(HTTPCheck("/ok"))
        self.assertEqual(self.page.requests, [(b"GET", f"127.0.0.1:{self.port}".encode(), b"/ok")])

    @inlineCallbacks
    def test_methodAndHost(self) -> None:
        """method= and host= are sent as given."""
        yield self.run_(HTTPCheck("/ok", method="HEAD", host="app.example"))
        self.assertEqual(self.page.requests, [(b"HEAD", b"app.example", b"/ok")])

    @inlineCallbacks
    def test_serverErrorFails(self) -> None:
        """A 500 answer fails with HAProxy's reason."""
        e = yield self.assertFailure(self.run_(HTTPCheck("/fail")), CheckFailed)
        self.assertEqual(str(e), "Layer7 wrong status, code: 500")

    @inlineCallbacks
    def test_statusList(self) -> None:
        """An expected status list decides; 302 passes by default, 204 only when listed."""
        yield self.run_(HTTPCheck("/redirect"))
        yield self.run_(HTTPCheck("/nocontent", status=[200, 204]))
        e = yield self.assertFailure(self.run_(HTTPCheck("/ok", status=204)), CheckFailed)
        self.assertEqual(str(e), "Layer7 wrong status, code: 200")

    @inlineCallbacks
    def test_bodyMatch(self) -> None:
        """An expected body substring or regex must be found."""
        yield self.run_(HTTPCheck("/ok", body="good"))
        yield self.run_(HTTPCheck("/ok", body=re.compile(r"all\s+good")))
        e = yield self.assertFailure(self.run_(HTTPCheck("/ok", body="healthy")), CheckFailed)
        self.assertEqual(str(e), 'Layer7 wrong content, code: 200, info: "body did not match"')

    @inlineCallbacks
    def test_bodyReadIsBounded(self) -> None:
        """Only maxBody bytes of the body are read."""
        yield self.run_(HTTPCheck("/big", body="NEEDLE", maxBody=200000))
        yield self.assertFailure(self.run_(HTTPCheck("/big", body="NEEDLE")), CheckFailed)

    @inlineCallbacks
    def test_cancelAfterConnectIsLayer7Timeout(self) -> None:
        """A check cancelled while the server thinks (the monitor's timeout) fails as a Layer7 timeout."""
        d = self.run_(HTTPCheck("/hang"))
        yield self.page.hangStarted
        d.cancel()
        e = yield self.assertFailure(d, CheckFailed)
        self.assertEqual(str(e), "Layer7 timeout")
        for request in self.page.hung:
            request.channel.transport.abortConnection()  # type: ignore[union-attr]

    @inlineCallbacks
    def test_closedPortFails(self) -> None:
        """A refused connection fails with a Layer4 reason."""
        number = yield closedPort(self)
        d = HTTPCheck("/ok").check(Server("s", f"127.0.0.1:{number}"), reactor)
        e = yield self.assertFailure(d, CheckFailed)
        self.assertEqual(str(e), 'Layer4 connection problem, info: "Connection refused"')

    @inlineCallbacks
    def test_notHTTPFails(self) -> None:
        """A server that does not speak HTTP fails with a Layer7 reason."""

        class Garbage(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(b"SSH-2.0-nope\r\n\r\n")  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]

        port, tracking = yield listen(self, Factory.forProtocol(Garbage))
        d = HTTPCheck("/").check(Server("g", f"127.0.0.1:{port.getHost().port}"), reactor)
        e = yield self.assertFailure(d, CheckFailed)
        self.assertTrue(str(e).startswith("Layer7 invalid response"), str(e))


class AgentCheckTests(TestCase):
    timeout = 10

    @inlineCallbacks
    def agentSays(self, reply: bytes) -> Any:
        received: list[bytes] = []

        class Agent(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)

            def connectionMade(self) -> None:
                self.transport.write(reply)  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]

        port, tracking = yield listen(self, Factory.forProtocol(Agent))
        return port.getHost().port

    @inlineCallbacks
    def test_weightFromAgent(self) -> None:
        """A percentage from the agent sets the weight, and the check passes."""
        agentPort = yield self.agentSays(b"up 50%\n")
        server = Server("s", "127.0.0.1:1", weight=10)
        Backend("be", [server])
        yield AgentCheck(port=agentPort).check(server, reactor)
        self.assertEqual(server.weight, 5)

    @inlineCallbacks
    def test_downFromAgent(self) -> None:
        """An agent saying down fails the check with its message."""
        agentPort = yield self.agentSays(b"down #disk full\n")
        d = AgentCheck(port=agentPort).check(Server("s", "127.0.0.1:1"), reactor)
        e = yield self.assertFailure(d, CheckFailed)
        self.assertEqual(str(e), 'Layer7 agent reports down, info: "disk full"')
