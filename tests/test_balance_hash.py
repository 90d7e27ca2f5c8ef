"""
Tests for the hashing balancers: L{Source}, L{URI}, L{Header}, L{URLParam}
and their C{hashType} and C{hashBalanceFactor} options.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Context, Server, ServerState
from lbkit.balance import URI, Header, Source, URLParam
from lbkit.error import ConfigError

FAST = settings(max_examples=25, deadline=None)
MAGLEV = {"maglevTableSize": 4099}


class FakeRequest:
    """The request fields lbkit's http mode provides."""

    method = b"GET"

    def __init__(self, uri: bytes, headers: dict[bytes, bytes] | None = None) -> None:
        self.uri = uri
        self.path, _, self.query = uri.partition(b"?")
        self._headers = {k.lower(): v for k, v in (headers or {}).items()}

    def header(self, name: bytes) -> bytes | None:
        return self._headers.get(name.lower())


def makeServers(weights: list[int]) -> list[Server]:
    return [Server(f"s{i}", f"127.0.0.1:{i + 1}", weight=w) for i, w in enumerate(weights)]


def client(i: int) -> Context:
    return Context(client=IPv4Address("TCP", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1234))


KEYS = [client(i) for i in range(3000)]


def options(hashType: str) -> dict[str, Any]:
    return {"hashType": hashType, **(MAGLEV if hashType == "maglev" else {})}


class KeyTests(SynchronousTestCase):
    def test_sourceSameClientSameServer(self) -> None:
        """One client address always goes to one server; the port does not matter."""
        servers = makeServers([1] * 5)
        source = Source()
        picks = {source.pick(servers, Context(client=IPv4Address("TCP", "192.0.2.7", p))) for p in range(50)}
        self.assertEqual(len(picks), 1)

    def test_sourceIPv6AndMapped(self) -> None:
        """IPv6 clients hash; a v4-mapped address hashes as its v4 address."""
        servers = makeServers([1] * 7)
        source = Source()
        v4 = source.pick(servers, Context(client=IPv4Address("TCP", "192.0.2.7", 1)))
        mapped = source.pick(servers, Context(client=IPv6Address("TCP", "::ffff:192.0.2.7", 1)))
        self.assertIs(v4, mapped)
        self.assertIsNotNone(source.pick(servers, Context(client=IPv6Address("TCP", "2001:db8::1", 1))))

    def test_sourceUnknownFallsBackToRoundRobin(self) -> None:
        """Without an IP address (UNIX socket, no client) the picks rotate."""
        servers = makeServers([1, 1, 1])
        source = Source()
        ctx = Context(client=UNIXAddress(b"/tmp/s"))
        self.assertEqual([source.pick(servers, ctx) for _ in range(3)], servers)
        self.assertEqual([source.pick(servers, Context()) for _ in range(3)], servers)

    def test_uriPathOnlyByDefault(self) -> None:
        """URI hashes the path: the query string does not matter unless whole=True."""
        servers = makeServers([1] * 16)
        uri = URI()
        picks = {uri.pick(servers, Context(request=FakeRequest(b"/a/b?x=%d" % i))) for i in range(30)}
        self.assertEqual(len(picks), 1)
        whole = URI(whole=True)
        picks = {whole.pick(servers, Context(request=FakeRequest(b"/a/b?x=%d" % i))) for i in range(30)}
        self.assertGreater(len(picks), 1)

    def test_uriDepthAndLen(self) -> None:
        """depth keeps the first directories, len the first bytes."""
        servers = makeServers([1] * 16)
        depth = URI(depth=2)
        picks = {depth.pick(servers, Context(request=FakeRequest(b"/a/b/%d.png" % i))) for i in range(30)}
        self.assertEqual(len(picks), 1)
        length = URI(len=4)
        picks = {length.pick(servers, Context(request=FakeRequest(b"/abc%d" % i))) for i in range(30)}
        self.assertEqual(len(picks), 1)
        self.assertRaises(ConfigError, URI, depth=0)

    def test_requestHashersFallBackInTcpMode(self) -> None:
        """With no request (tcp mode) URI, Header and URLParam rotate."""
        servers = makeServers([1, 1])
        for balancer in (URI(), Header(b"Host"), URLParam(b"id")):
            self.assertEqual([balancer.pick(servers, Context()) for _ in range(4)], servers * 2)

    def test_headerAbsentFallsBack(self) -> None:
        """An absent or empty header rotates; a present one sticks."""
        servers = makeServers([1, 1, 1])
        header = Header("X-Tenant")
        bare = Context(request=FakeRequest(b"/"))
        self.assertEqual([header.pick(servers, bare) for _ in range(3)], servers)
        tenant = Context(request=FakeRequest(b"/", {b"x-tenant": b"acme"}))
        self.assertEqual(len({header.pick(servers, tenant) for _ in range(10)}), 1)

    def test_headerUseDomainOnly(self) -> None:
        """useDomainOnly hashes only the main domain label."""
        servers = makeServers([1] * 16)
        header = Header(b"Host", useDomainOnly=True)
        hosts = [b"www.1wt.eu", b"static.1wt.eu:8080", b"1WT.EU"]
        picks = {header.pick(servers, Context(request=FakeRequest(b"/", {b"Host": h}))) for h in hosts}
        self.assertEqual(len(picks), 1)

    def test_urlParam(self) -> None:
        """URLParam hashes the named parameter's value and ignores the rest."""
        servers = makeServers([1] * 16)
        param = URLParam(b"user")
        picks = {param.pick(servers, Context(request=FakeRequest(b"/p?a=%d&user=bob" % i))) for i in range(20)}
        self.assertEqual(len(picks), 1)
        absent = Context(request=FakeRequest(b"/p?user="))
        self.assertEqual([param.pick(servers[:2], absent) for _ in range(2)], servers[:2])

    def test_badOptions(self) -> None:
        """Bad hash options are configuration errors."""
        self.assertRaises(ConfigError, Source, hashType="ring")
        self.assertRaises(ConfigError, Source, hashType="consistent", hashBalanceFactor=50)
        self.assertRaises(ConfigError, Source, hashBalanceFactor=150)
        self.assertRaises(ConfigError, Source, hashType="maglev", maglevTableSize=1000)


