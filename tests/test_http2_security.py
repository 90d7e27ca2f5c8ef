"""
HTTP/2 requests that try to smuggle a second request to the server,
malformed HTTP/2 request heads, and floods (PING, SETTINGS, rapid reset,
too many streams), over real sockets on 127.0.0.1: lbkit's TLS frontend in
this process, clients built on the C{h2} package that send what they are
told, valid or not, and servers that record the exact bytes they read.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from typing import Any, Callable, Optional

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.settings import Settings
from twisted.internet import ssl, task
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from lbkit.http._h2 import MAX_CONCURRENT_STREAMS, RESET_BURST
from tests.helpers import freePort, requireBinary, spawn
from tests.test_http2 import H2Client, HTTP2TestCase, StreamResetError
from tests.test_http_integration import Info, RawClient, TrackingSite, backend, reactor

Headers = list[tuple[bytes, bytes]]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def head(method: bytes = b"GET", path: bytes = b"/", *extra: tuple[bytes, bytes],
         authority: Optional[bytes] = b"a.example", scheme: bytes = b"https") -> Headers:
    """A request header block: the four pseudo-headers, then C{extra}."""
    headers = [(b":method", method), (b":scheme", scheme), (b":path", path)]
    if authority is not None:
        headers.append((b":authority", authority))
    return headers + list(extra)


class _Unlimited(Settings):
    """The server's settings as a client sees them, but without a stream limit (to exceed it)."""

    @property  # type: ignore[override]
    def max_concurrent_streams(self) -> int:
        return 2**31 - 1

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, value: int) -> None:
        pass


class RawH2Client(H2Client):
    """
    An L{H2Client} that sends header blocks exactly as given: neither
    validated nor normalized (upper case, spaces, forbidden headers...).
    """

    def __init__(self) -> None:
        H2Client.__init__(self, H2Configuration(
            client_side=True, header_encoding=None,
            validate_outbound_headers=False, normalize_outbound_headers=False,
        ))
        self.lastStream = 0

    def ignoreStreamLimit(self) -> None:
        """Open streams past the server's SETTINGS_MAX_CONCURRENT_STREAMS."""
        self.conn.remote_settings = _Unlimited(client=False)

    def send(self, headers: Headers, body: Optional[bytes] = None, trailers: Optional[Headers] = None,
             endStream: bool = True) -> Deferred[tuple[int, dict[bytes, bytes], bytes]]:
        """
        Send one request: C{headers}, then C{body} in one DATA frame, then
        C{trailers}; the last of them ends the stream (if C{endStream}).
        """
        sid = self.lastStream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers, end_stream=endStream and body is None and trailers is None)
        d: Deferred[tuple[int, dict[bytes, bytes], bytes]] = Deferred()
        self.results[sid] = d
        self.bodies[sid] = []
        if body is not None:
            self.conn.send_data(sid, body, end_stream=endStream and trailers is None)
        if trailers is not None:
            self.conn.send_headers(sid, trailers, end_stream=True)
        self.flush()
        return d


def outcome(d: Deferred[Any]) -> Deferred[tuple[Any, ...]]:
    """
    What became of a request: C{("response", status, body)},
    C{("reset", code)} or C{("lost", goAway)}.
    """
    def failed(f: Failure) -> tuple[Any, ...]:
        if f.check(StreamResetError):
            return ("reset", f.value.code)
        return ("lost", None)

    return d.addCallbacks(lambda r: ("response", r[0], r[2]), failed)


# -- a server that records what it reads -------------------------------------------


class FramingServer(Protocol):
    """
    An HTTP/1.1 server that frames requests strictly (Content-Length or
    chunked), answers each one as soon as its head has arrived (as nginx
    does for a GET: it reads and drops the body afterwards) with
    C{"<method> <target>"}, and records every byte it read.

    @ivar raw: All the bytes read.
    @ivar requests: C{[method, target, headers, body]} per request, headers
        as C{(lower-case name, value)}.
    @ivar gone: Fires when the connection is closed.
    """

    def __init__(self) -> None:
        self.gone: Deferred[None] = Deferred()
        self.raw = b""
        self.requests: list[list[Any]] = []
        self._buf = b""
        self._left = 0  # body bytes still expected (Content-Length)
        self._chunked = False
        self._chunkLeft = -1  # -1: a size line is next; -2: trailers

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        self._buf += data
        self._parse()

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.gone.callback(None)

    def answer(self, method: bytes, target: bytes) -> None:
        body = method + b" " + target
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))  # type: ignore[union-attr]

    def _parse(self) -> None:
        while self._buf:
            if self._left:
                take = self._buf[: self._left]
                self._buf = self._buf[len(take):]
                self._left -= len(take)
                self.requests[-1][3] += take
                continue
            if self._chunked:
                if not self._chunkStep():
                    return
                continue
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self._buf[:end].split(b"\r\n")
            self._buf = self._buf[end + 4 :]
            parts = lines[0].split(b" ")
            method, target = (parts[0], parts[1]) if len(parts) == 3 else (b"?", lines[0])
            headers = []
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers.append((name.lower(), value.strip()))
            self.requests.append([method, target, headers, b""])
            self.answer(method, target)
            names = [n for n, _ in headers]
            if b"transfer-encoding" in names:
                self._chunked = True
                self._chunkLeft = -1
            elif b"content-length" in names:
                self._left = int(dict(headers)[b"content-length"])

    def _chunkStep(self) -> bool:
        if self._chunkLeft >= 0:
            if len(self._buf) < self._chunkLeft + 2:
                return False
            self.requests[-1][3] += self._buf[: self._chunkLeft]
            self._buf = self._buf[self._chunkLeft + 2 :]
            self._chunkLeft = -1
            return True
        end = self._buf.find(b"\r\n")
        if end < 0:
            return False
        line, self._buf = self._buf[:end], self._buf[end + 2 :]
        if self._chunkLeft == -2:
            if not line:
                self._chunked = False
            return True
        size = int(line.split(b";")[0], 16)
        self._chunkLeft = size if size else -2
        return True


