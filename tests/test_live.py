"""
Live changes to a backend, on a fake clock (docs/beyond.md): drain as a
Deferred, servers added and removed at run time, balancer and persistence
swapped with their state handed over.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from lbkit import Backend, Context, Server, ServerState
from lbkit.balance import URI, LeastConn, RoundRobin
from lbkit.error import ConfigError, DrainTimeout
from lbkit.health import HealthService, monitorFor
from lbkit.http import Request
from lbkit.interfaces import IAdoptingBalancer, IBalancer
from lbkit.persistence import Cookie, StickySource
from lbkit.testing import FakeCheck, assertProvides


def ctx(host: str = "10.0.0.1", path: bytes = b"/") -> Context:
    return Context(client=IPv4Address("TCP", host, 40000), request=Request(b"GET", path, b"HTTP/1.1", []))


def backend(n: int = 3, **kw: Any) -> Backend:
    return Backend("app", [Server(f"s{i}", f"127.0.0.1:{9000 + i}") for i in range(1, n + 1)], **kw)


class DrainTests(SynchronousTestCase):
    """L{Server.drain}: DRAIN, then a Deferred of the last connection and sticky client."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def test_idleServerDrainsAtOnce(self) -> None:
        """A server with nothing on it is in DRAIN and drained at once."""
        b = backend()
        s1 = b.servers[0]
        self.assertIs(self.successResultOf(s1.drain(clock=self.clock)), s1)
        self.assertIs(s1.state, ServerState.DRAIN)
        self.assertNotIn(s1, b.eligible())

    def test_waitsForLastConnection(self) -> None:
        """The Deferred fires only once the server's last connection is released."""
        b = backend(1)
        s1 = b.servers[0]
        b.tryAcquire(ctx())
        b.tryAcquire(ctx())
        d = s1.drain(clock=self.clock)
        self.clock.advance(5)
        self.assertNoResult(d)
        b.release(s1)
        self.clock.advance(1)
        self.assertNoResult(d)
        b.release(s1)
        self.clock.advance(0.5)
        self.assertIs(self.successResultOf(d), s1)

    def test_waitsForStickyClients(self) -> None:
        """With a stick table, the last sticky client's entry must expire too; it keeps its server meanwhile."""
        table = StickySource(expire=10, clock=self.clock.seconds)
        b = backend(2, persistence=table)
        first = b.tryAcquire(ctx("10.0.0.7"))
        assert first is not None
        b.release(first)
        d = first.drain(clock=self.clock)
        self.assertEqual(first.remaining(), (0, 1))
        self.clock.advance(5)
        # the sticky client comes back: it still goes to its draining server
        self.assertIs(b.tryAcquire(ctx("10.0.0.7")), first)
        b.release(first)
        self.clock.advance(9)
        self.assertNoResult(d)
        self.clock.advance(1.5)
        self.assertIs(self.successResultOf(d), first)

    def test_timeoutSaysWhatIsLeft(self) -> None:
        """On timeout the Deferred fails with DrainTimeout naming what is still open."""
        b = backend(1)
        s1 = b.servers[0]
        b.tryAcquire(ctx())
        d = s1.drain(timeout=3, clock=self.clock)
        self.clock.advance(3)
        failure = self.failureResultOf(d, DrainTimeout)
        self.assertEqual(failure.value.connections, 1)
        self.assertIn("app/s1 still has 1 connections after 3s", str(failure.value))
        self.assertIs(s1.state, ServerState.DRAIN)

    def test_cancelStopsWaiting(self) -> None:
        """Cancelling the Deferred stops the timer; the server stays in DRAIN."""
        b = backend(1)
        b.tryAcquire(ctx())
        d = b.servers[0].drain(clock=self.clock)
        d.cancel()
        self.failureResultOf(d)
        self.assertIs(b.servers[0].state, ServerState.DRAIN)

    def test_badTimeout(self) -> None:
        """A timeout that is not a positive number is refused before anything changes."""
        s1 = backend().servers[0]
        for bad in (0, -1, "10"):
            self.assertRaises(ValueError, s1.drain, bad, clock=self.clock)
        self.assertIs(s1.state, ServerState.UP)

    def test_downServerStaysDown(self) -> None:
        """A DOWN server is not set to DRAIN (that would bring its sticky clients back)."""
        b = backend()
        s1 = b.servers[0]
        s1.setState(ServerState.DOWN)
        self.successResultOf(s1.drain(clock=self.clock))
        self.assertIs(s1.state, ServerState.DOWN)


