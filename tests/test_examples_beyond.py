"""
examples/beyond.py started as a user would (under twistd), asked with curl
and over its command socket (docs/beyond.md).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.test_examples import EXAMPLES, curl, needCurl, startProcess, stopCleanly, twistd


class _Answer(Protocol):
    """Sends one command line and collects the answer, up to its empty line."""

    def __init__(self, line: str) -> None:
        self.line = line
        self.data = b""
        self.done: Deferred[str] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.line.encode() + b"\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.data.endswith(b"\n\n"):
            self.transport.loseConnection()  # type: ignore[union-attr]
            self.done.callback(self.data.decode().rstrip("\n"))


class BeyondExampleTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def command(self, line: str) -> Any:
        from twisted.internet import reactor

        answer = _Answer(line)
        yield connectProtocol(UNIXClientEndpoint(reactor, os.path.join(self.cwd, "lbkit-beyond.sock")), answer)
        return (yield answer.done)

    @inlineCallbacks
    def post(self, path: str) -> Any:
        out, err, code = yield getProcessOutputAndValue(
            needCurl(), ["-s", "-S", "--noproxy", "*", "--max-time", "10", "-u", "admin:secret",
                         "-H", "X-LBKit-Admin: 1", "-X", "POST", "http://127.0.0.1:8161" + path],
            env=os.environ.copy(),
        )
        self.assertEqual(code, 0, err)
        return json.loads(out)

    @inlineCallbacks
    def test_beyond(self) -> Any:
        """Explain says where requests go (and they go there); add, swap, preview and remove live."""
        self.cwd = tempfile.mkdtemp(prefix="lbkit-ex-")
        self.addCleanup(shutil.rmtree, self.cwd, True)
        watcher, process = startProcess(self, twistd("lbkit", "--config", os.path.join(EXAMPLES, "beyond.py")), self.cwd)
        for label in ("frontend web", "stats page", "demo server a3"):
            yield watcher.waitFor(f"{label} listening on")
        for path in ("/static/logo.png", "/static/app.js", "/"):
            said = yield self.post(f"/admin/explain?frontend=web&path={path}")
            self.assertEqual((yield curl(f"http://127.0.0.1:8160{path}")).strip(), said["server"], said)
        # the access log (twistd's, here) carries each request's reasons
        yield watcher.waitFor('explain="none of 1 routes matched: default app; persistence recalled nothing: cookie: no SRV')
        lines = (yield self.command("explain web GET /static/logo.png from 10.0.0.7")).splitlines()
        self.assertEqual(lines[1], "backend: static")
        preview = yield self.command("preview static add c4 127.0.0.1:9206")
        self.assertIn("keys moving: ", preview)
        self.assertEqual((yield self.command("add server app/a3 127.0.0.1:9206")), "server a3 added (127.0.0.1:9206)")
        self.assertIn("LeastConn -> RoundRobin", (yield self.command("set balance app roundrobin")))
        answers = set()
        for _ in range(3):
            answers.add((yield curl("http://127.0.0.1:8160/")).strip())
        self.assertEqual(answers, {"a1", "a2", "a3"})
        self.assertEqual((yield self.command("del server app/a3 10")), "server a3 removed")
        servers = (yield self.command("show servers app")).splitlines()[1:]
        self.assertEqual([s.split()[0] for s in servers], ["app/a1", "app/a2"])
        yield stopCleanly(self, watcher, process)
