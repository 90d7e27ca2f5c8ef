"""
Request IDs and W3C trace context (lbkit/http/_tracing.py, docs/tracing.md):
what a server receives, what the access log shows, and, with
opentelemetry-sdk installed, the span of each request.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers

from lbkit import Backend, Server, http
from lbkit._model import ServerState
from lbkit.error import ConfigError
from lbkit.http._tracing import HTTP_TRACED_LOG_FORMAT, otelAvailable, parseTraceparent
from lbkit.logs import AccessLog
from lbkit.service import LoadBalancerService
from lbkit.testing import FakeEndpoint, HTTPHarness
from tests import test_http2
from tests.test_accesslog_wiring import readLines, startWatched
from tests.test_examples import EXAMPLES, REPO, needCurl, startProcess, stopCleanly, twistd
from tests.test_http_integration import backend
from tests.test_reload import Client, frontendPort, reactor, startBackend

try:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
except ImportError:
    TracerProvider = None  # type: ignore[assignment,misc]

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
TRACEPARENT = re.compile(rb"^traceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\r$", re.M | re.I)


def harnessFor(testCase: SynchronousTestCase, **options: Any) -> HTTPHarness:
    backend = Backend("app", [Server("web1", FakeEndpoint())])
    frontend = http.Frontend("tcp:8080", default=backend, name="fe", **options)
    harness = HTTPHarness(frontend)
    testCase.addCleanup(harness.close)
    return harness


def exchange(harness: HTTPHarness, headers: bytes = b"", response: bytes = OK) -> bytes:
    """Send one request with C{headers}; return the head the server got."""
    client = harness.request(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    server = harness.serverFor(client)
    head = server.received()
    server.transport.clear()
    server.respond(response)
    return head


def header(head: bytes, name: bytes) -> list[bytes]:
    return re.findall(rb"^" + name + rb": (.*)\r$", head, re.M | re.I)


class ParseTests(SynchronousTestCase):
    """L{parseTraceparent} accepts what W3C Trace Context calls valid."""

    def test_valid(self) -> None:
        """A version-00 header gives its trace-id, parent-id and flags."""
        self.assertEqual(parseTraceparent(VALID.encode()), (TRACE.encode(), PARENT.encode(), b"01"))

    def test_invalid(self) -> None:
        """Upper case, zero ids, version ff, bad lengths and junk are refused."""
        for bad in [
            VALID.upper(), f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01", f"ff-{TRACE}-{PARENT}-01",
            VALID + "-x", VALID[:-1], f"00-{TRACE}-{PARENT}-0g", f"00_{TRACE}-{PARENT}-01", "", "garbage",
        ]:
            self.assertIsNone(parseTraceparent(bad.encode()), bad)

    def test_laterVersion(self) -> None:
        """A later version may carry more fields after a dash; its first four are read."""
        self.assertEqual(parseTraceparent(f"cc-{TRACE}-{PARENT}-01-what-ever".encode())[0], TRACE.encode())
        self.assertIsNone(parseTraceparent(f"cc-{TRACE}-{PARENT}-01what".encode()))


class PropagationTests(SynchronousTestCase):
    """What the server receives, and what the access log shows."""

    def test_offByDefault(self) -> None:
        """Without requestId= or tracing=, nothing is added and the frontend has no tracer."""
        harness = harnessFor(self)
        self.assertIsNone(harness.frontend.tracer)
        head = exchange(harness, b"traceparent: garbage\r\n")
        self.assertEqual(header(head, b"traceparent"), [b"garbage"])
        self.assertEqual(header(head, b"x-request-id"), [])
        self.assertNotIn("requestId", harness.logged[0])

    def test_continuesValidTrace(self) -> None:
        """A valid traceparent goes on with the same trace-id and flags, lbkit's span id as parent-id."""
        harness = harnessFor(self, tracing=True)
        head = exchange(harness, f"traceparent: {VALID}\r\ntracestate: congo=t61rcWkgMzE\r\n".encode())
        ((traceId, parentId, flags),) = TRACEPARENT.findall(head)
        self.assertEqual((traceId, flags), (TRACE.encode(), b"01"))
        self.assertNotEqual(parentId, PARENT.encode())
        self.assertNotEqual(parentId, b"0" * 16)
        self.assertEqual(header(head, b"tracestate"), [b"congo=t61rcWkgMzE"])
        self.assertEqual(harness.logged[0]["traceId"], TRACE)

    def test_keepsUnsampledFlag(self) -> None:
        """A client's unsampled flag (00) is forwarded as it came."""
        harness = harnessFor(self, tracing=True)
        head = exchange(harness, f"traceparent: 00-{TRACE}-{PARENT}-00\r\n".encode())
        self.assertEqual(TRACEPARENT.findall(head)[0][2], b"00")

    def test_startsTraceWhenAbsent(self) -> None:
        """Without a traceparent a new trace starts (sampled); each request gets its own."""
        harness = harnessFor(self, tracing=True)
        first = TRACEPARENT.findall(exchange(harness))
        second = TRACEPARENT.findall(exchange(harness))
        self.assertEqual(len(first), 1)
        self.assertEqual(first[0][2], b"01")
        self.assertNotEqual(first[0][0], second[0][0])
        self.assertEqual(harness.logged[0]["traceId"], first[0][0].decode())

    def test_restartsOnInvalid(self) -> None:
        """An invalid (or repeated) traceparent starts a new trace and drops tracestate."""
        harness = harnessFor(self, tracing=True)
        for bad in [b"traceparent: 00-xyz\r\n", f"traceparent: {VALID}\r\ntraceparent: {VALID}\r\n".encode()]:
            head = exchange(harness, bad + b"tracestate: a=b\r\n")
            ((traceId, _, _),) = TRACEPARENT.findall(head)
            self.assertNotEqual(traceId, TRACE.encode())
            self.assertEqual(header(head, b"tracestate"), [])

    def test_unsampledNewTraces(self) -> None:
        """Tracing(sampled=False) starts traces with flags 00."""
        harness = harnessFor(self, tracing=http.Tracing(sampled=False))
        self.assertEqual(TRACEPARENT.findall(exchange(harness))[0][2], b"00")

    def test_requestIdSetWhenAbsent(self) -> None:
        """requestId=True gives a request without one a UUID, logged as requestId."""
        harness = harnessFor(self, requestId=True)
        (value,) = header(exchange(harness), b"x-request-id")
        self.assertRegex(value.decode(), r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")
        self.assertEqual(harness.logged[0]["requestId"], value.decode())
        self.assertEqual(harness.logged[0]["traceId"], "-")

    def test_requestIdKeptWhenSane(self) -> None:
        """A client's sane X-Request-ID is kept; an insane or repeated one is replaced."""
        harness = harnessFor(self, requestId=True)
        self.assertEqual(header(exchange(harness, b"X-Request-ID: abc-123\r\n"), b"x-request-id"), [b"abc-123"])
        self.assertEqual(harness.logged[-1]["requestId"], "abc-123")
        for bad in [b'X-Request-ID: a"b\r\n', b"X-Request-ID: " + b"a" * 201 + b"\r\n",
                    b"X-Request-ID: a\r\nX-Request-ID: b\r\n", b"X-Request-ID: a b\r\n"]:
            (value,) = header(exchange(harness, bad), b"x-request-id")
            self.assertEqual(len(value), 36, bad)

    def test_requestIdHeaderName(self) -> None:
        """requestId="X-Correlation-ID" uses that header."""
        harness = harnessFor(self, requestId="X-Correlation-ID")
        head = exchange(harness, b"x-correlation-id: keep-me\r\n")
        self.assertEqual(header(head, b"x-correlation-id"), [b"keep-me"])
        self.assertEqual(header(head, b"x-request-id"), [])

    def test_loggedWhenNoServer(self) -> None:
        """A request no server takes (503) is still logged with its request ID."""
        harness = harnessFor(self, requestId=True)
        harness.frontend.default.servers[0].setState(ServerState.DOWN)
        client = harness.request(b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-ID: r1\r\n\r\n")
        self.assertIn(b" 503 ", client.received())
        self.assertEqual(harness.logged[0]["requestId"], "r1")
        self.assertEqual(harness.logged[0]["status"], 503)

    def test_tracedLineFormat(self) -> None:
        """The traced line is the usual one with the request ID and trace-id appended."""
        self.assertTrue(HTTP_TRACED_LOG_FORMAT.startswith(http.HTTP_LOG_FORMAT + " "))
        self.assertTrue(HTTP_TRACED_LOG_FORMAT.endswith(" {requestId} {traceId}"))

    def test_badOptions(self) -> None:
        """Bad requestId= and tracing= values are ConfigErrors saying what is wrong."""
        backend = Backend("app", [Server("web1", FakeEndpoint())])
        with self.assertRaises(ConfigError) as e:
            http.Frontend("tcp:8080", default=backend, requestId="bad name")
        self.assertIn("requestId must be True, False or a header name", str(e.exception))
        with self.assertRaises(ConfigError) as e:
            http.Frontend("tcp:8080", default=backend, tracing="yes")
        self.assertIn("tracing must be True, False or an http.Tracing", str(e.exception))
        with self.assertRaises(ConfigError):
            http.Tracing(tracerProvider=object())


class OpenTelemetryTests(SynchronousTestCase):
    """With Tracing(otel=True), one span per request, exported by the SDK."""

    def setUp(self) -> None:
        if TracerProvider is None:
            raise self.skipTest("opentelemetry-sdk is not installed (pip install 'lbkit[otel]' opentelemetry-sdk)")
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.addCleanup(self.provider.shutdown)

    def test_available(self) -> None:
        """The optional package is seen."""
        self.assertTrue(otelAvailable())

    def test_spanPerRequest(self) -> None:
        """A span continues the client's trace, is the forwarded parent, and carries what happened."""
        harness = harnessFor(self, requestId=True, tracing=http.Tracing(otel=True, tracerProvider=self.provider))
        client = harness.request(f"GET /a?b=1 HTTP/1.1\r\nHost: x\r\ntraceparent: {VALID}\r\n\r\n".encode())
        harness.reactor.advance(0.25)
        server = harness.serverFor(client)
        ((traceId, parentId, flags),) = TRACEPARENT.findall(server.received())
        harness.reactor.advance(0.5)
        server.respond(OK)
        (span,) = self.exporter.get_finished_spans()
        context = span.get_span_context()
        self.assertEqual(format(context.trace_id, "032x"), TRACE)
        self.assertEqual(format(context.span_id, "016x"), parentId.decode())
        self.assertEqual(format(span.parent.span_id, "016x"), PARENT)
        self.assertEqual(span.name, "GET")
        attributes = dict(span.attributes)
        self.assertEqual(attributes["http.response.status_code"], 200)
        self.assertEqual(attributes["lbkit.backend"], "app")
        self.assertEqual(attributes["lbkit.server"], "web1")
        self.assertEqual(attributes["lbkit.route"], "default")
        self.assertEqual(attributes["lbkit.retries"], 0)
        self.assertEqual(attributes["lbkit.request_id"], harness.logged[0]["requestId"])
        self.assertEqual(attributes["lbkit.time.total_ms"], 750)
        self.assertEqual(attributes["lbkit.time.connect_ms"], 250)
        self.assertEqual(attributes["url.path"], "/a")
        self.assertEqual((span.end_time - span.start_time) / 1e9, 0.75)

    def test_newTraceIsTheSpans(self) -> None:
        """Without a traceparent, the forwarded one names the new span's trace and span."""
        harness = harnessFor(self, tracing=http.Tracing(otel=True, tracerProvider=self.provider))
        ((traceId, spanId, flags),) = TRACEPARENT.findall(exchange(harness))
        (span,) = self.exporter.get_finished_spans()
        self.assertIsNone(span.parent)
        self.assertEqual(format(span.get_span_context().trace_id, "032x"), traceId.decode())
        self.assertEqual(format(span.get_span_context().span_id, "016x"), spanId.decode())

    def test_errorStatus(self) -> None:
        """A 5xx answer (here, no server at all) ends the span with an error status."""
        from opentelemetry.trace import StatusCode

        harness = harnessFor(self, tracing=http.Tracing(otel=True, tracerProvider=self.provider))
        harness.frontend.default.servers[0].setState(ServerState.DOWN)
        harness.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        (span,) = self.exporter.get_finished_spans()
        self.assertEqual(span.status.status_code, StatusCode.ERROR)
        self.assertEqual(span.attributes["lbkit.server"], "<NOSRV>")


class WithoutOpenTelemetryTests(TestCase):
    """lbkit imports and traces without the optional package."""

    timeout = 30

    @inlineCallbacks
    def test_importsWithout(self) -> Any:
        """With opentelemetry hidden, lbkit.http imports, and otel=True is a clear ConfigError."""
        script = (
            "import sys\n"
            "class Hide:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'opentelemetry' or name.startswith('opentelemetry.'):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "from lbkit import http\n"
            "from lbkit.http._tracing import otelAvailable\n"
            "print('available', otelAvailable())\n"
            "try:\n"
            "    http.Tracing(otel=True)\n"
            "except Exception as e:\n"
            "    print(type(e).__name__, e)\n"
        )
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-c", script], env={**os.environ, "PYTHONPATH": REPO}, path=REPO
        )
        self.assertEqual(code, 0, err)
        self.assertIn(b"available False", out)
        self.assertIn(b"ConfigError http.Tracing: otel=True needs the opentelemetry-api package", out)


class ExampleTests(TestCase):
    """examples/tracing.py under twistd, asked with the real curl."""

    timeout = 30

    @inlineCallbacks
    def curl(self, *args: str) -> Any:
        out, err, code = yield getProcessOutputAndValue(
            needCurl(), ["-s", "-S", "--noproxy", "*", "--max-time", "10", *args, "http://127.0.0.1:8150/"]
        )
        self.assertEqual(code, 0, err)
        return out.decode()

    @inlineCallbacks
    def test_example(self) -> Any:
        """The server sees the client's trace continued and its request ID; the log line shows both."""
        watcher, process = startProcess(self, twistd("lbkit", "--config", f"{EXAMPLES}/tracing.py"))
        yield watcher.waitFor("frontend traced listening on")
        yield watcher.waitFor("header server listening on")
        answer = yield self.curl("-H", f"traceparent: {VALID}", "-H", "tracestate: k=v", "-H", "X-Request-ID: my-request-1")
        self.assertIn("x-request-id: my-request-1\n", answer)
        self.assertRegex(answer, f"traceparent: 00-{TRACE}-(?!{PARENT})[0-9a-f]{{16}}-01\n")
        self.assertIn("tracestate: k=v\n", answer)
        yield watcher.waitFor(f'"GET / HTTP/1.1" my-request-1 {TRACE}')
        fresh = yield self.curl()
        (traceId,) = re.findall("traceparent: 00-([0-9a-f]{32})-", fresh)
        self.assertNotEqual(traceId, TRACE)
        yield watcher.waitFor(f" {traceId}\n")
        if TracerProvider is not None:
            yield watcher.waitFor(f'"trace_id": "0x{traceId}"')
        yield stopCleanly(self, watcher, process)


class HTTP2Tests(test_http2.HTTP2TestCase):
    """An HTTP/2 stream is traced like an HTTP/1.1 request (real curl --http2)."""

    @inlineCallbacks
    def test_curlHTTP2(self) -> Any:
        """The server sees the trace continued and a request ID over HTTP/2."""
        port = self.tlsFrontend(default=backend("app", [self.site("app1")[0]]), requestId=True, tracing=True)
        out = yield self.curl(port, "--http2", "-H", f"traceparent: {VALID}", "-w", "\n%{http_version}")
        body, version = out.rsplit("\n", 1)
        self.assertEqual(version, "2")
        headers = json.loads(body)["headers"]
        [traceparent] = headers["traceparent"]
        self.assertRegex(traceparent, f"^00-{TRACE}-(?!{PARENT})[0-9a-f]{{16}}-01$")
        self.assertRegex(headers["x-request-id"][0], "^[0-9a-f-]{36}$")


class AccessLogTests(TestCase):
    """The IDs reach every kind of access-log destination, through real sockets."""

    timeout = 20

    @inlineCallbacks
    def traffic(self, format: str, protocol: Any = None) -> Any:
        port, _ = startBackend(self, "web1")
        path = self.mktemp()
        app = Backend("app", [Server("web1", f"127.0.0.1:{port}")])
        frontend = http.Frontend("tcp:0:interface=127.0.0.1", default=app, name="web", requestId=True, tracing=True)
        service = LoadBalancerService([frontend], reactor(), accessLog=[AccessLog(path, format=format)], grace=5)
        events = startWatched(self, service, protocol)
        client = Client(self)
        yield client.agent.request(b"GET", b"http://127.0.0.1:%d/t" % frontendPort(service),
                                   Headers({"traceparent": [VALID], "x-request-id": ["rid-7"]}))
        yield client.fresh()
        yield service.stopService()
        return readLines(path), events

    @inlineCallbacks
    def test_textLine(self) -> Any:
        """The buffered text destination gets the usual line, then the request ID and trace-id."""
        (line,), events = yield self.traffic("text")
        self.assertRegex(line, rf'^127\.0\.0\.1:\d+ \[.*\] web app/web1 0/\d+/\d+/\d+/\d+ 200 \d+ -- 0 '
                               rf'"GET /t HTTP/1\.1" rid-7 {TRACE}$')
        self.assertEqual(events.events, [])

    @inlineCallbacks
    def test_json(self) -> Any:
        """A JSON destination's record has requestId and traceId."""
        (line,), _ = yield self.traffic("json")
        record = json.loads(line)
        self.assertEqual((record["requestId"], record["traceId"], record["status"]), ("rid-7", TRACE, 200))

    @inlineCallbacks
    def test_throughLogEvents(self) -> Any:
        """With a finished hook the line goes as a log event, in the traced format, and the hook sees the IDs."""
        seen: list[dict[str, Any]] = []

        class Hooked(http.HTTPFrontendProtocol):
            def finished(self, fields: dict[str, Any]) -> None:
                seen.append(fields)

        (line,), events = yield self.traffic("text", Hooked)
        self.assertTrue(line.endswith(f'"GET /t HTTP/1.1" rid-7 {TRACE}'), line)
        self.assertEqual([(f["requestId"], f["traceId"]) for f in seen], [("rid-7", TRACE)])
        self.assertEqual(len(events.events), 1)
