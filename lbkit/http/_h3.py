# -*- test-case-name: tests.test_http3 -*-
"""
HTTP/3 to clients: QUIC on the UDP port of a TLS http frontend
(C{http.Frontend(..., tls=..., http3=True)}), through aioquic's sans-I/O
C{QuicConnection} and C{H3Connection}, driven by Twisted's UDP transport and
the reactor's clock (aioquic's timer of each connection is one C{callLater}).

L{H3Server} is the port's datagram protocol: it reads each datagram's QUIC
header, answers a version it does not speak with Version Negotiation, may
ask a new client to prove its address with a Retry token first, and hands
the datagram to the L{H3FrontendConnection} of its connection ID.  Each
request stream is an L{lbkit.http._h3stream.H3Stream}, the client side of
one exchange as an HTTP/2 stream is.

Bounds: at most L{MAX_CONNECTIONS} QUIC connections per frontend and
L{MAX_CONNECTIONS_PER_CLIENT} per client address (the Initial of one more
is dropped, and counted); at most L{MAX_CONCURRENT_STREAMS} requests in
flight per connection (one more is refused with H3_REQUEST_REJECTED); a
connection that keeps resetting or sending malformed requests spends the
same budget as HTTP/2's (L{lbkit.http._h2.RESET_BURST}) and is closed
with H3_EXCESSIVE_LOAD.  Malformed QUIC and HTTP/3 framing gets aioquic's
own connection errors.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from lbkit._address import formatAddress
from lbkit.http._h2 import RESET_BURST, RESET_RATE
from lbkit.http._h3quic import KeyPairs, serverQuicConnection
from lbkit.http._h3stream import H3_EXCESSIVE_LOAD, H3_NO_ERROR, H3_REQUEST_REJECTED, H3Stream
from lbkit.tls import Certificates

if TYPE_CHECKING:
    from aioquic.buffer import Buffer  # type: ignore[attr-defined]
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
    from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.events import (
        ConnectionIdIssued,
        ConnectionIdRetired,
        ConnectionTerminated,
        ProtocolNegotiated,
        StreamReset,
    )
    from aioquic.quic.packet import (
        QuicPacketType,
        encode_quic_retry,
        encode_quic_version_negotiation,
        pull_quic_header,
    )
    from aioquic.quic.retry import QuicRetryTokenHandler

    from lbkit.http._frontend import HTTPProxyFactory

__all__ = ["H3Server", "H3FrontendConnection", "MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_CLIENT",
           "MAX_CONCURRENT_STREAMS", "quicConfiguration", "loadAioquic"]

_log = Logger(namespace="lbkit.http")

MAX_CONNECTIONS = 10_000
MAX_CONNECTIONS_PER_CLIENT = 64
MAX_CONCURRENT_STREAMS = 100


def loadAioquic() -> None:
    """
    Import aioquic's names this module uses (the first L{H3Server} does):
    a process without HTTP/3 does not pay aioquic's and pylsqpack's RSS
    (issue 11), and the names above are annotations until then.
    """
    global Buffer, H3_ALPN, H3Connection, DataReceived, HeadersReceived, SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
    global ConnectionIdIssued, ConnectionIdRetired, ConnectionTerminated, ProtocolNegotiated, StreamReset
    global QuicPacketType, encode_quic_retry, encode_quic_version_negotiation, pull_quic_header, QuicRetryTokenHandler
    from aioquic.buffer import Buffer  # type: ignore[attr-defined]
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import DataReceived, HeadersReceived
    from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
    from aioquic.quic.events import (
        ConnectionIdIssued,
        ConnectionIdRetired,
        ConnectionTerminated,
        ProtocolNegotiated,
        StreamReset,
    )
    from aioquic.quic.packet import (
        QuicPacketType,
        encode_quic_retry,
        encode_quic_version_negotiation,
        pull_quic_header,
    )
    from aioquic.quic.retry import QuicRetryTokenHandler


def quicConfiguration(certs: Certificates, idleTimeout: float) -> QuicConfiguration:
    """
    A server C{QuicConfiguration} offering C{h3}, with the default key pair
    of C{certs} (each connection then takes the one for its client's server
    name: L{lbkit.http._h3quic.serverQuicConnection}).
    """
    loaded = certs.lookup(None)
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, idle_timeout=idleTimeout)
    config.private_key = loaded.privateKey.to_cryptography_key()
    config.certificate = loaded.certificate.to_cryptography()
    config.certificate_chain = [c.to_cryptography() for c in loaded.extraCertChain]
    return config


def _address(addr: tuple[Any, ...]) -> Any:
    host, port = addr[0], addr[1]
    return IPv6Address("UDP", host, port) if ":" in host else IPv4Address("UDP", host, port)


class H3Server(DatagramProtocol):
    """
    The datagram protocol of a frontend's QUIC port: connection IDs to
    L{H3FrontendConnection}s.

    @ivar refused: Initial packets dropped because of the connection bounds.
    @ivar retry: Whether a new client must first echo a Retry token
        (proof that it owns its address), as aioquic's C{retry=True}.
    """

    def __init__(self, factory: HTTPProxyFactory, certs: Certificates, retry: bool = False) -> None:
        loadAioquic()
        self.factory = factory
        self.certs = certs
        self.retry = retry
        self.connections: dict[bytes, H3FrontendConnection] = {}
        self.keyPairs = KeyPairs(certs)
        self.perClient: dict[str, int] = {}
        self.refused = 0
        self.open = 0
        self._retry = QuicRetryTokenHandler() if retry else None
        self._emptyWaiters: list[Deferred[None]] = []
        self._config: Optional[QuicConfiguration] = None
        self._generation = -1

    def configuration(self) -> QuicConfiguration:
        """The QUIC configuration for a new connection (rebuilt after the certificates are reloaded)."""
        if self._config is None or self._generation != self.certs.generation:
            self._config = quicConfiguration(self.certs, self.factory.frontend.timeoutClient)
            self._generation = self.certs.generation
        return self._config

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=8)
        except ValueError:
            return  # not QUIC
        config = self.configuration()
        if (
            header.packet_type != QuicPacketType.VERSION_NEGOTIATION
            and header.version is not None
            and header.version not in config.supported_versions
        ):
            self.send(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=config.supported_versions,
                ),
                addr,
            )
            return
        connection = self.connections.get(header.destination_cid)
        if connection is None:
            if len(data) < SMALLEST_MAX_DATAGRAM_SIZE or header.packet_type != QuicPacketType.INITIAL:
                return
            connection = self._accept(header, addr, config)
            if connection is None:
                return
        connection.datagramReceived(data, addr)

    def _accept(self, header: Any, addr: Any, config: QuicConfiguration) -> Optional[H3FrontendConnection]:
        host = addr[0]
        if self.open >= MAX_CONNECTIONS or self.perClient.get(host, 0) >= MAX_CONNECTIONS_PER_CLIENT:
            self.refused += 1
            return None
        if self.factory.stopping:
            return None
        original: bytes = header.destination_cid
        retrySource: Optional[bytes] = None
        if self._retry is not None:
            now = self.factory.reactor.seconds()
            if not header.token:
                source = os.urandom(8)
                token = self._retry.create_token(
                    address=addr, original_destination_connection_id=header.destination_cid,
                    retry_source_connection_id=source, now=now,
                )
                self.send(
                    encode_quic_retry(
                        version=header.version, source_cid=source, destination_cid=header.source_cid,
                        original_destination_cid=header.destination_cid, retry_token=token,
                    ),
                    addr,
                )
                return None
            try:
                original = self._retry.validate_token(
                    address=addr, destination_cid=header.destination_cid, token=header.token, now=now
                )
            except ValueError:
                return None  # a forged or stale token: no state for it
            retrySource = header.destination_cid
        quic = serverQuicConnection()(
            configuration=config,
            original_destination_connection_id=original,
            retry_source_connection_id=retrySource,
        )
        connection = H3FrontendConnection(self, quic, addr)
        quic.streams, quic.keyPairs = connection.streams, self.keyPairs
        self.connections[header.destination_cid] = connection
        self.connections[quic.host_cid] = connection
        connection.cids.update((header.destination_cid, quic.host_cid))
        self.open += 1
        self.perClient[host] = self.perClient.get(host, 0) + 1
        return connection

    def forget(self, connection: H3FrontendConnection) -> None:
        """C{connection} is over: its connection IDs and its place in the bounds go."""
        for cid in connection.cids:
            if self.connections.get(cid) is connection:
                del self.connections[cid]
        connection.cids.clear()
        self.open -= 1
        host = connection.address[0]
        left = self.perClient.get(host, 1) - 1
        if left:
            self.perClient[host] = left
        else:
            self.perClient.pop(host, None)
        if not self.open:
            waiters, self._emptyWaiters = self._emptyWaiters, []
            for d in waiters:
                d.callback(None)

    def whenEmpty(self) -> Deferred[None]:
        """A Deferred that fires once no connection is left."""
        if not self.open:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._emptyWaiters.append(d)
        return d

    def send(self, data: bytes, addr: Any) -> None:
        """Send one datagram (dropped when the port is closed)."""
        if self.transport is not None:
            try:
                self.transport.write(data, addr)
            except OSError:
                pass  # a full socket buffer: QUIC's loss recovery sends it again

    def getHost(self) -> Any:
        """The address of the QUIC port."""
        return self.transport.getHost() if self.transport is not None else None

    def stopGracefully(self) -> None:
        """Ask every connection to finish its requests and close (the frontend drains)."""
        for connection in set(self.connections.values()):
            connection.stopGracefully()


class H3FrontendConnection:
    """
    One QUIC connection from a client: many L{H3Stream}s over one
    C{H3Connection}.  It is what an L{H3Stream} calls its C{h2}: its
    frontend, factory, reactor and client address, and where it flushes.
    """

    scheme = b"https"  # (QUIC is always TLS: X-Forwarded-Proto)

    def __init__(self, server: H3Server, quic: QuicConnection, addr: Any) -> None:
        self.server = server
        self.quic = quic
        self.address = addr
        factory = self.factory = server.factory
        self.reactor = factory.reactor
        self.frontend = factory.frontend
        self.client = _address(addr)
        self.transport = self  # (what an H2Stream asks the address of)
        self.h3: Any = None
        self.streams: dict[int, H3Stream] = {}
        self.cids: set[bytes] = set()
        self.paused = False
        self.resets = 0
        self._closed = self._stopping = self._flushing = False
        self._timer: Any = None
        self._timerAt: Optional[float] = None
        self._budget = float(RESET_BURST)
        self._budgetAt = self.reactor.seconds()
        factory.connectionOpened(self)

    def getHost(self) -> Any:
        return self.server.getHost()

    def getPeer(self) -> Any:
        return self.client

    # -- datagrams and timers ---------------------------------------------------

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if self._closed:
            return
        self.quic.receive_datagram(data, addr, now=self.reactor.seconds())
        self._events()
        # acknowledgements came: streams whose servers wait may go on
        for stream in list(self.streams.values()):
            if stream.producerPaused:
                stream.updateProducer()
        self.flushSoon()

    def flushSoon(self) -> None:
        """L{flush} once the reactor is done with this round of I/O: what the streams and the
        datagrams of one round have to say goes out in as few packets as aioquic can make."""
        if not self._flushing:
            self._flushing = True
            self.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """Send what aioquic has to send, and set its timer again."""
        self._flushing = False
        if self._closed:
            return
        now = self.reactor.seconds()
        send = self.server.send
        for data, addr in self.quic.datagrams_to_send(now=now):
            send(data, addr)
        at = self.quic.get_timer()
        if at != self._timerAt:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            self._timerAt = at
            if at is not None:
                self._timer = self.reactor.callLater(max(0.0, at - now), self._fire)

    def _fire(self) -> None:
        at = self._timerAt
        self._timer = self._timerAt = None
        if self._closed:
            return
        self.quic.handle_timer(now=max(at or 0.0, self.reactor.seconds()))
        self._events()
        self.flush()

    def unacknowledged(self, sid: int) -> int:
        """Bytes of stream C{sid} that aioquic holds until the client acknowledges them."""
        stream = self.quic._streams.get(sid)  # aioquic keeps no public count of it
        return 0 if stream is None else len(stream.sender._buffer)

    # -- QUIC and HTTP/3 events ------------------------------------------------

    def _events(self) -> None:
        quic = self.quic
        event = quic.next_event()
        while event is not None and not self._closed:
            if isinstance(event, ConnectionIdIssued):
                self.server.connections[event.connection_id] = self
                self.cids.add(event.connection_id)
            elif isinstance(event, ConnectionIdRetired):
                if self.server.connections.get(event.connection_id) is self:
                    del self.server.connections[event.connection_id]
                self.cids.discard(event.connection_id)
            elif isinstance(event, ProtocolNegotiated):
                if event.alpn_protocol in H3_ALPN:
                    self.h3 = H3Connection(quic)
            elif isinstance(event, ConnectionTerminated):
                self._terminated()
                return
            elif isinstance(event, StreamReset):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    self.resets += 1
                    stream.clientReset()
                    if self.glitch("streams reset by the client"):
                        return
            if self.h3 is not None:
                for h3event in self.h3.handle_event(event):
                    self._h3Event(h3event)
            event = quic.next_event()

    def _h3Event(self, event: H3Event) -> None:
        if self._closed:
            return
        if isinstance(event, HeadersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                self._request(event)
                return
            stream.h2Trailers(list(event.headers))
            if event.stream_ended:
                stream.h2End()
        elif isinstance(event, DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                return
            if event.data:
                stream.h2Data(event.data, len(event.data))
            if event.stream_ended:
                stream.h2End()

    def _request(self, event: HeadersReceived) -> None:
        sid = event.stream_id
        if self._stopping or len(self.streams) >= MAX_CONCURRENT_STREAMS:
            self._refuse(sid)
            if not self._stopping:
                self.glitch("requests past MAX_CONCURRENT_STREAMS")
            return
        stream = H3Stream(self, sid)
        self.streams[sid] = stream
        stream.start(list(event.headers), event.stream_ended)

    def _refuse(self, sid: int) -> None:
        with contextlib.suppress(Exception):  # (the stream is gone already)
            self.quic.reset_stream(sid, H3_REQUEST_REJECTED)
            self.quic.stop_stream(sid, H3_REQUEST_REJECTED)

    # -- what an H2Stream asks of its connection ---------------------------------

    def ack(self, size: int, sid: int) -> None:
        """(Nothing to acknowledge: a stream's QUIC window slides by C{ServerQuicConnection.held}.)"""

    def glitch(self, why: str) -> bool:
        """Spend one token of the misbehaviour budget; with none left, close (H3_EXCESSIVE_LOAD)."""
        now = self.reactor.seconds()
        budget = self._budget + (now - self._budgetAt) * RESET_RATE
        self._budget = min(budget, RESET_BURST) - 1
        self._budgetAt = now
        if self._budget >= 0:
            return False
        _log.warn("{client}: HTTP/3 connection closed (H3_EXCESSIVE_LOAD): {why}; {resets} streams reset",
                  client=formatAddress(self.client), why=why, resets=self.resets)
        self.close(H3_EXCESSIVE_LOAD, why)
        return True

    def streamClosed(self, stream: H3Stream) -> None:
        if self.streams.get(stream.streamId) is stream:
            del self.streams[stream.streamId]
        if not self.streams and self._stopping:
            self.close(H3_NO_ERROR, "shutting down")

    # -- the end -----------------------------------------------------------------

    def close(self, code: int = H3_NO_ERROR, why: str = "") -> None:
        """Close the QUIC connection (CONNECTION_CLOSE), cutting the streams still open."""
        if self._closed:
            return
        self.quic.close(error_code=code, reason_phrase=why)
        self.flush()
        self._terminated()

    def _terminated(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for stream in list(self.streams.values()):
            stream.clientGone("CD")
        self.streams.clear()
        self.server.forget(self)
        self.factory.connectionClosed(self)

    def stopGracefully(self) -> None:
        """Refuse new requests, finish those in flight, then close."""
        self._stopping = True
        if not self.streams:
            self.close(H3_NO_ERROR, "shutting down")

    def kill(self) -> None:
        """Abort every request (termination C{KD}) and close."""
        for stream in list(self.streams.values()):
            stream.kill()
        self.close(H3_NO_ERROR, "killed")
