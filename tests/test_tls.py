"""
TLS termination on http frontends and TLS to servers, over real sockets on
127.0.0.1, with Python's C{ssl} module and curl as clients.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from typing import Any

from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server, tcp
from lbkit.config import loadSite
from lbkit.error import ConfigError
from lbkit.http import Frontend
from lbkit.service import LoadBalancerService
from lbkit.tls import Certificates, h2Available, loadKeyPair
from tests.helpers import Collector, Echo, TrackingProxyFactory, listen, requireBinary, runProcess
from tests.test_http_integration import HTTPTestCase, Info, TrackingSite, reactor
from tests.test_tls_pki import PKI, makePKI

#: A Python ssl-module client: for each server name given (C{-} for none),
#: connect offering h2 and http/1.1, note the served certificate's common
#: name, the TLS version and ALPN protocol; then connect offering only
#: http/1.1, send one GET and read the answer; print it all as JSON.
SSL_CLIENT = textwrap.dedent(
    """
    import json, socket, ssl, sys
    port, ca = int(sys.argv[1]), sys.argv[2]

    def connect(name, protocols):
        ctx = ssl.create_default_context(cafile=ca)
        ctx.check_hostname = False  # the test checks the names itself
        ctx.set_alpn_protocols(protocols)
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        return ctx.wrap_socket(s, server_hostname=None if name == "-" else name)

    out = {}
    for name in sys.argv[3:]:
        with connect(name, ["h2", "http/1.1"]) as t:
            subject = dict(x[0] for x in t.getpeercert()["subject"])
            version, alpn = t.version(), t.selected_alpn_protocol()
        with connect(name, ["http/1.1"]) as t:
            t.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
            data = b""
            while True:
                chunk = t.recv(65536)
                if not chunk:
                    break
                data += chunk
        out[name] = [subject["commonName"], version, alpn, data.decode("latin-1")]
    print(json.dumps(out))
    """
)


def _body(response: str) -> Any:
    return json.loads(response.split("\r\n\r\n", 1)[1])


class TerminationTests(HTTPTestCase):
    """
    An http frontend terminates TLS: the certificate is chosen by SNI, the
    request reaches the server in clear with C{X-Forwarded-Proto: https}.
    """

    def setUp(self) -> None:
        HTTPTestCase.setUp(self)
        self.pki = makePKI(self)
        self.certs = Certificates(
            default=self.pki.issue("default.pem", "default"),
            byHost={
                "a.example": self.pki.issue("a.pem", "a.example"),
                "b.example": self.pki.issue("b.pem", "b.example"),
            },
        )
        port, _ = self.site("app1")
        self.backend = Backend("app", [Server("app1", f"127.0.0.1:{port}")])

    @inlineCallbacks
    def sslClient(self, port: int, *names: str) -> Any:
        runner = yield runProcess(self, reactor, [sys.executable, "-c", SSL_CLIENT, str(port), self.pki.caFile, *names])
        self.assertEqual(runner.exitCode, 0, runner.output)
        return json.loads(runner.stdout)

    @inlineCallbacks
    def test_certificateBySNI(self) -> None:
        """Each SNI name gets its certificate; no name or an unknown one gets the default."""
        port = self.frontend(default=self.backend, tls=self.certs)
        result = yield self.sslClient(port, "a.example", "b.example", "c.example", "-")
        self.assertEqual(
            {name: r[0] for name, r in result.items()},
            {"a.example": "a.example", "b.example": "b.example", "c.example": "default", "-": "default"},
        )
        for _name, (_, version, alpn, response) in result.items():
            self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
            self.assertEqual(alpn, "h2" if h2Available() else "http/1.1")
            self.assertTrue(response.startswith("HTTP/1.1 200 "), response)
            info = _body(response)
            self.assertEqual(info["server"], "app1")
            self.assertEqual(info["headers"]["x-forwarded-proto"], ["https"])

    @inlineCallbacks
    def test_wildcardCoversOneLabel(self) -> None:
        """
        A C{*.b.example} certificate is served for C{x.b.example} only: a
        deeper name or the bare domain gets the default (RFC 6125 6.4.3).
        """
        certs = Certificates(
            default=self.pki.issue("default.pem", "default"),
            byHost={"*.b.example": self.pki.issue("w.pem", "*.b.example")},
        )
        port = self.frontend(default=self.backend, tls=certs)
        result = yield self.sslClient(port, "x.b.example", "y.x.b.example", "b.example")
        self.assertEqual(
            {name: r[0] for name, r in result.items()},
            {"x.b.example": "*.b.example", "y.x.b.example": "default", "b.example": "default"},
        )

    @inlineCallbacks
    def test_alpnWithoutHTTP2(self) -> None:
        """With C{http2=False} only http/1.1 is offered through ALPN."""
        port = self.frontend(default=self.backend, tls=self.certs, http2=False)
        result = yield self.sslClient(port, "a.example")
        self.assertEqual(result["a.example"][2], "http/1.1")

    @inlineCallbacks
    def test_plainHTTPStaysHTTP(self) -> None:
        """Without TLS, X-Forwarded-Proto stays C{http}."""
        port = self.frontend(default=self.backend)
        response, body = yield self.get(port)
        self.assertEqual(json.loads(body)["headers"]["x-forwarded-proto"], ["http"])

    @inlineCallbacks
    def test_curl(self) -> None:
        """curl, trusting only the test CA, gets an answer for a.example."""
        curl = requireBinary("/usr/bin/curl")
        port = self.frontend(default=self.backend, tls=self.certs)
        runner = yield runProcess(self, reactor, [
            curl, "-sS", "--http1.1", "--cacert", self.pki.caFile,
            "--resolve", f"a.example:{port}:127.0.0.1", f"https://a.example:{port}/hello",
        ])
        self.assertEqual(runner.exitCode, 0, runner.output)
        info = json.loads(runner.stdout)
        self.assertEqual(info["uri"], "/hello")
        self.assertEqual(info["headers"]["x-forwarded-proto"], ["https"])

    @inlineCallbacks
    def test_curlRejectsWrongName(self) -> None:
        """curl asking for c.example gets the default certificate and refuses it."""
        curl = requireBinary("/usr/bin/curl")
        port = self.frontend(default=self.backend, tls=self.certs)
        runner = yield runProcess(self, reactor, [
            curl, "-sS", "--cacert", self.pki.caFile,
            "--resolve", f"c.example:{port}:127.0.0.1", f"https://c.example:{port}/",
        ])
        self.assertEqual(runner.exitCode, 60, runner.output)  # peer certificate cannot be authenticated

    @inlineCallbacks
    def test_sslEndpointString(self) -> None:
        """A Twisted C{ssl:} endpoint string serves its key and certificate."""
        cert = self.pki.issue("one.pem", "one.example", separateKey=True)
        fe = Frontend(
            f"ssl:0:interface=127.0.0.1:privateKey={cert}.key:certKey={cert}",
            default=self.backend, log=False,
        )
        self.assertEqual(fe.name, fe.description)
        self.assertTrue(fe.endpoint.startswith("tcp:0:interface=127.0.0.1"))
        self._frontends = [fe]
        service = fe.makeService(reactor)
        service.startService()
        self.services.append(service)
        result = yield self.sslClient(service.port.getHost().port, "one.example")
        commonName, _, _, response = result["one.example"]
        self.assertEqual(commonName, "one.example")
        self.assertEqual(_body(response)["headers"]["x-forwarded-proto"], ["https"])

    @inlineCallbacks
    def test_reload(self) -> None:
        """After L{Certificates.reload}, new connections get the new file."""
        port = self.frontend(default=self.backend, tls=self.certs)
        self.pki.issue("a.pem", "a.example", ("a.example", "renewed.a.example"))
        self.certs.reload()
        result = yield self.sslClient(port, "a.example")
        self.assertEqual(result["a.example"][0], "a.example")
        self.assertEqual(self.certs.lookup("a.example").names, ["a.example", "renewed.a.example"])


    @inlineCallbacks
    def test_clientCertificates(self) -> None:
        """With C{clientCA}, only clients with a certificate it signed get in."""
        curl = requireBinary("/usr/bin/curl")
        certs = Certificates(default=self.pki.issue("m.pem", "a.example"), clientCA=self.pki.caFile)
        port = self.frontend(default=self.backend, tls=certs)
        client = self.pki.issue("client.pem", "client1", client=True)
        base = [curl, "-sS", "--cacert", self.pki.caFile, "--resolve", f"a.example:{port}:127.0.0.1"]
        url = f"https://a.example:{port}/"
        refused = yield runProcess(self, reactor, base + [url])
        self.assertNotEqual(refused.exitCode, 0, refused.output)
        forged = ["-H", "X-SSL-Client-DN: /CN=admin"]
        allowed = yield runProcess(self, reactor, base + ["--cert", client, "--key", client] + forged + [url])
        self.assertEqual(allowed.exitCode, 0, allowed.output)
        info = json.loads(allowed.stdout)
        self.assertEqual(info["server"], "app1")
        # the verified subject reaches the server; the client's forged one does not
        self.assertEqual(info["headers"]["x-ssl-client-dn"], ["/CN=client1"])
        overOne = yield runProcess(self, reactor, base + ["--http1.1", "--cert", client, "--key", client] + forged + [url])
        self.assertEqual(overOne.exitCode, 0, overOne.output)
        self.assertEqual(json.loads(overOne.stdout)["headers"]["x-ssl-client-dn"], ["/CN=client1"])


class SSLEndpointErrorTests(SynchronousTestCase):
    """Bad files in an C{ssl:} string stop construction, naming the file."""

    def test_missingKey(self) -> None:
        """A missing private key file is named."""
        pki = makePKI(self)
        backend = Backend("b", [Server("s", "127.0.0.1:1")])
        missing = pki.path("missing.key")
        e = self.assertRaises(
            ConfigError, Frontend, f"ssl:8443:privateKey={missing}:certKey={pki.caFile}", default=backend
        )
        self.assertIn(missing, str(e))

    def test_both(self) -> None:
        """An ssl: string and tls= together are refused."""
        pki = makePKI(self)
        path = pki.issue("d.pem", "d")
        backend = Backend("b", [Server("s", "127.0.0.1:1")])
        self.assertRaises(ConfigError, Frontend, f"ssl:8443:privateKey={path}", default=backend,
                          tls=Certificates(default=path))


class SiteFileTests(SynchronousTestCase):
    """The site-file loader reports certificate problems with file and line."""

    def test_expiredInSiteFile(self) -> None:
        """An expired certificate stops loading with C{site.py:LINE:} and the file."""
        import datetime

        pki = makePKI(self)
        now = datetime.datetime.now(datetime.timezone.utc)
        old = pki.issue("old.pem", "old", notBefore=now - datetime.timedelta(days=9),
                        notAfter=now - datetime.timedelta(days=1))
        site = pki.path("site.py")
        with open(site, "w") as f:
            f.write(textwrap.dedent(f"""\
                from lbkit import Backend, Server, http, tls
                app = Backend("app", [Server("a", "127.0.0.1:9001")])
                certs = tls.Certificates(default={old!r})
                listen = [http.Frontend("tcp:8443", tls=certs, default=app)]
                """))
        e = self.assertRaises(ConfigError, loadSite, site)
        self.assertIn(f"{site}:3:", str(e))
        self.assertIn(old, str(e))
        self.assertIn("expired", str(e))

    def test_badCAInSiteFile(self) -> None:
        """A missing server CA file stops loading with C{site.py:LINE:}."""
        pki = makePKI(self)
        site = pki.path("site.py")
        missing = pki.path("nope.pem")
        with open(site, "w") as f:
            f.write(textwrap.dedent(f"""\
                from lbkit import Backend, Server, http
                app = Backend("app", [
                    Server("a", "127.0.0.1:9001", tls=True, ca={missing!r}),
                ])
                listen = [http.Frontend("tcp:8080", default=app)]
                """))
        e = self.assertRaises(ConfigError, loadSite, site)
        self.assertIn(f"{site}:3:", str(e))
        self.assertIn(missing, str(e))

    def test_badCAInListen(self) -> None:
        """
        A service built from a C{listen} list refuses a server whose CA file
        is missing, naming the line that created the server.
        """
        missing = os.path.join(self.mktemp(), "nope.pem")
        here = sys._getframe().f_lineno
        server = Server("a", "127.0.0.1:9001", tls=True, ca=missing)
        listen = [tcp.Frontend("tcp:0:interface=127.0.0.1", backend=Backend("app", [server]))]
        e = self.assertRaises(ConfigError, LoadBalancerService, listen)
        self.assertTrue(str(e).startswith(f"{server.definedAt[0]}:{here + 1}: "), str(e))
        self.assertIn(missing, str(e))


class ExampleTests(SynchronousTestCase):
    """examples/tls_sni.py loads once its certificates exist."""

    def test_loads(self) -> None:
        """With generated certificates in C{$LBKIT_TLS_DIR}, the example builds."""
        pki = makePKI(self)
        for name in ("default", "a.example", "b.example"):
            pki.issue(f"{name}.pem", name)
        self.patch(os, "environ", dict(os.environ, LBKIT_TLS_DIR=pki.directory))
        here = os.path.dirname(os.path.abspath(__file__))
        site = loadSite(os.path.join(here, "..", "examples", "tls_sni.py"))
        names = [getattr(item, "name", "") for item in site.listen]
        self.assertEqual(names[:3], ["https", "sni-passthrough", "reencrypt"])


class ServerTLSConfigTests(SynchronousTestCase):
    """The TLS keywords of L{Server}."""

    def test_defaults(self) -> None:
        """Without C{tls}, nothing changes."""
        server = Server("s", "127.0.0.1:80")
        self.assertFalse(server.tls)
        self.assertIsNone(server.tlsCreator)

    def test_optionsNeedTLS(self) -> None:
        """C{ca}, C{sni} or C{verify=False} without C{tls=True} is an error."""
        self.assertRaises(ConfigError, Server, "s", "127.0.0.1:80", ca="x.pem")
        self.assertRaises(ConfigError, Server, "s", "127.0.0.1:80", sni="x")
        self.assertRaises(ConfigError, Server, "s", "127.0.0.1:80", verify=False)

    def test_verifyOffWarns(self) -> None:
        """C{verify=False} logs a warning naming the server."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        try:
            Server("insecure", "127.0.0.1:443", tls=True, verify=False)
        finally:
            globalLogPublisher.removeObserver(events.append)
        warnings = [e for e in events if e.get("log_namespace") == "lbkit.tls"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["log_level"].name, "warn")
        self.assertIn("insecure", warnings[0]["label"])


