"""
Tests for L{lbkit._logline} (lines formatted straight to bytes) and
L{lbkit._accesslog} (buffered destinations: file, standard output,
syslog over UDP and UNIX datagram sockets), with real files and sockets
and flush timers driven by a L{Clock}.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from lbkit import _logline
from lbkit._accesslog import AccessLogSink, FileWriter, LineWriter, StdoutWriter, jsonLine
from lbkit._logline import formatHTTPLine, formatTCPLine, httpDate, httpFields, tcpDate, tcpFields
from lbkit._syslog import SyslogWriter
from lbkit.http import HTTP_LOG_FORMAT
from lbkit.logs import AccessLog, AccessLogDispatcher
from lbkit.tcp import TCP_LOG_FORMAT
from tests.test_logs import HTTP_FIELDS, TCP_FIELDS

FAST = settings(max_examples=200, deadline=None)
#: The fields of each line, in the order of the documented formats.
HTTP_NAMES = re.findall(r"{(\w+)}", HTTP_LOG_FORMAT)
TCP_NAMES = re.findall(r"{(\w+)}", TCP_LOG_FORMAT)

names = st.text(min_size=1, max_size=20)
numbers = st.integers(min_value=-1, max_value=10**12)
when = st.floats(min_value=0, max_value=4e9, allow_nan=False)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def received(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on C{sock}."""
    got = []
    sock.setblocking(False)
    while True:
        try:
            got.append(sock.recv(65536))
        except BlockingIOError:
            return got


class FormatTests(SynchronousTestCase):
    """The byte formatters give what the documented formats give."""

    @FAST
    @given(
        client=names, date=names, frontend=names, backend=names, server=names,
        TR=numbers, Tw=numbers, Tc=numbers, Tr=numbers, Ta=numbers, status=numbers, sent=numbers,
        termination=st.sampled_from(["--", "CD", "sH", "PR"]), retries=numbers, request=st.binary(max_size=60),
    )
    def test_httpLine(self, sent: int, request: bytes, **fields: Any) -> None:
        """An http line is byte for byte C{HTTP_LOG_FORMAT} of the same fields, encoded as UTF-8."""
        fields.update(bytes=sent, request=request.decode("latin-1"))
        expected = HTTP_LOG_FORMAT.format(**fields).encode("utf-8")
        self.assertEqual(formatHTTPLine(**dict(fields, request=request)), expected)
        self.assertEqual(formatHTTPLine(**fields), expected)
        raw = dict(fields, request=request)
        values = tuple(raw[name] for name in HTTP_NAMES)
        self.assertEqual(formatHTTPLine(*values), expected)
        self.assertEqual(httpFields(*values), fields)

    @FAST
    @given(
        client=names, date=names, frontend=names, backend=names, server=names,
        Tw=numbers, Tc=numbers, Tt=numbers, bytesIn=numbers, bytesOut=numbers,
        termination=st.sampled_from(["--", "CD", "sQ", "KD"]), retries=numbers,
    )
    def test_tcpLine(self, **fields: Any) -> None:
        """A tcp line is byte for byte C{TCP_LOG_FORMAT} of the same fields, encoded as UTF-8."""
        self.assertEqual(formatTCPLine(**fields), TCP_LOG_FORMAT.format(**fields).encode("utf-8"))
        values = tuple(fields[name] for name in TCP_NAMES)
        self.assertEqual(formatTCPLine(*values), formatTCPLine(**fields))
        self.assertEqual(tcpFields(*values), fields)

    def test_documentedExamples(self) -> None:
        """The fields of the documented examples give the documented lines."""
        self.assertEqual(
            formatTCPLine(**TCP_FIELDS),
            b"127.0.0.1:40000 [01/Jan/2026:00:00:00.000] front web/web1 0/1/25 10 20 -- 0",
        )
        self.assertEqual(
            formatHTTPLine(**HTTP_FIELDS),
            b'127.0.0.1:40000 [01/Jan/2026:00:00:00] front web/web1 0/0/1/3/5 200 120 -- 0 "GET / HTTP/1.1"',
        )

    @FAST
    @given(st.lists(when, min_size=1, max_size=20))
    def test_dates(self, times: list[float]) -> None:
        """Dates match C{strftime} of local time (tcp: with the milliseconds), in any order of times."""
        for t in times:
            self.assertEqual(httpDate(t), time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(t)))
            self.assertEqual(
                tcpDate(t),
                time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}",
            )

    def test_dateOncePerSecond(self) -> None:
        """Within one second, the date text is computed once, not per line."""
        calls: list[str] = []
        real = time.strftime

        def counting(format: str, t: Any) -> str:
            calls.append(format)
            return real(format, t)

        self.patch(_logline.time, "strftime", counting)
        for i in range(1000):
            httpDate(1_800_000_000 + i / 1000)
            tcpDate(1_800_000_100 + i / 1000)
        self.assertEqual(len(calls), 2)
        # Read the clock httpDate reads (time.time): strftime's own default,
        # time(NULL), is a coarse clock that can lag it across a second.
        before = real("%d/%b/%Y:%H:%M:%S", time.localtime(time.time()))
        now = httpDate()
        after = real("%d/%b/%Y:%H:%M:%S", time.localtime(time.time()))
        self.assertIn(now, (before, after))


