"""
Running out of file descriptors (L{lbkit._resources}): a real lbkit process
with a low C{RLIMIT_NOFILE}, then the pieces with fakes.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import textwrap
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectBindError, ConnectError, ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

import lbkit._connect
from lbkit import Server
from lbkit._connect import connectFailed, isLocalResourceError
from lbkit._resources import ACCEPT_PAUSE, ResourceWatch, _AcceptGuard, resourceErrno
from lbkit.testing import FakeEndpoint
from tests.helpers import Collector, Echo, TrackingFactory, freePort, listen, spawn
from tests.test_tcp import Harness, captureLogs, reactor

#: The file descriptor limit of the lbkit process under test.
LIMIT = 64

#: twistd, with RLIMIT_NOFILE (soft and hard) set to argv[1] first.
LIMITED_TWISTD = [
    sys.executable,
    "-c",
    "import resource, sys; n = int(sys.argv.pop(1)); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
    "sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()",
]

SITE = textwrap.dedent(
    """\
    from lbkit import Backend, Server, stats, tcp
    from lbkit.health import TCPCheck

    # one live-traffic error would take the server DOWN; the active check
    # practically never runs during the test
    app = Backend("app", servers=[Server("a", "127.0.0.1:{backend}")],
                  health=TCPCheck(interval=1e6, observe="layer4", errorLimit=1))
    listen = [
        tcp.Frontend("tcp:{front}:interface=127.0.0.1", backend=app, name="fe", acceptProxy=True),
        stats.Page("tcp:{stats}:interface=127.0.0.1"),
    ]
    """
)

HEADER = b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\r\n"


class Probe(Protocol):
    """A client that sends only when told, and reports what came back."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()
        self._wanted: tuple[int, Deferred[bytes]] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self._wanted is not None and len(self.received) >= self._wanted[0]:
            d, self._wanted = self._wanted[1], None
            d.callback(self.received)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        if self._wanted is not None:
            d, self._wanted = self._wanted[1], None
            d.errback(RuntimeError(f"closed after {self.received!r}"))
        self.lost.callback(None)

    def send(self, data: bytes, expect: int) -> Deferred[bytes]:
        """Write C{data}; fire once C{expect} bytes came back (fail if closed first)."""
        d: Deferred[bytes] = Deferred()
        self._wanted = (expect, d)
        assert self.transport is not None
        self.transport.write(data)
        return d.addTimeout(15, reactor)


class ExhaustionProcessTests(TestCase):
    """
    C{twistd lbkit} limited to 64 file descriptors, pushed past them by
    clients that connect and wait: it says so in one line, blames no
    server, keeps the waiting clients in the backlog and serves them once
    descriptors are free again.
    """

    timeout = 90

    @inlineCallbacks
    def test_fdExhaustion(self) -> Any:
        """
        Past the fd limit: one clear log line (no Twisted EMFILE noise), the
        client whose server connect failed for it is closed as C{RC}, the
        server stays UP with no connect error, and after clients leave a
        client that waited in the backlog and a new one are both served.
        """
        if not sys.platform.startswith("linux"):
            raise SkipTest("RLIMIT_NOFILE and EMFILE behave this way on Linux")
        server = TrackingFactory(Echo)
        backendPort = listen(self, reactor, server)
        front, statsPort = freePort(), freePort()
        path = os.path.abspath(self.mktemp() + "-site.py")
        with open(path, "w") as f:
            f.write(SITE.format(backend=backendPort, front=front, stats=statsPort))
        process = spawn(self, reactor, [*LIMITED_TWISTD, str(LIMIT), "-n", "--pidfile=", "lbkit", "--config", path])
        yield process.waitForOutput(f"listening on tcp:{statsPort}".encode(), timeout=30)

        clients: list[Probe] = []
        self.addCleanup(self.closeAll, clients)
        for _ in range(LIMIT + 10):  # more than fit, fewer than the accept backlog (50) holds on top
            probe = Probe()
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", front), probe)
            clients.append(probe)
        yield process.waitForOutput(b"EMFILE", timeout=15)

        # the first client was accepted long ago: its server connect cannot get a socket
        yield self.assertFailure(clients[0].send(HEADER + b"ping", 4), RuntimeError)
        yield clients[0].lost

        # the last one waits in the backlog; free descriptors, and it is served
        for probe in clients[1:-1]:
            probe.transport.loseConnection()  # type: ignore[attr-defined]
        echoed = yield clients[-1].send(HEADER + b"hello", 5)
        self.assertEqual(echoed, b"hello")
        fresh = Probe()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", front), fresh)
        clients.append(fresh)
        echoed = yield fresh.send(HEADER + b"again", 5)
        self.assertEqual(echoed, b"again")
        yield process.waitForOutput(b"EMFILE over", timeout=15)

        page = Collector(b"GET /stats.json HTTP/1.0\r\nHost: lbkit\r\n\r\n")
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", statsPort), page)
        response = yield page.done
        stats = json.loads(response.split(b"\r\n\r\n", 1)[1])
        a = stats["backends"][0]["servers"][0]
        self.assertEqual((a["state"], a["errors"]["connect"], a["retries"]), ("UP", 0, 0), a)

        output = process.output
        access = [line for line in output.splitlines() if b" 10.0.0.1:1000 [" in line]
        self.assertEqual([line.split()[-2] for line in access][:1], [b"RC"], access)
        self.assertEqual(output.count(b"out of file descriptors"), 1, output.decode())
        self.assertIn(b"ulimit -n 64", output)
        self.assertNotIn(b"EMFILE encountered", output)
        self.assertNotIn(b"is DOWN", output)
        self.assertNotIn(b"Traceback", output)
        yield self.closeAll(clients)
        yield server.allLost()

    def closeAll(self, clients: list[Probe]) -> Deferred[Any]:
        for probe in clients:
            if probe.transport is not None and not probe.lost.called:
                probe.transport.loseConnection()  # type: ignore[attr-defined]
        return gatherResults([p.lost for p in clients])


