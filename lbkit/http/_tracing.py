# -*- test-case-name: tests.test_tracing -*-
"""
http mode: request IDs and W3C trace context (docs/tracing.md).

A frontend built with C{requestId=} or C{tracing=} gets a
L{RequestTracer}; without either it has none and requests pay one
attribute check.  The tracer, at the start of each request
(L{RequestTracer.begin}):

  - keeps the client's C{X-Request-ID} when it is sane (one header, 1 to
    200 visible ASCII characters, no quote or backslash), else sets a new
    one (a UUID);
  - continues a valid W3C C{traceparent} (same trace-id and flags, lbkit's
    own span id as the new parent-id, C{tracestate} passed through), or
    starts a new trace when it is absent or invalid (dropping any
    C{tracestate});
  - with L{Tracing}C{(otel=True)}, starts an OpenTelemetry server span
    (through C{opentelemetry-api}, the C{lbkit[otel]} extra) whose span
    id is the one forwarded.

At the end (L{endTrace}, from the access log) it logs the line
with the two IDs appended and ends the span with the request's route,
backend, server, status, timings and retries.
"""

from __future__ import annotations

import re
from random import getrandbits
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from lbkit._logline import formatHTTPLine, httpFields
from lbkit.error import ConfigError
from lbkit.http._accessline import plainLog
from lbkit.http._parse import Request

#: C{opentelemetry.trace}, C{None} without the optional lbkit[otel] extra,
#: or L{_UNLOADED} until the first L{Tracing} with C{otel=True} (or
#: L{otelAvailable}) asks: a process that does not trace does not pay
#: its import (issue 11: RSS).
_UNLOADED: Any = object()
otelTrace: Any = _UNLOADED


def _otelTrace() -> Any:
    """C{opentelemetry.trace}, imported at the first call; C{None} if it is not installed."""
    global otelTrace
    if otelTrace is _UNLOADED:
        try:
            from opentelemetry import trace
        except ImportError:  # the optional lbkit[otel] extra
            otelTrace = None
        else:
            otelTrace = trace
    return otelTrace

if TYPE_CHECKING:
    from lbkit.http._exchange import Exchange
    from lbkit.http._frontend import HTTPProxyFactory

__all__ = ["Tracing", "RequestTracer", "Trace", "HTTP_TRACED_LOG_FORMAT", "otelAvailable", "parseTraceparent", "endTrace", "tracerFor"]

#: The access-log line of a frontend with request IDs or tracing: the
#: usual line then the request ID and the trace-id (C{-} when off).
HTTP_TRACED_LOG_FORMAT = (
    "{client} [{date}] {frontend} {backend}/{server} {TR}/{Tw}/{Tc}/{Tr}/{Ta} "
    "{status} {bytes} {termination} {retries} \"{request}\" {requestId} {traceId}"
)

_SANE_ID = re.compile(rb"[!#-\[\]-~]{1,200}\Z")
_HEX = re.compile(rb"[0-9a-f]+\Z")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


def otelAvailable() -> bool:
    """Whether the optional C{opentelemetry-api} package is importable."""
    return _otelTrace() is not None


def parseTraceparent(value: bytes) -> Optional[tuple[bytes, bytes, bytes]]:
    """
    The C{(trace-id, parent-id, flags)} of a W3C C{traceparent} header
    value (lower-case hex), or C{None} if it is not a valid one: version
    C{00} exactly 55 characters; a later version (not C{ff}) at least 55,
    the rest after a C{-}; ids not all zeros.
    """
    value = value.strip()
    if len(value) < 55 or value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    version, traceId, parentId, flags = value[0:2], value[3:35], value[36:52], value[53:55]
    if version == b"00":
        if len(value) != 55:
            return None
    elif version == b"ff" or (len(value) > 55 and value[55:56] != b"-"):
        return None
    if not _HEX.match(version + traceId + parentId + flags):
        return None
    if traceId == _ZERO_TRACE or parentId == _ZERO_SPAN:
        return None
    return traceId, parentId, flags


class Tracing:
    """
    How an http frontend takes part in W3C trace context (give it as
    C{http.Frontend(..., tracing=Tracing(...))}; C{tracing=True} is
    C{Tracing()}).

    @ivar sampled: The C{sampled} flag of the traces lbkit starts itself
        (without OpenTelemetry; with it, its sampler decides).
    @ivar otel: Start an OpenTelemetry span per request (needs the
        C{lbkit[otel]} extra, C{opentelemetry-api}).
    @ivar tracerProvider: With C{otel}: the C{TracerProvider} to get the
        tracer from; C{None}: the global one
        (C{opentelemetry.trace.set_tracer_provider}).
    """

    def __init__(self, *, sampled: bool = True, otel: bool = False, tracerProvider: Any = None) -> None:
        if otel and _otelTrace() is None:
            raise ConfigError(
                "http.Tracing: otel=True needs the opentelemetry-api package (pip install 'lbkit[otel]')"
            )
        if tracerProvider is not None and not otel:
            raise ConfigError("http.Tracing: tracerProvider is only used with otel=True")
        self.sampled = bool(sampled)
        self.otel = bool(otel)
        self.tracerProvider = tracerProvider

    def __repr__(self) -> str:
        return f"<http.Tracing otel={self.otel} sampled={self.sampled}>"


