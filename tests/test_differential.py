"""
Differential testing against HAProxy: every entry of the request corpus
(L{tests.corpus.http1}, L{tests.corpus.http2}) goes through lbkit and
through HAProxy to a server that records the exact bytes it reads and parses
them strictly.  The test fails where lbkit forwards what HAProxy refuses,
where the server reads a different request boundary than lbkit parsed, and
where lbkit and HAProxy differ in a way the entry does not mark as deliberate
(see docs/security.md).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import ssl
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server
from lbkit.http import HTTPProxyFactory
from lbkit.tls import Certificates
from tests.corpus import H1Case, H2Case, headers
from tests.corpus.http1 import CASES as H1_CASES
from tests.corpus.http2 import CASES as H2_CASES
from tests.differential import (
    Event,
    H1Probe,
    H2Probe,
    Outcome,
    RecordingFactory,
    Seen,
    SideResult,
    StrictParser,
    compare,
    table,
)
from tests.helpers import startHAProxyListening
from tests.test_http_integration import HTTPTestCase, reactor
from tests.test_tls_pki import makePKI

_log = Logger()

HAPROXY_CONFIG = """\
global
  # lbkit's head limits: 65,536 bytes (MAX_HEAD), 100 header lines
  # (MAX_HEADERS; maxhdr counts the request line too)
  tune.bufsize 66560
  tune.maxrewrite 1024
  tune.http.maxhdr 101
defaults
  mode http
  timeout connect 2s
  timeout client 10s
  timeout server 10s
  timeout http-request 5s
  timeout http-keep-alive 10s
frontend fe
  bind {bind}
  bind {bind1} ssl crt %(pem)s alpn h2,http/1.1
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:%(port)d
"""

#: How long a client waits for an answer (an unfinished request: less).
DEADLINE = 2.0
INCOMPLETE_DEADLINE = 0.4
#: How long a proxy may take to close a server connection it gave up on.
QUIET = 0.5


class RecordingProxyFactory(HTTPProxyFactory):
    """An L{HTTPProxyFactory} that keeps the access-log fields of each request."""

    def __init__(self, *args: Any) -> None:
        HTTPProxyFactory.__init__(self, *args)
        self.logged: list[dict[str, Any]] = []

    def logAccess(self, fields: dict[str, Any]) -> None:
        self.logged.append(fields)


class _Side:
    """One proxy under test: where its clients connect, and its server's recorder."""

    def __init__(self, name: str, h1Port: int, h2Port: int, recorder: RecordingFactory,
                 factories: list[RecordingProxyFactory]) -> None:
        self.name = name
        self.h1Port = h1Port
        self.h2Port = h2Port
        self.recorder = recorder
        self.factories = factories

    def logMark(self) -> list[int]:
        return [len(f.logged) for f in self.factories]

    def loggedSince(self, marks: list[int]) -> list[tuple[bytes, bytes]]:
        """The (method, target) of each request lbkit logged as sent to a server since C{marks}."""
        sent = []
        for factory, mark in zip(self.factories, marks, strict=True):
            for fields in factory.logged[mark:]:
                if fields["server"] == "<NOSRV>" or fields["request"] == "<BADREQ>":
                    continue
                method, _, rest = fields["request"].encode("latin-1").partition(b" ")
                target = rest.rpartition(b" ")[0]
                if not target.startswith(b"/__fence/"):
                    sent.append((method, target))
        return sent


