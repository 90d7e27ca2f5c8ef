"""
Tests for L{lbkit.traffic}: stick tables and their counters on a
L{Clock} (HAProxy's sliding-window estimate, bounds, expiry), the keys,
and the rules and matchers over them (L{lbkit.traffic.track},
L{lbkit.traffic.above}, L{lbkit.traffic.RateLimit},
L{lbkit.traffic.ConnLimit}) in http mode through L{HTTPHarness} and in
tcp mode with fakes.  Real sockets and HAProxy: tests.test_traffic_live.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server
from lbkit._model import Context
from lbkit.error import ConfigError
from lbkit.http import Frontend, Request, Route, deny, pathBegins, setHeader
from lbkit.interfaces import IAnsweringRule, IConnectionRule, IRequestMatcher
from lbkit.tcp import Frontend as TCPFrontend
from lbkit.tcp import TCPFrontendProtocol, reject
from lbkit.testing import FakeEndpoint, HalfCloseableStringTransport, HTTPHarness, assertProvides
from lbkit.traffic import (
    ConnLimit,
    RateLimit,
    Table,
    above,
    atLeast,
    atMost,
    below,
    byCookie,
    byHeader,
    byParam,
    byPath,
    bySource,
    counter,
    tablesOf,
    track,
)
from lbkit.traffic._rules import retryAfter

CLIENT = IPv4Address("TCP", "198.51.100.7", 51000)
OTHER = IPv4Address("TCP", "198.51.100.8", 51000)
FRONT = IPv4Address("TCP", "127.0.0.1", 8080)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
DONE = Failure(ConnectionDone())


def status(data: bytes) -> int:
    """The status of the first response in C{data}."""
    return int(data.split(b" ", 2)[1])


def hits(table: Table, clock: Clock, key: str, times: int = 1) -> list[Any]:
    """Count C{times} requests of C{key} (conn_cur back to 0 after each)."""
    entry = table.entry(key, clock.seconds())
    for _ in range(times):
        for name, (i, period) in table.slots.items():
            if i >= 0 and name in ("http_req_rate", "conn_rate"):
                from lbkit.traffic._table import hit
                hit(entry, i, period, clock.seconds(), 1)
    return entry


class TableTests(SynchronousTestCase):
    """A table's counters follow HAProxy's freq_ctr_period, on its clock; it stays bounded."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)  # a period boundary

    def test_slidingWindow(self) -> None:
        """The rate is this period's events plus the last one's, weighted by what of it is in the window."""
        t = Table("t", counters={"http_req_rate": 10.0}, clock=self.clock)
        hits(t, self.clock, "a", 10)
        self.assertEqual(t.value("a", "http_req_rate"), 10)
        self.clock.advance(10.0)  # next period: prev=10, none yet in this one
        self.assertEqual(t.value("a", "http_req_rate"), 10)
        self.clock.advance(2.5)  # a quarter in: 10 * 0.75
        self.assertEqual(t.value("a", "http_req_rate"), 7)
        hits(t, self.clock, "a", 3)
        self.assertEqual(t.value("a", "http_req_rate"), 10)
        self.clock.advance(7.5)  # the next period: prev=3
        self.assertEqual(t.value("a", "http_req_rate"), 3)
        self.clock.advance(10.0)  # two periods on: nothing
        self.assertEqual(t.value("a", "http_req_rate"), 0)
        self.assertEqual(t.value("nobody", "http_req_rate"), 0)

    def test_counterSpecs(self) -> None:
        """Counters are given as a dict of periods or as HAProxy's strings; all six by default."""
        t = Table("t", counters=["conn_cur", "http_req_rate(1m)", "bytes_out_rate(500ms)"])
        self.assertEqual(t.counters, {"conn_cur": 0.0, "http_req_rate": 60.0, "bytes_out_rate": 0.5})
        self.assertEqual(t.describe(), "conn_cur,http_req_rate(60s),bytes_out_rate(0.5s)")
        self.assertEqual(len(Table("u").counters), 6)
        for bad, text in [({"req_rate": 1}, "unknown counter"), (["http_req_rate(x)"], "is not a counter"),
                          ({"http_req_rate": 0}, "over 0"), ({"conn_cur": 5}, "no period")]:
            e = self.assertRaises(ConfigError, Table, "t", counters=bad)
            self.assertIn(text, str(e))
        self.assertIn("size", str(self.assertRaises(ConfigError, Table, "t", size=0)))
        self.assertIn("name", str(self.assertRaises(ConfigError, Table, "a b")))
        self.assertIn("does not provide", str(self.assertRaises(ConfigError, Table, "t", store=object())))
        self.assertIn("key", str(self.assertRaises(ConfigError, Table, "t", key="src")))

    def test_leastRecentlyUsedOut(self) -> None:
        """A full table drops the key used longest ago."""
        t = Table("t", size=3, clock=self.clock)
        for key in "abc":
            t.entry(key, self.clock.seconds())
        t.entry("a", self.clock.seconds())
        t.entry("d", self.clock.seconds())
        self.assertEqual(sorted(r["key"] for r in t.rows()), ["a", "c", "d"])
        self.assertEqual((len(t), t.evicted), (3, 1))

    def test_expire(self) -> None:
        """A key idle for expire seconds goes, but not while a connection of it is open."""
        t = Table("t", expire=60.0, clock=self.clock)
        t.entry("idle", self.clock.seconds())
        busy = t.entry("busy", self.clock.seconds())
        busy[1] = 1
        self.clock.advance(61)
        t.entry("new", self.clock.seconds())
        self.assertEqual(sorted(r["key"] for r in t.rows()), ["busy", "new"])
        busy[1] = 0
        self.clock.advance(61)
        self.assertEqual(t.rows(), [])

    def test_memoryBounded(self) -> None:
        """Ten times size keys take no more memory than size keys: the table is bounded."""
        import tracemalloc

        t = Table("t", size=1000, counters=["http_req_rate(10s)"], clock=self.clock)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        start = tracemalloc.get_traced_memory()[0]
        for i in range(1000):
            t.entry(f"10.0.{i >> 8}.{i & 255}", self.clock.seconds())
        full = tracemalloc.get_traced_memory()[0] - start
        for i in range(1000, 10_000):
            t.entry(f"10.{i >> 16}.{i >> 8 & 255}.{i & 255}", self.clock.seconds())
        after = tracemalloc.get_traced_memory()[0] - start
        self.assertEqual((len(t), t.evicted), (1000, 9000))
        self.assertLess(after, full * 1.2)
        self.assertLess(full / 1000, 400)  # bytes per key (bench/ratelimit.py: about 280)

    def test_clearAndRows(self) -> None:
        """rows shows the counters of each key, newest first; clear forgets one key or all."""
        t = Table("t", counters={"conn_cur": 0, "http_req_rate": 10}, clock=self.clock)
        hits(t, self.clock, "a", 2)
        hits(t, self.clock, "b", 1)
        rows = t.rows()
        self.assertEqual([(r["key"], r["http_req_rate"], r["conn_cur"]) for r in rows], [("b", 1, 0), ("a", 2, 0)])
        self.assertEqual(rows[0]["expiresIn"], 60.0)
        self.assertEqual(t.clear("a"), 1)
        self.assertEqual(t.clear("a"), 0)
        self.assertEqual(t.clear(), 1)
        self.assertEqual(len(t), 0)