class DistributionTests(SynchronousTestCase):
    @FAST
    @given(
        st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=6),
        st.sampled_from(["map-based", "consistent", "maglev"]),
    )
    def test_sharesMatchWeights(self, weights: list[int], hashType: str) -> None:
        """
        Over 3,000 clients, shares follow weights: within 5 points for
        map-based and maglev, within 40% of the share plus 3 points for
        consistent (40 ring points per weight unit).
        """
        servers = makeServers(weights)
        source = Source(**options(hashType))
        picks = [source.pick(servers, ctx) for ctx in KEYS]
        total = sum(weights)
        for server, weight in zip(servers, weights, strict=True):
            expected = weight / total if total else 0.0
            share = picks.count(server) / len(KEYS)
            tolerance = 0.05 if hashType != "consistent" else 0.4 * expected + 0.03
            self.assertLessEqual(abs(share - expected), tolerance)

    def test_singleServer(self) -> None:
        """A single server takes every key, whatever the hash type."""
        for hashType in ("map-based", "consistent", "maglev"):
            servers = makeServers([3])
            source = Source(**options(hashType))
            self.assertEqual({source.pick(servers, ctx) for ctx in KEYS[:50]}, {servers[0]})


class ConsistencyTests(SynchronousTestCase):
    def mapping(self, balancer: Source, servers: list[Server]) -> list[str]:
        return [balancer.pick(servers, ctx).name for ctx in KEYS]  # type: ignore[union-attr]

    @FAST
    @given(st.integers(min_value=2, max_value=10), st.data())
    def test_removalMovesOnlyItsKeys(self, n: int, data: st.DataObject) -> None:
        """Consistent: removing one of N servers remaps only the keys that were on it."""
        servers = makeServers([1] * n)
        gone = data.draw(st.integers(min_value=0, max_value=n - 1))
        source = Source(hashType="consistent")
        before = self.mapping(source, servers)
        after = self.mapping(source, servers[:gone] + servers[gone + 1:])
        for b, a in zip(before, after, strict=True):
            if b != servers[gone].name:
                self.assertEqual(a, b)

    @FAST
    @given(st.integers(min_value=2, max_value=10))
    def test_additionMovesAboutOneInNPlusOne(self, n: int) -> None:
        """Consistent: adding a server moves about 1/(N+1) of the keys, all to it."""
        servers = makeServers([1] * (n + 1))
        source = Source(hashType="consistent")
        before = self.mapping(source, servers[:n])
        after = self.mapping(source, servers)
        moved = [a for a, b in zip(after, before, strict=True) if a != b]
        self.assertEqual(set(moved) - {servers[n].name}, set())
        self.assertLess(abs(len(moved) / len(KEYS) - 1 / (n + 1)), 0.5 / (n + 1) + 0.02)

    def test_downServerThroughBackend(self) -> None:
        """Through a backend, a server going DOWN moves only its own clients (consistent)."""
        servers = makeServers([1] * 6)
        backend = Backend("be", servers, balance=Source(hashType="consistent"))

        def assign() -> list[Server]:
            out = []
            for ctx in KEYS[:600]:
                s = backend.tryAcquire(ctx)
                assert s is not None
                backend.release(s)
                out.append(s)
            return out

        before = assign()
        servers[2].setState(ServerState.DOWN)
        after = assign()
        for b, a in zip(before, after, strict=True):
            self.assertIsNot(a, servers[2])
            if b is not servers[2]:
                self.assertIs(a, b)

    def test_maglevMinimalDisruption(self) -> None:
        """Maglev: removing one of 10 servers moves few keys besides its own."""
        servers = makeServers([1] * 10)
        source = Source(**options("maglev"))
        before = self.mapping(source, servers)
        after = self.mapping(source, servers[1:])
        extra = sum(1 for b, a in zip(before, after, strict=True) if b != a and b != "s0")
        self.assertLess(extra / len(KEYS), 0.05)

    def test_mapBasedWeightChange(self) -> None:
        """Map-based tables are rebuilt when a weight changes through the backend."""
        servers = makeServers([1, 1])
        backend = Backend("be", servers, balance=Source())
        servers[0].setWeight(3)
        counts = {s: 0 for s in servers}
        for ctx in KEYS:
            s = backend.tryAcquire(ctx)
            assert s is not None
            backend.release(s)
            counts[s] += 1
        self.assertLess(abs(counts[servers[0]] / len(KEYS) - 0.75), 0.04)


