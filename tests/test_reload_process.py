"""
C{twistd lbkit} as a real process: SIGHUP reloads the site file, SIGTERM
stops accepting and lets the request in flight finish before exiting.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import TestCase

from tests.helpers import freePort, spawn
from tests.test_reload import Client, reactor, startBackend, writeSite
from tests.test_shutdown import connect

TWISTD = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()",
]

SITE = """\
from lbkit import Backend, Server, http

app = Backend("app", servers=[Server("{name}", "127.0.0.1:{port}")])
listen = [http.Frontend("tcp:{front}:interface=127.0.0.1", default=app, name="web")]
grace = 20
"""


class SignalTests(TestCase):
    """Reload and graceful stop of a twistd process, driven by signals."""

    timeout = 40

    @inlineCallbacks
    def test_hupThenTerm(self) -> Any:
        """
        SIGHUP switches the backend with no restart; SIGTERM refuses new
        connections at once, answers the request in flight, then exits
        (twistd reports the signal it stopped for as its exit status).
        """
        aPort, _ = startBackend(self, "a")
        bPort, b = startBackend(self, "b")
        front = freePort()
        path = os.path.abspath(self.mktemp() + "-site.py")
        writeSite(path, SITE.format(name="a", port=aPort, front=front))
        process = spawn(self, reactor(), [*TWISTD, "-n", "--pidfile=", "lbkit", "--config", path])
        yield process.waitForOutput(f"listening on tcp:{front}".encode(), timeout=20)
        client = Client(self)
        _, body, _ = yield client.get(front)
        self.assertEqual(body, "a")

        writeSite(path, SITE.format(name="b", port=bPort, front=front))
        os.kill(process.pid(), signal.SIGHUP)
        yield process.waitForOutput(b"reloaded " + path.encode())
        yield client.fresh()
        _, body, _ = yield client.get(front)
        self.assertEqual(body, "b")

        b.hold = True
        arrived = b.whenRequested()
        inFlight = client.get(front)
        yield arrived
        os.kill(process.pid(), signal.SIGTERM)
        yield process.waitForOutput(f"stopped listening on tcp:{front}".encode())
        yield self.assertFailure(connect(front), ConnectionRefusedError)
        b.releaseAll()
        code, body, _ = yield inFlight
        self.assertEqual((code, body), (200, "b"))
        exitCode = yield process.ended
        self.assertIn(exitCode, (0, -signal.SIGTERM), process.output.decode())
        self.assertNotIn(b"Traceback", process.output)
