"""
Shared test utilities: child processes driven by the reactor, free ports,
and small real-socket peers.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ConnectionDone, ProcessDone, ProcessTerminated, UserError
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

from lbkit.tcp import Frontend, TCPFrontendProtocol, TCPProxyFactory


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listened on a moment ago: bind
    port 0, read the port, close.  (Another process could take it in
    between; use port 0 directly whenever the listener is in this process.)
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    finally:
        s.close()
    return port


def requireBinary(path: str) -> str:
    """
    Return C{path} if it is an executable, else skip the test saying which
    binary is missing.
    """
    found = path if os.access(path, os.X_OK) else shutil.which(os.path.basename(path))
    if not found:
        raise SkipTest(f"{path} is not installed")
    return found


class ProcessRunner(ProcessProtocol):
    """
    A child process: collects its output, lets a test wait for a line of
    it, and fires L{ended} with its exit code when it is gone.

    @ivar output: Everything it wrote on stdout and stderr, interleaved.
    @ivar ended: Fires with the exit code (or C{-signal}) at exit.
    """

    def __init__(self, reactor: Any, stdin: bytes | None = None) -> None:
        self.reactor = reactor
        self.output = b""
        self.stdout = b""
        self.ended: Deferred[int] = Deferred()
        self.exitCode: int | None = None
        self._stdin = stdin
        self._waiters: list[tuple[bytes, Deferred[bytes]]] = []

    def connectionMade(self) -> None:
        if self._stdin is not None:
            assert self.transport is not None
            self.transport.write(self._stdin)
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.stdout += data
        self._received(data)

    def errReceived(self, data: bytes) -> None:
        self._received(data)

    def _received(self, data: bytes) -> None:
        self.output += data
        for entry in list(self._waiters):
            needle, d = entry
            if needle in self.output:
                self._waiters.remove(entry)
                d.callback(self.output)

    def waitForOutput(self, needle: bytes, timeout: float = 10) -> Deferred[bytes]:
        """
        A L{Deferred} that fires with the output so far once C{needle}
        appears in it; it fails if the process exits first, or with
        C{TimeoutError} after C{timeout} seconds.
        """
        if needle in self.output:
            return succeed(self.output)
        if self.exitCode is not None:
            return _failed(RuntimeError(f"process exited ({self.exitCode}) before writing {needle!r}: {self.output!r}"))
        d: Deferred[bytes] = Deferred()
        self._waiters.append((needle, d))
        d.addTimeout(timeout, self.reactor)
        return d

    def processEnded(self, reason: Failure) -> None:
        if reason.check(ProcessDone):
            self.exitCode = 0
        elif reason.check(ProcessTerminated):
            value: Any = reason.value
            self.exitCode = value.exitCode if value.exitCode is not None else -(value.signal or 0)
        else:
            self.exitCode = -1
        waiters, self._waiters = self._waiters, []
        for needle, d in waiters:
            d.errback(RuntimeError(f"process exited ({self.exitCode}) before writing {needle!r}: {self.output!r}"))
        self.ended.callback(self.exitCode)

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.exitCode is None

    def pid(self) -> int:
        """The child's process id."""
        assert self.transport is not None
        pid: int = self.transport.pid  # type: ignore[attr-defined]
        return pid

    def stop(self, grace: float = 5.0) -> Deferred[int]:
        """
        Send SIGTERM, then SIGKILL after C{grace} seconds; fire when the
        process has exited.
        """
        result: Deferred[int] = Deferred()
        if not self.running:
            result.callback(self.exitCode if self.exitCode is not None else 0)
            return result
        assert self.transport is not None
        self.transport.signalProcess("TERM")
        kill = self.reactor.callLater(grace, self._kill)

        def done(code: int) -> int:
            if kill.active():
                kill.cancel()
            result.callback(code)
            return code

        self.ended.addCallback(done)
        return result

    def _kill(self) -> None:
        if self.running and self.transport is not None:
            self.transport.signalProcess("KILL")


def _failed(e: BaseException) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(e)
    return d


def spawn(
    testCase: TestCase,
    reactor: Any,
    argv: Sequence[str],
    *,
    stdin: bytes | None = None,
    path: str | None = None,
    env: dict[str, str] | None = None,
) -> ProcessRunner:
    """
    Start C{argv} as a child process; the test's cleanup stops it and waits
    for its exit.
    """
    runner = ProcessRunner(reactor, stdin)
    reactor.spawnProcess(runner, argv[0], list(argv), env=os.environ.copy() if env is None else env, path=path)
    testCase.addCleanup(runner.stop)
    return runner


def runProcess(testCase: TestCase, reactor: Any, argv: Sequence[str], *, stdin: bytes | None = None,
               timeout: float = 30) -> Deferred[ProcessRunner]:
    """
    Run C{argv} to completion; fire with its L{ProcessRunner} (see
    C{exitCode} and C{output}).  It is killed after C{timeout} seconds.
    """
    runner = spawn(testCase, reactor, argv, stdin=stdin)
    killer = reactor.callLater(timeout, runner._kill)

    def ended(code: int) -> ProcessRunner:
        if killer.active():
            killer.cancel()
        return runner

    return runner.ended.addCallback(ended)


