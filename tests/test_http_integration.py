"""
http mode over real sockets on 127.0.0.1: lbkit's frontend in this process
in front of twisted.web sites and small hand-written servers.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Optional

from twisted.internet import reactor as _globalReactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from lbkit import Backend, Server, ServerState
from lbkit.http import Frontend, Route, addHeader, headerIs, hostIs, pathBegins
from lbkit.http._body import CHUNKED, ChunkedFramer, bodyLength
from lbkit.http._parse import parseResponseHead
from tests.helpers import freePort

reactor: Any = _globalReactor

BLOCK = 65536
_BASE = os.urandom(BLOCK)


def block(i: int) -> bytes:
    """Block C{i} of a generated stream: never the same twice in a row."""
    return i.to_bytes(8, "big") + _BASE[8:]


def streamDigest(size: int) -> str:
    """The sha256 of the first C{size} bytes of the generated stream."""
    h = hashlib.sha256()
    i = 0
    while size > 0:
        b = block(i)[:size]
        h.update(b)
        size -= len(b)
        i += 1
    return h.hexdigest()


# -- servers -------------------------------------------------------------------


class TrackingSite(Site):
    """A Site that counts its connections and knows when they are all gone."""

    noisy = False

    def __init__(self, resource: Resource) -> None:
        Site.__init__(self, resource)
        self.connections = 0
        self.lost: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Any:
        p = Site.buildProtocol(self, addr)
        self.connections += 1
        track(p, self.lost)
        return p

    def log(self, request: Any) -> None:
        pass


def track(p: Any, lost: list[Deferred[None]]) -> None:
    """Append to C{lost} a Deferred that fires when protocol C{p} is gone."""
    d: Deferred[None] = Deferred()
    original = p.connectionLost

    def connectionLost(reason: Failure) -> None:
        original(reason)
        d.callback(None)

    p.connectionLost = connectionLost
    lost.append(d)


class Info(Resource):
    """
    Answers with JSON describing the request: server name, method, target,
    headers and the length and sha256 of the body.  C{/chunked} answers in
    chunks; C{/status/N} answers status N.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render(self, request: Request) -> Any:
        path = request.path
        request.setHeader(b"x-served-by", self.name.encode())
        if path.startswith(b"/status/"):
            request.setResponseCode(int(path[8:]))
            return b""
        if path == b"/chunked":
            request.write(b"part1,")
            request.write(b"part2")
            request.finish()
            return NOT_DONE_YET
        assert request.content is not None
        body = request.content.read()
        headers = {k.decode().lower(): [v.decode() for v in vs] for k, vs in request.requestHeaders.getAllRawHeaders()}
        info = {
            "server": self.name,
            "method": request.method.decode(),
            "uri": request.uri.decode(),
            "headers": headers,
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(info).encode()


class OneShot(Protocol):
    """A server that reads a request head, then does C{action(self)}."""

    def __init__(self, action: Callable[[OneShot], None]) -> None:
        self.action = action
        self.buf = b""

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" in self.buf and self.action is not None:
            action, self.action = self.action, None  # type: ignore[assignment]
            action(self)


class ServerFactory(Factory):
    """Builds protocols with C{make()}, tracking when each is gone."""

    noisy = False

    def __init__(self, make: Callable[[], Protocol]) -> None:
        self.make = make
        self.built: list[Protocol] = []
        self.lost: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Protocol:
        p = self.make()
        p.factory = self
        self.built.append(p)
        track(p, self.lost)
        return p


@implementer(IPushProducer)
class BlockWriter:
    """
    Writes C{size} bytes of the generated stream to C{transport} as fast as
    it takes them, then calls C{done}.
    """

    def __init__(self, transport: Any, size: int, done: Callable[[], None] = lambda: None) -> None:
        self.transport = transport
        self.left = size
        self.index = 0
        self.paused = False
        self.done = done
        transport.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.left > 0:
            b = block(self.index)[: self.left]
            self.index += 1
            self.left -= len(b)
            self.transport.write(b)
        if self.left == 0 and self.transport is not None:
            transport, self.transport = self.transport, None
            transport.unregisterProducer()
            self.done()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True
        self.left = -1


class BodyHasher(Protocol):
    """
    A server that hashes a Content-Length request body and answers with
    its sha256, or for C{GET /N} sends N bytes of the generated stream.
    """

    def __init__(self) -> None:
        self.buf = b""
        self.left = -1
        self.hash = hashlib.sha256()

    def dataReceived(self, data: bytes) -> None:
        if self.left < 0:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.buf[:end], self.buf[end + 4 :]
            self.buf = b""
            line = head.split(b"\r\n")[0]
            if line.startswith(b"GET "):
                size = int(line.split(b" ")[1][1:])
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                self.left = 0
                BlockWriter(self.transport, size, self._reset)
                return
            length = [v for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")[1:]) if k.lower() == b"content-length"]
            self.left = int(length[0])
        if self.left > 0:
            piece = data[: self.left]
            self.hash.update(piece)
            self.left -= len(piece)
            if self.left == 0:
                digest = self.hash.hexdigest().encode()
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(digest), digest))
                self._reset()

    def _reset(self) -> None:
        """Ready for the next request on this connection."""
        self.left = -1
        self.hash = hashlib.sha256()


