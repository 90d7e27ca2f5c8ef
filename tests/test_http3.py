"""
HTTP/3 to clients (C{http.Frontend(..., tls=..., http3=True)}): a real
aioquic HTTP/3 client talks QUIC to lbkit on 127.0.0.1, lbkit proxies each
request to real twisted.web servers over HTTP/1.1, like any other request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
from typing import Any

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.static import Data

from lbkit.error import ConfigError
from lbkit.http import Frontend
from lbkit.http._h3quic import REQUEST_WINDOW
from lbkit.http._h3service import H3Service
from lbkit.http._h3stream import H3Stream
from lbkit.tls import Certificates
from tests.h3client import fetch
from tests.test_http_integration import HTTPTestCase, TrackingSite, backend, reactor
from tests.test_tls_pki import makePKI


def freePort() -> int:
    """A port number free for both TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            tcp.close()
            udp.close()
        return int(port)
    raise RuntimeError("no port free for both TCP and UDP")


class HTTP3Tests(HTTPTestCase):
    """Requests over HTTP/3 are routed, balanced, rewritten and logged as any other."""

    timeout = 60  # aioquic's client runs in a thread of this process: slow on a busy machine

    def setUp(self) -> None:
        super().setUp()
        self.pki = makePKI(self)
        self.certs = Certificates(self.pki.issue("site.pem", "localhost", ("localhost",)))

    def h3frontend(self, ports: list[int], **kwargs: Any) -> int:
        port = freePort()
        kwargs.setdefault("log", False)
        fe = Frontend(f"tcp:{port}:interface=127.0.0.1", default=backend("web", ports), name="fe",
                      tls=self.certs, http3=True, **kwargs)
        if not hasattr(self, "_frontends"):
            self._frontends = []
        self._frontends.append(fe)
        service = fe.makeService(reactor)
        service.startService()
        self.services.append(service)
        return port

    @inlineCallbacks
    def test_get(self) -> Any:
        """GETs over HTTP/3 reach the servers in turn, as HTTP/1.1 with X-Forwarded-For, and come back."""
        p1, _ = self.site("s1")
        p2, _ = self.site("s2")
        port = self.h3frontend([p1, p2])
        answers = yield deferToThread(fetch, port, [(b"GET", b"/a?x=1"), (b"GET", b"/b")], self.pki.caFile)
        infos = [json.loads(a.body) for a in answers]
        self.assertEqual([a.status for a in answers], [200, 200])
        self.assertEqual(sorted(i["server"] for i in infos), ["s1", "s2"])
        self.assertEqual([i["uri"] for i in infos], ["/a?x=1", "/b"])
        self.assertEqual(infos[0]["headers"]["x-forwarded-for"], ["127.0.0.1"])
        self.assertEqual(infos[0]["headers"]["x-forwarded-proto"], ["https"])
        self.assertEqual(infos[0]["headers"]["host"], [f"localhost:{port}"])

    @inlineCallbacks
    def test_post(self) -> Any:
        """A request body of 300 KiB goes to the server whole (chunked, as its length was not declared)."""
        p1, _ = self.site("s1")
        port = self.h3frontend([p1])
        body = os.urandom(300 * 1024)
        [answer] = yield deferToThread(fetch, port, [(b"POST", b"/up", [], body)], self.pki.caFile)
        info = json.loads(answer.body)
        self.assertEqual(answer.status, 200)
        self.assertEqual(info["method"], "POST")
        self.assertEqual(info["length"], len(body))

    @inlineCallbacks
    def test_largeResponse(self) -> Any:
        """
        Three 3 MiB responses at once, larger than QUIC's windows and the
        high-water mark (the servers are paused and resumed), arrive whole.
        """
        body = os.urandom(3 * 1024 * 1024)
        resource = Data(body, "application/octet-stream")
        resource.isLeaf = True
        site = TrackingSite(resource)
        site.lost = self.lost
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.ports.append(listening)
        port = self.h3frontend([listening.getHost().port])
        answers = yield deferToThread(fetch, port, [(b"GET", b"/")] * 3, self.pki.caFile, timeout=30.0)
        self.assertEqual([a.status for a in answers], [200] * 3)
        self.assertEqual([hashlib.sha256(a.body).digest() for a in answers], [hashlib.sha256(body).digest()] * 3)

    @inlineCallbacks
    def test_logged(self) -> Any:
        """The access log says HTTP/3.0 in the request line, with the client's address."""
        p1, _ = self.site("s1")
        port = self.h3frontend([p1], log=True)
        logged: list[dict[str, Any]] = []
        factory = self._frontends[-1].factories[0]
        factory.logAccess = logged.append  # type: ignore[method-assign]
        yield deferToThread(fetch, port, [(b"GET", b"/logged")], self.pki.caFile)
        [fields] = logged
        self.assertEqual(fields["request"], "GET /logged HTTP/3.0")
        self.assertEqual(fields["status"], 200)
        self.assertTrue(fields["client"].startswith("127.0.0.1:"))

    @inlineCallbacks
    def test_altSvc(self) -> Any:
        """Responses over TCP advertise HTTP/3 on the same port number."""
        p1, _ = self.site("s1")
        port = self.h3frontend([p1])
        result = yield deferToThread(_tlsGet, port, self.pki.caFile)
        self.assertIn(f'alt-svc: h3=":{port}"; ma=86400'.encode(), result.lower())

    @inlineCallbacks
    def test_noServer(self) -> Any:
        """With every server down the HTTP/3 client gets lbkit's 503."""
        p1, _ = self.site("s1")
        port = self.h3frontend([p1])
        for p in self.ports:
            yield p.stopListening()
        self.ports = []
        [answer] = yield deferToThread(fetch, port, [(b"GET", b"/")], self.pki.caFile)
        self.assertEqual(answer.status, 503)

    @inlineCallbacks
    def test_certificateByName(self) -> Any:
        """
        A QUIC client asking for another server name gets that name's
        certificate, as a TCP client does (its verification would fail on
        the default one); a name the frontend has no entry for gets the
        default.
        """
        p1, _ = self.site("s1")
        self.certs = Certificates(self.certs.default,
                                  byHost={"other.test": self.pki.issue("other.pem", "other.test", ("other.test",))})
        port = self.h3frontend([p1])
        [other] = yield deferToThread(fetch, port, [(b"GET", b"/o")], self.pki.caFile, serverName="other.test")
        [plain] = yield deferToThread(fetch, port, [(b"GET", b"/p")], self.pki.caFile, serverName="localhost")
        self.assertEqual((other.status, plain.status), (200, 200))
        self.assertEqual(json.loads(other.body)["headers"]["host"], [f"other.test:{port}"])
        failed = yield deferToThread(fetch, port, [(b"GET", b"/x")], self.pki.caFile,
                                     serverName="nobody.test").addCallbacks(lambda _: [], lambda f: [f])
        # the default certificate does not name nobody.test: the client's verification fails
        self.assertEqual(len(failed), 1)

    @inlineCallbacks
    def test_quicRetry(self) -> Any:
        """
        With C{quicRetry=True} a client's first Initial is answered with a
        Retry and no connection state; aioquic's client echoes the token and
        its request is served.
        """
        p1, _ = self.site("s1")
        port = self.h3frontend([p1], quicRetry=True)
        [h3service] = [s for s in self.services[-1] if isinstance(s, H3Service)]
        server = h3service.server
        replies: Deferred[bytes] = Deferred()

        class Raw(DatagramProtocol):
            def datagramReceived(self, data: bytes, addr: Any) -> None:
                if not replies.called:
                    replies.callback(data)

        raw = reactor.listenUDP(0, Raw(), interface="127.0.0.1")
        self.addCleanup(raw.stopListening)
        config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
        client = QuicConnection(configuration=config)
        client.connect(("127.0.0.1", port), now=reactor.seconds())
        [(initial, _)] = client.datagrams_to_send(now=reactor.seconds())[:1]
        raw.write(initial, ("127.0.0.1", port))
        reply = yield replies.addTimeout(10, reactor)
        self.assertEqual(pull_quic_header(Buffer(data=reply), host_cid_length=8).packet_type, QuicPacketType.RETRY)
        self.assertEqual(server.connections, {})
        [answer] = yield deferToThread(fetch, port, [(b"GET", b"/r")], self.pki.caFile)
        self.assertEqual(answer.status, 200)

    def test_quicRetryNeedsHTTP3(self) -> None:
        """quicRetry=True without http3=True is a configuration error."""
        with self.assertRaises(ConfigError) as e:
            Frontend("tcp:8443", default=backend("web", [1]), tls=self.certs, quicRetry=True)
        self.assertIn("quicRetry=True needs http3=True", str(e.exception))

    @inlineCallbacks
    def test_uploadHeldBack(self) -> Any:
        """
        A client uploading 8 MiB to a server that does not read is held
        back by QUIC flow control: lbkit grants it at most
        L{REQUEST_WINDOW} bytes past what it handed on, holds no more than
        that, and once the server reads again the whole body arrives.
        """
        # more than lbkit can hold in all: 1 MiB of window, Twisted's write
        # buffer, and the kernel's socket buffers (tcp_wmem's 4 MiB at most)
        size = 8 * 1024 * 1024
        servers: list[_SlowReader] = []
        factory = Factory.forProtocol(_SlowReader)
        factory.expect, factory.servers = size, servers  # type: ignore[attr-defined]
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        listening.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.ports.append(listening)
        port = self.h3frontend([listening.getHost().port])
        held = {"max": 0, "full": False}
        original = H3Stream.h2Data

        def h2Data(stream: H3Stream, data: bytes, flowLength: int) -> None:
            original(stream, data, flowLength)
            held["max"] = max(held["max"], sum(len(d) for d, _, _ in stream._pending))
            quicStream = stream.h2.quic._streams[stream.streamId]
            if not held["full"] and quicStream.receiver.highest_offset >= quicStream.max_stream_data_local:
                # the client has used all the window it was given: let the server read
                held["full"] = True
                for server in servers:
                    server.transport.resumeProducing()

        self.patch(H3Stream, "h2Data", h2Data)
        body = os.urandom(size)
        [answer] = yield deferToThread(
            fetch, port, [(b"POST", b"/up", [(b"content-length", b"%d" % size)], body)], self.pki.caFile,
            timeout=60.0,
        )
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.body, hashlib.sha256(body).hexdigest().encode())
        self.assertTrue(held["full"])
        self.assertLessEqual(held["max"], REQUEST_WINDOW + 64 * 1024)