class Recording(Info):
    """L{Info} that also remembers every target it was asked for."""

    def __init__(self, name: str) -> None:
        Info.__init__(self, name)
        self.seen: list[bytes] = []

    def render(self, request: Request) -> Any:
        self.seen.append(request.uri)
        return Info.render(self, request)


class SecurityTestCase(HTTP2TestCase):
    """L{HTTP2TestCase} with a recording server and raw clients."""

    timeout = 20

    def recorder(self) -> tuple[int, Any]:
        """A L{FramingServer} listening: its port and factory (C{built} lists its connections)."""
        return self.custom(FramingServer)

    def seen(self, factory: Any) -> list[tuple[bytes, bytes]]:
        """Every C{(method, target)} the servers of C{factory} read, in order."""
        return [(r[0], r[1]) for p in factory.built for r in p.requests]

    def assertWellFramed(self, factory: Any) -> None:
        """What each server connection read is whole requests, nothing more."""
        for p in factory.built:
            self.assertEqual(p._buf, b"", f"unframed bytes left: {p.raw!r}")
            self.assertEqual((p._left, p._chunked), (0, False), f"a body never ended: {p.raw!r}")

    @inlineCallbacks
    def rawClient(self, port: int) -> Any:
        return (yield self.h2client(port, RawH2Client()))

    def accessLog(self) -> list[dict[str, Any]]:
        """The access-log events emitted from now on (a live list)."""
        events: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "lbkit.access":
                events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return events


# -- finding 1: request smuggling through HTTP/2 framing ---------------------------------


