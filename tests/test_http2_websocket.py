"""
WebSocket over HTTP/2 (RFC 8441, lbkit.http._h2ws): a client speaking
extended CONNECT and then WebSocket frames (the C{h2} package, and the
C{websockets} package's sans-I/O protocol for the frames), through lbkit,
to an HTTP/1.1 WebSocket server (a Twisted protocol driving the
C{websockets} package's sans-I/O C{ServerProtocol}); real sockets on
127.0.0.1, over h2c and over TLS.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingAckReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import StreamClosedError
from h2.settings import SettingCodes
from twisted.internet import ssl
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from websockets.frames import Frame, Opcode
from websockets.http11 import Request as WSRequest
from websockets.protocol import Protocol as WSProtocol
from websockets.protocol import Side
from websockets.server import ServerProtocol

from lbkit.http import HTTPFrontendProtocol, HTTPProxyFactory, Route, pathBegins
from lbkit.http._h2head import MalformedRequest, checkRequestHead
from lbkit.http._h2ws import tunnelHeaders, websocketRequest
from lbkit.http._parse import Response
from lbkit.tls import Certificates
from tests.helpers import startHAProxy
from tests.test_http_integration import HTTPTestCase, backend, reactor
from tests.test_tls_pki import makePKI


def _chat(ws: ServerProtocol, offered: Any) -> Any:
    """The subprotocol C{chat} if offered, else none."""
    return "chat" if "chat" in offered else None


class WebSocketServer(Protocol):
    """
    An HTTP/1.1 WebSocket server: echoes every message, offers the
    subprotocol C{chat}; with C{refuse} set it answers the handshake with
    that status.  Records each handshake request and when it is gone.
    """

    handshakes: list[WSRequest] = []
    refuse: Optional[int] = None

    def connectionMade(self) -> None:
        self.ws = ServerProtocol(select_subprotocol=_chat, max_size=None)
        self.gone: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, WSRequest):
                self.handshakes.append(event)
                refuse = self.refuse
                response = self.ws.reject(refuse, "refused\n") if refuse else self.ws.accept(event)
                self.ws.send_response(response)
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                if event.data == b"bye":
                    self.ws.send_close(1000, "bye")
                else:
                    self.ws.send_text(event.data)
            elif isinstance(event, Frame) and event.opcode is Opcode.BINARY:
                self.ws.send_binary(event.data)
        self.flush()

    def flush(self) -> None:
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)  # type: ignore[union-attr]
            else:
                self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.gone.callback(None)


class Stream:
    """One WebSocket of an L{H2WebSocketClient}: its response head, its messages, its end."""

    def __init__(self) -> None:
        self.ws = WSProtocol(Side.CLIENT, max_size=None)
        self.head: Deferred[dict[bytes, bytes]] = Deferred()
        self.ended: Deferred[str] = Deferred()
        self.messages: list[bytes] = []
        self.waiting: list[Deferred[bytes]] = []
        self.body = b""
        self.status = b""
        self.received = 0
        self.unacked = 0
        #: Fires once C{received} reaches the stream's initial window (65535).
        self.windowFull: Deferred[None] = Deferred()

    def message(self) -> Deferred[bytes]:
        """The next message the server sends."""
        d: Deferred[bytes] = Deferred()
        if self.messages:
            d.callback(self.messages.pop(0))
        else:
            self.waiting.append(d)
        return d


class H2WebSocketClient(Protocol):
    """An HTTP/2 client that opens WebSockets with extended CONNECT (RFC 8441)."""

    def __init__(self, scheme: bytes = b"http") -> None:
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.scheme = scheme
        self.settings: Deferred[dict[int, int]] = Deferred()
        self.streams: dict[int, Stream] = {}
        self.outgoing: dict[int, bytes] = {}
        self.autoAck = True
        self.closed: Deferred[None] = Deferred()
        self.pings: list[Deferred[None]] = []

    def connectionMade(self) -> None:
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def open(self, path: bytes, *extra: tuple[bytes, bytes], protocol: bytes = b"websocket") -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [
            (b":method", b"CONNECT"), (b":protocol", protocol), (b":scheme", self.scheme), (b":path", path),
            (b":authority", b"a.example"), (b"sec-websocket-version", b"13"), *extra,
        ])
        self.streams[sid] = Stream()
        self.outgoing[sid] = b""
        self.flush()
        return sid

    def send(self, sid: int, text: Optional[bytes] = None, binary: Optional[bytes] = None) -> None:
        ws = self.streams[sid].ws
        if text is not None:
            ws.send_text(text)
        if binary is not None:
            ws.send_binary(binary)
        self.outgoing[sid] += b"".join(ws.data_to_send())
        self.upload()

    def upload(self) -> None:
        for sid, pending in list(self.outgoing.items()):
            while pending:
                size = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(pending))
                if size <= 0:
                    break
                try:
                    self.conn.send_data(sid, pending[:size])
                except StreamClosedError:
                    pending = b""
                    break
                pending = pending[size:]
            self.outgoing[sid] = pending
        self.flush()

    def ackAll(self) -> None:
        self.autoAck = True
        for sid, stream in self.streams.items():
            if stream.unacked:
                self.conn.acknowledge_received_data(stream.unacked, sid)
                stream.unacked = 0
        self.flush()

    def dataReceived(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, RemoteSettingsChanged) and not self.settings.called:
                self.settings.callback({int(k): v.new_value for k, v in event.changed_settings.items()})
            elif isinstance(event, ResponseReceived):
                stream = self.streams[event.stream_id]
                stream.status = dict(event.headers)[b":status"]
                stream.head.callback(dict(event.headers))
            elif isinstance(event, DataReceived):
                self.received(event.stream_id, event.data, event.flow_controlled_length)
            elif isinstance(event, StreamEnded):
                self.streams[event.stream_id].ended.callback("ended")
            elif isinstance(event, StreamReset):
                stream = self.streams[event.stream_id]
                if not stream.head.called:
                    stream.head.errback(Failure(RuntimeError(f"reset {event.error_code!r}")))
                if not stream.ended.called:
                    stream.ended.callback(f"reset {ErrorCodes(event.error_code).name}")
            elif isinstance(event, WindowUpdated):
                self.upload()
            elif isinstance(event, PingAckReceived):
                self.pings.pop(0).callback(None)
            elif isinstance(event, ConnectionTerminated):
                pass
        self.flush()

    def ping(self) -> Deferred[None]:
        """Fires when lbkit answered a PING (it read everything sent before)."""
        d: Deferred[None] = Deferred()
        self.pings.append(d)
        self.conn.ping(b"%08d" % len(self.pings))
        self.flush()
        return d

    def received(self, sid: int, data: bytes, size: int) -> None:
        stream = self.streams[sid]
        stream.received += len(data)
        if stream.received >= 65535 and not stream.windowFull.called:
            stream.windowFull.callback(None)
        if self.autoAck:
            self.conn.acknowledge_received_data(size, sid)
        else:
            stream.unacked += size
        if stream.status != b"200":
            stream.body += data
            return
        stream.ws.receive_data(data)
        for frame in stream.ws.events_received():
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CLOSE):
                payload = bytes(frame.data) if frame.opcode is not Opcode.CLOSE else b"<close>"
                if stream.waiting:
                    stream.waiting.pop(0).callback(payload)
                else:
                    stream.messages.append(payload)
        # the close handshake's answer, if any
        self.outgoing[sid] += b"".join(d for d in stream.ws.data_to_send() if d)
        self.upload()

    def endStream(self, sid: int) -> None:
        self.conn.end_stream(sid)
        self.flush()

    def reset(self, sid: int) -> None:
        self.conn.reset_stream(sid, ErrorCodes.CANCEL)
        self.flush()

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.closed.callback(None)


class Fields(HTTPFrontendProtocol):
    """Records the access-log fields of every request (stream)."""

    seen: list[dict[str, Any]] = []

    def finished(self, fields: dict[str, Any]) -> None:
        self.seen.append(fields)


class FieldsFactory(HTTPProxyFactory):
    protocol = Fields


HAPROXY = """
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
  timeout tunnel 5s
