"""
Explanations of where traffic goes (docs/beyond.md): the built-in
balancers' and persistence strategies' reasons, the dry run that changes
nothing, and the reasons recorded for real decisions.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Context, Server, ServerState
from lbkit._explain import disableExplain, enableExplain, explainChoice
from lbkit.balance import (
    URI,
    First,
    Header,
    LeastConn,
    NeverQueue,
    Random,
    RoundRobin,
    ShortestExpectedDelay,
    Source,
    StaticRR,
    URLParam,
)
from lbkit.error import NoServerAvailable
from lbkit.http import Frontend, Request, Route, pathBegins
from lbkit.http._explain import explainRequest
from lbkit.interfaces import (
    IAdoptingBalancer,
    IAdoptingPersistence,
    IExplainingBalancer,
    IExplainingPersistence,
    IHashingBalancer,
    IStickyCount,
)
from lbkit.persistence import Cookie, StickySource
from lbkit.testing import assertProvides


def ctx(host: str = "10.0.0.1", path: bytes = b"/", cookie: bytes | None = None) -> Context:
    headers = [[b"Cookie", cookie]] if cookie else []
    return Context(client=IPv4Address("TCP", host, 40000), request=Request(b"GET", path, b"HTTP/1.1", headers))


def servers(n: int = 3, **kw: Any) -> list[Server]:
    return [Server(f"s{i}", f"127.0.0.1:{9000 + i}", **kw) for i in range(1, n + 1)]


class BuiltinReasonTests(SynchronousTestCase):
    """Each built-in balancer says why, in one phrase starting with its name."""

    def test_everyBuiltinExplains(self) -> None:
        """Every built-in balancer and persistence strategy provides the explaining contracts."""
        for balancer in (RoundRobin(), StaticRR(), LeastConn(), First(), Source(), URI(), Header("x"),
                         URLParam("u"), Random(), ShortestExpectedDelay(), NeverQueue()):
            assertProvides(self, IExplainingBalancer, balancer)
        for persistence in (Cookie("SRV"), StickySource()):
            assertProvides(self, IExplainingPersistence, persistence)

    def test_leastConn(self) -> None:
        """leastconn names the chosen server's load and the others'."""
        b = Backend("b", servers(2), balance=LeastConn())
        s1, s2 = b.servers
        s1.active, s2.active = 4, 3
        server, reasons = explainChoice(b, ctx())
        self.assertIs(server, s2)
        self.assertEqual(reasons, ["leastconn: s2 had 3 active, s1 4"])

    def test_first(self) -> None:
        """first says which servers were full."""
        b = Backend("b", servers(2, maxconn=1), balance=First())
        b.servers[0].active = 1
        server, reasons = explainChoice(b, ctx())
        self.assertEqual(server, b.servers[1])
        self.assertEqual(reasons, ["full: s1", "first: s1 full -> s2"])
        b.servers[0].active = 0
        self.assertEqual(explainChoice(b, ctx())[1], ["first: s1 has a free slot"])

    def test_uriHash(self) -> None:
        """uri shows the key's hash and its server."""
        b = Backend("b", servers(3), balance=URI(hashType="consistent"))
        server, reasons = explainChoice(b, ctx(path=b"/img/a.png"))
        assert server is not None
        self.assertRegex(reasons[0], r"^uri hash 0x[0-9a-f]{16} \(consistent\) -> " + server.name + "$")

    def test_everyServerFull(self) -> None:
        """When every usable server is full the client would be queued."""
        b = Backend("b", servers(1, maxconn=1))
        b.servers[0].active = 1
        self.assertEqual(explainChoice(b, ctx()), (None, ["full: s1", "every usable server is full: queued"]))

    def test_noServer(self) -> None:
        """With every server down, the reasons say so and the choice raises as the backend does."""
        b = Backend("b", servers(1))
        b.servers[0].setState(ServerState.DOWN)
        c = ctx()
        self.assertRaises(NoServerAvailable, explainChoice, b, c)
        self.assertEqual(c.notes["explain"], ["no server available: s1 DOWN"])


class PersistenceReasonTests(SynchronousTestCase):
    """Why persistence recalled a server, or why it was ignored."""

    def test_cookieRecalled(self) -> None:
        """A valid cookie names its server."""
        b = Backend("b", servers(2), persistence=Cookie("SRV"))
        server, reasons = explainChoice(b, ctx(cookie=b"SRV=s2"))
        self.assertIs(server, b.servers[1])
        self.assertEqual(reasons, ["persistence recalled s2: cookie: SRV=s2 -> s2"])

    def test_cookieForged(self) -> None:
        """A cookie naming no server is said to be forged (or of a removed server)."""
        b = Backend("b", servers(2), persistence=Cookie("SRV"))
        server, reasons = explainChoice(b, ctx(cookie=b"SRV=nope"))
        self.assertIn("SRV=nope names no server (forged", reasons[0])

    def test_cookieServerDown(self) -> None:
        """A cookie naming a DOWN server is ignored and the client redispatched."""
        b = Backend("b", servers(2), persistence=Cookie("SRV"))
        b.servers[1].setState(ServerState.DOWN)
        server, reasons = explainChoice(b, ctx(cookie=b"SRV=s2"))
        self.assertIs(server, b.servers[0])
        self.assertEqual(reasons[0], "persistence ignored s2 (server DOWN), redispatched: cookie: SRV=s2 -> s2")
        self.assertEqual(b.redispatches, 0)  # a dry run counts nothing

    def test_stickyEntryExpired(self) -> None:
        """An expired stick-table entry is said to be expired."""
        clock = Clock()
        table = StickySource(expire=10, clock=clock.seconds)
        b = Backend("b", servers(2), persistence=table)
        s = b.tryAcquire(ctx())
        assert s is not None
        b.release(s)
        clock.advance(15)
        server, reasons = explainChoice(b, ctx())
        self.assertEqual(reasons[0], f"persistence recalled nothing: source: entry 10.0.0.1 -> {s.name} expired 5s ago")


