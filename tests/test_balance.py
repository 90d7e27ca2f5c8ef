"""
Tests for the non-hashing balancers of L{lbkit.balance}, and for how a
L{Backend} uses any balancer (backups, DOWN servers, no server at all).
"""

from __future__ import annotations

import math
import random
from typing import Callable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Context, Server, ServerState
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
from lbkit.error import ConfigError, NoServerAvailable
from lbkit.interfaces import IBalancer

CTX = Context()
FAST = settings(max_examples=60, deadline=None)

weightLists = st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=8)


def makeServers(weights: Sequence[int], **kw: object) -> list[Server]:
    return [Server(f"s{i}", f"127.0.0.1:{i + 1}", weight=w, **kw) for i, w in enumerate(weights)]  # type: ignore[arg-type]


def nginx(weights: Sequence[int], steps: int) -> list[int]:
    """The reference smooth weighted round robin, O(n) per pick."""
    total = sum(weights)
    credit = [0] * len(weights)
    out = []
    for _ in range(steps):
        best = -1
        for i, w in enumerate(weights):
            if w <= 0:
                continue
            credit[i] += w
            if best < 0 or credit[i] > credit[best]:
                best = i
        credit[best] -= total
        out.append(best)
    return out


ALL: list[Callable[[], IBalancer]] = [
    RoundRobin, StaticRR, LeastConn, First, Source, lambda: URI(), lambda: Header(b"Host"),
    lambda: URLParam(b"id"), Random, ShortestExpectedDelay, NeverQueue,
]


class NoServerTests(SynchronousTestCase):
    def test_emptyGivesNone(self) -> None:
        """Every balancer answers None when handed no server."""
        for make in ALL:
            self.assertIsNone(make().pick([], CTX))


class RoundRobinTests(SynchronousTestCase):
    def test_smooth(self) -> None:
        """Weights 5, 1, 1 give a a b a c a a."""
        a, b, c = makeServers([5, 1, 1])
        rr = RoundRobin()
        self.assertEqual([rr.pick([a, b, c], CTX) for _ in range(7)], [a, a, b, a, c, a, a])

    @FAST
    @given(weightLists, st.integers(min_value=1, max_value=3))
    def test_matchesReference(self, weights: list[int], periods: int) -> None:
        """The sequence is exactly nginx's smooth weighted round robin."""
        servers = makeServers(weights)
        rr = RoundRobin()
        steps = periods * max(1, sum(weights))
        picks = [rr.pick(servers, CTX) for _ in range(steps)]
        if not sum(weights):
            self.assertEqual(set(picks), {None})
            return
        self.assertEqual([servers.index(p) for p in picks if p is not None], nginx(weights, steps))

    @FAST
    @given(weightLists, st.integers(min_value=1, max_value=3))
    def test_sharesMatchWeights(self, weights: list[int], periods: int) -> None:
        """Over whole periods each server is picked exactly weight times per period."""
        servers = makeServers(weights)
        rr = RoundRobin()
        picks = [rr.pick(servers, CTX) for _ in range(periods * sum(weights))]
        for server, weight in zip(servers, weights, strict=True):
            self.assertEqual(picks.count(server), periods * weight)

    @FAST
    @given(st.lists(st.integers(min_value=1, max_value=40), min_size=2, max_size=8))
    def test_smoothness(self, weights: list[int]) -> None:
        """
        At every point each server's count stays within 1.5 of its exact
        share, and no server runs more than twice ceil(w / (W - w)) picks
        in a row, across period boundaries too.
        """
        servers = makeServers(weights)
        total = sum(weights)
        rr = RoundRobin()
        picks = [servers.index(rr.pick(servers, CTX)) for _ in range(2 * total)]  # type: ignore[arg-type]
        counts = [0] * len(weights)
        for t, i in enumerate(picks, 1):
            counts[i] += 1
            for j, w in enumerate(weights):
                self.assertLess(abs(counts[j] - t * w / total), 1.5)
        for i, w in enumerate(weights):
            if w == total:
                continue
            run = longest = 0
            for p in picks:
                run = run + 1 if p == i else 0
                longest = max(longest, run)
            self.assertLessEqual(longest, 2 * math.ceil(w / (total - w)))

    def test_weightChangeAtRunTime(self) -> None:
        """A weight changed through the backend applies at the next pick, credits carried over."""
        servers = makeServers([1, 1, 1])
        backend = Backend("be", servers, balance=RoundRobin())
        picks = []
        for step in range(60):
            if step == 6:
                servers[0].setWeight(4)
            s = backend.tryAcquire(CTX)
            assert s is not None
            backend.release(s)
            picks.append(s)
        self.assertEqual(picks[:6], servers * 2)
        tail = picks[6:]
        # after the change, the shares over whole periods are 4:1:1
        self.assertEqual([tail[:54].count(s) for s in servers], [36, 9, 9])

    def test_slowStart(self) -> None:
        """A server in slow start counts with its effective weight, read at run time."""
        a, b = makeServers([10, 10])
        b.rampFactor = 0.1
        rr = RoundRobin()
        servers = [a, b]
        picks = [rr.pick(servers, CTX) for _ in range(110)]
        self.assertEqual(picks.count(b), 10)
        b.rampFactor = 1.0
        picks = [rr.pick(servers, CTX) for _ in range(100)]
        self.assertLessEqual(abs(picks.count(b) - 50), 2)

    def test_subset(self) -> None:
        """A subset (full or tried servers left out) is served from the subset only."""
        servers = makeServers([3, 2, 1])
        rr = RoundRobin()
        for _ in range(5):
            rr.pick(servers, CTX)
        subset = servers[1:]
        picks = [rr.pick(subset, CTX) for _ in range(6)]
        self.assertEqual(sorted(p.name for p in picks if p), ["s1"] * 4 + ["s2"] * 2)
        picks = [rr.pick(servers, CTX) for _ in range(60)]
        self.assertEqual([picks.count(s) for s in servers], [30, 20, 10])