class FileTests(SynchronousTestCase):
    """A file destination: buffered, flushed on a timer or when full, reopened after rotation."""

    def writer(self, path: str, **kwargs: Any) -> tuple[FileWriter, Clock]:
        clock = Clock()
        writer = FileWriter(path, clock=clock, **kwargs)
        self.addCleanup(writer.close)
        return writer, clock

    def test_flushedByTimer(self) -> None:
        """Lines reach the file one flush interval after the first, with one timer for all of them."""
        path = self.mktemp()
        writer, clock = self.writer(path)
        for i in range(1000):
            writer.add(b"line %d" % i)
        self.assertEqual(read(path), b"")
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0.2)
        self.assertEqual(read(path), b"".join(b"line %d\n" % i for i in range(1000)))
        self.assertEqual(clock.getDelayedCalls(), [])
        writer.add(b"again")
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_flushedWhenFull(self) -> None:
        """A buffer that passes its size is written at once, without waiting for the timer."""
        path = self.mktemp()
        writer, clock = self.writer(path, flushSize=1000)
        for _ in range(100):
            writer.add(b"x" * 20)
        written = read(path)
        self.assertGreaterEqual(len(written), 1000)
        self.assertEqual(len(written) % 21, 0)  # whole lines
        writer.close()
        self.assertEqual(read(path), (b"x" * 20 + b"\n") * 100)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_reopenAfterRename(self) -> None:
        """After a rename and a reopen, new lines go to a new file and none is lost."""
        path = self.mktemp()
        writer, clock = self.writer(path)
        writer.add(b"one")
        clock.advance(0.2)
        writer.add(b"two")  # still buffered when logrotate renames the file
        os.rename(path, path + ".1")
        self.assertEqual(writer.reopen(), f"file:{path}: reopened")
        writer.add(b"three")
        writer.close()
        self.assertEqual(read(path + ".1"), b"one\ntwo\n")
        self.assertEqual(read(path), b"three\n")
        self.assertEqual(writer.dropped, 0)

    def test_reopenFailureKeepsWriting(self) -> None:
        """A file that cannot be opened again goes on receiving lines where it was, saying why."""
        directory = self.mktemp()
        os.mkdir(directory)
        path = os.path.join(directory, "access.log")
        writer, clock = self.writer(path)
        os.rename(directory, directory + ".old")
        result = writer.reopen()
        self.assertIn("cannot open", result)
        self.assertIn("still writing", result)
        writer.add(b"kept")
        writer.close()
        self.assertEqual(read(os.path.join(directory + ".old", "access.log")), b"kept\n")

    def test_writeErrorDropsAndCounts(self) -> None:
        """Lines a full disk refuses are dropped and counted; nothing is raised."""
        writer, clock = self.writer("/dev/full")
        for _ in range(5):
            writer.add(b"lost")
        clock.advance(0.2)
        self.assertEqual((writer.dropped, writer.pending()), (5, 0))
        self.flushLoggedErrors()

    def test_noClockWritesAtOnce(self) -> None:
        """Without a clock every line is written as it comes (no timer)."""
        path = self.mktemp()
        writer = FileWriter(path)
        writer.add(b"now")
        self.assertEqual(read(path), b"now\n")
        writer.close()


