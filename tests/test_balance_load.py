"""
Tests for the O(log n) path of the load-based balancers (L{LeastConn},
L{ShortestExpectedDelay}, L{NeverQueue}): whatever happens to the servers,
each pick is exactly the one an O(n) scan would make.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from lbkit import Backend, Context, Server, ServerState
from lbkit.balance import LeastConn, NeverQueue, RoundRobin, ShortestExpectedDelay
from lbkit.balance._scan import _MinTree, _WeightedScan
from lbkit.error import NoServerAvailable
from lbkit.interfaces import IActiveBalancer, IBalancer, IServerListener

CTX = Context()


def makeServers(weights: Sequence[int], **kw: Any) -> list[Server]:
    return [Server(f"s{i}", f"127.0.0.1:{i + 1}", weight=w, **kw) for i, w in enumerate(weights)]


def _pairs(servers: Sequence[Server]) -> list[tuple[Server, float]]:
    # the keys are the floats the balancers compare, so ties are the same ties
    return [(s, 1.0 / s.effectiveWeight) for s in servers if s.effectiveWeight > 0]


class ReferenceLeastConn:
    """O(n): the first server with the lowest C{active / weight}, searching
    cyclically from just after the position picked last time."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self, servers: Sequence[Server]) -> Server | None:
        pairs = _pairs(servers)
        if not pairs:
            return None
        n = len(pairs)
        start = self.next % n
        order = [*range(start, n), *range(start)]
        best: int = min(order, key=lambda i: pairs[i][0].active * pairs[i][1])  # min keeps the first
        self.next = best + 1
        return pairs[best][0]


def referenceSED(servers: Sequence[Server]) -> Server | None:
    """O(n): the first server with the lowest C{(active + 1) / weight}."""
    pairs = _pairs(servers)
    if not pairs:
        return None
    return min(pairs, key=lambda p: (p[0].active + 1) * p[1])[0]


def referenceNQ(servers: Sequence[Server]) -> Server | None:
    """O(n): the first idle server, else as L{referenceSED}."""
    for server, _ in _pairs(servers):
        if not server.active:
            return server
    return referenceSED(servers)


@implementer(IActiveBalancer, IServerListener)
class Checked:
    """
    Hands each pick to the balancer under test and to a reference, and
    records any disagreement; passes every event on.
    """

    def __init__(self, real: _WeightedScan, reference: Callable[[Sequence[Server]], Server | None]) -> None:
        self.real = real
        self.reference = reference
        self.mismatches: list[tuple[list[Server], Server | None, Server | None]] = []
        self.treePicks = 0

    def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
        expected = self.reference(servers)
        got = self.real.pick(servers, context)  # type: ignore[attr-defined]
        if got is not expected:
            self.mismatches.append((list(servers), expected, got))
        if self.real._tree is not None and servers is self.real._builtFor:
            self.treePicks += 1
        return got  # type: ignore[no-any-return]

    def activeChanged(self, server: Server) -> None:
        self.real.activeChanged(server)

    def stateChanged(self, server: Server, old: ServerState, new: ServerState, reason: str) -> None:
        self.real.stateChanged(server, old, new, reason)

    def weightChanged(self, server: Server, old: int, new: int) -> None:
        self.real.weightChanged(server, old, new)


KINDS: dict[str, tuple[Callable[[], _WeightedScan], Callable[[], Callable[[Sequence[Server]], Server | None]]]] = {
    "leastconn": (LeastConn, ReferenceLeastConn),
    "sed": (ShortestExpectedDelay, lambda: referenceSED),
    "nq": (NeverQueue, lambda: referenceNQ),
}

STATES = [ServerState.UP, ServerState.UP, ServerState.UP, ServerState.DOWN, ServerState.DRAIN, ServerState.MAINT]

