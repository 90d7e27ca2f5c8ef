"""
Tests for L{lbkit.logs}: access-log destinations (file, JSON lines,
syslog), their configuration in site files and twistd options.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import textwrap
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbkit import Backend, Server, http, tcp
from lbkit.config import loadSite
from lbkit.error import ConfigError
from lbkit.http import HTTP_LOG_FORMAT
from lbkit.logs import AccessLog, AccessLogDispatcher, parseDestination
from lbkit.service import LoadBalancerService
from lbkit.tap import Options
from lbkit.tcp import TCP_LOG_FORMAT
from tests.helpers import Collector, Echo, TrackingFactory, freePort, spawn
from tests.test_reload import Client, frontendPort, reactor, startBackend, writeSite
from tests.test_reload_process import SITE, TWISTD

#: The documented http line (docs/http.md), for a request to 127.0.0.1.
HTTP_LINE = re.compile(
    r'^127\.0\.0\.1:\d+ \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\] web app/(\w+) '
    r'0/\d+/\d+/\d+/\d+ 200 \d+ -- 0 "GET (\S+) HTTP/1\.1"$'
)

TCP_FIELDS = dict(
    client="127.0.0.1:40000", date="01/Jan/2026:00:00:00.000", frontend="front", backend="web",
    server="web1", Tw=0, Tc=1, Tt=25, bytesIn=10, bytesOut=20, termination="--", retries=0,
)
HTTP_FIELDS = dict(
    client="127.0.0.1:40000", date="01/Jan/2026:00:00:00", frontend="front", backend="web",
    server="web1", TR=0, Tw=0, Tc=1, Tr=3, Ta=5, status=200, bytes=120, termination="--",
    retries=0, request="GET / HTTP/1.1",
)


class DestinationTests(SynchronousTestCase):
    """Each destination writes one line per event."""

    def emit(self, destinations: list[AccessLog], format: str, fields: dict[str, Any]) -> None:
        dispatcher = AccessLogDispatcher()
        dispatcher.replace(destinations)
        self.addCleanup(dispatcher.close)
        Logger(namespace="lbkit.access", observer=dispatcher).info(format, **fields)

    def test_textFile(self) -> None:
        """A text file gets the documented line."""
        path = self.mktemp()
        self.emit([AccessLog(path)], TCP_LOG_FORMAT, TCP_FIELDS)
        with open(path) as f:
            self.assertEqual(
                f.read(), "127.0.0.1:40000 [01/Jan/2026:00:00:00.000] front web/web1 0/1/25 10 20 -- 0\n"
            )

    def test_jsonFile(self) -> None:
        """A JSON-lines file gets one object per line, with every field, mode and time."""
        path = self.mktemp()
        self.emit([AccessLog(path, format="json")], HTTP_LOG_FORMAT, HTTP_FIELDS)
        self.emit([AccessLog(path, format="json")], TCP_LOG_FORMAT, TCP_FIELDS)
        with open(path) as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual([r["mode"] for r in lines], ["http", "tcp"])
        for record, fields in zip(lines, [HTTP_FIELDS, TCP_FIELDS], strict=True):
            self.assertIsInstance(record.pop("time"), float)
            record.pop("mode")
            self.assertEqual(record, fields)

    def test_syslog(self) -> None:
        """A syslog destination sends one RFC 3164 datagram per line."""
        path = os.path.abspath(self.mktemp())
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        self.emit([AccessLog(syslog=path, facility="local2")], TCP_LOG_FORMAT, TCP_FIELDS)
        sock.setblocking(False)
        message = sock.recv(4096).decode()
        self.assertRegex(message, r"^<150>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d lbkit\[\d+\]: ")
        self.assertTrue(message.endswith(": 127.0.0.1:40000 [01/Jan/2026:00:00:00.000] front web/web1 0/1/25 10 20 -- 0"))

    def test_syslogMissing(self) -> None:
        """A syslog socket that does not exist is a L{ConfigError} naming it."""
        dispatcher = AccessLogDispatcher()
        e = self.assertRaises(ConfigError, dispatcher.replace, [AccessLog(syslog="/nonexistent/log")])
        self.assertIn("/nonexistent/log", str(e))

    def test_badFileKeepsOld(self) -> None:
        """A destination that cannot be opened leaves the old ones in use."""
        path = self.mktemp()
        dispatcher = AccessLogDispatcher()
        self.addCleanup(dispatcher.close)
        dispatcher.replace([AccessLog(path)])
        self.assertRaises(ConfigError, dispatcher.replace, [AccessLog("/nonexistent/dir/x.log")])
        Logger(namespace="lbkit.access", observer=dispatcher).info(TCP_LOG_FORMAT, **TCP_FIELDS)
        with open(path) as f:
            self.assertEqual(len(f.readlines()), 1)

    def test_checks(self) -> None:
        """Wrong arguments are L{ConfigError}s."""
        self.assertRaises(ConfigError, AccessLog, format="xml")
        self.assertRaises(ConfigError, AccessLog, "x.log", syslog=True)
        self.assertRaises(ConfigError, AccessLog, syslog=("host",))
        self.assertRaises(ConfigError, AccessLog, syslog=True, facility="local9")
        self.assertRaises(ConfigError, AccessLog, syslog=True, syslogFormat="rfc1")
        self.assertRaises(ConfigError, AccessLog, syslog=True, syslogFormat="rfc5424", tag="has space")
        self.assertEqual(AccessLog(syslog=True, tag="has space").tag, "has space")  # RFC 3164 is lenient

    def test_parseDestination(self) -> None:
        """The --access-log forms."""
        self.assertEqual(parseDestination("syslog").syslog, "/dev/log")
        self.assertEqual(parseDestination("syslog:/run/log").syslog, "/run/log")
        self.assertEqual(parseDestination("syslog:10.0.0.1:514").syslog, ("10.0.0.1", 514))
        self.assertEqual(parseDestination("a.log", "json").path, "a.log")
        self.assertEqual(parseDestination("a.log", "json").format, "json")
        self.assertIsNone(parseDestination("log").path)


class SiteTests(SynchronousTestCase):
    """C{accessLog} and C{grace} in site files and on the command line."""

    def site(self, extra: str) -> str:
        path = self.mktemp() + ".py"
        with open(path, "w") as f:
            f.write(textwrap.dedent("""\
                from lbkit import Backend, Server, tcp
                from lbkit.logs import AccessLog

                web = Backend("web", servers=[Server("web1", "127.0.0.1:9001")])
                listen = [tcp.Frontend("tcp:0:interface=127.0.0.1", backend=web)]
                """) + extra)
        return path

    def test_siteSettings(self) -> None:
        """A site file's C{accessLog} and C{grace} are read."""
        site = loadSite(self.site('accessLog = AccessLog("a.log", format="json")\ngrace = 12\n'))
        self.assertEqual([(a.path, a.format) for a in site.accessLog], [("a.log", "json")])
        self.assertEqual(site.grace, 12.0)

    def test_siteErrors(self) -> None:
        """Wrong values name the line."""
        e = self.assertRaises(ConfigError, loadSite, self.site('accessLog = "a.log"\n'))
        self.assertIn(".py:6: `accessLog` must be an AccessLog", str(e))
        e = self.assertRaises(ConfigError, loadSite, self.site("\ngrace = -1\n"))
        self.assertIn(".py:7: `grace` must be a number", str(e))

    def test_options(self) -> None:
        """C{--grace}, C{--access-log} and C{--access-log-format}."""
        options = Options()
        options.parseOptions([
            "--config", self.site(""), "--grace", "7", "--access-log", "a.log",
            "--access-log", "syslog", "--access-log-format", "json",
        ])
        self.assertEqual(options["grace"], 7.0)
        self.assertEqual([(a.path, a.syslog, a.format) for a in options["accessLog"]],
                         [("a.log", None, "json"), (None, "/dev/log", "json")])
        self.assertEqual(options["accessLog"][1].syslogFormat, "rfc3164")

    def test_syslogFormatOption(self) -> None:
        """C{--access-log-syslog-format rfc5424} frames the syslog destinations as RFC 5424; other values are refused."""
        options = Options()
        options.parseOptions([
            "--config", self.site(""), "--access-log", "syslog:127.0.0.1:514", "--access-log-syslog-format", "rfc5424",
        ])
        self.assertEqual([(a.syslog, a.syslogFormat) for a in options["accessLog"]], [(("127.0.0.1", 514), "rfc5424")])
        from twisted.python.usage import UsageError

        self.assertRaises(UsageError, Options().parseOptions, [
            "--config", self.site(""), "--access-log", "syslog", "--access-log-syslog-format", "rfc9999",
        ])