frontend fe
  bind {bind}
  default_backend be
backend be
  server s1 127.0.0.1:%d
"""


class WebSocketTests(HTTPTestCase):
    """Extended CONNECT with :protocol websocket, to an HTTP/1.1 WebSocket server."""

    def setUp(self) -> None:
        HTTPTestCase.setUp(self)
        WebSocketServer.handshakes = []
        WebSocketServer.refuse = None

    def wsFrontend(self, **kwargs: Any) -> tuple[int, Any]:
        """A frontend whose /ws routes go to a WebSocket server; its port and the server's factory."""
        wsPort, servers = self.custom(WebSocketServer)
        app = backend("app", [self.site("app1")[0]])
        port = self.frontend([Route(pathBegins("/ws"), backend("ws", [wsPort]))], default=app, **kwargs)
        return port, servers

    @inlineCallbacks
    def connect(self, port: int, tls: Any = None) -> Any:
        client = H2WebSocketClient(b"https" if tls else b"http")
        endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        if tls is not None:
            endpoint = wrapClientTLS(tls, endpoint)
        yield connectProtocol(endpoint, client)
        self.lost.append(client.closed)
        self.addCleanup(lambda: client.transport.loseConnection() if client.transport else None)  # type: ignore[attr-defined]
        settings = yield client.settings
        self.assertEqual(settings.get(SettingCodes.ENABLE_CONNECT_PROTOCOL), 1)
        return client

    @inlineCallbacks
    def test_echo(self) -> Any:
        """
        The server gets an RFC 6455 handshake; the stream gets 200 with the
        chosen subprotocol; messages go both ways, one larger than the
        stream windows; and the access log names the stream.
        """
        port, _ = self.wsFrontend()
        client = yield self.connect(port)
        sid = client.open(b"/ws/chat?room=1", (b"sec-websocket-protocol", b"chat"))
        head = yield client.streams[sid].head
        self.assertEqual(head[b":status"], b"200")
        self.assertEqual(head[b"sec-websocket-protocol"], b"chat")
        self.assertNotIn(b"sec-websocket-accept", head)
        self.assertNotIn(b"upgrade", head)
        client.send(sid, text=b"hello")
        self.assertEqual((yield client.streams[sid].message()), b"hello")
        big = os.urandom(300000)
        client.send(sid, binary=big)
        self.assertEqual((yield client.streams[sid].message()), big)
        [hs] = WebSocketServer.handshakes
        self.assertEqual(hs.path, "/ws/chat?room=1")
        self.assertEqual(hs.headers["Upgrade"].lower(), "websocket")
        self.assertEqual(hs.headers["Connection"].lower(), "upgrade")
        self.assertEqual(hs.headers["Sec-WebSocket-Version"], "13")
        self.assertEqual(len(hs.headers["Sec-WebSocket-Key"]), 24)
        self.assertEqual(hs.headers["Host"], "a.example")
        self.assertEqual(hs.headers["X-Forwarded-Proto"], "http")

    @inlineCallbacks
    def test_sameAsHAProxy(self) -> Any:
        """
        HAProxy also takes WebSocket over h2c (RFC 8441) to an HTTP/1.1
        server: the client sees the same status, subprotocol and echoes
        through both, and the server the same kind of handshake.
        """
        wsPort, _ = self.custom(WebSocketServer)
        haproxy, _ = startHAProxy(self, reactor, HAPROXY % wsPort)
        port = self.frontend(default=backend("ws", [wsPort]))
        seen = []
        for target in (haproxy, port):
            client = yield self.connect(target)
            sid = client.open(b"/ws", (b"sec-websocket-protocol", b"chat"))
            head = yield client.streams[sid].head
            client.send(sid, text=b"hello")
            echo = yield client.streams[sid].message()
            seen.append((head[b":status"], head.get(b"sec-websocket-protocol"), echo))
            client.transport.loseConnection()
        self.assertEqual(seen, [(b"200", b"chat", b"hello")] * 2)
        for hs in WebSocketServer.handshakes:
            self.assertEqual((hs.path, hs.headers["Upgrade"].lower(), hs.headers["Sec-WebSocket-Version"]),
                             ("/ws", "websocket", "13"))

    @inlineCallbacks
    def test_overTLS(self) -> Any:
        """Over TLS (ALPN h2) the same, with X-Forwarded-Proto: https."""
        pki = makePKI(self)
        certs = Certificates(default=pki.issue("a.pem", "a.example"))
        port, _ = self.wsFrontend(tls=certs)
        with open(pki.caFile, "rb") as f:
            ca = ssl.Certificate.loadPEM(f.read())
        client = yield self.connect(port, ssl.optionsForClientTLS("a.example", trustRoot=ca, acceptableProtocols=[b"h2"]))
        sid = client.open(b"/ws")
        head = yield client.streams[sid].head
        self.assertEqual(head[b":status"], b"200")
        client.send(sid, text=b"over tls")
        self.assertEqual((yield client.streams[sid].message()), b"over tls")
        self.assertEqual(WebSocketServer.handshakes[0].headers["X-Forwarded-Proto"], "https")

    @inlineCallbacks
    def test_refusal(self) -> Any:
        """A server that refuses the handshake: its status and body go to the stream, which ends."""
        WebSocketServer.refuse = 403
        port, _ = self.wsFrontend()
        client = yield self.connect(port)
        sid = client.open(b"/ws")
        head = yield client.streams[sid].head
        ended = yield client.streams[sid].ended
        self.assertEqual(head[b":status"], b"403")
        self.assertEqual(client.streams[sid].body, b"refused\n")
        self.assertIn(ended, ("ended", "reset NO_ERROR"))

    @inlineCallbacks
    def test_clientEndsStream(self) -> Any:
        """The client's END_STREAM closes the server connection, and the stream ends."""
        port, servers = self.wsFrontend()
        client = yield self.connect(port)
        sid = client.open(b"/ws")
        yield client.streams[sid].head
        client.send(sid, text=b"one")
        self.assertEqual((yield client.streams[sid].message()), b"one")
        client.endStream(sid)
        [server] = servers.built
        yield server.gone
        self.assertEqual((yield client.streams[sid].ended), "ended")

    @inlineCallbacks
    def test_serverCloses(self) -> Any:
        """The server's close handshake and its closing the connection end the stream with END_STREAM."""
        port, servers = self.wsFrontend()
        client = yield self.connect(port)
        sid = client.open(b"/ws")
        yield client.streams[sid].head
        client.send(sid, text=b"bye")
        self.assertEqual((yield client.streams[sid].message()), b"<close>")
        self.assertEqual((yield client.streams[sid].ended), "ended")
        yield servers.built[0].gone

    @inlineCallbacks
    def test_clientReset(self) -> Any:
        """RST_STREAM from the client closes the server connection; the HTTP/2 connection goes on."""
        port, servers = self.wsFrontend()
        client = yield self.connect(port)
        sid = client.open(b"/ws")
        yield client.streams[sid].head
        client.reset(sid)
        yield servers.built[0].gone
        other = client.open(b"/ws")
        yield client.streams[other].head
        client.send(other, text=b"still here")
        self.assertEqual((yield client.streams[other].message()), b"still here")

    @inlineCallbacks
    def test_backPressure(self) -> Any:
        """
        A client that does not acknowledge DATA gets no more than its
        window, and the server connection is paused meanwhile; once it
        reads again the whole message arrives.
        """
        port, _ = self.wsFrontend()
        client = yield self.connect(port)
        sid = client.open(b"/ws")
        yield client.streams[sid].head
        client.autoAck = False
        big = os.urandom(4 * 2**20)
        client.send(sid, binary=big)
        yield client.streams[sid].windowFull
        for _ in range(3):
            yield client.ping()
        [factory] = self.frontendFactories()
        [h2] = list(factory.connections)
        stream = h2.streams[sid]
        self.assertTrue(stream.producerPaused)
        self.assertEqual(client.streams[sid].received, 65535)
        self.assertLess(sum(len(c) for c in stream._out), 2**20)  # the rest waits in the server's socket
        client.ackAll()
        self.assertEqual((yield client.streams[sid].message()), big)

    @inlineCallbacks
    def test_idleTunnelTimesOut(self) -> Any:
        """A WebSocket idle both ways for timeoutTunnel is cut: the stream is reset, the server connection closed."""
        port, servers = self.wsFrontend(timeoutTunnel=0.3)
        client = yield self.connect(port)
        sid = client.open(b"/ws")
        yield client.streams[sid].head
        client.send(sid, text=b"one")
        self.assertEqual((yield client.streams[sid].message()), b"one")
        ended = yield client.streams[sid].ended
        self.assertTrue(ended.startswith("reset"), ended)
        yield servers.built[0].gone

    @inlineCallbacks
    def test_logged(self) -> Any:
        """The WebSocket is logged once it ends: its handshake's request line, the server's 101, the bytes."""
        Fields.seen = []
        port, servers = self.wsFrontend(factory=FieldsFactory)
        client = yield self.connect(port)
        sid = client.open(b"/ws/x")
        yield client.streams[sid].head
        client.send(sid, text=b"bye")
        yield client.streams[sid].ended
        yield servers.built[0].gone
        [fields] = Fields.seen
        self.assertEqual((fields["request"], fields["status"], fields["server"], fields["termination"]),
                         ("GET /ws/x HTTP/2.0", 101, "ws1", "--"))
        self.assertGreater(fields["bytes"], 0)

    @inlineCallbacks
    def test_otherProtocol(self) -> Any:
        """An extended CONNECT for another protocol than websocket is answered 501 and reaches no server."""
        port, servers = self.wsFrontend()
        client = yield self.connect(port)
        sid = client.open(b"/ws", protocol=b"custom")
        head = yield client.streams[sid].head
        self.assertEqual(head[b":status"], b"501")
        self.assertEqual(servers.built, [])