#: (operation, relative frequency)
OPERATIONS = [
    ("acquire", 30), ("acquireTried", 4), ("release", 25), ("releaseMany", 3), ("reacquire", 3),
    ("silentRaise", 2), ("enqueue", 1), ("weight", 4), ("state", 4), ("ramp", 2),
]


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=150, deadline=None)
    @given(
        kind=st.sampled_from(sorted(KINDS)),
        weights=st.lists(st.integers(0, 5), min_size=1, max_size=40),
        maxconns=st.one_of(st.just([None]), st.lists(st.sampled_from([None, None, None, 1, 2, 6]), min_size=1, max_size=40)),
        backups=st.integers(0, 2),
        allBackups=st.booleans(),
        treeMin=st.sampled_from([1, 8, 24]),
        rnd=st.randoms(use_true_random=False),
        steps=st.integers(150, 500),
    )
    def test_picksAsReference(
        self,
        kind: str,
        weights: list[int],
        maxconns: list[int | None],
        backups: int,
        allBackups: bool,
        treeMin: int,
        rnd: random.Random,
        steps: int,
    ) -> None:
        """
        Through acquires (some skipping tried servers), releases, retries on
        the same server, queued waiters, counts raised behind the balancer's
        back, weight, state and slow-start changes, every pick is the
        reference's.
        """
        make, makeReference = KINDS[kind]
        real = make()
        real._treeMin = treeMin
        checked = Checked(real, makeReference())
        servers = [
            Server(f"s{i}", f"127.0.0.1:{i + 1}", weight=w, maxconn=maxconns[i % len(maxconns)], backup=i < backups)
            for i, w in enumerate(weights)
        ]
        backend = Backend("be", servers, balance=checked, allBackups=allBackups)
        clock = Clock()
        held: list[Server] = []
        waiters: list[Any] = []

        def acquire(context: Context) -> None:
            try:
                server = backend.tryAcquire(context)
            except NoServerAvailable:
                return
            if server is not None:
                held.append(server)

        names = [name for name, _ in OPERATIONS]
        frequencies = [f for _, f in OPERATIONS]
        for name in rnd.choices(names, frequencies, k=steps):
            if name == "acquire":
                acquire(Context())
            elif name == "acquireTried":
                acquire(Context(tried={rnd.choice(servers)}))
            elif name == "release" and held:
                backend.release(held.pop(rnd.randrange(len(held))))
            elif name == "releaseMany":
                for _ in range(min(rnd.randint(1, 8), len(held))):
                    backend.release(held.pop(0))
            elif name == "reacquire" and held:
                server = rnd.choice(held)
                if server.hasFreeSlot():
                    backend.reacquire(server)
                    held.append(server)
            elif name == "silentRaise" and held:
                # what http mode's retry on the same server did before
                # Backend.reacquire: a raise the balancer is not told of
                server = rnd.choice(held)
                server.active += 1
                held.append(server)
            elif name == "enqueue":
                d = backend.enqueue(Context(), clock)
                d.addCallback(held.append)
                d.addErrback(lambda f: None)
                waiters.append(d)
            elif name == "weight":
                rnd.choice(servers).setWeight(rnd.randint(0, 6))
            elif name == "state":
                rnd.choice(servers).setState(rnd.choice(STATES))
            elif name == "ramp":
                rnd.choice(servers).setRampFactor(rnd.choice([0.0, 0.1, 0.5, 0.9, 1.0]))
            self.assertEqual(checked.mismatches, [])
        for d in waiters:
            d.cancel()
        self.assertEqual(clock.getDelayedCalls(), [])

    @settings(max_examples=40, deadline=None)
    @given(kind=st.sampled_from(sorted(KINDS)), n=st.integers(24, 200), rounds=st.integers(1, 300))
    def test_treeIsUsed(self, kind: str, n: int, rounds: int) -> None:
        """
        With the default threshold and a backend telling the balancer of
        every change, picks after the first go through the tree, and match
        the reference.
        """
        make, makeReference = KINDS[kind]
        checked = Checked(make(), makeReference())
        servers = makeServers([1 + i % 4 for i in range(n)])
        backend = Backend("be", servers, balance=checked)
        held = []
        for i in range(rounds):
            server = backend.tryAcquire(Context())
            assert server is not None
            held.append(server)
            if i % 3 == 2:
                backend.release(held.pop(i % len(held)))
        self.assertEqual(checked.mismatches, [])
        self.assertEqual(checked.treePicks, rounds - 1)


