# -*- test-case-name: tests.test_health_h2 -*-
"""
L{HTTPCheck} towards HTTP/2-only servers (C{Server(proto="h2c")}, prior
knowledge, and C{Server(proto="h2")}, TLS with ALPN h2, e.g. grpcio): one
stream on a new connection, sans-I/O with the C{h2} package.  The status
and the first C{maxBody} bytes of the body are judged as over HTTP/1.1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from h2.config import H2Configuration
from h2.exceptions import H2Error
from OpenSSL import SSL
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from lbkit.error import CheckFailed
from lbkit.health._base import connectReason

if TYPE_CHECKING:
    from h2.connection import H2Connection
    from h2.events import (
        ConnectionTerminated,
        DataReceived,
        ResponseReceived,
        StreamEnded,
        StreamReset,
    )

__all__ = ["H2Probe"]

# connection-specific fields HTTP/2 forbids (RFC 9113, 8.2.2); Host goes as :authority
_DROPPED = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host"))
_STREAM = 1


def _loadH2() -> None:
    # h2's connection and events are imported by the first check over
    # HTTP/2, not when lbkit is (issue 11: RSS)
    global H2Connection, ConnectionTerminated, DataReceived, ResponseReceived, StreamEnded, StreamReset
    from h2.connection import H2Connection
    from h2.events import (
        ConnectionTerminated,
        DataReceived,
        ResponseReceived,
        StreamEnded,
        StreamReset,
    )


class _OneProtocol(Factory):
    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self.protocol_ = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_


class H2Probe(Protocol):
    """
    One HTTP/2 check in flight: connect, send one request on stream 1,
    read the response head (and the body when C{check.body} is set), close.

    @ivar result: Fires with C{None} when the check passes, fails with
        L{CheckFailed} (HAProxy-style reason) when it does not.
    """

    def __init__(self, check: Any, endpoint: IStreamClientEndpoint, host: str, secure: bool) -> None:
        self.check = check
        self.endpoint = endpoint
        self.host = host
        self.secure = secure
        self.connected = False
        self.done = False
        self.code = 0
        self.body: Optional[list[bytes]] = None
        self.size = 0
        self.result: Deferred[None] = Deferred(self._cancel)
        self._connecting: Optional[Deferred[Any]] = None
        _loadH2()
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))

    def start(self) -> Deferred[None]:
        """Connect and send the request; returns L{result}."""
        self._connecting = self.endpoint.connect(_OneProtocol(self))
        self._connecting.addErrback(self._connectFailed)
        return self.result

    def _connectFailed(self, reason: Failure) -> None:
        self._connecting = None
        if not self.done and not reason.check(CancelledError):
            self._finish(connectReason(reason))

    def connectionMade(self) -> None:
        self._connecting = None
        self.connected = True
        check = self.check
        headers = [
            (b":method", check.method.encode("ascii")),
            (b":scheme", b"https" if self.secure else b"http"),
            (b":authority", self.host.encode("ascii")),
            (b":path", check.path.encode("ascii")),
            (b"user-agent", b"lbkit-health-check"),
        ]
        for name, value in check.headers.items():
            lowered = name.lower().encode("ascii")
            if lowered not in _DROPPED:
                headers.append((lowered, value.encode("latin-1")))
        self.conn.initiate_connection()
        try:
            self.conn.send_headers(_STREAM, headers, end_stream=True)
        except H2Error as e:  # e.g. a header HTTP/2 forbids, such as te: gzip
            self._finish(f'Layer7 invalid request, info: "HTTP/2 refuses the request head: {e}"')
            return
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        if self.done:
            return
        chosen = getattr(self.transport, "negotiatedProtocol", None)
        if self.secure and chosen is not None and chosen != b"h2":
            self._finish(f'Layer7 invalid response, info: "the server chose {chosen!r} with ALPN, not h2"')
            return
        if not self.code and data.startswith(b"HTTP/"):
            self._finish('Layer7 invalid response, info: "an HTTP/1 answer to the HTTP/2 preface"')
            return
        try:
            events = self.conn.receive_data(data)
        except H2Error as e:
            self._finish(f'Layer7 invalid response, info: "not HTTP/2: {e}"')
            return
        for event in events:
            if self.done:
                return
            if isinstance(event, ResponseReceived) and event.stream_id == _STREAM:
                self._gotHead(event.headers)
            elif isinstance(event, DataReceived) and event.stream_id == _STREAM:
                self.conn.acknowledge_received_data(event.flow_controlled_length, _STREAM)
                self._gotData(event.data)
            elif isinstance(event, StreamEnded) and event.stream_id == _STREAM:
                self._bodyDone()
            elif isinstance(event, StreamReset) and event.stream_id == _STREAM:
                self._finish(f'Layer7 invalid response, info: "stream reset by the server ({event.error_code!s})"')
            elif isinstance(event, ConnectionTerminated):
                self._finish(f'Layer7 invalid response, info: "GOAWAY from the server ({event.error_code!s})"')
        if not self.done:
            self._flush()

    def _gotHead(self, headers: Any) -> None:
        status = dict(headers).get(b":status", b"0")
        try:
            self.code = int(status)
        except ValueError:
            self.code = 0
        if not self.check.statusMatches(self.code):
            self._finish(f"Layer7 wrong status, code: {self.code}")
        elif self.check.body is None:
            self._finish(None)
        else:
            self.body = []
            if self.check.maxBody <= 0:
                self._bodyDone()

    def _gotData(self, data: bytes) -> None:
        if self.body is None:
            return
        self.body.append(data)
        self.size += len(data)
        if self.size >= self.check.maxBody:
            self._bodyDone()

    def _bodyDone(self) -> None:
        if self.body is None:
            return
        body = b"".join(self.body)[: self.check.maxBody]
        if self.check.bodyMatches(body):
            self._finish(None)
        else:
            self._finish(f'Layer7 wrong content, code: {self.code}, info: "body did not match"')

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.done:
            return
        if reason.check(SSL.Error):
            self._finish(f'Layer6 invalid response, info: "TLS: {reason.getErrorMessage()}"')
        else:
            self._finish(f'Layer7 invalid response, info: "connection closed: {reason.getErrorMessage()}"')

    def _finish(self, reason: Optional[str]) -> None:
        if self.done:
            return
        self.done = True
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        if reason is None:
            self.result.callback(None)
        else:
            self.result.errback(CheckFailed(reason))

    def _cancel(self, d: Deferred[None]) -> None:
        # The monitor's timeout: say where the time went, then abort.
        self._finish("Layer7 timeout" if self.connected else "Layer4 timeout")
        if self._connecting is not None:
            self._connecting.cancel()
