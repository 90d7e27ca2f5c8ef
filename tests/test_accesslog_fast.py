"""
Tests for L{lbkit.http._accessline}: the access-log line of an http
request formatted straight to bytes from its exchange is byte for byte
what the documented way gives (L{formatHTTPLine} of L{logValues}, that is
C{HTTP_LOG_FORMAT} encoded as UTF-8), and its JSON record is unchanged;
and the decision to take that way follows the frontend and the hooks.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server, _accesslog, _logline
from lbkit._accesslog import AccessLogSink, FileWriter, LineWriter, jsonLine
from lbkit._logline import formatHTTPLine, httpFields
from lbkit.balance import RoundRobin
from lbkit.http import HTTP_LOG_FORMAT, Frontend, HTTPFrontendProtocol, _accessline
from lbkit.http._accessline import LineCache, plainLog, writeLogLine
from lbkit.http._headers import logValues
from lbkit.testing import FakeEndpoint, HalfCloseableStringTransport, HTTPHarness

FAST = settings(max_examples=300, deadline=None)
NOW = 1_800_000_000.25  # what time.time() says in these tests

REQUEST = b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
#: The line of REQUEST through WiringTests' frontend.
LINE = (
    r'^198\.51\.100\.7:51000 \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\] fe be/s1 '
    r'0/\d+/\d+/\d+/\d+ 200 \d+ -- 0 "GET /a\?b=1 HTTP/1\.1"$'
)


class _Recorder(LineWriter):
    """A destination that keeps every line it is given."""

    def __init__(self, format: str = "text") -> None:
        super().__init__(f"test:{format}", format, None)
        self.lines: list[bytes] = []

    def add(self, line: bytes) -> None:
        self.lines.append(line)

    def flush(self) -> None:
        pass

    def pending(self) -> int:
        return 0

    def _countPending(self) -> int:
        return 0


def sinkOf(*writers: LineWriter) -> AccessLogSink:
    sink = AccessLogSink()
    sink.replace(list(writers), True)
    return sink


# -- exchanges made of the attributes the log reads ---------------------------

names = st.text(min_size=1, max_size=12) | st.sampled_from(["fe", "web", "s1", "<NOSRV>", "naïve", "日本"])
times = st.one_of(st.just(-1.0), st.floats(min_value=0.0, max_value=4e9, allow_nan=False))
# request-line parts: odd bytes (spaces, quotes, %, Latin-1, NUL) as well as the usual
parts = st.binary(max_size=24) | st.sampled_from([b"GET", b"/", b"/x?y=%d%s", b'"q"', b"\xe9t\xe9", b"HTTP/1.1"])
addresses = st.one_of(
    st.builds(lambda p: IPv4Address("TCP", "198.51.100.7", p), st.integers(0, 65535)),
    st.builds(lambda p: IPv6Address("TCP", "2001:db8::1", p), st.integers(0, 65535)),
    st.just(UNIXAddress(b"/run/lb.sock")),
    st.none(),
)


@st.composite
def exchanges(draw: Any) -> SimpleNamespace:
    clock = Clock()
    start = draw(times)
    clock.advance(draw(st.floats(min_value=0.0, max_value=4e9, allow_nan=False)))
    request = None
    if draw(st.booleans()):
        request = SimpleNamespace(method=draw(parts), uri=draw(parts), version=draw(parts))
    dispatch = None
    if draw(st.booleans()):
        dispatch = SimpleNamespace(chosenAt=draw(times), connectedAt=draw(times), attempts=draw(st.integers(0, 5)))
    backend = SimpleNamespace(name=draw(names)) if draw(st.booleans()) else None
    server = SimpleNamespace(name=draw(names)) if draw(st.booleans()) else None
    return SimpleNamespace(
        reactor=clock,
        client=draw(addresses),
        frontend=SimpleNamespace(name=draw(names), log=True, explain=False),
        factory=None,
        hooks=None,
        plainHooks=True,
        logCache=None,
        startedAt=start,
        waitedUntil=draw(times),
        respondedAt=draw(times),
        dispatch=dispatch,
        request=request,
        logVersion=draw(st.sampled_from([None, b"HTTP/2.0", b"HTTP/3.0"])),
        backend=backend,
        server=server,
        noServer=draw(st.sampled_from(["<NOSRV>", "<CACHE>"])),
        status=draw(st.integers(0, 999) | st.sampled_from([200.0, True])),
        bytesOut=draw(st.integers(0, 10**12)),
        termination=draw(st.sampled_from(["--", "CD", "sH", "PR", "LR", "cD", "SK", "KD"])),
    )


class SameBytesTests(SynchronousTestCase):
    """The fast line is the documented line."""

    def setUp(self) -> None:
        self.patch(_accessline, "_now", lambda: NOW)
        self.patch(_logline, "_now", lambda: NOW)
        self.patch(_accesslog, "_time", lambda: NOW)

    def documented(self, exchange: Any) -> bytes:
        """What C{HTTP_LOG_FORMAT} gives for the fields of C{exchange}, as UTF-8."""
        values = logValues(exchange)
        fields = httpFields(*values)
        self.assertEqual(formatHTTPLine(*values), HTTP_LOG_FORMAT.format(**fields).encode("utf-8"))
        return formatHTTPLine(*values)

    @FAST
    @given(exchanges())
    def test_sameBytes(self, exchange: Any) -> None:
        """
        For any exchange (odd and Latin-1 request lines, non-ASCII names,
        no server, no backend, retries, timings of -1), the line written is
        the documented one.
        """
        writer = _Recorder()
        self.assertTrue(writeLogLine(exchange, sinkOf(writer)))
        self.assertEqual(writer.lines, [self.documented(exchange)])

    @FAST
    @given(exchanges())
    def test_sameJSON(self, exchange: Any) -> None:
        """A JSON destination gets the record of the documented fields; a text one beside it, the line."""
        text, record = _Recorder(), _Recorder("json")
        self.assertTrue(writeLogLine(exchange, sinkOf(text, record)))
        values = logValues(exchange)
        self.assertEqual(text.lines, [formatHTTPLine(*values)])
        self.assertEqual(record.lines, [jsonLine(httpFields(*values), NOW)])
        self.assertEqual(json.loads(record.lines[0])["request"], httpFields(*values)["request"])

    def test_repeatedLines(self) -> None:
        """
        Lines of one exchange in a row stay right when the second, the
        names (more servers than it keeps) or the termination change (the
        parts kept in its L{LineCache}).
        """
        exchange = exchanges().example()
        exchange.client = IPv4Address("TCP", "192.0.2.9", 4000)
        writer = _Recorder()
        sink = sinkOf(writer)
        now = NOW
        self.patch(_accessline, "_now", lambda: now)
        self.patch(_logline, "_now", lambda: now)
        expected = []
        for i in range(150):
            now = NOW + i // 3
            exchange.server = SimpleNamespace(name=f"s{i % 2}" if i < 20 else f"s{i}")
            exchange.backend = None if i % 7 == 0 else SimpleNamespace(name="be" if i < 10 else "be2")
            exchange.termination = ["--", "CD", "--"][i % 3]
            exchange.frontend.name = "fe" if i < 8 else "renamed"
            writeLogLine(exchange, sink)
            expected.append(self.documented(exchange))
        self.assertEqual(writer.lines, expected)
        self.assertIsInstance(exchange.logCache, LineCache)
        self.assertEqual(exchange.logCache.client, b"192.0.2.9:4000")

    def test_documentedExample(self) -> None:
        """The line of docs/http.md's example (with timings that floats hold exactly)."""
        exchange = exchanges().example()
        exchange.__dict__.update(
            client=IPv4Address("TCP", "127.0.0.1", 40000),
            frontend=SimpleNamespace(name="front", log=True, explain=False),
            backend=SimpleNamespace(name="web"), server=SimpleNamespace(name="web1"),
            startedAt=8.0, waitedUntil=-1.0, respondedAt=8.375,
            dispatch=SimpleNamespace(chosenAt=8.0, connectedAt=8.125, attempts=1),
            request=SimpleNamespace(method=b"GET", uri=b"/", version=b"HTTP/1.1"), logVersion=None,
            status=200, bytesOut=120, termination="--", logCache=None,
        )
        exchange.reactor = Clock()
        exchange.reactor.advance(8.5)
        writer = _Recorder()
        writeLogLine(exchange, sinkOf(writer))
        date = _logline.httpDate(NOW).encode()
        self.assertEqual(writer.lines, [b'127.0.0.1:40000 [%s] front web/web1 0/0/125/250/500 200 120 -- 0 "GET / HTTP/1.1"' % date])
        self.assertEqual(writer.lines, [self.documented(exchange)])

    def test_notPlain(self) -> None:
        """
        Nothing is written, and the caller is told, when the sink is not
        active, the frontend does not log or explains, or a hook is
        overridden (C{plainHooks}); L{plainLog} says the same.
        """
        for change in [{"plainHooks": False}, {"log": False}, {"explain": True}, {"active": False}, {}]:
            exchange = exchanges().example()
            writer = _Recorder()
            sink = sinkOf(writer)
            if "plainHooks" in change:
                exchange.plainHooks = False
            if "log" in change:
                exchange.frontend.log = False
            if "explain" in change:
                exchange.frontend.explain = True
            if "active" in change:
                sink.active = False
            written = writeLogLine(exchange, sink)
            self.assertEqual(written, not change, change)
            self.assertEqual(len(writer.lines), int(written))
            if "active" not in change:
                self.assertEqual(plainLog(exchange, None), written)  # type: ignore[arg-type]