class StdoutTests(SynchronousTestCase):
    """Standard output that nobody reads never blocks the reactor."""

    def test_fullPipeDropsAndCounts(self) -> None:
        """
        With stdout a pipe nobody reads, lines wait up to the buffer's bound
        and then are dropped and counted; fd 1's own flags are unchanged
        and what was written is whole lines in order.
        """
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        self.addCleanup(os.close, writeEnd)
        saved = os.dup(1)
        os.dup2(writeEnd, 1)
        try:
            clock = Clock()
            writer = StdoutWriter(clock=clock, maxBuffer=100_000)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        self.addCleanup(writer.close)
        self.assertFalse(fcntl.fcntl(writeEnd, fcntl.F_GETFL) & os.O_NONBLOCK)
        line = b"y" * 99
        total = 10_000  # 1 MB: far more than a pipe holds
        for _ in range(total):
            writer.add(line)
        clock.advance(0.2)
        clock.advance(0.2)
        self.assertGreater(writer.dropped, 0)
        self.assertLessEqual(writer.pending(), 100_000 + 100)
        os.set_blocking(readEnd, False)
        data = b""
        while True:
            try:
                chunk = os.read(readEnd, 1 << 20)
            except BlockingIOError:
                break
            data += chunk
        self.assertEqual(data.count(b"\n") + writer.dropped + (writer.pending() + 99) // 100, total)
        writer.close()  # the pipe has room again: what it held goes out
        while True:
            try:
                chunk = os.read(readEnd, 1 << 20)
            except BlockingIOError:
                break
            data += chunk
        *whole, tail = data.split(b"\n")
        self.assertEqual(set(whole), {line})
        self.assertTrue(line.startswith(tail))  # a line the full pipe cut at close is counted as dropped
        self.assertEqual(len(whole) + writer.dropped, total)


class SyslogTests(SynchronousTestCase):
    """Syslog destinations: one datagram per line, RFC 3164 or 5424, never blocking."""

    def udpReceiver(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        return sock

    def unixReceiver(self, path: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        return sock

    def writer(self, address: Any, **kwargs: Any) -> tuple[SyslogWriter, Clock]:
        clock = Clock()
        writer = SyslogWriter(address, clock=clock, **kwargs)
        self.addCleanup(writer.close)
        return writer, clock

    def test_udpRFC3164(self) -> None:
        """Over UDP, each line is one RFC 3164 datagram, sent from the buffer at the flush."""
        receiver = self.udpReceiver()
        writer, clock = self.writer(receiver.getsockname(), facility="local2")
        writer.add(b"first line")
        writer.add(b"second line")
        self.assertEqual(received(receiver), [])
        clock.advance(0.2)
        got = received(receiver)
        self.assertEqual(len(got), 2)
        for message, line in zip(got, [b"first line", b"second line"], strict=True):
            self.assertRegex(message, rb"^<150>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d lbkit\[%d\]: " % os.getpid())
            self.assertTrue(message.endswith(b": " + line))
        self.assertEqual(writer.name, f"syslog:127.0.0.1:{receiver.getsockname()[1]}")

    def test_udpRFC5424(self) -> None:
        """With RFC 5424 framing, a datagram carries version 1, an RFC 3339 time, host, tag and pid."""
        receiver = self.udpReceiver()
        writer, clock = self.writer(receiver.getsockname(), framing="rfc5424", tag="edge")
        writer.add(b"a line")
        clock.advance(0.2)
        (message,) = received(receiver)
        self.assertRegex(
            message,
            rb"^<134>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d \S+ edge %d - - a line$" % os.getpid(),
        )

    def test_udpIPv6(self) -> None:
        """A UDP syslog on an IPv6 address works, named with brackets."""
        receiver = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        try:
            receiver.bind(("::1", 0))
        except OSError:
            raise SkipTest("no IPv6 loopback") from None
        port = receiver.getsockname()[1]
        writer, clock = self.writer(("::1", port))
        writer.add(b"six")
        clock.advance(0.2)
        (message,) = received(receiver)
        self.assertTrue(message.endswith(b": six"))
        self.assertEqual(writer.name, f"syslog:[::1]:{port}")

    def test_batchSentWithoutTimer(self) -> None:
        """A batch of lines goes out at once, without waiting for the timer."""
        receiver = self.udpReceiver()
        writer, clock = self.writer(receiver.getsockname(), batch=10)
        for i in range(10):
            writer.add(b"%d" % i)
        self.assertEqual([m.rpartition(b" ")[2] for m in received(receiver)], [b"%d" % i for i in range(10)])

    def test_unixReceiverThatNeverReads(self) -> None:
        """
        A UNIX syslog socket nobody reads: the writer keeps a bounded
        buffer, drops and counts the rest, and every line is accounted
        for (received, dropped or still buffered).
        """
        path = os.path.abspath(self.mktemp())
        receiver = self.unixReceiver(path)
        writer, clock = self.writer(path, maxBuffer=50_000)
        total = 20_000
        for i in range(total):
            writer.add(b"line %06d" % i)
            if i % 1000 == 0:
                clock.advance(0.2)
        self.assertGreater(writer.dropped, 0)
        self.assertLessEqual(writer.pending(), 50_000 + 200)
        got = received(receiver)
        self.assertEqual(len(got) + writer.dropped + len(writer._frames), total)
        numbers = [int(m.rpartition(b" ")[2]) for m in got]
        self.assertEqual(numbers, sorted(numbers))

    def test_unixDaemonRestart(self) -> None:
        """When the local syslog daemon restarts on the same path, the writer reconnects and delivers."""
        path = os.path.abspath(self.mktemp())
        first = self.unixReceiver(path)
        writer, clock = self.writer(path)
        writer.add(b"before")
        clock.advance(0.2)
        self.assertEqual(len(received(first)), 1)
        first.close()
        os.unlink(path)
        second = self.unixReceiver(path)
        writer.add(b"after")
        clock.advance(0.2)
        (message,) = received(second)
        self.assertTrue(message.endswith(b": after"))
        self.assertEqual(writer.dropped, 0)

    def test_unixDaemonGone(self) -> None:
        """With no syslog daemon at all, lines are dropped and counted, and it tries again later."""
        path = os.path.abspath(self.mktemp())
        first = self.unixReceiver(path)
        writer, clock = self.writer(path)
        first.close()
        os.unlink(path)
        writer.add(b"lost")
        clock.advance(0.2)
        self.assertEqual(writer.dropped, 1)
        second = self.unixReceiver(path)
        writer.add(b"found")
        clock.advance(0.2)
        self.assertEqual(len(received(second)), 1)
        self.flushLoggedErrors()


class SinkTests(SynchronousTestCase):
    """The sink: the fast path's entry point, and its place beside the event path."""

    def test_active(self) -> None:
        """The fast path is open only when every destination is a buffered writer."""
        dispatcher = AccessLogDispatcher(Clock())
        self.addCleanup(dispatcher.close)
        sink = dispatcher.sink
        self.assertFalse(sink.active)
        dispatcher.replace([AccessLog(self.mktemp()), AccessLog(self.mktemp(), format="json")])
        self.assertTrue(sink.active)
        dispatcher.replace([AccessLog(), AccessLog(self.mktemp())])
        self.assertFalse(sink.active)
        self.assertEqual(len(sink.writers), 1)
        dispatcher.close()
        self.assertFalse(sink.active)

    def test_fieldsOnlyForJSON(self) -> None:
        """The fields are built only for JSON destinations, once for all of them."""
        clock = Clock()
        text, j1, j2 = self.mktemp(), self.mktemp(), self.mktemp()
        sink = AccessLogSink()
        self.addCleanup(sink.close)
        sink.replace([FileWriter(text, clock=clock)], True)

        def never() -> dict[str, Any]:
            raise AssertionError("fields built for a text destination")

        sink.emit(b"text only", never)
        calls: list[int] = []

        def fields() -> dict[str, Any]:
            calls.append(1)
            return dict(HTTP_FIELDS)

        sink.replace([FileWriter(text, clock=clock), FileWriter(j1, "json", clock), FileWriter(j2, "json", clock)], True)
        sink.emit(b"both", fields)
        sink.close()
        self.assertEqual(calls, [1])
        self.assertEqual(read(text), b"text only\nboth\n")
        for path in (j1, j2):
            record = json.loads(read(path))
            self.assertIsInstance(record.pop("time"), float)
            self.assertEqual(record, dict(HTTP_FIELDS, mode="http"))

    def test_eventPathBuffered(self) -> None:
        """A log event (C{factory.logAccess}) goes through the same buffered writers."""
        clock = Clock()
        path = self.mktemp()
        dispatcher = AccessLogDispatcher(clock)
        self.addCleanup(dispatcher.close)
        dispatcher.replace([AccessLog(path)])
        log = Logger(namespace="lbkit.access", observer=dispatcher)
        log.info(TCP_LOG_FORMAT, **TCP_FIELDS)
        self.assertEqual(read(path), b"")
        clock.advance(0.2)
        self.assertEqual(read(path), formatTCPLine(**TCP_FIELDS) + b"\n")

    def test_dropsSurviveReplace(self) -> None:
        """A reload that opens the same destination again keeps its drop count."""
        clock = Clock()
        dispatcher = AccessLogDispatcher(clock)
        self.addCleanup(dispatcher.close)
        dispatcher.replace([AccessLog("/dev/full")])
        dispatcher.sink.emit(b"lost")
        dispatcher.replace([AccessLog("/dev/full")])
        self.assertEqual(dispatcher.sink.stats(), [{"destination": "file:/dev/full", "format": "text", "dropped": 1, "pending": 0}])
        self.flushLoggedErrors()

    def test_jsonLineWithoutFields(self) -> None:
        """A JSON destination given no fields records the line itself."""
        self.assertEqual(json.loads(jsonLine(None, 5.0, b"x y")), {"line": "x y", "mode": "tcp", "time": 5.0})

    def test_writerBase(self) -> None:
        """The base writer leaves add, flush and pending to its subclasses."""
        writer = LineWriter("x", "text", None)
        self.assertRaises(NotImplementedError, writer.add, b"")
        self.assertRaises(NotImplementedError, writer.flush)
        self.assertIsNone(writer.reopen())
        self.assertTrue(re.match(r"<LineWriter x text>", repr(writer)))


class EventTextTests(SynchronousTestCase):
    """The event path writes what L{formatEvent} would, however the event is formatted."""

    def line(self, event: dict[str, Any]) -> bytes:
        from lbkit.logs import _lineOf

        return _lineOf(event)

    def test_sameAsFormatEvent(self) -> None:
        """Plain, attribute, conversion, call and broken formats give formatEvent's text."""
        from twisted.logger import formatEvent

        class Thing:
            name = "thing"

            def __repr__(self) -> str:
                return "<Thing>"

        events: list[dict[str, Any]] = [
            dict(TCP_FIELDS, log_format=TCP_LOG_FORMAT),
            dict(HTTP_FIELDS, log_format=HTTP_LOG_FORMAT, request="GET /caf\xe9 HTTP/1.1"),
            {"log_format": "{a.name} {a!r} {b:>5}", "a": Thing(), "b": 7},
            {"log_format": "{f()} x", "f": lambda: "called"},
            {"log_format": "{missing} x"},
            {"log_format": "no fields"},
            {"log_format": None},
            {},
        ]
        for event in events:
            self.assertEqual(self.line(event), formatEvent(event).encode("utf-8"), event)
