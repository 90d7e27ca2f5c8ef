"""
Servers from DNS service discovery (L{lbkit.discovery}): the answers
turned into servers, the TTL floor and ceiling, failures, the backend and
the service that run it (on a fake resolver and a L{Clock}), then real
lookups against dnsmasq with traffic through a real frontend, and
examples/discovery.py under twistd.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from types import SimpleNamespace
from typing import Any, Sequence

from twisted.internet.defer import Deferred, TimeoutError, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger
from twisted.names.error import DNSNameError, DNSServerError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbkit import Backend, Server, ServerState, discovery, tcp
from lbkit._listening import listeningServices
from lbkit._worker import WorkerService
from lbkit._workerproc import statesOf
from lbkit.discovery import SRV, A, srvWeight
from lbkit.error import ConfigError
from lbkit.interfaces import IServerSource
from lbkit.service import LoadBalancerService, fromSiteFile
from lbkit.testing import FakeCheck, assertProvides
from lbkit.workers import WorkerProcess
from tests.dnshelpers import (
    NAME,
    Asker,
    Dnsmasq,
    FakeResolver,
    Named,
    a,
    aaaa,
    hostRecord,
    srv,
    srvHost,
)
from tests.helpers import listen
from tests.test_examples import EXAMPLES, curl, startProcess, stopCleanly, twistd


def described(servers: Sequence[Server]) -> list[tuple[str, str, int, bool]]:
    return [(s.name, s.address, s.weight, s.backup) for s in servers]


class DiscoveryServiceTests(SynchronousTestCase):
    """SRV and A sources on a fake resolver, driven by a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.resolver = FakeResolver()
        self.delivered: list[list[Server]] = []
        self.events: list[dict[str, Any]] = []
        self.patch(discovery, "_log", Logger(namespace="lbkit.discovery", observer=self.events.append))

    def start(self, source: Any) -> discovery.DiscoveryService:
        service = source.makeService(self.clock, lambda servers: self.delivered.append(list(servers)))
        service.startService()

        def stop() -> None:
            stopped = service.stopService()
            while self.resolver.queries:
                self.resolver.fail(TimeoutError())
            if stopped is not None:
                self.successResultOf(stopped)
            self.assertEqual(self.clock.getDelayedCalls(), [])

        self.addCleanup(stop)
        return service

    def logged(self, text: str) -> int:
        return sum(1 for e in self.events if text in e["log_format"])

    def test_provides(self) -> None:
        """SRV and A provide IServerSource."""
        assertProvides(self, IServerSource, SRV(NAME, resolver=self.resolver))
        assertProvides(self, IServerSource, A("web.example.test", 80, resolver=self.resolver))

    def test_srvServers(self) -> None:
        """One server per SRV record, named target:port; lowest priority primary; weights mapped."""
        self.start(SRV(NAME, resolver=self.resolver, server={"maxconn": 7}))
        self.assertEqual(self.resolver.queries[0][:2], ("SRV", NAME))
        self.resolver.answer(
            [srv("b.example.test", 8002, 10, 65535), srv("a.example.test", 8001, 10, 300), srv("c.example.test", 8003, 20)],
            [a("a.example.test", "10.0.0.1"), a("b.example.test", "10.0.0.2"), a("c.example.test", "10.0.0.3")],
        )
        [servers] = self.delivered
        self.assertEqual(described(servers), [
            ("a.example.test:8001", "10.0.0.1:8001", 2, False),
            ("b.example.test:8002", "10.0.0.2:8002", 256, False),
            ("c.example.test:8003", "10.0.0.3:8003", 1, True),
        ])
        self.assertEqual([s.maxconn for s in servers], [7, 7, 7])

    def test_weightMapping(self) -> None:
        """SRV weights 0..65535 map to 1..256: ceil(w / 256), 0 counting as 1."""
        self.assertEqual([srvWeight(w) for w in (0, 1, 256, 257, 512, 65535)], [1, 1, 1, 2, 2, 256])

    def test_ignoreWeight(self) -> None:
        """With ignoreWeight, the template's weight applies."""
        self.start(SRV(NAME, resolver=self.resolver, ignoreWeight=True, server={"weight": 5}))
        self.resolver.answer([srv("a.example.test", 1, weight=65535)], [a("a.example.test", "10.0.0.1")])
        self.assertEqual(self.delivered[0][0].weight, 5)

    def test_targetLookedUp(self) -> None:
        """A target missing from the additional section is looked up: A, then AAAA."""
        self.start(SRV(NAME, resolver=self.resolver))
        self.resolver.answer([srv("a.example.test", 8001), srv("b.example.test", 8002)], [a("a.example.test", "10.0.0.1")])
        self.assertEqual(self.resolver.answer([]), ("A", "b.example.test"))
        self.assertEqual(self.resolver.answer([aaaa("b.example.test", "::1")]), ("AAAA", "b.example.test"))
        self.assertEqual([s.address for s in self.delivered[0]], ["10.0.0.1:8001", "[::1]:8002"])

    def test_targetWithoutAddress(self) -> None:
        """A target that has no address is left out, with a warning."""
        self.start(SRV(NAME, resolver=self.resolver))
        self.resolver.answer([srv("a.example.test", 8001), srv("b.example.test", 8002)], [a("a.example.test", "10.0.0.1")])
        self.resolver.fail(DNSNameError())
        self.assertEqual([s.name for s in self.delivered[0]], ["a.example.test:8001"])
        self.assertEqual(self.logged("{notes}"), 1)

    def test_aRecords(self) -> None:
        """A: one server per address, named address:port, in address order."""
        self.start(A("web.example.test", 8080, resolver=self.resolver, server={"backup": True}))
        self.resolver.answer([a("web.example.test", "10.0.0.10"), a("web.example.test", "10.0.0.9")])
        self.assertEqual(described(self.delivered[0]), [
            ("10.0.0.9:8080", "10.0.0.9:8080", 1, True), ("10.0.0.10:8080", "10.0.0.10:8080", 1, True),
        ])

    def test_ttlFloorAndCeiling(self) -> None:
        """The next lookup is after the TTL, at least minInterval, at most maxInterval."""
        self.start(A("web.example.test", 80, resolver=self.resolver, minInterval=2, maxInterval=10))
        for ttl, wait in ((0, 2.0), (5, 5.0), (1000, 10.0)):
            self.resolver.answer([a("web.example.test", "10.0.0.1", ttl=ttl)])
            self.clock.advance(wait - 0.01)
            self.assertEqual(self.resolver.queries, [])
            self.clock.advance(0.01)
            self.assertEqual(len(self.resolver.queries), 1)
        self.assertEqual(len(self.delivered), 1, "the same answer is delivered once")

    def test_failureKeepsServers(self) -> None:
        """A failed lookup delivers nothing, is retried with back-off, and is logged once per reason."""
        service = self.start(A("web.example.test", 80, resolver=self.resolver, minInterval=1, maxInterval=5))
        self.resolver.answer([a("web.example.test", "10.0.0.1", ttl=0)])
        waits = []
        for error in (DNSNameError(), DNSNameError(), TimeoutError(), TimeoutError(), DNSServerError()):
            self.clock.advance(0.99)
            self.clock.advance(0.01)
            self.resolver.fail(error)
            waits.append(self.clock.getDelayedCalls()[0].getTime() - self.clock.seconds())
            self.clock.advance(waits[-1] - 1)
        self.assertEqual(waits, [1, 2, 4, 5, 5])
        self.assertEqual(len(self.delivered), 1)
        self.assertEqual([s.name for s in service.servers], ["10.0.0.1:80"])
        self.assertEqual(self.logged("lookup failed"), 3)  # NXDOMAIN, timeout, SERVFAIL
        self.assertEqual(service.lastError, "SERVFAIL")
        self.clock.advance(1)
        self.resolver.answer([a("web.example.test", "10.0.0.2")])
        self.assertEqual([s.name for s in self.delivered[-1]], ["10.0.0.2:80"])
        self.assertEqual(self.logged("answers again"), 1)
        self.assertEqual((service.failures, service.lastError), (0, None))

    def test_emptyAnswerIsAFailure(self) -> None:
        """An answer with no records keeps the servers too."""
        self.start(SRV(NAME, resolver=self.resolver))
        self.resolver.answer([])
        self.assertEqual(self.delivered, [])
        self.assertEqual(self.logged("lookup failed"), 1)

    def test_deliverRaises(self) -> None:
        """An unexpected error delivering is logged, and the lookups go on."""

        def deliver(servers: Sequence[Server]) -> None:
            raise RuntimeError("boom")

        service = A("web.example.test", 80, resolver=self.resolver).makeService(self.clock, deliver)
        service.startService()
        self.resolver.answer([a("web.example.test", "10.0.0.1")])
        self.assertEqual(self.logged("unexpected error"), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.resolver.queries), 1)
        service.stopService()
        self.resolver.fail(TimeoutError())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopWaitsForLookup(self) -> None:
        """Stopping with a lookup in flight fires once it ended, and delivers nothing more."""
        service = self.start(A("web.example.test", 80, resolver=self.resolver))
        stopped = service.stopService()
        assert stopped is not None
        self.assertNoResult(stopped)
        self.resolver.answer([a("web.example.test", "10.0.0.1")])
        self.successResultOf(stopped)
        self.assertEqual(self.delivered, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ConfigTests(SynchronousTestCase):
    """Bad settings are ConfigErrors that say what is wrong."""

    def assertBad(self, text: str, make: Any, *args: Any, **kwargs: Any) -> None:
        e = self.assertRaises(ConfigError, make, *args, **kwargs)
        self.assertIn(text, str(e))

    def test_badSettings(self) -> None:
        """Nameservers, names, ports, intervals and templates are checked."""
        ns = ["127.0.0.1:5353"]
        self.assertBad("'dns.example' is not an IP address", SRV, NAME, nameservers=["dns.example:53"])
        self.assertBad("port '99999'", SRV, NAME, nameservers=["127.0.0.1:99999"])
        self.assertBad("non-empty list", SRV, NAME, nameservers="127.0.0.1")
        self.assertBad("non-empty domain name", SRV, "", nameservers=ns)
        self.assertBad("not a valid domain name", A, "a..b", 80, nameservers=ns)
        self.assertBad("port must be a number from 1 to 65535", A, "web.example.test", 0, nameservers=ns)
        self.assertBad("port must be", A, "web.example.test", "80", nameservers=ns)
        self.assertBad("below minInterval", SRV, NAME, nameservers=ns, minInterval=5, maxInterval=1)
        self.assertBad("minInterval must be a positive", SRV, NAME, nameservers=ns, minInterval=0)
        self.assertBad("weight comes from the DNS records", SRV, NAME, nameservers=ns, server={"weight": 3})
        self.assertBad("unexpected keyword", SRV, NAME, nameservers=ns, server={"maxconns": 3})
        self.assertBad("maxconn must be", A, "web.example.test", 80, nameservers=ns, server={"maxconn": -1})
        self.assertBad("does not provide", SRV, NAME, resolver=object())

    def test_nameservers(self) -> None:
        """Nameservers are IPv4 or IPv6 addresses with an optional port (53)."""
        self.assertEqual(
            SRV(NAME, nameservers=["127.0.0.1", "127.0.0.2:5353", "::1", "[::1]:5353"]).nameservers,
            (("127.0.0.1", 53), ("127.0.0.2", 5353), ("::1", 53), ("::1", 5353)),
        )

    def test_sameAs(self) -> None:
        """Sources of the same class and settings are the same discovery."""
        ns = ["127.0.0.1:5353"]
        self.assertTrue(SRV(NAME, nameservers=ns, server={"maxconn": 2}).sameAs(SRV(NAME, nameservers=ns, server={"maxconn": 2})))
        self.assertFalse(SRV(NAME, nameservers=ns).sameAs(SRV(NAME, nameservers=ns, minInterval=2)))
        self.assertFalse(A("web.example.test", 80, nameservers=ns).sameAs(A("web.example.test", 81, nameservers=ns)))
        self.assertFalse(SRV(NAME, nameservers=ns).sameAs(object()))


class BackendTests(SynchronousTestCase):
    """A backend whose servers come from a source."""

    def test_startsEmpty(self) -> None:
        """A backend from a source has no servers until the first answer; a listed one still needs some."""
        source = SRV(NAME, nameservers=["127.0.0.1:5353"])
        backend = Backend("web", servers=source)
        self.assertEqual((backend.servers, backend.serverSource, list(backend.eligible())), ([], source, []))
        self.assertRaises(ConfigError, Backend, "web", servers=[])

    def test_setServers(self) -> None:
        """A server of the same name and address stays (counters kept); a removed one drains until idle."""
        backend = Backend("web", servers=SRV(NAME, nameservers=["127.0.0.1:5353"]))
        backend.setServers([Server("a", "127.0.0.1:1"), Server("b", "127.0.0.1:2")], 1.0)
        a1, b1 = backend.servers
        a1.total = b1.total = 5
        b1.active = 1
        changes = backend.setServers([Server("a", "127.0.0.1:1", weight=3), Server("c", "127.0.0.1:3")], 2.0)
        self.assertEqual(
            changes, ["server a weight 1 -> 3", "server c added (127.0.0.1:3)", "server b removed: draining until idle"]
        )
        self.assertIs(backend.servers[0], a1)
        self.assertEqual((a1.total, a1.weight, b1.state), (5, 3, ServerState.DRAIN))
        self.assertEqual([s.name for s in backend.eligible()], ["a", "c"])
        gone = backend.whenGone(b1)
        backend.release(b1)
        self.assertIs(self.successResultOf(gone), b1)
        self.assertEqual([s.name for s in backend.servers], ["a", "c"])
        self.assertRaises(ConfigError, backend.setServers, [Server("x", "127.0.0.1:1"), Server("x", "127.0.0.1:2")])

    def test_updateFromKeepsSource(self) -> None:
        """A reload with the same source keeps the servers and the running source."""
        ns = ["127.0.0.1:5353"]
        backend = Backend("web", servers=SRV(NAME, nameservers=ns))
        source = backend.serverSource
        backend.setServers([Server("a", "127.0.0.1:1")])
        self.assertEqual(backend.updateFrom(Backend("web", servers=SRV(NAME, nameservers=ns))), [])
        self.assertIs(backend.serverSource, source)
        self.assertEqual([s.name for s in backend.servers], ["a"])
        other = SRV(NAME, nameservers=ns, minInterval=3)
        self.assertEqual(backend.updateFrom(Backend("web", servers=other)), [f"servers now come from {other!r}"])
        self.assertIs(backend.serverSource, other)
        changes = backend.updateFrom(Backend("web", [Server("b", "127.0.0.1:2")]))
        self.assertIsNone(backend.serverSource)
        self.assertIn("server a removed: draining until idle", changes)
        self.assertEqual([s.name for s in backend.servers], ["b"])  # a was idle: gone at once


class ServiceTests(SynchronousTestCase):
    """LoadBalancerService runs each backend's discovery while it runs, and checks what it finds."""

    def test_runsWithTheService(self) -> None:
        """Discovery starts and stops with the service; health checks cover discovered servers."""
        reactor = MemoryReactorClock()
        resolver = FakeResolver()
        check = FakeCheck(interval=2.0)
        backend = Backend("web", servers=SRV(NAME, resolver=resolver), health=check)
        service = LoadBalancerService([tcp.Frontend("tcp:8000:interface=127.0.0.1", backend)], reactor)
        self.assertEqual(resolver.queries, [])
        service.startService()
        self.assertEqual(len(resolver.queries), 1)
        resolver.answer([srv("a.example.test", 1), srv("b.example.test", 2)], [a("a.example.test", "10.0.0.1"), a("b.example.test", "10.0.0.2")])
        self.assertEqual([s.name for s in backend.servers], ["a.example.test:1", "b.example.test:2"])
        self.assertEqual(sorted(service.healthServices[backend].monitors), ["a.example.test:1", "b.example.test:2"])
        running = service.discoveryServices[backend]
        self.assertEqual(service.syncDiscovery(), [])
        self.assertIs(service.discoveryServices[backend], running)
        stopped = service.stopService()
        self.successResultOf(stopped)
        self.assertFalse(running.running)
        self.assertEqual(reactor.getDelayedCalls(), [])


class RealDNSTests(TestCase):
    """An SRV backend on a real dnsmasq, with real traffic through a tcp frontend."""

    timeout = 30

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.dns = Dnsmasq(self, reactor)
        self.ports: dict[str, int] = {}
        for label in "abc":
            factory = Factory.forProtocol(Named)
            factory.label = label.encode()  # type: ignore[attr-defined]
            self.ports[label] = listen(self, reactor, factory)

    def zone(self, *entries: tuple[str, int, int]) -> list[str]:
        """SRV records (label, priority, weight) for the servers, and their targets' addresses."""
        return [srvHost(NAME, f"{label}.example.test", self.ports[label], prio, weight) for label, prio, weight in entries] + [
            hostRecord(f"{label}.example.test", "127.0.0.1") for label in "abc"
        ]

    def within(self, d: Deferred[Any], seconds: float = 10) -> Deferred[Any]:
        return d.addTimeout(seconds, self.reactor)

    @inlineCallbacks
    def connect(self, port: int) -> Any:
        factory = Factory.forProtocol(Asker)
        factory.reactor = self.reactor  # type: ignore[attr-defined]
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", port)
        client = yield endpoint.connect(factory)

        def close() -> Deferred[None]:
            client.transport.loseConnection()
            return client.lost

        self.addCleanup(close)
        return client

    @inlineCallbacks
    def test_followsTheZone(self) -> Any:
        """
        Both SRV servers answer; a zone change adds and removes servers within
        the TTL floor (the kept one keeps its counters, the removed one
        drains without cutting its connection); a dead nameserver keeps them.
        """
        yield self.dns.start(self.zone(("a", 0, 256), ("b", 0, 512)))
        source = SRV(NAME, nameservers=[self.dns.nameserver], minInterval=0.2, maxInterval=1.0, timeout=0.3)
        backend = Backend("web", servers=source)
        frontend = tcp.Frontend("tcp:0:interface=127.0.0.1", backend, name="web-in")
        service = LoadBalancerService([frontend], self.reactor)
        service.startService()
        self.addCleanup(service.stopService)
        found = service.discoveryServices[backend]
        yield self.within(found.whenDelivered())
        self.assertEqual(described(backend.servers), [
            (f"a.example.test:{self.ports['a']}", f"127.0.0.1:{self.ports['a']}", 1, False),
            (f"b.example.test:{self.ports['b']}", f"127.0.0.1:{self.ports['b']}", 2, False),
        ])
        port = listeningServices(service.itemServices[id(frontend)])[0].port.getHost().port  # type: ignore[union-attr]
        held: dict[bytes, list[Any]] = {}
        for _ in range(3):
            client = yield self.connect(port)
            label = (yield client.ask(b"x")).split(b":")[0]
            held.setdefault(label, []).append(client)
        self.assertEqual(sorted(held), [b"a", b"b"])
        a1, b1 = backend.servers
        total = a1.total

        changed = found.whenDelivered()  # before the new zone can answer
        yield self.dns.restart(self.zone(("a", 0, 256), ("c", 1, 0)))
        servers = yield self.within(changed)
        self.assertEqual([s.name for s in servers], [f"a.example.test:{self.ports['a']}", f"c.example.test:{self.ports['c']}"])
        self.assertIs(backend.servers[0], a1)
        self.assertEqual(a1.total, total)
        self.assertTrue(backend.servers[1].backup)
        self.assertEqual((b1.state, backend.leaving()), (ServerState.DRAIN, [b1]))
        for client in held[b"b"]:
            self.assertEqual((yield client.ask(b"y")), b"b:y")  # not cut
        gone = backend.whenGone(b1)
        for client in held[b"b"]:
            self.assertNoResult(gone)
            client.transport.loseConnection()
        yield self.within(gone)

        yield self.dns.stop()
        while found.lastError is None:
            yield self.within(found.whenLookedUp())
        self.assertEqual([s.name for s in backend.servers], [s.name for s in servers])
        client = yield self.connect(port)
        self.assertEqual((yield client.ask(b"z")), b"a:z")

    @inlineCallbacks
    def test_reloadKeepsOneDiscovery(self) -> Any:
        """A reload of the same site file keeps the running discovery; a changed source restarts it."""
        yield self.dns.start(self.zone(("a", 0, 0)))
        site = os.path.join(tempfile.mkdtemp(prefix="lbkit-disc-"), "site.py")
        self.addCleanup(shutil.rmtree, os.path.dirname(site), True)

        def write(minInterval: float) -> None:
            with open(site, "w") as f:
                f.write(
                    "from lbkit import Backend, tcp\nfrom lbkit.discovery import SRV\n"
                    f"web = Backend('web', servers=SRV({NAME!r}, nameservers=[{self.dns.nameserver!r}],"
                    f" minInterval={minInterval}, timeout=0.3))\n"
                    "listen = [tcp.Frontend('tcp:0:interface=127.0.0.1', web)]\n"
                )

        write(0.2)
        service = fromSiteFile(site, self.reactor)
        service.startService()
        self.addCleanup(service.stopService)
        [backend] = service.backends()
        first = service.discoveryServices[backend]
        yield self.within(first.whenDelivered())
        changes = yield service.reload()
        self.assertEqual((changes, service.discoveryServices[backend]), ([], first))
        write(0.3)
        changes = yield service.reload()
        self.assertIn("backend web: discovery restarted", changes)
        self.assertFalse(first.running)
        self.assertEqual([type(c) for c in service if isinstance(c, discovery.DiscoveryService)], [discovery.DiscoveryService])
        self.assertEqual([s.name for s in backend.servers], [f"a.example.test:{self.ports['a']}"])


class WorkersTests(SynchronousTestCase):
    """Under --workers, each worker discovers on its own and takes the supervisor's states."""

    def test_workerSplitsAndAsks(self) -> None:
        """A worker splits a discovered server's maxconn, and asks for states when servers changed."""
        backend = Backend("web", servers=SRV(NAME, resolver=FakeResolver()))
        service = WorkerService([tcp.Frontend("tcp:8000:interface=127.0.0.1", backend)], MemoryReactorClock(), workers=2)
        asked: list[None] = []
        service.onDiscovered = lambda: asked.append(None)
        service.serversDiscovered(backend, [Server("a", "127.0.0.1:1", maxconn=5)])
        self.assertEqual((backend.servers[0].maxconn, len(asked)), (3, 1))
        service.serversDiscovered(backend, [Server("a", "127.0.0.1:1", maxconn=5)])
        self.assertEqual(len(asked), 1, "nothing changed: nothing asked")

    def test_supervisorAnswers(self) -> None:
        """The supervisor answers a worker's "discovered" with every server's state."""
        backend = Backend("web", [Server("a", "127.0.0.1:1")])
        listen = [tcp.Frontend("tcp:8000:interface=127.0.0.1", backend)]
        backend.servers[0].setState(ServerState.DOWN)
        process = WorkerProcess(SimpleNamespace(reactor=Clock(), listen=listen), 0, 1)  # type: ignore[arg-type]
        transport = StringTransport()
        transport.pid = 1  # type: ignore[attr-defined]
        process.makeConnection(transport)
        transport.clear()
        process.childDataReceived(1, b'{"op": "discovered"}\n')
        self.assertEqual(json.loads(transport.value()), {"op": "states", "states": statesOf(listen)})


class ExampleTests(TestCase):
    """examples/discovery.py under twistd, its nameserver a real dnsmasq, alone and with --workers 2."""

    timeout = 30

    @inlineCallbacks
    def startExample(self, *options: str) -> Any:
        from twisted.internet import reactor

        dns_ = Dnsmasq(self, reactor)
        yield dns_.start([
            srvHost(NAME, "web1.example.test", 9081), srvHost(NAME, "web2.example.test", 9082),
            hostRecord("web1.example.test", "127.0.0.1"), hostRecord("web2.example.test", "127.0.0.1"),
        ])
        cwd = tempfile.mkdtemp(prefix="lbkit-ex-")
        self.addCleanup(shutil.rmtree, cwd, True)
        argv = twistd("lbkit", "--config", os.path.join(EXAMPLES, "discovery.py"), *options)
        return startProcess(self, argv, cwd, env={**os.environ, "LBKIT_DNS": dns_.nameserver})

    @inlineCallbacks
    def serveBoth(self, watcher: Any, process: Any) -> Any:
        answers = set()
        for _ in range(4):
            answers.add((yield curl("http://127.0.0.1:8088/")).strip())
        self.assertEqual(answers, {"web1", "web2"})
        yield stopCleanly(self, watcher, process)

    @inlineCallbacks
    def test_example(self) -> Any:
        """The example's backend finds web1 and web2 through SRV and serves from both."""
        watcher, process = yield self.startExample()
        yield watcher.waitFor("frontend discovery-demo listening on")
        yield watcher.waitFor("server web2.example.test:9082 added")
        yield self.serveBoth(watcher, process)

    @inlineCallbacks
    def test_exampleWithWorkers(self) -> Any:
        """Under --workers 2, each worker discovers web1 and web2 on its own and serves from them."""
        watcher, process = yield self.startExample("--workers", "2")
        yield watcher.waitFor("worker 1 (pid")
        for pid in sorted(set(re.findall(r"worker \d \(pid (\d+)\)", watcher.output)))[:2]:
            yield watcher.waitFor(f"(pid {pid}): [lbkit#info] lbkit: discovery: backend web: server web2.example.test:9082 added")
        yield self.serveBoth(watcher, process)