class StaticRRTests(SynchronousTestCase):
    @FAST
    @given(weightLists, st.integers(min_value=1, max_value=3))
    def test_sharesMatchWeights(self, weights: list[int], periods: int) -> None:
        """Over whole periods each server is picked exactly weight times per period."""
        servers = makeServers(weights)
        srr = StaticRR()
        picks = [srr.pick(servers, CTX) for _ in range(periods * sum(weights))]
        for server, weight in zip(servers, weights, strict=True):
            self.assertEqual(picks.count(server), periods * weight)

    def test_interleaved(self) -> None:
        """Weights 2 and 1 interleave a b a."""
        a, b = makeServers([2, 1])
        srr = StaticRR()
        self.assertEqual([srr.pick([a, b], CTX) for _ in range(6)], [a, b, a, a, b, a])

    def test_weightsFixed(self) -> None:
        """Weights changed at run time have no effect."""
        servers = makeServers([1, 1])
        backend = Backend("be", servers, balance=StaticRR())
        servers[0].setWeight(9)
        picks = []
        for _ in range(10):
            s = backend.tryAcquire(CTX)
            assert s is not None
            backend.release(s)
            picks.append(s)
        self.assertEqual(picks.count(servers[0]), 5)

    def test_returningServerNoBurst(self) -> None:
        """A server back after an absence rejoins at the current position, with no burst."""
        a, b = makeServers([1, 1])
        srr = StaticRR()
        for _ in range(100):
            srr.pick([a], CTX)
        srr.invalidate()
        picks = [srr.pick([a, b], CTX) for _ in range(10)]
        self.assertEqual(picks.count(b), 5)


