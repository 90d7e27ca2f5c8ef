"""
The stats page against hostile clients: request bodies are refused before
they are read, credentials are checked before any body, and failed admin
logins are throttled.  Real sockets on 127.0.0.1, except the L{Clock}
driven tests of the throttle's windows and limits.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Callable

from twisted.application.service import IService, IServiceCollection
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from lbkit import Backend, Server, ServerState, stats, tcp
from lbkit.demo import HelloServer
from lbkit.error import ConfigError
from lbkit.service import ListeningService, LoadBalancerService
from lbkit.stats import _site
from tests.test_stats import Client, makeSite
from tests.test_tls_pki import makePKI

#: What the page accepts as the body of an admin POST.
CAP = 8192

#: How long a test waits for the page to answer and close.
WAIT = 5.0


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def head(method: str, path: str, *headers: tuple[str, str | bytes]) -> bytes:
    """A request head: the request line, C{Host} and C{headers}, then the blank line."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    for name, value in headers:
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    return b"\r\n".join(lines) + b"\r\n\r\n"


class Answer:
    """A parsed HTTP answer: C{code}, lower-cased C{headers}, C{body}."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        if raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):
            raise AssertionError("the page said 100 Continue, inviting the body")
        top, _, self.body = raw.partition(b"\r\n\r\n")
        lines = top.split(b"\r\n")
        match = re.match(rb"HTTP/1\.[01] (\d{3}) ", lines[0] + b" ")
        if match is None:
            raise AssertionError(f"not an HTTP answer: {raw[:200]!r}")
        self.code = int(match.group(1))
        self.negotiated: bytes | None = None
        self.headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower()] = value.strip()

    def json(self) -> Any:
        return json.loads(self.body)


class RawClient(Protocol):
    """Writes C{toSend} on connecting and collects what comes back."""

    def __init__(self, toSend: bytes) -> None:
        self.toSend = toSend
        self.received = b""
        self.gone = False
        self.negotiated: bytes | None = None
        self._waiting: list[defer.Deferred[bytes]] = []

    def whenClosed(self) -> defer.Deferred[bytes]:
        """A L{Deferred} firing with all that was received once the connection is gone."""
        d: defer.Deferred[bytes] = defer.Deferred()
        if self.gone:
            d.callback(self.received)
        else:
            self._waiting.append(d)
        return d

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.toSend)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.negotiated = getattr(self.transport, "negotiatedProtocol", None)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.gone = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self.received)


@implementer(IHalfCloseableProtocol)
class StubbornClient(RawClient):
    """
    A L{RawClient} that keeps its side open after the page's end of file;
    C{eof} fires then.
    """

    def __init__(self, toSend: bytes) -> None:
        super().__init__(toSend)
        self.eof: defer.Deferred[None] = defer.Deferred()

    def readConnectionLost(self) -> None:
        self.eof.callback(None)

    def writeConnectionLost(self) -> None:
        pass


def _listening(service: Any) -> list[ListeningService]:
    found = [service] if isinstance(service, ListeningService) else []
    if IServiceCollection.providedBy(service):
        for child in service:
            found.extend(_listening(child))
    return found


class RealPageMixin:
    """Starts a page (or a whole site) on the real reactor, port 0."""

    timeout = 15

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.serverSides: list[defer.Deferred[None]] = []

    def startService(self, service: IService, label: str = "stats page") -> int:
        """Start C{service}; stop it in cleanup; return the port of C{label}."""
        test: TestCase = self  # type: ignore[assignment]
        service.startService()
        test.addCleanup(service.stopService)
        test.addCleanup(self.serverSidesGone)
        [listening] = [s for s in _listening(service) if s.label == label]
        assert listening.port is not None
        self.track(listening.factory)
        return int(listening.port.getHost().port)  # type: ignore[attr-defined]

    def track(self, factory: Any) -> None:
        """Remember a L{Deferred} per connection C{factory} builds, fired when it is gone."""
        build = factory.buildProtocol

        def buildProtocol(addr: Any) -> Any:
            protocol = build(addr)
            gone: defer.Deferred[None] = defer.Deferred()
            self.serverSides.append(gone)
            lost = protocol.connectionLost

            def connectionLost(reason: Failure) -> None:
                lost(reason)
                gone.callback(None)

            protocol.connectionLost = connectionLost
            return protocol

        factory.buildProtocol = buildProtocol

    def serverSidesGone(self) -> defer.Deferred[Any]:
        d = defer.gatherResults(self.serverSides)
        return d.addTimeout(WAIT, self.reactor)

    def startPage(self, admin: stats.Admin | None = None, endpoint: str = "tcp:0:interface=127.0.0.1",
                  ) -> tuple[int, Backend]:
        web = Backend("web", [Server("web1", "127.0.0.1:9031"), Server("web2", "127.0.0.1:9032")])
        frontend = tcp.Frontend("tcp:0:interface=127.0.0.1", backend=web, name="web-in")
        page = stats.Page(endpoint, admin=admin)
        page.bindSite([frontend, page])
        return self.startService(page.makeService(self.reactor)), web

    def connect(self, port: int, toSend: bytes, tls: Any = None, client: RawClient | None = None) -> RawClient:
        """Connect to C{port} (over TLS with C{tls}, client options) and send C{toSend}."""
        test: TestCase = self  # type: ignore[assignment]
        client = RawClient(toSend) if client is None else client
        endpoint: Any = TCP4ClientEndpoint(self.reactor, "127.0.0.1", port)
        if tls is not None:
            endpoint = wrapClientTLS(tls, endpoint)
        d = connectProtocol(endpoint, client)

        def abort() -> defer.Deferred[Any] | None:
            if client.gone or client.transport is None:
                return None
            client.transport.abortConnection()  # type: ignore[attr-defined]
            return client.whenClosed()

        test.addCleanup(abort)
        d.addErrback(lambda f: client.connectionLost(f))
        return client

    @defer.inlineCallbacks
    def exchange(self, port: int, toSend: bytes, tls: Any = None) -> Any:
        """
        Send C{toSend} and nothing more; the page must answer and close the
        connection within L{WAIT} seconds.
        """
        client = self.connect(port, toSend, tls)
        try:
            raw = yield client.whenClosed().addTimeout(WAIT, self.reactor)
        except defer.TimeoutError:
            raise AssertionError(
                f"no answer and close within {WAIT}s to {toSend[:80]!r}; got {client.received[:200]!r}"
            ) from None
        answer = Answer(raw)
        answer.negotiated = client.negotiated
        return answer


class BodyTests(RealPageMixin, TestCase):
    """What the page does with request bodies it was never going to use."""

    @defer.inlineCallbacks
    def test_hugeBodyOnReadOnlyPageRefusedAtOnce(self) -> Any:
        """
        A 200 MB upload to any route of a read-only page is answered 413 as
        soon as its head arrives, and the connection is closed: the body is
        never waited for.
        """
        port, _ = self.startPage()
        for method, path in (("POST", "/"), ("GET", "/"), ("POST", "/stats.json"), ("POST", "/metrics"),
                             ("POST", "/admin/server")):
            answer = yield self.exchange(port, head(method, path, ("Content-Length", "200000000")) + b"x" * 10)
            self.assertEqual(answer.code, 413, (method, path))
            self.assertEqual(answer.headers[b"connection"], b"close")
            self.assertIn("body", answer.json()["error"])

    @defer.inlineCallbacks
    def test_chunkedBodyOnReadOnlyRouteRefused(self) -> Any:
        """A chunked body on a route that takes none is refused before its first chunk is read."""
        port, _ = self.startPage()
        answer = yield self.exchange(port, head("GET", "/stats.json", ("Transfer-Encoding", "chunked")) + b"5\r\nhello\r\n")
        self.assertEqual(answer.code, 413)

    @defer.inlineCallbacks
    def test_unauthenticatedBodyRefusedBeforeItIsRead(self) -> Any:
        """
        An admin POST with no or wrong credentials and a 200 MB body gets
        401 and a closed connection at once, without a C{100 Continue}.
        """
        port, web = self.startPage(stats.Admin(users={"admin": "secret"}))
        for auth in ((), (("Authorization", basic("admin", "wrong")),)):
            request = head("POST", "/admin/server?backend=web&server=web1&action=drain",
                           ("Content-Length", "200000000"), ("Expect", "100-continue"),
                           ("Content-Type", "multipart/form-data; boundary=x"), *auth)
            answer = yield self.exchange(port, request + b"--x\r\n")
            self.assertEqual(answer.code, 401, auth)
            self.assertEqual(answer.headers[b"www-authenticate"], b'Basic realm="lbkit", charset="UTF-8"')
        self.assertIs(web.servers[0].state, ServerState.UP)

    @defer.inlineCallbacks
    def test_adminBodyCapped(self) -> Any:
        """An admin's POST declaring more than 8 KiB of body is refused with 413 before it is read."""
        port, web = self.startPage(stats.Admin(users={"admin": "secret"}))
        for length in (200_000_000, CAP + 1):
            request = head("POST", "/admin/server?backend=web&server=web1&action=drain",
                           ("Content-Length", str(length)), ("Authorization", basic("admin", "secret")),
                           ("X-LBKit-Admin", "1"))
            answer = yield self.exchange(port, request + b"x" * 10)
            self.assertEqual(answer.code, 413, length)
        self.assertIs(web.servers[0].state, ServerState.UP)

    @defer.inlineCallbacks
    def test_chunkedAdminBodyCutAtCap(self) -> Any:
        """A chunked admin body is cut with 413 as soon as it passes 8 KiB, before its end arrives."""
        port, web = self.startPage(stats.Admin(users={"admin": "secret"}))
        request = head("POST", "/admin/server?backend=web&server=web1&action=drain",
                       ("Transfer-Encoding", "chunked"), ("Authorization", basic("admin", "secret")),
                       ("X-LBKit-Admin", "1"))
        chunk = b"400\r\n" + b"a" * 1024 + b"\r\n"
        answer = yield self.exchange(port, request + chunk * (CAP // 1024 + 1))
        self.assertEqual(answer.code, 413)
        self.assertIs(web.servers[0].state, ServerState.UP)

    @defer.inlineCallbacks
    def test_tlsPageRefusesBodiesToo(self) -> Any:
        """
        A page on an C{ssl:} endpoint speaks HTTP/1.1 (never HTTP/2, whose
        streams would get past the checks) and refuses a 200 MB upload at once.
        """
        pki = makePKI(self)
        cert = pki.issue("stats.pem", "stats.example", separateKey=True)
        port, _ = self.startPage(endpoint=f"ssl:0:interface=127.0.0.1:privateKey={cert}.key:certKey={cert}")
        with open(pki.caFile) as f:
            ca = Certificate.loadPEM(f.read())
        tls = optionsForClientTLS("stats.example", trustRoot=ca, acceptableProtocols=[b"h2", b"http/1.1"])
        answer = yield self.exchange(port, head("POST", "/", ("Content-Length", "200000000")) + b"x" * 10, tls)
        self.assertEqual(answer.negotiated, b"http/1.1")
        self.assertEqual(answer.code, 413)

    @defer.inlineCallbacks
    def test_refusedUploadIsCutOff(self) -> Any:
        """
        A client that keeps sending after its 413 is cut off once the page
        has thrown away 256 KiB, having had its answer first.
        """
        port, _ = self.startPage()
        client = StubbornClient(head("POST", "/", ("Content-Length", "200000000")) + b"x" * (1 << 20))
        self.connect(port, b"", client=client)
        try:
            raw = yield client.whenClosed().addTimeout(WAIT, self.reactor)
        except defer.TimeoutError:
            raise AssertionError("the page kept reading a refused upload") from None
        self.assertEqual(Answer(raw).code, 413)

    @defer.inlineCallbacks
    def test_refusedConnectionLingersBriefly(self) -> Any:
        """
        After a refusal the page closes its sending side at once, and
        aborts a connection the client leaves open once the linger time
        (2 s; shortened here) is over.
        """
        self.patch(_site, "LINGER", 0.2)
        port, _ = self.startPage()
        client = StubbornClient(head("GET", "/", ("Content-Length", "5")))
        self.connect(port, b"", client=client)
        try:
            yield client.eof.addTimeout(WAIT, self.reactor)
            [pageSide] = self.serverSides
            yield pageSide.addTimeout(WAIT, self.reactor)
        except defer.TimeoutError:
            raise AssertionError("the page kept a refused connection open") from None
        self.assertEqual(Answer(client.received).code, 413)

    @defer.inlineCallbacks
    def test_oneAnswerPerRefusal(self) -> Any:
        """
        Bytes after the point of refusal are not parsed: malformed chunks
        behind an oversized one do not add a 400 after the 413.
        """
        port, _ = self.startPage(stats.Admin(users={"admin": "secret"}))
        request = head("POST", "/admin/server", ("Transfer-Encoding", "chunked"),
                       ("Authorization", basic("admin", "secret")))
        answer = yield self.exchange(port, request + b"%x\r\n" % (CAP + 1) + b"a" * (CAP + 1) + b"\r\nZZ junk\r\n")
        self.assertEqual(answer.code, 413)
        self.assertNotIn(b"HTTP/1.1 400", answer.body)

    @defer.inlineCallbacks
    def test_smallAdminBodiesStillWork(self) -> Any:
        """
        The admin page's form POST (a small urlencoded body, plain or
        chunked) still changes the server, and GET pages keep the
        connection alive.
        """
        admin = stats.Admin(users={"admin": "secret"})
        port, web = self.startPage(admin)
        form = f"backend=web&server=web1&action=drain&from=page&token={admin.token('admin')}".encode()
        post = head("POST", "/admin/server", ("Authorization", basic("admin", "secret")),
                    ("Content-Type", "application/x-www-form-urlencoded"), ("Content-Length", str(len(form))),
                    ("Connection", "close"))
        answer = yield self.exchange(port, post + form)
        self.assertEqual(answer.code, 303, answer.raw)
        self.assertIs(web.servers[0].state, ServerState.DRAIN)

        form = form.replace(b"drain", b"maint")
        chunked = head("POST", "/admin/server", ("Authorization", basic("admin", "secret")),
                       ("Content-Type", "application/x-www-form-urlencoded"), ("Transfer-Encoding", "chunked"),
                       ("Connection", "close"))
        answer = yield self.exchange(port, chunked + b"%x\r\n%s\r\n0\r\n\r\n" % (len(form), form))
        self.assertEqual(answer.code, 303, answer.raw)
        self.assertIs(web.servers[0].state, ServerState.MAINT)

        twice = head("GET", "/stats.json") + head("GET", "/metrics", ("Connection", "close"))
        answer = yield self.exchange(port, twice)
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.raw.count(b"HTTP/1.1 200 OK\r\n"), 2)

    @defer.inlineCallbacks
    def test_proxyServedWhileStatsClientUploads(self) -> Any:
        """
        While a client is part-way through a 100 MB multipart upload to the
        stats page, proxied requests are served, and the upload has its 413
        already.
        """
        import treq

        hello = HelloServer("web1", "tcp:0:interface=127.0.0.1").makeService(self.reactor)
        helloPort = self.startService(hello, "demo server web1")
        web = Backend("web", [Server("web1", f"127.0.0.1:{helloPort}")])
        frontend = tcp.Frontend("tcp:0:interface=127.0.0.1", backend=web, name="web-in")
        page = stats.Page("tcp:0:interface=127.0.0.1")
        balancer = LoadBalancerService([frontend, page], reactor=self.reactor)
        statsPort = self.startService(balancer)
        [frontListener] = [s for s in _listening(balancer) if s.label == "frontend web-in"]
        assert frontListener.port is not None
        frontPort = frontListener.port.getHost().port  # type: ignore[attr-defined]

        upload = self.connect(statsPort, head(
            "POST", "/", ("Content-Length", "100000000"), ("Content-Type", "multipart/form-data; boundary=x"),
        ) + b"--x\r\n" + b"y" * 65536)
        for _ in range(3):
            response = yield treq.get(f"http://127.0.0.1:{frontPort}/", persistent=False)
            body = yield treq.content(response)
            self.assertEqual(body, b"web1\n")
        try:
            raw = yield upload.whenClosed().addTimeout(WAIT, self.reactor)
        except defer.TimeoutError:
            raise AssertionError("the stats page is still reading the upload") from None
        self.assertEqual(Answer(raw).code, 413)


class LoginThrottleSocketTests(RealPageMixin, TestCase):
    """Failed admin logins over real sockets."""

    @defer.inlineCallbacks
    def test_eleventhFailedLoginIs429(self) -> Any:
        """
        Ten rapid wrong passwords from one address get 401; the eleventh
        attempt, even with the right password, gets 429 with Retry-After.
        """
        port, _ = self.startPage(stats.Admin(users={"admin": "secret"}))
        for attempt in range(10):
            answer = yield self.exchange(port, head(
                "GET", "/admin/", ("Authorization", basic("admin", f"guess{attempt}")), ("Connection", "close")))
            self.assertEqual(answer.code, 401, attempt)
        for password in ("guess10", "secret"):
            answer = yield self.exchange(port, head(
                "GET", "/admin/", ("Authorization", basic("admin", password)), ("Connection", "close")))
            self.assertEqual(answer.code, 429, password)
            self.assertTrue(1 <= int(answer.headers[b"retry-after"]) <= 60, answer.headers)
            self.assertIn("too many failed logins", answer.json()["error"])


class LoginThrottleTests(SynchronousTestCase):
    """The throttle's windows and limits, on a L{Clock}, through the page's resources."""

    def setUp(self) -> None:
        self.admin = stats.Admin(users={"admin": "secret"})
        self.page, self.web, _, self.clock = makeSite(self.admin)
        self.client = Client(self, self.page, self.clock)

    def login(self, password: str | None) -> int:
        auth = None if password is None else ("admin", password)
        response, _ = self.client.get("/admin/", auth=auth)
        return int(response.code)

    def test_lockoutEndsAfterBackoff(self) -> None:
        """After ten failures the address is refused for 60 s, then the right password works again."""
        self.assertEqual([self.login("wrong") for _ in range(10)], [401] * 10)
        self.assertEqual(self.login("secret"), 429)
        self.clock.advance(59)
        response, _ = self.client.get("/admin/", auth=("admin", "secret"))
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["1"])
        self.clock.advance(1)
        self.assertEqual(self.login("secret"), 200)

    def test_windowForgetsOldFailures(self) -> None:
        """Failures older than the 60 s window do not count towards a lockout."""
        self.assertEqual([self.login("wrong") for _ in range(9)], [401] * 9)
        self.clock.advance(61)
        self.assertEqual([self.login("wrong") for _ in range(9)], [401] * 9)
        self.assertEqual(self.login("wrong"), 401)
        self.assertEqual(self.login("wrong"), 429)

    def test_successClearsFailures(self) -> None:
        """A successful login forgets that address's earlier failures."""
        self.assertEqual([self.login("wrong") for _ in range(9)], [401] * 9)
        self.assertEqual(self.login("secret"), 200)
        self.assertEqual([self.login("wrong") for _ in range(10)], [401] * 10)

    def test_noCredentialsAreNotFailures(self) -> None:
        """Requests without credentials (a browser's first try) get 401 and never lock anyone out."""
        self.assertEqual({self.login(None) for _ in range(50)}, {401})
        self.assertEqual(self.login("secret"), 200)

    def test_lockedOutWithoutCredentials(self) -> None:
        """A locked-out address is told so (429) even when it sends no credentials."""
        for _ in range(10):
            self.login("wrong")
        self.assertEqual(self.login(None), 429)

    def test_badSettings(self) -> None:
        """Nonsense throttle settings are ConfigErrors."""
        for bad in ({"loginFailures": 0}, {"loginWindow": 0}, {"loginLockout": -1}, {"loginRate": 0},
                    {"loginFailures": "10"}):
            self.assertRaises(ConfigError, stats.Admin, users={"admin": "secret"}, **bad)


