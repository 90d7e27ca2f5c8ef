"""
Tests for L{lbkit.config}: a bad site file becomes one L{ConfigError} whose
message is C{"<path>:<line>: <what is wrong>"}.
"""

from __future__ import annotations

import os
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server, tcp
from lbkit.config import Site, checkListen, loadSite
from lbkit.demo import HelloServer
from lbkit.error import ConfigError

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")

HEAD = """\
from lbkit import Backend, Server, tcp
from lbkit.demo import HelloServer
web = Backend("web", servers=[Server("web1", "127.0.0.1:9001")])
"""


class LoadSiteTests(SynchronousTestCase):
    """
    L{loadSite} runs a site file and reports every mistake as one line.
    """

    def write(self, source: str) -> str:
        """Write C{source} (dedented) to C{site.py} in a new directory."""
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "site.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent(source))
        return path

    def error(self, source: str) -> tuple[str, str]:
        """Load C{source}; return its path and the error message."""
        path = self.write(source)
        e = self.assertRaises(ConfigError, loadSite, path)
        message = str(e)
        self.assertNotIn("\n", message)
        self.assertNotIn("Traceback", message)
        return path, message

    def test_good(self) -> None:
        """A correct site file gives its C{listen} list and namespace."""
        path = self.write(HEAD + 'listen = [tcp.Frontend("tcp:8000:interface=127.0.0.1", backend=web)]\n')
        site = loadSite(path)
        self.assertIsInstance(site, Site)
        self.assertEqual(site.path, path)
        self.assertEqual([f.endpoint for f in site.listen], ["tcp:8000:interface=127.0.0.1"])
        self.assertIs(site.listen[0].backend, site.namespace["web"])

    def test_demoExample(self) -> None:
        """examples/demo.py loads: an http frontend, the stats page and three demo servers."""
        site = loadSite(os.path.join(EXAMPLES, "demo.py"))
        self.assertEqual(
            [item.endpoint for item in site.listen],
            ["tcp:8080:interface=127.0.0.1", "tcp:8404:interface=127.0.0.1"]
            + [f"tcp:900{i}:interface=127.0.0.1" for i in (1, 2, 3)],
        )

    def test_loggingExample(self) -> None:
        """examples/logging_subclass.py loads, with its own factory class."""
        site = loadSite(os.path.join(EXAMPLES, "logging_subclass.py"))
        self.assertIs(site.listen[0].factory, site.namespace["LoggingFactory"])

    def test_missingFile(self) -> None:
        """A file that cannot be read is named, with the reason."""
        path = os.path.join(self.mktemp(), "nope.py")
        e = self.assertRaises(ConfigError, loadSite, path)
        self.assertEqual(str(e), f"{path}: cannot read the site file: No such file or directory")

    def test_syntaxError(self) -> None:
        """A syntax error names the line and Python's description."""
        path, message = self.error(HEAD + "listen = [\n    tcp.Frontend(\n")
        self.assertEqual(message, f"{path}:5: syntax error: '(' was never closed")

    def test_syntaxErrorInvalid(self) -> None:
        """Invalid syntax names the line it is on."""
        path, message = self.error(HEAD + "listen = [tcp.Frontend('tcp:8000' backend=web)]\n")
        self.assertTrue(message.startswith(f"{path}:4: syntax error: "), message)

    def test_indentationError(self) -> None:
        """An indentation error says so."""
        path, message = self.error(HEAD + "  listen = []\n")
        self.assertEqual(message, f"{path}:4: indentation error: unexpected indent")

    def test_unknownName(self) -> None:
        """
        An unknown name is a NameError on its line; a missing lbkit import
        gets a hint.
        """
        path, message = self.error(
            """\
            from lbkit import Backend, Server
            web = Backend("web", servers=[Server("web1", "127.0.0.1:9001")])
            listen = [tcp.Frontend("tcp:8000", backend=web)]
            """
        )
        self.assertEqual(
            message,
            f"{path}:3: NameError: name 'tcp' is not defined "
            "(missing import? add: from lbkit import tcp)",
        )

    def test_unknownNameHintsBalance(self) -> None:
        """A missing import of a balancer gets its module in the hint."""
        path, message = self.error(HEAD + "x = RoundRobin()\n")
        self.assertEqual(
            message,
            f"{path}:4: NameError: name 'RoundRobin' is not defined "
            "(missing import? add: from lbkit.balance import RoundRobin)",
        )

    def test_misspeltName(self) -> None:
        """A misspelt name gets the closest defined name as a hint."""
        path, message = self.error(HEAD + 'x = Sever("a", "127.0.0.1:1")\n')
        self.assertEqual(
            message, f"{path}:4: NameError: name 'Sever' is not defined (did you mean 'Server'?)"
        )

    def test_errorInFunction(self) -> None:
        """An error inside a function of the site file names the line that raised."""
        path, message = self.error(
            """\
            from lbkit import Server
            def make(n):
                return Server(n, "nowhere")
            servers = [make("a")]
            """
        )
        self.assertEqual(
            message,
            f"{path}:3: cannot parse server address 'nowhere': expected 'host:port'",
        )

    def test_badServerAddress(self) -> None:
        """A server address that cannot parse names the line and the address."""
        path, message = self.error(
            """\
            from lbkit import Backend, Server, tcp
            web = Backend("web", servers=[
                Server("web1", "127.0.0.1:9001"),
                Server("web2", "127.0.0.1:99999"),
            ])
            listen = [tcp.Frontend("tcp:8000", backend=web)]
            """
        )
        self.assertEqual(
            message,
            f"{path}:4: cannot parse server address '127.0.0.1:99999': "
            "port '99999' is not a number from 1 to 65535",
        )

    def test_otherException(self) -> None:
        """Any other exception is shown as its type and message on its line."""
        path, message = self.error(HEAD + "x = 1 / 0\n")
        self.assertEqual(message, f"{path}:4: ZeroDivisionError: division by zero")

    def test_twoFrontendsOnOnePort(self) -> None:
        """Two frontends on one port: the second is named, with the first's line."""
        path, message = self.error(
            HEAD
            + textwrap.dedent(
                """\
                listen = [
                    tcp.Frontend("tcp:8000:interface=127.0.0.1", backend=web),
                    tcp.Frontend("tcp:8000:interface=127.0.0.1", backend=web),
                ]
                """
            )
        )
        self.assertEqual(
            message,
            f"{path}:6: two listeners on port 8000: 'tcp:8000:interface=127.0.0.1' and "
            f"'tcp:8000:interface=127.0.0.1' ({path}:5)",
        )

    def test_wildcardClashes(self) -> None:
        """A frontend on every interface clashes with one on a single interface."""
        path, message = self.error(
            HEAD
            + 'a = tcp.Frontend("tcp:8000:interface=127.0.0.1", backend=web)\n'
            + 'b = HelloServer("x", "tcp:8000")\n'
            + "listen = [a, b]\n"
        )
        self.assertEqual(
            message,
            f"{path}:5: two listeners on port 8000: 'tcp:8000' and "
            f"'tcp:8000:interface=127.0.0.1' ({path}:4)",
        )

    def test_samePortOtherInterface(self) -> None:
        """One port on two different interfaces is allowed."""
        path = self.write(
            HEAD
            + 'listen = [tcp.Frontend("tcp:8000:interface=127.0.0.1", backend=web),\n'
            + '          tcp.Frontend("tcp:8000:interface=127.0.0.2", backend=web)]\n'
        )
        self.assertEqual(len(loadSite(path).listen), 2)

    def test_noListen(self) -> None:
        """A file without C{listen} says so, at its last line."""
        path, message = self.error(HEAD)
        self.assertEqual(
            message,
            f"{path}:3: no frontends: the site file never defines `listen`, "
            "the list of frontends to start",
        )

    def test_emptyFile(self) -> None:
        """An empty file has no frontends."""
        path, message = self.error("")
        self.assertTrue(message.startswith(f"{path}:1: no frontends: "), message)

    def test_emptyListen(self) -> None:
        """An empty C{listen} is named at its line."""
        path, message = self.error(HEAD + "listen = []\n")
        self.assertEqual(message, f"{path}:4: no frontends: `listen` is empty")

    def test_onlyDemoServers(self) -> None:
        """A C{listen} with demo servers and no frontend has no frontends."""
        path, message = self.error(
            HEAD + 'listen = [HelloServer("web1", "tcp:9001:interface=127.0.0.1")]\n'
        )
        self.assertEqual(
            message,
            f"{path}:4: no frontends: `listen` has no frontend, only "
            "<demo.HelloServer web1 tcp:9001:interface=127.0.0.1>; add a tcp.Frontend or http.Frontend",
        )

    def test_notAFrontend(self) -> None:
        """Something that is not a frontend in C{listen} is named at its own line."""
        path, message = self.error(
            HEAD
            + textwrap.dedent(
                """\
                listen = [
                    tcp.Frontend("tcp:8000", backend=web),
                    web,
                ]
                """
            )
        )
        self.assertEqual(
            message,
            f"{path}:6: listen[1] is <Backend web 1 servers>, not a frontend: `listen` takes "
            "frontends (tcp.Frontend, http.Frontend), stats pages and demo servers "
            "(a Backend is reached through a frontend's backend=)",
        )

    def test_notAFrontendAppended(self) -> None:
        """Without a literal list, the line that last changed C{listen} is named."""
        path, message = self.error(
            HEAD
            + 'listen = [tcp.Frontend("tcp:8000", backend=web)]\n'
            + 'listen.append("tcp:8001")\n'
        )
        self.assertEqual(
            message,
            f"{path}:5: listen[1] is 'tcp:8001', not a frontend: `listen` takes "
            "frontends (tcp.Frontend, http.Frontend), stats pages and demo servers",
        )

    def test_listenNotAList(self) -> None:
        """A single frontend instead of a list gets a hint."""
        path, message = self.error(HEAD + 'listen = tcp.Frontend("tcp:8000", backend=web)\n')
        self.assertEqual(
            message,
            f"{path}:4: `listen` must be a list of frontends, not Frontend "
            "(write `listen = [frontend]`)",
        )

    def test_unknownEndpointType(self) -> None:
        """An endpoint string of an unknown type names the frontend's line."""
        path, message = self.error(HEAD + 'listen = [tcp.Frontend("tpc:8000", backend=web)]\n')
        self.assertEqual(
            message, f"{path}:4: cannot parse endpoint 'tpc:8000': Unknown endpoint type: 'tpc'"
        )

    def test_badEndpointPort(self) -> None:
        """An endpoint string with a bad port names the line that made the frontend."""
        path, message = self.error(
            HEAD
            + 'front = tcp.Frontend("tcp:http", backend=web)\n'
            + "\n"
            + "listen = [front]\n"
        )
        self.assertTrue(
            message.startswith(f"{path}:4: cannot parse endpoint 'tcp:http': "), message
        )

    def test_endpointNotAString(self) -> None:
        """A frontend endpoint that is not a string is named where it is made."""
        path, message = self.error(HEAD + "listen = [tcp.Frontend(8000, backend=web)]\n")
        self.assertEqual(
            message,
            f"{path}:4: frontend endpoint must be a Twisted endpoint string, not 8000",
        )


