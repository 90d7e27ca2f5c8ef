"""
Tests for L{lbkit.store} and L{lbkit.persistence.StickySource}'s C{store}:
the local copy on a C{Clock}, then real redis-server processes shared by
two balancers (in this process, and as two C{twistd lbkit} processes),
Redis stopped and started again, expiry in Redis, and examples/store.py.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from typing import Any, Callable

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, LoopingCall
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from lbkit import Backend, Context, Server, tcp
from lbkit.interfaces import IStore
from lbkit.persistence import StickySource
from lbkit.service import ListeningService, LoadBalancerService, StoreService, fromSiteFile
from lbkit.store import Local, Redis
from lbkit.testing import assertProvides
from tests.helpers import ProcessRunner, freePort, requireBinary, runProcess, spawn
from tests.test_examples import EXAMPLES, REPO, TWISTD, _Collect

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def client(host: str) -> Context:
    return Context(IPv4Address("TCP", host, 40000))


# -- unit tests: fakes and a Clock ---------------------------------------------


@implementer(IStore)
class CountingStore(Local):
    """A L{Local} store that counts its starts and stops."""

    made: list[CountingStore] = []
    started = 0
    stopped = 0

    def __init__(self) -> None:
        Local.__init__(self)
        self.made.append(self)

    def start(self, reactor: Any) -> None:
        self.started += 1

    def stop(self) -> Deferred[None]:
        self.stopped += 1
        return succeed(None)


class LocalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = Local(size=2, clock=self.clock)

    def test_interface(self) -> None:
        """Both stores provide IStore."""
        assertProvides(self, IStore, self.store)
        assertProvides(self, IStore, Redis())

    def test_expires(self) -> None:
        """An entry lives its ttl, then is gone."""
        self.store.set("t", "k", "v", 10)
        self.clock.advance(9.9)
        self.assertEqual(self.store.get("t", "k"), "v")
        self.clock.advance(0.1)
        self.assertIsNone(self.store.get("t", "k"))
        self.assertEqual(len(self.store), 0)

    def test_bounded(self) -> None:
        """Beyond C{size} entries, the least recently written one goes."""
        for key in "abc":
            self.store.set("t", key, key, 10)
        self.assertEqual([self.store.get("t", k) for k in "abc"], [None, "b", "c"])

    def test_watchers(self) -> None:
        """Every listener of a table hears each write, with its ttl."""
        heard: list[tuple[str, str, float]] = []
        self.store.watch("t", lambda *entry: heard.append(entry))
        self.store.watch("other", lambda *entry: heard.append(("wrong", "", 0.0)))
        self.store.set("t", "k", "v", 5)
        self.assertEqual(heard, [("k", "v", 5)])


class RedisCacheTests(SynchronousTestCase):
    """The local side of L{Redis}, never connected."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = Redis("tcp:127.0.0.1:1", prefix="p:", queue=3, clock=self.clock)

    def test_localCopyExpires(self) -> None:
        """A write is readable at once, without Redis, and expires like the Redis copy would."""
        self.store.set("t", "k", "v", 2)
        self.assertEqual(self.store.get("t", "k"), "v")
        self.assertFalse(self.store.connected)
        self.clock.advance(2)
        self.assertIsNone(self.store.get("t", "k"))

    def test_queueBounded(self) -> None:
        """Unreachable, it keeps the newest C{queue} writes and counts those dropped."""
        for i in range(5):
            self.store.set("t", f"k{i}", "v", 60)
        self.assertEqual(self.store.dropped, 2)
        self.assertEqual(list(self.store._pending), [("t", "k2"), ("t", "k3"), ("t", "k4")])

    def test_refreshCoalesced(self) -> None:
        """Refreshing an unchanged entry soon after it was written queues nothing more."""
        self.store.set("t", "k", "v", 60)
        self.store._pending.clear()
        self.clock.advance(1)
        self.store.set("t", "k", "v", 60)
        self.assertEqual(len(self.store._pending), 0)
        self.store.set("t", "k", "w", 60)
        self.assertEqual(len(self.store._pending), 1)

    def test_messages(self) -> None:
        """Another node's message reaches the listeners; its own and broken ones do not."""
        heard: list[tuple[str, str, float]] = []
        self.store.watch("t", lambda *entry: heard.append(entry))
        other = json.dumps({"n": "elsewhere", "k": "10.0.0.1", "v": "s2", "t": 1500})
        self.store._message("p:t", other)
        self.store._message("p:t", json.dumps({"n": self.store.node, "k": "x", "v": "s1", "t": 1500}))
        self.store._message("p:t", "{not json")
        self.assertEqual(heard, [("10.0.0.1", "s2", 1.5)])
        self.assertEqual(self.store.get("t", "10.0.0.1"), "s2")
        self.assertEqual(self.store.errors, 1)