class ServiceLogTests(TestCase):
    """A running service sends its frontends' access lines to its destinations."""

    timeout = 10

    @inlineCallbacks
    def test_jsonLines(self) -> Any:
        """One tcp connection, one parseable JSON line with the documented fields."""
        echo = TrackingFactory(Echo)
        port = reactor().listenTCP(0, echo, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        path = self.mktemp()
        web = Backend("web", [Server("web1", f"127.0.0.1:{port.getHost().port}")])
        service = LoadBalancerService(
            [tcp.Frontend("tcp:0:interface=127.0.0.1", web, name="front")], reactor(),
            accessLog=[AccessLog(path, format="json")], grace=5,
        )
        service.startService()
        self.addCleanup(service.stopService)
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        client = Collector(b"ping", expect=4)
        yield connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", frontendPort(service)), client)
        received = yield client.done
        self.assertEqual(received, b"ping")
        yield service.stopService()  # fires once its connections are gone, logged
        yield echo.allLost()
        with open(path) as f:
            (record,) = [json.loads(line) for line in f]
        self.assertEqual(
            sorted(record),
            sorted(["mode", "time", *TCP_FIELDS]),
        )
        self.assertEqual((record["frontend"], record["backend"], record["server"]), ("front", "web", "web1"))
        self.assertEqual((record["bytesIn"], record["bytesOut"], record["mode"]), (4, 4, "tcp"))


class ReopenTests(TestCase):
    """Reopening the access-log files after rotation: new lines go to a new file, none is lost."""

    timeout = 20

    @inlineCallbacks
    def test_reopenInProcess(self) -> Any:
        """
        A file renamed while the service runs keeps the lines logged so far
        (even those still buffered); after L{reopenAccessLogs}, new lines go
        to a new file at the old path.
        """
        port, _ = startBackend(self, "web1")
        path = self.mktemp()
        app = Backend("app", [Server("web1", f"127.0.0.1:{port}")])
        service = LoadBalancerService(
            [http.Frontend("tcp:0:interface=127.0.0.1", default=app, name="web")], reactor(),
            accessLog=[AccessLog(path)], grace=5,
        )
        service.startService()
        self.addCleanup(service.stopService)
        (factory,) = service.listen[0].factories
        self.assertIs(factory.accessSink, service.accessSink)
        self.assertTrue(service.accessSink.active)
        (writer,) = service.accessSink.writers
        logged: list[Deferred[None]] = []
        add = writer.add

        def counting(line: bytes) -> None:
            add(line)
            if logged:
                logged.pop(0).callback(None)

        writer.add = counting  # type: ignore[method-assign]
        client = Client(self)
        front = frontendPort(service)
        for name in (b"/one", b"/two"):
            logged.append(Deferred())
            yield client.get(front, name)
        self.assertEqual(logged, [])
        self.assertGreater(writer.pending(), 0)  # buffered, not yet written
        os.rename(path, path + ".1")
        self.assertEqual(service.reopenAccessLogs(), [f"file:{path}: reopened"])
        yield client.get(front, b"/three")
        yield client.fresh()
        yield service.stopService()

        def requests(name: str) -> list[str]:
            with open(name) as f:
                return [HTTP_LINE.match(line).group(2) for line in f.read().splitlines()]  # type: ignore[union-attr]

        self.assertEqual(requests(path + ".1"), ["/one", "/two"])
        self.assertEqual(requests(path), ["/three"])


class SignalTests(TestCase):
    """SIGUSR1 in a service with signal handlers installed."""

    timeout = 10

    @inlineCallbacks
    def test_sigusr1ChainsAndRestores(self) -> Any:
        """
        SIGUSR1 reopens the access logs on the reactor thread and still
        calls the handler that was there before (twistd's log rotation);
        stopping puts that handler back.
        """
        earlier: list[int] = []

        def previous(signum: int, frame: Any) -> None:
            earlier.append(signum)

        old = signal.signal(signal.SIGUSR1, previous)
        self.addCleanup(signal.signal, signal.SIGUSR1, old)
        path = self.mktemp()
        service = LoadBalancerService(
            [tcp.Frontend("tcp:0:interface=127.0.0.1", Backend("web", [Server("web1", "127.0.0.1:9")]))],
            reactor(), accessLog=[AccessLog(path)], installSignalHandlers=True,
        )
        service.startService()
        self.addCleanup(service.stopService)
        reopened: Deferred[list[str]] = Deferred()
        service.reopenAccessLogs = lambda: reopened.callback(LoadBalancerService.reopenAccessLogs(service))  # type: ignore[method-assign]
        os.rename(path, path + ".1")
        os.kill(os.getpid(), signal.SIGUSR1)
        results = yield reopened
        self.assertEqual(results, [f"file:{path}: reopened"])
        self.assertTrue(os.path.exists(path))
        self.assertEqual(earlier, [signal.SIGUSR1])
        yield service.stopService()
        self.assertIs(signal.getsignal(signal.SIGUSR1), previous)


class ProcessLogTests(TestCase):
    """C{twistd lbkit --access-log PATH} as a real process, rotated with SIGUSR1."""

    timeout = 40

    @inlineCallbacks
    def test_sigusr1Reopens(self) -> Any:
        """
        The file gets the documented http lines; after a rename and SIGUSR1
        the old file keeps every earlier line and new ones go to a new file.
        """
        port, _ = startBackend(self, "a")
        front = freePort()
        site = os.path.abspath(self.mktemp() + "-site.py")
        writeSite(site, SITE.format(name="a", port=port, front=front))
        path = os.path.abspath(self.mktemp() + "-access.log")
        process = spawn(
            self, reactor(), [*TWISTD, "-n", "--pidfile=", "lbkit", "--config", site, "--access-log", path]
        )
        yield process.waitForOutput(f"listening on tcp:{front}".encode(), timeout=20)
        client = Client(self)
        for i in range(3):
            code, body, _ = yield client.get(front, b"/before%d" % i)
            self.assertEqual((code, body), (200, "a"))
        os.rename(path, path + ".1")
        os.kill(process.pid(), signal.SIGUSR1)
        yield process.waitForOutput(b"access logs reopened")
        yield client.get(front, b"/after")
        yield client.fresh()
        yield process.stop()
        self.assertNotIn(b"Traceback", process.output)
        with open(path + ".1") as f:
            before = f.read().splitlines()
        with open(path) as f:
            after = f.read().splitlines()
        for line in before + after:
            self.assertRegex(line, HTTP_LINE)
        self.assertEqual([HTTP_LINE.match(line).group(2) for line in before], ["/before0", "/before1", "/before2"])  # type: ignore[union-attr]
        self.assertEqual([HTTP_LINE.match(line).group(2) for line in after], ["/after"])  # type: ignore[union-attr]


class ExampleTests(SynchronousTestCase):
    """examples/operations.py loads, with its log destinations and grace."""

    def test_loads(self) -> None:
        """Its C{accessLog} and C{grace} are read."""
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        site = loadSite(os.path.join(here, "examples", "operations.py"))
        self.assertEqual([(a.path, a.format) for a in site.accessLog], [("access.log", "text"), ("access.json", "json")])
        self.assertEqual(site.grace, 10.0)


class AccessLogErrorTests(SynchronousTestCase):
    def test_writeErrorIsCounted(self) -> None:
        """An access-log write that fails (full disk) is dropped and counted, not raised into the proxy."""
        dispatcher = AccessLogDispatcher()
        dispatcher.replace([AccessLog("/dev/full")])
        event = {"log_format": "x {a}", "a": 1, "log_namespace": "lbkit.access", "log_time": 0.0}
        for _ in range(3):
            dispatcher(event)  # the file is buffered: writes may fail on flush
        self.assertGreaterEqual(getattr(dispatcher.writers[0], "dropped", 0), 1)
        dispatcher.replace([])
