# -*- test-case-name: tests.test_http -*-
"""
http mode: what the proxy writes in message heads, and the constants both
sides share: hop-by-hop header names, the request head a server gets
(C{X-Forwarded-*}, the mTLS client subject), the HTTP/1.1 response head a
client gets, lbkit's own error answers, and the access-log format and
fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

from lbkit._address import formatAddress
from lbkit._logline import httpDate, httpFields
from lbkit.http._accessline import writeLogLine
from lbkit.http._answers import ErrorPage
from lbkit.http._explain import explainText
from lbkit.http._parse import Request, Response
from lbkit.http._tracing import endTrace

if TYPE_CHECKING:
    from lbkit.http._exchange import Exchange
    from lbkit.http._frontend import HTTPProxyFactory

__all__ = [
    "HTTP_LOG_FORMAT",
    "HOP",
    "NEVER_HOP",
    "CODE_CLASS",
    "IDEMPOTENT",
    "REASONS",
    "MESSAGES",
    "connectionTokens",
    "errorResponse",
    "errorBody",
    "requestHead",
    "responseHead",
    "clientSubject",
    "logFields",
    "recordLatency",
]

#: The access-log line of one http request (see docs/http.md).
HTTP_LOG_FORMAT = (
    "{client} [{date}] {frontend} {backend}/{server} {TR}/{Tw}/{Tc}/{Tr}/{Ta} "
    "{status} {bytes} {termination} {retries} \"{request}\""
)

#: Hop-by-hop headers (RFC 9110 section 7.6.1): never passed on.
HOP = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    ]
)
#: Headers a C{Connection} header may not remove: the framing lbkit has
#: already read (dropping Content-Length would let a body pass for the next
#: request: request smuggling) and the Host.
NEVER_HOP = frozenset([b"content-length", b"host"])
#: The counter of a status code's class, by C{code // 100}.
CODE_CLASS = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")
#: Methods whose request may be sent again after a server failed it.
IDEMPOTENT = frozenset([b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"])
REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}
#: The bodies of lbkit's own error answers.
MESSAGES = {
    400: b"Your browser sent an invalid request.\n",
    403: b"Request forbidden by administrative rules.\n",
    405: b"This method is not allowed here.\n",
    408: b"Your browser didn't send a complete request in time.\n",
    429: b"You have sent too many requests in a given amount of time.\n",
    431: b"The request headers are too large.\n",
    500: b"An internal server error occurred.\n",
    501: b"This method is not implemented.\n",
    502: b"The server returned an invalid or incomplete response.\n",
    503: b"No server is available to handle this request.\n",
    504: b"The server didn't respond in time.\n",
    505: b"This HTTP version is not supported.\n",
}


def errorBody(status: int, pages: Mapping[int, ErrorPage]) -> tuple[bytes, bytes]:
    """The body of lbkit's own answer with C{status} and its type: the frontend's page, else lbkit's."""
    page = pages.get(status) if pages else None
    if page is not None:
        return page.body, page.contentType
    return MESSAGES.get(status, b"Error\n"), b"text/plain"


def errorResponse(status: int, pages: Mapping[int, ErrorPage] = {}) -> bytes:  # noqa: B006 (read only)
    """lbkit's own HTTP/1.1 answer with C{status}, closing the connection (C{pages}: the frontend's C{errorPages})."""
    body, contentType = errorBody(status, pages)
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Error")),
            b"Content-Type: %s\r\nCache-Control: no-cache\r\nConnection: close\r\n" % contentType,
            b"Content-Length: %d\r\n\r\n" % len(body),
            body,
        ]
    )