class _SlowReader(Protocol):
    """An HTTP/1.1 server that reads nothing until told, then answers the body's SHA-256."""

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self.factory.servers.append(self)  # type: ignore[attr-defined]
        self.buffer = b""
        self.digest = hashlib.sha256()
        self.left: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self.left is None:
            self.buffer += data
            if b"\r\n\r\n" not in self.buffer:
                return
            _, _, data = self.buffer.partition(b"\r\n\r\n")
            self.left = self.factory.expect  # type: ignore[attr-defined]
        self.digest.update(data)
        self.left -= len(data)
        if self.left == 0:
            answer = self.digest.hexdigest().encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer))


def _tlsGet(port: int, cafile: str) -> bytes:
    import ssl

    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    return data


class HTTP3ConfigTests(SynchronousTestCase):
    """C{http3=True} is checked when the site is built."""

    def test_needsTLS(self) -> None:
        """Without TLS it is refused, saying why."""
        with self.assertRaises(ConfigError) as e:
            Frontend("tcp:8443", default=backend("web", [1]), http3=True)
        self.assertIn("needs TLS", str(e.exception))

    def test_needsFixedPort(self) -> None:
        """Port 0 is refused: QUIC must listen on the TCP port's number."""
        pki = makePKI(self)
        certs = Certificates(pki.issue("site.pem", "localhost", ("localhost",)))
        with self.assertRaises(ConfigError) as e:
            Frontend("tcp:0", default=backend("web", [1]), tls=certs, http3=True)
        self.assertIn("fixed port", str(e.exception))


