"""
Response compression over real sockets on 127.0.0.1: lbkit's frontend with
L{lbkit.http.Compression} in front of a twisted.web site, read by
twisted.web's Agent (HTTP/1.1), an C{h2} client and curl (HTTP/2 over
TLS), a slow reader, and side by side with HAProxy's C{compression algo
gzip}; the bodies are decoded by Python's gzip, brotli and zstandard.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import socket
from typing import Any, Optional

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    PartialDownloadError,
    ResponseFailed,
    readBody,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from lbkit._pump import BUFFER_SIZE
from lbkit.http import Cache, Compression, Frontend, Route, pathBegins
from lbkit.http._body import ChunkedFramer
from lbkit.tls import Certificates
from tests.h3client import fetch
from tests.helpers import requireBinary, runProcess, startHAProxy
from tests.test_compression import decode
from tests.test_http2 import H2Client, HTTP2TestCase
from tests.test_http3 import freePort as h3FreePort
from tests.test_http_integration import OneShot, TrackingSite, backend, reactor
from tests.test_slow_readers import held
from tests.test_tls_pki import makePKI

_WORDS = [b"lorem", b"ipsum", b"dolor", b"sit", b"amet", b"<p>", b"</p>", b"proxy", b"twisted", b"\n"]


def text(size: int, seed: int = 1) -> bytes:
    """C{size} bytes of compressible text (words in a seeded random order)."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(_WORDS) for _ in range(64)) + b"\n"
    return bytes(out[:size])


#: What C{/encoded} sends: text the server compressed itself.
ENCODED = gzip.compress(text(5000), mtime=0)


class Texts(Resource):
    """
    C{/text/N}: N bytes of text/html with a Content-Length; C{/chunked/N}:
    the same written in 64 KiB pieces (chunked); and the responses that
    must not be compressed: C{/png/N}, C{/encoded}, C{/notransform},
    C{/range}, C{/small}, C{/etag} (an ETag, compressed); C{/page/N}: an
    HTML page of N bytes of text and an end marker.
    """

    isLeaf = True
    rendered = 0

    def render(self, request: Request) -> Any:
        self.rendered += 1
        parts = request.path.split(b"/")
        kind = parts[1].decode()
        size = int(parts[2]) if len(parts) > 2 else 5000
        body = text(size)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        if kind == "chunked":
            for i in range(0, len(body), 65536):
                request.write(body[i : i + 65536])
            request.finish()
            return NOT_DONE_YET
        if kind == "png":
            request.setHeader(b"content-type", b"image/png")
        elif kind == "encoded":
            request.setHeader(b"content-encoding", b"gzip")
            return ENCODED
        elif kind == "notransform":
            request.setHeader(b"cache-control", b"public, no-transform")
        elif kind == "range":
            request.setResponseCode(206)
            request.setHeader(b"content-range", b"bytes 0-4999/10000")
        elif kind == "small":
            body = body[:100]
        elif kind == "etag":
            request.setHeader(b"etag", b'"v1"')
        elif kind == "vary":
            request.setHeader(b"vary", b"Cookie, accept-encoding")
        elif kind == "page":
            body = b"<html><body>" + body + b"<div id='end'>the end of the page</div></body></html>"
        return body


class CompressionTestCase(HTTP2TestCase):
    """Starts a L{Texts} site and a frontend with compression in front of it."""

    timeout = 60

    def texts(self) -> int:
        self.resource = Texts()
        site = self.site = TrackingSite(self.resource)
        site.lost = self.lost
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.ports.append(port)
        return int(port.getHost().port)

    def compressing(self, compression: Optional[Compression] = None, **kwargs: Any) -> int:
        """A frontend in front of a L{Texts} site, with C{compression} (by default all algorithms)."""
        be = backend("texts", [self.texts()])
        return self.frontend(default=be, compression=compression or Compression(), **kwargs)

    @inlineCallbacks
    def fetch(self, port: int, path: str, acceptEncoding: Optional[str] = None, method: bytes = b"GET",
              pool: Optional[HTTPConnectionPool] = None) -> Any:
        """One request through Agent: fires with (response, raw body), the body still encoded."""
        if pool is None:
            pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(reactor, pool=pool)
        headers = Headers({b"accept-encoding": [acceptEncoding.encode()]} if acceptEncoding else {})
        response = yield agent.request(method, f"http://127.0.0.1:{port}{path}".encode(), headers)
        body = yield readBody(response)
        return response, body