class JSONTests(SynchronousTestCase):
    """The module-level encoder writes what C{json.dumps} wrote."""

    @FAST
    @given(st.dictionaries(st.text(max_size=8), st.one_of(st.text(), st.integers(), st.floats(), st.none(), st.binary())))
    def test_sameJSON(self, record: dict[str, Any]) -> None:
        """L{jsonLine} is C{json.dumps(record, sort_keys=True, default=str)} of the completed record."""
        complete = dict(record)
        complete.setdefault("mode", "http" if "status" in record else "tcp")
        complete.setdefault("time", NOW)
        self.assertEqual(jsonLine(record, NOW), json.dumps(complete, sort_keys=True, default=str).encode())


# -- through the real frontend -------------------------------------------------


class WiringTests(SynchronousTestCase):
    """Requests through the real protocol: which way each line goes."""

    def start(self, protocol: type[HTTPFrontendProtocol] | None = None, **options: Any) -> tuple[Any, str, HTTPHarness]:
        servers = [Server("s1", FakeEndpoint(IPv4Address("TCP", "192.0.2.1", 80)))]
        frontend = Frontend("tcp:8000", [], default=Backend("be", servers, balance=RoundRobin()), name="fe", **options)
        harness = HTTPHarness(frontend)
        self.addCleanup(harness.close)
        path = self.mktemp()
        sink = harness.factory.accessSink = AccessLogSink()
        sink.replace([FileWriter(path, "text")], True)
        if protocol is not None:
            harness.factory.protocol = protocol
        self.addCleanup(sink.close)
        return harness.factory, path, harness

    def connect(self, factory: Any, harness: HTTPHarness) -> tuple[Any, HalfCloseableStringTransport]:
        protocol = factory.buildProtocol(harness.clientAddress)
        transport = HalfCloseableStringTransport(hostAddress=harness.frontendAddress, peerAddress=harness.clientAddress)
        protocol.makeConnection(transport)
        return protocol, transport

    def requests(self, factory: Any, harness: HTTPHarness, count: int) -> None:
        protocol, _ = self.connect(factory, harness)
        side = None
        for _ in range(count):
            protocol.dataReceived(REQUEST)
            if side is None:
                side = harness.connect()
            side.protocol.dataReceived(RESPONSE)

    def lines(self, path: str) -> list[str]:
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return f.read().splitlines()

    def test_plainRequests(self) -> None:
        """Plain requests: one documented line each, straight to the file."""
        factory, path, harness = self.start(log=True)
        events: list[dict[str, Any]] = []
        factory.accessLog = SimpleNamespace(info=lambda *a, **kw: events.append(kw))
        self.requests(factory, harness, 3)
        lines = self.lines(path)
        self.assertEqual(len(lines), 3)
        for line in lines:
            self.assertRegex(line, LINE)
        self.assertEqual(events, [])

    def test_logAccessOnInstance(self) -> None:
        """A C{logAccess} set on the factory before a connection gets that connection's fields."""
        factory, path, harness = self.start(log=True)
        logged: list[dict[str, Any]] = []
        factory.logAccess = logged.append
        self.requests(factory, harness, 2)
        self.assertEqual([f["request"] for f in logged], ["GET /a?b=1 HTTP/1.1"] * 2)
        self.assertEqual(self.lines(path), [])

    def test_logsPlainlyOverridden(self) -> None:
        """A C{logsPlainly} that says no sends the lines the documented way, as a log event."""
        factory, path, harness = self.start(log=True)
        events: list[dict[str, Any]] = []
        factory.accessLog = SimpleNamespace(info=lambda format, **fields: events.append(fields))
        factory.logsPlainly = lambda: False
        self.requests(factory, harness, 2)
        self.assertEqual([f["request"] for f in events], ["GET /a?b=1 HTTP/1.1"] * 2)
        self.assertEqual(self.lines(path), [])

    def test_finishedOverridden(self) -> None:
        """A protocol class overriding C{finished} gets the fields, and the line still reaches the file."""
        seen: list[dict[str, Any]] = []

        class Hooked(HTTPFrontendProtocol):
            def finished(self, fields: dict[str, Any]) -> None:
                seen.append(fields)

        factory, path, harness = self.start(Hooked, log=True)
        factory.accessLog = SimpleNamespace(info=lambda format, **fields: factory.accessSink.emit(
            HTTP_LOG_FORMAT.format(**fields).encode()
        ))
        self.requests(factory, harness, 2)
        self.assertEqual(len(seen), 2)
        self.assertEqual(len(self.lines(path)), 2)

    def test_reloadTurnsLogOff(self) -> None:
        """The frontend's C{log} is read for each request: turned off (a reload), no line."""
        factory, path, harness = self.start(log=True)
        protocol, _ = self.connect(factory, harness)
        protocol.dataReceived(REQUEST)
        side = harness.connect()
        side.protocol.dataReceived(RESPONSE)
        factory.frontend.log = False
        protocol.dataReceived(REQUEST)
        side.protocol.dataReceived(RESPONSE)
        factory.frontend.log = True
        protocol.dataReceived(REQUEST)
        side.protocol.dataReceived(RESPONSE)
        self.assertEqual(len(self.lines(path)), 2)