class LoginThrottleUnitTests(SynchronousTestCase):
    """The throttle itself: per-address lockouts, the global rate, bounded memory."""

    def makeThrottle(self, **kwargs: Any) -> Any:
        from lbkit.stats._throttle import LoginThrottle

        self.clock = Clock()
        self.clock.advance(1000)
        return LoginThrottle(self.clock, **kwargs)

    def fail(self, throttle: Any, key: str, times: int = 1) -> Callable[[], Any]:
        for _ in range(times):
            self.assertIsNone(throttle.wait(key))
            throttle.failed(key)
        return lambda: throttle.wait(key)

    def test_otherAddressesUnaffected(self) -> None:
        """One address's lockout does not refuse another address."""
        throttle = self.makeThrottle()
        wait = self.fail(throttle, "10.0.0.1", 10)
        self.assertEqual(wait(), 60)
        self.assertIsNone(throttle.wait("10.0.0.2"))

    def test_retryAfterCountsDown(self) -> None:
        """The wait a locked-out address is told shrinks as time passes and ends."""
        throttle = self.makeThrottle(failures=3, window=10, lockout=30)
        wait = self.fail(throttle, "a", 3)
        self.assertEqual(wait(), 30)
        self.clock.advance(20.5)
        self.assertEqual(wait(), 10)
        self.clock.advance(9.5)
        self.assertIsNone(wait())

    def test_globalRateLimit(self) -> None:
        """
        Failures spread over many addresses are checked at most 5 per second
        after a burst of 20: beyond that everybody waits, briefly.
        """
        throttle = self.makeThrottle()
        for n in range(20):
            self.fail(throttle, f"10.0.{n}.1")
        self.assertEqual(throttle.wait("10.9.9.9"), 1)
        self.clock.advance(1)
        for n in range(5):
            self.fail(throttle, f"10.1.{n}.1")
        self.assertEqual(throttle.wait("10.9.9.9"), 1)
        self.clock.advance(10)
        self.assertIsNone(throttle.wait("10.9.9.9"))

    def test_memoryBounded(self) -> None:
        """However many addresses fail, the throttle remembers at most its table size."""
        throttle = self.makeThrottle(rate=1e9, tableSize=1000)
        for n in range(5000):
            throttle.failed(f"10.{n // 256}.{n % 256}.1")
        self.assertLessEqual(len(throttle), 1000)

    def test_expiredEntriesForgotten(self) -> None:
        """Addresses whose window and lockout are over are dropped from the table."""
        throttle = self.makeThrottle()
        self.fail(throttle, "a", 10)
        self.fail(throttle, "b", 2)
        self.clock.advance(61)
        throttle.failed("c")
        self.assertEqual(len(throttle), 1)