class ClassifyTests(SynchronousTestCase):
    """Which connect failures are lbkit's own lack of resources."""

    def test_resourceErrors(self) -> None:
        """Socket creation or connect failing with EMFILE, ENFILE, ENOBUFS, ENOMEM or EADDRNOTAVAIL is local."""
        for number in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            self.assertEqual(resourceErrno(ConnectBindError(number, os.strerror(number))), number)
            self.assertEqual(resourceErrno(OSError(number, os.strerror(number))), number)
        self.assertEqual(resourceErrno(ConnectError(errno.EADDRNOTAVAIL, "no port")), errno.EADDRNOTAVAIL)
        self.assertTrue(isLocalResourceError(Failure(ConnectBindError(errno.EMFILE, "Too many open files"))))

    def test_serverErrors(self) -> None:
        """Refusals, timeouts, unreachable hosts and other errors are not."""
        for value in (ConnectionRefusedError(), ConnectError(errno.ECONNRESET, "reset"),
                      ConnectError(errno.EHOSTUNREACH, "unreachable"), ConnectError(None, "?"),
                      OSError(errno.ECONNREFUSED, "refused"), ValueError("x")):
            self.assertIsNone(resourceErrno(value), value)


class ConnectFailedTests(SynchronousTestCase):
    """L{connectFailed} charges a server only for what the server did."""

    def setUp(self) -> None:
        self.watch = ResourceWatch()
        self.patch(lbkit._connect, "watch", self.watch)
        self.server = Server("a", FakeEndpoint())
        self.observed: list[tuple[bool, str]] = []
        self.server.addObserver(lambda server, ok, reason: self.observed.append((ok, reason)))

    def test_emfileNotCharged(self) -> None:
        """EMFILE: no connect failure counted, nothing observed, the episode logged once."""
        events = captureLogs(self, "lbkit")
        for _ in range(3):
            timedOut = connectFailed(self.server, Failure(ConnectBindError(errno.EMFILE, "Too many open files")))
            self.assertFalse(timedOut)
        self.assertEqual((self.server.connectFailures, self.observed), (0, []))
        self.assertEqual(len(events), 1)
        self.assertIn("out of file descriptors", formatEvent(events[0]))
        self.assertIn("server ", formatEvent(events[0]))
        self.assertEqual(self.watch.active(), [errno.EMFILE])

    def test_refusalCharged(self) -> None:
        """A refusal is still counted and observed."""
        connectFailed(self.server, Failure(ConnectionRefusedError()))
        self.assertEqual(self.server.connectFailures, 1)
        self.assertEqual([ok for ok, _ in self.observed], [False])