def procRSS(pid: int) -> int:
    """The resident set size of process C{pid}, in bytes (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


# -- small real-socket peers -------------------------------------------------


class Echo(Protocol):
    """Writes back what it receives."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


@implementer(IHalfCloseableProtocol)
class ReplyAtEOF(Protocol):
    """
    Reads until the client shuts its write half, then writes
    C{reply(received)} and closes.
    """

    reply: Callable[[bytes], bytes] = staticmethod(lambda data: b"got %d bytes" % len(data))  # type: ignore[assignment]

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def readConnectionLost(self) -> None:
        assert self.transport is not None
        self.transport.write(self.reply(b"".join(self.received)))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class Collector(Protocol):
    """
    A client that writes C{toSend} on connecting (then shuts its write half
    if C{halfClose}), collects what it receives, and fires C{done} with it
    when the connection is gone.  With C{expect}, it closes once that many
    bytes arrived.
    """

    def __init__(self, toSend: bytes = b"", halfClose: bool = False, expect: int | None = None) -> None:
        self.toSend = toSend
        self.halfClose = halfClose
        self.expect = expect
        self.received: list[bytes] = []
        self.count = 0
        self.readClosed = False
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.toSend:
            self.transport.write(self.toSend)
        if self.halfClose:
            self.transport.loseWriteConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        self.count += len(data)
        if self.expect is not None and self.count >= self.expect:
            assert self.transport is not None
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        self.readClosed = True
        assert self.transport is not None
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.done.callback(b"".join(self.received))


def listen(testCase: TestCase, reactor: Any, factory: Factory) -> int:
    """
    Listen with C{factory} on 127.0.0.1, port 0; stop in cleanup.

    @return: The port number.
    """
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    testCase.addCleanup(port.stopListening)
    return int(port.getHost().port)



class TrackingFactory(Factory):
    """
    A server factory that remembers, for each connection it built, a
    L{Deferred} that fires once that connection is gone.
    """

    def __init__(self, protocol: Callable[[], Protocol]) -> None:
        self.protocolFactory = protocol
        self.lost: list[Deferred[None]] = []
        self.built: list[Protocol] = []

    def buildProtocol(self, addr: Any) -> Protocol:
        p = self.protocolFactory()
        p.factory = self
        d: Deferred[None] = Deferred()
        original = p.connectionLost

        def connectionLost(reason: Failure) -> None:
            original(reason)
            d.callback(None)

        p.connectionLost = connectionLost  # type: ignore[method-assign,assignment]
        self.lost.append(d)
        self.built.append(p)
        return p

    def allLost(self) -> Deferred[Any]:
        """Fires once every connection built so far is gone."""
        return gatherResults(list(self.lost))


_DONE = Failure(ConnectionDone())


class TrackingFrontendProtocol(TCPFrontendProtocol):
    """Fires C{allGone} once both of its connections are gone."""

    def __init__(self) -> None:
        TCPFrontendProtocol.__init__(self)
        self.clientClosed: Deferred[None] = Deferred()
        self.serverClosed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = _DONE) -> None:
        TCPFrontendProtocol.connectionLost(self, reason)
        self.clientClosed.callback(None)

    def serverLost(self, reason: Failure) -> None:
        TCPFrontendProtocol.serverLost(self, reason)
        self.serverClosed.callback(None)

    def allGone(self) -> Deferred[Any]:
        """Fires once the client connection, and the server one if any, are gone."""
        waits = [self.clientClosed] + ([self.serverClosed] if self.peer is not None else [])
        return gatherResults(waits)


class TrackingProxyFactory(TCPProxyFactory):
    """Remembers every frontend protocol it built."""

    protocol = TrackingFrontendProtocol

    def __init__(self, frontend: Frontend, reactor: Any) -> None:
        TCPProxyFactory.__init__(self, frontend, reactor)
        self.built: list[TrackingFrontendProtocol] = []

    def buildProtocol(self, addr: Any) -> Any:
        p = TCPProxyFactory.buildProtocol(self, addr)
        assert isinstance(p, TrackingFrontendProtocol)
        self.built.append(p)
        return p


def startHAProxy(testCase: TestCase, reactor: Any, config: str) -> tuple[int, ProcessRunner]:
    """
    Start /usr/sbin/haproxy with C{config} (skip the test if it is not
    installed); the test's cleanup stops it.

    C{config} is a whole configuration file in which the frontend listens
    with C{bind {bind}}: that becomes a socket on 127.0.0.1, port 0, made
    here and handed to HAProxy as file descriptor 3, so connections made as
    soon as this returns wait in its backlog until HAProxy accepts them.

    @return: The port HAProxy listens on, and its process.
    """
    ports, runner = startHAProxyListening(testCase, reactor, config, 1)
    return ports[0], runner