class _Gone(Exception):
    """What the fake connection raises once it is lost."""


class FakeCommands:
    """The commands connection of a L{Redis} store: records each command and its pending Deferred."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.lost = False

    def _call(self, *command: Any) -> Deferred[Any]:
        if self.lost:
            raise _Gone("Not connected")
        d: Deferred[Any] = Deferred()
        self.calls.append((*command, d))
        return d

    def set(self, key: str, value: str, pexpire: int) -> Deferred[Any]:
        return self._call("SET", key, value, pexpire)

    def publish(self, channel: str, message: str) -> Deferred[Any]:
        return self._call("PUBLISH", channel, message)


class _Built:
    """A protocol factory that has built C{current}."""

    def __init__(self, current: Any) -> None:
        self.current = current


class RedisWriteTests(SynchronousTestCase):
    """How L{Redis} writes through a (fake) commands connection."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = Redis(prefix="p:", clock=self.clock)
        self.store._connectionError = _Gone
        self.commands = FakeCommands()
        self.store._commands = self.commands

    def test_setAndPublish(self) -> None:
        """A write is a SET with PX and a PUBLISH naming this node, the key, the value and the lifetime."""
        self.store.set("stick:app", "10.0.0.1", "s2", 2.5)
        (set_, key, value, ms, d1), (publish, channel, message, d2) = self.commands.calls
        self.assertEqual((set_, key, value, ms), ("SET", "p:stick:app:10.0.0.1", "s2", 2500))
        self.assertEqual((publish, channel), ("PUBLISH", "p:stick:app"))
        self.assertEqual(json.loads(message), {"n": self.store.node, "k": "10.0.0.1", "v": "s2", "t": 2500})
        d1.callback("OK")
        d2.callback(1)
        self.assertEqual((self.store.written, self.store.errors), (1, 0))

    def test_lostConnection(self) -> None:
        """A connection that fails at once stalls the writes, which wait for the next connection."""
        self.commands.lost = True
        self.store.set("t", "a", "v", 60)
        self.store.set("t", "b", "v", 60)
        self.assertEqual(list(self.store._pending), [("t", "a"), ("t", "b")])
        fresh = FakeCommands()
        self.store._factories = [_Built(fresh), _Built(None)]  # type: ignore[list-item]
        self.store._commandsReady(None)  # the next connection
        self.assertEqual([c[1] for c in fresh.calls if c[0] == "SET"], ["p:t:a", "p:t:b"])
        self.assertEqual(len(self.store._pending), 0)

    def test_refused(self) -> None:
        """A write Redis refuses is counted and not tried again."""
        self.store.set("t", "a", "v", 60)
        self.commands.calls[0][-1].errback(ValueError("OOM"))
        self.commands.calls[1][-1].callback(1)
        self.assertEqual((self.store.errors, self.store.written, len(self.store._pending)), (1, 0, 0))