class SmugglingTests(SecurityTestCase):
    """
    An HTTP/2 request's body framing is checked against the DATA received,
    and re-framed by lbkit for HTTP/1.1: nothing the client declares lets
    bytes of one request pass for another on a pooled server connection.
    """

    @inlineCallbacks
    def test_contentLengthWithEndStreamRefused(self) -> None:
        """
        A HEADERS frame that ends the stream yet declares content-length:
        129 is refused with RST_STREAM PROTOCOL_ERROR, never reaches the
        server, and the next stream's body (a request in disguise) reaches
        the server as a body, not as a request.
        """
        serverPort, servers = self.recorder()
        port = self.tlsFrontend(default=backend("raw", [serverPort], timeoutServer=2))
        client = yield self.rawClient(port)
        first = yield outcome(client.send(head(b"GET", b"/first", (b"content-length", b"129"))))
        smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a.example\r\n\r\n"
        second = yield outcome(client.send(
            head(b"POST", b"/second", (b"content-length", b"%d" % len(smuggled))), smuggled))
        third = yield outcome(client.send(head(b"GET", b"/third")))
        self.assertEqual(first, ("reset", ErrorCodes.PROTOCOL_ERROR))
        self.assertEqual(second, ("response", 200, b"POST /second"))
        self.assertEqual(third, ("response", 200, b"GET /third"))
        self.assertEqual(self.seen(servers), [(b"POST", b"/second"), (b"GET", b"/third")])
        [post] = [r for p in servers.built for r in p.requests if r[1] == b"/second"]
        self.assertEqual(post[3], smuggled)
        self.assertWellFramed(servers)

    @inlineCallbacks
    def test_http1ClientNotCorrupted(self) -> None:
        """
        After an HTTP/2 client's smuggling attempt, an HTTP/1.1 client of
        the same frontend (and pool) gets the answer to its own request,
        from a twisted.web server that saw only the requests lbkit routed.
        """
        resource = Recording("app1")
        site = TrackingSite(resource)
        site.lost = self.lost
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.ports.append(listening)
        port = self.tlsFrontend(default=backend("app", [listening.getHost().port], timeoutServer=2))
        client = yield self.rawClient(port)
        first = yield outcome(client.send(head(b"GET", b"/first", (b"content-length", b"129"))))
        self.assertEqual(first, ("reset", ErrorCodes.PROTOCOL_ERROR))
        smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a.example\r\n\r\n"
        status, _, body = yield client.send(
            head(b"POST", b"/second", (b"content-length", b"%d" % len(smuggled))), smuggled)
        self.assertEqual((status, json.loads(body)["length"]), (200, len(smuggled)))
        with open(self.pki.caFile, "rb") as f:
            ca = ssl.Certificate.loadPEM(f.read())
        creator = ssl.optionsForClientTLS("a.example", trustRoot=ca, acceptableProtocols=[b"http/1.1"])
        victim = RawClient()
        yield connectProtocol(wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port)), victim)
        self.lost.append(victim.closed)
        victim.send(b"GET /victim HTTP/1.1\r\nHost: a.example\r\n\r\n")
        [(response, body)] = yield victim.responses(1)
        victim.transport.loseConnection()  # type: ignore[union-attr]
        self.assertEqual((response.code, json.loads(body)["uri"]), (200, "/victim"))
        self.assertEqual(resource.seen, [b"/second", b"/victim"])

    @inlineCallbacks
    def test_shortBodyEndedByTrailersRefused(self) -> None:
        """
        A body shorter than its content-length, ended by a trailers block,
        gets RST_STREAM PROTOCOL_ERROR; the server connection that got the
        request and the partial body is closed, never reused.
        """
        arrived: Deferred[None] = Deferred()

        class Silent(FramingServer):
            def answer(self, method: bytes, target: bytes) -> None:
                if target == b"/short":
                    arrived.callback(None)
                else:
                    FramingServer.answer(self, method, target)

        serverPort, servers = self.custom(Silent)
        port = self.tlsFrontend(default=backend("raw", [serverPort], timeoutServer=2))
        client = yield self.rawClient(port)
        d = client.send(head(b"POST", b"/short", (b"content-length", b"10")), b"hello", endStream=False)
        yield arrived  # the request went to the server
        client.conn.send_headers(client.lastStream, [(b"x-t", b"1")], end_stream=True)
        client.flush()
        result = yield outcome(d)
        self.assertEqual(result, ("reset", ErrorCodes.PROTOCOL_ERROR))
        yield servers.built[0].gone  # that server connection is closed
        again = yield outcome(client.send(head(b"GET", b"/again")))
        self.assertEqual(again, ("response", 200, b"GET /again"))
        self.assertEqual(len(servers.built), 2)
        self.assertEqual(servers.built[1].requests[0][1], b"/again")

    @inlineCallbacks
    def test_longBodyRefused(self) -> None:
        """
        More DATA than the declared content-length is refused (the C{h2}
        package makes it a connection error) and the server gets no byte
        past the declared length, on a connection that is then closed.
        """
        serverPort, servers = self.recorder()
        port = self.tlsFrontend(default=backend("raw", [serverPort], timeoutServer=2))
        client = yield self.rawClient(port)
        result = yield outcome(client.send(head(b"POST", b"/long", (b"content-length", b"5")), b"0123456789"))
        self.assertIn(result[0], ("reset", "lost"))
        self.assertNotEqual(result[0], "response")
        yield gatherResults([p.gone for p in servers.built])
        for p in servers.built:
            self.assertNotIn(b"56789", p.raw)

    @inlineCallbacks
    def test_bodylessPostGetsContentLengthZero(self) -> None:
        """A POST whose HEADERS ends the stream reaches the server with Content-Length: 0, not chunked."""
        serverPort, servers = self.recorder()
        port = self.tlsFrontend(default=backend("raw", [serverPort]))
        client = yield self.rawClient(port)
        result = yield outcome(client.send(head(b"POST", b"/empty")))
        self.assertEqual(result, ("response", 200, b"POST /empty"))
        headers = servers.built[0].requests[0][2]
        self.assertEqual([v for n, v in headers if n == b"content-length"], [b"0"])
        self.assertNotIn(b"transfer-encoding", [n for n, _ in headers])

    @inlineCallbacks
    def test_clientFramingNotCopied(self) -> None:
        """
        The client's content-length is never copied: a GET that ends with
        its HEADERS goes without one, and a body declared twice goes with
        one Content-Length of lbkit's own.
        """
        serverPort, servers = self.recorder()
        port = self.tlsFrontend(default=backend("raw", [serverPort]))
        client = yield self.rawClient(port)
        yield client.send(head(b"GET", b"/get", (b"content-length", b"0")))
        yield client.send(head(b"PUT", b"/put", (b"content-length", b"5"), (b"content-length", b"5")), b"hello")
        [get, put] = [r for p in servers.built for r in p.requests]
        self.assertEqual([n for n, _ in get[2] if n in (b"content-length", b"transfer-encoding")], [])
        self.assertEqual([(n, v) for n, v in put[2] if n in (b"content-length", b"transfer-encoding")],
                         [(b"content-length", b"5")])
        self.assertEqual(put[3], b"hello")
        self.assertWellFramed(servers)


