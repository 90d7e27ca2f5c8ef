"""
Tests for L{lbkit.service}: the service tree a user embeds, on a fake
reactor.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server, tcp
from lbkit.demo import HelloServer
from lbkit.error import ConfigError, LBKitError
from lbkit.service import ListenFailed, LoadBalancerService, fromSiteFile

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


class FakePort:
    """A listening port that records whether it was stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stopped = False

    def stopListening(self) -> None:
        self.stopped = True


class FakeReactor(MemoryReactorClock):
    """
    A L{MemoryReactor} whose C{listenTCP} refuses the ports in C{taken}
    and returns L{FakePort}s.
    """

    def __init__(self, taken: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.taken = taken
        self.ports: list[FakePort] = []

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port in self.taken:
            raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "Address already in use"))
        super().listenTCP(port, factory, backlog, interface)
        self.ports.append(FakePort(port))
        return self.ports[-1]


def makeListen() -> list[Any]:
    web = Backend("web", servers=[Server("web1", "127.0.0.1:9001"), Server("web2", "127.0.0.1:9002")])
    return [
        tcp.Frontend("tcp:8080:interface=127.0.0.1", backend=web, name="front"),
        HelloServer("web1", "tcp:9001:interface=127.0.0.1"),
        HelloServer("web2", "tcp:9002:interface=127.0.0.1"),
    ]


class LoadBalancerServiceTests(SynchronousTestCase):
    """
    L{LoadBalancerService} listens on every endpoint of its C{listen} list
    while running.
    """

    def test_listensInOrder(self) -> None:
        """Starting (privileged, then normal) listens once on each endpoint, in order."""
        reactor = FakeReactor()
        service = LoadBalancerService(makeListen(), reactor)
        service.privilegedStartService()
        service.startService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(8080, "127.0.0.1"), (9001, "127.0.0.1"), (9002, "127.0.0.1")],
        )
        self.assertTrue(service.running)

    def test_stopStopsListening(self) -> None:
        """Stopping the service stops listening everywhere."""
        reactor = FakeReactor()
        service = LoadBalancerService(makeListen(), reactor)
        service.startService()
        self.successResultOf(service.stopService())
        self.assertEqual([port.stopped for port in reactor.ports], [True, True, True])
        self.assertFalse(service.running)

    def test_embedInRunningParent(self) -> None:
        """Added to a running parent (no privileged start), it still listens."""
        reactor = FakeReactor()
        parent = MultiService()
        parent.startService()
        service = LoadBalancerService(makeListen(), reactor)
        service.setServiceParent(parent)
        self.assertEqual(len(reactor.tcpServers), 3)
        self.assertTrue(service.running)

    def test_restart(self) -> None:
        """A stopped service listens again when started again."""
        reactor = FakeReactor()
        service = LoadBalancerService(makeListen(), reactor)
        service.startService()
        self.successResultOf(service.stopService())
        service.startService()
        self.assertEqual(len(reactor.tcpServers), 6)
        self.assertEqual([port.stopped for port in reactor.ports], [True] * 3 + [False] * 3)

    def test_cannotListen(self) -> None:
        """
        A port that cannot be listened on raises L{ListenFailed} naming
        where the listener was made, the listener and the socket error; the
        ports already listening stop again.
        """
        reactor = FakeReactor(taken=(9002,))
        listen = makeListen()
        service = LoadBalancerService(listen, reactor)
        e = self.assertRaises(ListenFailed, service.privilegedStartService)
        filename, line = listen[2].definedAt
        self.assertEqual(
            str(e),
            f"{filename}:{line}: demo server web2 cannot listen on "
            "'tcp:9002:interface=127.0.0.1': [Errno 98] Address already in use",
        )
        self.assertIsInstance(e, CannotListenError)
        self.assertIsInstance(e, LBKitError)
        self.assertEqual(e.port, 9002)
        self.assertEqual([port.stopped for port in reactor.ports], [True, True])

    def test_badListen(self) -> None:
        """A bad C{listen} raises L{ConfigError} naming the line that made the service."""
        try:
            line = sys._getframe().f_lineno + 1
            LoadBalancerService([], FakeReactor())
        except ConfigError as e:
            self.assertEqual(str(e), f"{__file__}:{line}: no frontends: `listen` is empty")
        else:
            self.fail("no ConfigError")

    def test_backends(self) -> None:
        """L{LoadBalancerService.backends} lists each backend once."""
        listen = makeListen()
        service = LoadBalancerService(listen + [tcp.Frontend("tcp:8081", backend=listen[0].backend)])
        self.assertEqual(service.backends(), [listen[0].backend])

    def test_fromSiteFile(self) -> None:
        """L{fromSiteFile} loads a site file into a service."""
        reactor = FakeReactor()
        service = fromSiteFile(os.path.join(EXAMPLES, "demo.py"), reactor)
        service.startService()
        self.assertEqual([port for port, _, _, _ in reactor.tcpServers], [8080, 8404, 9001, 9002, 9003])
        service.stopService()

    def test_globalReactorLookedUpLate(self) -> None:
        """Without a reactor, none is looked up until the service starts."""
        service = LoadBalancerService(makeListen())
        self.assertIsNone(service.reactor)