class ServerTLSTests(HTTPTestCase):
    """lbkit speaks TLS to servers with C{tls=True}, checking them."""

    def setUp(self) -> None:
        HTTPTestCase.setUp(self)
        self.pki = makePKI(self)
        options = loadKeyPair(self.pki.issue("backend.pem", "backend.example")).options(None, None)
        site = TrackingSite(Info("secure"))
        site.lost = self.lost
        port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
        self.ports.append(port)
        self.serverPort = port.getHost().port

    def backendWith(self, **kwargs: Any) -> Backend:
        return Backend("secure", [Server("s1", f"127.0.0.1:{self.serverPort}", tls=True, **kwargs)], retries=0)

    @inlineCallbacks
    def test_verified(self) -> None:
        """With the right CA and name the request goes through."""
        port = self.frontend(default=self.backendWith(ca=self.pki.caFile, sni="backend.example"))
        response, body = yield self.get(port, "/x")
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body)["uri"], "/x")

    @inlineCallbacks
    def test_wrongName(self) -> None:
        """A certificate for another name is refused: 502."""
        port = self.frontend(default=self.backendWith(ca=self.pki.caFile, sni="other.example"))
        response, body = yield self.get(port)
        self.assertEqual(response.code, 502)

    @inlineCallbacks
    def test_untrustedCA(self) -> None:
        """A certificate from a CA not in C{ca} is refused: 502."""
        other = PKI(os.path.abspath(self.mktemp()), "another CA")
        port = self.frontend(default=self.backendWith(ca=other.caFile, sni="backend.example"))
        response, body = yield self.get(port)
        self.assertEqual(response.code, 502)

    @inlineCallbacks
    def test_verifyOff(self) -> None:
        """With C{verify=False} an untrusted server is used anyway."""
        port = self.frontend(default=self.backendWith(verify=False))
        response, body = yield self.get(port)
        self.assertEqual(response.code, 200)

    @inlineCallbacks
    def test_tcpModeToTLSServer(self) -> None:
        """tcp mode re-encrypts too: plain bytes in, TLS to the server."""
        from twisted.internet.protocol import Factory

        options = loadKeyPair(self.pki.issue("echo.pem", "echo.example")).options(None, None)
        echoPort = reactor.listenSSL(0, Factory.forProtocol(Echo), options, interface="127.0.0.1")
        self.ports.append(echoPort)
        backend = Backend("echo", [Server("e", f"127.0.0.1:{echoPort.getHost().port}", tls=True,
                                          ca=self.pki.caFile, sni="echo.example")])
        fe = tcp.Frontend("tcp:0:interface=127.0.0.1", backend, log=False, factory=TrackingProxyFactory)
        factory = fe.buildFactory(reactor)
        port = listen(self, reactor, factory)
        client = Collector(b"hello over tls", expect=len(b"hello over tls"))
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        received = yield client.done
        self.assertEqual(received, b"hello over tls")
        yield gatherResults([p.allGone() for p in factory.built])  # type: ignore[attr-defined]


