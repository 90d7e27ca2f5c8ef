"""
Tests for L{lbkit.simulate}.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

from lbkit.balance import First, LeastConn, RoundRobin
from lbkit.simulate import Workload, builtins, compare, formatTable, main, simulate

SMALL = Workload(requests=2000, speeds=(1.0, 1.0, 2.0), clients=100, paths=100)


class SimulateTests(SynchronousTestCase):
    def test_everyRequestServed(self) -> None:
        """Every request is served once and the shares add up to 1."""
        result = simulate(RoundRobin(), SMALL)
        self.assertAlmostEqual(sum(result.shares), 1.0)
        self.assertEqual(len(result.shares), 3)
        self.assertTrue(0 < result.p50 <= result.p99 <= result.p999)

    def test_weightedShares(self) -> None:
        """Round robin follows the weights derived from speeds (10, 10, 20)."""
        result = simulate(RoundRobin(), SMALL)
        self.assertEqual([round(s, 2) for s in result.shares], [0.25, 0.25, 0.5])

    def test_deterministic(self) -> None:
        """The same seed gives the same result."""
        self.assertEqual(simulate(LeastConn(), SMALL), simulate(LeastConn(), SMALL))

    def test_firstFillsFirstServer(self) -> None:
        """At light load, first sends most requests to the first server."""
        light = Workload(requests=2000, load=0.2, speeds=(1.0, 1.0, 2.0), clients=100, paths=100)
        result = simulate(First(), light)
        self.assertGreater(result.shares[0], 0.5)
        self.assertGreater(result.shares[0], result.shares[1])

    def test_leastConnBeatsRoundRobinTail(self) -> None:
        """At high load leastconn's p99 is no worse than round robin's."""
        busy = Workload(requests=4000, load=0.9, speeds=(1.0, 1.0, 4.0), clients=10, paths=10)
        self.assertLessEqual(simulate(LeastConn(), busy).p99, simulate(RoundRobin(), busy).p99)

    def test_compareBuiltins(self) -> None:
        """compare runs every built-in and formatTable prints one row each."""
        results = compare(Workload(requests=300, clients=20, paths=20))
        self.assertEqual([r.name for r in results], [name for name, _ in builtins()])
        table = formatTable(results)
        self.assertEqual(len(table.splitlines()), len(results) + 2)

    def test_main(self) -> None:
        """The command prints the table."""
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(main(["--requests", "200"]), 0)
        self.assertIn("| RoundRobin |", out.getvalue())
        self.assertEqual(main(["--bogus"]), 2)