class RotationTests(SynchronousTestCase):
    def test_idleTiesRotateOnTree(self) -> None:
        """Through a backend, idle equal servers take turns in order on the tree path too."""
        servers = makeServers([1] * 30)
        lc = LeastConn()
        backend = Backend("be", servers, balance=lc)
        picks = []
        for _ in range(65):
            server = backend.tryAcquire(Context())
            assert server is not None
            picks.append(server)
            backend.release(server)
        self.assertIsNotNone(lc._tree)
        self.assertEqual(picks, (servers * 3)[:65])

    def test_equalLoadTiesRotate(self) -> None:
        """Servers at equal load relative to weight rotate, starting after the last pick."""
        a, b, c, d = servers = makeServers([2, 1, 2, 1])
        lc = LeastConn()
        lc._treeMin = 1
        backend = Backend("be", servers, balance=lc)
        got = [backend.tryAcquire(Context()) for _ in range(12)]
        self.assertIsNotNone(lc._tree)
        self.assertEqual(got, [a, b, c, d, a, c] + [d, a, b, c, a, c])

    def test_sedFirstOnTie(self) -> None:
        """SED on the tree path: the heavy idle server first, then the first of equal delays."""
        a, b, c = servers = makeServers([1, 2, 2])
        sed = ShortestExpectedDelay()
        sed._treeMin = 1
        backend = Backend("be", servers, balance=sed)
        self.assertEqual([backend.tryAcquire(Context()) for _ in range(5)], [b, c, a, b, c])

    def test_nqIdleFirst(self) -> None:
        """NQ on the tree path: each idle server in order before any gets a second."""
        servers = makeServers([1, 5, 2, 9])
        nq = NeverQueue()
        nq._treeMin = 1
        backend = Backend("be", servers, balance=nq)
        self.assertEqual([backend.tryAcquire(Context()) for _ in range(4)], servers)
        backend.release(servers[2])
        self.assertIs(backend.tryAcquire(Context()), servers[2])


class ModeTests(SynchronousTestCase):
    def test_standaloneScans(self) -> None:
        """Used without a backend (nobody reports active changes), a balancer keeps scanning."""
        servers = makeServers([1] * 50)
        for make in (LeastConn, ShortestExpectedDelay, NeverQueue):
            balancer = make()
            for s in servers:
                s.active = 5
            balancer.pick(servers, CTX)
            servers[7].active = 0  # lowered behind its back
            self.assertIs(balancer.pick(servers, CTX), servers[7])
            self.assertIsNone(balancer._tree)

    def test_firstReportBuildsTree(self) -> None:
        """The first activeChanged call switches to the tree, built from the counts of then."""
        servers = makeServers([1] * 50)
        for s in servers:
            s.active = 5
        servers[9].active = 2
        sed = ShortestExpectedDelay()
        sed.pick(servers, CTX)
        sed.activeChanged(servers[9])
        self.assertIs(sed.pick(servers, CTX), servers[9])
        self.assertIsNotNone(sed._tree)

    def test_silentRaiseSeen(self) -> None:
        """A count raised without a report is noticed when that server comes up for a pick."""
        servers = makeServers([1] * 30)
        sed = ShortestExpectedDelay()
        backend = Backend("be", servers, balance=sed)
        self.assertIs(backend.tryAcquire(Context()), servers[0])
        servers[1].active += 3  # unreported
        self.assertIs(backend.tryAcquire(Context()), servers[2])

    def test_subsetScans(self) -> None:
        """A strict subset of the eligible list (a server already tried) takes the scan."""
        servers = makeServers([1] * 30)
        lc = LeastConn()
        backend = Backend("be", servers, balance=lc)
        backend.release(backend.tryAcquire(Context()) or servers[0])
        self.assertIs(backend.tryAcquire(Context(tried={servers[1]})), servers[2])

    def test_reportsFromBackend(self) -> None:
        """A backend reports every change it makes to active, after making it."""
        seen: list[tuple[str, int]] = []

        @implementer(IActiveBalancer)
        class Spy:
            def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
                return servers[0] if servers else None

            def activeChanged(self, server: Server) -> None:
                seen.append((server.name, server.active))

        (a,) = servers = makeServers([1], maxconn=1)
        backend = Backend("be", servers, balance=Spy())
        clock = Clock()
        backend.tryAcquire(Context())
        waiter = backend.enqueue(Context(), clock)
        backend.release(a)
        self.assertIs(self.successResultOf(waiter), a)
        backend.release(a)
        backend.reacquire(a)
        backend.release(a)
        self.assertEqual(seen, [("s0", 1), ("s0", 0), ("s0", 1), ("s0", 0), ("s0", 1), ("s0", 0)])

    def test_noHookNeeded(self) -> None:
        """A balancer without activeChanged works as before."""
        servers = makeServers([1, 1])
        backend = Backend("be", servers, balance=RoundRobin())
        a = backend.tryAcquire(Context())
        assert a is not None
        backend.release(a)
        backend.reacquire(a)
        self.assertEqual(a.active, 1)


class MinTreeTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(
        keys=st.lists(st.integers(-3, 5).map(float), min_size=1, max_size=40),
        updates=st.lists(st.tuples(st.integers(0, 100), st.integers(-3, 5)), max_size=30),
        start=st.integers(0, 100),
    )
    def test_firstMin(self, keys: list[float], updates: list[tuple[int, int]], start: int) -> None:
        """The first position at or after start (cyclically) holding the minimum."""
        tree = _MinTree(keys)
        for position, key in updates:
            keys[position % len(keys)] = float(key)
            tree.update(position % len(keys), float(key))
        n = len(keys)
        start %= n
        low = min(keys)
        expected = next(i % n for i in range(start, start + n) if keys[i % n] == low)
        self.assertEqual(tree.firstMin(start), expected)
        self.assertEqual([tree.key(i) for i in range(n)], keys)


class UndeclaredActiveBalancerTests(SynchronousTestCase):
    """
    A balancer written before IActiveBalancer existed (an C{activeChanged}
    method, only IBalancer declared) keeps working, with a deprecation
    warning naming the line that built its backend.
    """

    def undeclared(self, seen: list[int]) -> IBalancer:
        @implementer(IBalancer)
        class Old:
            def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
                return servers[0] if servers else None

            def activeChanged(self, server: Server) -> None:
                seen.append(server.active)

        return Old()

    def test_stillCalled(self) -> None:
        """An undeclared activeChanged is still called after each change of active."""
        seen: list[int] = []
        backend = Backend("be", makeServers([1]), balance=self.undeclared(seen))
        server = backend.tryAcquire(Context())
        assert server is not None
        backend.release(server)
        self.assertEqual(seen, [1, 0])
        self.flushWarnings()

    def test_warnsAtTheSiteLine(self) -> None:
        """Building its backend warns once, pointing at the line that built it."""
        balancer = self.undeclared([])
        Backend("be", makeServers([1]), balance=balancer)
        warnings = self.flushWarnings()
        self.assertEqual([w["category"] for w in warnings], [DeprecationWarning])
        self.assertIn("IActiveBalancer", warnings[0]["message"])
        self.assertEqual(warnings[0]["filename"], __file__.replace(".pyc", ".py"))

    def test_declaredDoesNotWarn(self) -> None:
        """The built-ins that use activeChanged declare IActiveBalancer, so nothing warns."""
        for make in (LeastConn, ShortestExpectedDelay, NeverQueue, RoundRobin):
            Backend("be", makeServers([1]), balance=make())
        self.assertEqual(self.flushWarnings(), [])

    def test_declaredIsCalled(self) -> None:
        """A balancer declaring IActiveBalancer hears of each change, with no warning."""
        seen: list[str] = []

        @implementer(IActiveBalancer)
        class New:
            def pick(self, servers: Sequence[Server], context: Context) -> Server | None:
                return servers[0] if servers else None

            def activeChanged(self, server: Server) -> None:
                seen.append(server.name)

        backend = Backend("be", makeServers([1]), balance=New())
        backend.release(backend.tryAcquire(Context()) or backend.servers[0])
        self.assertEqual(seen, ["s0", "s0"])
        self.assertEqual(self.flushWarnings(), [])