class StickyStoreTests(SynchronousTestCase):
    """Two stick tables sharing one L{Local} store, as two balancers would share Redis."""

    def setUp(self) -> None:
        self.clock = Clock()
        store = Local(clock=self.clock)
        self.tables = [StickySource(expire=60, clock=self.clock, store=store) for _ in range(2)]
        self.backends = [
            Backend("app", [Server("s1", "127.0.0.1:1"), Server("s2", "127.0.0.1:2")], persistence=t)
            for t in self.tables
        ]
        for table, backend in zip(self.tables, self.backends, strict=True):
            table.attach(backend)

    def test_sharedByName(self) -> None:
        """What one table remembers, the other recalls, as its own server of that name."""
        a, b = self.backends
        self.tables[0].remember(a, a.servers[1], client("10.0.0.7"))
        self.assertIs(self.tables[1].recall(b, client("10.0.0.7")), b.servers[1])
        self.assertEqual(self.tables[1].entries(), [("10.0.0.7", "app/s2", 0.0)])

    def test_unknownName(self) -> None:
        """An entry naming a server the backend does not have is no entry."""
        b = self.backends[1]
        b.servers.pop()
        self.tables[0].remember(self.backends[0], self.backends[0].servers[1], client("10.0.0.7"))
        self.assertIsNone(self.tables[1].recall(b, client("10.0.0.7")))

    def test_expiry(self) -> None:
        """A shared entry expires on each side after C{expire} seconds without use."""
        self.tables[0].remember(self.backends[0], self.backends[0].servers[0], client("10.0.0.7"))
        self.clock.advance(61)
        self.assertIsNone(self.tables[1].recall(self.backends[1], client("10.0.0.7")))

    def test_notOlder(self) -> None:
        """An update older than what a table knows of the same server leaves it as it is."""
        self.tables[1].remember(self.backends[1], self.backends[1].servers[0], client("10.0.0.7"))
        self.tables[1]._received("app", "10.0.0.7", "s1", 10)
        self.assertEqual(self.tables[1].entries(), [("10.0.0.7", "app/s1", 0.0)])

    def test_notAStore(self) -> None:
        """A store that does not provide IStore is refused at once."""
        self.assertRaises(ValueError, StickySource, store=object())


SITE = """
from tests.test_store import CountingStore
from lbkit import Backend, Server, tcp
from lbkit.persistence import StickySource
app = Backend("app", [Server("s1", "127.0.0.1:1")], persistence=StickySource(store=CountingStore()))
listen = [tcp.Frontend("tcp:0:interface=127.0.0.1", app, name="fe")]
"""


class ServiceStoreTests(TestCase):
    """L{LoadBalancerService} starts and stops the stores of its backends."""

    def test_stopWithoutStart(self) -> None:
        """A store service that never started does not stop its store."""
        store = CountingStore()
        service = StoreService(store, Clock())
        self.successResultOf(service.stopService())
        service.startService()
        self.successResultOf(service.stopService())
        self.assertEqual((store.started, store.stopped), (1, 1))

    def test_startStopReload(self) -> None:
        """One start when the service starts, none more across a reload, one stop at the end."""
        path = self.mktemp() + "-site.py"
        with open(path, "w") as f:
            f.write(SITE)
        del CountingStore.made[:]
        service = fromSiteFile(path, _reactor())
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        [store] = CountingStore.made
        self.assertEqual((store.started, store.stopped), (1, 0))
        self.assertEqual([type(s) for s in service.storeServices.values()], [StoreService])

        def reloaded(changes: list[str]) -> Any:
            old, fresh = CountingStore.made
            self.assertIs(old, store)
            self.assertEqual(fresh.started, 0)  # the running table (and store) stays
            self.assertEqual(store.started, 1)
            return service.stopService()

        def stopped(result: object) -> None:
            self.assertEqual((store.started, store.stopped), (1, 1))

        return service.reload().addCallback(reloaded).addCallback(stopped)


# -- real redis-server processes ------------------------------------------------


def waitUntil(predicate: Callable[[], bool], timeout: float = 15.0) -> Deferred[None]:
    """Fire once C{predicate()} is true, checked every 20 ms on the reactor; fail after C{timeout}."""
    reactor = _reactor()
    d: Deferred[None] = Deferred()

    def check() -> None:
        if predicate() and not d.called:
            d.callback(None)

    loop = LoopingCall(check)
    loop.clock = reactor
    loop.start(0.02)
    d.addTimeout(timeout, reactor)
    return d.addBoth(lambda result: (loop.stop(), result)[1])


class _SayName(Protocol):
    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.factory.name)  # type: ignore[attr-defined]
        self.transport.loseConnection()


