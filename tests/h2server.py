"""
A small HTTP/2 server on the C{h2} package, for the tests of HTTP/2 to
servers (tests/test_h2up.py): cleartext with prior knowledge, or behind
Twisted's TLS with ALPN h2.  What it does is chosen by the request path:

  - C{/info} (and anything else): a JSON description of the request
    (method, path, headers, body length and sha256, its trailers);
  - C{/big/N}: N bytes, with no content-length;
  - C{/trailers}: a body, then trailers C{x-checksum} and C{grpc-status};
  - C{/refuse}: the first stream is refused (RST_STREAM REFUSED_STREAM),
    a stream on a later connection is answered;
  - C{/goaway}: the first such stream gets GOAWAY naming the stream before
    it as the last, then the connection closes; later ones are answered;
  - C{/reset-head}: RST_STREAM INTERNAL_ERROR before any response;
  - C{/reset-body}: a head and some body, then RST_STREAM INTERNAL_ERROR
    (C{/cancel-body}: CANCEL);
  - C{/hold}: answered only when L{H2TestFactory.release} is called.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure


class H2TestProtocol(Protocol):
    """One connection of an L{H2TestFactory}."""

    factory: H2TestFactory

    def __init__(self) -> None:
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.requests: dict[int, dict[str, Any]] = {}
        self.pendingOut: dict[int, list[Any]] = {}
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.factory.connections += 1
        self.factory.open.append(self)
        self.conn.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: self.factory.maxStreams,
            SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
        })
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as e:
            self.factory.errors.append(e)
            self.flush()
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        factory = self.factory
        for event in events:
            sid = getattr(event, "stream_id", 0)
            if isinstance(event, RequestReceived):
                self.factory.streams += 1
                self.requests[sid] = {"headers": event.headers, "body": [], "trailers": []}
                self.factory.seen.append(dict(event.headers))
            elif isinstance(event, DataReceived):
                self.requests[sid]["body"].append(event.data)
                factory.received += len(event.data)
                for w in [w for w in factory.receivedWaiters if w[0] <= factory.received]:
                    factory.receivedWaiters.remove(w)
                    w[1].callback(None)
                if self.factory.ackRequests:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                else:
                    self.factory.unacked.append((self, event.flow_controlled_length, sid))
            elif isinstance(event, TrailersReceived):
                self.requests[sid]["trailers"] = event.headers
            elif isinstance(event, StreamEnded):
                if sid in self.requests:
                    self.answer(sid)
            elif isinstance(event, StreamReset):
                self.factory.resets.append(event.error_code)
                waiting, self.factory.resetWaiters = self.factory.resetWaiters, []
                for d in waiting:
                    d.callback(event.error_code)
                self.requests.pop(sid, None)
                self.pendingOut.pop(sid, None)
            elif isinstance(event, WindowUpdated):
                for s in list(self.pendingOut):
                    self.sendBody(s)
            elif isinstance(event, ConnectionTerminated):
                self.transport.loseConnection()  # type: ignore[union-attr]
        self.flush()

    def answer(self, sid: int) -> None:
        request = self.requests[sid]
        headers = dict(request["headers"])
        path = headers[b":path"].decode()
        factory = self.factory
        if path == "/refuse" and not factory.refused:
            factory.refused = True
            self.conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        if path == "/goaway" and not factory.wentAway:
            factory.wentAway = True
            self.conn.close_connection(last_stream_id=max(0, sid - 2))
            self.flush()
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        if path == "/reset-head":
            self.conn.reset_stream(sid, ErrorCodes.INTERNAL_ERROR)
            return
        if path in ("/reset-body", "/cancel-body"):
            self.conn.send_headers(sid, [(b":status", b"200")])
            self.conn.send_data(sid, b"x" * 1000)
            code = ErrorCodes.CANCEL if path == "/cancel-body" else ErrorCodes.INTERNAL_ERROR
            self.conn.reset_stream(sid, code)
            return
        if path == "/hold":
            factory.held.append((self, sid))
            waiters = [w for w in factory.heldWaiters if w[0] <= len(factory.held)]
            for w in waiters:
                factory.heldWaiters.remove(w)
                w[1].callback(None)
            return
        self.respond(sid)

    def respond(self, sid: int) -> None:
        request = self.requests.pop(sid)
        headers = dict(request["headers"])
        path = headers[b":path"].decode()
        body = b"".join(request["body"])
        trailers: Optional[list[tuple[bytes, bytes]]] = None
        if path.startswith("/big/"):
            out = b"0123456789abcdef" * (int(path[5:]) // 16)
            head = [(b":status", b"200"), (b"content-type", b"application/octet-stream")]
        elif path == "/trailers":
            out = b"payload"
            head = [(b":status", b"200"), (b"content-type", b"text/plain")]
            trailers = [(b"x-checksum", b"abc123"), (b"grpc-status", b"0")]
        else:
            out = json.dumps({
                "server": self.factory.name,
                "method": headers[b":method"].decode(),
                "path": path,
                "authority": headers.get(b":authority", b"").decode(),
                "headers": {k.decode(): v.decode() for k, v in request["headers"] if not k.startswith(b":")},
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "trailers": {k.decode(): v.decode() for k, v in request["trailers"]},
            }).encode()
            head = [(b":status", b"200"), (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(out))]
        self.conn.send_headers(sid, head)
        self.pendingOut[sid] = [out, 0, trailers]
        self.sendBody(sid)

    def sendBody(self, sid: int) -> None:
        out, offset, trailers = self.pendingOut[sid]
        try:
            while offset < len(out):
                size = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size,
                           len(out) - offset)
                if size <= 0:
                    break
                self.conn.send_data(sid, out[offset : offset + size])
                offset += size
        except ProtocolError:
            del self.pendingOut[sid]
            return
        self.pendingOut[sid][1] = offset
        if offset == len(out):
            del self.pendingOut[sid]
            if trailers:
                self.conn.send_headers(sid, trailers, end_stream=True)
            else:
                self.conn.end_stream(sid)
        self.flush()

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.factory.open.remove(self)
        self.closed.callback(None)


class H2TestFactory(Factory):
    """
    Builds L{H2TestProtocol}s and counts what they saw.

    @ivar connections: Connections accepted.
    @ivar streams: Streams opened by the client.
    @ivar seen: Each request's header block, as a dict.
    @ivar resets: The error code of each RST_STREAM received.
    @ivar held: C{(protocol, stream id)} of the C{/hold} requests waiting.
    """

    protocol = H2TestProtocol
    noisy = False

    def __init__(self, name: str = "h2", maxStreams: int = 100) -> None:
        self.name = name
        self.maxStreams = maxStreams
        self.connections = 0
        self.streams = 0
        self.seen: list[dict[bytes, bytes]] = []
        self.resets: list[Any] = []
        self.held: list[tuple[H2TestProtocol, int]] = []
        self.open: list[H2TestProtocol] = []
        self.refused = False
        self.wentAway = False
        self.ackRequests = True
        self.unacked: list[tuple[H2TestProtocol, int, int]] = []
        self.heldWaiters: list[tuple[int, Deferred[None]]] = []
        #: Fired with the error code of the next RST_STREAM received.
        self.resetWaiters: list[Deferred[Any]] = []
        #: Request body bytes received, in all.
        self.received = 0
        self.receivedWaiters: list[tuple[int, Deferred[None]]] = []
        #: The protocol errors that closed a connection.
        self.errors: list[Exception] = []

    def whenHeld(self, n: int) -> Deferred[None]:
        """Fires once C{n} C{/hold} requests wait."""
        d: Deferred[None] = Deferred()
        if len(self.held) >= n:
            d.callback(None)
        else:
            self.heldWaiters.append((n, d))
        return d

    def whenReceived(self, n: int) -> Deferred[None]:
        """Fires once C{n} request body bytes arrived, in all."""
        d: Deferred[None] = Deferred()
        if self.received >= n:
            d.callback(None)
        else:
            self.receivedWaiters.append((n, d))
        return d

    def release(self) -> None:
        """Answer every C{/hold} request waiting."""
        held, self.held = self.held, []
        for proto, sid in held:
            if sid in proto.requests:
                proto.respond(sid)
                proto.flush()

    def ackAll(self) -> None:
        """Acknowledge the request DATA held back (with C{ackRequests} false)."""
        self.ackRequests = True
        unacked, self.unacked = self.unacked, []
        for proto, size, sid in unacked:
            try:
                proto.conn.acknowledge_received_data(size, sid)
            except ProtocolError:
                pass
            proto.flush()
