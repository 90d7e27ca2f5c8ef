# -*- test-case-name: tests.test_http -*-
"""
http mode: the constants and small helpers both sides of the proxy share
(status texts, hop-by-hop header names, the access-log format).
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from lbkit._model import formatAddress

_log = Logger(namespace="lbkit.http")
_DONE = Failure(ConnectionDone())

#: The access-log line of one http request (see docs/http.md).
HTTP_LOG_FORMAT = (
    "{client} [{date}] {frontend} {backend}/{server} {TR}/{Tw}/{Tc}/{Tr}/{Ta} "
    "{status} {bytes} {termination} {retries} \"{request}\""
)

MAX_HEAD = 65536
#: At most this many bytes of a request body are read and dropped after the
#: server already answered; past it the client connection is closed.
DRAIN_LIMIT = 4 * 1024 * 1024
_HOP = frozenset(
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
_CODE_CLASS = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")
_IDEMPOTENT = frozenset([b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"])
_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}
_MESSAGES = {
    400: b"Your browser sent an invalid request.\n",
    408: b"Your browser didn't send a complete request in time.\n",
    431: b"The request headers are too large.\n",
    501: b"This method is not implemented.\n",
    502: b"The server returned an invalid or incomplete response.\n",
    503: b"No server is available to handle this request.\n",
    504: b"The server didn't respond in time.\n",
    505: b"This HTTP version is not supported.\n",
}

# client connection states
_HEAD, _WAIT, _SENT, _TUNNEL, _CLOSED = range(5)


def _discard(data: bytes) -> None:
    pass


def _errorResponse(status: int) -> bytes:
    body = _MESSAGES.get(status, b"Error\n")
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
            b"Content-Type: text/plain\r\nCache-Control: no-cache\r\nConnection: close\r\n",
            b"Content-Length: %d\r\n\r\n" % len(body),
            body,
        ]
    )


#: Headers a C{Connection} header may not remove: the framing lbkit has
#: already read (dropping Content-Length would let a body pass for the next
#: request: request smuggling) and the Host.
_NEVER_HOP = frozenset([b"content-length", b"host"])


def _connectionTokens(headers: list[list[bytes]]) -> set[bytes]:
    """
    The lower-cased options of the C{Connection} headers: hop-by-hop header
    names, C{close}, C{keep-alive}, C{upgrade} (never C{content-length} or
    C{host}).
    """
    tokens: set[bytes] = set()
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    if tokens:
        tokens -= _NEVER_HOP
    return tokens


_formatAddress = formatAddress
