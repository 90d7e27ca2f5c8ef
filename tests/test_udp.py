"""
Tests for L{lbkit.udp}: sessions balanced over real UDP servers on
127.0.0.1, replies from the frontend's address, bounds and timeouts, and
real DNS servers (dnsmasq) behind lbkit queried with twisted.names and dig.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.names import client, dns
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbkit import Backend, Server, udp
from lbkit.balance import RoundRobin, Source
from lbkit.config import checkListen
from lbkit.error import ConfigError
from lbkit.health import DNSCheck, UDPCheck
from lbkit.service import LoadBalancerService
from lbkit.stats._collect import Collector
from lbkit.udp._frontend import parseUDP
from tests.helpers import ProcessRunner, freePort, requireBinary


class _Echo(DatagramProtocol):
    """A UDP server that answers each datagram with its name and the datagram."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[tuple[bytes, Any]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.seen.append((data, addr))
        assert self.transport is not None
        self.transport.write(self.name.encode() + b":" + data, addr)


class _Client(DatagramProtocol):
    """A client socket of its own; C{ask} sends and fires with the next reply and where it came from."""

    def __init__(self) -> None:
        self.waiting: list[Deferred[tuple[bytes, Any]]] = []

    def ask(self, data: bytes, port: int) -> Deferred[tuple[bytes, Any]]:
        d: Deferred[tuple[bytes, Any]] = Deferred()
        self.waiting.append(d)
        assert self.transport is not None
        self.transport.write(data, ("127.0.0.1", port))
        return d.addTimeout(5, reactor)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if self.waiting:
            self.waiting.pop(0).callback((data, addr))


class ConfigTests(SynchronousTestCase):
    """Endpoints and settings are checked when the site file is loaded."""

    def backend(self) -> Backend:
        return Backend("dns", servers=[Server("a", "127.0.0.1:53")])

    def test_endpoint(self) -> None:
        """C{udp:PORT[:interface=ADDR]}, IPv6 interfaces escaped as in Twisted's strings."""
        self.assertEqual(parseUDP("udp:5353:interface=127.0.0.1"), (5353, "127.0.0.1"))
        self.assertEqual(parseUDP("udp:53:interface=\\:\\:1"), (53, "::1"))
        self.assertEqual(parseUDP("udp:53"), (53, ""))
        for bad in ("tcp:53", "udp:x", "udp:70000", "udp:53:backlog=5"):
            self.assertRaises(ConfigError, udp.Frontend, bad, self.backend())

    def test_settings(self) -> None:
        """Bad bounds are refused with a clear message."""
        for kwargs in ({"timeoutSession": 0}, {"maxSessions": 0}, {"responses": 0}):
            e = self.assertRaises(ConfigError, udp.Frontend, "udp:53", self.backend(), **kwargs)
            self.assertIn(next(iter(kwargs)), str(e))

    def test_bindKeys(self) -> None:
        """Two UDP frontends on one port clash; a UDP and a TCP frontend on one number do not."""
        from lbkit import tcp

        web = Backend("web", servers=[Server("w", "127.0.0.1:80")])
        checkListen([udp.Frontend("udp:5353", self.backend()), tcp.Frontend("tcp:5353", web)])
        e = self.assertRaises(ConfigError, checkListen, [
            udp.Frontend("udp:5353:interface=127.0.0.1", self.backend()), udp.Frontend("udp:5353", self.backend()),
        ])
        self.assertIn("two listeners on port 5353", str(e))


