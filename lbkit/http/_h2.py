# -*- test-case-name: tests.test_http2 -*-
"""
HTTP/2 to clients, over TLS with ALPN (the C{h2} package).

A TLS http frontend that negotiated C{h2} gets an L{H2FrontendProtocol}
instead of the HTTP/1.1 one (see L{lbkit.http._alpn}).  Each stream becomes an
ordinary HTTP/1.1 exchange: an L{H2Stream} is an
L{HTTPFrontendProtocol} whose "client transport" is the stream, so routing,
balancing, queueing, retries, rules, persistence, timeouts and the access
log are the HTTP/1.1 code itself.  Servers are spoken to in HTTP/1.1, with
the same pooled connections.

Flow control: request DATA is acknowledged to the client only once it was
handed to the server connection (whose full buffer pauses the stream);
response bytes are sent as the stream's window allows, and the server
connection is paused while they wait (or while the client's TCP connection
is full).

Safety (see docs/tls.md, "HTTP/2 limits"): each request head is checked
(L{lbkit.http._h2head}) and re-framed for HTTP/1.1 by lbkit; a malformed
one is refused with RST_STREAM PROTOCOL_ERROR.  Reading from a client
stops while its connection is full; a client that does not read for
C{timeoutClient}, resets or gets refused too many streams, or piles up
unread PING/SETTINGS answers gets GOAWAY (ENHANCE_YOUR_CALM) and is closed.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit._address import formatAddress
from lbkit._model import Context
from lbkit.http._body import CHUNKED
from lbkit.http._h2head import MalformedRequest, checkRequestHead, checkTrailers
from lbkit.http._headers import HOP, MESSAGES, connectionTokens
from lbkit.http._parse import BadMessage, Request, Response
from lbkit.http._proxy import CLOSED, WAIT, HTTPFrontendProtocol, HTTPProxyFactory
from lbkit.http._server import HTTPServerProtocol

__all__ = ["H2FrontendProtocol", "H2Stream"]

_log = Logger(namespace="lbkit.http")

#: Connection-level receive window offered to clients (streams keep the
#: protocol's default, 65535 bytes, which bounds what one stream buffers).
CONNECTION_WINDOW = 2**20
_NONE: frozenset[int] = frozenset()

#: SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients (HAProxy's
#: tune.h2.fe.max-concurrent-streams default); a stream opened past it is
#: refused with RST_STREAM REFUSED_STREAM, the connection goes on.
MAX_CONCURRENT_STREAMS = 100

#: The misbehaviour budget of a connection, a token bucket as nghttp2's
#: defence against rapid reset (CVE-2023-44487; nghttp2 1.57 allows a burst
#: of 1000 and 33 a second): each stream the client resets before its
#: response is complete, each stream refused for exceeding
#: MAX_CONCURRENT_STREAMS and each malformed request costs a token; tokens
#: come back at RESET_RATE a second up to RESET_BURST.  With none left the
#: connection gets GOAWAY ENHANCE_YOUR_CALM and is closed.  The burst is
#: smaller than nghttp2's because a stream costs lbkit more than it costs a
#: C library: twice MAX_CONCURRENT_STREAMS (nginx bounds the streams opened in
#: one read the same way) still lets a client cancel all its streams twice
#: in a row.
RESET_BURST = 2 * MAX_CONCURRENT_STREAMS
RESET_RATE = 33.0

#: While the client's connection is full (it does not read), lbkit stops
#: reading from it; PING and SETTINGS frames already read still need an
#: answer, and past this many of them answered into a full connection
#: (Envoy's max_outbound_control_frames default) it is closed with GOAWAY
#: ENHANCE_YOUR_CALM.  One that stays full for timeoutClient is closed too.
MAX_QUEUED_CONTROL = 1000


class _LocalSettings(Settings):
    """
    lbkit's own SETTINGS, as advertised; but the C{h2} package is told of
    no stream limit, because it would enforce MAX_CONCURRENT_STREAMS as a
    connection error: L{H2FrontendProtocol} refuses the extra streams one
    by one instead.
    """

    @property  # type: ignore[override]
    def max_concurrent_streams(self) -> int:
        return 2**31 - 1

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, value: int) -> None:
        self[SettingCodes.MAX_CONCURRENT_STREAMS] = value


# -- the connection --------------------------------------------------------------


@implementer(IPushProducer)
class H2FrontendProtocol(Protocol):
    """
    One HTTP/2 client connection: many L{H2Stream}s over one C{h2}
    connection state machine.
    """

    factory: HTTPProxyFactory

    def __init__(self) -> None:
        self.streams: dict[int, H2Stream] = {}
        self.paused = False
        self._stopping = False
        self._tick: Any = None
        self._closed = False
        self._abortCall: Any = None
        self._pausedSince = 0.0
        self._budget = float(RESET_BURST)
        self._budgetAt = 0.0
        self._queuedControl = 0
        #: streams reset, and reset before they were routed (for the log line)
        self.resets = 0
        self.dropped = 0

    def connectionMade(self) -> None:
        factory = self.factory
        self.reactor = factory.reactor
        self.frontend = factory.frontend
        factory.current += 1
        factory.total += 1
        transport: Any = self.transport
        self.client = transport.getPeer()
        # inbound header blocks are checked by lbkit.http._h2head, per stream
        config = H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=False)
        self.conn = H2Connection(config)
        self.conn.local_settings = _LocalSettings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            SettingCodes.MAX_HEADER_LIST_SIZE: self.conn.DEFAULT_MAX_HEADER_LIST_SIZE,
        })
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        transport.registerProducer(self, True)
        self.flush()
        self._idleSince = self._budgetAt = self.reactor.seconds()
        self._tick = self.reactor.callLater(factory.tickInterval, self._checkIdle)
        factory.connectionOpened(self)

    def flush(self) -> None:
        """Write what the C{h2} state machine has to send."""
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as e:
            _log.info("{client}: HTTP/2 protocol error: {why}", client=formatAddress(self.client), why=str(e))
            self.flush()  # h2 queued a GOAWAY
            self._close()
            return
        streams = self.streams
        # A stream whose RST_STREAM came in the same read as its HEADERS is
        # dropped before it is routed: no server connection, no log line.
        resets = frozenset(e.stream_id for e in events if isinstance(e, StreamReset)) if len(events) > 1 else _NONE
        dropped: set[int] = set()
        flushAll = False
        flush: set[int] = set()
        for event in events:
            if self._closed:
                return
            if isinstance(event, RequestReceived):
                if event.stream_id in resets:
                    dropped.add(event.stream_id)
                    self.dropped += 1
                else:
                    self._request(event)
            elif isinstance(event, DataReceived):
                stream = streams.get(event.stream_id)
                if stream is None:
                    self._ack(event.flow_controlled_length, event.stream_id)
                else:
                    stream.h2Data(event.data, event.flow_controlled_length)
            elif isinstance(event, StreamEnded):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.h2End()
            elif isinstance(event, TrailersReceived):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.h2Trailers(event.headers)
            elif isinstance(event, StreamReset):
                stream = streams.get(event.stream_id)
                if stream is not None or event.stream_id in dropped:
                    self.resets += 1
                    if stream is not None:
                        stream.clientReset()
                    if self.glitch("streams reset by the client"):
                        return
            elif isinstance(event, WindowUpdated):
                if event.stream_id:
                    flush.add(event.stream_id)
                else:
                    flushAll = True
            elif isinstance(event, (PingReceived, RemoteSettingsChanged)):
                if isinstance(event, RemoteSettingsChanged):
                    flushAll = True
                if self.paused:
                    # an answer queued in a connection the client does not read
                    self._queuedControl += 1
                    if self._queuedControl > MAX_QUEUED_CONTROL:
                        self.enhanceYourCalm("PING/SETTINGS answers not read", reading=False)
                        return
            elif isinstance(event, ConnectionTerminated):
                self._close()
                return
        # window updates and settings: each stream is flushed once per read
        if flushAll:
            self._flushAll()
        else:
            for sid in flush:
                stream = streams.get(sid)
                if stream is not None:
                    stream.flushOut()
        self.flush()

    def _request(self, event: RequestReceived) -> None:
        sid = event.stream_id
        if self._stopping:
            self.conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        if len(self.streams) >= MAX_CONCURRENT_STREAMS:
            self.conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            self.glitch("streams past SETTINGS_MAX_CONCURRENT_STREAMS")
            return
        stream = H2Stream(self, sid)
        self.streams[sid] = stream
        stream.start(list(event.headers), event.stream_ended is not None)

    def glitch(self, why: str) -> bool:
        """
        Spend one token of the misbehaviour budget (see L{RESET_BURST});
        with none left, send GOAWAY ENHANCE_YOUR_CALM and close.

        @return: Whether the connection is being closed.
        """
        now = self.reactor.seconds()
        budget = self._budget + (now - self._budgetAt) * RESET_RATE
        self._budget = (budget if budget < RESET_BURST else RESET_BURST) - 1
        self._budgetAt = now
        if self._budget >= 0:
            return False
        self.enhanceYourCalm(why)
        return True

    def enhanceYourCalm(self, why: str, reading: bool = True) -> None:
        """
        The client abuses the connection: GOAWAY ENHANCE_YOUR_CALM, and
        close it with its streams (at once if the client does not read).
        """
        if self._closed:
            return
        _log.warn(
            "{client}: HTTP/2 connection closed (GOAWAY ENHANCE_YOUR_CALM): {why}; "
            "{resets} streams reset by the client ({dropped} before routing)",
            client=formatAddress(self.client), why=why, resets=self.resets, dropped=self.dropped,
        )
        try:
            self.conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
        except ProtocolError:
            pass
        self.flush()
        self._close()
        if not reading and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        for stream in list(self.streams.values()):
            stream.clientGone("CD")

    def _ack(self, size: int, sid: int) -> None:
        if size and not self._closed:
            try:
                self.conn.acknowledge_received_data(size, sid)
            except ProtocolError:
                pass

    def _flushAll(self) -> None:
        for stream in list(self.streams.values()):
            stream.flushOut()

    def streamClosed(self, stream: H2Stream) -> None:
        """Called by C{stream} when it is over."""
        if self.streams.get(stream.streamId) is stream:
            del self.streams[stream.streamId]
        if not self.streams:
            self._idleSince = self.reactor.seconds()
            if self._stopping:
                self._goAway()

    def _goAway(self) -> None:
        if self._closed:
            return
        try:
            self.conn.close_connection()
        except ProtocolError:
            pass
        self.flush()
        self._close()

    def _close(self) -> None:
        if self._abortCall is not None:
            return
        self._closed = True
        transport: Any = self.transport
        if transport is not None:
            if transport.producer is not None:
                transport.unregisterProducer()
            transport.loseConnection()
            # a client that does not read would keep it open: abort it then
            self._abortCall = self.reactor.callLater(
                max(self.frontend.timeoutClient, 1.0), transport.abortConnection
            )

    def _checkIdle(self) -> None:
        self._tick = None
        if self._closed:
            return
        now = self.reactor.seconds()
        if self.paused and now - self._pausedSince >= self.frontend.timeoutClient:
            # nothing it was sent was read for timeoutClient
            self.enhanceYourCalm("the client does not read", reading=False)
            return
        if not self.streams and now - self._idleSince >= self.frontend.timeoutClient:
            self._goAway()
            return
        self._tick = self.reactor.callLater(self.factory.tickInterval, self._checkIdle)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._abortCall is not None:
            if self._abortCall.active():
                self._abortCall.cancel()
            self._abortCall = None
        for stream in list(self.streams.values()):
            stream.clientGone("CD")
        self.streams.clear()
        self.factory.current -= 1
        self.factory.connectionClosed(self)

    # -- drain ---------------------------------------------------------------

    def stopGracefully(self) -> None:
        """Refuse new streams, finish those in flight, then send GOAWAY."""
        self._stopping = True
        if not self.streams:
            self._goAway()

    def kill(self) -> None:
        """Abort every stream (termination C{KD}) and the connection."""
        for stream in list(self.streams.values()):
            if stream.request is not None and stream._state != CLOSED:
                stream.abortExchange("KD")
        self._closed = True
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- IPushProducer: the client's TCP connection is full / has room -------

    def pauseProducing(self) -> None:
        """The client does not read what it is sent: stop reading from it, pause the servers."""
        if self.paused:
            return
        self.paused = True
        self._pausedSince = self.reactor.seconds()
        self._queuedControl = 0
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        for stream in list(self.streams.values()):
            stream.updateProducer()

    def resumeProducing(self) -> None:
        if not self.paused:
            return
        self.paused = False
        if self.transport is not None and not self._closed:
            self.transport.resumeProducing()  # type: ignore[attr-defined]
        for stream in list(self.streams.values()):
            stream.flushOut()

    def stopProducing(self) -> None:
        pass


# -- one stream --------------------------------------------------------------------


class _StreamTransport:
    """What an L{H2Stream}, as an HTTP/1.1 exchange, sees as its client connection."""

    disconnecting = False

    def __init__(self, stream: H2Stream) -> None:
        self.stream = stream
        self.producer: Any = None
        self.paused = False

    @property
    def producerPaused(self) -> bool:
        """Whether the server connection waits for the client (read by C{_clientStalled})."""
        return self.stream.producerPaused

    def getPeer(self) -> Any:
        return self.stream.h2.client

    def getHost(self) -> Any:
        return self.stream.h2.transport.getHost()  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        self.stream.fromServer(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer
        self.stream.producerPaused = False
        self.stream.updateProducer()

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.stream.deliverPending()

    def stopProducing(self) -> None:
        pass

    def loseConnection(self) -> None:
        self.stream.end()

    def abortConnection(self) -> None:
        self.stream.reset(ErrorCodes.INTERNAL_ERROR)


class H2Stream(HTTPFrontendProtocol):
    """
    One HTTP/2 stream, proxied as one HTTP/1.1 exchange.
    """

    _abortOnClose = False
    decodesChunked = True

    def __init__(self, h2: H2FrontendProtocol, streamId: int) -> None:
        HTTPFrontendProtocol.__init__(self)
        self.h2 = h2
        self.streamId = streamId
        self.factory = h2.factory
        self.transport = _StreamTransport(self)  # type: ignore[assignment]
        self.producerPaused = False
        self._pending: list[tuple[bytes, int]] = []
        self._out: deque[bytes] = deque()
        self._outOffset = 0
        self._ending = False
        self._done = False
        self._clientEnded = False
        self._endOnHeaders = False
        self._sent = 0
        #: request body bytes the client declared and has not sent yet, or None
        self._declaredLeft: Optional[int] = None
        self._quiet = False

    def start(self, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        """The request's HEADERS arrived: check it, build the request, route it, choose a server."""
        h2 = self.h2
        self.reactor = h2.reactor
        self.frontend = h2.frontend
        self.client = h2.client
        try:
            head = checkRequestHead(headers, ended)
        except MalformedRequest as e:
            self.malformed(str(e))
            return
        self._proto = b"https"
        self._mtls = getattr(getattr(self.frontend, "tls", None), "clientCA", None) is not None
        self._certTransport = h2.transport
        self._clientHost = getattr(self.client, "host", "").encode("ascii")
        self.writeResponse = self.fromServer
        self._clientEnded = ended
        now = self.reactor.seconds()
        self._since = self._requestStart = now
        self._lastBytes = -1
        self._tick = self.reactor.callLater(self._tickInterval(), self._checkTimeouts)
        method = head.method
        request = Request(method, head.path or b"*", b"HTTP/1.1", head.fields)
        self.request = request
        self._bytesIn = 0
        self._keepAlive = True
        self.upgrading = False
        # lbkit frames the body for HTTP/1.1 itself: the declared length
        # (checked against the DATA received), else chunked
        length = head.contentLength
        self._declaredLeft = length
        framing = 0 if ended else CHUNKED if length is None else length
        self._body.start(framing)
        self._bodyDone = framing == 0
        self._hasBody = framing != 0
        self._status = 0
        self._bytesOut = 0
        self._termination = "--"
        self._attempts = 0
        self._responseStarted = False
        self._closeAfter = True  # one exchange per stream
        self._tw = self._tc = self._tr = -1.0
        self.server = None
        self._state = WAIT
        self.factory.requests += 1
        if method == b"CONNECT":  # no tunnels over HTTP/2 here
            self.backend = None
            self._fail(501, "CR")
            return
        self.context = Context(client=self.client, frontend=self.frontend.name, request=request)
        backend, rules = self.routeRequest(request)
        self.backend = backend
        self._rules = rules
        self._choose()

    # -- request body: client -> server ------------------------------------

    def h2Data(self, data: bytes, flowLength: int) -> None:
        """A DATA frame of this stream arrived."""
        left = self._declaredLeft
        if left is not None and data:
            # (the h2 package checks this too, as a connection error)
            left -= len(data)
            self._declaredLeft = left
            if left < 0:
                self.h2._ack(flowLength, self.streamId)
                self.malformed("more DATA than its content-length")
                return
        if self._done or self._bodyDone:
            self.h2._ack(flowLength, self.streamId)
            return
        if self._body.framing == CHUNKED and data:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self._pending.append((data, flowLength))
        self.deliverPending()

    def h2End(self) -> None:
        """The client ended the stream (its request is complete)."""
        self._clientEnded = True
        if self._declaredLeft:
            self.malformed("stream ended before its content-length")
            return
        if not self._done and not self._bodyDone and self._body.framing == CHUNKED:
            self._pending.append((b"0\r\n\r\n", 0))
            self.deliverPending()

    def h2Trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """A trailers block arrived: checked, and not forwarded."""
        try:
            checkTrailers(headers)
        except MalformedRequest as e:
            self.malformed(str(e))

    def malformed(self, why: str) -> None:
        """
        The request is malformed (RFC 9113 §8.1.1): RST_STREAM
        PROTOCOL_ERROR; a server connection it went to is aborted, never
        pooled (it may be waiting for body bytes that will not come).
        """
        if self._done:
            return
        _log.info("{client}: stream {sid}: malformed HTTP/2 request refused: {why}",
                  client=formatAddress(self.client), sid=self.streamId, why=why)
        if self.request is not None and self._state != CLOSED:
            if self._termination == "--":
                self._termination = "PR"
            conn = self.conn
            if conn is not None:
                conn.sink = None
                conn.abort()
            self._endExchange(reusable=False)
        self._state = CLOSED
        self._resetQuietly(ErrorCodes.PROTOCOL_ERROR)
        self._finish()
        self.h2.glitch("malformed requests")

    def deliverPending(self) -> None:
        """Pass waiting request bytes on, unless the server side is paused."""
        transport: Any = self.transport
        while self._pending and not transport.paused and not self._done:
            data, size = self._pending.pop(0)
            if data and not self._bodyDone:
                self.dataReceived(data)
            self.h2._ack(size, self.streamId)
        self.h2.flush()

    # -- response: server -> client ------------------------------------------

    def responseHead(self, conn: HTTPServerProtocol, response: Response, framing: int, tunnel: bool = False) -> bytes:
        if tunnel:
            # HTTP/2 has no 101 Switching Protocols: nothing was asked for
            self.serverFailed(conn, BadMessage("101 Switching Protocols over HTTP/2", 502), True)
            return b""
        self._endOnHeaders = framing == 0
        return HTTPFrontendProtocol.responseHead(self, conn, response, framing, tunnel)

    def _responseHeadBytes(self, response: Response, interim: bool = False, tunnel: bool = False) -> bytes:
        """Send the response head as a HEADERS frame; nothing goes through C{_write}."""
        headers = [(b":status", b"%d" % response.code)]
        tokens = connectionTokens(response.headers)
        for name, value in response.headers:
            lower = name.lower()
            if lower in HOP or lower in tokens:
                continue
            headers.append((lower, value))
        end = self._endOnHeaders and not interim
        if self._sendHeaders(headers, end) and end:
            self._streamEnded()
        return b""

    def fromServer(self, data: bytes) -> None:
        """Response body bytes from the server, in their HTTP/1.1 framing."""
        if not data or self._done:
            return
        self._out.append(data)
        self.flushOut()

    def flushOut(self) -> None:
        """
        Send buffered response bytes as far as the flow-control windows
        allow, and not into a client connection that is full.
        """
        if self._done:
            return
        h2 = self.h2
        conn = h2.conn
        out = self._out
        sid = self.streamId
        try:
            while out and not h2.paused:
                window = conn.local_flow_control_window(sid)
                if window <= 0:
                    break
                chunk = out[0]
                offset = self._outOffset
                size = min(window, conn.max_outbound_frame_size, len(chunk) - offset)
                conn.send_data(sid, chunk[offset : offset + size])
                self._sent += size
                if offset + size == len(chunk):
                    out.popleft()
                    self._outOffset = 0
                else:
                    self._outOffset = offset + size
            if not out and self._ending:
                conn.end_stream(sid)
                self._streamEnded()
        except ProtocolError as e:
            self._broken(e)
        self.h2.flush()
        self.updateProducer()

    def updateProducer(self) -> None:
        """Pause the server connection while response bytes wait, resume it when they are gone."""
        producer = self.transport.producer  # type: ignore[union-attr]
        if producer is None:
            return
        blocked = bool(self._out) or self.h2.paused
        if blocked != self.producerPaused:
            self.producerPaused = blocked
            if blocked:
                producer.pauseProducing()
            else:
                producer.resumeProducing()

    def responseDone(self, conn: HTTPServerProtocol) -> None:
        conn.bytes = self._sent + sum(len(c) for c in self._out) - self._outOffset
        HTTPFrontendProtocol.responseDone(self, conn)

    # -- errors ----------------------------------------------------------------

    def _fail(self, status: int, termination: str) -> None:
        """Answer with an error status (if nothing was sent yet) and end the stream."""
        self._termination = termination
        self._status = status
        if self._responseStarted:
            self.abortExchange(termination)
            return
        self._releaseSlot()
        body = MESSAGES.get(status, b"Error\n")
        self._bytesOut = len(body)
        self.factory.responses["5xx" if status >= 500 else "4xx"] += 1
        headers = [
            (b":status", b"%d" % status),
            (b"content-type", b"text/plain"),
            (b"cache-control", b"no-cache"),
            (b"content-length", b"%d" % len(body)),
        ]
        if self._sendHeaders(headers, False):
            self._out.append(body)
            self._ending = True
            self.flushOut()
        self._endExchange(reusable=False)
        self._closeClient()

    def _nextRequest(self) -> None:
        self._closeClient()

    def finished(self, fields: dict[str, Any]) -> None:
        request = fields.get("request", "-")
        if request.endswith(" HTTP/1.1"):
            fields["request"] = request[:-8] + "HTTP/2.0"

    def _checkTimeouts(self) -> None:
        HTTPFrontendProtocol._checkTimeouts(self)
        if self._done and self._tick is not None:
            self._tick.cancel()
            self._tick = None

    # -- the stream's end ------------------------------------------------------

    def _sendHeaders(self, headers: list[tuple[bytes, bytes]], end: bool) -> bool:
        if self._done:
            return False
        try:
            self.h2.conn.send_headers(self.streamId, headers, end_stream=end)
        except ProtocolError as e:
            self._broken(e)
            return False
        self.h2.flush()
        return True

    def _broken(self, error: ProtocolError) -> None:
        """C{h2} refused to send: the client reset the stream, or what the server sent cannot go out."""
        termination = "CD"
        if not isinstance(error, StreamClosedError):
            _log.info("{client}: stream {sid}: cannot send the response: {why}",
                      client=formatAddress(self.client), sid=self.streamId, why=str(error))
            self._resetQuietly(ErrorCodes.INTERNAL_ERROR)
            termination = "SD" if self._responseStarted else "SH"
        self.clientGone(termination)

    def end(self) -> None:
        """The exchange is over: end the stream once its bytes are sent."""
        if self._done:
            return
        self._ending = True
        self.flushOut()

    def _streamEnded(self) -> None:
        self._ending = False
        if not self._clientEnded:
            # the response is complete: the rest of the request is not wanted
            self._resetQuietly(ErrorCodes.NO_ERROR)
        self._finish()

    def reset(self, code: ErrorCodes) -> None:
        """Abandon the stream with RST_STREAM."""
        if self._done:
            return
        self._resetQuietly(code)
        self._finish()

    def _resetQuietly(self, code: ErrorCodes) -> None:
        try:
            self.h2.conn.reset_stream(self.streamId, code)
        except ProtocolError:
            pass
        self.h2.flush()

    def clientReset(self) -> None:
        """
        The client reset the stream.  One reset before the request went to
        a server (routing, queue, connect) is not logged: it cost no server
        anything, and a flood of them would flood the log too.
        """
        if self._state == WAIT:
            self._quiet = True
        self.clientGone("CD")

    def _log(self) -> None:
        if not self._quiet:
            HTTPFrontendProtocol._log(self)

    def clientGone(self, termination: str) -> None:
        """The client reset the stream, or its connection is gone."""
        if self._done:
            return
        self._clientGone = True
        if self._state != CLOSED and self.request is not None:
            if self._termination == "--":
                self._termination = termination
            self._endExchange(reusable=False)
        self._state = CLOSED
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._abortCall is not None:
            if self._abortCall.active():
                self._abortCall.cancel()
            self._abortCall = None
        self._out.clear()
        pending, self._pending = self._pending, []
        for _, size in pending:
            self.h2._ack(size, self.streamId)
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self.h2.streamClosed(self)