class LoadTests(SynchronousTestCase):
    @FAST
    @given(weightLists)
    def test_leastConnSharesMatchWeights(self, weights: list[int]) -> None:
        """With connections held, leastconn keeps active / weight level: (a_i - 1)/w_i <= a_j/w_j."""
        servers = makeServers(weights)
        lc = LeastConn()
        for _ in range(5 * sum(weights)):
            s = lc.pick(servers, CTX)
            if s is None:
                self.assertEqual(sum(weights), 0)
                return
            s.active += 1
        live = [s for s in servers if s.weight]
        for s in servers:
            if not s.weight:
                self.assertEqual(s.active, 0)
        for i in live:
            for j in live:
                self.assertLessEqual((i.active - 1) / i.weight, j.active / j.weight)

    @FAST
    @given(weightLists, st.sampled_from([ShortestExpectedDelay, NeverQueue]))
    def test_sedSharesMatchWeights(self, weights: list[int], make: Callable[[], IBalancer]) -> None:
        """With connections held, SED and NQ keep a_i / w_i <= (a_j + 1) / w_j."""
        servers = makeServers(weights)
        balancer = make()
        for _ in range(5 * sum(weights)):
            s = balancer.pick(servers, CTX)
            assert s is not None
            s.active += 1
        live = [s for s in servers if s.weight]
        self.assertEqual(sum(s.active for s in servers if not s.weight), 0)
        for i in live:
            for j in live:
                self.assertLessEqual(i.active / i.weight, (j.active + 1) / j.weight)

    def test_leastConnTiesRotate(self) -> None:
        """Idle equal servers alternate instead of the first taking everything."""
        servers = makeServers([1, 1, 1])
        lc = LeastConn()
        self.assertEqual([lc.pick(servers, CTX) for _ in range(6)], servers * 2)

    def test_leastConnFewest(self) -> None:
        """The server with the fewest connections per weight wins."""
        a, b = makeServers([2, 1])
        a.active, b.active = 3, 1
        self.assertIs(LeastConn().pick([a, b], CTX), b)
        a.active = 1
        self.assertIs(LeastConn().pick([a, b], CTX), a)

    def test_sedPrefersHeavyIdle(self) -> None:
        """SED sends to the idle heavy server; then to where (active + 1) / weight is least."""
        a, b = makeServers([1, 3])
        sed = ShortestExpectedDelay()
        self.assertIs(sed.pick([a, b], CTX), b)
        b.active = 3
        self.assertIs(sed.pick([a, b], CTX), a)

    def test_neverQueueIdleFirst(self) -> None:
        """NQ picks an idle server even when a busy one has a shorter expected delay."""
        a, b = makeServers([1, 10])
        b.active = 1
        self.assertIs(NeverQueue().pick([a, b], CTX), a)
        a.active = 1
        self.assertIs(NeverQueue().pick([a, b], CTX), b)


class RandomTests(SynchronousTestCase):
    @FAST
    @given(weightLists, st.integers(min_value=1, max_value=3))
    def test_sharesMatchWeights(self, weights: list[int], draws: int) -> None:
        """With idle servers, shares follow weights within 4 points over 4,000 picks."""
        servers = makeServers(weights)
        r = Random(draws, random=random.Random(1))
        picks = [r.pick(servers, CTX) for _ in range(4000)]
        total = sum(weights)
        for server, weight in zip(servers, weights, strict=True):
            expected = weight / total if total else 0
            self.assertLess(abs(picks.count(server) / 4000 - expected), 0.04)

    def test_twoChoicesAvoidLoaded(self) -> None:
        """Of two draws, the less loaded is kept."""
        a, b = makeServers([1, 1])
        a.active = 5
        r = Random(2, random=random.Random(3))
        picks = [r.pick([a, b], CTX) for _ in range(200)]
        # a wins only when drawn twice: about a quarter of the time
        self.assertLess(picks.count(a), 80)

    def test_badDraws(self) -> None:
        """draws must be a positive integer."""
        self.assertRaises(ConfigError, Random, 0)