class DifferentialTests(HTTPTestCase):
    """
    The corpus, through lbkit and HAProxy side by side, to recording
    servers: lbkit never forwards what HAProxy refuses, and its server
    always reads the requests lbkit parsed.
    """

    timeout = 120

    def setUp(self) -> None:
        HTTPTestCase.setUp(self)
        pki = makePKI(self)
        pem = pki.issue("a.pem", "a.example")
        with open(pki.caFile, "rb") as f:
            self.tlsOptions = ssl.optionsForClientTLS(
                "a.example", trustRoot=ssl.Certificate.loadPEM(f.read()), acceptableProtocols=[b"h2"]
            )
        self.fences = 0
        recorders = []
        for _ in range(2):
            recorder = RecordingFactory()
            port = reactor.listenTCP(0, recorder, interface="127.0.0.1")
            self.ports.append(port)
            recorders.append((recorder, port.getHost().port))
        (hapRecorder, hapServer), (lbRecorder, lbServer) = recorders
        (hapH1, hapH2), _ = startHAProxyListening(self, reactor, HAPROXY_CONFIG % {"pem": pem, "port": hapServer}, 2)
        self.haproxy = _Side("haproxy", hapH1, hapH2, hapRecorder, [])

        def backend() -> Backend:
            return Backend("be", [Server("s1", f"127.0.0.1:{lbServer}")], timeoutServer=5.0)

        common: dict[str, Any] = dict(forwardedFor=False, timeoutHttpRequest=5.0, factory=RecordingProxyFactory)
        lbH1 = self.frontend(default=backend(), **common)
        lbH2 = self.frontend(default=backend(), tls=Certificates(default=pem), **common)
        factories = self.frontendFactories()
        self.lbkit = _Side("lbkit", lbH1, lbH2, lbRecorder, factories)
        self.addCleanup(self._closeRecorded)

    def _closeRecorded(self) -> None:
        for recorder in (self.haproxy.recorder, self.lbkit.recorder):
            for server in list(recorder.open):
                assert server.transport is not None
                server.transport.abortConnection()  # type: ignore[attr-defined]

    # -- one entry on one side -------------------------------------------------

    @inlineCallbacks
    def probe(self, side: _Side, case: Any) -> Any:
        """Send C{case} through C{side}; fire with its L{Outcome}."""
        if isinstance(case, H1Case):
            probe: Any = H1Probe(reactor, case)
            endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", side.h1Port)
        else:
            probe = H2Probe(case)
            endpoint = wrapClientTLS(self.tlsOptions, TCP4ClientEndpoint(reactor, "127.0.0.1", side.h2Port))
        yield connectProtocol(endpoint, probe)
        deadline = INCOMPLETE_DEADLINE if case.incomplete else DEADLINE
        timer = reactor.callLater(deadline, probe.finish, "deadline")
        outcome = yield probe.done
        if timer.active():
            timer.cancel()
        return outcome

    @inlineCallbacks
    def fence(self, side: _Side, h2: bool) -> Any:
        """
        A plain GET through C{side} after an entry: fires with whether it
        was answered 200 and read by the server as the request it is (not,
        say, as the rest of a body the entry left unfinished).
        """
        self.fences += 1
        target = b"/__fence/%d" % self.fences
        case: Any
        if h2:
            case = H2Case("fence", "", (headers((b":method", b"GET"), (b":path", target), (b":scheme", b"https"),
                                                 (b":authority", b"fence.example")),))
        else:
            case = H1Case("fence", "", b"GET " + target + b" HTTP/1.1\r\nHost: fence.example\r\n\r\n")
        outcome = yield self.probe(side, case)
        read = [e for e in side.recorder.events if e.kind == "request" and e.seen.target == target]
        return outcome.statuses == ["200"] and len(read) == 1

    @inlineCallbacks
    def side(self, side: _Side, case: Any) -> Any:
        """Run C{case} then a fence through C{side}; fire with its L{SideResult}."""
        mark = side.recorder.mark()
        logMarks = side.logMark()
        outcome = yield self.probe(side, case)
        fenced = yield self.fence(side, isinstance(case, H2Case))
        yield side.recorder.quiet(reactor, QUIET)
        events = [
            e for e in side.recorder.since(mark) if not (e.kind == "request" and e.seen.target.startswith(b"/__fence/"))
        ]
        logged = side.loggedSince(logMarks) if side.factories else None
        return SideResult(outcome, events, fenced, logged)

    @inlineCallbacks
    def runCorpus(self, cases: list[Any]) -> Any:
        """Every case through both proxies; fail with the table of what diverged."""
        names = [c.name for c in cases]
        self.assertEqual(len(names), len(set(names)), "corpus entry names must be unique")
        divergences = []
        for case in cases:
            haproxy, lbkit = yield gatherResults([self.side(self.haproxy, case), self.side(self.lbkit, case)])
            divergences.extend(compare(case, haproxy, lbkit))
            _log.debug("{name}: haproxy: {haproxy} | lbkit: {lbkit}", name=case.name,
                       haproxy=haproxy.short(), lbkit=lbkit.short())
        report = table(divergences)
        _log.info("differential testing, {n} entries:\n{report}", n=len(cases), report=report)
        if any(not d.allowed for d in divergences):
            self.fail(f"lbkit and HAProxy diverge ({len(cases)} entries):\n{report}")

    def test_http1(self) -> Any:
        """No HTTP/1.x corpus entry is forwarded by lbkit where HAProxy refuses it, or read by its server otherwise than lbkit parsed it."""
        return self.runCorpus(H1_CASES)

    def test_http2(self) -> Any:
        """No HTTP/2 corpus entry is forwarded by lbkit where HAProxy refuses it, or read by its server otherwise than lbkit parsed it."""
        return self.runCorpus(H2_CASES)