class KeyTests(SynchronousTestCase):
    """The keys read the client's address (or network) and parts of the request."""

    def test_source(self) -> None:
        """bySource is the address; bySource(24) an IPv4 /24, bySource(64) an IPv6 /64."""
        v4 = Context(client=IPv4Address("TCP", "198.51.100.77", 1))
        v6 = Context(client=IPv6Address("TCP", "2001:db8:1:2:3:4:5:6", 1))
        self.assertEqual(bySource.keyOf(None, v4), "198.51.100.77")
        self.assertEqual(bySource(24).keyOf(None, v4), "198.51.100.0/24")
        self.assertEqual(bySource(24).keyOf(None, v6), "2001:db8:1:2:3:4:5:6")
        self.assertEqual(bySource(64).keyOf(None, v6), "2001:db8:1:2::/64")
        self.assertEqual(bySource(64).keyOf(None, v4), "198.51.100.77")
        self.assertEqual(bySource(16, 48).keyOf(None, v6), "2001:db8:1::/48")
        self.assertIsNone(bySource.keyOf(None, Context(client=None)))
        self.assertTrue(bySource(24).clientOnly)
        self.assertRaises(ConfigError, bySource, 0)
        self.assertRaises(ConfigError, bySource, 24, 129)

    def test_request(self) -> None:
        """byHeader, byCookie, byParam and byPath read the request; None when it lacks them."""
        request = Request(b"GET", b"/p/a?x=1&api+key=s%20t", b"HTTP/1.1",
                          [[b"X-Api", b"k1"], [b"Cookie", b"a=1; sid=\"abc\""]])
        context = Context(client=CLIENT)
        self.assertEqual(byHeader("x-api").keyOf(request, context), "k1")
        self.assertEqual(byCookie("sid").keyOf(request, context), "abc")
        self.assertEqual(byParam("api key").keyOf(request, context), "s t")
        self.assertEqual(byPath.keyOf(request, context), "/p/a")
        self.assertIsNone(byHeader("x-none").keyOf(request, context))
        self.assertIsNone(byCookie("none").keyOf(request, context))
        self.assertIsNone(byParam("none").keyOf(request, context))
        self.assertIsNone(byHeader("x-api").keyOf(None, context))
        self.assertFalse(byHeader("x").clientOnly)