class SessionTests(TestCase):
    """Real datagrams through a real frontend to real UDP servers."""

    timeout = 30

    def setUp(self) -> None:
        self.echoes = {name: _Echo(name) for name in ("s1", "s2")}
        self.ports = {}
        for name, echo in self.echoes.items():
            port = reactor.listenUDP(0, echo, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.ports[name] = port.getHost().port

    def start(self, balance: Any = None, **kwargs: Any) -> tuple[udp.Frontend, int]:
        backend = Backend("echo", servers=[Server(n, f"127.0.0.1:{p}") for n, p in self.ports.items()],
                          balance=balance or RoundRobin())
        frontend = udp.Frontend("udp:0:interface=127.0.0.1", backend, name="echo-in", **kwargs)
        service = LoadBalancerService([frontend], reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return frontend, frontend.factories[0].transport.getHost().port  # type: ignore[union-attr]

    def client(self) -> _Client:
        c = _Client()
        port = reactor.listenUDP(0, c, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return c

    @inlineCallbacks
    def test_sessionsStick(self) -> Any:
        """
        Each client address stays on one server for its session, sessions
        are spread round robin, and replies come from the frontend's address.
        """
        frontend, port = self.start()
        one, two = self.client(), self.client()
        first, second = [], []
        for i in range(3):
            first.append((yield one.ask(b"a%d" % i, port)))
        for i in range(3):
            second.append((yield two.ask(b"b%d" % i, port)))
        self.assertEqual(len({data.split(b":")[0] for data, _ in first}), 1)
        names = {first[0][0].split(b":")[0], second[0][0].split(b":")[0]}
        self.assertEqual(names, {b"s1", b"s2"})
        self.assertEqual([data.split(b":", 1)[1] for data, _ in second], [b"b0", b"b1", b"b2"])
        self.assertEqual({addr for _, addr in first + second}, {("127.0.0.1", port)})
        proxy = frontend.factories[0]
        self.assertEqual((proxy.current, proxy.total), (2, 2))
        self.assertEqual(sorted(s.active for s in frontend.backend.servers), [1, 1])
        # each server saw one source port: the session's own socket
        for echo in self.echoes.values():
            self.assertEqual(len({addr for _, addr in echo.seen}), 1)

    @inlineCallbacks
    def test_sourceHashing(self) -> Any:
        """With Source, sessions of one client host all go to one server."""
        frontend, port = self.start(balance=Source(), responses=1)
        answers = set()
        for _ in range(4):
            data, _ = yield self.client().ask(b"q", port)
            answers.add(data)
        self.assertEqual(len(answers), 1)

    @inlineCallbacks
    def test_responsesCloseSession(self) -> Any:
        """C{responses=1} ends a session at its first reply (DNS); the next datagram opens another."""
        frontend, port = self.start(responses=1)
        proxy = frontend.factories[0]
        c = self.client()
        yield c.ask(b"one", port)
        self.assertEqual((proxy.current, proxy.total), (0, 1))
        self.assertEqual([s.active for s in frontend.backend.servers], [0, 0])
        yield c.ask(b"two", port)
        self.assertEqual(proxy.total, 2)

    @inlineCallbacks
    def test_timeoutAndBound(self) -> Any:
        """
        Idle sessions end after C{timeoutSession}; beyond C{maxSessions} the
        session idle longest is evicted and counted; each ended session is
        logged.
        """
        frontend, port = self.start(maxSessions=2, timeoutSession=0.3)
        proxy = frontend.factories[0]
        lines: list[dict[str, Any]] = []
        proxy.accessLog = type("L", (), {"info": lambda self, fmt, **kw: lines.append(kw)})()
        clients = [self.client() for _ in range(3)]
        for c in clients:
            yield c.ask(b"x", port)
        self.assertEqual((proxy.current, proxy.evicted), (2, 1))
        collector = Collector()
        collector.bind([frontend])
        self.assertEqual(collector.frontend(frontend)["udp"], {"evicted": 1, "dropped": 0})
        self.assertEqual(lines[0]["termination"], "cR")
        ended: Deferred[None] = Deferred()
        original = proxy.ended

        def watch(session: Any, why: str) -> None:
            original(session, why)
            if not proxy.sessions and not ended.called:
                ended.callback(None)

        proxy.ended = watch  # type: ignore[method-assign]
        yield ended.addTimeout(5, reactor)
        self.assertEqual([line["termination"] for line in lines], ["cR", "sD", "sD"])
        self.assertEqual([s.active for s in frontend.backend.servers], [0, 0])
        self.assertEqual(lines[1]["datagramsIn"], 1)

    @inlineCallbacks
    def test_deadServerObserved(self) -> Any:
        """A server whose port is closed answers ICMP unreachable: observed as a failure, session closed."""
        dead = freePort()
        backend = Backend("echo", servers=[Server("dead", f"127.0.0.1:{dead}")])
        frontend = udp.Frontend("udp:0:interface=127.0.0.1", backend)
        service = LoadBalancerService([frontend], reactor)
        service.startService()
        self.addCleanup(service.stopService)
        seen: Deferred[tuple[bool, str]] = Deferred()
        backend.servers[0].addObserver(lambda server, ok, why: seen.called or seen.callback((ok, why)))
        c = self.client()
        assert c.transport is not None
        c.transport.write(b"hello", ("127.0.0.1", frontend.factories[0].transport.getHost().port))  # type: ignore[union-attr]
        ok, why = yield seen.addTimeout(5, reactor)
        self.assertEqual((ok, why), (False, "Layer4 connection problem: port unreachable"))

    @inlineCallbacks
    def test_udpCheck(self) -> Any:
        """UDPCheck passes on a reply that starts as expected, fails on another and on a closed port."""
        server = Server("s1", f"127.0.0.1:{self.ports['s1']}")
        yield UDPCheck(b"ping", expect=b"s1:ping").check(server, reactor)
        failure = yield self.assertFailure(UDPCheck(b"ping", expect=b"nope").check(server, reactor), Exception)
        self.assertIn("wrong reply", str(failure))
        closed = Server("c", f"127.0.0.1:{freePort()}")
        failure = yield self.assertFailure(UDPCheck(b"ping").check(closed, reactor), Exception)
        self.assertIn("port unreachable", str(failure))


def _dnsmasq() -> str:
    found = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    return requireBinary(found or "/usr/sbin/dnsmasq")


class DNSTests(TestCase):
    """Two real dnsmasq servers behind lbkit, queried with twisted.names and dig."""

    timeout = 60

    @inlineCallbacks
    def startDnsmasq(self, address: str) -> Any:
        port = freePort()
        argv = [_dnsmasq(), "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
                "--listen-address=127.0.0.1", f"--port={port}", "--log-facility=-",
                f"--host-record=web.example.test,{address}", "--local=/example.test/",
                f"--pid-file={os.path.abspath(self.mktemp())}.pid"]
        if os.getuid() == 0:
            argv.append("--user=root")
        runner = ProcessRunner(reactor)
        reactor.spawnProcess(runner, argv[0], argv, env=os.environ.copy())
        self.addCleanup(runner.stop)
        yield runner.waitForOutput(b"started", 20)
        return port

    @inlineCallbacks
    def test_balancedDNS(self) -> Any:
        """
        Queries through lbkit reach both DNS servers (round robin, one
        session per query with responses=1); dig gets the same answers; a
        DNSCheck passes against each server.
        """
        one, two = yield gatherResults([self.startDnsmasq("10.0.0.1"), self.startDnsmasq("10.0.0.2")])
        backend = Backend("dns", servers=[Server("ns1", f"127.0.0.1:{one}"), Server("ns2", f"127.0.0.1:{two}")],
                          health=DNSCheck("web.example.test", interval=30))
        frontend = udp.Frontend("udp:0:interface=127.0.0.1", backend, responses=1)
        service = LoadBalancerService([frontend], reactor)
        service.startService()
        self.addCleanup(service.stopService)
        port = frontend.factories[0].transport.getHost().port  # type: ignore[union-attr]
        for server in backend.servers:
            yield DNSCheck("web.example.test").check(server, reactor)

        resolver = client.Resolver(servers=[("127.0.0.1", port)], reactor=reactor)
        addresses = []
        for _ in range(4):
            answers, _, _ = yield resolver.lookupAddress("web.example.test", timeout=[2])
            addresses.extend(a.payload.dottedQuad() for a in answers if a.type == dns.A)
        self.assertEqual(sorted(addresses), ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2"])

        dig = shutil.which("dig")
        if dig is None:
            return
        seen = set()
        for _ in range(2):
            out, err, code = yield getProcessOutputAndValue(
                dig, ["@127.0.0.1", "-p", str(port), "+short", "+tries=1", "+time=2", "web.example.test", "A"])
            self.assertEqual(code, 0, err)
            seen.add(out.strip())
        self.assertEqual(seen, {b"10.0.0.1", b"10.0.0.2"})


class SyslogTests(TestCase):
    """Syslog datagrams balanced to two receivers: each sender's lines stay on one."""

    timeout = 30

    @inlineCallbacks
    def test_syslog(self) -> Any:
        """Four senders, three lines each: every sender's lines reach one receiver, both receivers get some."""
        received: dict[str, list[tuple[bytes, Any]]] = {"r1": [], "r2": []}
        done: Deferred[None] = Deferred()

        class Receiver(DatagramProtocol):
            def __init__(self, name: str) -> None:
                self.name = name

            def datagramReceived(self, data: bytes, addr: Any) -> None:
                received[self.name].append((data, addr))
                if sum(len(v) for v in received.values()) == 12 and not done.called:
                    done.callback(None)

        ports = []
        for name in received:
            p = reactor.listenUDP(0, Receiver(name), interface="127.0.0.1")
            self.addCleanup(p.stopListening)
            ports.append(p.getHost().port)
        backend = Backend("logs", servers=[Server(f"r{i}", f"127.0.0.1:{p}") for i, p in enumerate(ports, 1)])
        frontend = udp.Frontend("udp:0:interface=127.0.0.1", backend)
        service = LoadBalancerService([frontend], reactor)
        service.startService()
        self.addCleanup(service.stopService)
        port = frontend.factories[0].transport.getHost().port  # type: ignore[union-attr]
        for sender in range(4):
            c = _Client()
            listening = reactor.listenUDP(0, c, interface="127.0.0.1")
            self.addCleanup(listening.stopListening)
            for line in range(3):
                assert c.transport is not None
                c.transport.write(b"<14>sender%d line%d" % (sender, line), ("127.0.0.1", port))
        yield done.addTimeout(5, reactor)
        for sender in range(4):
            where = {name for name, got in received.items() for data, _ in got if b"sender%d " % sender in data}
            self.assertEqual(len(where), 1)
        self.assertTrue(received["r1"] and received["r2"])


class ExampleTests(TestCase):
    """examples/udp.py under twistd: two echo servers balanced on :5354."""

    timeout = 60

    @inlineCallbacks
    def test_example(self) -> Any:
        """Two client sockets get answers from the two echo servers, each from one."""
        import tempfile

        from tests.test_examples import EXAMPLES, startProcess, stopCleanly, twistd

        cwd = tempfile.mkdtemp(prefix="lbkit-ex-")
        self.addCleanup(shutil.rmtree, cwd, True)
        watcher, process = startProcess(self, twistd("lbkit", "--config", os.path.join(EXAMPLES, "udp.py")), cwd)
        yield watcher.waitFor("frontend echo-in listening on udp:5354")
        names = set()
        for _ in range(2):
            c = _Client()
            port = reactor.listenUDP(0, c, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            replies = set()
            for _ in range(2):
                data, addr = yield c.ask(b"hello", 5354)
                replies.add(data)
                self.assertEqual(addr, ("127.0.0.1", 5354))
            self.assertEqual(len(replies), 1)
            names |= replies
        self.assertEqual(names, {b"udp1: hello", b"udp2: hello"})
        yield stopCleanly(self, watcher, process)