# -- the harness itself ----------------------------------------------------------


class StrictParserTests(SynchronousTestCase):
    """
    The recording server's parser says where each request ends, and refuses
    what a strict server would.
    """

    def test_pipelined(self) -> None:
        """Requests in one read are split where their framing says."""
        parser = StrictParser()
        seen = parser.feed(
            b"POST /1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
            b"POST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;x=1\r\nde\r\n0\r\nX-T: 1\r\n\r\n"
            b"GET /3 HTTP/1.1\r\n\r\nGET /4"
        )
        self.assertEqual([(s.target, s.body, s.complete) for s in seen],
                         [(b"/1", b"abc", True), (b"/2", b"de", True), (b"/3", b"", True)])
        cut = parser.pending()
        assert cut is not None
        self.assertEqual((cut.method, cut.raw), (b"", b"GET /4"))

    def test_bytewise(self) -> None:
        """The same requests fed one byte at a time end at the same places."""
        parser = StrictParser()
        data = b"POST /1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"
        seen = [s for i in range(len(data)) for s in parser.feed(data[i : i + 1])]
        self.assertEqual([(s.target, s.body) for s in seen], [(b"/1", b"de"), (b"/2", b"")])
        self.assertIsNone(parser.pending())

    def test_cut(self) -> None:
        """A body shorter than its Content-Length is pending, with what came of it."""
        parser = StrictParser()
        self.assertEqual(parser.feed(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nhello"), [])
        cut = parser.pending()
        assert cut is not None
        self.assertEqual((cut.method, cut.body, cut.complete), (b"POST", b"hello", False))

    def test_refused(self) -> None:
        """Ambiguous framing and malformed lines are errors, and nothing after them is read."""
        for data in [
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: 1\r\n 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nX : 1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        ]:
            parser = StrictParser()
            self.assertEqual(parser.feed(data + b"GET / HTTP/1.1\r\n\r\n"), [], data)
            self.assertIsNotNone(parser.error, data)


def _side(*events: Event, statuses: tuple[str, ...] = ("200",), ending: str = "answered",
          logged: Any = None) -> SideResult:
    return SideResult(Outcome(list(statuses), ending), list(events), True, logged)


def _request(target: bytes = b"/", body: bytes = b"", **kwargs: Any) -> Event:
    return Event("request", 0, Seen(b"GET", target, b"HTTP/1.1", [(b"Host", b"a")], body, True), **kwargs)


class CompareTests(SynchronousTestCase):
    """
    The comparison fails an entry exactly where lbkit forwards what HAProxy
    refused, desynchronises from its server, or differs unmarked.
    """

    def kinds(self, case: Any, haproxy: SideResult, lbkit: SideResult) -> list[tuple[str, bool]]:
        return [(d.kind, d.allowed) for d in compare(case, haproxy, lbkit)]

    def test_same(self) -> None:
        """The same request read from both is no divergence."""
        case = H1Case("x", "", b"")
        self.assertEqual(self.kinds(case, _side(_request()), _side(_request(), logged=[(b"GET", b"/")])), [])

    def test_forwardsRefused(self) -> None:
        """lbkit forwarding a request HAProxy refused fails."""
        case = H1Case("x", "", b"")
        self.assertEqual(
            self.kinds(case, _side(statuses=("400",)), _side(_request(), logged=[(b"GET", b"/")])),
            [("forwards-refused", False)],
        )

    def test_smuggled(self) -> None:
        """A server reading two requests where lbkit logged one is a desync."""
        case = H1Case("x", "", b"")
        lbkit = _side(_request(), _request(b"/smuggled"), logged=[(b"GET", b"/")])
        kinds = self.kinds(case, _side(_request()), lbkit)
        self.assertIn(("desync", False), kinds)
        self.assertIn(("forwards-refused", False), kinds)

    def test_waitingServer(self) -> None:
        """A request the server still waits the end of, or a complete one left unanswered, is a desync."""
        case = H2Case("x", "", ())
        waiting = Event("cut", 0, Seen(b"POST", b"/", b"HTTP/1.1", [], b"", False), closed=False)
        self.assertIn(("desync", False), self.kinds(case, _side(_request()), _side(waiting, logged=[(b"POST", b"/")])))
        given = Event("cut", 0, Seen(b"POST", b"/", b"HTTP/1.1", [], b"", False), closed=True)
        lbkit = _side(given, statuses=("-",), ending="deadline", logged=[(b"POST", b"/")])
        self.assertIn(("desync", False), self.kinds(case, _side(_request()), lbkit))

    def test_abortedIsRefused(self) -> None:
        """A request lbkit began to send, then answered 400 and cut off, counts as refused."""
        case = H1Case("x", "", b"")
        aborted = Event("cut", 0, Seen(b"POST", b"/", b"HTTP/1.1", [], b"", False), closed=True)
        lbkit = _side(aborted, statuses=("400",), logged=[(b"POST", b"/")])
        self.assertEqual(self.kinds(case, _side(statuses=("400",)), lbkit), [])

    def test_marks(self) -> None:
        """Stricter and different readings fail unless marked; a mark that no longer holds fails too."""
        stricter = (_side(_request()), _side(statuses=("400",), logged=[]))
        self.assertEqual(self.kinds(H1Case("x", "", b""), *stricter), [("lbkit-stricter", False)])
        self.assertEqual(self.kinds(H1Case("x", "", b"", expect="lbkit-stricter"), *stricter), [("lbkit-stricter", True)])
        same = (_side(_request()), _side(_request(), logged=[(b"GET", b"/")]))
        self.assertEqual(self.kinds(H1Case("x", "", b"", expect="lbkit-stricter"), *same), [("stale", False)])
        other = (_side(_request(body=b"a")), _side(_request(body=b"b"), logged=[(b"GET", b"/")]))
        self.assertEqual(self.kinds(H1Case("x", "", b""), *other), [("differs", False)])

    def test_absoluteForm(self) -> None:
        """An absolute-form target and the origin form with its Host mean the same request."""
        absolute = Event("request", 0, Seen(b"GET", b"http://A.example:80/x", b"HTTP/1.1", [], b"", True))
        origin = Event("request", 0, Seen(b"GET", b"/x", b"HTTP/1.1", [(b"Host", b"a.example")], b"", True))
        self.assertEqual(self.kinds(H1Case("x", "", b""), _side(absolute), _side(origin, logged=[(b"GET", b"/x")])), [])