class AddRemoveTests(SynchronousTestCase):
    """L{Backend.addServer} and L{Backend.removeServer} at run time."""

    def setUp(self) -> None:
        self.clock = Clock()

    def test_addServerTakesTraffic(self) -> None:
        """An added server gets the next id and its turns."""
        b = backend(2)
        s3 = b.addServer(Server("s3", "127.0.0.1:9003"))
        self.assertEqual((s3.id, s3.backend), (3, b))
        picked = set()
        for _ in range(3):
            s = b.tryAcquire(ctx())
            assert s is not None
            picked.add(s.name)
            b.release(s)
        self.assertEqual(picked, {"s1", "s2", "s3"})

    def test_addServerChecks(self) -> None:
        """A taken name or a server of another backend is a ConfigError."""
        b = backend(2)
        self.assertRaises(ConfigError, b.addServer, Server("s1", "127.0.0.1:9100"))
        self.assertRaises(ConfigError, b.addServer, backend(1).servers[0])

    def test_addedServerRecognisedByCookie(self) -> None:
        """A cookie naming an added server sends the client there (the cookie table follows)."""
        b = backend(1, persistence=Cookie("SRV"))
        b.tryAcquire(ctx())  # the cookie table is built
        s2 = b.addServer(Server("s2", "127.0.0.1:9002"))
        c = Context(client=IPv4Address("TCP", "10.0.0.1", 1),
                    request=Request(b"GET", b"/", b"HTTP/1.1", [[b"Cookie", b"SRV=s2"]]))
        self.assertIs(b.tryAcquire(c), s2)

    def test_removeDrainsFirst(self) -> None:
        """removeServer drains the server and removes it once its last connection ended."""
        b = backend(2)
        s1 = b.servers[0]
        self.assertIs(b.tryAcquire(ctx()), s1)
        d = b.removeServer(s1, clock=self.clock)
        self.assertIn(s1, b.servers)
        self.assertEqual(b.eligible(), [b.servers[1]])
        b.release(s1)
        self.clock.advance(0.5)
        self.assertIs(self.successResultOf(d), s1)
        self.assertEqual([s.name for s in b.servers], ["s2"])
        self.assertIs(s1.state, ServerState.MAINT)  # a stale sticky entry for it redispatches

    def test_removeUnknown(self) -> None:
        """Removing a server of another backend is a ConfigError."""
        self.assertRaises(ConfigError, backend(2).removeServer, Server("x", "127.0.0.1:1"))


@implementer(IBalancer)
class AlwaysLast:
    """A user's balancer: the last server, always."""

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        return servers[-1] if servers else None


@implementer(IBalancer, IAdoptingBalancer)
class CountingLast(AlwaysLast):
    """A user's balancer that takes over its predecessor's pick count."""

    def __init__(self) -> None:
        self.picks = 0

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        self.picks += 1
        return super().pick(servers, context)

    def adopt(self, previous: Any) -> bool:
        if isinstance(previous, CountingLast):
            self.picks = previous.picks
            return True
        return False


