"""
L{Backend.preview}: what a change of servers would do, before it is made
(docs/beyond.md).
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Context, Server
from lbkit.balance import URI, LeastConn
from lbkit.error import ConfigError
from lbkit.http import Request
from lbkit.persistence import Cookie, StickySource


def servers(n: int) -> list[Server]:
    return [Server(f"s{i}", f"127.0.0.1:{9000 + i}") for i in range(1, n + 1)]


def ctx(host: str = "10.0.0.1", path: bytes = b"/") -> Context:
    return Context(client=IPv4Address("TCP", host, 1), request=Request(b"GET", path, b"HTTP/1.1", []))


class PreviewTests(SynchronousTestCase):
    """Hash keys that would move, sticky clients that would move, traffic shares."""

    def test_consistentRemovalMovesOnlyItsKeys(self) -> None:
        """Removing one of four servers of a consistent ring moves about its quarter, only from it."""
        b = Backend("b", servers(4), balance=URI(hashType="consistent"))
        p = b.preview(remove=["s3"])
        assert p.moved is not None
        self.assertAlmostEqual(p.moved, p.sharesBefore["s3"], places=6)
        self.assertEqual(set(p.movedFrom), {"s3"})
        self.assertTrue(0.1 < p.moved < 0.4, p.moved)
        self.assertNotIn("s3", p.sharesAfter)
        self.assertAlmostEqual(sum(p.sharesAfter.values()), 1.0, places=6)

    def test_mapBasedMovesMore(self) -> None:
        """The same removal with map-based hashing moves most keys, from every server."""
        consistent = Backend("b", servers(4), balance=URI(hashType="consistent")).preview(remove=["s3"])
        mapped = Backend("b", servers(4), balance=URI()).preview(remove=["s3"])
        assert consistent.moved is not None and mapped.moved is not None
        self.assertGreater(mapped.moved, consistent.moved + 0.2)
        self.assertEqual(len(mapped.movedFrom), 4)

    def test_previewPredictsRealMoves(self) -> None:
        """The share of keys a preview says move is the share of real paths that do move."""
        b = Backend("b", servers(4), balance=URI(hashType="consistent"))
        paths = [b"/object/%d" % i for i in range(4000)]

        def where() -> list[str]:
            out = []
            for path in paths:
                s = b.tryAcquire(ctx(path=path))
                assert s is not None
                out.append(s.name)
                b.release(s)
            return out

        before = where()
        p = b.preview(add=[Server("s5", "127.0.0.1:9005")], weights={"s1": 2})
        b.servers[0].setWeight(2)
        b.addServer(Server("s5", "127.0.0.1:9005"))
        after = where()
        real = sum(1 for x, y in zip(before, after, strict=True) if x != y) / len(paths)
        assert p.moved is not None
        self.assertLess(abs(real - p.moved), 0.03, (real, p.moved))

    def test_weightsShares(self) -> None:
        """For a balancer that does not hash, the shares follow the weights; nothing changes."""
        b = Backend("b", servers(3), balance=LeastConn())
        p = b.preview(weights={"s1": 2}, add=[Server("s4", "127.0.0.1:9004")])
        self.assertEqual(p.sharesAfter, {"s1": 0.4, "s2": 0.2, "s3": 0.2, "s4": 0.2})
        self.assertIsNone(p.moved)
        self.assertEqual([s.weight for s in b.servers], [1, 1, 1])
        self.assertIn("weight s1 -> 2, add s4 (127.0.0.1:9004)", p.lines()[0])

    def test_stickyClientsOfRemovedServer(self) -> None:
        """A stick table's clients on a removed server are listed; cookies cannot tell."""
        b = Backend("b", servers(2), persistence=StickySource())
        for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
            s = b.tryAcquire(ctx(host))
            assert s is not None
            b.release(s)
        p = b.preview(remove=["s1"])
        self.assertEqual(p.stickyMoving, [("10.0.0.1", "s1"), ("10.0.0.3", "s1")])
        self.assertIsNone(Backend("c", servers(2), persistence=Cookie("X")).preview(remove=["s1"]).stickyMoving)

    def test_badChange(self) -> None:
        """An unknown server, a bad weight or a taken name is a ConfigError."""
        b = Backend("b", servers(2))
        self.assertRaises(ConfigError, b.preview, remove=["nope"])
        self.assertRaises(ConfigError, b.preview, weights={"s1": 300})
        self.assertRaises(ConfigError, b.preview, add=[Server("s1", "127.0.0.1:1")])