class DryRunTests(SynchronousTestCase):
    """A dry run predicts the next real decision and does not change it."""

    def assertPredicts(self, b: Backend, contexts: list[Context], make: Any) -> None:
        for i, c in enumerate(contexts):
            predicted, _ = explainChoice(b, make(c))
            real = b.tryAcquire(c)
            self.assertIs(real, predicted)
            assert real is not None
            if i % 2:
                b.release(real)

    def test_roundRobinNotAdvanced(self) -> None:
        """A weighted round robin: each explanation names the server the next request gets."""
        b = Backend("b", [Server("a", "127.0.0.1:1", weight=3), *servers(2)])
        self.assertPredicts(b, [ctx() for _ in range(11)], lambda c: ctx())

    def test_leastConnAndRandom(self) -> None:
        """Least connections and power of two choices (its random state copied, not consumed)."""
        for balancer in (LeastConn(), Random(random=random.Random(7))):
            b = Backend("b", servers(4), balance=balancer)
            self.assertPredicts(b, [ctx() for _ in range(9)], lambda c: ctx())

    def test_noListenerLeft(self) -> None:
        """The copy deciding a dry run leaves no listener behind on the servers."""
        b = Backend("b", servers(3))
        before = [len(s._listeners) for s in b.servers]
        b.servers[0].setWeight(2)  # the copy rebuilds its tables
        explainChoice(b, ctx())
        self.assertEqual([len(s._listeners) for s in b.servers], before)


class LiveReasonTests(SynchronousTestCase):
    """L{enableExplain}: real decisions carry their reasons and do not change."""

    def test_sameChoicesWithReasons(self) -> None:
        """An explaining backend picks what a plain one picks, and notes why."""
        plain = Backend("b", servers(3), balance=LeastConn())
        told = Backend("b", servers(3), balance=LeastConn())
        enableExplain(told)
        for i in range(7):
            c = ctx()
            a, b = plain.tryAcquire(ctx()), told.tryAcquire(c)
            assert a is not None and b is not None
            self.assertEqual(a.name, b.name)
            self.assertTrue(c.notes["explain"][-1].startswith("leastconn: " + b.name))
            if i % 3:
                plain.release(a)
                told.release(b)
        disableExplain(told)
        c = ctx()
        told.tryAcquire(c)
        self.assertNotIn("explain", c.notes)

    def test_redispatchCounted(self) -> None:
        """A live explained redispatch counts as the backend counts it."""
        b = Backend("b", servers(2), persistence=Cookie("SRV"))
        enableExplain(b)
        b.servers[1].setState(ServerState.DOWN)
        b.tryAcquire(ctx(cookie=b"SRV=s2"))
        self.assertEqual(b.redispatches, 1)


class RequestTests(SynchronousTestCase):
    """L{explainRequest}: route, backend, server and reasons of a described request."""

    def test_routeAndServer(self) -> None:
        """A matching route is named with its line; the default says no route matched."""
        static = Backend("static", servers(2), balance=URI())
        app = Backend("app", servers(2))
        fe = Frontend("tcp:0", routes=[Route(pathBegins("/static"), static)], default=app, name="web")
        answer = explainRequest(fe, "GET", "/static/a.css", [("Host", "example.com")], "10.1.1.1:5555")
        self.assertEqual(answer["backend"], "static")
        self.assertRegex(answer["route"], r"^route 1 matched \(test_explain.py:\d+\): pathBegins")
        self.assertEqual(answer["reasons"][0], answer["route"])
        self.assertTrue(answer["reasons"][1].startswith("uri hash"))
        other = explainRequest(fe, "GET", "/")
        self.assertEqual((other["backend"], other["route"]), ("app", "none of 1 routes matched: default app"))
        self.assertEqual(other["server"], "s1")
        self.assertEqual(app.tryAcquire(ctx()), app.servers[0])


class ContractTests(SynchronousTestCase):
    """Each built-in declares the optional contracts it provides, and keeps them."""

    def test_builtinContracts(self) -> None:
        """verifyObject for the adopting, hashing, sticky-count and adopting-persistence contracts."""
        for balancer in (RoundRobin(), LeastConn(), ShortestExpectedDelay(), NeverQueue(), Source(), URI(),
                         Header("x"), URLParam("u")):
            assertProvides(self, IAdoptingBalancer, balancer)
        for balancer in (Source(), URI(), Header("x"), URLParam("u")):
            assertProvides(self, IHashingBalancer, balancer)
        assertProvides(self, IStickyCount, StickySource())
        for persistence in (StickySource(), Cookie("SRV")):
            assertProvides(self, IAdoptingPersistence, persistence)
