# -*- test-case-name: tests.test_accesslog_fast -*-
"""
The access-log line of an http request, formatted straight to bytes from
the attributes of its exchange (issue 11): one bytes C{%}-format, no
tuple of values, no decode and encode of the request line, no fields
dict unless a JSON destination wants one.

The bytes are those of C{HTTP_LOG_FORMAT} applied to the request's
fields (L{lbkit.http._headers.logValues}, L{lbkit._logline.formatHTTPLine})
and encoded as UTF-8: a line that comes out with bytes outside ASCII (a
Latin-1 request line, a name in another script) or a field of an
unexpected type is formatted again the documented way, so that it reads
the same.

What does not change from one request of a connection to the next is
kept in its exchange's L{LineCache}: the client address, the start of the
line (C{client [date] frontend}) for as long as the second and the name
stay the same, and C{backend/server} by server name.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lbkit._address import formatAddress
from lbkit._logline import formatHTTPLine, httpFields, httpSecond

if TYPE_CHECKING:
    from lbkit._accesslog import AccessLogSink
    from lbkit.http._exchange import Exchange
    from lbkit.http._frontend import HTTPProxyFactory

__all__ = ["plainLog", "writeLogLine", "LineCache"]

_now = time.time
_LINE = b'%s %s 0/%d/%d/%d/%d %d %d %s %d "%s %s %s"'
_NO_REQUEST = b'%s %s 0/%d/%d/%d/%d %d %d %s %d "-"'
#: Server names a L{LineCache} keeps at most (then it starts again).
_SERVERS = 64


class LineCache:
    """
    The parts of an exchange's access-log lines that repeat from one
    request to the next, as bytes; each is checked against what it was
    made of (by identity: a reload that renames gives new strings).

    @ivar client: The C{client} field (an exchange's client does not change).
    @ivar head: C{client [date] frontend}, of L{date} and L{frontend}.
    @ivar servers: By server name: the backend name and C{backend/server}.
    @ivar termination: The termination code L{terminationData} encodes.
    """

    __slots__ = ("client", "head", "date", "frontend", "servers", "termination", "terminationData")

    def __init__(self, exchange: Exchange) -> None:
        self.client = formatAddress(exchange.client).encode()
        self.head = self.date = self.terminationData = b""
        self.frontend = self.termination = ""
        self.servers: dict[str, tuple[str, bytes]] = {}

    def makeHead(self, date: bytes, frontend: str) -> bytes:
        """Make L{head} again, of these fields."""
        self.date, self.frontend = date, frontend
        head = self.head = b"%s [%s] %s" % (self.client, date, frontend.encode())
        return head

    def addServer(self, backend: str, server: str) -> tuple[str, bytes]:
        """Keep C{backend/server} for C{server}."""
        servers = self.servers
        if len(servers) >= _SERVERS:
            servers.clear()
        names = servers[server] = (backend, b"%s/%s" % (backend.encode(), server.encode()))
        return names

    def encodeTermination(self, termination: str) -> bytes:
        """L{terminationData} of C{termination}."""
        self.termination = termination
        data = self.terminationData = termination.encode()
        return data


def plainLog(exchange: Exchange, factory: HTTPProxyFactory) -> bool:
    """
    Whether the line of the request of C{exchange} may be formatted here
    and written straight to C{factory.accessSink}: what
    C{factory.logsPlainly()} and a C{finished} hook that is not overridden
    say.  Whether C{finished} and C{logAccess} are overridden (by a class,
    or set on the instance) was decided when the exchange was made: once
    per connection, or per HTTP/2 stream (C{exchange.plainHooks}); what a
    reload changes (the frontend's C{log}, C{explain}) is read each time.
    """
    frontend = exchange.frontend
    return bool(exchange.plainHooks and frontend.log and not frontend.explain)


def writeLogLine(exchange: Exchange, sink: AccessLogSink) -> bool:
    """
    Write the access-log line of the request of C{exchange}, as it ends,
    to C{sink}'s destinations, if L{plainLog} says it may be (and C{sink}
    is active): the same bytes as C{formatHTTPLine(*logValues(exchange))},
    and for JSON destinations the same fields as
    C{httpFields(*logValues(exchange))}.

    @return: Whether it wrote it (else the line goes the documented way:
        C{finished(fields)}, C{factory.logAccess(fields)}).
    """
    if not (sink.active and plainLog(exchange, exchange.factory)):
        return False
    frontend = exchange.frontend
    now = exchange.reactor.seconds()
    t = _now()
    if not httpSecond.start <= t < httpSecond.until:
        httpSecond.at(int(t))
    cache = exchange.logCache
    if cache is None:
        cache = exchange.logCache = LineCache(exchange)
    # the timings, in ms (-1: it did not happen), as floats: %d truncates them as int() does
    start = exchange.startedAt
    dispatch = exchange.dispatch
    retries = 0
    if dispatch is not None:
        chosen = dispatch.chosenAt
        connected = dispatch.connectedAt
        if dispatch.attempts > 1:
            retries = dispatch.attempts - 1
    else:
        chosen = connected = -1.0
    waited = exchange.waitedUntil
    if waited >= 0.0:
        chosen = waited
    responded = exchange.respondedAt
    if start >= 0.0:
        Ta: float = (now - start) * 1000.0 if now >= 0.0 else -1
        Tw: float = (chosen - start) * 1000.0 if chosen >= 0.0 else -1
    else:
        Ta = Tw = -1
    Tc: float = (connected - chosen) * 1000.0 if chosen >= 0.0 and connected >= 0.0 else -1
    Tr: float = (responded - connected) * 1000.0 if connected >= 0.0 and responded >= 0.0 else -1
    frontendName = frontend.name
    backend = exchange.backend
    server = exchange.server
    backendName = backend.name if backend is not None else frontendName  # (HAProxy's "fe fe/<NOSRV>")
    serverName = server.name if server is not None else exchange.noServer
    status = exchange.status
    sent = exchange.bytesOut
    termination = exchange.termination
    request = exchange.request
    line = b""
    try:
        head = cache.head
        if cache.date is not httpSecond.data or frontendName is not cache.frontend:
            head = cache.makeHead(httpSecond.data, frontendName)
        names = cache.servers.get(serverName)
        if names is None or names[0] is not backendName:
            names = cache.addServer(backendName, serverName)
        code = cache.terminationData if termination is cache.termination else cache.encodeTermination(termination)
        if type(status) is int and type(sent) is int:
            if request is not None:
                line = _LINE % (
                    head, names[1], Tw, Tc, Tr, Ta, status, sent, code, retries,
                    request.method, request.uri, exchange.logVersion or request.version,
                )
            else:
                line = _NO_REQUEST % (head, names[1], Tw, Tc, Tr, Ta, status, sent, code, retries)
    except (AttributeError, TypeError):  # (a name that is not text)
        line = b""
    wantsFields = sink.wantsFields
    if not wantsFields and line and line.isascii():
        sink.writeLine(line)
        return True
    # a line outside ASCII, an odd field, or a JSON destination: the documented way
    values: tuple[Any, ...] = (
        cache.client.decode(), httpSecond.text, frontendName, backendName, serverName,
        0, int(Tw), int(Tc), int(Tr), int(Ta), status, sent, termination, retries,
        b"%s %s %s" % (request.method, request.uri, exchange.logVersion or request.version)
        if request is not None else b"-",
    )
    if not line or not line.isascii():
        line = formatHTTPLine(*values)
    if wantsFields:
        fields = httpFields(*values)
        sink.emit(line, lambda: fields)
    else:
        sink.writeLine(line)
    return True