def header(response: Any, name: bytes) -> Optional[bytes]:
    values = response.headers.getRawHeaders(name)
    return b", ".join(values) if values else None


class HTTP1Tests(CompressionTestCase):
    """Compression to HTTP/1.1 clients."""

    @inlineCallbacks
    def test_eachAlgorithm(self) -> Any:
        """
        Each algorithm, asked for alone, compresses a response of known
        length and a chunked one; the reference decoders give back exactly
        the server's bytes, and the headers say what was done.
        """
        port = self.compressing()
        for algorithm in ("gzip", "br", "zstd"):
            for path in ("/text/300000", "/chunked/300000"):
                response, body = yield self.fetch(port, path, algorithm)
                self.assertEqual(header(response, b"content-encoding"), algorithm.encode(), path)
                self.assertEqual(header(response, b"vary"), b"Accept-Encoding")
                self.assertEqual(response.length, UNKNOWN_LENGTH)  # chunked
                self.assertEqual(decode(algorithm, body), text(300000), (algorithm, path))
                self.assertLess(len(body), 300000 // 3)

    @inlineCallbacks
    def test_preference(self) -> Any:
        """A browser's C{Accept-Encoding} gets the first configured algorithm it names."""
        port = self.compressing(Compression(algorithms=("zstd", "br", "gzip")))
        response, body = yield self.fetch(port, "/text/10000", "gzip, deflate, br, zstd")
        self.assertEqual(header(response, b"content-encoding"), b"zstd")
        response, body = yield self.fetch(port, "/text/10000", "gzip;q=1, zstd;q=0")
        self.assertEqual(header(response, b"content-encoding"), b"gzip")
        self.assertEqual(decode("gzip", body), text(10000))

    @inlineCallbacks
    def test_notCompressed(self) -> Any:
        """
        Responses already encoded, marked no-transform, ranges, of other
        types or shorter than minSize, and answers to clients that accept
        no offered coding, reach the client exactly as the server sent
        them.
        """
        port = self.compressing()
        for path, accept in [("/encoded", "gzip"), ("/notransform", "gzip"), ("/range", "gzip"),
                             ("/png/5000", "gzip"), ("/small", "gzip"), ("/text/5000", None),
                             ("/text/5000", "deflate"), ("/text/5000", "gzip;q=0, *;q=0")]:
            response, body = yield self.fetch(port, path, accept)
            encoded = path == "/encoded"
            self.assertEqual(header(response, b"content-encoding"), b"gzip" if encoded else None, path)
            self.assertEqual(body, ENCODED if encoded else text(100 if path == "/small" else 5000), path)
        # eligible but not accepted: caches still learn that the response varies
        response, _ = yield self.fetch(port, "/text/5000", None)
        self.assertEqual(header(response, b"vary"), b"Accept-Encoding")
        self.assertEqual(response.length, 5000)

    @inlineCallbacks
    def test_headAndETag(self) -> Any:
        """A HEAD is answered as the server does; a strong ETag becomes weak when compressed."""
        port = self.compressing()
        response, body = yield self.fetch(port, "/text/5000", "gzip", method=b"HEAD")
        self.assertEqual((body, header(response, b"content-encoding")), (b"", None))
        response, body = yield self.fetch(port, "/etag", "gzip")
        self.assertEqual(header(response, b"etag"), b'W/"v1"')
        self.assertEqual(decode("gzip", body), text(5000))
        response, body = yield self.fetch(port, "/etag", None)
        self.assertEqual(header(response, b"etag"), b'"v1"')

    @inlineCallbacks
    def test_keepAlive(self) -> Any:
        """Compressed responses end properly: many go one after another on one kept-alive connection."""
        port = self.compressing()
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        for i, path in enumerate(["/text/70000", "/chunked/70000", "/png/3000", "/text/70000"] * 2):
            response, body = yield self.fetch(port, path, "br" if i % 2 else "gzip", pool=pool)
            encoding = header(response, b"content-encoding")
            self.assertEqual(len(decode(encoding.decode(), body)) if encoding else len(body), int(path.split("/")[2]))
        self.assertEqual(self.site.connections, 1)

    @inlineCallbacks
    def test_route(self) -> Any:
        """A route's own compression replaces the frontend's; C{False} turns it off."""
        be = backend("texts", [self.texts()])
        port = self.frontend([Route(pathBegins("/png"), be, compression=Compression(types=("image/",))),
                              Route(pathBegins("/chunked"), be, compression=False)],
                             default=be, compression=Compression(algorithms=("gzip",)))
        response, body = yield self.fetch(port, "/png/5000", "br")
        self.assertEqual(header(response, b"content-encoding"), b"br")
        response, body = yield self.fetch(port, "/chunked/5000", "gzip")
        self.assertIsNone(header(response, b"content-encoding"))
        self.assertEqual(body, text(5000))
        response, body = yield self.fetch(port, "/text/5000", "br, gzip")
        self.assertEqual(header(response, b"content-encoding"), b"gzip")

    @inlineCallbacks
    def test_serverCutMidBody(self) -> Any:
        """A server that closes in the middle of a compressed body: the client sees a cut, not an end."""

        def halfThenClose(p: Any) -> None:
            p.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n"
                              + text(50000))
            p.transport.loseConnection()

        port, _ = self.custom(lambda: OneShot(halfThenClose))
        fe = self.frontend(default=backend("cut", [port]), compression=Compression())
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = yield agent.request(b"GET", f"http://127.0.0.1:{fe}/".encode(),
                                       Headers({b"accept-encoding": [b"gzip"]}))
        self.assertEqual(header(response, b"content-encoding"), b"gzip")
        yield self.assertFailure(readBody(response), ResponseFailed, PartialDownloadError)

    @inlineCallbacks
    def test_http10AndVary(self) -> Any:
        """
        An HTTP/1.0 client gets the body as it is (nginx's
        C{gzip_http_version 1.1}); a C{Vary} that names
        C{Accept-Encoding} already is left alone.
        """
        port = self.compressing()
        c = yield self.client(port)
        c.send(b"GET /text/5000 HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n")
        [(response, body)] = yield c.responses(1)
        self.assertEqual((response.header(b"content-encoding"), body), (None, text(5000)))
        response, body = yield self.fetch(port, "/vary/5000", "gzip")
        self.assertEqual(response.headers.getRawHeaders(b"vary"), [b"Cookie, accept-encoding"])
        self.assertEqual(decode("gzip", body), text(5000))

    @inlineCallbacks
    def test_tinyChunks(self) -> Any:
        """
        A server that writes its body in tiny chunks: they are compressed
        together (one flush per read, not per chunk), so the response is
        about as small as the body compressed in one go.
        """
        body = text(200000)

        def tinyChunks(p: Any) -> None:
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 50]), body[i : i + 50])
                              for i in range(0, len(body), 50))
            p.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
                              + chunks + b"0\r\n\r\n")

        port, _ = self.custom(lambda: OneShot(tinyChunks))
        fe = self.frontend(default=backend("tiny", [port]), compression=Compression())
        response, got = yield self.fetch(fe, "/", "gzip")
        self.assertEqual(gzip.decompress(got), body)
        whole = len(gzip.compress(body, 4))
        self.assertLess(len(got), whole * 1.1, (len(got), whole))

    @inlineCallbacks
    def test_retryingBackendAndCounts(self) -> Any:
        """
        A backend that retries on statuses (its connections check each
        head) compresses too, and the frontend's and server's byte
        counters (the access log's) count the compressed bytes the client
        got.
        """
        be = backend("texts", [self.texts()], retryOn=(503,))
        port = self.frontend(default=be, compression=Compression())
        response, body = yield self.fetch(port, "/text/200000", "zstd")
        self.assertEqual(decode("zstd", body), text(200000))
        factory = self._frontends[0].factories[0]
        self.assertGreater(factory.bytesOut, len(body))
        self.assertLess(factory.bytesOut, len(body) + 1000)
        self.assertEqual(be.servers[0].bytesOut, factory.bytesOut)

    @inlineCallbacks
    def test_curl(self) -> Any:
        """C{curl --compressed} (which asks for every coding it knows) gets the server's bytes back."""
        port = self.compressing()
        curl = requireBinary("/usr/bin/curl")
        out = self.mktemp()
        for extra, expected in [([], "br"), (["-H", "Accept-Encoding: gzip"], "gzip"),
                                (["-H", "Accept-Encoding: zstd"], "zstd")]:
            runner = yield runProcess(self, reactor, [
                curl, "-sS", "--compressed", *extra, "-o", out, "-w", "%header{content-encoding}",
                f"http://127.0.0.1:{port}/chunked/200000"])
            self.assertEqual(runner.exitCode, 0, runner.output)
            self.assertEqual(runner.stdout.decode(), expected)
            with open(out, "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), hashlib.sha256(text(200000)).hexdigest())


class AcceptingH2Client(H2Client):
    """An L{H2Client} whose requests say C{Accept-Encoding}."""

    acceptEncoding = b"gzip"

    def request(self, path: str, method: str = "GET", body: Optional[bytes] = None, length: bool = True,
                authority: str = "a.example") -> Any:
        sid = self.conn.get_next_available_stream_id()
        headers = [(b":method", method.encode()), (b":path", path.encode()), (b":scheme", b"https"),
                   (b":authority", authority.encode()), (b"accept-encoding", self.acceptEncoding)]
        self.conn.send_headers(sid, headers, end_stream=True)
        d: Any = Deferred()
        self.results[sid] = d
        self.bodies[sid] = []
        self.flush()
        return d


class BrowserTests(CompressionTestCase):
    """A page loaded in headless Chromium (Debian's C{chromium}), compressed on the way."""

    @inlineCallbacks
    def test_chromium(self) -> Any:
        """
        Chromium asks for br (among others), gets the page compressed (lbkit
        sends far fewer bytes than the page holds) and renders all of it.
        """
        chromium = requireBinary("/usr/bin/chromium")
        port = self.compressing()
        profile = os.path.abspath(self.mktemp())
        runner = yield runProcess(self, reactor, [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}", "--dump-dom", f"http://127.0.0.1:{port}/page/300000"], timeout=40)
        self.assertEqual(runner.exitCode, 0, runner.output[-2000:])
        self.assertIn(b"the end of the page", runner.stdout)
        self.assertGreater(runner.stdout.count(b"twisted"), 1000)
        factory = self._frontends[0].factories[0]
        self.assertLess(factory.bytesOut, 100_000)


class CacheTests(CompressionTestCase):
    """Compression under a response cache: the cache keeps each coding as a variant (Vary: Accept-Encoding)."""

    @inlineCallbacks
    def test_cachedVariants(self) -> Any:
        """
        gzip twice, br, none, gzip again: the server is asked once per
        coding, the hits come compressed the same way (with an Age), and
        every body decodes to the server's bytes.
        """
        port = self.compressing(cache=Cache(defaultTTL=60))
        seen = []
        for coding in ("gzip", "gzip", "br", None, "gzip"):
            response, body = yield self.fetch(port, "/text/50000", coding)
            encoding = header(response, b"content-encoding")
            self.assertEqual(encoding, coding.encode() if coding else None)
            self.assertEqual(decode(coding, body) if coding else body, text(50000))
            seen.append(header(response, b"age") is not None)
        self.assertEqual(seen, [False, True, False, False, True])
        self.assertEqual(self.resource.rendered, 3)


class HTTP2Tests(CompressionTestCase):
    """Compression to HTTP/2 clients (the same stream code serves HTTP/3)."""

    @inlineCallbacks
    def test_h2Client(self) -> Any:
        """Over HTTP/2, each algorithm's body decodes to the server's bytes, without a content-length."""
        port = self.compressing(tls=self.certs)
        client = yield self.h2client(port, AcceptingH2Client())
        for algorithm in ("gzip", "br", "zstd"):
            client.acceptEncoding = algorithm.encode()
            for path in ("/text/200000", "/chunked/200000"):
                status, headers, body = yield client.request(path)
                self.assertEqual((status, headers[b"content-encoding"]), (200, algorithm.encode()))
                self.assertEqual(headers[b"vary"], b"Accept-Encoding")
                self.assertNotIn(b"content-length", headers)
                self.assertNotIn(b"transfer-encoding", headers)
                self.assertEqual(decode(algorithm, body), text(200000))
        status, headers, body = yield client.request("/png/5000")
        self.assertNotIn(b"content-encoding", headers)
        self.assertEqual(body, text(5000))

    @inlineCallbacks
    def test_curlHTTP2(self) -> Any:
        """C{curl --http2 --compressed} gets the server's bytes back."""
        port = self.compressing(tls=self.certs)
        out = self.mktemp()
        got = yield self.curl(port, "--http2", "--compressed", "-o", out,
                              "-w", "%{http_version} %header{content-encoding}", path="/chunked/300000")
        self.assertEqual(got, "2 br")
        with open(out, "rb") as f:
            self.assertEqual(f.read(), text(300000))


class HTTP3Tests(CompressionTestCase):
    """Compression to HTTP/3 clients (aioquic's own client)."""

    @inlineCallbacks
    def test_h3Client(self) -> Any:
        """Over HTTP/3, the body decodes to the server's bytes, without a content-length."""
        pki = makePKI(self)
        certs = Certificates(pki.issue("site.pem", "localhost", ("localhost",)))
        port = h3FreePort()
        fe = Frontend(f"tcp:{port}:interface=127.0.0.1", default=backend("texts", [self.texts()]), log=False,
                      compression=Compression(), tls=certs, http3=True)
        self._frontends = [fe]  # its pool is closed in cleanup
        service = fe.makeService(reactor)
        service.startService()
        self.services.append(service)
        answers = yield deferToThread(fetch, port, [
            (b"GET", b"/text/200000", [(b"accept-encoding", b"br")]),
            (b"GET", b"/chunked/200000", [(b"accept-encoding", b"gzip, zstd")]),
            (b"GET", b"/png/5000", [(b"accept-encoding", b"br")])], pki.caFile, timeout=30.0)
        self.assertEqual([(a.status, a.headers.get(b"content-encoding")) for a in answers],
                         [(200, b"br"), (200, b"zstd"), (200, None)])
        self.assertNotIn(b"content-length", answers[0].headers)
        self.assertEqual(decode("br", answers[0].body), text(200000))
        self.assertEqual(decode("zstd", answers[1].body), text(200000))
        self.assertEqual(answers[2].body, text(5000))


class SlowClientTests(CompressionTestCase):
    """A large compressed response to a client that reads slowly: streamed, never held whole."""

    timeout = 120

    @inlineCallbacks
    def test_boundedMemory(self) -> Any:
        """
        20 MiB of text, compressed for a client that reads 16 KiB at a
        time: lbkit stops reading the server while the client lags, holds
        at most one read (L{BUFFER_SIZE}) of compressed bytes for it at
        any moment, and the client decodes exactly the server's bytes.
        """
        size = 20 * 2**20
        port = self.compressing(Compression(algorithms=("gzip",)))
        factory = self._frontends[0].factories[0]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        self.addCleanup(sock.close)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        for _ in range(1000):
            if factory.connections:
                break
            yield deferLater(reactor, 0, lambda: None)
        # a small kernel buffer on lbkit's side too, so that the kernel
        # does not take the whole compressed response
        [p] = factory.connections
        p.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.sendall(b"GET /chunked/%d HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n" % size)
        received = bytearray()
        worst = [0]
        paused = [0]
        d: Deferred[None] = Deferred()

        def readSome() -> None:
            # what lbkit holds for this client, each time the client reads
            for p in list(factory.connections):
                if p.transport is not None:
                    worst[0] = max(worst[0], held(p.transport))
                conn = p.conn
                if conn is not None and conn.transport is not None and conn.transport not in reactor.getReaders():
                    paused[0] += 1
            try:
                data = sock.recv(16384)
            except BlockingIOError:
                data = b"?"
            if data == b"":
                d.callback(None)
                return
            if data != b"?":
                received.extend(data)
            if received.endswith(b"\r\n0\r\n\r\n"):
                d.callback(None)
                return
            reactor.callLater(0.004, readSome)

        readSome()
        yield d
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        self.assertIn(b"Content-Encoding: gzip", head)
        framer = ChunkedFramer(True)
        framer.feed(body)
        self.assertTrue(framer.done)
        self.assertEqual(hashlib.sha256(gzip.decompress(b"".join(framer.pieces))).hexdigest(),
                         hashlib.sha256(text(size)).hexdigest())
        self.assertLessEqual(worst[0], BUFFER_SIZE)
        self.assertGreater(paused[0], 10, "lbkit never stopped reading the server for the slow client")


_HAPROXY = """
global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind {{bind}}
    compression algo gzip
    compression type text/html application/json
    default_backend be
backend be
    server s1 127.0.0.1:{port}
"""


class HAProxyTests(CompressionTestCase):
    """The same responses through HAProxy's C{compression algo gzip} and through lbkit."""

    timeout = 120

    @inlineCallbacks
    def test_sameAsHAProxy(self) -> Any:
        """
        For gzip-accepting clients, HAProxy and lbkit agree on which
        responses are compressed, on C{Content-Encoding}, C{Vary} and the
        weakened C{ETag}, and both bodies decode to the server's bytes.
        """
        textsPort = self.texts()
        haproxyPort, runner = startHAProxy(self, reactor, _HAPROXY.format(port=textsPort))
        lbkitPort = self.frontend(default=backend("texts", [textsPort]),
                                  compression=Compression(algorithms=("gzip",), types=("text/html", "application/json"),
                                                          minSize=0))
        for path in ("/text/100000", "/chunked/200000", "/etag", "/png/5000", "/encoded", "/notransform",
                     "/range"):
            seen = []
            for port in (haproxyPort, lbkitPort):
                response, body = yield self.fetch(port, path, "gzip")
                encoding = header(response, b"content-encoding")
                if encoding == b"gzip" and path != "/encoded":
                    body = gzip.decompress(body)
                seen.append((response.code, encoding, header(response, b"vary"), header(response, b"etag"),
                             hashlib.sha256(body).hexdigest()))
            self.assertEqual(seen[0], seen[1], path)
        # the one difference (docs/http.md): without Accept-Encoding, lbkit
        # says that the response varies, HAProxy 2.6 does not
        varies = []
        for port in (haproxyPort, lbkitPort):
            response, body = yield self.fetch(port, "/text/5000")
            self.assertEqual((header(response, b"content-encoding"), body), (None, text(5000)))
            varies.append(header(response, b"vary"))
        self.assertEqual(varies, [None, b"Accept-Encoding"])
