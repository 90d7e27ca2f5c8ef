"""
The examples in examples/ run as documented: each is started as a real
C{twistd} process, and real C{curl} requests go through it.

The examples listen on fixed ports (the demo's 8080 and 9001-9003 are
promised in the README), so these tests run them one at a time and stop
each process before the test ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")

#: Runs twistd with this interpreter, whatever the install layout.
TWISTD = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()",
]


def _reactor() -> Any:
    """The global reactor: these tests drive real processes and sockets."""
    from twisted.internet import reactor

    return reactor


class OutputWatcher(ProcessProtocol):
    """
    Collects a process's output (stdout and stderr, in arrival order) and
    fires Deferreds when a wanted text appears or the process ends.

    @ivar output: Everything received so far, decoded.
    @ivar ended: Fires with the exit code (or C{-signal}) when the process
        has ended and its pipes are closed.
    """

    def __init__(self) -> None:
        self.output = ""
        self.ended: Deferred[int] = Deferred()
        self.running = True
        self._waiting: list[tuple[str, Deferred[str]]] = []

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")
        still = []
        for text, d in self._waiting:
            if text in self.output:
                d.callback(self.output)
            else:
                still.append((text, d))
        self._waiting = still

    def waitFor(self, text: str) -> Deferred[str]:
        """
        A Deferred that fires with the output so far once C{text} has
        appeared in it, or fails if the process ends first.
        """
        d: Deferred[str] = Deferred()
        if text in self.output:
            d.callback(self.output)
        elif not self.running:
            d.errback(AssertionError(f"process ended before {text!r}:\n{self.output}"))
        else:
            self._waiting.append((text, d))
        return d

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        waiting, self._waiting = self._waiting, []
        for text, d in waiting:
            d.errback(AssertionError(f"process ended before {text!r}:\n{self.output}"))
        if reason.check(ProcessDone):
            code = 0
        else:
            error = reason.value
            assert isinstance(error, ProcessTerminated)
            code = error.exitCode if error.exitCode is not None else -(error.signal or 0)
        self.ended.callback(code)


def startProcess(
    testCase: TestCase, args: list[str], path: str = REPO, env: dict[str, str] | None = None
) -> tuple[OutputWatcher, Any]:
    """
    Start C{args} in C{path} (the repository root by default), with C{env}
    (this process's by default); the test's cleanup stops it (SIGTERM,
    then SIGKILL after 10 seconds) and waits for its end.

    @return: The L{OutputWatcher} and the process transport.
    """
    watcher = OutputWatcher()
    reactor = _reactor()
    process = reactor.spawnProcess(watcher, args[0], args, env=os.environ.copy() if env is None else env, path=path)

    def stop() -> Deferred[Any] | None:
        if not watcher.running:
            return None
        process.signalProcess("TERM")
        kill = reactor.callLater(10, lambda: watcher.running and process.signalProcess("KILL"))
        return watcher.ended.addBoth(lambda result: kill.active() and kill.cancel())

    testCase.addCleanup(stop)
    return watcher, process


def twistd(*args: str) -> list[str]:
    """The command line of C{twistd -n --pidfile= ARGS...}."""
    return [*TWISTD, "-n", "--pidfile=", *args]


@inlineCallbacks
def stopCleanly(testCase: TestCase, watcher: OutputWatcher, process: Any) -> Any:
    """
    Send SIGTERM and check that twistd shuts down in order: it ends by the
    signal (twistd re-raises it) or with status 0, after logging its
    shutdown, and logged no traceback.
    """
    process.signalProcess("TERM")
    code = yield watcher.ended
    testCase.assertIn(code, (0, -signal.SIGTERM))
    testCase.assertIn("Server Shut Down.", watcher.output)
    testCase.assertNotIn("Traceback", watcher.output)


def needCurl() -> str:
    curl = shutil.which("curl")
    if curl is None:
        raise SkipTest("curl is not installed")
    return curl


@inlineCallbacks
def curl(url: str) -> Any:
    """Fetch C{url} with the real curl; return its body as text."""
    out, err, code = yield getProcessOutputAndValue(
        needCurl(), ["-s", "-S", "--noproxy", "*", "--max-time", "10", url], env=os.environ.copy()
    )
    if code != 0:
        raise AssertionError(f"curl {url} failed ({code}): {err.decode(errors='replace')}")
    return out.decode()


class _Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(self.data)


@inlineCallbacks
def readAll(host: str, port: int) -> Any:
    """Connect, read until the server closes, and return what it sent."""
    protocol = _Collect()
    yield connectProtocol(TCP4ClientEndpoint(_reactor(), host, port), protocol)
    data = yield protocol.done
    return data.decode()


class DemoTests(TestCase):
    """
    C{twistd -n lbkit --config examples/demo.py}, as the README says.
    """

    timeout = 30

    @inlineCallbacks
    def test_roundRobin(self) -> Any:
        """Three curls through :8080 answer web1, web2, web3, in that order."""
        needCurl()
        watcher, process = startProcess(
            self, twistd("lbkit", "--config", os.path.join(EXAMPLES, "demo.py"))
        )
        for label in ("frontend demo", "demo server web1", "demo server web2", "demo server web3"):
            yield watcher.waitFor(f"{label} listening on")
        answers = []
        for _ in range(3):
            answers.append((yield curl("http://127.0.0.1:8080/")))
        self.assertEqual(answers, ["web1\n", "web2\n", "web3\n"])
        yield stopCleanly(self, watcher, process)


class EmbedTests(TestCase):
    """
    C{twistd -ny examples/embed.tac}: lbkit as one service of a user's own
    application.
    """

    timeout = 30

    @inlineCallbacks
    def test_embedded(self) -> Any:
        """
        The balancer on :8081 alternates between web1 and web2, and the
        application's own status service on :8091 sees lbkit's counters.
        """
        needCurl()
        watcher, process = startProcess(
            self, [*TWISTD, "--pidfile=", "-ny", os.path.join(EXAMPLES, "embed.tac")]
        )
        for label in ("frontend embedded", "demo server web1", "demo server web2"):
            yield watcher.waitFor(f"{label} listening on")
        yield watcher.waitFor("starting on 8091")
        answers = []
        for _ in range(3):
            answers.append((yield curl("http://127.0.0.1:8081/")))
        self.assertEqual(answers, ["web1\n", "web2\n", "web1\n"])
        status = yield readAll("127.0.0.1", 8091)
        self.assertIn("web1 127.0.0.1:9011 UP total=2", status)
        self.assertIn("web2 127.0.0.1:9012 UP total=1", status)
        yield stopCleanly(self, watcher, process)


class LoggingSubclassTests(TestCase):
    """
    C{twistd -n lbkit --config examples/logging_subclass.py}: a protocol
    subclass logs each connection's chosen server.
    """

    timeout = 30

    @inlineCallbacks
    def test_logsChosenServer(self) -> Any:
        """
        Each connection is logged as going to the server that then answers
        it.
        """
        needCurl()
        watcher, process = startProcess(
            self, twistd("lbkit", "--config", os.path.join(EXAMPLES, "logging_subclass.py"))
        )
        for label in ("frontend logging", "demo server web1", "demo server web2"):
            yield watcher.waitFor(f"{label} listening on")
        first = yield curl("http://127.0.0.1:8082/")
        second = yield curl("http://127.0.0.1:8082/")
        self.assertEqual([first, second], ["web1\n", "web2\n"])
        yield watcher.waitFor("goes to server web/web2")
        lines = [line for line in watcher.output.splitlines() if "goes to server" in line]
        self.assertEqual(len(lines), 2)
        self.assertRegex(lines[0], r"\[example#info\] connection from 127\.0\.0\.1:\d+ goes to server web/web1$")
        self.assertRegex(lines[1], r"\[example#info\] connection from 127\.0\.0\.1:\d+ goes to server web/web2$")
        yield stopCleanly(self, watcher, process)
