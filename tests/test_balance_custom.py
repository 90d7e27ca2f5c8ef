"""
The user-written balancer of examples/custom_balancer.py loads from a site
file and is used like a built-in.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from lbkit import Context
from lbkit.config import loadSite
from lbkit.interfaces import IBalancer

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "custom_balancer.py")


class CustomBalancerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.site = loadSite(EXAMPLE)
        self.balancer = self.site.namespace["balancer"]
        self.backend = self.site.namespace["web"]

    def test_providesIBalancer(self) -> None:
        """The example's balancer provides IBalancer."""
        self.assertTrue(verifyObject(IBalancer, self.balancer))

    def test_usedByTheBackend(self) -> None:
        """The site's backend uses it: the server with the lowest recorded latency wins."""
        self.assertIs(self.backend.balance, self.balancer)
        web1, web2 = self.backend.servers
        self.balancer.record(web1, 0.200)
        self.balancer.record(web2, 0.020)
        server = self.backend.tryAcquire(Context())
        self.assertIs(server, web2)
        self.backend.release(server)

    def test_failuresPenalised(self) -> None:
        """A failure reported by the proxies makes a server look slow."""
        web1, web2 = self.backend.servers
        self.balancer.record(web1, 0.010)
        self.balancer.record(web2, 0.020)
        self.backend.release(self.backend.tryAcquire(Context()))
        web1.observe(False, "Layer4 connection problem")
        self.assertIs(self.backend.tryAcquire(Context()), web2)
