# -*- test-case-name: tests.test_health_checks -*-
"""
L{HTTPCheck}: send one HTTP request with Twisted's own client (L{twisted.web.client.Agent})
and check the status and, optionally, the body of the answer.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from lbkit._model import Server
from lbkit.error import CheckFailed, ConfigError
from lbkit.health._base import BaseCheck, connectReason
from lbkit.health._h2check import H2Probe

if TYPE_CHECKING:
    from twisted.web.client import Response

__all__ = ["HTTPCheck"]

Status = Union[int, range, Sequence[int]]
BodyPattern = Union[str, bytes, "re.Pattern[str]", "re.Pattern[bytes]", None]

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # (\Z: $ matches before a final newline)


def _checkStatus(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    codes = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        ok = bool(len(codes)) and all(
            isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in codes
        )
    except TypeError:
        ok = False
    if not ok:
        raise ConfigError(
            f"HTTPCheck: status must be a code (200), a range (range(200, 400)) or a list of "
            f"codes from 100 to 599, not {value!r}"
        )


def _checkBody(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None or isinstance(value, (str, bytes, re.Pattern)):
        return
    raise ConfigError(f"HTTPCheck: body must be a string, bytes or re.compile(...) pattern, not {value!r}")


def _checkPath(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.startswith("/") or any(c in value for c in " \r\n"):
        raise ConfigError(f"HTTPCheck: path must start with '/' and hold no spaces, not {value!r}")


def _checkMethod(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise ConfigError(f"HTTPCheck: method must be an HTTP method such as 'GET', not {value!r}")


def _checkHost(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value or any(c in value for c in " \r\n/")):
        raise ConfigError(f"HTTPCheck: host must be a Host header value such as 'app.example', not {value!r}")


@functools.cache
def _quietClientFactory() -> Any:
    """Twisted's HTTP/1.1 client factory without its "Starting factory" line per check."""
    # twisted.web.client (with twisted.web.http and its HTTP/2 glue) is
    # imported at the first HTTPCheck, not at start-up: a process that
    # checks no server over HTTP does not pay its RSS (issue 11)
    from twisted.web.client import _HTTP11ClientFactory

    return type("_QuietClientFactory", (_HTTP11ClientFactory,), {"noisy": False})


