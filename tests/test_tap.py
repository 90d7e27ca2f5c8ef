"""
Tests for L{lbkit.tap} and the C{twistd lbkit} plugin: a bad site file ends
start-up with one line, before anything listens.
"""

from __future__ import annotations

import os
import re
import textwrap
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.internet.utils import getProcessOutputAndValue
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbkit import tap
from lbkit.config import Site
from lbkit.service import ListenFailed, LoadBalancerService
from tests.test_examples import REPO, TWISTD
from tests.test_service import FakeReactor

GOOD = """\
from lbkit import Backend, Server, tcp
web = Backend("web", servers=[Server("web1", "127.0.0.1:9001")])
listen = [tcp.Frontend("tcp:{port}:interface=127.0.0.1", backend=web, name="front")]
"""

UNKNOWN_NAME = """\
from lbkit import Backend, Server
web = Backend("web", servers=[Server("web1", "127.0.0.1:9001")])
listen = [tcp.Frontend("tcp:18480:interface=127.0.0.1", backend=web)]
"""

SAME_PORT = """\
from lbkit import Backend, Server, tcp
web = Backend("web", servers=[Server("web1", "127.0.0.1:9001")])
listen = [
    tcp.Frontend("tcp:18480:interface=127.0.0.1", backend=web),
    tcp.Frontend("tcp:18480", backend=web),
]
"""


def writeSite(testCase: SynchronousTestCase, source: str) -> str:
    directory = os.path.abspath(testCase.mktemp())
    os.makedirs(directory)
    path = os.path.join(directory, "site.py")
    with open(path, "w") as f:
        f.write(textwrap.dedent(source))
    return path


class OptionsTests(SynchronousTestCase):
    """
    L{tap.Options} loads and checks the site file while parsing.
    """

    def test_loadsSite(self) -> None:
        """C{--config} loads the site file into C{options["site"]}."""
        path = writeSite(self, GOOD.format(port=0))
        options = tap.Options()
        options.parseOptions(["--config", path])
        self.assertIsInstance(options["site"], Site)
        self.assertEqual(options["site"].listen[0].name, "front")

    def test_configRequired(self) -> None:
        """Without C{--config}, parsing fails with a usage error."""
        e = self.assertRaises(usage.UsageError, tap.Options().parseOptions, [])
        self.assertEqual(str(e), "--config is required: the site file to run")

    def test_badSiteExits(self) -> None:
        """A bad site file raises SystemExit with one line: lbkit, file, line, problem."""
        path = writeSite(self, UNKNOWN_NAME)
        e = self.assertRaises(SystemExit, tap.Options().parseOptions, ["--config", path])
        self.assertEqual(
            e.code,
            f"lbkit: {path}:3: NameError: name 'tcp' is not defined "
            "(missing import? add: from lbkit import tcp)",
        )

    def test_help(self) -> None:
        """The help text explains C{--config} and the site file."""
        text = str(tap.Options())
        self.assertIn("--config=", text)
        self.assertIn("site file", text)
        self.assertIn("`listen`", text)
        self.assertIn("docs/config.md", text)

    def test_makeService(self) -> None:
        """L{tap.makeService} builds a L{LoadBalancerService} for the site."""
        path = writeSite(self, GOOD.format(port=0))
        options = tap.Options()
        options.parseOptions(["--config", path])
        service = tap.makeService(options)
        self.assertIsInstance(service, LoadBalancerService)
        self.assertEqual(service.listen, list(options["site"].listen))


class PluginTests(SynchronousTestCase):
    """
    The C{lbkit} twistd plugin is found and points at L{lbkit.tap}.
    """

    def test_found(self) -> None:
        """getPlugins finds a service maker named lbkit using L{tap.Options}."""
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("lbkit", makers)
        self.assertIs(makers["lbkit"].options, tap.Options)