class ReloadTLSTests(HTTPTestCase):
    """A site reload hands renewed certificate files to the running listener."""

    @inlineCallbacks
    def test_reloadAdoptsCertificates(self) -> None:
        """After a reload with the same paths, new handshakes get the renewed certificate."""
        from lbkit import http
        from lbkit.reload import _takeOver, matchListeners

        pki = makePKI(self)
        path = pki.issue("a.pem", "a.example")
        port, _ = self.site("app1")
        backend = Backend("app", [Server("app1", f"127.0.0.1:{port}")])
        running = http.Frontend("tcp:0:interface=127.0.0.1", default=backend, tls=Certificates(default=path))
        listening = self.frontend(default=backend, tls=running.tls)
        pki.issue("a.pem", "a.example", ("a.example", "renewed.a.example"))
        loaded = http.Frontend("tcp:0:interface=127.0.0.1", default=backend, tls=Certificates(default=path))
        kept, added, replaced, removed = matchListeners([running], [loaded])
        self.assertEqual((kept, added, replaced, removed), ([(running, loaded)], [], [], []))
        _takeOver(running, loaded)
        self.assertEqual(running.tls.lookup("a.example").names, ["a.example", "renewed.a.example"])
        runner = yield runProcess(
            self, reactor, [sys.executable, "-c", SSL_CLIENT, str(listening), pki.caFile, "a.example"]
        )
        self.assertEqual(runner.exitCode, 0, runner.output)
