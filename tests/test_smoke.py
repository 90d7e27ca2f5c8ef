"""
The package imports and its public names are what they claim.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import lbkit
from lbkit import Backend, Context, Server
from lbkit.balance import RoundRobin
from lbkit.interfaces import IBalancer


class ExportsTests(SynchronousTestCase):
    def test_publicNames(self) -> None:
        """The top-level package exports Server, Backend and Context."""
        self.assertEqual(set(lbkit.__all__) >= {"Server", "Backend", "Context"}, True)

    def test_roundRobinProvidesIBalancer(self) -> None:
        """RoundRobin provides IBalancer."""
        self.assertTrue(verifyObject(IBalancer, RoundRobin()))

    def test_smoothWeights(self) -> None:
        """Weights 5, 1, 1 interleave: a a b a c a a."""
        a, b, c = Server("a", "127.0.0.1:1", weight=5), Server("b", "127.0.0.1:2"), Server("c", "127.0.0.1:3")
        backend = Backend("be", [a, b, c])
        picks = []
        for _ in range(7):
            server = backend.tryAcquire(Context())
            assert server is not None
            picks.append(server.name)
            backend.release(server)
        self.assertEqual(picks, list("aabacaa"))
