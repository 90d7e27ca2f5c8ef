"""
examples/custom_persistence.py, run as a user would: under twistd, with
real curl requests carrying an X-Session header.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.test_examples import EXAMPLES, needCurl, startProcess, stopCleanly, twistd


@inlineCallbacks
def curlSession(session: str) -> Any:
    out, err, code = yield getProcessOutputAndValue(
        needCurl(),
        ["-s", "-S", "--noproxy", "*", "--max-time", "10", "-H", f"X-Session: {session}", "http://127.0.0.1:8083/"],
        env=os.environ.copy(),
    )
    if code != 0:
        raise AssertionError(f"curl failed ({code}): {err.decode(errors='replace')}")
    return out.decode().strip()


class CustomPersistenceExampleTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_sessionsStick(self) -> Any:
        """Requests with one X-Session value always reach the same server."""
        needCurl()
        watcher, process = startProcess(
            self, twistd("lbkit", "--config", os.path.join(EXAMPLES, "custom_persistence.py"))
        )
        for label in ("frontend sessions", "demo server app1", "demo server app2"):
            yield watcher.waitFor(f"{label} listening on")
        alice, bob = [], []
        for _ in range(4):
            alice.append((yield curlSession("alice")))
            bob.append((yield curlSession("bob")))
        self.assertEqual(len(set(alice)), 1, alice)
        self.assertEqual(len(set(bob)), 1, bob)
        # round robin gave the second session the other server
        self.assertNotEqual(alice[0], bob[0])
        yield stopCleanly(self, watcher, process)