# -- client --------------------------------------------------------------------


class RawClient(Protocol):
    """
    An HTTP client that writes bytes as told and parses the responses it
    gets; L{responses} waits until enough have arrived.
    """

    def __init__(self, hashBodies: bool = False) -> None:
        self.data = b""
        self.parsed: list[tuple[Any, bytes]] = []
        self.headRequests: list[bool] = []
        self.closed: Deferred[None] = Deferred()
        self._waiters: list[tuple[int, Deferred[list[tuple[Any, bytes]]]]] = []
        self.hashBodies = hashBodies
        self.hash = hashlib.sha256()
        self.bodyBytes = 0
        self._state: Optional[tuple[Any, int, Optional[ChunkedFramer]]] = None
        self._body: list[bytes] = []
        self.raw = b""
        self._dataWaiters: list[tuple[bytes, Deferred[None]]] = []

    def waitData(self, needle: bytes) -> Deferred[None]:
        """Fires once C{needle} was received (in the first MiB)."""
        d: Deferred[None] = Deferred()
        if needle in self.raw:
            d.callback(None)
        else:
            self._dataWaiters.append((needle, d))
        return d

    def send(self, data: bytes, head: bool = False) -> None:
        """Write C{data}: one request (a HEAD one if C{head})."""
        self.headRequests.append(head)
        assert self.transport is not None
        self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        if len(self.raw) < 1 << 20:
            self.raw += data
            for entry in list(self._dataWaiters):
                if entry[0] in self.raw:
                    self._dataWaiters.remove(entry)
                    entry[1].callback(None)
        self.data += data
        self._parse()

    def _parse(self) -> None:
        while True:
            if self._state is None:
                end = self.data.find(b"\r\n\r\n")
                if end < 0:
                    return
                response = parseResponseHead(self.data[:end])
                self.data = self.data[end + 4 :]
                if response.code < 200 or response.code == 101:
                    self._complete(response)
                    if response.code == 101:
                        return
                    continue
                isHead = self.headRequests[len([p for p in self.parsed if p[0].code >= 200])] if self.headRequests else False
                framing = bodyLength(response.headers, True)
                if isHead or response.code in (204, 304):
                    framing = 0
                self._state = (response, framing, ChunkedFramer() if framing == CHUNKED else None)
            response, framing, framer = self._state
            if framer is not None:
                n = framer.feed(self.data)
                self._take(self.data[:n])
                self.data = self.data[n:]
                if not framer.done:
                    return
            elif framing >= 0:
                n = min(framing, len(self.data))
                self._take(self.data[:n])
                self.data = self.data[n:]
                framing -= n
                if framing > 0:
                    self._state = (response, framing, None)
                    return
            else:
                self._take(self.data)
                self.data = b""
                return
            self._state = None
            self._complete(response)

    def _take(self, data: bytes) -> None:
        if self.hashBodies:
            self.hash.update(data)
            self.bodyBytes += len(data)
        else:
            self._body.append(data)

    def _complete(self, response: Any) -> None:
        self.parsed.append((response, b"".join(self._body)))
        self._body = []
        for entry in list(self._waiters):
            n, d = entry
            if len(self.parsed) >= n:
                self._waiters.remove(entry)
                d.callback(self.parsed[:n])

    def responses(self, n: int = 1) -> Deferred[list[tuple[Any, bytes]]]:
        """Fires with the first C{n} responses (interim ones included)."""
        d: Deferred[list[tuple[Any, bytes]]] = Deferred()
        if len(self.parsed) >= n:
            d.callback(self.parsed[:n])
        else:
            self._waiters.append((n, d))
        return d

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        if self._state is not None and self._state[1] < 0 and self._state[2] is None:
            response = self._state[0]
            self._state = None
            self._complete(response)
        self.closed.callback(None)