def startHAProxyListening(
    testCase: TestCase, reactor: Any, config: str, count: int
) -> tuple[list[int], ProcessRunner]:
    """
    L{startHAProxy} with C{count} listening sockets: C{{bind}} in C{config}
    is the first, C{{bind1}}, C{{bind2}} ... the others (file descriptors
    3, 4, 5 ...).

    @return: The ports, in that order, and HAProxy's process.
    """
    haproxy = requireBinary("/usr/sbin/haproxy")
    path = testCase.mktemp() + ".cfg"
    listeners = []
    try:
        for i in range(count):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listeners.append(listener)
            listener.bind(("127.0.0.1", 0))
            listener.listen(64)
            config = config.replace("{bind%s}" % (i or ""), f"fd@{3 + i}")
        ports: list[int] = [s.getsockname()[1] for s in listeners]
        with open(path, "w") as f:
            f.write(config)
        runner = ProcessRunner(reactor)
        childFDs: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        childFDs.update({3 + i: s.fileno() for i, s in enumerate(listeners)})
        reactor.spawnProcess(runner, haproxy, [haproxy, "-db", "-f", path], env=os.environ.copy(), childFDs=childFDs)
    finally:
        for listener in listeners:
            listener.close()
    testCase.addCleanup(runner.stop)
    return ports, runner


# -- fuzz properties (tests/test_fuzz_*.py) ---------------------------------------

#: Examples per fuzz property; LBKIT_FUZZ_EXAMPLES=5000 runs them longer.
FUZZ_EXAMPLES = int(os.environ.get("LBKIT_FUZZ_EXAMPLES", "75"))


def fuzzSettings(examples: int = FUZZ_EXAMPLES) -> Any:
    """
    Hypothesis settings for the fuzz properties: bounded, deterministic
    (the same examples on every run, no example database), no deadline.
    """
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def mutated(base: Any, pieces: Sequence[bytes]) -> Any:
    """
    A strategy: C{base}'s bytes after one to four insertions (of one of
    C{pieces}), deletions, replacements and copies of a few bytes.
    """
    from hypothesis import strategies as st

    @st.composite
    def strategy(draw: Any) -> bytes:
        data = bytearray(draw(base))
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(["insert", "delete", "replace", "copy"]))
            i = draw(st.integers(0, len(data)))
            j = min(len(data), i + draw(st.integers(1, 6)))
            if op == "insert":
                data[i:i] = draw(st.sampled_from(pieces))
            elif op == "delete":
                del data[i:j]
            elif op == "replace":
                data[i:j] = draw(st.sampled_from(pieces))
            else:
                data[i:i] = data[i:j]
        return bytes(data)

    return strategy()


def splitAt(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """C{data} cut at the given offsets (each taken modulo C{len(data) + 1})."""
    points = sorted({0, len(data)} | {c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)] or [b""]


def strictProperty(strategy: Any, check: str, doc: str, *examples: Any, allow: Any = None) -> Callable[..., None]:
    """
    A test of a parser against the reference grammar: the property method
    C{check}, called with each value and C{allow} (by default
    L{tests.grammar.TODAY}), on C{examples} first, then on values drawn from
    C{strategy}.  C{doc} is its docstring.
    """
    from hypothesis import example, given

    from tests.grammar import TODAY

    @fuzzSettings(min(FUZZ_EXAMPLES, 25))
    @given(strategy)
    def test(self: Any, value: Any) -> None:
        getattr(self, check)(value, TODAY if allow is None else allow)

    for e in examples:
        test = example(e)(test)
    test.__doc__ = doc
    return test


def strictTodo(strategy: Any, check: str, leniency: str, reason: str, *examples: Any) -> Callable[..., None]:
    """
    A C{todo} test for one leniency a parser has today (a name in
    L{tests.grammar.LENIENCIES}): L{strictProperty} with the reference
    grammar's C{allow} set minus C{leniency}, with C{examples} that show it,
    so it fails while the leniency is there.  Were the parser made stricter,
    the test would pass and trial report an unexpected success: then remove
    the C{todo} and the leniency (a L{strictProperty} guards the fix).
    """
    from tests.grammar import LENIENCIES, TODAY

    test = strictProperty(strategy, check, f"Refuses {LENIENCIES[leniency]}.", *examples, allow=TODAY - {leniency})
    test.todo = reason  # type: ignore[attr-defined]
    return test


class StopFailsConnector:
    """A connector whose stopConnecting fails the attempt at once, as Twisted's does."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def stopConnecting(self) -> None:
        self.factory.clientConnectionFailed(self, Failure(UserError()))


class StopFailsReactor(MemoryReactorClock):
    """A MemoryReactorClock whose TCP connectors fail the attempt when stopped (as Twisted's do)."""

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30, bindAddress: Any = None) -> Any:
        MemoryReactorClock.connectTCP(self, host, port, factory, timeout, bindAddress)
        return StopFailsConnector(factory)