class CheckListenTests(SynchronousTestCase):
    """
    L{checkListen} checks a C{listen} list built anywhere, not only in a
    site file.
    """

    def setUp(self) -> None:
        self.web = Backend("web", servers=[Server("web1", "127.0.0.1:9001")])

    def test_good(self) -> None:
        """A frontend and a demo server on distinct ports pass."""
        checkListen(
            [tcp.Frontend("tcp:0", backend=self.web), HelloServer("a", "tcp:9001:interface=127.0.0.1")]
        )

    def test_portZeroTwice(self) -> None:
        """Port 0 (any free port) never clashes."""
        checkListen([tcp.Frontend("tcp:0", backend=self.web), tcp.Frontend("tcp:0", backend=self.web)])

    def test_unixClash(self) -> None:
        """Two listeners on one UNIX socket path clash."""
        front = tcp.Frontend("unix:/tmp/lb.sock", backend=self.web)
        filename, line = front.definedAt
        e = self.assertRaises(ConfigError, checkListen, [front, front], "site.py", 3)
        made = f"site.py:3 ({filename}:{line})"
        self.assertEqual(
            str(e),
            f"{made}: two listeners on UNIX socket /tmp/lb.sock: "
            f"'unix:/tmp/lb.sock' and 'unix:/tmp/lb.sock' ({made})",
        )

    def test_where(self) -> None:
        """Without a line, the message starts with the path alone."""
        e = self.assertRaises(ConfigError, checkListen, [], "<mine>")
        self.assertEqual(str(e), "<mine>: no frontends: `listen` is empty")

    def test_itemMadeElsewhere(self) -> None:
        """An item made in another file is named by where it was made."""
        front = tcp.Frontend("tpc:1", backend=self.web)
        filename, line = front.definedAt
        e = self.assertRaises(ConfigError, checkListen, [front], "site.py", 7)
        self.assertEqual(
            str(e),
            f"site.py:7 ({filename}:{line}): cannot parse endpoint 'tpc:1': "
            "Unknown endpoint type: 'tpc'",
        )


class DocsTests(SynchronousTestCase):
    """
    The complete example in docs/config.md is a working site file.
    """

    def test_completeExample(self) -> None:
        """The first Python block under "A complete example" loads."""
        docs = os.path.join(os.path.dirname(EXAMPLES), "docs", "config.md")
        with open(docs) as f:
            text = f.read()
        section = text.split("## A complete example", 1)[1]
        source = section.split("```python\n", 1)[1].split("```", 1)[0]
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "site.py")
        with open(path, "w") as f:
            f.write(source)
        site = loadSite(path)
        self.assertEqual([item.endpoint for item in site.listen][:2],
                         ["tcp:8080:interface=127.0.0.1", "tcp:6432:interface=127.0.0.1"])
        self.assertEqual(site.namespace["db"].servers[0].sendProxy, 2)
