"""
Stick-table counts shared between processes through a store
(C{Table(store=...)}, L{lbkit.traffic._shared}): two tables standing for
two workers on one L{Local} store and one L{Clock}; the service running
the store; then two real balancers sharing one real redis-server.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server
from lbkit.http import Frontend
from lbkit.service import ListeningService, LoadBalancerService
from lbkit.store import Local, Redis
from lbkit.testing import FakeEndpoint, HTTPHarness
from lbkit.traffic import ConnLimit, RateLimit, Table, track
from tests.test_http_integration import backend, reactor
from tests.test_store import RedisMixin, waitUntil
from tests.test_traffic_live import TrafficTestCase

CLIENT = IPv4Address("TCP", "198.51.100.7", 51000)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


class Worker:
    """One process: an http frontend whose rules count in its own table of the shared name."""

    def __init__(self, testCase: SynchronousTestCase, store: Local, clock: Clock, rules: Any) -> None:
        self.table = Table("src", counters=["conn_cur", "http_req_rate(10s)"], store=store, clock=clock)
        self.table.attach()
        self.server = Server("s1", FakeEndpoint(IPv4Address("TCP", "192.0.2.1", 80)))
        frontend = Frontend("tcp:8080", [], default=Backend("be", [self.server]), name="fe", maxIdlePerServer=0,
                            requestRules=[track(self.table), *rules(self.table)])
        self.harness = HTTPHarness(frontend, clientAddress=CLIENT)
        testCase.addCleanup(self.harness.close)

    def get(self, respond: bool = True) -> int:
        client = self.harness.request(GET)
        if respond and self.harness.pending():
            self.harness.connect(self.server).respond(OK)
        data = client.transport.value()
        return int(data.split(b" ", 2)[1]) if data else 0


class SharedTests(SynchronousTestCase):
    """Two workers' tables of one name on one store count together."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.store = Local(clock=self.clock)

    def test_rateLimitAcrossWorkers(self) -> None:
        """RateLimit(4 per 10 s) in each worker: the fifth request over both is refused."""
        a = Worker(self, self.store, self.clock, lambda t: [RateLimit(4, 10.0, table=t)])
        b = Worker(self, self.store, self.clock, lambda t: [RateLimit(4, 10.0, table=t)])
        seen = []
        for worker in (a, b, a, b, a, b):
            seen.append(worker.get())
            self.clock.advance(0.5)  # what each worker counted is published within flushEvery
        self.assertEqual(seen, [200, 200, 200, 200, 429, 429])
        self.assertEqual(a.table.value(CLIENT.host, "http_req_rate"), 6)
        self.assertEqual(b.table.rows()[0]["http_req_rate"], 6)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connLimitAcrossWorkers(self) -> None:
        """ConnLimit(2) over two workers: two requests in flight in one leave no room in the other."""
        a = Worker(self, self.store, self.clock, lambda t: [ConnLimit(2, table=t)])
        b = Worker(self, self.store, self.clock, lambda t: [ConnLimit(2, table=t)])
        self.assertEqual(a.get(respond=False), 0)
        self.clock.advance(0.5)
        self.assertEqual(a.get(respond=False), 0)
        self.clock.advance(0.5)
        self.assertEqual(b.get(respond=False), 429)
        self.assertEqual(b.table.value(CLIENT.host, "conn_cur"), 2)

    def test_flushes(self) -> None:
        """A worker publishes at once, then at most every flushEvery seconds; stop publishes the rest."""
        a = Worker(self, self.store, self.clock, lambda t: [])
        shared = a.table.shared
        assert shared is not None
        a.get()
        self.assertEqual(shared.published, 1)  # the request at once; its end waits for the timer
        a.get()
        a.get()
        self.assertEqual((shared.published, len(self.clock.getDelayedCalls())), (1, 1))
        self.clock.advance(0.5)
        self.assertEqual(shared.published, 2)  # one key: one write for all that happened
        self.clock.advance(0.5)
        a.get()
        self.assertEqual(shared.published, 3)  # flushEvery went by: at once again
        a.table.detach()
        self.assertEqual((shared.published, self.clock.getDelayedCalls()), (4, []))

    def test_received(self) -> None:
        """Its own entries, junk, and entries past their time to live are not counted."""
        a = Worker(self, self.store, self.clock, lambda t: [])
        shared = a.table.shared
        assert shared is not None
        shared.received(f"{shared.process}\t1.2.3.4", "[1000, 5, 1000, 9, 0]", 60)
        shared.received("other\t1.2.3.4", "not json", 60)
        shared.received("other\t1.2.3.4", '["x"]', 60)
        shared.received("nokey", "[1000, 5, 1000, 9, 0]", 60)
        self.assertEqual(a.table.value("1.2.3.4", "conn_cur"), 0)
        shared.received("other\t1.2.3.4", "[1000, 5, 1000, 9, 0]", 60)
        self.assertEqual(a.table.value("1.2.3.4", "conn_cur"), 5)
        self.assertEqual(a.table.value("1.2.3.4", "http_req_rate"), 9)
        self.clock.advance(61)
        self.assertEqual(a.table.value("1.2.3.4", "conn_cur"), 0)


