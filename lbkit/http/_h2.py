# -*- test-case-name: tests.test_http2 -*-
"""
HTTP/2 to clients, over TLS with ALPN, or cleartext with prior knowledge
(h2c), with the C{h2} package.

A TLS http frontend that negotiated C{h2} gets an L{H2FrontendProtocol}
instead of the HTTP/1.1 one (see L{lbkit.http._alpn}); on a cleartext
frontend, a connection that opens with the HTTP/2 preface is handed to one
(L{lbkit.http._frontend.HTTPProxyFactory.handOverH2c}).  Each stream is an
L{lbkit.http._h2stream.H2Stream}, the client side of one
L{lbkit.http._exchange.Exchange} as an HTTP/1.1 connection is: routing,
balancing, queueing, retries, rules, persistence, timeouts, the access log
and the hooks of the frontend's protocol class are the same code.  Servers
are spoken to in HTTP/1.1, with the same pooled connections.

Safety (see docs/tls.md, "HTTP/2 limits"): each request head is checked
(L{lbkit.http._h2head}) and re-framed for HTTP/1.1 by lbkit; a malformed
one is refused with RST_STREAM PROTOCOL_ERROR.  Reading from a client
stops while its connection is full; a client that does not read for
C{timeoutClient}, resets or gets refused too many streams, or piles up
unread PING/SETTINGS answers gets GOAWAY (ENHANCE_YOUR_CALM) and is closed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit._address import formatAddress
from lbkit.http._h2head import quietFrameBuffer
from lbkit.http._h2stream import H2Stream

if TYPE_CHECKING:
    from h2.connection import H2Connection
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

    from lbkit.http._frontend import HTTPProxyFactory

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


def loadH2() -> None:
    """
    Import what of C{h2} this module uses at the first HTTP/2 client (the
    names above are annotations until then), not when lbkit is (issue 11:
    RSS); L{lbkit.http._h2up.loadH2} does the same for servers.
    """
    global _loaded, H2Connection, ConnectionTerminated, DataReceived, PingReceived, RemoteSettingsChanged, RequestReceived, StreamEnded, StreamReset, TrailersReceived, WindowUpdated
    if _loaded:
        return
    from h2.connection import H2Connection
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
    _loaded = True


_loaded = False


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
    #: What its streams go to servers as (C{X-Forwarded-Proto}): C{b"http"}
    #: for h2c (L{lbkit.http._frontend.HTTPProxyFactory.handOverH2c}).
    scheme = b"https"

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
        transport: Any = self.transport
        self.client = transport.getPeer()
        loadH2()
        # inbound header blocks are checked by lbkit.http._h2head, per stream
        config = H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=False)
        self.conn = H2Connection(config)
        self.conn.incoming_buffer = quietFrameBuffer(server=True)  # (no hex dump of each DATA frame)
        self.conn.local_settings = _LocalSettings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            SettingCodes.MAX_HEADER_LIST_SIZE: self.conn.DEFAULT_MAX_HEADER_LIST_SIZE,
            SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,  # WebSocket over HTTP/2 (RFC 8441)
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
                    self.ack(event.flow_controlled_length, event.stream_id)
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

    def ack(self, size: int, sid: int) -> None:
        """Acknowledge C{size} flow-controlled bytes of stream C{sid} (WINDOW_UPDATE)."""
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
            stream.kill()
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
