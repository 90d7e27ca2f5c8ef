"""
The remaining examples, each started as a user would (under twistd) and
asked one real question with curl.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.test_examples import EXAMPLES, curl, needCurl, startProcess, stopCleanly, twistd


class MoreExamplesTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def startExample(self, example: str, labels: tuple[str, ...]) -> Any:
        needCurl()
        # a short scratch working directory: examples may write files (access
        # logs) and UNIX sockets, whose paths must stay under ~100 bytes
        cwd = tempfile.mkdtemp(prefix="lbkit-ex-")
        self.addCleanup(shutil.rmtree, cwd, True)
        watcher, process = startProcess(self, twistd("lbkit", "--config", os.path.join(EXAMPLES, example)), cwd)
        for label in labels:
            yield watcher.waitFor(f"{label} listening on")
        return watcher, process

    @inlineCallbacks
    def test_customBalancer(self) -> Any:
        """examples/custom_balancer.py serves through its own balancer."""
        watcher, process = yield self.startExample("custom_balancer.py", ("frontend custom", "demo server web1"))
        answer = yield curl("http://127.0.0.1:8080/")
        self.assertIn(answer.strip(), ("web1", "web2"))
        yield stopCleanly(self, watcher, process)

    @inlineCallbacks
    def test_health(self) -> Any:
        """examples/health.py balances over health-checked servers."""
        watcher, process = yield self.startExample("health.py", ("frontend health-demo", "demo server web1"))
        answers = set()
        for _ in range(4):
            answers.add((yield curl("http://127.0.0.1:8081/")).strip())
        self.assertTrue(answers <= {"web1", "web2", "web3"} and answers, answers)
        yield stopCleanly(self, watcher, process)

    @inlineCallbacks
    def test_stats(self) -> Any:
        """examples/stats.py: traffic through :8090 shows up in /stats.json on :8404."""
        watcher, process = yield self.startExample("stats.py", ("frontend web-in", "stats page", "demo server web1"))
        yield curl("http://127.0.0.1:8090/")
        stats = json.loads((yield curl("http://127.0.0.1:8404/stats.json")))
        servers = [s["name"] for b in stats["backends"] for s in b["servers"]]
        self.assertEqual(sorted(servers), ["web1", "web2"])
        yield stopCleanly(self, watcher, process)

    @inlineCallbacks
    def test_operations(self) -> Any:
        """examples/operations.py serves http on :8084."""
        watcher, process = yield self.startExample("operations.py", ("frontend ops", "demo server web1"))
        answer = yield curl("http://127.0.0.1:8084/")
        self.assertIn(answer.strip(), ("web1", "web2"))
        yield stopCleanly(self, watcher, process)
        self.assertFalse(os.path.exists(os.path.join(os.path.dirname(EXAMPLES), "access.log")))

    @inlineCallbacks
    def test_workers(self) -> Any:
        """
        examples/workers.py under --workers 2: two worker processes answer
        on :8086, and the supervisor's stats page on :8406 lists both.
        """
        needCurl()
        cwd = tempfile.mkdtemp(prefix="lbkit-ex-")
        self.addCleanup(shutil.rmtree, cwd, True)
        argv = twistd("lbkit", "--config", os.path.join(EXAMPLES, "workers.py"), "--workers", "2")
        watcher, process = startProcess(self, argv, cwd)
        yield watcher.waitFor("worker 0 (pid")
        yield watcher.waitFor("worker 1 (pid")
        yield watcher.waitFor(") accepting connections")
        answers = set()
        for _ in range(4):
            answers.add((yield curl("http://127.0.0.1:8086/")).strip())
        self.assertTrue(answers and answers <= {"web1", "web2"}, answers)
        stats = json.loads((yield curl("http://127.0.0.1:8406/stats.json")))
        self.assertEqual(len(stats["workers"]), 2)
        yield stopCleanly(self, watcher, process)


class TLSExampleTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_tlsSNI(self) -> Any:
        """examples/tls_sni.py: https by SNI on :8443, and http on :8080 re-encrypted to it."""
        from twisted.internet import reactor
        from twisted.internet.utils import getProcessOutputAndValue

        from tests.test_tls_pki import makePKI

        curlPath = needCurl()
        pki = makePKI(self)
        for name in ("default", "a.example", "b.example"):
            pki.issue(f"{name}.pem", name)
        self.patch(os, "environ", dict(os.environ, LBKIT_TLS_DIR=pki.directory))
        cwd = tempfile.mkdtemp(prefix="lbkit-ex-")
        self.addCleanup(shutil.rmtree, cwd, True)
        watcher, process = startProcess(
            self, twistd("lbkit", "--config", os.path.join(EXAMPLES, "tls_sni.py")), cwd
        )
        for label in ("frontend https", "frontend reencrypt", "demo server app2"):
            yield watcher.waitFor(f"{label} listening on")
        out, err, code = yield getProcessOutputAndValue(
            curlPath,
            ["-s", "-S", "--noproxy", "*", "--max-time", "10", "--http1.1", "--cacert", pki.caFile,
             "--resolve", "a.example:8443:127.0.0.1", "https://a.example:8443/"],
            env=os.environ.copy(),
            reactor=reactor,
        )
        self.assertEqual(code, 0, err)
        self.assertIn(out.decode().strip(), ("app1", "app2"))
        answer = yield curl("http://127.0.0.1:8080/")
        self.assertIn(answer.strip(), ("app1", "app2"))
        yield stopCleanly(self, watcher, process)


class TestingExampleTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_testingPlugins(self) -> Any:
        """examples/testing_plugins.py passes when run with trial, as a user would run it."""
        import sys

        from twisted.internet import reactor
        from twisted.internet.utils import getProcessOutputAndValue

        cwd = tempfile.mkdtemp(prefix="lbkit-ex-")
        self.addCleanup(shutil.rmtree, cwd, True)
        repo = os.path.dirname(EXAMPLES)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            ["-m", "twisted.trial", os.path.join(EXAMPLES, "testing_plugins.py")],
            env=env,
            path=cwd,
            reactor=reactor,
        )
        text = out.decode() + err.decode()
        self.assertEqual(code, 0, text)
        self.assertIn("PASSED (successes=8)", text)