@implementer(IAgentEndpointFactory)
class _OneEndpoint:
    """Every URI goes to the same endpoint (the server's, not DNS's)."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self.endpoint = endpoint

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        return self.endpoint


@implementer(IStreamClientEndpoint)
class _NotingEndpoint:
    """Wraps an endpoint to note when the connection is up."""

    def __init__(self, wrapped: IStreamClientEndpoint, probe: _HTTPProbe) -> None:
        self.wrapped = wrapped
        self.probe = probe

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        d = self.wrapped.connect(protocolFactory)

        def connected(protocol: Any) -> Any:
            self.probe.connected = True
            return protocol

        return d.addCallback(connected)


class _BodyReader(Protocol):
    """Keeps at most C{limit} bytes of a body, then stops reading."""

    def __init__(self, probe: _HTTPProbe, limit: int) -> None:
        self.probe = probe
        self.limit = limit
        self.data: list[bytes] = []
        self.size = 0

    def connectionMade(self) -> None:
        if self.limit <= 0:
            self._stop()

    def dataReceived(self, data: bytes) -> None:
        if self.size >= self.limit:
            return
        self.data.append(data)
        self.size += len(data)
        if self.size >= self.limit:
            self._stop()

    def _stop(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]
        self.probe.bodyDone(b"".join(self.data)[: self.limit])

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.probe.bodyDone(b"".join(self.data)[: self.limit])


class _HTTPProbe:
    """One check in flight: the request, then the body when one is expected."""

    def __init__(self, check: HTTPCheck, server: Server, reactor: Any) -> None:
        self.check = check
        self.connected = False
        self.done = False
        self.code = 0
        self.result: Deferred[None] = Deferred(self._cancel)
        self._request: Deferred[Any] | None = None
        self._reader: _BodyReader | None = None
        # the first probe imports twisted.web.client (see _quietClientFactory)
        from twisted.web.client import Agent, HTTPConnectionPool

        endpoint = _checkEndpoint(check, server, reactor)
        pool = HTTPConnectionPool(reactor, persistent=False)
        pool._factory = _quietClientFactory()  # no "Starting factory" line per check
        self.agent = Agent.usingEndpointFactory(reactor, _OneEndpoint(_NotingEndpoint(endpoint, self)), pool)
        self.host = _hostOf(check, server, check.tls is not None)

    def start(self) -> Deferred[None]:
        check = self.check
        scheme = "https" if check.tls is not None else "http"
        uri = f"{scheme}://{self.host}{check.path}".encode("ascii")
        headers = Headers({b"host": [self.host.encode("ascii")], b"user-agent": [b"lbkit-health-check"]})
        for name, value in check.headers.items():
            headers.addRawHeader(name.encode("ascii"), value.encode("latin-1"))
        self._request = self.agent.request(check.method.encode("ascii"), uri, headers)
        self._request.addCallbacks(self._gotResponse, self._requestFailed)
        return self.result

    def _finish(self, reason: str | None) -> None:
        if self.done:
            return
        self.done = True
        if reason is None:
            self.result.callback(None)
        else:
            self.result.errback(CheckFailed(reason))

    def _cancel(self, d: Deferred[None]) -> None:
        # The monitor's timeout: say where the time went, then abort.
        self._finish("Layer7 timeout" if self.connected else "Layer4 timeout")
        if self._reader is not None and self._reader.transport is not None:
            self._reader.transport.stopProducing()  # type: ignore[attr-defined]
        if self._request is not None:
            self._request.cancel()

    def _requestFailed(self, reason: Failure) -> None:
        if self.done:
            return
        if reason.check(CheckFailed):
            self._finish(reason.getErrorMessage())
        elif not self.connected:
            self._finish(connectReason(reason))
        elif reason.check(CancelledError):
            self._finish("Layer7 timeout")
        else:
            self._finish(f'Layer7 invalid response, info: "{_describe(reason)}"')

    def _gotResponse(self, response: Response) -> None:
        self._request = None
        if self.done:
            return
        self.code = response.code
        check = self.check
        if not check.statusMatches(response.code):
            self._finish(f"Layer7 wrong status, code: {response.code}")
            _discard(response)
            return
        if check.body is None:
            self._finish(None)
            _discard(response)
            return
        self._reader = _BodyReader(self, check.maxBody)
        response.deliverBody(self._reader)

    def bodyDone(self, body: bytes) -> None:
        if self.done:
            return
        if self.check.bodyMatches(body):
            self._finish(None)
        else:
            self._finish(f"Layer7 wrong content, code: {self.code}, info: \"body did not match\"")


def _checkEndpoint(check: HTTPCheck, server: Server, reactor: Any) -> IStreamClientEndpoint:
    endpoint: IStreamClientEndpoint = check.endpointFor(server, reactor)
    # the server's own endpoint is already TLS when Server(tls=True) and
    # the check goes to the traffic address: do not wrap it twice
    if check.tls is not None and not _ownTLS(check, server):
        endpoint = wrapClientTLS(check.tls, endpoint)
    return endpoint


def _ownTLS(check: HTTPCheck, server: Server) -> bool:
    return bool(server.tls) and check.addr is None and check.port is None


def _hostOf(check: HTTPCheck, server: Server, secure: bool) -> str:
    if check.host is not None:
        return check.host
    addr, port = check.target(server)
    addr = addr or "localhost"
    if ":" in addr:
        addr = f"[{addr}]"
    default = 443 if secure else 80
    return addr if port in (default, 0) else f"{addr}:{port}"


def _discard(response: Response) -> None:
    response.deliverBody(_BodyReader(_Sink(), 0))  # type: ignore[arg-type]


class _Sink:
    def bodyDone(self, body: bytes) -> None:
        pass


def _describe(reason: Failure) -> str:
    inner = getattr(reason.value, "reasons", None)
    if inner:
        return "; ".join(f.getErrorMessage() for f in inner)
    return reason.getErrorMessage()


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and _TOKEN.match(k) and isinstance(v, str) and "\n" not in v and "\r" not in v
        for k, v in value.items()
    ):
        raise ConfigError(f"HTTPCheck: headers must be a dict of header name to value (str), not {value!r}")
    return dict(value)


def _positiveInt(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"HTTPCheck: {attribute.name} must be a positive integer, not {value!r}")


@attrs.frozen
class HTTPCheck(BaseCheck):
    """
    Send C{method path} to the server with Twisted's HTTP client and check
    the answer: HAProxy's C{option httpchk} with C{http-check expect}.  A
    new connection is used for each check and closed after it.  To a
    server with C{proto="h2c"} or C{proto="h2"} (HTTP/2 only, e.g. grpcio)
    the request goes as one HTTP/2 stream instead: prior knowledge for
    C{h2c}, TLS with ALPN h2 for C{h2} (cleartext prior knowledge when
    C{addr}/C{port} point elsewhere and C{tls} is unset).

    Takes every keyword argument of L{BaseCheck} too: C{interval}, C{rise},
    C{fall}, C{timeout}, C{fastinter}, C{downinter}, C{addr}, C{port},
    C{observe} and the rest.

    @ivar path: The request path, e.g. C{"/healthz"}; default C{"/"}.
    @ivar method: The request method; default C{"GET"}.
    @ivar host: The C{Host} header; default the probed address and port.
    @ivar headers: More request headers, C{{"name": "value"}}.
    @ivar status: The status codes that pass: one code (C{200}), a range
        (C{range(200, 300)}) or a list; default C{range(200, 400)} (2xx and
        3xx, as HAProxy).
    @ivar body: When set, the body must also match: a substring (C{str} or
        C{bytes}) or a compiled regular expression (C{re.compile(...)},
        searched).  Only the first C{maxBody} bytes are read.
    @ivar maxBody: How much of the body to read for C{body}; default 16384.
    @ivar tls: An C{IOpenSSLClientConnectionCreator}, e.g.
        C{twisted.internet.ssl.optionsForClientTLS("app.internal")}, to run
        the check over TLS; default C{None} (plain HTTP).
    """

    path: str = attrs.field(default="/", validator=_checkPath)
    method: str = attrs.field(default="GET", validator=_checkMethod, kw_only=True)
    host: Optional[str] = attrs.field(default=None, validator=_checkHost, kw_only=True)
    headers: Mapping[str, str] = attrs.field(default=None, converter=_headers, kw_only=True)
    status: Status = attrs.field(default=range(200, 400), validator=_checkStatus, kw_only=True)
    body: BodyPattern = attrs.field(default=None, validator=_checkBody, kw_only=True)
    maxBody: int = attrs.field(default=16384, validator=_positiveInt, kw_only=True)
    tls: Any = attrs.field(default=None, kw_only=True)

    passReason = "Layer7 check passed"

    def statusMatches(self, code: int) -> bool:
        """Whether status C{code} passes."""
        if isinstance(self.status, int):
            return code == self.status
        return code in self.status

    def bodyMatches(self, body: bytes) -> bool:
        """Whether C{body} (the first C{maxBody} bytes) passes."""
        pattern = self.body
        if pattern is None:
            return True
        if isinstance(pattern, bytes):
            return pattern in body
        if isinstance(pattern, str):
            return pattern.encode("utf-8") in body
        if isinstance(pattern.pattern, bytes):
            return pattern.search(body) is not None  # type: ignore[arg-type]
        return pattern.search(body.decode("utf-8", "replace")) is not None  # type: ignore[arg-type]

    def check(self, server: Server, reactor: Any) -> Deferred[None]:
        if server.proto is not None:
            # an HTTP/2-only server (gRPC and the like): one HTTP/2 stream
            secure = self.tls is not None or _ownTLS(self, server)
            endpoint = _checkEndpoint(self, server, reactor)
            return H2Probe(self, endpoint, _hostOf(self, server, secure), secure).start()
        return _HTTPProbe(self, server, reactor).start()