class RedisMixin:
    """Starts redis-server processes and asks them things with redis-cli."""

    @inlineCallbacks
    def startRedis(self: Any, port: int | None = None) -> Any:
        """Start a redis-server on 127.0.0.1 (a free port if none); fire with (port, runner)."""
        server = requireBinary(REDIS_SERVER)
        port = port or freePort()
        directory = self.mktemp()
        os.makedirs(directory)
        runner = spawn(self, _reactor(), [
            server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", directory,
        ])
        yield runner.waitForOutput(b"Ready to accept connections", timeout=20)
        return port, runner

    @inlineCallbacks
    def cli(self: Any, port: int, *args: str) -> Any:
        """Run one redis-cli command; fire with its output, stripped."""
        runner = yield runProcess(self, _reactor(), [requireBinary(REDIS_CLI), "-p", str(port), *args])
        self.assertEqual(runner.exitCode, 0, runner.output)
        return runner.stdout.decode().strip()

    def startServers(self: Any) -> list[int]:
        """Two servers, s1 and s2, that answer their name and close; return their ports."""
        ports = []
        for name in (b"s1", b"s2"):
            factory = Factory.forProtocol(_SayName)
            factory.name = name  # type: ignore[attr-defined]
            port = _reactor().listenTCP(0, factory, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            ports.append(port.getHost().port)
        return ports

    @inlineCallbacks
    def ask(self: Any, port: int, source: str) -> Any:
        """Connect to C{port} from C{source}; fire with the name of the server that answered."""
        protocol = _Collect()
        endpoint = TCP4ClientEndpoint(_reactor(), "127.0.0.1", port, bindAddress=(source, 0))
        yield connectProtocol(endpoint, protocol)
        data = yield protocol.done
        return data.decode()


class _Silent(Protocol):
    """A Redis that accepts and never answers."""


class SlowRedisTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_silentRedis(self) -> Any:
        """A Redis that never answers: writes time out and count, the local copy serves, stop is clean."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        port = _reactor().listenTCP(0, Factory.forProtocol(_Silent), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        store = Redis(f"tcp:127.0.0.1:{port.getHost().port}", timeout=0.1, maxDelay=0.1)
        store.watch("t", lambda *entry: None)
        store.start(_reactor())
        store.set("t", "k", "v", 60)
        self.assertEqual(store.get("t", "k"), "v")
        yield waitUntil(lambda: store.errors >= 3)
        self.assertFalse(store.connected)
        self.assertEqual(store.get("t", "k"), "v")
        self.assertEqual(store.outages, 1)
        yield store.stop()
        warnings = [e for e in events if e.get("store") is store and "unreachable" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)


class RedisStoreTests(RedisMixin, TestCase):
    timeout = 60

    @inlineCallbacks
    def startStore(self, port: int) -> Any:
        store = Redis(f"tcp:127.0.0.1:{port}", prefix="test:", maxDelay=0.2)
        store.start(_reactor())
        self.addCleanup(store.stop)
        yield waitUntil(lambda: store.connected)
        return store

    @inlineCallbacks
    def test_expiresInRedis(self) -> Any:
        """A write reaches Redis with its lifetime (PTTL), and leaves Redis when it ends."""
        port, _ = yield self.startRedis()
        store = yield self.startStore(port)
        store.set("t", "long", "v", 30)
        store.set("t", "short", "v", 0.3)
        yield waitUntil(lambda: store.written == 2)
        self.assertEqual((yield self.cli(port, "GET", "test:t:long")), "v")
        pttl = int((yield self.cli(port, "PTTL", "test:t:long")))
        self.assertTrue(0 < pttl <= 30_000, pttl)
        gone: list[str] = []

        @inlineCallbacks
        def probe() -> Any:
            gone.append((yield self.cli(port, "EXISTS", "test:t:short")))

        while not gone or gone[-1] != "0":
            yield probe()
        self.assertEqual(store.errors, 0)

    @inlineCallbacks
    def startNode(self, redisPort: int, servers: list[int]) -> Any:
        """A balancer with a tcp frontend; fire with (its port, its stick table, its store)."""
        store = Redis(f"tcp:127.0.0.1:{redisPort}", prefix="test:", maxDelay=0.2)
        sticky = StickySource(expire=60, store=store)
        backend = Backend(
            "app", [Server(f"s{i + 1}", f"127.0.0.1:{p}") for i, p in enumerate(servers)],
            persistence=sticky, timeoutConnect=5,
        )
        service = LoadBalancerService([tcp.Frontend("tcp:0:interface=127.0.0.1", backend, name="fe")], _reactor())
        service.startService()
        self.addCleanup(service.stopService)
        listening = [s for s in service if isinstance(s, ListeningService)][0]
        assert listening.port is not None
        yield waitUntil(lambda: store.connected)
        return listening.port.getHost().port, sticky, store

    def knows(self, sticky: StickySource, host: str) -> Callable[[], bool]:
        return lambda: any(entry[0] == host for entry in sticky.entries())

    @inlineCallbacks
    def test_twoNodesAndAnOutage(self) -> Any:
        """
        A client stuck through node A stays on its server through node B;
        with Redis stopped both serve from what they know, and once it is
        back they share again.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        redisPort, redis = yield self.startRedis()
        servers = self.startServers()
        portA, stickyA, storeA = yield self.startNode(redisPort, servers)
        portB, stickyB, storeB = yield self.startNode(redisPort, servers)

        self.assertEqual((yield self.ask(portA, "127.0.0.1")), "s1")
        self.assertEqual((yield self.ask(portA, "127.0.0.2")), "s2")
        yield waitUntil(self.knows(stickyB, "127.0.0.2"))
        # B's own round robin would give its first client s1
        self.assertEqual((yield self.ask(portB, "127.0.0.2")), "s2")
        self.assertEqual((yield self.ask(portB, "127.0.0.1")), "s1")

        yield redis.stop()
        yield waitUntil(lambda: not storeA.connected and not storeB.connected)
        for port in (portA, portB):
            self.assertEqual((yield self.ask(port, "127.0.0.2")), "s2")
            self.assertEqual((yield self.ask(port, "127.0.0.1")), "s1")
        newcomer = yield self.ask(portA, "127.0.0.3")  # remembered on A, queued for Redis
        self.assertTrue(storeA.errors >= 1 and storeB.errors >= 1, (storeA.errors, storeB.errors))
        self.assertEqual((storeA.outages, storeB.outages), (1, 1))

        yield self.startRedis(redisPort)
        yield waitUntil(lambda: storeA.connected and storeB.connected)
        yield waitUntil(self.knows(stickyB, "127.0.0.3"))  # A's queued write arrived
        self.assertEqual((yield self.ask(portB, "127.0.0.3")), newcomer)
        self.assertEqual((yield self.cli(redisPort, "GET", "test:stick:app:127.0.0.3")), newcomer)
        texts = [e.get("log_format", "") for e in events if e.get("store") in (storeA, storeB)]
        self.assertEqual(sum("unreachable" in t for t in texts), 2, texts)
        self.assertEqual(sum("reachable again" in t for t in texts), 2, texts)


RELOADED = """
from lbkit import Backend, Server, tcp
from lbkit.persistence import StickySource
from lbkit.store import Redis

app = Backend("app", [Server("s1", "127.0.0.1:{s1}"){more}],
              persistence=StickySource(expire=60, store=Redis("tcp:127.0.0.1:{redis}", prefix="test:")))
listen = [tcp.Frontend("tcp:0:interface=127.0.0.1", app, name="front")]
"""


class ReloadTests(RedisMixin, TestCase):
    timeout = 30

    @inlineCallbacks
    def test_oneConnectionAcrossReloads(self) -> Any:
        """A reload keeps the running store: Redis still sees two connections, and they close at the end."""
        redisPort, _ = yield self.startRedis()
        s1, s2 = self.startServers()
        path = self.mktemp() + "-site.py"
        with open(path, "w") as f:
            f.write(RELOADED.format(s1=s1, more="", redis=redisPort))
        service = fromSiteFile(path, _reactor())
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        [running] = service.storeServices.values()
        yield waitUntil(lambda: running.store.connected)
        for _ in range(2):
            with open(path, "w") as f:
                f.write(RELOADED.format(s1=s1, more=f', Server("s2", "127.0.0.1:{s2}")', redis=redisPort))
            yield service.reload()
        self.assertEqual(list(service.storeServices.values()), [running])
        clients = (yield self.cli(redisPort, "CLIENT", "LIST")).splitlines()
        self.assertEqual(len(clients), 3, clients)  # the store's two, and redis-cli's own
        yield service.stopService()
        while len((yield self.cli(redisPort, "CLIENT", "LIST")).splitlines()) != 1:
            pass  # Redis has yet to read the end of the store's connections


NODE = """
from lbkit import Backend, Server, tcp
from lbkit.persistence import StickySource
from lbkit.store import Redis

app = Backend("app", [Server("s1", "127.0.0.1:{s1}"), Server("s2", "127.0.0.1:{s2}")],
              persistence=StickySource(expire=60, store=Redis("tcp:127.0.0.1:{redis}", prefix="node:")))
listen = [tcp.Frontend("tcp:{front}:interface=127.0.0.1", app, name="front")]
"""


class ProcessTests(RedisMixin, TestCase):
    """Real C{twistd lbkit} processes sharing a real redis-server."""

    timeout = 90

    def twistd(self, config: str, env: dict[str, str] | None = None, *options: str) -> ProcessRunner:
        argv = [*TWISTD, "-n", "--pidfile=", "lbkit", *options, "--config", config]
        environ = {**os.environ, "PYTHONPATH": REPO, **(env or {})}
        runner = spawn(self, _reactor(), argv, path=REPO, env=environ)
        self.assertTrue(argv[0] == sys.executable)
        return runner

    @inlineCallbacks
    def stopCleanly(self, runner: ProcessRunner) -> Any:
        code = yield runner.stop(grace=10)
        self.assertIn(code, (0, -15), runner.output)
        self.assertIn(b"Server Shut Down.", runner.output)
        self.assertNotIn(b"Traceback", runner.output)

    def node(self, redis: int, servers: list[int]) -> tuple[str, int]:
        front = freePort()
        path = os.path.abspath(self.mktemp() + "-node.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent(NODE).format(s1=servers[0], s2=servers[1], redis=redis, front=front))
        return path, front

    @inlineCallbacks
    def test_twoTwistdNodes(self) -> Any:
        """Node B, started after node A, reads A's table from Redis: A's clients keep their servers."""
        redisPort, _ = yield self.startRedis()
        servers = self.startServers()
        pathA, portA = self.node(redisPort, servers)
        pathB, portB = self.node(redisPort, servers)
        a = self.twistd(pathA)
        yield a.waitForOutput(b"stick:app: 0 entries read from Redis", timeout=30)
        self.assertEqual((yield self.ask(portA, "127.0.0.1")), "s1")
        self.assertEqual((yield self.ask(portA, "127.0.0.2")), "s2")
        while (yield self.cli(redisPort, "EXISTS", "node:stick:app:127.0.0.2")) != "1":
            pass
        b = self.twistd(pathB)
        yield b.waitForOutput(b"stick:app: 2 entries read from Redis", timeout=30)
        self.assertEqual((yield self.ask(portB, "127.0.0.2")), "s2")
        self.assertEqual((yield self.ask(portB, "127.0.0.1")), "s1")
        yield self.stopCleanly(b)
        yield self.stopCleanly(a)

    @inlineCallbacks
    def test_workers(self) -> Any:
        """Each worker of C{--workers 2} has its own two connections to Redis, and they share the table."""
        redisPort, _ = yield self.startRedis()
        servers = self.startServers()
        path, port = self.node(redisPort, servers)
        runner = self.twistd(path, None, "--workers", "2")
        yield waitUntil(lambda: runner.output.count(b"entries read from Redis") == 2, timeout=30)
        clients = (yield self.cli(redisPort, "CLIENT", "LIST")).splitlines()
        self.assertEqual(len(clients), 5, clients)  # two per worker, and redis-cli's own
        answers = []
        for _ in range(3):
            answers.append((yield self.ask(port, "127.0.0.2")))
        while (yield self.cli(redisPort, "EXISTS", "node:stick:app:127.0.0.2")) != "1":
            pass
        for _ in range(6):
            answers.append((yield self.ask(port, "127.0.0.2")))
        self.assertEqual(len(set(answers[3:])), 1, answers)
        self.assertIn(b"worker 1", runner.output)
        yield self.stopCleanly(runner)

    @inlineCallbacks
    def test_example(self) -> Any:
        """examples/store.py serves sticky http and writes its table to the Redis LBKIT_REDIS names."""
        from tests.test_examples import curl

        redisPort, _ = yield self.startRedis()
        runner = self.twistd(os.path.join(EXAMPLES, "store.py"), {"LBKIT_REDIS": f"tcp:127.0.0.1:{redisPort}"})
        yield runner.waitForOutput(b"stick:app: 0 entries read from Redis", timeout=30)
        yield runner.waitForOutput(b"frontend shared listening on", timeout=30)
        answers = []
        for _ in range(3):
            answers.append((yield curl("http://127.0.0.1:8087/")))
        self.assertEqual(len(set(answers)), 1, answers)
        while not (yield self.cli(redisPort, "GET", "lbkit:stick:app:127.0.0.1")):
            pass
        self.assertIn((yield self.cli(redisPort, "GET", "lbkit:stick:app:127.0.0.1")), answers[0])
        self.assertTrue(int((yield self.cli(redisPort, "PTTL", "lbkit:stick:app:127.0.0.1"))) > 0)
        yield self.stopCleanly(runner)