EXTENDED = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"), (b":path", b"/chat"),
            (b":authority", b"a.example")]


class ExtendedConnectHeadTests(SynchronousTestCase):
    """The head checks and the HTTP/1.1 handshake of an extended CONNECT, without I/O."""

    def test_accepted(self) -> None:
        """An extended CONNECT with all four pseudo-headers is taken, with its :protocol and :path."""
        head = checkRequestHead(EXTENDED + [(b"sec-websocket-protocol", b"chat")], False)
        self.assertEqual((head.method, head.protocol, head.path), (b"CONNECT", b"websocket", b"/chat"))
        self.assertEqual(head.fields, [[b"host", b"a.example"], [b"sec-websocket-protocol", b"chat"]])

    def test_malformed(self) -> None:
        """:protocol off CONNECT, not a token, or without :path, :scheme or :authority is malformed."""
        cases = [
            [(b":method", b"GET")] + EXTENDED[1:],
            EXTENDED[:1] + [(b":protocol", b"web socket")] + EXTENDED[2:],
            [h for h in EXTENDED if h[0] != b":path"],
            [h for h in EXTENDED if h[0] != b":scheme"],
            [h for h in EXTENDED if h[0] != b":authority"] + [(b"host", b"a.example")],
        ]
        for headers in cases:
            with self.assertRaises(MalformedRequest, msg=repr(headers)):
                checkRequestHead(headers, False)

    def test_plainConnectUnchanged(self) -> None:
        """A plain CONNECT still needs :authority and neither :scheme nor :path."""
        head = checkRequestHead([(b":method", b"CONNECT"), (b":authority", b"a.example:443")], False)
        self.assertIsNone(head.protocol)
        with self.assertRaises(MalformedRequest):
            checkRequestHead([(b":method", b"CONNECT"), (b":authority", b"a:443"), (b":path", b"/")], False)

    def test_handshake(self) -> None:
        """The handshake is a GET with lbkit's own key and version; the client's are dropped."""
        request = websocketRequest(b"/chat", [[b"host", b"a"], [b"sec-websocket-key", b"x"],
                                              [b"sec-websocket-version", b"8"], [b"origin", b"o"]])
        self.assertEqual((request.method, request.uri, request.version), (b"GET", b"/chat", b"HTTP/1.1"))
        self.assertEqual(request.headerValues(b"sec-websocket-version"), [b"13"])
        [key] = request.headerValues(b"sec-websocket-key")
        self.assertEqual(len(key), 24)
        self.assertNotEqual(key, websocketRequest(b"/", []).header(b"sec-websocket-key"))  # a fresh one each time
        self.assertEqual(request.header(b"upgrade"), b"websocket")
        self.assertEqual(request.header(b"origin"), b"o")

    def test_tunnelHeaders(self) -> None:
        """The stream's 200 keeps the server's fields but the handshake's own and hop-by-hop ones."""
        response = Response(b"HTTP/1.1", 101, b"Switching Protocols", [
            [b"Upgrade", b"websocket"], [b"Connection", b"Upgrade"], [b"Sec-WebSocket-Accept", b"k"],
            [b"Sec-WebSocket-Protocol", b"chat"], [b"Sec-WebSocket-Extensions", b"permessage-deflate"],
        ])
        self.assertEqual(tunnelHeaders(response), [
            (b":status", b"200"), (b"sec-websocket-protocol", b"chat"),
            (b"sec-websocket-extensions", b"permessage-deflate"),
        ])