class Trace:
    """
    What a traced request carries (C{exchange.trace}).

    @ivar requestId: Its request ID (text), or C{None} when not set.
    @ivar traceId: Its 32 hex digits of trace-id, or C{None} without tracing.
    @ivar spanId: lbkit's span id (16 hex digits), the forwarded parent-id.
    @ivar parentId: The client's parent-id, or C{None} for a new trace.
    @ivar span: The OpenTelemetry span, or C{None}.
    """

    __slots__ = ("requestId", "traceId", "spanId", "parentId", "span")

    def __init__(self, requestId: Optional[str], traceId: Optional[str], spanId: Optional[str],
                 parentId: Optional[str], span: Any) -> None:
        self.requestId = requestId
        self.traceId = traceId
        self.spanId = spanId
        self.parentId = parentId
        self.span = span


def _checkedHeader(requestId: Union[bool, str], where: str) -> Optional[bytes]:
    if requestId is False or requestId is None:
        return None
    if requestId is True:
        return b"X-Request-ID"
    if isinstance(requestId, str) and re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", requestId):
        return requestId.encode("ascii")
    raise ConfigError(f"{where}: requestId must be True, False or a header name, not {requestId!r}")


def tracerFor(requestId: Union[bool, str], tracing: Union[bool, Tracing, None], where: str) -> Optional[RequestTracer]:
    """
    The L{RequestTracer} of a frontend given C{requestId=} and
    C{tracing=}, or C{None} when both are off; a L{ConfigError} for a bad
    value.
    """
    header = _checkedHeader(requestId, where)
    if tracing is True:
        tracing = Tracing()
    elif tracing is False:
        tracing = None
    elif tracing is not None and not isinstance(tracing, Tracing):
        raise ConfigError(f"{where}: tracing must be True, False or an http.Tracing, not {tracing!r}")
    if header is None and tracing is None:
        return None
    return RequestTracer(header, tracing)


def _newId(bits: int) -> str:
    """
    A random id of C{bits} bits in lower-case hex, never all zeros: from
    C{random.getrandbits}, as OpenTelemetry's own C{RandomIdGenerator}.
    """
    value = 0
    while not value:
        value = getrandbits(bits)
    return format(value, f"0{bits // 4}x")


def _newRequestId() -> str:
    """A random (version 4) UUID as text."""
    h = f"{getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _replace(request: Request, pairs: list[list[bytes]], name: bytes, value: bytes) -> None:
    """Make C{name: value} the only header C{name} of C{request} (whose C{pairs} are those it has)."""
    if len(pairs) == 1:
        pairs[0][1] = value  # in place: the header list stays as it is
    elif pairs:
        request.setHeader(name, value)
    else:
        request.addHeader(name, value)