class TwistdTests(TestCase):
    """
    The real C{twistd -n lbkit --config ...} in a child process.
    """

    timeout = 30

    def twistd(self, *args: str) -> Any:
        return getProcessOutputAndValue(
            TWISTD[0], [*TWISTD[1:], *args], env=os.environ.copy(), path=REPO
        )

    @inlineCallbacks
    def assertOneLine(self, source: str, expected: str) -> Any:
        """
        Running C{source} exits non-zero with exactly C{lbkit: <path>:
        <expected>} on stderr (C{PATH} in C{expected} stands for the site
        file's path), and twistd never started (no log, so nothing
        listened).
        """
        path = writeSite(self, source)
        out, err, code = yield self.twistd("-n", "--pidfile=", "lbkit", "--config", path)
        self.assertNotEqual(code, 0)
        self.assertEqual(out, b"")
        self.assertNotIn(b"Traceback", err)
        self.assertEqual(err.decode(), f"lbkit: {path}:{expected.replace('PATH', path)}\n")

    def test_unknownName(self) -> None:
        """A NameError stops twistd with one line naming file and line."""
        return self.assertOneLine(
            UNKNOWN_NAME,
            "3: NameError: name 'tcp' is not defined (missing import? add: from lbkit import tcp)",
        )

    def test_twoFrontendsOnOnePort(self) -> None:
        """Two frontends on one port stop twistd with one line naming both."""
        return self.assertOneLine(
            SAME_PORT,
            "5: two listeners on port 18480: 'tcp:18480' and "
            "'tcp:18480:interface=127.0.0.1' (PATH:4)",
        )

    @inlineCallbacks
    def test_portTaken(self) -> Any:
        """
        A port another process holds stops twistd with one line naming the
        frontend and the socket error, not a traceback.
        """
        from twisted.internet import reactor

        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        path = writeSite(self, GOOD.format(port=number))
        out, err, code = yield self.twistd("-n", "--pidfile=", "lbkit", "--config", path)
        self.assertNotEqual(code, 0)
        output = (out + err).decode()
        self.assertNotIn("Traceback", output)
        lines = [line for line in output.splitlines() if "cannot listen" in line]
        self.assertEqual(len(lines), 1, output)
        self.assertTrue(
            re.search(
                re.escape(
                    f"lbkit: {path}:3: frontend front cannot listen on "
                    f"'tcp:{number}:interface=127.0.0.1': "
                )
                + r"\[Errno \d+\] Address already in use$",
                lines[0],
            ),
            lines[0],
        )

    @inlineCallbacks
    def test_checkBindsNothing(self) -> Any:
        """
        C{--check} on a good site file prints what would listen and each
        backend's servers and exits 0, binding nothing: it succeeds even
        while another process holds the frontend's port (a real start
        would fail).
        """
        from twisted.internet import reactor

        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        path = writeSite(self, GOOD.format(port=number))
        out, err, code = yield self.twistd("-n", "--pidfile=", "lbkit", "--check", "--config", path)
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(
            out.decode(),
            f"{path}: OK (1 listeners)\n"
            f"  tcp frontend front on tcp:{number}:interface=127.0.0.1 -> web\n"
            "  backend web (RoundRobin): web1 127.0.0.1:9001\n",
        )

    @inlineCallbacks
    def test_checkBadSite(self) -> Any:
        """C{--check} on a bad site file exits 1 with the usual one line."""
        path = writeSite(self, UNKNOWN_NAME)
        out, err, code = yield self.twistd("-n", "--pidfile=", "lbkit", "--check", "--config", path)
        self.assertEqual((code, out), (1, b""))
        self.assertEqual(
            err.decode(),
            f"lbkit: {path}:3: NameError: name 'tcp' is not defined "
            "(missing import? add: from lbkit import tcp)\n",
        )

    @inlineCallbacks
    def test_help(self) -> Any:
        """C{twistd lbkit --help} explains C{--config}."""
        out, err, code = yield self.twistd("lbkit", "--help")
        self.assertEqual(code, 0, err)
        text = out.decode()
        self.assertIn("--config=", text)
        self.assertIn("site file", text)
        self.assertIn("Usage: twistd [options] lbkit --config site.py", text)


class ServiceTests(SynchronousTestCase):
    """
    The service twistd runs: under C{-n}, a port that cannot be listened on
    ends start-up with one line.
    """

    def options(self, parent: Any = None) -> tap.Options:
        path = writeSite(self, GOOD.format(port=18481))
        options = tap.Options()
        options.parseOptions(["--config", path])
        options.parent = parent
        return options

    def test_foregroundExits(self) -> None:
        """In the foreground, L{ListenFailed} becomes a one-line SystemExit."""
        options = self.options({"nodaemon": True})
        service = tap.makeService(options)
        service.reactor = FakeReactor(taken=(18481,))  # type: ignore[attr-defined]
        e = self.assertRaises(SystemExit, service.privilegedStartService)
        self.assertEqual(
            e.code,
            f"lbkit: {options['config']}:3: frontend front cannot listen on "
            "'tcp:18481:interface=127.0.0.1': [Errno 98] Address already in use",
        )

    def test_daemonRaises(self) -> None:
        """
        A daemonizing twistd gets L{ListenFailed} itself, which it reports
        to its waiting parent process.
        """
        service = tap.makeService(self.options({"nodaemon": False}))
        service.reactor = FakeReactor(taken=(18481,))  # type: ignore[attr-defined]
        self.assertRaises(ListenFailed, service.privilegedStartService)