class RetryAfterTests(SynchronousTestCase):
    """Retry-After is the wait until one more request would be within the limit."""

    def test_values(self) -> None:
        """Within the period, into the next, and past the previous one's share."""
        # [seen, cur, start, curr, prev]: 11 in this period, limit 10, 10s: wait for the next
        # period and then until 11 * (1 - t/10) + 1 <= 10: t >= 10 * (1 - 10/11)
        self.assertEqual(retryAfter([0, 0, 100.0, 11, 0], 2, 10.0, 101.0, 10), 10)
        self.assertEqual(retryAfter([0, 0, 100.0, 20, 0], 2, 10.0, 101.0, 10), 9 + 5 + 1)
        # 3 now, 10 before, 2s in: 3 + 10 * 0.8 = 11 > 10; 1s on, 3 + 1 + floor(10 * 0.7) is still 11
        self.assertEqual(retryAfter([0, 0, 100.0, 3, 10], 2, 10.0, 102.0, 10), 2)
        self.assertEqual(retryAfter([0, 0, 100.0, 0, 0], 2, 10.0, 102.0, 10), 1)


class Harness:
    """An http frontend with C{rules} on a L{MemoryReactorClock}, one backend of one server."""

    def __init__(self, testCase: SynchronousTestCase, rules: list[Any], **kwargs: Any) -> None:
        self.endpoint = FakeEndpoint(IPv4Address("TCP", "192.0.2.1", 80))
        self.server = Server("s1", self.endpoint)
        self.frontend = Frontend("tcp:8080", [], default=Backend("be", [self.server]), name="fe",
                                 requestRules=rules, maxIdlePerServer=0, **kwargs)
        self.harness = HTTPHarness(self.frontend, clientAddress=CLIENT, frontendAddress=FRONT)
        self.reactor = self.harness.reactor
        self.reactor.advance(1000.0)
        testCase.addCleanup(self.harness.close)

    def get(self, peer: IPv4Address = CLIENT, data: bytes = GET, respond: bytes | None = OK) -> Any:
        """One request on a new connection; the server answers C{respond} (None: it is left waiting)."""
        client = self.harness.request(data, peer)
        if self.harness.pending() and respond is not None:
            side = self.harness.connect(self.server)
            side.respond(respond)
        return client