def connectionTokens(headers: list[list[bytes]], names: Optional[list[bytes]] = None) -> set[bytes]:
    """
    The lower-cased options of the C{Connection} headers: hop-by-hop header
    names, C{close}, C{keep-alive}, C{upgrade} (never C{content-length} or
    C{host}).

    @param names: The lower-cased names of C{headers}, when known (as the
        parse found them): a message without C{Connection} header is then
        told without a loop.
    """
    if names is not None:
        count = names.count(b"connection")
        if count == 0:
            return set()
        if count == 1:
            value = headers[names.index(b"connection")][1]
            if b"," not in value:
                token = value.strip().lower()  # (the usual one: keep-alive, close)
                return set() if token in NEVER_HOP else {token}
    tokens: Optional[set[bytes]] = None
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            if tokens is None:
                tokens = set()
            if b"," in value:
                tokens.update([t.strip().lower() for t in value.split(b",")])
            else:
                tokens.add(value.strip().lower())
    if tokens is None:
        return set()
    tokens -= NEVER_HOP
    return tokens


# What a request head leaves out, by (forwardedFor, mTLS): the hop-by-hop
# headers, and those lbkit writes itself instead of the client's (it knows
# whether the client used TLS; only lbkit says who the client is); the
# client's own X-Forwarded-For goes first in lbkit's
_REQUEST_DROP = {
    (forwardedFor, mtls): HOP
    | (frozenset([b"x-forwarded-for", b"x-forwarded-proto"]) if forwardedFor else frozenset())
    | (frozenset([b"x-ssl-client-dn"]) if mtls else frozenset())
    for forwardedFor in (False, True)
    for mtls in (False, True)
}
# What a response head keeps of the hop-by-hop headers, by (interim,
# tunnel): a final response's Transfer-Encoding (its body keeps its
# framing) and a tunnel's Upgrade; and what it leaves out
_RESPONSE_KEPT = {
    (interim, tunnel): (frozenset() if interim else frozenset([b"transfer-encoding"]))
    | (frozenset([b"upgrade"]) if tunnel else frozenset())
    for interim in (False, True)
    for tunnel in (False, True)
}
_RESPONSE_DROP = {key: HOP - kept for key, kept in _RESPONSE_KEPT.items()}
# Connection options that drop no other header: those already dropped, and
# those never dropped (the usual ones: keep-alive, close)
_INERT = HOP | NEVER_HOP
_STATUS_LINES = {code: b"HTTP/1.1 %d " % code for code in range(100, 600)}
_FORWARDED_PROTO = {scheme: b"X-Forwarded-Proto: " + scheme for scheme in (b"http", b"https")}


def requestHead(
    request: Request,
    chunked: bool,
    upgrade: bool,
    forwardedFor: bool,
    client: bytes,
    scheme: bytes,
    clientDN: Optional[bytes],
) -> bytes:
    """
    The head of C{request} as it goes to a server, in HTTP/1.1: without
    hop-by-hop headers, re-framed, with lbkit's C{X-Forwarded-*} headers.

    @param chunked: The body goes chunked (the only coding a request may have).
    @param upgrade: Ask for the upgrade the client asked for.
    @param forwardedFor: Add C{X-Forwarded-For} (after the client's own),
        C{X-Forwarded-Proto} (instead of the client's) and
        C{X-Forwarded-Host} (unless the client sent one).
    @param client: The client's IP address, for C{X-Forwarded-For}.
    @param scheme: C{b"http"} or C{b"https"}, for C{X-Forwarded-Proto}.
    @param clientDN: With mTLS, the verified client certificate's subject
        (C{b""} without one): a client's own C{X-SSL-Client-DN} is dropped
        and lbkit's added.  C{None} without mTLS.
    """
    headers = request.headers
    drop = _REQUEST_DROP[forwardedFor, clientDN is not None]
    # the head's lines, joined by CRLF at the end
    lines = [b" ".join((request.method, request.uri, request.version))]
    append = lines.append
    connection: Optional[list[list[bytes]]] = None
    forwarded: Optional[list[bytes]] = None
    host: Optional[bytes] = None
    forwardedHost = False
    for header in headers:  # (one pass, and the Connection header's options after it)
        name = header[0].lower()
        if name in drop:
            if name == b"connection":
                connection = [header] if connection is None else connection + [header]
            elif name == b"x-forwarded-for":
                forwarded = [header[1]] if forwarded is None else forwarded + [header[1]]
            continue
        append(b": ".join(header))
        if name == b"host":
            if host is None:
                host = header[1]
        elif name == b"x-forwarded-host":
            forwardedHost = True
    if connection is not None and (len(connection) > 1 or connection[0][1].strip().lower() not in _INERT):
        tokens = connectionTokens(connection)
        if not tokens.issubset(HOP):  # (else they change nothing)
            drop = drop | tokens
            lines[1:] = [b": ".join(h) for h in headers if h[0].lower() not in drop]
            if b"x-forwarded-for" in tokens:
                forwarded = None
    if chunked:
        append(b"Transfer-Encoding: chunked")
    if upgrade:
        protocol = request.header(b"upgrade")
        if protocol is not None:  # (an allowed CONNECT has none)
            append(b"Connection: Upgrade")
            append(b"Upgrade: " + protocol)
    elif request.version == b"HTTP/1.0":
        append(b"Connection: keep-alive")
    if clientDN:
        append(b"X-SSL-Client-DN: " + clientDN)
    if forwardedFor:
        if forwarded is not None:  # after the client's own
            xff = b", ".join(forwarded)
            append(b"X-Forwarded-For: " + (xff + b", " + client if xff else client))
        else:
            append(b"X-Forwarded-For: " + client)
        append(_FORWARDED_PROTO.get(scheme) or b"X-Forwarded-Proto: " + scheme)
        if host is not None and not forwardedHost:
            append(b"X-Forwarded-Host: " + host)
    lines += (b"", b"")
    return b"\r\n".join(lines)