class HTTP3ExampleTests(HTTPTestCase):
    """examples/http3.py, run by twistd, answers aioquic's client and headless Chromium over QUIC."""

    timeout = 180

    @inlineCallbacks
    def test_example(self) -> Any:
        """
        The example serves HTTP/3 on UDP 8094: aioquic's client gets the
        demo servers' answers, a TCP answer advertises it, and Chromium,
        forced onto QUIC for the origin, loads the page over HTTP/3 (the
        access log's request line says HTTP/3.0).
        """
        from tests.test_examples import EXAMPLES, startProcess, stopCleanly, twistd
        from tests.test_stats_browser import CHROMIUM, BrowserTests

        pki = makePKI(self)
        pem = pki.issue("localhost.pem", "localhost", ("localhost",))
        env = dict(os.environ, LBKIT_TLS_DIR=pki.directory)
        watcher, process = startProcess(self, twistd("lbkit", "--config", os.path.join(EXAMPLES, "http3.py")), env=env)
        yield watcher.waitFor("frontend h3 (HTTP/3) listening on")
        yield watcher.waitFor("demo server app2 listening on")
        answers = yield deferToThread(fetch, 8094, [(b"GET", b"/")] * 4, pki.caFile)
        self.assertEqual({a.body.strip() for a in answers}, {b"app1", b"app2"})
        self.assertIn(b'alt-svc: h3=":8094"; ma=86400', (yield deferToThread(_tlsGet, 8094, pki.caFile)).lower())
        if os.access(CHROMIUM, os.X_OK):
            browser = BrowserTests("test_serversListedAndStoppedServerTurnsDown")
            browser.setUp()
            # Chromium trusts no test CA for QUIC: it is told the key instead
            from cryptography import x509
            from cryptography.hazmat.primitives import serialization

            with open(pem, "rb") as f:
                leaf = x509.load_pem_x509_certificates(f.read())[0]
            spki = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
            pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
            before = watcher.output.count("HTTP/3.0")
            # (without the mapping "localhost" is ::1 first, where nothing listens)
            code, out, err = yield browser.chromium(
                "https://localhost:8094/", "--dump-dom", "--origin-to-force-quic-on=localhost:8094",
                f"--ignore-certificate-errors-spki-list={pin}", "--host-resolver-rules=MAP localhost 127.0.0.1",
                quic=True,
            )
            self.assertEqual(code, 0, err.decode("utf-8", "replace")[-2000:])
            self.assertRegex(out.decode(), "app[12]")
            self.assertGreater(watcher.output.count("HTTP/3.0"), before, watcher.output[-3000:])
        yield stopCleanly(self, watcher, process)
        # one test method for both runs: they share the example's fixed
        # port, and trial -jN runs a class's methods at the same time
        yield self._workers(pki, env)

    @inlineCallbacks
    def _workers(self, pki: Any, env: dict[str, str]) -> Any:
        """
        With --workers 2 each worker receives QUIC on its own socket of the
        port: eight connections (new client ports) are all answered, and
        each connection's requests stay on one worker.
        """
        from tests.test_examples import EXAMPLES, startProcess, stopCleanly, twistd

        watcher, process = startProcess(
            self, twistd("lbkit", "--config", os.path.join(EXAMPLES, "http3.py"), "--workers", "2"), env=env
        )
        yield watcher.waitFor(") accepting connections")
        for _ in range(8):
            answers = yield deferToThread(fetch, 8094, [(b"GET", b"/")] * 2, pki.caFile)
            self.assertEqual([a.status for a in answers], [200, 200])
        lines = [line for line in watcher.output.splitlines() if "HTTP/3.0" in line]
        self.assertEqual(len(lines), 16)
        byClient: dict[str, set[str]] = {}
        for line in lines:
            worker = line.split("worker ", 1)[1].split(" ", 1)[0]
            client = line.split("[lbkit.access#info] ", 1)[1].split(" ", 1)[0]
            byClient.setdefault(client, set()).add(worker)
        self.assertEqual(len(byClient), 8)
        self.assertTrue(all(len(workers) == 1 for workers in byClient.values()), byClient)
        yield stopCleanly(self, watcher, process)
