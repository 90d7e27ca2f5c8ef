"""
L{lbkit.traffic} over real sockets on 127.0.0.1: rate and connection
limits in http and tcp mode, and the same requests through HAProxy
(C{stick-table ... store http_req_rate(10s)} / C{conn_cur}, C{track-sc0
src}, C{deny deny_status 429}) and through lbkit, comparing the statuses
clients see.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.protocol import ClientCreator, Protocol

from lbkit import Backend, Server
from lbkit.http import deny
from lbkit.tcp import Frontend as TCPFrontend
from lbkit.tcp import reject
from lbkit.traffic import ConnLimit, RateLimit, Table, above, track
from tests.helpers import (
    Collector,
    Echo,
    TrackingFactory,
    TrackingProxyFactory,
    listen,
    startHAProxy,
)
from tests.test_http2 import HTTP2TestCase
from tests.test_http_integration import HTTPTestCase, RawClient, backend, reactor
from tests.test_stats_socket import _Collect

#: A rate's period for tests that read exact counts: periods are aligned on the
#: wall clock, and one crossed while a test counts changes its figures.
HOUR = 3600.0


def freshPeriod(period: float, needed: float) -> Deferred[None]:
    """
    Fires at once when at least C{needed} seconds of the current wall-clock
    C{period} are left, else when the next period begins (for a test that
    must count within one period of a site it cannot configure).
    """
    left = period - reactor.seconds() % period
    d: Deferred[None] = Deferred()
    if left >= needed:
        d.callback(None)
    else:
        reactor.callLater(left + 0.05, d.callback, None)
    return d

GET = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


class Held(Protocol):
    """A server that answers each request only when the test says (L{HoldServer.release})."""

    def __init__(self, owner: HoldServer) -> None:
        self.owner = owner
        self.buf = b""

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, _, self.buf = self.buf.partition(b"\r\n\r\n")
            self.owner.arrived(self)

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.owner.holding:
            self.owner.holding.remove(self)


class HoldServer:
    """Holds the requests it gets; L{waitFor} fires when C{n} are held."""

    def __init__(self) -> None:
        self.holding: list[Held] = []
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def protocol(self) -> Held:
        return Held(self)

    def arrived(self, proto: Held) -> None:
        self.holding.append(proto)
        for n, d in list(self._waiting):
            if len(self.holding) >= n:
                self._waiting.remove((n, d))
                d.callback(None)

    def waitFor(self, n: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if len(self.holding) >= n:
            d.callback(None)
        else:
            self._waiting.append((n, d))
        return d

    def release(self) -> None:
        for proto in list(self.holding):
            assert proto.transport is not None
            proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.holding.clear()


class TrafficTestCase(HTTPTestCase):
    """Helpers: a client from a chosen 127.0.0.x source address."""

    timeout = 30

    @inlineCallbacks
    def clientFrom(self, port: int, source: str = "127.0.0.1") -> Any:
        c = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0)), c)
        self.lost.append(c.closed)
        self.addCleanup(lambda: c.transport.loseConnection() if c.transport else None)
        return c

    @inlineCallbacks
    def attempt(self, port: int, data: bytes) -> Any:
        """What a client sending C{data} gets back first (then it closes): b"" if closed or reset at once."""
        client = Echoed(data)
        try:
            yield ClientCreator(reactor, lambda: client).connectTCP("127.0.0.1", port)
        except ConnectError:
            return b""
        # (the echo server is not half-closeable: the client keeps its side open until it has its answer)
        client.lost.addCallback(lambda _: client.echoed.called or client.echoed.callback(b""))
        got = yield client.echoed
        if client.transport is not None and got:
            client.transport.loseConnection()
            yield client.lost
        return got

    @inlineCallbacks
    def statuses(self, port: int, count: int, source: str) -> Any:
        """C{count} GETs one after the other, each on a new connection: their statuses."""
        seen = []
        for _ in range(count):
            c = yield self.clientFrom(port, source)
            c.send(GET)
            [(response, _)] = yield c.responses(1)
            c.transport.loseConnection()
            yield c.closed
            seen.append(response.code)
        return seen


class HTTPLimitTests(TrafficTestCase):
    """RateLimit and ConnLimit in front of a twisted.web server."""

    @inlineCallbacks
    def test_rateLimit(self) -> Any:
        """Over the rate, 429 with Retry-After, on a connection that stays open; another source is not limited."""
        limit = RateLimit(3, 60.0)
        yield freshPeriod(60.0, 5.0)  # (its Retry-After is checked against the minute: keep the minute)
        port = self.frontend(default=backend("app", [self.site("app1")[0]]), requestRules=[limit])
        c = yield self.clientFrom(port, "127.0.0.2")
        for _ in range(5):
            c.send(GET)
        got = yield c.responses(5)
        self.assertEqual([r.code for r, _ in got], [200, 200, 200, 429, 429])
        over = got[3][0]
        self.assertGreater(int(over.header(b"retry-after")), 0)
        self.assertLessEqual(int(over.header(b"retry-after")), 120)
        seen = yield self.statuses(port, 1, "127.0.0.3")
        self.assertEqual(seen, [200])
        self.assertEqual(limit.refused, 2)
        self.assertEqual(limit.table.value("127.0.0.2", "http_req_rate"), 5)

    @inlineCallbacks
    def test_connLimit(self) -> Any:
        """ConnLimit(2): with two requests held by the server, a third gets 429; once answered, room again."""
        hold = HoldServer()
        serverPort, _ = self.custom(hold.protocol)
        limit = ConnLimit(2)
        port = self.frontend(default=backend("app", [serverPort]), requestRules=[limit])
        clients = []
        for n in (1, 2):
            c = yield self.clientFrom(port, "127.0.0.4")
            c.send(GET)
            clients.append(c)
            yield hold.waitFor(n)
        third = yield self.clientFrom(port, "127.0.0.4")
        third.send(GET)
        [(response, _)] = yield third.responses(1)
        self.assertEqual((response.code, response.header(b"connection")), (429, b"close"))
        yield third.closed
        hold.release()
        for c in clients:
            [(response, body)] = yield c.responses(1)
            self.assertEqual((response.code, body), (200, b"ok"))
        self.assertEqual(limit.table.value("127.0.0.4", "conn_cur"), 0)
        fourth = yield self.clientFrom(port, "127.0.0.4")
        fourth.send(GET)
        yield hold.waitFor(1)
        hold.release()
        [(response, _)] = yield fourth.responses(1)
        self.assertEqual(response.code, 200)


class KeyTests(TrafficTestCase):
    """Keys read from real requests."""

    @inlineCallbacks
    def test_byHeaderAndCookie(self) -> Any:
        """A rate limit per API key and a table by cookie: each key counted apart; no key, not limited."""
        from lbkit.traffic import byCookie, byHeader

        sessions = Table("sessions", key=byCookie("sid"), counters=["http_req_rate(3600s)"])
        limit = RateLimit(1, HOUR, key=byHeader("X-Api-Key"))
        port = self.frontend(default=backend("app", [self.site("app1")[0]]), requestRules=[track(sessions), limit])
        c = yield self.clientFrom(port)
        for key, sid in ((b"k1", b"a"), (b"k2", b"a"), (b"k1", b"b"), (None, b"b"), (None, b"b")):
            head = b"GET / HTTP/1.1\r\nHost: test\r\nCookie: x=1; sid=%s\r\n" % sid
            c.send(head + (b"X-Api-Key: %s\r\n" % key if key else b"") + b"\r\n")
        got = yield c.responses(5)
        self.assertEqual([r.code for r, _ in got], [200, 200, 429, 200, 200])
        self.assertEqual({row["key"]: row["http_req_rate"] for row in sessions.rows()}, {"a": 2, "b": 3})
        self.assertEqual(sorted(row["key"] for row in limit.table.rows()), ["k1", "k2"])


class TCPLimitTests(TrafficTestCase):
    """ConnLimit and track + reject in tcp mode, in front of an echo server."""

    def proxy(self, rules: list[Any]) -> tuple[int, TrackingFactory, TrackingProxyFactory]:
        factory = TrackingFactory(Echo)
        serverPort = listen(self, reactor, factory)
        frontend = TCPFrontend("tcp:0", Backend("be", [Server("a", f"127.0.0.1:{serverPort}")]), name="fe",
                               log=False, rules=rules)
        proxyFactory = TrackingProxyFactory(frontend, reactor)
        return listen(self, reactor, proxyFactory), factory, proxyFactory

    @inlineCallbacks
    def test_connLimit(self) -> Any:
        """A second connection from the source is closed at once while the first is open; then it is let in."""
        limit = ConnLimit(1)
        port, servers, proxies = self.proxy([limit])
        first = Echoed(b"one")
        yield ClientCreator(reactor, lambda: first).connectTCP("127.0.0.1", port)
        self.assertEqual((yield first.echoed), b"one")
        second = Collector(b"two")
        yield ClientCreator(reactor, lambda: second).connectTCP("127.0.0.1", port)
        self.assertEqual((yield second.done), b"")
        self.assertEqual(proxies.built[1].termination, "PR")
        first.transport.loseConnection()
        yield first.lost
        yield proxies.built[0].allGone()
        self.assertEqual((yield self.attempt(port, b"three")), b"three")
        yield proxies.built[2].allGone()
        self.assertEqual((limit.refused, len(servers.built)), (1, 2))

    @inlineCallbacks
    def test_trackAndReject(self) -> Any:
        """track + reject(when=above(conn_rate, 2)): the third connection in the period is closed."""
        table = Table("tcp", counters=["conn_cur", "conn_rate(3600s)", "bytes_in_rate(3600s)", "bytes_out_rate(3600s)"])
        port, servers, proxies = self.proxy([track(table), reject(when=above(table, "conn_rate", 2))])
        got = []
        for word in (b"a", b"b", b"c"):
            got.append((yield self.attempt(port, word)))
        self.assertEqual(got, [b"a", b"b", b""])
        for p in proxies.built:
            yield p.allGone()
        row = table.rows()[0]
        self.assertEqual((row["key"], row["conn_rate"], row["conn_cur"]), ("127.0.0.1", 3, 0))
        self.assertEqual((row["bytes_in_rate"], row["bytes_out_rate"]), (2, 2))  # the refused one sent nothing on


class Echoed(Protocol):
    """Sends C{data}; C{echoed} fires with the first bytes back, C{lost} when the connection ends."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.echoed: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        if not self.echoed.called:
            self.echoed.callback(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


HAPROXY_RATE = """
global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind {bind}
    stick-table type ip size 100k expire 60s store http_req_rate(10s)
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 4 }
    default_backend be
backend be
    server s1 127.0.0.1:%(port)d
"""

HAPROXY_CONN = """
global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind {bind}
    stick-table type ip size 100k expire 60s store conn_cur
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_conn_cur(0) gt 2 }
    default_backend be
backend be
    server s1 127.0.0.1:%(port)d
"""


class HAProxyComparisonTests(TrafficTestCase):
    """The same requests through HAProxy's stick-table rules and lbkit's: the same statuses."""

    timeout = 60

    @inlineCallbacks
    def test_rateLimit(self) -> Any:
        """8 requests in a row: HAProxy's deny if sc_http_req_rate(0) gt 4, and lbkit's, answer alike."""
        serverPort = self.site("app1")[0]
        haproxy, _ = startHAProxy(self, reactor, HAPROXY_RATE % {"port": serverPort})
        table = Table("src", size=100_000, expire=60.0, counters=["http_req_rate(10s)"])
        rules = [track(table), deny(status=429, when=above(table, "http_req_rate", 4))]
        lbkit = self.frontend(default=backend("app", [serverPort]), requestRules=rules)
        limited = self.frontend(default=backend("app", [serverPort]), requestRules=[RateLimit(4, 10.0)])
        # a period boundary inside a run changes the estimate (HAProxy's periods and lbkit's
        # are not aligned alike): a second round from a fresh source address settles it
        for source in ("127.0.0.5", "127.0.0.6"):
            seen = []
            for port in (haproxy, lbkit, limited):
                got = yield self.statuses(port, 8, source)
                seen.append(got)
            if seen[0] == seen[1] == seen[2]:
                break
        self.assertEqual(seen[0], [200] * 4 + [429] * 4)
        self.assertEqual(seen[1], seen[0], "lbkit track + deny")
        self.assertEqual(seen[2], seen[0], "lbkit RateLimit")

    @inlineCallbacks
    def test_connLimit(self) -> Any:
        """Two requests held by the server: a third and fourth get 429 from both; once answered, 200."""
        hold = HoldServer()
        serverPort, _ = self.custom(hold.protocol)
        haproxy, _ = startHAProxy(self, reactor, HAPROXY_CONN % {"port": serverPort})
        lbkit = self.frontend(default=backend("app", [serverPort]), requestRules=[ConnLimit(2)])
        seen = []
        for port, source in ((haproxy, "127.0.0.7"), (lbkit, "127.0.0.8")):
            statuses = []
            held = []
            for n in (1, 2):
                c = yield self.clientFrom(port, source)
                c.send(GET)
                held.append(c)
                yield hold.waitFor(n)
            for _ in range(2):
                c = yield self.clientFrom(port, source)
                c.send(GET)
                [(response, _)] = yield c.responses(1)
                statuses.append(response.code)
            hold.release()
            for c in held:
                [(response, _)] = yield c.responses(1)
                statuses.append(response.code)
                c.transport.loseConnection()
                yield c.closed
            c = yield self.clientFrom(port, source)
            c.send(GET)
            yield hold.waitFor(1)
            hold.release()
            [(response, _)] = yield c.responses(1)
            statuses.append(response.code)
            seen.append(statuses)
        self.assertEqual(seen[0], [429, 429, 200, 200, 200])
        self.assertEqual(seen[1], seen[0])


class ExampleTests(TrafficTestCase):
    """examples/traffic.py, started as a user would (C{twistd lbkit}), does what its docstring says."""

    timeout = 60

    @inlineCallbacks
    def ask(self, port: int, target: bytes) -> Any:
        c = yield self.clientFrom(port)
        c.send(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (target, port))
        [(response, body)] = yield c.responses(1)
        c.transport.loseConnection()
        yield c.closed
        return response, body

    @inlineCallbacks
    def test_trafficExample(self) -> Any:
        """Redirect to https, the maintenance page, 10 requests then 429, and the table on the page and socket."""
        import os
        import shutil
        import tempfile

        from tests.test_examples import EXAMPLES, startProcess, stopCleanly, twistd

        cwd = tempfile.mkdtemp(prefix="lbkit-ex-")
        self.addCleanup(shutil.rmtree, cwd, True)
        watcher, process = startProcess(self, twistd("lbkit", "--config", os.path.join(EXAMPLES, "traffic.py")), cwd)
        for label in ("frontend http-in", "frontend site", "demo server web1", "demo server web2"):
            yield watcher.waitFor(f"{label} listening on")
        response, _ = yield self.ask(8140, b"/cart?id=3")
        self.assertEqual((response.code, response.header(b"location")), (301, b"https://127.0.0.1:8140/cart?id=3"))
        yield freshPeriod(10.0, 5.0)  # the example counts over 10 s: read its counts within one period
        response, body = yield self.ask(8141, b"/shop/")
        self.assertEqual((response.code, b"Back soon" in body), (503, True))
        codes = []
        for _ in range(10):
            response, body = yield self.ask(8141, b"/")
            codes.append(response.code)
        self.assertEqual(codes, [200] * 9 + [429])
        self.assertIn(b"Slow down", body)
        self.assertGreater(int(response.header(b"retry-after")), 0)
        client = _Collect()
        yield connectProtocol(UNIXClientEndpoint(reactor, os.path.join(cwd, "traffic.sock")), client)
        client.transport.write(b"show table clients\nquit\n")
        answer = (yield client.done).decode()
        self.assertIn("key=127.0.0.1 exp=60s conn_cur=0 http_req_rate(10s)=11 http_err_rate(10s)=1", answer)
        page = yield self.clientFrom(8142)
        page.send(b"GET /stats.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        [(response, body)] = yield page.responses(1)
        page.transport.loseConnection()
        tables = {t["name"]: t for t in json.loads(body)["tables"]}
        self.assertEqual(tables["clients"]["entries"][0]["http_req_rate"], 11)
        self.assertIn("connlimit", " ".join(tables))
        yield stopCleanly(self, watcher, process)


class HTTP2Tests(HTTP2TestCase):
    """Over HTTP/2 each stream is a request: a RateLimit answers 429 on the stream, the connection stays."""

    @inlineCallbacks
    def test_rateLimitPerStream(self) -> Any:
        """Three streams of one connection under RateLimit(2): the third gets 429 and Retry-After; no GOAWAY."""
        limit = RateLimit(2, HOUR)
        port = self.tlsFrontend([], default=backend("app", [self.site("app1")[0]]), requestRules=[limit])
        client = yield self.h2client(port)
        got = []
        for _ in range(3):
            status, headers, _ = yield client.request("/")
            got.append((status, headers.get(b"retry-after") is not None))
        self.assertEqual(got, [(200, False), (200, False), (429, True)])
        self.assertIsNone(client.goAway)
        self.assertEqual(limit.table.value("127.0.0.1", "conn_cur"), 0)


HAPROXY_TCP_CONN = """
global
    maxconn 100
    stats socket %(socket)s level admin
defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind {bind}
    stick-table type ip size 100k expire 60s store conn_cur
    tcp-request connection track-sc0 src
    tcp-request connection reject if { sc_conn_cur(0) gt 1 }
    default_backend be
backend be
    server s1 127.0.0.1:%(port)d
"""


class HAProxyTCPComparisonTests(TrafficTestCase):
    """tcp mode: HAProxy's tcp-request connection track-sc0 / reject if sc_conn_cur(0) gt 1, and ConnLimit(1)."""

    timeout = 60

    @inlineCallbacks
    def test_connLimit(self) -> Any:
        """With one connection open, a second gets nothing; once the first closes, a third is echoed."""
        echo = TrackingFactory(Echo)
        serverPort = listen(self, reactor, echo)
        import shutil
        import tempfile

        directory = tempfile.mkdtemp(prefix="lbkit-t-")  # a UNIX socket's path must be short
        self.addCleanup(shutil.rmtree, directory, True)
        sock = os.path.join(directory, "haproxy.sock")
        haproxy, _ = startHAProxy(self, reactor, HAPROXY_TCP_CONN % {"port": serverPort, "socket": sock})
        limit = ConnLimit(1)
        frontend = TCPFrontend("tcp:0", Backend("be", [Server("a", f"127.0.0.1:{serverPort}")]), name="fe",
                               log=False, rules=[limit])
        proxies = TrackingProxyFactory(frontend, reactor)
        lbkit = listen(self, reactor, proxies)

        @inlineCallbacks
        def haproxyFree() -> Any:
            answer = b""
            for _ in range(200):  # HAProxy's own word on its table, asked until the slot is back
                client = _Collect()
                yield connectProtocol(UNIXClientEndpoint(reactor, sock), client)
                client.transport.write(b"show table fe\n")
                answer = yield client.done
                if b"conn_cur=1" not in answer:
                    return
            self.fail(f"HAProxy kept the slot: {answer!r}")

        @inlineCallbacks
        def lbkitFree() -> Any:
            for proto in list(proxies.built):
                yield proto.allGone()
            self.assertEqual(limit.table.value("127.0.0.1", "conn_cur"), 0)

        seen = []
        for port, free in ((haproxy, haproxyFree), (lbkit, lbkitFree)):
            index = len(echo.built)
            first = Echoed(b"one")
            yield ClientCreator(reactor, lambda first=first: first).connectTCP("127.0.0.1", port)
            echoed = yield first.echoed
            refused = yield self.attempt(port, b"two")
            first.transport.loseConnection()
            yield first.lost
            yield echo.lost[index]  # the proxy closed the server side: the session is ending
            yield free()
            third = yield self.attempt(port, b"three")
            seen.append((echoed, refused, third))
        for proto in proxies.built:
            yield proto.allGone()
        yield gatherResults(echo.lost)
        self.assertEqual(seen[0], (b"one", b"", b"three"))
        self.assertEqual(seen[1], seen[0])
