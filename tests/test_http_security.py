"""
Request parsing against request smuggling and routing bypasses, over real
sockets on 127.0.0.1: lbkit (and, where it gives the same answer, HAProxy)
in front of a raw server that records every byte it receives, so a test can
say "the server saw nothing" or "the server saw exactly this request".
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import reactor as _globalReactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from lbkit import Backend, Server
from lbkit.http import HTTPProxyFactory, Route, hostIs, pathBegins
from lbkit.http._parse import MAX_HEAD, MAX_HEADERS
from tests.helpers import freePort, startHAProxy
from tests.test_http_integration import HTTPTestCase, OneShot, ServerFactory

reactor: Any = _globalReactor

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Recorder(Protocol):
    """
    A raw HTTP/1.1 server that records every byte it receives and answers
    200 C{ok} to each request it sees end: at the blank line after the head,
    after C{Content-Length} bytes, or for a C{Transfer-Encoding} body when
    the bytes so far end with a blank line.
    """

    def __init__(self) -> None:
        self.data = b""
        self._pending = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self._pending += data
        self.factory.received()  # type: ignore[attr-defined]
        while True:
            end = self._pending.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._pending[:end].lower()
            rest = self._pending[end + 4 :]
            if b"\r\ntransfer-encoding:" in head:
                if not rest.endswith(b"\r\n\r\n"):
                    return
                rest = b""
            else:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name == b"content-length" and value.strip().isdigit():
                        length = int(value)
                if len(rest) < length:
                    return
                rest = rest[length:]
            self._pending = rest
            assert self.transport is not None
            self.transport.write(OK)


class RecorderFactory(ServerFactory):
    """Builds L{Recorder}s; L{waitFor} waits until they have received some bytes."""

    def __init__(self) -> None:
        ServerFactory.__init__(self, Recorder)
        self._waiters: list[tuple[bytes, Deferred[None]]] = []

    def received(self) -> None:
        data = seen(self)
        for entry in list(self._waiters):
            if entry[0] in data:
                self._waiters.remove(entry)
                entry[1].callback(None)

    def waitFor(self, needle: bytes) -> Deferred[None]:
        """Fires once C{needle} is in what the recorders received."""
        d: Deferred[None] = Deferred()
        self._waiters.append((needle, d))
        self.received()
        return d


def seen(factory: ServerFactory) -> bytes:
    """Every byte the recorders of C{factory} received, connection after connection."""
    return b"".join(p.data for p in factory.built)  # type: ignore[attr-defined]


class Exchange(Protocol):
    """
    A client that writes C{data} (in pieces of C{pieceSize} bytes, one per
    reactor turn, if given) and fires L{answered} with the status code of
    the first complete response, or 0 if the connection ends without one.
    """

    def __init__(self, data: bytes, pieceSize: int = 0) -> None:
        self.data = data
        self.pieceSize = pieceSize
        self.raw = b""
        self.answered: Deferred[int] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self._next: Any = None

    def connectionMade(self) -> None:
        if self.pieceSize:
            self._writePiece(0)
        else:
            assert self.transport is not None
            self.transport.write(self.data)

    def _writePiece(self, offset: int) -> None:
        self._next = None
        if self.raw or offset >= len(self.data):
            return  # answered already: the rest would only be refused
        assert self.transport is not None
        self.transport.write(self.data[offset : offset + self.pieceSize])
        self._next = reactor.callLater(0, self._writePiece, offset + self.pieceSize)

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        end = self.raw.find(b"\r\n\r\n")
        if end < 0 or self.answered.called:
            return
        length = 0
        for line in self.raw[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.raw) >= end + 4 + length:
            self.answered.callback(self.status())

    def status(self) -> int:
        """The status code received, or 0."""
        parts = self.raw.split(b" ", 2)
        return int(parts[1]) if self.raw.startswith(b"HTTP/1.") and len(parts) > 1 and parts[1].isdigit() else 0

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        if self._next is not None:
            self._next.cancel()
            self._next = None
        if not self.answered.called:
            self.answered.callback(self.status())
        self.closed.callback(None)


class RecordingProxyFactory(HTTPProxyFactory):
    """An L{HTTPProxyFactory} that keeps the access-log fields of each request."""

    def __init__(self, *args: Any) -> None:
        HTTPProxyFactory.__init__(self, *args)
        self.logged: list[dict[str, Any]] = []

    def logAccess(self, fields: dict[str, Any]) -> None:
        self.logged.append(fields)


class SecurityTestCase(HTTPTestCase):
    """
    Recorders, an lbkit frontend that keeps its log fields, and one
    exchange per connection.
    """

    timeout = 20

    def recorder(self) -> tuple[int, RecorderFactory]:
        """A L{Recorder} server: its port and factory (see L{seen})."""
        factory = RecorderFactory()
        factory.lost = self.lost
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.ports.append(port)
        return int(port.getHost().port), factory

    def lbkit(self, routes: Any = (), default: Optional[Backend] = None, **kwargs: Any) -> int:
        """An lbkit frontend without X-Forwarded-* headers; its port."""
        kwargs.setdefault("forwardedFor", False)
        kwargs.setdefault("timeoutHttpRequest", 3.0)
        return self.frontend(routes, default=default, factory=RecordingProxyFactory, **kwargs)

    def logged(self) -> list[dict[str, Any]]:
        """The access-log fields of the last frontend started."""
        factory = self._frontends[-1].factories[0]
        assert isinstance(factory, RecordingProxyFactory)
        return factory.logged

    @inlineCallbacks
    def exchange(self, port: int, data: bytes, pieceSize: int = 0) -> Any:
        """Send C{data} on a new connection; fire with the status code of the answer (0: none)."""
        client = Exchange(data, pieceSize)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        status = yield client.answered
        assert client.transport is not None
        client.transport.loseConnection()
        yield client.closed
        return status

    @inlineCallbacks
    def assertRefused(self, port: int, factories: list[ServerFactory], cases: list[bytes], status: int = 400) -> Any:
        """Each of C{cases} is answered C{status}, and no server of C{factories} sees a byte of any."""
        for data in cases:
            code = yield self.exchange(port, data)
            self.assertEqual((code, [seen(f) for f in factories]), (status, [b""] * len(factories)), data[:120])


def one(server: int, **kwargs: Any) -> Backend:
    """A backend of one server on port C{server}."""
    return Backend(f"be{server}", [Server(f"s{server}", f"127.0.0.1:{server}")], **kwargs)


class AbsoluteFormTests(SecurityTestCase):
    """
    An absolute-form target (C{GET http://host/path}) is routed and
    forwarded as the origin-form request it stands for: the authority is the
    Host, the path is the path; a Host header naming another host is refused.
    """

    def setUp(self) -> None:
        super().setUp()
        self.adminPort, self.admin = self.recorder()
        self.blogPort, self.blog = self.recorder()
        self.publicPort, self.public = self.recorder()
        self.port = self.lbkit(
            [Route(hostIs("admin.example"), one(self.adminPort)), Route(pathBegins("/blog"), one(self.blogPort))],
            default=one(self.publicPort),
        )

    @inlineCallbacks
    def test_otherHostRefused(self) -> Any:
        """An absolute target naming one host with a Host header naming another is a 400 that reaches no server."""
        yield self.assertRefused(
            self.port,
            [self.admin, self.blog, self.public],
            [
                b"GET http://admin.example/secret HTTP/1.1\r\nHost: public.example\r\n\r\n",
                b"GET http://admin.example:8080/secret HTTP/1.1\r\nHost: admin.example\r\n\r\n",
                b"GET http://public.example@admin.example/secret HTTP/1.1\r\nHost: admin.example\r\n\r\n",
                b"GET http:///secret HTTP/1.1\r\nHost: public.example\r\n\r\n",
                b"GET ftp://admin.example/secret HTTP/1.1\r\nHost: admin.example\r\n\r\n",
                b"GET admin.example/secret HTTP/1.1\r\nHost: admin.example\r\n\r\n",
            ],
        )

    @inlineCallbacks
    def test_authorityIsTheHost(self) -> Any:
        """An absolute target without Host goes where its authority routes, as an origin-form request."""
        code = yield self.exchange(self.port, b"GET http://Admin.Example/secret?x=1 HTTP/1.1\r\n\r\n")
        self.assertEqual(code, 200)
        self.assertEqual(seen(self.admin), b"GET /secret?x=1 HTTP/1.1\r\nHost: Admin.Example\r\n\r\n")
        self.assertEqual((seen(self.blog), seen(self.public)), (b"", b""))

    @inlineCallbacks
    def test_pathIsThePath(self) -> Any:
        """Path routes see the path of an absolute target, and the server gets the same path."""
        code = yield self.exchange(
            self.port, b"GET http://www.example:80/blog/1 HTTP/1.1\r\nHost: WWW.example\r\n\r\n"
        )
        self.assertEqual(code, 200)
        self.assertEqual(seen(self.blog), b"GET /blog/1 HTTP/1.1\r\nHost: WWW.example\r\n\r\n")
        self.assertEqual((seen(self.admin), seen(self.public)), (b"", b""))


class HostHeaderTests(SecurityTestCase):
    """
    Two Host headers with different values are a 400; identical ones are
    merged into one.
    """

    @inlineCallbacks
    def test_duplicateHostRefused(self) -> Any:
        """A request with two different Host headers is a 400 that reaches no server."""
        aPort, a = self.recorder()
        bPort, b = self.recorder()
        port = self.lbkit([Route(hostIs("a.example"), one(aPort))], default=one(bPort))
        yield self.assertRefused(
            port,
            [a, b],
            [
                b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: b.example\r\nX: 1\r\nhost: a.example\r\n\r\n",
                b"GET / HTTP/1.0\r\nHost: a.example\r\nHost: a.example:80\r\n\r\n",
            ],
        )

    @inlineCallbacks
    def test_identicalHostsMerged(self) -> Any:
        """Repeated identical Host headers reach the server as one."""
        p, r = self.recorder()
        port = self.lbkit(default=one(p))
        code = yield self.exchange(port, b"GET / HTTP/1.1\r\nHost: a.example\r\nX: 1\r\nHost: A.example\r\n\r\n")
        self.assertEqual(code, 200)
        self.assertEqual(seen(r), b"GET / HTTP/1.1\r\nHost: a.example\r\nX: 1\r\n\r\n")


class HeadLimitTests(SecurityTestCase):
    """
    A request head over MAX_HEAD bytes, or with more than MAX_HEADERS
    header lines, is a 431 however its bytes arrive.
    """

    def setUp(self) -> None:
        super().setUp()
        self.serverPort, self.server = self.recorder()
        self.port = self.lbkit(default=one(self.serverPort))

    @inlineCallbacks
    def test_oneWrite(self) -> Any:
        """A long request line, 10,000 headers or one 100 KB header sent at once get 431 and reach no server."""
        yield self.assertRefused(
            self.port,
            [self.server],
            [
                b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-A: 1\r\n" * 10000 + b"\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 100000 + b"\r\n\r\n",
            ],
            431,
        )

    @inlineCallbacks
    def test_smallWrites(self) -> Any:
        """The same long request line written 1 KB at a time gets the same 431."""
        code = yield self.exchange(self.port, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 1024)
        self.assertEqual((code, seen(self.server)), (431, b""))

    @inlineCallbacks
    def test_headerCount(self) -> Any:
        """MAX_HEADERS header lines pass; one more is a 431 even in a small head."""
        yield self.assertRefused(
            self.port, [self.server], [b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * (MAX_HEADERS + 1) + b"\r\n"], 431
        )
        request = b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * MAX_HEADERS + b"\r\n"
        code = yield self.exchange(self.port, request)
        self.assertEqual((code, seen(self.server)), (200, request))

    @inlineCallbacks
    def test_exactLimit(self) -> Any:
        """A head of exactly MAX_HEAD bytes, blank line included, passes; one byte more is a 431."""
        start = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: "
        request = start + b"p" * (MAX_HEAD - len(start) - 4) + b"\r\n\r\n"
        self.assertEqual(len(request), MAX_HEAD)
        code = yield self.exchange(self.port, request[:-4] + b"p\r\n\r\n")
        self.assertEqual((code, seen(self.server)), (431, b""))
        code = yield self.exchange(self.port, request)
        self.assertEqual((code, seen(self.server)), (200, request))


class ConnectFailureTests(SecurityTestCase):
    """
    A request no server could take is a 503, whatever the reason.
    """

    @inlineCallbacks
    def test_refusedEverywhere(self) -> Any:
        """A connect refused by every server, after the retries, is a 503 logged SC."""
        port = self.lbkit(default=Backend("gone", [Server("gone1", f"127.0.0.1:{freePort()}")], retries=1))
        code = yield self.exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(code, 503)
        [fields] = self.logged()
        self.assertEqual((fields["status"], fields["termination"], fields["retries"]), (503, "SC", 1))


class ResponseHeadTests(SecurityTestCase):
    """
    A server's response head whose status line or framing some client
    could read differently from lbkit is answered 502 to the client, and
    none of its bytes reach the client.
    """

    @inlineCallbacks
    def assertBadGateway(self, answers: list[bytes]) -> Any:
        """Each of C{answers}, from a server, gets the client a 502 and nothing of the answer."""
        for answer in answers:
            port, _ = self.custom(lambda answer=answer: OneShot(lambda p: p.transport.write(answer)))
            lb = self.lbkit(default=one(port))
            client = Exchange(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", lb), client)
            code = yield client.answered
            assert client.transport is not None
            client.transport.loseConnection()
            yield client.closed
            self.assertEqual(code, 502, answer)
            self.assertNotIn(b"Injected", client.raw, answer)
            self.assertNotIn(b"ok", client.raw.split(b"\r\n\r\n", 1)[1], answer)

    def test_lineBreakInStatusLine(self) -> Any:
        """A bare LF or CR, or another control character, in the reason phrase is a 502."""
        return self.assertBadGateway([
            b"HTTP/1.1 200 OK\nX-Injected: 1\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 100 \nX-Injected:\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 O\rX-Injected: 1\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 O\x1bK\r\nContent-Length: 2\r\n\r\nok",
        ])

    def test_lineBreakInFieldName(self) -> Any:
        """A field name that ends in a bare LF is a 502."""
        return self.assertBadGateway([
            b"HTTP/1.1 200 OK\r\nX-Injected\n: 1\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding\n: chunked\r\n\r\nok",
        ])

    def test_framing(self) -> Any:
        """VT or FF around a Content-Length, or chunked applied twice, is a 502, as HAProxy answers."""
        return self.assertBadGateway([
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\x0c\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: \x0b2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ])

    @inlineCallbacks
    def test_controlCharacterBeforeChunked(self) -> Any:
        """
        A Transfer-Encoding of VT or FF with chunked is another coding, not
        chunked: the body lasts until the server closes, and so does the
        client's connection (no client can take what follows for a response).
        """
        for value in (b"\x0bchunked", b"chunked\x0c", b"gzip, chunked\x0b"):
            answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + value + b"\r\n\r\n2\r\nok\r\n0\r\n\r\nmore"
            port, _ = self.custom(lambda answer=answer: OneShot(lambda p: (p.transport.write(answer), p.transport.loseConnection())))
            client = Exchange(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.lbkit(default=one(port))), client)
            code = yield client.answered
            yield client.closed
            head, _, body = client.raw.partition(b"\r\n\r\n")
            self.assertEqual((code, body), (200, b"2\r\nok\r\n0\r\n\r\nmore"), value)
            self.assertIn(b"\r\nConnection: close", head, value)


    def test_version(self) -> Any:
        """A status line whose version is not HTTP/1. and a digit is a 502, as HAProxy answers."""
        return self.assertBadGateway([
            b"HTTP/1.x 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.\r1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1\x00 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.10 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ])

    @inlineCallbacks
    def test_minorVersions(self) -> Any:
        """HTTP/1.0, HTTP/1.1 and a later HTTP/1 minor version pass (RFC 9110 2.5), as through HAProxy."""
        for version in (b"HTTP/1.0", b"HTTP/1.1", b"HTTP/1.2"):
            answer = version + b" 200 OK\r\nContent-Length: 2\r\n\r\nok"
            port, _ = self.custom(lambda answer=answer: OneShot(lambda p: p.transport.write(answer)))
            code = yield self.exchange(self.lbkit(default=one(port)), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertEqual(code, 200, version)

#: Requests lbkit and HAProxy both refuse with 400 before a server sees them.
LENIENCIES = [
    # a chunk size past 2**52 - 1 (HAProxy's limit)
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    # a bare CR in a chunk extension
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n",
    # a trailer line that is not a header field
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n",
    # control characters around a Content-Length
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \x0b5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\x0c\r\n\r\nhello",
    # chunked twice
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    # "#" and bytes >= 0x80 in the target
    b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n",
    # the Host does not name the absolute target's authority
    b"GET http://admin.example/secret HTTP/1.1\r\nHost: public.example\r\n\r\n",
    # two Hosts
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
]


class LeniencyTests(SecurityTestCase):
    """
    Framing and target oddities that some server could read differently
    are refused with 400 before any server sees them.
    """

    def setUp(self) -> None:
        super().setUp()
        self.serverPort, self.server = self.recorder()
        self.port = self.lbkit(default=one(self.serverPort))

    def test_refused(self) -> Any:
        """Each leniency HAProxy refuses is a 400 that reaches no server."""
        return self.assertRefused(self.port, [self.server], LENIENCIES)

    def test_otherCodings(self) -> Any:
        """A request Transfer-Encoding other than plain chunked, or any on HTTP/1.0, is a 400 that reaches no server."""
        return self.assertRefused(
            self.port,
            [self.server],
            [
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            ],
        )

    def test_highBytesInTarget(self) -> Any:
        """A target with a byte of 0x80 or more is a 400 that reaches no server."""
        return self.assertRefused(self.port, [self.server], [b"GET /a\x80b HTTP/1.1\r\nHost: a\r\n\r\n"])

    @inlineCallbacks
    def test_bareLF(self) -> Any:
        """A request whose lines end in bare LF is answered 400 at once, not 408 after the request timeout."""
        start = reactor.seconds()
        code = yield self.exchange(self.port, b"GET / HTTP/1.1\nHost: a\n\n")
        self.assertEqual((code, seen(self.server)), (400, b""))
        code = yield self.exchange(self.port, b"GET / HTTP/1.1\nHost: a\n\r\n")
        self.assertEqual((code, seen(self.server)), (400, b""))
        self.assertLess(reactor.seconds() - start, 2.0)
        self.assertEqual([f["termination"] for f in self.logged()], ["PR", "PR"])

    @inlineCallbacks
    def test_badChunkLater(self) -> Any:
        """A chunk size that overflows in a later read is a 400 to the client, and the server connection is dropped."""
        client = Exchange(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), client)
        yield self.server.waitFor(b"hello\r\n")
        assert client.transport is not None
        client.transport.write(b"10000000000000\r\n")
        code = yield client.answered
        yield client.closed
        yield self.server.lost[0]
        self.assertEqual(code, 400)
        self.assertEqual([f["termination"] for f in self.logged()], ["CR"])

    @inlineCallbacks
    def test_longChunkLine(self) -> Any:
        """
        A chunk line over 4 KiB is a 400 however it arrives: in one read with
        the head it reaches no server; in later reads the server connection is
        dropped.
        """
        data = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;" + b"x" * 5000
        data += b"\r\nhello\r\n0\r\n\r\n"
        code = yield self.exchange(self.port, data)
        self.assertEqual((code, seen(self.server)), (400, b""))
        code = yield self.exchange(self.port, data, 1000)
        yield gatherResults(self.server.lost)  # type: ignore[attr-defined]
        self.assertEqual(code, 400)
        self.assertNotIn(b"hello", seen(self.server))

    @inlineCallbacks
    def test_strictButNotStricter(self) -> Any:
        """Well-formed chunk extensions, trailers, repeated equal Content-Lengths and Chunked pass intact."""
        chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
        body = b"5;name=\"v\"\t;x\r\nhello\r\n000\r\nX-T: 1\r\n\r\n"
        code = yield self.exchange(self.port, chunked + body)
        self.assertEqual(code, 200)
        self.assertEqual(
            seen(self.server), b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body
        )
        before = len(seen(self.server))
        code = yield self.exchange(
            self.port, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello"
        )
        self.assertEqual(code, 200)
        self.assertEqual(seen(self.server)[before:], b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")


HAPROXY_CONFIG = """\
defaults
  mode http
  timeout connect 2s
  timeout client 10s
  timeout server 10s
  timeout http-request 5s
frontend fe
  bind {bind}
  default_backend be
backend be
  retries 1
  server s1 127.0.0.1:%d
"""


class SameAsHAProxyTests(SecurityTestCase):
    """
    The same bytes sent through HAProxy and through lbkit to the same
    recording server get the same status, and reach the server alike.
    """

    @inlineCallbacks
    def test_sameStatus(self) -> Any:
        """HAProxy and lbkit answer each request with the same status; a refused one reaches neither's server."""
        serverPort, server = self.recorder()
        haproxy, _ = startHAProxy(self, reactor, HAPROXY_CONFIG % serverPort)
        port = self.lbkit(default=one(serverPort))
        accepted = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            b"GET http://a.example:80/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        ]
        for data in accepted + LENIENCIES:
            before = len(seen(server))
            expected = yield self.exchange(haproxy, data)
            reached = seen(server)[before:] != b""
            code = yield self.exchange(port, data)
            self.assertEqual((code, seen(server)[before:] != b""), (expected, reached), data[:120])
            self.assertEqual(reached, data in accepted, data[:120])
            self.assertEqual(code, 200 if reached else 400, data[:120])

    @inlineCallbacks
    def test_refusedIs503(self) -> Any:
        """HAProxy and lbkit both answer 503 when every connect is refused."""
        gone = freePort()
        haproxy, _ = startHAProxy(self, reactor, HAPROXY_CONFIG % gone)
        port = self.lbkit(default=one(gone, retries=1))
        expected = yield self.exchange(haproxy, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        code = yield self.exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual((expected, code), (503, 503))