class BoundedLoadTests(SynchronousTestCase):
    @FAST
    @given(
        st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=6),
        st.sampled_from([100, 125, 150, 200]),
        st.sampled_from(["consistent", "maglev"]),
        st.lists(st.integers(min_value=0, max_value=40), min_size=50, max_size=300),
        st.randoms(use_true_random=False),
    )
    def test_neverExceedsFactor(
        self, weights: list[int], factor: int, hashType: str, keys: list[int], rnd: Any
    ) -> None:
        """
        With hashBalanceFactor, no pick makes a server's load exceed
        ceil(factor% x (total + 1) x weight share), even for skewed keys
        and with connections ending at random.
        """
        servers = makeServers(weights)
        backend = Backend("be", servers, balance=Source(hashBalanceFactor=factor, **options(hashType)))
        total = sum(weights)
        for k in keys:
            if rnd.random() < 0.3:
                busy = [s for s in servers if s.active]
                if busy:
                    backend.release(rnd.choice(busy))
            load = sum(s.active for s in servers)
            s = backend.tryAcquire(KEYS[k])
            assert s is not None
            cap = max(1, math.ceil((load + 1) * factor * s.weight / (100 * total)))
            self.assertLessEqual(s.active, cap)

    def test_hotKeySpills(self) -> None:
        """One hot client spills over to other servers: none takes over 125% of the average."""
        servers = makeServers([1] * 4)
        source = Source(hashType="consistent", hashBalanceFactor=125)
        for _ in range(40):
            s = source.pick(servers, KEYS[0])
            assert s is not None
            s.active += 1
        self.assertLessEqual(max(s.active for s in servers), math.ceil(1.25 * 40 / 4))
        self.assertGreater(min(s.active for s in servers), 0)

    def test_subsetWalksTheRing(self) -> None:
        """When the key's server is left out (full or tried), the next server on the ring takes it."""
        servers = makeServers([1] * 5)
        source = Source(hashType="consistent")
        home = source.pick(servers, KEYS[1])
        others = [s for s in servers if s is not home]
        self.assertIn(source.pick(others, KEYS[1]), others)
        self.assertIs(source.pick(servers, KEYS[1]), home)