class RequestTracer:
    """
    The per-request work of a frontend's request IDs and tracing (see the
    module docstring).

    @ivar header: The request ID header (C{b"X-Request-ID"}), or C{None}.
    @ivar tracing: The L{Tracing}, or C{None}.
    """

    def __init__(self, header: Optional[bytes], tracing: Optional[Tracing]) -> None:
        self.header = header
        self.tracing = tracing
        self._lowerHeader = header.lower() if header is not None else b"\0"
        self._idLength = len(self._lowerHeader)
        self._tracer: Any = None
        if tracing is not None and tracing.otel:
            self._tracer = _otelTrace().get_tracer("lbkit", tracer_provider=tracing.tracerProvider)

    def begin(self, exchange: Exchange, request: Request) -> None:
        """
        A request head arrived: set C{exchange.trace}, and the headers it
        goes on with (C{X-Request-ID}, C{traceparent}, C{tracestate}).
        """
        traceId = spanId = parentId = None
        span = None
        header = self.header
        lowerHeader, idLength = self._lowerHeader, self._idLength
        # one pass over the headers: the pairs of the three names
        ids: list[list[bytes]] = []
        parents: list[list[bytes]] = []
        states = False
        for pair in request.headers:
            name = pair[0]
            n = len(name)
            if n == 11 or n == 10 or n == idLength:
                lower = name.lower()
                if lower == lowerHeader:
                    ids.append(pair)
                elif lower == b"traceparent":
                    parents.append(pair)
                elif lower == b"tracestate":
                    states = True
        requestId = None
        if header is not None:
            if len(ids) == 1 and _SANE_ID.match(ids[0][1]):
                requestId = ids[0][1].decode("ascii")
            else:
                requestId = _newRequestId()
                _replace(request, ids, header, requestId.encode("ascii"))
        tracing = self.tracing
        if tracing is not None:
            parent = parseTraceparent(parents[0][1]) if len(parents) == 1 else None
            flags = b"01" if tracing.sampled else b"00"
            if parent is not None:
                traceId, parentId = parent[0].decode(), parent[1].decode()
                flags = parent[2]
            elif states:
                request.removeHeader(b"tracestate")  # a new trace: the old state means nothing
            if self._tracer is not None:
                span = self._startSpan(exchange, request, parent)
                context = span.get_span_context()
                if context.is_valid:
                    traceId = format(context.trace_id, "032x")
                    spanId = format(context.span_id, "016x")
                    flags = b"%02x" % context.trace_flags
            if traceId is None:
                traceId = _newId(128)
            if spanId is None:
                spanId = _newId(64)
            _replace(request, parents, b"traceparent", b"00-%s-%s-%s" % (traceId.encode(), spanId.encode(), flags))
        exchange.trace = Trace(requestId, traceId, spanId, parentId, span)

    def _startSpan(self, exchange: Exchange, request: Request, parent: Optional[tuple[bytes, bytes, bytes]]) -> Any:
        context = None
        if parent is not None:
            states = [v.decode("latin-1") for v in request.headerValues(b"tracestate")]
            state = otelTrace.TraceState.from_header(states) if states else otelTrace.TraceState()
            remote = otelTrace.SpanContext(
                int(parent[0], 16), int(parent[1], 16), is_remote=True,
                trace_flags=otelTrace.TraceFlags(int(parent[2], 16)), trace_state=state,
            )
            context = otelTrace.set_span_in_context(otelTrace.NonRecordingSpan(remote))
        method = request.method.decode("latin-1")
        return self._tracer.start_span(
            method, context=context, kind=otelTrace.SpanKind.SERVER,
            start_time=int(exchange.startedAt * 1e9),
            attributes={"http.request.method": method, "url.path": request.path.decode("latin-1")},
        )


def endTrace(exchange: Exchange, factory: HTTPProxyFactory, logValues: Callable[[Exchange], tuple[Any, ...]]) -> None:
    """
    The traced request of C{exchange} ended: log it with its IDs, end its
    span, and forget its L{Trace}.  C{logValues} gives its access-log
    values (L{lbkit.http._headers.logValues}), computed only if someone
    wants them.
    """
    trace = exchange.trace
    exchange.trace = None
    ids = {"requestId": trace.requestId or "-", "traceId": trace.traceId or "-"}
    sink = factory.accessSink
    values: Optional[tuple[Any, ...]] = None
    if sink is not None and sink.active and plainLog(exchange, factory):
        got = values = logValues(exchange)
        line = formatHTTPLine(*values) + b" %s %s" % (ids["requestId"].encode(), ids["traceId"].encode())
        sink.emit(line, lambda: {**httpFields(*got), **ids})
    elif not exchange.nobodyListens():
        values = logValues(exchange)
        fields = httpFields(*values)
        fields.update(ids)
        exchange.hooks.finished(fields)
        factory.logAccess(fields)
    if trace.span is not None:
        _endSpan(exchange, trace, values if values is not None else logValues(exchange))


def _endSpan(exchange: Exchange, trace: Trace, values: tuple[Any, ...]) -> None:
    span = trace.span
    route = exchange.route
    attributes: dict[str, Any] = {
        "lbkit.frontend": str(values[2]),
        "lbkit.backend": str(values[3]),
        "lbkit.server": str(values[4]),
        "lbkit.route": "default" if route is None else repr(getattr(route, "matcher", route)),
        "lbkit.retries": int(values[13]),
        "lbkit.termination": str(values[12]),
        "lbkit.bytes_out": int(values[11]),
        "http.response.status_code": int(values[10]),
        "client.address": str(getattr(exchange.client, "host", "")),
    }
    if trace.requestId is not None:
        attributes["lbkit.request_id"] = trace.requestId
    for key, value in zip(("queue", "connect", "response", "total"), values[6:10], strict=True):
        if value >= 0:
            attributes[f"lbkit.time.{key}_ms"] = value
    span.set_attributes(attributes)
    status = int(values[10])
    if status >= 500 or status == 0:
        span.set_status(otelTrace.Status(otelTrace.StatusCode.ERROR, f"{status} {values[12]}"))
    span.end(end_time=int(exchange.reactor.seconds() * 1e9))