class ServiceTests(SynchronousTestCase):
    """A service runs the store of its frontends' tables and attaches them."""

    def test_runsStore(self) -> None:
        """The store is started with the service, watched for the table, and the table publishes on stop."""
        store = Local()
        table = Table("src", store=store, counters=["http_req_rate(10s)"])
        frontend = Frontend("tcp:0:interface=127.0.0.1", [], default=Backend("be", [Server("s", FakeEndpoint())]),
                            name="fe", requestRules=[track(table)])
        service = LoadBalancerService([frontend], MemoryReactorClock())
        service.startService()
        [storeService] = service.storeServices.values()
        self.assertEqual((storeService.store, storeService.tables), (store, [table]))
        self.assertIn("traffic.src", store._watchers)
        self.successResultOf(service.stopService())


class RedisSharedTests(RedisMixin, TrafficTestCase):
    """Two balancers, one redis-server: a rate limit counts the requests both saw."""

    timeout = 60

    @inlineCallbacks
    def startNode(self, redisPort: int, serverPort: int) -> Any:
        store = Redis(f"tcp:127.0.0.1:{redisPort}", prefix="test:", maxDelay=0.2)
        # an hour's periods: the counts must not cross a period boundary (periods are aligned on the
        # wall clock) while the test reads them exactly; with a minute's they did, one run in a few dozen
        table = Table("src", counters=["conn_cur", "http_req_rate(3600s)"], store=store)
        frontend = Frontend("tcp:0:interface=127.0.0.1", [], default=backend("app", [serverPort]), name="fe",
                            log=False, requestRules=[RateLimit(4, 3600.0, table=table)])
        service = LoadBalancerService([frontend], reactor)
        service.startService()
        self.addCleanup(service.stopService)
        listening = [s for s in service if isinstance(s, ListeningService)][0]
        assert listening.port is not None
        yield waitUntil(lambda: store.connected)
        return listening.port.getHost().port, table

    @inlineCallbacks
    def test_twoNodes(self) -> Any:
        """3 requests through A, then B: B lets one more through and refuses the rest."""
        redisPort, _ = yield self.startRedis()
        serverPort = self.site("app1")[0]
        portA, tableA = yield self.startNode(redisPort, serverPort)
        portB, tableB = yield self.startNode(redisPort, serverPort)
        seen = yield self.statuses(portA, 3, "127.0.0.10")
        self.assertEqual(seen, [200, 200, 200])
        yield waitUntil(lambda: tableB.value("127.0.0.10", "http_req_rate") == 3)
        seen = yield self.statuses(portB, 3, "127.0.0.10")
        self.assertEqual(seen, [200, 429, 429])
        yield waitUntil(lambda: tableA.value("127.0.0.10", "http_req_rate") == 6)