class TCPModeTests(SynchronousTestCase):
    """tcp mode logs a local resource failure as C{RC} and blames no server."""

    def test_rcTermination(self) -> None:
        """Connects failing with EMFILE end the connection as RC; the server keeps a clean record."""
        self.patch(lbkit._connect, "watch", ResourceWatch())
        events = captureLogs(self, "lbkit.access")
        endpoint = FakeEndpoint()
        server = Server("a", endpoint)
        h = Harness(self, [server], retries=1)
        proto, client = h.accept()
        for _ in range(2):
            endpoint.fail(ConnectBindError(errno.EMFILE, "Too many open files"))
        self.assertTrue(client.disconnecting)
        self.assertEqual(proto.termination, "RC")
        self.assertEqual((server.connectFailures, server.retries, server.state.name), (0, 0, "UP"))
        h.end(proto)
        self.assertEqual((events[0]["termination"], events[0]["retries"]), ("RC", 1))


class FakePort:
    """Just what L{_AcceptGuard} uses of a Twisted listening port."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.connected = True
        self.disconnecting = False
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


class FakeListeningSocket:
    """accept() raises the queued errors, then returns a fake client."""

    def __init__(self) -> None:
        self.errors: list[int] = []

    def accept(self) -> tuple[str, tuple[str, int]]:
        if self.errors:
            number = self.errors.pop(0)
            raise OSError(number, os.strerror(number))
        return "client", ("127.0.0.1", 1234)

    def fileno(self) -> int:
        return 7


class AcceptGuardTests(SynchronousTestCase):
    """The accept guard pauses a port while accepting fails for lack of fds."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.watch = ResourceWatch(self.clock.seconds)
        self.raw = FakeListeningSocket()
        self.port = FakePort(self.raw)
        self.guard = _AcceptGuard(self.port, self.clock, "frontend fe", self.watch)
        self.events = captureLogs(self, "lbkit")

    def test_pauseAndResume(self) -> None:
        """
        EMFILE on accept reads as EAGAIN to Twisted, stops reading for
        ACCEPT_PAUSE seconds, and is logged once; the next successful
        accept logs the end of the episode.
        """
        self.raw.errors = [errno.EMFILE, errno.EMFILE]
        e = self.assertRaises(BlockingIOError, self.port.socket.accept)
        self.assertEqual(e.errno, errno.EAGAIN)
        self.assertFalse(self.port.reading)
        self.clock.advance(ACCEPT_PAUSE)
        self.assertTrue(self.port.reading)
        self.assertRaises(BlockingIOError, self.port.socket.accept)
        self.clock.advance(ACCEPT_PAUSE)
        self.assertEqual(self.port.socket.accept()[0], "client")
        self.assertEqual(self.port.socket.accept()[0], "client")
        lines = [formatEvent(e) for e in self.events]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("out of file descriptors", lines[0])
        self.assertIn("frontend fe", lines[0])
        self.assertIn("EMFILE over, frontend fe accepts again", lines[1])
        self.assertIn("2 accepts or connects failed", lines[1])
        self.assertEqual(self.watch.active(), [])
        self.assertEqual(self.port.socket.fileno(), 7)

    def test_otherErrorsPassThrough(self) -> None:
        """An accept error that is not about resources reaches Twisted unchanged."""
        self.raw.errors = [errno.ECONNABORTED]
        e = self.assertRaises(OSError, self.port.socket.accept)
        self.assertEqual(e.errno, errno.ECONNABORTED)
        self.assertTrue(self.port.reading)
        self.assertEqual(self.events, [])

    def test_stopCancelsResume(self) -> None:
        """A port that stops listening while paused leaves no timer and is not resumed."""
        self.raw.errors = [errno.ENFILE]
        self.assertRaises(BlockingIOError, self.port.socket.accept)
        self.guard.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.port.reading)

    def test_newEpisodeAfterQuiet(self) -> None:
        """Errors more than C{quiet} seconds apart are two episodes, two lines."""
        self.raw.errors = [errno.EMFILE]
        self.assertRaises(BlockingIOError, self.port.socket.accept)
        self.clock.advance(self.watch.quiet + 1)
        self.raw.errors = [errno.EMFILE]
        self.assertRaises(BlockingIOError, self.port.socket.accept)
        self.clock.advance(ACCEPT_PAUSE)
        self.assertEqual(sum("out of file descriptors" in formatEvent(e) for e in self.events), 2)