class HTTPRuleTests(SynchronousTestCase):
    """The rules over tables in http mode, in memory."""

    def test_interfaces(self) -> None:
        """track, RateLimit and ConnLimit are answering and connection rules; above a matcher."""
        t = Table("t")
        for rule in (track(t), RateLimit(10, 1), ConnLimit(5)):
            assertProvides(self, IAnsweringRule, rule)
            assertProvides(self, IConnectionRule, rule)
        for matcher in (above(t, "http_req_rate", 1), below(t, "conn_cur", 1), atLeast(t, "conn_rate", 1),
                        atMost(t, "bytes_in_rate", 1)):
            assertProvides(self, IRequestMatcher, matcher)

    def test_trackAndDeny(self) -> None:
        """HAProxy's track-sc0 src + deny 429 if sc_http_req_rate(0) gt 3: the fourth gets 429."""
        t = Table("t", counters=["http_req_rate(10s)", "conn_cur", "http_err_rate(10s)"])
        h = Harness(self, [track(t), deny(status=429, when=above(t, "http_req_rate", 3))])
        seen = [status(h.get().transport.value()) for _ in range(5)]
        self.assertEqual(seen, [200, 200, 200, 429, 429])
        self.assertEqual(status(h.get(OTHER).transport.value()), 200)
        self.assertIs(t.clock, h.reactor)
        self.assertEqual(t.value(CLIENT.host, "http_req_rate"), 5)
        self.assertEqual(t.value(CLIENT.host, "http_err_rate"), 2)
        self.assertEqual(t.value(CLIENT.host, "conn_cur"), 0)
        h.reactor.advance(20)
        self.assertEqual(status(h.get().transport.value()), 200)

    def test_rateLimit(self) -> None:
        """RateLimit answers 429 with Retry-After over its rate, keeps the connection; burst adds room."""
        limit = RateLimit(2, 10.0, burst=1)
        h = Harness(self, [limit])
        seen = [h.get() for _ in range(4)]
        self.assertEqual([status(c.transport.value()) for c in seen], [200, 200, 200, 429])
        over = seen[-1].transport.value()
        # next period, then until 1 + floor(4 * (1 - t/10)) <= 3: t > 2.5
        self.assertIn(b"\r\nRetry-After: 13\r\n", over)
        self.assertFalse(seen[-1].transport.disconnecting)
        self.assertEqual(limit.refused, 1)
        self.assertEqual(h.harness.logged[-1]["termination"], "PR")
        h.reactor.advance(12.4)
        self.assertEqual(limit.table.value(CLIENT.host, "http_req_rate") + 1, 4)  # one more is still too many
        h.reactor.advance(0.6)  # Retry-After is right
        self.assertEqual(status(h.get().transport.value()), 200)

    def test_rateLimitSharedTable(self) -> None:
        """A RateLimit on a table of the site counts there, once per request with track of the same table."""
        t = Table("t", counters={"http_req_rate": 10.0})
        h = Harness(self, [track(t), RateLimit(2, 10, table=t)])
        self.assertEqual([status(h.get().transport.value()) for _ in range(3)], [200, 200, 429])
        self.assertEqual(t.value(CLIENT.host, "http_req_rate"), 3)
        e = self.assertRaises(ConfigError, RateLimit, 2, 60, table=t)
        self.assertIn("http_req_rate(10s), not per=60", str(e))

    def test_connLimit(self) -> None:
        """ConnLimit(2): a third request in flight from the same client gets 429 and a close."""
        limit = ConnLimit(2)
        h = Harness(self, [limit])
        first = h.get(respond=None)
        second = h.get(respond=None)
        third = h.get(respond=None)
        self.assertEqual((status(third.transport.value()), third.transport.disconnecting), (429, True))
        self.assertEqual(status(h.get(OTHER, respond=None).transport.value() or b"X 0 ?"), 0)
        self.assertEqual(limit.table.value(CLIENT.host, "conn_cur"), 2)
        h.harness.connect(h.server).respond(OK)
        self.assertTrue(first.transport.value().endswith(b"ok"))
        self.assertEqual(limit.table.value(CLIENT.host, "conn_cur"), 1)
        self.assertEqual(status(h.get(respond=None).transport.value() or b"X 0 ?"), 0)
        self.assertEqual(second.transport.value(), b"")

    def test_bytesAndErrors(self) -> None:
        """A tracked request adds its bytes in and out, and a 4xx from the server is an error."""
        t = Table("t", counters=["bytes_in_rate(10s)", "bytes_out_rate(10s)", "http_err_rate(10s)"])
        h = Harness(self, [track(t)])
        a = h.get(respond=b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        b = h.get(respond=b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
        c = h.get(respond=b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        row = t.rows()[0]
        self.assertEqual(row["http_err_rate"], 2)  # the 404 and the 401, not the 503
        self.assertEqual(row["bytes_in_rate"], 3 * len(GET))
        self.assertEqual(row["bytes_out_rate"], sum(len(x.transport.value()) for x in (a, b, c)))

    def test_keyByHeader(self) -> None:
        """A table by header counts per header value; a request without it is not counted."""
        t = Table("keys", key=byHeader("x-api-key"), counters={"http_req_rate": 10})
        h = Harness(self, [track(t), deny(status=429, when=above(t, "http_req_rate", 1))])
        req = b"GET / HTTP/1.1\r\nHost: a\r\nX-Api-Key: %s\r\n\r\n"
        self.assertEqual([status(h.get(data=req % k).transport.value()) for k in (b"a", b"b", b"a")], [200, 200, 429])
        self.assertEqual([status(h.get().transport.value()) for _ in range(3)], [200, 200, 200])
        self.assertEqual(sorted(r["key"] for r in t.rows()), ["a", "b"])

    def test_counterHeaderAndRoute(self) -> None:
        """A header computed from a counter, and a route chosen by one: heavy clients go elsewhere."""
        t = Table("t", counters=["http_req_rate(10s)"])
        slow = Server("slow", FakeEndpoint(IPv4Address("TCP", "192.0.2.9", 80)))
        h = Harness(self, [track(t), setHeader("X-Request-Rate", counter(t, "http_req_rate"))])
        h.frontend.routes = [Route(above(t, "http_req_rate", 2), Backend("slow", [slow]))]
        sent = []
        for _ in range(3):
            h.harness.request(GET, CLIENT)
            server = h.harness.pending()[0]
            side = h.harness.connect(server)
            sent.append((server.name, side.transport.value().split(b"X-Request-Rate: ")[1].split(b"\r\n")[0]))
            side.respond(OK)
        self.assertEqual(sent, [("s1", b"1"), ("s1", b"2"), ("slow", b"3")])
        self.assertEqual(repr(counter(t, "http_req_rate")), "counter('t', 'http_req_rate')")
        self.assertRaises(ConfigError, counter, t, "conn_cur")

    def test_noRulesNoWatchers(self) -> None:
        """Without traffic rules a request's context has no watchers (nothing extra runs)."""
        h = Harness(self, [deny(when=pathBegins("/x"))])
        seen = []
        factory = h.harness.factory
        orig = Context.ended

        def ended(self: Context, *args: Any) -> None:
            seen.append(args)
            orig(self, *args)

        Context.ended = ended  # type: ignore[method-assign]
        self.addCleanup(setattr, Context, "ended", orig)
        self.assertEqual(status(h.get().transport.value()), 200)
        self.assertEqual((seen, factory.requests), ([], 1))

    def test_tablesOf(self) -> None:
        """The tables a frontend's rules and matchers use are found (for the stats)."""
        t, u = Table("t"), Table("u")
        limit = RateLimit(5, 1)
        fe = Frontend("tcp:0", [], default=Backend("be", [Server("s", FakeEndpoint())]),
                      requestRules=[track(t), deny(when=above(u, "conn_cur", 3)), limit])
        self.assertEqual(tablesOf(fe), [t, u, limit.table])

    def test_config(self) -> None:
        """Bad arguments are ConfigErrors saying what is wrong."""
        t = Table("t", counters={"http_req_rate": 10})
        cases = [
            (lambda: above(t, "conn_cur", 1), "does not keep 'conn_cur'"),
            (lambda: above(t, "nope", 1), "unknown counter"),
            (lambda: above("t", "conn_cur", 1), "is not a traffic.Table"),
            (lambda: track("t"), "is not a traffic.Table"),
            (lambda: RateLimit(0, 1), "rate must be a whole number"),
            (lambda: RateLimit(1, 0), "per must be"),
            (lambda: RateLimit(1, 1, status=200), "status"),
            (lambda: ConnLimit(0), "limit must be"),
            (lambda: ConnLimit(1, table=t), "does not keep conn_cur"),
        ]
        for make, text in cases:
            self.assertIn(text, str(self.assertRaises(ConfigError, make)))


class TCPRuleTests(SynchronousTestCase):
    """The rules over tables in tcp mode: connections, closed at once over a limit."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1000.0)
        self.endpoint = FakeEndpoint()

    def accept(self, rules: Any, client: IPv4Address = CLIENT) -> tuple[Any, Any]:
        frontend = TCPFrontend("tcp:8080", Backend("be", [Server("a", self.endpoint)]), name="fe", rules=rules,
                               log=False)
        proto = frontend.buildFactory(self.reactor).buildProtocol(client)
        assert isinstance(proto, TCPFrontendProtocol)
        transport = HalfCloseableStringTransport(hostAddress=FRONT, peerAddress=client)
        proto.makeConnection(transport)
        self.addCleanup(lambda: proto._clientGone or proto.connectionLost(DONE))
        return proto, transport

    def test_connLimit(self) -> None:
        """ConnLimit(2) closes a third connection from the client; one closing makes room."""
        limit = ConnLimit(2)
        rules = [limit]
        first, t1 = self.accept(rules)
        _, t2 = self.accept(rules)
        third, t3 = self.accept(rules)
        self.assertEqual((t1.disconnecting, t2.disconnecting, t3.disconnecting), (False, False, True))
        self.assertEqual(third.termination, "PR")
        third.connectionLost(DONE)
        self.assertEqual(limit.table.value(CLIENT.host, "conn_cur"), 2)
        first.connectionLost(DONE)
        self.assertEqual(limit.table.value(CLIENT.host, "conn_cur"), 1)
        _, t4 = self.accept(rules)
        self.assertFalse(t4.disconnecting)
        self.assertIs(limit.table.clock, self.reactor)

    def test_trackAndReject(self) -> None:
        """track + reject(when=above(conn_rate)): HAProxy's tcp-request connection track-sc0 / reject."""
        t = Table("t", counters=["conn_cur", "conn_rate(10s)", "bytes_in_rate(10s)"])
        rules = [track(t), reject(when=above(t, "conn_rate", 2))]
        seen = [self.accept(rules)[1].disconnecting for _ in range(3)]
        self.assertEqual(seen, [False, False, True])
        self.assertEqual(self.accept(rules, OTHER)[1].disconnecting, False)
        self.assertEqual(t.value(CLIENT.host, "conn_rate"), 3)

    def test_rateLimit(self) -> None:
        """A RateLimit in tcp mode counts connections per period and closes those over it."""
        rules = [RateLimit(1, 5.0)]
        self.assertEqual([self.accept(rules)[1].disconnecting for _ in range(2)], [False, True])
        self.reactor.advance(10)
        self.assertFalse(self.accept(rules)[1].disconnecting)

    def test_requestKeysRefused(self) -> None:
        """A tcp frontend refuses rules keyed by the request."""
        t = Table("t", key=byHeader("x"))
        be = Backend("be", [Server("a", FakeEndpoint())])
        e = self.assertRaises(ConfigError, TCPFrontend, "tcp:0", be, rules=[track(t)])
        self.assertIn("reads the request", str(e))


class BenchTests(SynchronousTestCase):
    """bench/ratelimit.py still measures what it says, on a few requests."""

    def test_runs(self) -> None:
        """The check, the proxied requests (answered, or it exits) and the memory figure all run."""
        import importlib.util
        from pathlib import Path

        path = Path(__file__).resolve().parent.parent / "bench" / "ratelimit.py"
        spec = importlib.util.spec_from_file_location("ratelimit", path)
        assert spec is not None and spec.loader is not None
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        self.assertGreater(bench.check(200, 10), 0)
        self.assertGreater(bench.request(50, [RateLimit(10**9, 10.0)]), 0)
        self.assertGreater(bench.memory(1000, ["http_req_rate(10s)"]), 100)
