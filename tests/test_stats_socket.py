"""
The command socket: HAProxy-style runtime commands, in memory and once
over a real UNIX socket.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbkit import ServerState, stats
from lbkit.stats._socket import CommandFactory, CommandProtocol, execute
from tests.test_stats import makeSite


class ExecuteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.page, self.web, self.frontend, self.clock = makeSite()
        self.page.collector.start(self.clock)
        self.events: list[dict[str, Any]] = []
        self.page.collector.log = Logger(namespace="lbkit.admin", observer=cast(ILogObserver, self.events.append))

    def cmd(self, line: str) -> str:
        return execute(self.page.collector, "uid 1000", line)

    def test_showServers(self) -> None:
        """show servers lists backend/server, state and weight, one per line."""
        self.web.servers[1].setState(ServerState.DOWN, "test")
        lines = self.cmd("show servers").splitlines()
        self.assertEqual(lines[1].split()[:3], ["web/web1", "UP", "2"])
        self.assertEqual(lines[2].split()[:3], ["web/web2", "DOWN", "1"])
        self.assertEqual(len(self.cmd("show servers web").splitlines()), 3)
        self.assertTrue(self.cmd("show servers nope").startswith("error: "))

    def test_showTable(self) -> None:
        """show table lists a StickySource's entries: backend, client, server, idle seconds."""
        from twisted.internet.address import IPv4Address

        from lbkit import Context
        from lbkit.persistence import StickySource

        table = StickySource(expire=60, clock=self.clock)
        self.web.persistence = table
        server = self.web.tryAcquire(Context(client=IPv4Address("TCP", "10.1.2.3", 5000)))
        assert server is not None
        self.web.release(server)
        self.clock.advance(7)
        lines = self.cmd("show table").splitlines()
        self.assertEqual(lines[1:], [f"web 10.1.2.3 {server.name} 7"])
        self.assertEqual(self.cmd("show table web").splitlines()[1:], lines[1:])
        self.assertTrue(self.cmd("show table nope").startswith("error: "))

    def test_reopenLogs(self) -> None:
        """reopen logs opens the access-log files again, logged with the peer; outside a service it is an error."""
        self.assertTrue(self.cmd("reopen logs").startswith("error: reopen is not available"))
        from lbkit._accesslog import AccessLogSink, FileWriter

        path = self.mktemp()
        sink = AccessLogSink()
        self.addCleanup(sink.close)
        sink.replace([FileWriter(path)], True)
        self.page.bindAccessLog(sink)
        sink.emit(b"old")
        os.rename(path, path + ".1")
        self.assertEqual(self.cmd("reopen logs"), f"reopened\nfile:{path}: reopened")
        sink.emit(b"new")
        with open(path) as f:
            self.assertEqual(f.read(), "new\n")
        self.assertEqual([(e["user"], e["via"], e["action"]) for e in self.events], [("uid 1000", "socket uid 1000", "reopen")])
        self.assertIn("reopen logs", self.cmd("help"))

    def test_setState(self) -> None:
        """set server B/S state drain|maint|ready changes the state, logged with the peer."""
        self.assertEqual(self.cmd("set server web/web1 state drain"), "done")
        self.assertIs(self.web.servers[0].state, ServerState.DRAIN)
        self.assertEqual(self.cmd("set server web/web1 state maint"), "done")
        self.assertIs(self.web.servers[0].state, ServerState.MAINT)
        self.assertEqual(self.cmd("set server web/web1 state ready"), "done")
        self.assertIs(self.web.servers[0].state, ServerState.UP)
        self.assertEqual([(e["user"], e["via"]) for e in self.events], [("uid 1000", "socket")] * 3)
        self.assertTrue(self.cmd("set server web/web1 state up").startswith("error: "))

    def test_weightAndHealth(self) -> None:
        """Both weight spellings work; enable/disable health sets checkEnabled."""
        self.assertEqual(self.cmd("set weight web/web2 9"), "done")
        self.assertEqual(self.web.servers[1].weight, 9)
        self.assertEqual(self.cmd("set server web/web2 weight 3"), "done")
        self.assertEqual(self.web.servers[1].weight, 3)
        self.assertTrue(self.cmd("set weight web/web2 999").startswith("error: "))
        self.assertEqual(self.cmd("disable health web/web2"), "done")
        self.assertIs(self.web.servers[1].checkEnabled, False)  # type: ignore[attr-defined]
        self.assertEqual(self.cmd("enable health web/web2"), "done")
        self.assertIs(self.web.servers[1].checkEnabled, True)  # type: ignore[attr-defined]

    def test_showStatAndErrors(self) -> None:
        """show stat is the JSON snapshot; nonsense is an error line, not a crash."""
        self.assertEqual(json.loads(self.cmd("show stat"))["backends"][0]["name"], "web")
        self.assertIn("set server", self.cmd("help"))
        self.assertIn("uptime", self.cmd("show info"))
        self.assertTrue(self.cmd("frobnicate").startswith("error: unknown command"))
        self.assertTrue(self.cmd("set weight web1 3").startswith("error: expected BACKEND/SERVER"))
        self.assertEqual(self.cmd("   "), "")

    def test_protocol(self) -> None:
        """Each line gets an answer ended by an empty line; quit closes."""
        protocol = CommandProtocol()
        protocol.factory = CommandFactory(self.page.collector)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"set weight web/web1 4\r\nshow servers web\n")
        answers = transport.value().decode().split("\n\n")
        self.assertEqual(answers[0], "done")
        self.assertIn("web/web1 UP 4", answers[1])
        protocol.dataReceived(b"quit\n")
        self.assertTrue(transport.disconnecting)

    def test_lastLineWithoutNewline(self) -> None:
        """A command cut by EOF (echo -n | socat) still runs."""
        protocol = CommandProtocol()
        protocol.factory = CommandFactory(self.page.collector)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"set weight web/web1 5")
        protocol.readConnectionLost()
        self.assertEqual(self.web.servers[0].weight, 5)
        self.assertTrue(transport.disconnecting)


class _Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.done.callback(self.data)


class RealSocketTests(TestCase):
    timeout = 10

    @defer.inlineCallbacks
    def test_unixSocket(self) -> Any:
        """The page listens on its UNIX socket with the configured mode and answers commands."""
        from twisted.internet import reactor

        page, web, frontend, clock = makeSite()
        path = os.path.abspath(self.mktemp() + ".sock")
        page = stats.Page("tcp:0:interface=127.0.0.1", socket=path, socketMode=0o600)
        page.bindSite([frontend, page])
        service = page.makeService(reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        client = _Collect()
        yield connectProtocol(UNIXClientEndpoint(reactor, path), client)
        client.transport.write(b"set server web/web2 state maint\nshow servers\nquit\n")  # type: ignore[union-attr]
        answer = yield client.done
        self.assertIn(b"web/web2 MAINT", answer)
        self.assertIs(web.servers[1].state, ServerState.MAINT)