class SwapTests(SynchronousTestCase):
    """L{Backend.setBalancer} and L{Backend.setPersistence}."""

    def cycle(self, b: Backend, n: int, c: Context | None = None) -> list[str]:
        names = []
        for _ in range(n):
            s = b.tryAcquire(c or ctx())
            assert s is not None
            names.append(s.name)
            b.release(s)
        return names

    def test_userBalancerWithoutAdopt(self) -> None:
        """A user's balancer without adopt takes over from the next pick."""
        b = backend()
        self.assertEqual(b.setBalancer(AlwaysLast()), ["balance RoundRobin -> AlwaysLast"])
        self.assertEqual(self.cycle(b, 3), ["s3"] * 3)

    def test_userBalancerWithAdopt(self) -> None:
        """A user's balancer with adopt is handed its predecessor."""
        b = backend(balance=CountingLast())
        self.cycle(b, 4)
        successor = CountingLast()
        changes = b.setBalancer(successor)
        self.assertIn("balance CountingLast took over the state of CountingLast", changes)
        self.cycle(b, 1)
        self.assertEqual(successor.picks, 5)

    def test_notABalancer(self) -> None:
        """Something that is not an IBalancer is refused; nothing changes."""
        b = backend()
        self.assertRaises(ConfigError, b.setBalancer, object())
        self.assertIsInstance(b.balance, RoundRobin)

    def test_roundRobinKeepsItsTurns(self) -> None:
        """A new RoundRobin goes on with the old one's sequence."""
        weights = [Server("a", "127.0.0.1:1", weight=3), Server("b", "127.0.0.1:2"), Server("c", "127.0.0.1:3")]
        b = Backend("w", weights)
        reference = Backend("w", [Server(s.name, s.address, weight=s.weight) for s in weights])
        first = self.cycle(b, 2)
        b.setBalancer(RoundRobin())
        self.assertEqual(first + self.cycle(b, 8), self.cycle(reference, 10))

    def test_leastConnTakesLiveLoad(self) -> None:
        """RoundRobin -> LeastConn mid-traffic: connections in flight count, releases reach the new balancer."""
        b = backend()
        held = [b.tryAcquire(ctx()) for _ in range(3)]
        b.release(held[0])  # s1 now idle
        b.setBalancer(LeastConn())
        self.assertEqual(b.tryAcquire(ctx()), held[0])

    def test_consistentRingKeepsItsTable(self) -> None:
        """URI(consistent) -> URI(consistent): the ring is adopted, every path stays on its server."""
        b = backend(5, balance=URI(hashType="consistent"))
        paths = [b"/p%d" % i for i in range(50)]
        before = [self.cycle(b, 1, ctx(path=p))[0] for p in paths]
        old = b.balance
        new = URI(hashType="consistent")
        self.assertIn("balance URI took over the state of URI", b.setBalancer(new))
        self.assertIs(new._table, old._table)
        self.assertEqual([self.cycle(b, 1, ctx(path=p))[0] for p in paths], before)

    def test_builtinsProvideAdopt(self) -> None:
        """The built-in adopting balancers declare it."""
        for balancer in (RoundRobin(), LeastConn(), URI()):
            assertProvides(self, IAdoptingBalancer, balancer)

    def test_stickyClientsStayAcrossSwap(self) -> None:
        """StickySource -> StickySource: the entries are adopted; clients stay."""
        b = backend(3, persistence=StickySource())
        where = {h: self.cycle(b, 1, ctx(h))[0] for h in ("10.0.0.1", "10.0.0.2", "10.0.0.3")}
        changes = b.setPersistence(StickySource())
        self.assertIn("persistence StickySource took over the entries of StickySource", changes)
        b.setBalancer(LeastConn())
        self.assertEqual({h: self.cycle(b, 1, ctx(h))[0] for h in where}, where)

    def test_stickyClientsStayAcrossClassChange(self) -> None:
        """StickySource -> Cookie: the old table goes on recalling the clients it knows."""
        b = backend(3, persistence=StickySource())
        where = {h: self.cycle(b, 1, ctx(h))[0] for h in ("10.0.0.1", "10.0.0.2", "10.0.0.3")}
        b.setPersistence(Cookie("SRV"))
        self.assertEqual({h: self.cycle(b, 1, ctx(h))[0] for h in where}, where)
        b.setPersistence(None)
        self.assertIsNone(b.persistence)

    def test_reloadAdoptsRing(self) -> None:
        """A reload giving an alike URI(consistent) keeps the ring and reports no change."""
        b = backend(3, balance=URI(hashType="consistent"))
        self.cycle(b, 1, ctx(path=b"/x"))
        old = b.balance
        new = backend(3, balance=URI(hashType="consistent"))
        self.assertEqual(b.updateFrom(new), [])
        self.assertIs(b.balance._table, old._table)  # type: ignore[attr-defined]


class HealthTests(SynchronousTestCase):
    """Servers added or removed at run time are checked, or stop being checked."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend("app", [Server("s1", "127.0.0.1:9001")], health=FakeCheck(interval=2.0))
        self.service = HealthService(self.backend, self.clock, random=lambda: 0.5)
        self.service.startService()
        self.addCleanup(self.stop)

    def stop(self) -> None:
        self.service.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_addedServerIsChecked(self) -> None:
        """A running health service starts a monitor for an added server."""
        self.backend.addServer(Server("s2", "127.0.0.1:9002"))
        self.assertEqual(sorted(self.service.monitors), ["s1", "s2"])

    def test_removedServerIsNoLongerChecked(self) -> None:
        """Once removed, a server's monitor stops."""
        d = self.backend.removeServer(self.backend.servers[0], clock=self.clock)
        self.successResultOf(d)
        self.assertEqual(self.service.monitors, {})

    def test_drainThroughTheMonitor(self) -> None:
        """With a monitor running, drain sets DRAIN through it: ready brings back what the checks found."""
        s1 = self.backend.servers[0]
        self.successResultOf(s1.drain(clock=self.clock))
        self.assertIs(s1.state, ServerState.DRAIN)
        monitorFor(s1).setAdmin(None)  # type: ignore[union-attr]
        self.assertIs(s1.state, ServerState.UP)


class HandoverChainTests(SynchronousTestCase):
    """Several swaps in a row keep every strategy's clients."""

    def test_chain(self) -> None:
        """StickySource -> Cookie -> StickySource: the first table's clients still stay."""
        b = backend(3, persistence=StickySource())
        where = {}
        for h in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
            s = b.tryAcquire(ctx(h))
            assert s is not None
            b.release(s)
            where[h] = s.name
        b.setPersistence(Cookie("SRV"))
        b.setPersistence(StickySource())
        for h, name in where.items():
            s = b.tryAcquire(ctx(h))
            assert s is not None
            b.release(s)
            self.assertEqual(s.name, name)