# -- finding 2: malformed request heads ----------------------------------------------

#: Request heads RFC 9113 §8.1.1, §8.2 and §8.3 call malformed: each must
#: get RST_STREAM PROTOCOL_ERROR and never reach a server.
MALFORMED: dict[str, Headers] = {
    "pathWithSpace": head(b"GET", b"/a b"),
    "pathWithSpaceAndVersion": head(b"GET", b"/a HTTP/1.1\r\nX: y"),
    "pathRelative": head(b"GET", b"a/b"),
    "pathAbsoluteURI": head(b"GET", b"http://evil.example/x"),
    "pathEmpty": head(b"GET", b""),
    "pathAsteriskNotOptions": head(b"GET", b"*"),
    "pathControlByte": head(b"GET", b"/a\x01b"),
    "pathTab": head(b"GET", b"/a\tb"),
    "pathDEL": head(b"GET", b"/a\x7f"),
    "pathHighByte": head(b"GET", b"/caf\xc3\xa9"),
    "pathFragment": head(b"GET", b"/a#b"),
    "pathNUL": head(b"GET", b"/a\x00b"),
    "methodWithSpace": head(b"GET /x", b"/"),
    "methodNonToken": head(b"GE(T", b"/"),
    "methodEmpty": head(b"", b"/"),
    "methodMissing": [(b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a.example")],
    "pathMissing": [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.example")],
    "schemeMissing": [(b":method", b"GET"), (b":path", b"/"), (b":authority", b"a.example")],
    "schemeInvalid": head(b"GET", b"/", scheme=b"ht tp"),
    "pathTwice": head(b"GET", b"/") + [(b":path", b"/other")],
    "methodTwice": [(b":method", b"GET"), (b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/"),
                    (b":authority", b"a.example")],
    "unknownPseudoHeader": head(b"GET", b"/") + [(b":foo", b"bar")],
    "statusInRequest": head(b"GET", b"/") + [(b":status", b"200")],
    "protocolWithoutConnect": head(b"GET", b"/") + [(b":protocol", b"websocket")],
    "pseudoAfterRegular": [(b":method", b"GET"), (b":scheme", b"https"), (b"x-a", b"1"), (b":path", b"/"),
                           (b":authority", b"a.example")],
    "connectWithPath": [(b":method", b"CONNECT"), (b":authority", b"a.example:443"), (b":path", b"/")],
    "nameUpperCase": head(b"GET", b"/", (b"X-Foo", b"1")),
    "nameWithSpace": head(b"GET", b"/", (b"x foo", b"1")),
    "nameNonToken": head(b"GET", b"/", (b"x(foo)", b"1")),
    "nameWithColon": head(b"GET", b"/", (b"x:foo", b"1")),
    "nameEmpty": head(b"GET", b"/", (b"", b"1")),
    "nameHighByte": head(b"GET", b"/", (b"x\xe9", b"1")),
    "valueCR": head(b"GET", b"/", (b"x-a", b"1\rX-Injected: 1")),
    "valueLF": head(b"GET", b"/", (b"x-a", b"1\nX-Injected: 1")),
    "valueNUL": head(b"GET", b"/", (b"x-a", b"1\x002")),
    "valueLeadingSpace": head(b"GET", b"/", (b"x-a", b" 1")),
    "valueTrailingTab": head(b"GET", b"/", (b"x-a", b"1\t")),
    "connection": head(b"GET", b"/", (b"connection", b"close")),
    "keepAlive": head(b"GET", b"/", (b"keep-alive", b"timeout=5")),
    "proxyConnection": head(b"GET", b"/", (b"proxy-connection", b"keep-alive")),
    "transferEncoding": head(b"POST", b"/", (b"transfer-encoding", b"chunked")),
    "upgrade": head(b"GET", b"/", (b"upgrade", b"h2c")),
    "teNotTrailers": head(b"GET", b"/", (b"te", b"gzip")),
    "authorityWithSpace": head(b"GET", b"/", authority=b"a.example b"),
    "authorityUserinfo": head(b"GET", b"/", authority=b"user@a.example"),
    "authorityWithPath": head(b"GET", b"/", authority=b"a.example/x"),
    "authorityEmpty": head(b"GET", b"/", authority=b""),
    "authorityComma": head(b"GET", b"/", authority=b"a.example,b.example"),
    "authorityBadPort": head(b"GET", b"/", authority=b"a.example:80x"),
    "hostMalformed": head(b"GET", b"/", (b"host", b"a b"), authority=None),
    "hostTwice": head(b"GET", b"/", (b"host", b"a.example"), (b"host", b"b.example"), authority=None),
    "noAuthorityNoHost": head(b"GET", b"/", authority=None),
    "contentLengthWithEndStream": head(b"GET", b"/", (b"content-length", b"1")),
}


class MalformedTests(SecurityTestCase):
    """
    A malformed request head gets RST_STREAM PROTOCOL_ERROR (RFC 9113
    §8.1.1), reaches no server, and leaves the connection usable.
    """

    @inlineCallbacks
    def assertRefused(self, headers: Headers) -> Any:
        serverPort, servers = self.recorder()
        port = self.tlsFrontend(default=backend("raw", [serverPort]))
        client = yield self.rawClient(port)
        result = yield outcome(client.send(headers))
        self.assertEqual(result, ("reset", ErrorCodes.PROTOCOL_ERROR))
        ok = yield outcome(client.send(head(b"GET", b"/ok")))
        self.assertEqual(ok, ("response", 200, b"GET /ok"))
        self.assertEqual(self.seen(servers), [(b"GET", b"/ok")])


def _refusedTest(name: str, headers: Headers) -> Callable[[MalformedTests], Any]:
    def test(self: MalformedTests) -> Any:
        return self.assertRefused(headers)

    test.__name__ = "test_" + name
    test.__doc__ = f"A request head with {name} is refused with RST_STREAM PROTOCOL_ERROR; the connection goes on."
    return test


for _name, _headers in MALFORMED.items():
    setattr(MalformedTests, "test_" + _name, _refusedTest(_name, _headers))


class AcceptedTests(SecurityTestCase):
    """
    Well-formed heads that look unusual are accepted and translated to
    HTTP/1.1 as RFC 9113 §8.3 says.
    """

    @inlineCallbacks
    def request(self, headers: Headers, body: Optional[bytes] = None) -> Any:
        serverPort, servers = self.recorder()
        port = self.tlsFrontend(default=backend("raw", [serverPort]))
        client = yield self.rawClient(port)
        result = yield outcome(client.send(headers, body))
        self.assertEqual(result[:2], ("response", 200))
        [request] = [r for p in servers.built for r in p.requests]
        return request

    @inlineCallbacks
    def test_optionsAsterisk(self) -> None:
        """C{OPTIONS *} goes to the server as C{OPTIONS * HTTP/1.1}."""
        method, target, _, _ = yield self.request(head(b"OPTIONS", b"*"))
        self.assertEqual((method, target), (b"OPTIONS", b"*"))

    @inlineCallbacks
    def test_hostDiffersFromAuthority(self) -> None:
        """A host header that disagrees with :authority is dropped: the server sees Host from :authority (as HAProxy does)."""
        _, _, headers, _ = yield self.request(head(b"GET", b"/", (b"host", b"other.example")))
        self.assertEqual([v for n, v in headers if n == b"host"], [b"a.example"])

    @inlineCallbacks
    def test_hostWithoutAuthority(self) -> None:
        """Without :authority, the host header is the Host."""
        _, _, headers, _ = yield self.request(head(b"GET", b"/", (b"host", b"h.example:8443"), authority=None))
        self.assertEqual([v for n, v in headers if n == b"host"], [b"h.example:8443"])

    @inlineCallbacks
    def test_unusualButValid(self) -> None:
        """
        A path starting with two slashes, a query, te: trailers, an IPv6
        :authority and two cookie headers pass: te is not forwarded, the
        cookies are joined with "; ".
        """
        _, target, headers, _ = yield self.request(head(
            b"GET", b"//a/b?c=d&e=%20", (b"te", b"trailers"), (b"cookie", b"a=1"), (b"cookie", b"b=2"),
            authority=b"[::1]:8443",
        ))
        self.assertEqual(target, b"//a/b?c=d&e=%20")
        names = [n for n, _ in headers]
        self.assertNotIn(b"te", names)
        self.assertEqual(dict(headers)[b"cookie"], b"a=1; b=2")
        self.assertEqual(dict(headers)[b"host"], b"[::1]:8443")

    @inlineCallbacks
    def test_connectAnswered405(self) -> None:
        """A well-formed plain CONNECT is answered 405 (no CONNECT tunnels over HTTP/2), reaching no server."""
        serverPort, servers = self.recorder()
        port = self.tlsFrontend(default=backend("raw", [serverPort]))
        client = yield self.rawClient(port)
        result = yield outcome(client.send([(b":method", b"CONNECT"), (b":authority", b"a.example:443")]))
        self.assertEqual(result[:2], ("response", 405))
        self.assertEqual(servers.built, [])


# -- finding 3: floods -----------------------------------------------------------------


def _frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload


_PING = _frame(6, 0, 0, b"12345678")
_SETTINGS = _frame(4, 0, 0, b"")


@implementer(IHandshakeListener, IPushProducer)
class Flooder(Protocol):
    """
    Sends the HTTP/2 preface and C{opening}, then C{frame} over and over as
    fast as its own connection takes them (it respects its back-pressure),
    and never reads a byte of what the server sends.

    @ivar monitor: Called after each batch written; returning true stops the flood.
    @ivar done: Fires when the flood is over: the connection closed, or
        C{monitor} or C{limit} stopped it.
    """

    def __init__(self, opening: bytes, frame: bytes, monitor: Callable[[], bool], limit: int) -> None:
        self.opening = opening
        self.batch = frame * 1000
        self.monitor = monitor
        self.limit = limit
        self.sent = 0
        self.paused = False
        self.stopped = False
        self.done: Deferred[None] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self._call: Any = None

    def handshakeCompleted(self) -> None:
        transport: Any = self.transport
        _smallBuffers(transport.transport)
        transport.pauseProducing()  # never read
        transport.registerProducer(self, True)
        transport.write(_PREFACE + _SETTINGS + self.opening)
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not self.paused and not self.stopped:
            self._call = reactor.callLater(0, self._pump)

    def _pump(self) -> None:
        self._call = None
        if self.paused or self.stopped:
            return
        self.transport.write(self.batch)  # type: ignore[union-attr]
        self.sent += len(self.batch)
        if self.monitor() or self.sent >= self.limit:
            self.stopped = True
            self._done()
            return
        self._schedule()

    def _done(self) -> None:
        if not self.done.called:
            self.done.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self.stopped = True

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.stopped = True
        if self._call is not None:
            self._call.cancel()
            self._call = None
        self.closed.callback(None)
        self._done()


def _smallBuffers(tcp: Any) -> None:
    """Make the kernel buffers of a connection small (and fixed): what is not read shows up at once."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        tcp.getHandle().setsockopt(socket.SOL_SOCKET, option, 32768)


def _buffered(protocol: Any) -> int:
    """Bytes lbkit's side of a TLS connection holds, not yet given to the kernel."""
    tcp = protocol.transport.transport
    return len(tcp.dataBuffer) - tcp.offset + tcp._tempDataLen  # type: ignore[no-any-return]


class FloodTests(SecurityTestCase):
    """
    A client that makes lbkit answer without reading, or that opens and
    resets streams, or opens too many, costs a bounded amount and is cut
    off; other clients are served meanwhile.
    """

    timeout = 30

    @inlineCallbacks
    def flood(self, frame: bytes) -> Any:
        class Mute(FramingServer):
            def answer(self, method: bytes, target: bytes) -> None:
                if target != b"/hold":
                    FramingServer.answer(self, method, target)

        serverPort, servers = self.custom(Mute)
        port = self.tlsFrontend(default=backend("raw", [serverPort]), timeoutClient=1)
        [factory] = self.frontendFactories()
        warnings: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "lbkit.http" and "ENHANCE_YOUR_CALM" in event.get("log_format", ""):
                warnings.append(event["why"])

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        with open(self.pki.caFile, "rb") as f:
            ca = ssl.Certificate.loadPEM(f.read())
        creator = ssl.optionsForClientTLS("a.example", trustRoot=ca, acceptableProtocols=[b"h2"])
        highest = [0]
        bound = 2 * 1024 * 1024

        def monitor() -> bool:
            for p in factory.connections:
                if getattr(p, "conn", None) is not None and p.transport is not None:
                    if not highest[0]:
                        _smallBuffers(p.transport.transport)  # so that the kernel does not hide the flood
                    highest[0] = max(highest[0], _buffered(p), 1)
            return highest[0] > bound

        # a stream stays open meanwhile (its server does not answer): the
        # connection is not idle, it is a client that does not read
        encoder = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        encoder.initiate_connection()
        encoder.data_to_send()
        encoder.send_headers(1, head(b"GET", b"/hold"), end_stream=True)
        flooder = Flooder(encoder.data_to_send(), frame, monitor, 64 * 1024 * 1024)
        yield connectProtocol(wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port)), flooder)
        start = time.monotonic()
        self.lost.append(flooder.closed)
        self.addCleanup(lambda: flooder.transport.abortConnection() if flooder.transport else None)  # type: ignore[attr-defined]
        client = yield self.h2client(port)
        status, _, _ = yield client.request("/")
        self.assertEqual(status, 200)
        self.assertLess(time.monotonic() - start, 2)
        yield flooder.done.addTimeout(15, reactor)
        self.assertLess(highest[0], bound)
        self.assertTrue(flooder.closed.called, "the flood did not end")
        self.assertLess(highest[0], 512 * 1024)
        self.assertLess(time.monotonic() - start, 3)
        self.assertEqual(len(warnings), 1)
        self.assertIn("not read", warnings[0])
        yield servers.built[0].gone  # the open stream's server connection is closed too

    def test_pingFloodNotReading(self) -> None:
        """
        A client that sends PINGs and never reads makes lbkit stop reading
        once its answers pile up (a bounded buffer), and is cut off within
        bounded time; another client is served meanwhile.
        """
        return self.flood(_PING)  # type: ignore[no-any-return]

    def test_settingsFloodNotReading(self) -> None:
        """The same for a client that sends SETTINGS frames and never reads their ACKs."""
        return self.flood(_SETTINGS)  # type: ignore[no-any-return]

    @inlineCallbacks
    def test_rapidReset(self) -> None:
        """
        HEADERS each followed at once by RST_STREAM (CVE-2023-44487): past
        the reset budget lbkit sends GOAWAY ENHANCE_YOUR_CALM and closes;
        the reset streams reached no server and wrote no access-log line.
        """
        serverPort, servers = self.recorder()
        log = self.accessLog()
        port = self.tlsFrontend(default=backend("raw", [serverPort]), log=True)
        client = yield self.rawClient(port)
        yield client.send(head(b"GET", b"/warm"))
        for _ in range(3 * RESET_BURST):
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, head(b"GET", b"/reset"), end_stream=True)
            client.conn.reset_stream(sid, ErrorCodes.CANCEL)
            client.flush()
        yield client.closed.addTimeout(10, reactor)
        self.assertEqual(client.goAway, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertEqual([e for e in log if e["request"].startswith("GET /reset")], [])
        self.assertEqual([r for r in self.seen(servers) if r[1] == b"/reset"], [])
        self.assertEqual(len(servers.built), 1)  # the /warm one

    @inlineCallbacks
    def test_rapidResetAfterRouting(self) -> None:
        """
        Resets of streams lbkit had already sent to a server count against
        the same budget: GOAWAY ENHANCE_YOUR_CALM, after at most the
        budget's worth of such streams (and as many access-log lines).
        """
        class Mute(FramingServer):
            def answer(self, method: bytes, target: bytes) -> None:
                if target != b"/reset":
                    FramingServer.answer(self, method, target)

        serverPort, servers = self.custom(Mute)
        log = self.accessLog()
        port = self.tlsFrontend(default=backend("raw", [serverPort]), log=True)
        client = yield self.rawClient(port)
        batch = MAX_CONCURRENT_STREAMS // 2
        for _ in range(3 * RESET_BURST // batch):
            if client.goAway is not None:
                break
            sids = []
            for _ in range(batch):
                sids.append(client.conn.get_next_available_stream_id())
                client.conn.send_headers(sids[-1], head(b"GET", b"/reset"), end_stream=True)
            sync = yield outcome(client.send(head(b"GET", b"/sync")))  # the batch was routed
            if sync[0] != "response":
                break
            for sid in sids:
                client.conn.reset_stream(sid, ErrorCodes.CANCEL)
            client.flush()
        yield client.closed.addTimeout(10, reactor)
        self.assertEqual(client.goAway, ErrorCodes.ENHANCE_YOUR_CALM)
        served = [r for r in self.seen(servers) if r[1] == b"/reset"]
        self.assertLessEqual(len(served), RESET_BURST + batch)
        self.assertLessEqual(len([e for e in log if e["request"].startswith("GET /reset")]), RESET_BURST + batch)

    @inlineCallbacks
    def test_tooManyStreamsRefused(self) -> None:
        """
        A stream past SETTINGS_MAX_CONCURRENT_STREAMS gets REFUSED_STREAM;
        the streams already open are served, and so is the next one.
        """
        held: list[FramingServer] = []
        allHeld: Deferred[None] = Deferred()

        class Holding(FramingServer):
            def answer(self, method: bytes, target: bytes) -> None:
                if target.startswith(b"/hold"):
                    held.append(self)
                    if len(held) == MAX_CONCURRENT_STREAMS:
                        allHeld.callback(None)
                    self.waiting = (method, target)
                else:
                    FramingServer.answer(self, method, target)

        serverPort, servers = self.custom(Holding)
        port = self.tlsFrontend(default=backend("raw", [serverPort]))
        client = yield self.rawClient(port)
        yield client.send(head(b"GET", b"/warm"))
        client.ignoreStreamLimit()
        streams = [outcome(client.send(head(b"GET", b"/hold/%d" % i))) for i in range(MAX_CONCURRENT_STREAMS)]
        yield allHeld
        extra = yield outcome(client.send(head(b"GET", b"/extra")))
        self.assertEqual(extra, ("reset", ErrorCodes.REFUSED_STREAM))
        for p in held:
            FramingServer.answer(p, *p.waiting)
        results = yield gatherResults(streams)
        self.assertEqual({r[:2] for r in results}, {("response", 200)})
        after = yield outcome(client.send(head(b"GET", b"/after")))
        self.assertEqual(after[:2], ("response", 200))
        self.assertNotIn((b"GET", b"/extra"), self.seen(servers))


# -- HAProxy as the oracle --------------------------------------------------------------

_HAPROXY = "/usr/sbin/haproxy"

_HAPROXY_CONF = """
global
    tune.ssl.default-dh-param 2048
defaults
    mode http
    timeout client 5s
    timeout server 5s
    timeout connect 1s
frontend fe
    bind 127.0.0.1:{port} ssl crt {pem} alpn h2
    default_backend be
backend be
    server s1 127.0.0.1:{server}
"""

#: Malformed heads HAProxy 2.6 refuses too (RST_STREAM, GOAWAY or 400).
#: lbkit also refuses, as RFC 9113 and RFC 9110 require, some that HAProxy
#: 2.6 forwards (later HAProxy versions refuse several of them): a :path
#: "*" on GET, non-ASCII bytes in :path, :protocol without CONNECT, values
#: with surrounding whitespace (HAProxy trims them), a malformed or missing
#: :authority or host, and content-length on a stream ended by its HEADERS.
ORACLE = [
    "pathWithSpace", "pathWithSpaceAndVersion", "pathRelative", "pathAbsoluteURI", "pathEmpty",
    "pathControlByte", "pathTab", "pathDEL", "pathFragment", "pathNUL", "methodWithSpace", "methodNonToken",
    "methodEmpty", "methodMissing", "pathMissing", "schemeMissing", "schemeInvalid", "pathTwice", "methodTwice",
    "unknownPseudoHeader", "statusInRequest", "pseudoAfterRegular", "connectWithPath", "nameUpperCase",
    "nameWithSpace", "nameNonToken", "nameWithColon", "nameEmpty", "nameHighByte", "valueCR", "valueLF",
    "valueNUL", "connection", "keepAlive", "proxyConnection", "transferEncoding", "upgrade", "teNotTrailers",
    "authorityWithSpace",
]


class HAProxyOracleTests(SecurityTestCase):
    """
    lbkit refuses the malformed heads HAProxy refuses, given the same bytes.
    """

    @inlineCallbacks
    def haproxy(self, serverPort: int) -> Any:
        binary = requireBinary(_HAPROXY)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        pem = self.pki.issue("haproxy.pem", "a.example")
        port = freePort()
        conf = os.path.join(directory, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(_HAPROXY_CONF.format(port=port, pem=pem, server=serverPort))
        runner = spawn(self, reactor, [binary, "-db", "-f", conf])
        # HAProxy says nothing once it listens: try until it accepts
        for _ in range(200):
            try:
                probe = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(_probeFactory())
            except Exception as e:
                if not runner.running:
                    raise RuntimeError(f"haproxy exited: {runner.output!r}") from e
                yield task.deferLater(reactor, 0.05, lambda: None)
                continue
            probe.transport.loseConnection()
            return port
        raise RuntimeError(f"haproxy did not listen: {runner.output!r}")

    @inlineCallbacks
    def test_sameRefusals(self) -> None:
        """
        Each malformed head HAProxy refuses is refused by lbkit too
        (RST_STREAM PROTOCOL_ERROR), and reaches neither proxy's server.
        """
        haproxyServerPort, haproxyServers = self.recorder()
        haproxy = yield self.haproxy(haproxyServerPort)
        serverPort, servers = self.recorder()
        lbkit = self.tlsFrontend(default=backend("raw", [serverPort]))
        verdicts = {}
        for name in ORACLE:
            for proxy, port in (("haproxy", haproxy), ("lbkit", lbkit)):
                client = yield self.rawClient(port)
                result = yield outcome(client.send(MALFORMED[name]))
                client.transport.loseConnection()
                refused = result[0] != "response" or result[1] == 400
                verdicts[name, proxy] = "refused" if refused else f"answered {result[1]}"
                if proxy == "lbkit":
                    verdicts[name, proxy] += f" {result[:2]}"
        self.assertEqual({k: v for k, v in verdicts.items() if k[1] == "haproxy" and v != "refused"}, {})
        self.assertEqual(
            {k: v for k, v in verdicts.items() if k[1] == "lbkit"},
            {(n, "lbkit"): f"refused ('reset', {ErrorCodes.PROTOCOL_ERROR!r})" for n in ORACLE},
        )
        self.assertEqual((self.seen(haproxyServers), self.seen(servers)), ([], []))


def _probeFactory() -> Any:
    return Factory.forProtocol(Protocol)
