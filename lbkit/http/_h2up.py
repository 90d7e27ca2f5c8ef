# -*- test-case-name: tests.test_h2up -*-
"""
http mode: HTTP/2 to servers (C{Server(proto="h2")} over TLS with ALPN,
C{proto="h2c"} in cleartext with prior knowledge): an
L{H2ServerProtocol} per connection multiplexes the requests of many
clients as L{lbkit.http._h2upstream.H2UpStream}s, and L{H2Pool} hands
out a new stream on a connection with room for one (another connection
is opened when every one is at the server's MAX_CONCURRENT_STREAMS).

Nothing of this runs for HTTP/1.1 servers: a frontend's pool becomes an
L{H2Pool} only when one of its backends has such a server
(L{choosePool}), and L{lbkit.http._retry.newServerProtocol} builds an
L{H2ServerProtocol} only for one.

GOAWAY: the connection takes no new stream; its streams above the last
stream id are sent again elsewhere, those below finish; it closes when the
last one is over.  An idle connection closes after the frontend's
C{poolIdleTimeout}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit._connect import connectServer
from lbkit._model import Server
from lbkit._pump import tune
from lbkit.http._h2head import quietFrameBuffer
from lbkit.http._h2upstream import H2UpStream
from lbkit.http._pool import ConnectionPool

if TYPE_CHECKING:
    from h2.connection import H2Connection
    from h2.events import (
        ConnectionTerminated,
        DataReceived,
        InformationalResponseReceived,
        RemoteSettingsChanged,
        ResponseReceived,
        StreamEnded,
        StreamReset,
        TrailersReceived,
        WindowUpdated,
    )

__all__ = [
    "H2ServerProtocol", "H2Pool", "choosePool", "connectAny", "MAX_STREAMS", "CONNECTION_WINDOW",
    "STREAM_WINDOW",
]

_log = Logger(namespace="lbkit.http")

#: At most this many streams on one connection, whatever the server allows.
MAX_STREAMS = 100
#: The connection-level receive window offered to servers.
CONNECTION_WINDOW = 2**22
#: The receive window of each stream (SETTINGS_INITIAL_WINDOW_SIZE): what
#: one stream may buffer in lbkit for a client that does not read, and
#: what a response may carry per round trip.
STREAM_WINDOW = 2**18


def loadH2() -> None:
    """
    Import what of C{h2} this module uses at its first connection (the
    names above are annotations until then): C{h2}'s connection and events
    cost about 1.5 MiB of RSS, which a process that never speaks HTTP/2 to
    a server does not pay (issue 11).
    """
    global H2Connection, _OpenAfterGoAway, ConnectionTerminated, DataReceived, InformationalResponseReceived, RemoteSettingsChanged, ResponseReceived, StreamEnded, StreamReset, TrailersReceived, WindowUpdated
    if _OpenAfterGoAway is not None:
        return
    from h2.connection import (
        ConnectionInputs,
        ConnectionState,
        H2Connection,
        H2ConnectionStateMachine,
    )
    from h2.events import (
        ConnectionTerminated,
        DataReceived,
        InformationalResponseReceived,
        RemoteSettingsChanged,
        ResponseReceived,
        StreamEnded,
        StreamReset,
        TrailersReceived,
        WindowUpdated,
    )

    class _OpenAfterGoAway(H2ConnectionStateMachine):
        """
        C{h2}'s connection states, but a GOAWAY received leaves the connection
        open: the streams at or below its last stream id still get their
        responses (and PING, WINDOW_UPDATE... around them), as RFC 9113 §6.8
        says.  L{H2ServerProtocol} opens no new stream after it.
        """

        _transitions = dict(H2ConnectionStateMachine._transitions)
        _transitions[(ConnectionState.CLIENT_OPEN, ConnectionInputs.RECV_GOAWAY)] = (None, ConnectionState.CLIENT_OPEN)


#: C{h2}'s connection states with a GOAWAY that leaves it open (made by L{loadH2}).
_OpenAfterGoAway: Any = None


@implementer(IPushProducer, IHandshakeListener)
class H2ServerProtocol(Protocol):
    """
    One HTTP/2 connection to a server, carrying many streams.

    @ivar streams: The streams started on it, by id.
    @ivar reserved: Streams handed out and not started yet.
    @ivar opened: Streams started on it so far.
    @ivar writable: Whether its TCP connection takes more (else request
        DATA waits).
    @ivar goingAway: Whether it takes no new stream (GOAWAY either way).
    """

    def __init__(self, server: Server, pool: ConnectionPool[Any]) -> None:
        self.server = server
        self.pool = pool
        self.reactor = pool.reactor
        self.streams: dict[int, H2UpStream] = {}
        self.reserved = 0
        self.opened = 0
        self.writable = True
        self.goingAway = False
        self.lastStreamId = 2**31
        self.idleSince = 0.0
        self._idleCall: Any = None
        self.conn: Any = None
        #: Whether the server's first SETTINGS arrived (streams wait for them).
        self.settingsKnown = False
        self.waiting: list[tuple[H2UpStream, list[tuple[bytes, bytes]], bool]] = []
        # streams are handed out while it connects: a burst of requests
        # shares it instead of each connecting (lbkit.http._h2up.connectAny)
        if isinstance(pool, H2Pool):
            pool.addConnection(self)

    def __repr__(self) -> str:
        return f"<H2ServerProtocol {self.server.name} streams={len(self.streams)}>"

    def connectionMade(self) -> None:
        loadH2()
        transport: Any = self.transport
        tune(transport)
        # (header blocks are built by lbkit from fields checked when read;
        # h2 still marks authorization and cookies never-indexed: one
        # connection carries many clients' requests)
        config = H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False)
        conn = self.conn = H2Connection(config)
        conn.state_machine = _OpenAfterGoAway()
        conn.incoming_buffer = quietFrameBuffer(server=False)
        conn.local_settings = Settings(client=True, initial_values={
            SettingCodes.ENABLE_PUSH: 0,
            SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            SettingCodes.MAX_HEADER_LIST_SIZE: conn.DEFAULT_MAX_HEADER_LIST_SIZE,
        })
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        transport.registerProducer(self, True)
        self.flush()
        self._armIdle()  # (a connection whose request went away meanwhile carries none)

    def handshakeCompleted(self) -> None:
        """
        TLS is up (C{proto="h2"}): a server that did not choose C{h2} with
        ALPN does not speak it; the connection is dropped, its requests fail.
        """
        chosen = getattr(self.transport, "negotiatedProtocol", None)
        if chosen != b"h2":
            _log.warn("{server}: proto='h2' but the server chose {chosen!r} with ALPN, not h2: connection dropped",
                      server=self.server.fullName, chosen=chosen)
            self.abort()

    def connectFailed(self, reason: Failure) -> Failure:
        """The connect failed (or was cancelled): the streams waiting for it go elsewhere."""
        self.goingAway = True
        pool = self.pool
        if isinstance(pool, H2Pool):
            pool.removeConnection(self)
        waiting, self.waiting = self.waiting, []
        for stream, _, _ in waiting:
            stream.h2Lost(reason, True)
        return reason

    def capacity(self) -> int:
        """How many more streams it takes now."""
        if self.goingAway:
            return 0
        limit = MAX_STREAMS
        if self.settingsKnown:
            limit = min(self.conn.remote_settings.max_concurrent_streams, MAX_STREAMS)
        return int(limit) - len(self.streams) - self.reserved - len(self.waiting)

    def newStream(self) -> H2UpStream:
        """A stream for one request (started by its C{startExchange})."""
        self.reserved += 1
        if self._idleCall is not None:
            self._idleCall.cancel()
            self._idleCall = None
        return H2UpStream(self)

    def startStream(self, stream: H2UpStream, headers: list[tuple[bytes, bytes]], end: bool) -> bool:
        """
        Send the HEADERS of C{stream} (once the server's SETTINGS are
        known); C{False} when it cannot go on this connection.
        """
        if stream.reserved:
            stream.reserved = False
            self.reserved -= 1
        if self.goingAway:
            return False
        if not self.settingsKnown:
            self.waiting.append((stream, headers, end))
            return True
        conn = self.conn
        try:
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, headers, end_stream=end)
        except ProtocolError:
            return False
        stream.streamId = sid
        stream._endSent = end
        self.streams[sid] = stream
        self.opened += 1
        self.flush()
        return True

    def flush(self) -> None:
        """Write what the C{h2} state machine has to send."""
        conn = self.conn
        data = conn.data_to_send() if conn is not None else b""
        if data and self.transport is not None:
            self.transport.write(data)

    def ack(self, size: int, sid: Optional[int]) -> None:
        """Acknowledge C{size} bytes of stream C{sid} (WINDOW_UPDATE when due)."""
        if size and sid is not None and self.connected:
            try:
                self.conn.acknowledge_received_data(size, sid)
            except ProtocolError:
                pass

    def resetStream(self, sid: int, code: ErrorCodes) -> None:
        """RST_STREAM C{sid} with C{code}, if it is still open."""
        if not self.connected:
            return
        try:
            self.conn.reset_stream(sid, code)
        except ProtocolError:
            return
        self.flush()

    def streamDone(self, stream: H2UpStream) -> None:
        """C{stream} is over (called by it)."""
        if stream.reserved:
            stream.reserved = False
            self.reserved -= 1
        self.waiting = [w for w in self.waiting if w[0] is not stream] if self.waiting else self.waiting
        sid = stream.streamId
        if sid is not None and self.streams.get(sid) is stream:
            del self.streams[sid]
        if self.streams or self.reserved or self.waiting or not self.connected:
            return
        if self.goingAway:
            self.close()
            return
        self._armIdle()

    def _armIdle(self) -> None:
        """With no stream, close after the pool's idle timeout."""
        if self.streams or self.reserved or self.waiting:
            return
        self.idleSince = self.reactor.seconds()
        timeout = self.pool.idleTimeout
        if timeout > 0 and self._idleCall is None:
            self._idleCall = self.reactor.callLater(timeout, self._idle)

    def _idle(self) -> None:
        self._idleCall = None
        if not self.streams and not self.reserved and not self.waiting:
            self.close()

    def dataReceived(self, data: bytes) -> None:
        conn = self.conn
        try:
            events = conn.receive_data(data)
        except ProtocolError as e:
            _log.info("{server}: HTTP/2 protocol error: {why}", server=self.server.fullName, why=str(e))
            self.flush()  # h2 queued a GOAWAY
            self.goingAway = True
            self.abort()
            return
        streams = self.streams
        flushAll = False
        delivering: list[H2UpStream] = []
        for event in events:
            sid = getattr(event, "stream_id", 0)
            stream = streams.get(sid) if sid else None
            if isinstance(event, DataReceived):
                if stream is None:
                    self.ack(event.flow_controlled_length, sid)
                elif stream.h2Data(event.data, event.flow_controlled_length):
                    delivering.append(stream)
            elif stream is not None:
                if isinstance(event, ResponseReceived):
                    stream.h2Response(event.headers, event.stream_ended is not None)
                elif isinstance(event, InformationalResponseReceived):
                    stream.h2Response(event.headers, False)
                elif isinstance(event, TrailersReceived):
                    stream.h2Trailers(event.headers)
                elif isinstance(event, StreamEnded):
                    stream.h2End()
                elif isinstance(event, StreamReset):
                    stream.h2Reset(event.error_code)
                elif isinstance(event, WindowUpdated):
                    stream.flushBody()
            elif isinstance(event, (RemoteSettingsChanged, WindowUpdated)):
                flushAll = True
                if not self.settingsKnown and isinstance(event, RemoteSettingsChanged):
                    self._startWaiting()
            elif isinstance(event, ConnectionTerminated):
                self._goAway(event)
        for stream in delivering:
            stream.deliver()
        if flushAll:
            self._flushAll()
        self.flush()

    def _startWaiting(self) -> None:
        """The server's SETTINGS arrived: start the streams that waited, as many as it takes."""
        self.settingsKnown = True
        waiting, self.waiting = self.waiting, []
        for stream, headers, end in waiting:
            if stream.closed:
                continue
            if self.capacity() > 0 and self.startStream(stream, headers, end):
                stream.flushBody()
            else:
                stream.refused(counted=False)  # past the server's limit: to another connection

    def _flushAll(self) -> None:
        for stream in list(self.streams.values()):
            stream.flushBody()

    def _goAway(self, event: ConnectionTerminated) -> None:
        """
        The server sent GOAWAY: take no new stream, send those above its
        last stream id again elsewhere, let the others finish.
        """
        self.goingAway = True
        last = event.last_stream_id if event.last_stream_id is not None else 0
        self.lastStreamId = last
        if event.error_code != ErrorCodes.NO_ERROR:
            _log.info("{server}: GOAWAY {code}: {data!r}", server=self.server.fullName, code=event.error_code,
                      data=event.additional_data)
        for sid, stream in list(self.streams.items()):
            if sid > last:
                stream.h2Lost(Failure(ConnectionAbortedError("GOAWAY")), True)
        if not self.streams and not self.reserved:
            self.close()

    def close(self) -> None:
        """GOAWAY, then close (flushing what is buffered)."""
        self.goingAway = True
        transport: Any = self.transport
        if transport is None or not self.connected:
            return
        try:
            self.conn.close_connection()
        except ProtocolError:
            pass
        self.flush()
        if transport.producer is not None:
            transport.unregisterProducer()
        transport.loseConnection()

    def abort(self) -> None:
        """Drop the connection now."""
        self.goingAway = True
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self.goingAway = True
        if self._idleCall is not None:
            self._idleCall.cancel()
            self._idleCall = None
        pool = self.pool
        if isinstance(pool, H2Pool):
            pool.removeConnection(self)
        if not self.settingsKnown:
            # (a TLS failure, no h2 chosen with ALPN, a server that does not speak HTTP/2)
            _log.warn("{server}: HTTP/2 connection lost before the server's SETTINGS: {why}",
                      server=self.server.fullName, why=reason.getErrorMessage())
        last = self.lastStreamId
        for sid, stream in list(self.streams.items()):
            stream.h2Lost(reason, sid > last)
        self.streams.clear()
        waiting, self.waiting = self.waiting, []
        for stream, _, _ in waiting:
            stream.h2Lost(reason, True)

    # -- IPushProducer: the TCP connection to the server is full / has room --

    def pauseProducing(self) -> None:
        """The server does not read: request DATA waits."""
        self.writable = False

    def resumeProducing(self) -> None:
        """The server reads again."""
        self.writable = True
        self._flushAll()

    def stopProducing(self) -> None:
        """The connection is going."""