def responseHead(response: Response, interim: bool, tunnel: bool, close: bool, http10: bool) -> bytes:
    """
    The head of C{response} as it goes to an HTTP/1.x client: without
    hop-by-hop headers (but C{Transfer-Encoding}, as the body keeps its
    framing, and a tunnel's C{Upgrade}).

    @param interim: It is a 1xx response.
    @param tunnel: It is the C{101} that starts a tunnel.
    @param close: The client connection closes after it (C{Connection: close}).
    @param http10: The client speaks HTTP/1.0 (and its connection is kept:
        C{Connection: keep-alive}).
    """
    headers = response.headers
    drop = _RESPONSE_DROP[interim, tunnel]
    code = response.code
    # the head's lines, joined by CRLF at the end
    lines = [(_STATUS_LINES.get(code) or b"HTTP/1.1 %d " % code) + response.reason]
    append = lines.append
    connection: Optional[list[list[bytes]]] = None
    for header in headers:  # (one pass, and the Connection header's options after it)
        name = header[0].lower()
        if name in drop:
            if name == b"connection":
                connection = [header] if connection is None else connection + [header]
            continue
        append(b": ".join(header))
    if connection is not None and (len(connection) > 1 or connection[0][1].strip().lower() not in _INERT):
        tokens = connectionTokens(connection)
        if not tokens.issubset(HOP):  # (else they change nothing)
            drop = drop | (tokens - _RESPONSE_KEPT[interim, tunnel])
            lines[1:] = [b": ".join(h) for h in headers if h[0].lower() not in drop]
    if tunnel:
        lines += (b"Connection: Upgrade", b"", b"")
    elif interim or not (close or http10):
        lines += (b"", b"")
    elif close:
        lines += (b"Connection: close", b"", b"")
    else:
        lines += (b"Connection: keep-alive", b"", b"")
    return b"\r\n".join(lines)


def clientSubject(transport: Any) -> bytes:
    """
    The subject of the verified client certificate of a TLS C{transport},
    OpenSSL's one-line form (C{/C=FR/O=Example/CN=client1}, as HAProxy's
    C{ssl_c_s_dn}); C{b""} without one.
    """
    try:
        cert = transport.getPeerCertificate()
    except Exception:
        cert = None
    if cert is None:
        return b""
    dn = b"".join(b"/" + k + b"=" + v for k, v in cert.get_subject().get_components())
    return dn.replace(b"\r", b"").replace(b"\n", b"")


def _ms(a: float, b: float) -> int:
    return int((b - a) * 1000) if a >= 0 and b >= 0 else -1


