"""
The package imports and balances out of the box: a backend without a
balancer spreads by weight (smooth round robin).  Its exports are checked
in tests/test_exports.py, its contracts in tests/test_contracts.py.
"""

from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Context, Server


class SmoothWeightsTests(SynchronousTestCase):
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