def connectAny(reactor: Any, server: Server, protocol: Any, timeout: float) -> Deferred[Any]:
    """
    L{lbkit._connect.connectServer}; for an L{H2ServerProtocol}, the
    L{Deferred} fires with its first stream (for the exchange that
    connected it), and the connection is told when its connect failed (the
    streams handed out meanwhile go elsewhere).
    """
    if isinstance(protocol, H2ServerProtocol):
        pool = protocol.pool
        if isinstance(pool, H2Pool):
            # a request sent again (refused) may find room on a connection
            # without connecting (the dispatch connects for a retry)
            pool.removeConnection(protocol)
            stream = pool.get(server)
            if stream is not None:
                stream.reused = False  # as a new connection: a failure of it is a counted retry
                return succeed(stream)
            pool.addConnection(protocol)
        d: Deferred[Any] = connectServer(reactor, server, protocol, timeout)
        return d.addCallbacks(H2ServerProtocol.newStream, protocol.connectFailed)
    return connectServer(reactor, server, protocol, timeout)  # type: ignore[no-any-return]


class H2Pool(ConnectionPool[Any]):
    """
    A frontend's L{ConnectionPool} when some of its servers speak HTTP/2:
    for those, L{get} hands out a new stream on a connection with room for
    one; HTTP/1.1 servers are pooled as before.
    """

    _h2: dict[Server, list[H2ServerProtocol]]

    def get(self, server: Server) -> Optional[Any]:
        """An idle connection to an HTTP/1.1 C{server}, or a stream to an HTTP/2 one, or C{None}."""
        if getattr(server, "proto", None) is None:  # (a mirror's ShadowKey has none)
            return ConnectionPool.get(self, server)
        for conn in self._h2.get(server, ()):
            if conn.capacity() > 0:
                return conn.newStream()
        return None

    def addConnection(self, conn: H2ServerProtocol) -> None:
        """C{conn} connected: hand out its streams."""
        self._h2.setdefault(conn.server, []).append(conn)

    def removeConnection(self, conn: H2ServerProtocol) -> None:
        """C{conn} is gone."""
        conns = self._h2.get(conn.server)
        if conns and conn in conns:
            conns.remove(conn)

    def h2Count(self, server: Optional[Server] = None) -> int:
        """How many HTTP/2 connections are open (to C{server}, or in all)."""
        if server is not None:
            return len(self._h2.get(server, ()))
        return sum(len(v) for v in self._h2.values())

    def closeAll(self) -> None:
        """Close every idle HTTP/1.1 connection and every HTTP/2 one."""
        ConnectionPool.closeAll(self)
        for conns in list(self._h2.values()):
            for conn in list(conns):
                conn.close()


def choosePool(pool: ConnectionPool[Any], backends: Any) -> ConnectionPool[Any]:
    """
    Make C{pool} an L{H2Pool} (in place: connections keep their pool) when
    a server of C{backends} has C{proto} set; else leave it as it is.
    """
    if isinstance(pool, H2Pool):
        return pool
    if any(server.proto is not None for backend in backends for server in backend.servers):
        pool.__class__ = H2Pool
        pool._h2 = {}  # type: ignore[attr-defined]
    return pool