def logValues(exchange: Exchange) -> tuple[Any, ...]:
    """
    The access-log fields of the request of C{exchange}, as it ends, in
    the order of L{lbkit._logline.formatHTTPLine}'s arguments (the
    request line as bytes).
    """
    now = exchange.reactor.seconds()
    start = exchange.startedAt
    request = exchange.request
    server = exchange.server
    backend = exchange.backend
    dispatch = exchange.dispatch
    chosen = connected = -1.0
    attempts = 0
    if dispatch is not None:
        chosen, connected, attempts = dispatch.chosenAt, dispatch.connectedAt, dispatch.attempts
    if exchange.waitedUntil >= 0:
        chosen = exchange.waitedUntil
    line = b"-"
    if request is not None:
        line = b"%s %s %s" % (request.method, request.uri, exchange.logVersion or request.version)
    return (
        formatAddress(exchange.client),
        httpDate(),
        exchange.frontend.name,
        backend.name if backend is not None else exchange.frontend.name,  # (HAProxy's "fe fe/<NOSRV>")
        server.name if server is not None else exchange.noServer,
        0,
        _ms(start, chosen),
        _ms(chosen, connected),
        _ms(connected, exchange.respondedAt),
        _ms(start, now),
        exchange.status,
        exchange.bytesOut,
        exchange.termination,
        max(0, attempts - 1),
        line,
    )


def recordLatency(exchange: Exchange, latency: Any) -> None:
    """
    Add the timings of the request of C{exchange}, as it ends, to its
    server's (or, with none, its backend's) L{lbkit._latency.Latency}:
    the C{Tw}, C{Tc}, C{Tr}, C{Ta} of L{logValues}, in seconds.
    """
    start = exchange.startedAt
    dispatch = exchange.dispatch
    chosen = connected = -1.0
    fresh = False
    if dispatch is not None:
        chosen, connected, fresh = dispatch.chosenAt, dispatch.connectedAt, not dispatch.reused
    if exchange.waitedUntil >= 0:
        chosen = exchange.waitedUntil
    responded = exchange.respondedAt
    latency.add((
        chosen - start if chosen >= 0 else -1.0,
        connected - chosen if connected >= 0 and chosen >= 0 else -1.0,
        responded - connected if responded >= 0 and connected >= 0 else -1.0,
        exchange.reactor.seconds() - start,
        fresh,
        exchange.server is not None,
    ))


def logRequest(exchange: Exchange, factory: HTTPProxyFactory) -> None:
    """
    Log the request of C{exchange} as it ends: formatted here and handed
    to C{factory.accessSink} when nothing overrides the line and every
    destination is a buffered writer (docs/operations.md); else its fields
    go to the C{finished} hook and C{factory.logAccess}, unless nobody
    would see them.  A mirrored request's copy learns the status
    (L{lbkit.http._mirror}).
    """
    if exchange.mirror is not None:
        exchange.mirror.primaryAnswered(exchange.status)
    server = exchange.server
    if server is not None:
        if server.latency is not None:
            recordLatency(exchange, server.latency)
    elif getattr(exchange.backend, "latency", None) is not None:
        recordLatency(exchange, exchange.backend.latency)  # type: ignore[union-attr]
    if exchange.trace is not None:
        endTrace(exchange, factory, logValues)  # (docs/tracing.md)
        return
    sink = factory.accessSink
    if sink is not None and writeLogLine(exchange, sink):
        return
    if not exchange.nobodyListens():
        fields = logFields(exchange)
        exchange.hooks.finished(fields)
        factory.logAccess(fields)


def logFields(exchange: Exchange) -> dict[str, Any]:
    """
    The access-log fields of the request of C{exchange}, as it ends
    (L{HTTP_LOG_FORMAT}; docs/http.md, "Access log"), with C{explain} when
    the frontend explains (docs/beyond.md).
    """
    fields = httpFields(*logValues(exchange))
    if exchange.frontend.explain:
        fields["explain"] = explainText(exchange)
    return fields