class HTTPTestCase(TestCase):
    """
    Starts backends and an http frontend on 127.0.0.1, port 0, and cleans
    everything up: frontends stop, then every connection is waited for.
    """

    timeout = 30

    def setUp(self) -> None:
        self.lost: list[Deferred[None]] = []
        self.services: list[Any] = []
        self.ports: list[Any] = []
        self.addCleanup(self._stopAll)

    @inlineCallbacks
    def _stopAll(self) -> Any:
        for service in self.services:
            yield service.stopService()
            # a client that has gone (curl exited) may not have been read
            # to its end yet on a busy machine: close what is left, and wait
            draining = getattr(service, "drainingFactory", lambda: None)()
            if draining is not None:
                draining.killAll()
                yield draining.whenIdle()
        for factory in self.frontendFactories():
            factory.pool.closeAll()
        yield gatherResults(self.lost)
        for port in self.ports:
            yield port.stopListening()

    def frontendFactories(self) -> list[Any]:
        return [f for fe in getattr(self, "_frontends", []) for f in fe.factories]

    def site(self, name: str) -> tuple[int, TrackingSite]:
        """A twisted.web L{Info} server named C{name}: its port and site."""
        site = TrackingSite(Info(name))
        site.lost = self.lost
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.ports.append(port)
        return port.getHost().port, site

    def custom(self, make: Callable[[], Protocol]) -> tuple[int, ServerFactory]:
        """A hand-written server: its port and factory."""
        factory = ServerFactory(make)
        factory.lost = self.lost
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.ports.append(port)
        return port.getHost().port, factory

    def frontend(self, routes: Any = (), default: Optional[Backend] = None, **kwargs: Any) -> int:
        """Start an http frontend; return its port."""
        kwargs.setdefault("log", False)
        fe = Frontend("tcp:0:interface=127.0.0.1", routes, default=default, name="fe", **kwargs)
        if not hasattr(self, "_frontends"):
            self._frontends: list[Frontend] = []
        self._frontends.append(fe)
        service = fe.makeService(reactor)
        service.startService()
        self.services.append(service)
        return int(service.port.getHost().port)  # type: ignore[attr-defined]

    @inlineCallbacks
    def client(self, port: int, hashBodies: bool = False) -> Any:
        """A connected L{RawClient}; closed in cleanup."""
        c = RawClient(hashBodies)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), c)
        self.lost.append(c.closed)
        self.addCleanup(lambda: c.transport.loseConnection() if c.transport else None)  # type: ignore[attr-defined]
        return c

    @inlineCallbacks
    def get(self, port: int, path: str = "/", headers: str = "") -> Any:
        """One GET on a new connection: fires with (response, body)."""
        c = yield self.client(port)
        c.send(f"GET {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode())
        [(response, body)] = yield c.responses(1)
        c.transport.loseConnection()
        return response, body


def backend(name: str, ports: list[int], **kwargs: Any) -> Backend:
    """A backend of servers C{name}1, C{name}2 ... on C{ports}."""
    return Backend(name, [Server(f"{name}{i + 1}", f"127.0.0.1:{p}") for i, p in enumerate(ports)], **kwargs)


class RoutingTests(HTTPTestCase):
    """
    Requests are routed by path, host and header.
    """

    @inlineCallbacks
    def test_routing(self) -> Any:
        """Each route sends to its backend; the rest go to the default."""
        ports = {n: self.site(n)[0] for n in ["web", "blog", "api", "beta", "other"]}
        be = {n: backend(n, [p]) for n, p in ports.items()}
        port = self.frontend(
            [
                Route(pathBegins("/blog"), be["blog"]),
                Route(hostIs("api.example.com"), be["api"]),
                Route(headerIs("X-Channel", "beta"), be["beta"]),
                Route(pathBegins("/web"), be["web"]),
            ],
            default=be["other"],
        )
        cases = [
            ("/blog/1", "", "blog"),
            ("/x", "Host: API.example.com:80\r\n", "api"),
            ("/x", "X-Channel: beta\r\n", "beta"),
            ("/web/", "", "web"),
            ("/nothing", "", "other"),
        ]
        for path, extra, expected in cases:
            c = yield self.client(port)
            c.send(f"GET {path} HTTP/1.1\r\n{extra or 'Host: test' + chr(13) + chr(10)}\r\n".encode())
            [(response, body)] = yield c.responses(1)
            self.assertEqual(json.loads(body)["server"], expected, path)
            c.transport.loseConnection()


class KeepAliveTests(HTTPTestCase):
    """
    Keep-alive with clients and pooled server connections.
    """

    @inlineCallbacks
    def test_oneServerConnection(self) -> Any:
        """Ten requests on one client connection use one server connection."""
        p, site = self.site("s")
        port = self.frontend(default=backend("be", [p]))
        c = yield self.client(port)
        for i in range(10):
            c.send(f"GET /{i} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            yield c.responses(i + 1)
        self.assertEqual([json.loads(b)["uri"] for _, b in c.parsed], [f"/{i}" for i in range(10)])
        self.assertEqual(site.connections, 1)

    @inlineCallbacks
    def test_pipelined(self) -> Any:
        """Pipelined requests are answered in order."""
        p, site = self.site("s")
        port = self.frontend(default=backend("be", [p]))
        c = yield self.client(port)
        c.send(b"".join(f"GET /{i} HTTP/1.1\r\nHost: test\r\n\r\n".encode() for i in range(5)))
        for _ in range(4):
            c.headRequests.append(False)
        responses = yield c.responses(5)
        self.assertEqual([json.loads(b)["uri"] for _, b in responses], [f"/{i}" for i in range(5)])
        self.assertEqual(site.connections, 1)

    @inlineCallbacks
    def test_poolSharedBetweenClients(self) -> Any:
        """Clients one after another reuse the pooled server connection."""
        p, site = self.site("s")
        port = self.frontend(default=backend("be", [p]))
        for _ in range(3):
            response, body = yield self.get(port)
            self.assertEqual(response.code, 200)
        self.assertEqual(site.connections, 1)


class MessageTests(HTTPTestCase):
    """
    Bodies, headers and bodyless responses pass through correctly.
    """

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        HTTPTestCase.setUp(self)
        p, self.siteS = self.site("s")
        self.port = self.frontend(default=backend("be", [p]))
        self.c = yield self.client(self.port)

    @inlineCallbacks
    def test_contentLengthBody(self) -> Any:
        """A Content-Length request body arrives intact."""
        body = os.urandom(300000)
        self.c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        [(response, got)] = yield self.c.responses(1)
        info = json.loads(got)
        self.assertEqual((info["length"], info["sha256"]), (len(body), hashlib.sha256(body).hexdigest()))

    @inlineCallbacks
    def test_chunkedBodies(self) -> Any:
        """A chunked request body arrives intact; a chunked response is passed on in chunks."""
        chunks = [os.urandom(n) for n in (1, 1000, 70000)]
        encoded = b"".join(b"%x\r\n%s\r\n" % (len(x), x) for x in chunks) + b"0\r\n\r\n"
        self.c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + encoded)
        [(response, got)] = yield self.c.responses(1)
        joined = b"".join(chunks)
        self.assertEqual(json.loads(got)["sha256"], hashlib.sha256(joined).hexdigest())
        self.c.send(b"GET /chunked HTTP/1.1\r\nHost: t\r\n\r\n")
        [_, (response, got)] = yield self.c.responses(2)
        self.assertEqual(response.header(b"transfer-encoding"), b"chunked")
        self.assertIn(b"6\r\npart1,\r\n5\r\npart2\r\n0\r\n\r\n", self.c.raw)

    @inlineCallbacks
    def test_forwardedHeaders(self) -> Any:
        """X-Forwarded-For is appended to; X-Forwarded-Proto and -Host are added."""
        self.c.send(b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n")
        [(response, got)] = yield self.c.responses(1)
        headers = json.loads(got)["headers"]
        self.assertEqual(headers["x-forwarded-for"], ["203.0.113.9, 127.0.0.1"])
        self.assertEqual(headers["x-forwarded-proto"], ["http"])
        self.assertEqual(headers["x-forwarded-host"], ["example.com"])

    @inlineCallbacks
    def test_hopByHop(self) -> Any:
        """Hop-by-hop headers and those Connection names are removed."""
        self.c.send(
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\n"
            b"TE: trailers\r\nProxy-Authorization: x\r\nX-End: 2\r\n\r\n"
        )
        [(response, got)] = yield self.c.responses(1)
        headers = json.loads(got)["headers"]
        for name in ["x-hop", "keep-alive", "te", "proxy-authorization"]:
            self.assertNotIn(name, headers)
        self.assertNotIn("x-hop", headers.get("connection", [""])[0].lower())
        self.assertEqual(headers["x-end"], ["2"])

    @inlineCallbacks
    def test_bodyless(self) -> Any:
        """HEAD, 204 and 304 responses have no body, and the connection goes on."""
        self.c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n", head=True)
        self.c.send(b"GET /status/204 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.c.send(b"GET /status/304 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.c.send(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n")
        responses = yield self.c.responses(4)
        self.assertEqual([r.code for r, _ in responses], [200, 204, 304, 200])
        self.assertEqual([b for _, b in responses[:3]], [b"", b"", b""])
        self.assertEqual(json.loads(responses[3][1])["uri"], "/after")

    @inlineCallbacks
    def test_continue(self) -> Any:
        """Expect: 100-continue gets the server's 100 Continue before the body is sent."""
        self.c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        [(interim, _)] = yield self.c.responses(1)
        self.assertEqual(interim.code, 100)
        self.c.transport.write(b"hello")
        [_, (response, got)] = yield self.c.responses(2)
        self.assertEqual(json.loads(got)["sha256"], hashlib.sha256(b"hello").hexdigest())


class FailureTests(HTTPTestCase):
    """
    Server failures: retries, 502, 503 and 504; clients that leave.
    """

    @inlineCallbacks
    def test_closeBeforeHeadRetried(self) -> Any:
        """A GET whose server closes before answering is retried on the other server."""
        bad, _ = self.custom(lambda: OneShot(lambda p: p.transport.loseConnection()))  # type: ignore[union-attr]
        good, _ = self.site("good")
        port = self.frontend(default=Backend("be", [Server("bad", f"127.0.0.1:{bad}"), Server("good", f"127.0.0.1:{good}")]))
        for _ in range(2):
            response, body = yield self.get(port)
            self.assertEqual(json.loads(body)["server"], "good")

    @inlineCallbacks
    def test_retryAppliesRulesOnce(self) -> Any:
        """A request retried on another server carries a header rule's header once, not once per attempt."""
        bad, _ = self.custom(lambda: OneShot(lambda p: p.transport.loseConnection()))  # type: ignore[union-attr]
        good, _ = self.site("good")
        port = self.frontend(
            default=Backend("be", [Server("bad", f"127.0.0.1:{bad}"), Server("good", f"127.0.0.1:{good}")]),
            requestRules=[addHeader("X-Added", "yes")],
        )
        for _ in range(2):
            response, body = yield self.get(port)
            info = json.loads(body)
            self.assertEqual((info["server"], info["headers"]["x-added"]), ("good", ["yes"]))

    @inlineCallbacks
    def test_closeBeforeHeadNoneLeft(self) -> Any:
        """When every server closes before answering, the answer is 502."""
        bad, _ = self.custom(lambda: OneShot(lambda p: p.transport.loseConnection()))  # type: ignore[union-attr]
        port = self.frontend(default=backend("be", [bad], retries=1))
        response, body = yield self.get(port)
        self.assertEqual(response.code, 502)

    @inlineCallbacks
    def test_refusedRetried(self) -> Any:
        """A refused connect goes on to another server."""
        good, _ = self.site("good")
        port = self.frontend(
            default=Backend("be", [Server("gone", f"127.0.0.1:{freePort()}"), Server("good", f"127.0.0.1:{good}")])
        )
        for _ in range(2):
            response, body = yield self.get(port)
            self.assertEqual(json.loads(body)["server"], "good")

    @inlineCallbacks
    def test_allDown(self) -> Any:
        """With every server DOWN the answer is 503."""
        p, _ = self.site("s")
        be = backend("be", [p])
        be.servers[0].setState(ServerState.DOWN)
        port = self.frontend(default=be)
        response, body = yield self.get(port)
        self.assertEqual(response.code, 503)
        self.assertIn(b"No server", body)

    @inlineCallbacks
    def test_serverTimeout(self) -> Any:
        """A server silent past timeoutServer gets 504; its connection is closed."""
        p, factory = self.custom(lambda: OneShot(lambda p: None))
        port = self.frontend(default=backend("be", [p], timeoutServer=0.5))
        start = reactor.seconds()
        response, body = yield self.get(port)
        self.assertEqual(response.code, 504)
        self.assertLess(reactor.seconds() - start, 2)
        yield factory.lost[0]

    @inlineCallbacks
    def test_clientLeavesMidResponse(self) -> Any:
        """A client that leaves mid-response gets its server connection closed."""

        def answer(p: OneShot) -> None:
            assert p.transport is not None
            p.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nstart")

        p, factory = self.custom(lambda: OneShot(answer))
        port = self.frontend(default=backend("be", [p]))
        c = yield self.client(port)
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        yield c.waitData(b"start")
        c.transport.loseConnection()
        yield factory.lost[0]


class TunnelTests(HTTPTestCase):
    """
    101 Switching Protocols turns the exchange into a two-way tunnel.
    """

    @inlineCallbacks
    def test_rawUpgrade(self) -> Any:
        """After a 101, bytes flow both ways unchanged until one side closes."""

        class Upgrader(OneShot):
            def __init__(self) -> None:
                OneShot.__init__(self, self.upgrade)

            def upgrade(self, p: OneShot) -> None:
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
                rest = self.buf.split(b"\r\n\r\n", 1)[1]
                self.dataReceived = self.transport.write  # type: ignore[method-assign,assignment]
                if rest:
                    self.transport.write(rest)

        p, _ = self.custom(Upgrader)
        port = self.frontend(default=backend("be", [p]))
        c = yield self.client(port)
        c.send(b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        [(response, _)] = yield c.responses(1)
        self.assertEqual(response.code, 101)
        c.transport.write(b"ping \x00\xff")
        yield c.waitData(b"ping \x00\xff")