class FirstTests(SynchronousTestCase):
    @FAST
    @given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=6))
    def test_fillsInOrder(self, maxconns: list[int]) -> None:
        """Through a backend, each server fills up before the next takes anything."""
        servers = [Server(f"s{i}", f"127.0.0.1:{i + 1}", maxconn=m) for i, m in enumerate(maxconns)]
        backend = Backend("be", servers, balance=First())
        for i, server in enumerate(servers):
            for _ in range(server.maxconn or 0):
                self.assertIs(backend.tryAcquire(CTX), server)
                for later in servers[i + 1:]:
                    self.assertEqual(later.active, 0)
        self.assertIsNone(backend.tryAcquire(CTX))
        backend.release(servers[0])
        self.assertIs(backend.tryAcquire(CTX), servers[0])

    def test_noMaxconnNeverOverflows(self) -> None:
        """A server without maxconn takes everything; the ones after it nothing."""
        a, b = makeServers([1, 1])
        first = First()
        for _ in range(10):
            s = first.pick([a, b], CTX)
            assert s is not None
            s.active += 1
        self.assertEqual((a.active, b.active), (10, 0))


class BackendTests(SynchronousTestCase):
    """
    How the backend and any balancer work together.
    """

    @FAST
    @given(
        st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=6),
        st.booleans(),
        st.sampled_from(ALL),
    )
    def test_upNonBackupOnly(
        self, spec: list[tuple[bool, bool]], allBackups: bool, make: Callable[[], IBalancer]
    ) -> None:
        """
        A DOWN server is never chosen; backups only when no normal server
        is up; with every server down the backend raises NoServerAvailable.
        """
        servers = [Server(f"s{i}", f"127.0.0.1:{i + 1}", backup=b) for i, (b, _) in enumerate(spec)]
        backend = Backend("be", servers, balance=make(), allBackups=allBackups)
        for server, (_, up) in zip(servers, spec, strict=True):
            if not up:
                server.setState(ServerState.DOWN)
        upPrimary = [s for s, (b, up) in zip(servers, spec, strict=True) if up and not b]
        upBackup = [s for s, (b, up) in zip(servers, spec, strict=True) if up and b]
        allowed = upPrimary or (upBackup if allBackups else upBackup[:1])
        for _ in range(12):
            if not allowed:
                self.assertRaises(NoServerAvailable, backend.tryAcquire, CTX)
                continue
            s = backend.tryAcquire(CTX)
            self.assertIn(s, allowed)
            assert s is not None
            backend.release(s)

    def test_serverGoingDown(self) -> None:
        """After a server goes DOWN the balancer stops choosing it at once."""
        for make in ALL:
            servers = makeServers([1, 1, 1])
            backend = Backend("be", servers, balance=make())
            for _ in range(5):
                s = backend.tryAcquire(CTX)
                assert s is not None
                backend.release(s)
            servers[1].setState(ServerState.DOWN)
            for _ in range(20):
                s = backend.tryAcquire(CTX)
                self.assertIsNot(s, servers[1])
                assert s is not None
                backend.release(s)

    def test_allDown(self) -> None:
        """With every server down the backend raises NoServerAvailable, whatever the balancer."""
        for make in ALL:
            servers = makeServers([1, 1])
            backend = Backend("be", servers, balance=make())
            for s in servers:
                s.setState(ServerState.DOWN)
            self.assertRaises(NoServerAvailable, backend.tryAcquire, CTX)

    def test_fullServersSkipped(self) -> None:
        """Servers at maxconn are skipped; with all full, the backend answers None (queue)."""
        for make in ALL:
            servers = [Server(f"s{i}", f"127.0.0.1:{i + 1}", maxconn=2) for i in range(3)]
            backend = Backend("be", servers, balance=make())
            got = [backend.tryAcquire(CTX) for _ in range(6)]
            self.assertEqual(sorted(s.name for s in got if s), ["s0", "s0", "s1", "s1", "s2", "s2"])
            self.assertIsNone(backend.tryAcquire(CTX))
