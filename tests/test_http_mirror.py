"""
Tests for L{lbkit.http.Mirror}: copies of requests to a shadow backend,
over real sockets on 127.0.0.1 (a twisted.web primary, hand-written
shadows that answer, hold or are not there), and its counters in
C{/stats.json} and on the stats page.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbkit import Backend, Server
from lbkit.error import ConfigError
from lbkit.http import Mirror, Route, mirrorStats, pathBegins
from lbkit.interfaces import IAnsweringRule
from lbkit.service import fromSiteFile
from lbkit.stats._collect import Collector
from lbkit.stats._html import mirrorLine
from lbkit.testing import assertProvides
from tests.helpers import freePort
from tests.test_http2 import HTTP2TestCase
from tests.test_http_integration import HTTPTestCase, backend
from tests.test_reload import Client, frontendPort, reactor, startBackend, writeSite


class Shadow(Protocol):
    """
    A shadow server: records the bytes it gets; once a whole request
    (head and C{Content-Length} body) is in, fires C{got} and answers
    C{status}, or holds the connection when C{status} is L{None}.
    """

    def __init__(self, status: Optional[int], seen: list[bytes]) -> None:
        self.status = status
        self.seen = seen
        self.data = b""
        self.gone: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        head, sep, body = self.data.partition(b"\r\n\r\n")
        if not sep:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) < length:
            return
        self.seen.append(self.data)
        self.data = b""
        if self.status is not None:
            self.transport.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % self.status)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.gone.callback(None)


class MirrorConfigTests(SynchronousTestCase):
    """Bad arguments are a ConfigError naming the line and the problem."""

    def test_badArguments(self) -> None:
        """A non-backend, a fraction out of range, a negative bound or timeout are refused."""
        be = Backend("shadow", [Server("s", "127.0.0.1:1")])
        for kwargs, word in [
            (dict(backend="x"), "backend"),
            (dict(backend=be, fraction=1.5), "fraction"),
            (dict(backend=be, maxBody=-1), "maxBody"),
            (dict(backend=be, maxInFlight=1.0), "maxInFlight"),
            (dict(backend=be, timeout=0), "timeout"),
            (dict(backend=be, when="GET"), "when="),
        ]:
            with self.assertRaises(ConfigError) as e:
                Mirror(**kwargs)  # type: ignore[arg-type]
            self.assertIn(word, str(e.exception))
            if word != "when=":
                self.assertIn("test_http_mirror.py", str(e.exception))

    def test_interface(self) -> None:
        """A Mirror is an answering rule (it runs before a server is chosen) that never answers."""
        m = Mirror(Backend("shadow", [Server("s", "127.0.0.1:1")]))
        assertProvides(self, IAnsweringRule, m)

    def test_statsLine(self) -> None:
        """The stats page's line says what was mirrored, lost, and how the answers differed."""
        be = Backend("shadow", [Server("s", "127.0.0.1:1")])
        m = Mirror(be)
        m.mirrored, m.dropped = 5, 2
        m.compare(200, 503)
        m.compare(200, 200)
        stats = mirrorStats(be)
        assert stats is not None
        self.assertEqual(stats["divergence"], {"2xx/5xx": 1})
        self.assertEqual(stats["agreed"], 1)
        line = mirrorLine(stats)
        self.assertIn("Mirrored: 5", line)
        self.assertIn("2 dropped", line)
        self.assertIn("2xx/5xx 1", line)
        self.assertIsNone(mirrorStats(Backend("other", [Server("s", "127.0.0.1:1")])))


class MirrorTests(HTTPTestCase):
    """A mirrored route copies requests to the shadow and never waits for it."""

    def setUpMirror(self, status: Optional[int], **kwargs: Any) -> tuple[int, Mirror, list[Shadow], list[bytes]]:
        primary, _ = self.site("primary")
        seen: list[bytes] = []
        shadows: list[Shadow] = []

        def make() -> Shadow:
            shadows.append(Shadow(status, seen))
            return shadows[-1]

        shadowPort, _ = self.custom(make)
        shadow = backend("shadow", [shadowPort], retries=0)
        mirror = Mirror(shadow, **kwargs)
        port = self.frontend([Route(pathBegins("/"), backend("web", [primary]), requestRules=[mirror])])
        return port, mirror, shadows, seen

    @inlineCallbacks
    def test_copy(self) -> Any:
        """The shadow gets the same method, path, headers and body; its 500 shows as divergence."""
        port, mirror, shadows, seen = self.setUpMirror(500)
        c = yield self.client(port)
        c.send(b"POST /form?x=1 HTTP/1.1\r\nHost: test\r\nX-Trace: abc\r\nContent-Length: 11\r\n\r\nhello")
        c.transport.write(b" world")
        [(response, body)] = yield c.responses(1)
        self.assertEqual(response.code, 200)
        yield mirror.idle()
        [copy] = seen
        self.assertTrue(copy.startswith(b"POST /form?x=1 HTTP/1.1\r\n"), copy)
        self.assertIn(b"\r\nX-Trace: abc\r\n", copy)
        self.assertIn(b"\r\nContent-Length: 11\r\n", copy)
        self.assertTrue(copy.endswith(b"\r\n\r\nhello world"), copy)
        stats = mirrorStats(mirror.backend)
        assert stats is not None
        self.assertEqual((stats["mirrored"], stats["answered"], stats["failed"]), (1, 1, 0))
        self.assertEqual(stats["divergence"], {"2xx/5xx": 1})
        # /stats.json shows it under the shadow backend
        collector = Collector()
        collector.bind(self._frontends)
        snapshot = collector.snapshot()
        [entry] = [b for b in snapshot["backends"] if b["name"] == "shadow"]
        self.assertEqual(entry["mirror"]["divergence"], {"2xx/5xx": 1})
        [web] = [b for b in snapshot["backends"] if b["name"] == "web"]
        self.assertIsNone(web["mirror"])

    @inlineCallbacks
    def test_connectionReused(self) -> Any:
        """Copies go over a kept-alive shadow connection, one after another, bodies included."""
        primary, _ = self.site("primary")
        seen: list[bytes] = []
        shadowPort, factory = self.custom(lambda: Shadow(200, seen))
        mirror = Mirror(backend("shadow", [shadowPort]))
        port = self.frontend(default=backend("web", [primary]), requestRules=[mirror])
        for i in range(3):
            c = yield self.client(port)
            c.send(b"POST /%d HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nhi" % i)
            [(response, body)] = yield c.responses(1)
            self.assertEqual(response.code, 200)
            yield mirror.idle()
        self.assertEqual([s.split(b" ")[1] for s in seen], [b"/0", b"/1", b"/2"])
        self.assertEqual(len(factory.built), 1)
        self.assertEqual((mirror.answered, mirror.agreed, mirror.failed), (3, 3, 0))

    @inlineCallbacks
    def test_hangingShadow(self) -> Any:
        """A shadow that holds the copy does not hold the answer; the copy times out."""
        port, mirror, shadows, seen = self.setUpMirror(None, timeout=1.0)
        c = yield self.client(port)
        c.send(b"GET /a HTTP/1.1\r\nHost: test\r\n\r\n")
        [(response, body)] = yield c.responses(1)
        self.assertEqual(response.code, 200)
        self.assertEqual(len(mirror.inFlight), 1)  # the shadow still holds it
        yield mirror.idle()
        self.assertEqual((mirror.timedOut, mirror.failed, mirror.answered), (1, 1, 0))
        yield shadows[0].gone

    @inlineCallbacks
    def test_deadShadow(self) -> Any:
        """A shadow nobody listens for costs the request nothing; the copy counts as failed."""
        primary, _ = self.site("primary")
        mirror = Mirror(backend("shadow", [freePort()], retries=0))
        port = self.frontend(default=backend("web", [primary]), requestRules=[mirror])
        response, body = yield self.get(port, "/x")
        self.assertEqual(response.code, 200)
        yield mirror.idle()
        self.assertEqual((mirror.mirrored, mirror.failed, mirror.answered), (1, 1, 0))

    @inlineCallbacks
    def test_bound(self) -> Any:
        """Past maxInFlight copies are dropped and counted; the requests are answered."""
        port, mirror, shadows, seen = self.setUpMirror(None, maxInFlight=1, timeout=1.0)
        c = yield self.client(port)
        c.send(b"GET /1 HTTP/1.1\r\nHost: test\r\n\r\n")
        c.send(b"GET /2 HTTP/1.1\r\nHost: test\r\n\r\n")
        responses = yield c.responses(2)
        self.assertEqual([r.code for r, b in responses], [200, 200])
        self.assertEqual((mirror.mirrored, mirror.dropped), (1, 1))
        yield mirror.idle()
        yield shadows[0].gone

    @inlineCallbacks
    def test_tooLarge(self) -> Any:
        """A body past maxBody is not copied, and counted."""
        port, mirror, shadows, seen = self.setUpMirror(200, maxBody=4)
        c = yield self.client(port)
        c.send(b"POST /p HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n0123456789")
        c.send(b"POST /q HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc")
        responses = yield c.responses(2)
        self.assertEqual([r.code for r, b in responses], [200, 200])
        yield mirror.idle()
        self.assertEqual((mirror.tooLarge, mirror.mirrored, mirror.agreed), (1, 1, 1))
        [copy] = seen
        self.assertTrue(copy.startswith(b"POST /q "))

    @inlineCallbacks
    def test_chunkedTooLarge(self) -> Any:
        """A chunked body that grows past maxBody aborts its copy."""
        port, mirror, shadows, seen = self.setUpMirror(200, maxBody=8)
        c = yield self.client(port)
        c.send(b"POST /p HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        c.transport.write(b"10\r\n0123456789abcdef\r\n0\r\n\r\n")
        [(response, body)] = yield c.responses(1)
        self.assertEqual(response.code, 200)
        yield mirror.idle()
        self.assertEqual((mirror.mirrored, mirror.tooLarge, mirror.failed), (1, 1, 1))

    @inlineCallbacks
    def test_fraction(self) -> Any:
        """fraction=0.5 copies every second matching request, and when= chooses which match."""
        primary, _ = self.site("primary")
        seen: list[bytes] = []
        shadowPort, _ = self.custom(lambda: Shadow(200, seen))
        mirror = Mirror(backend("shadow", [shadowPort]), fraction=0.5, when=pathBegins("/api"))
        port = self.frontend(default=backend("web", [primary]), requestRules=[mirror])
        c = yield self.client(port)
        for path in [b"/api/1", b"/other", b"/api/2", b"/api/3", b"/api/4"]:
            c.send(b"GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % path)
        responses = yield c.responses(5)
        self.assertEqual({r.code for r, b in responses}, {200})
        yield mirror.idle()
        self.assertEqual((mirror.matched, mirror.mirrored, mirror.agreed), (4, 2, 2))
        self.assertEqual(sorted(s.split(b" ")[1] for s in seen), [b"/api/2", b"/api/4"])


class MirrorHTTP2Tests(HTTP2TestCase):
    """Requests that came over HTTP/2 (curl --http2) are mirrored, bodies included."""

    @inlineCallbacks
    def test_curlPost(self) -> Any:
        """The shadow gets curl's HTTP/2 POST as HTTP/1.1, body and X-Forwarded-Proto included."""
        seen: list[bytes] = []
        shadowPort, _ = self.custom(lambda: Shadow(200, seen))
        mirror = Mirror(backend("shadow", [shadowPort]))
        port = self.tlsFrontend(default=backend("app", [self.site("app1")[0]]), requestRules=[mirror])
        data = b"x" * 5000
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        out = yield self.curl(port, "--http2", "--data-binary", "@" + path, path="/up?a=1")
        self.assertEqual(json.loads(out)["length"], 5000)
        yield mirror.idle()
        [copy] = seen
        head, _, body = copy.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"POST /up?a=1 HTTP/1.1\r\n"), head)
        self.assertIn(b"\r\nX-Forwarded-Proto: https", head)
        self.assertEqual(body, data)
        self.assertEqual((mirror.answered, mirror.agreed), (1, 1))


class MirrorFailureTests(HTTPTestCase):
    """A copy that cannot even be started costs the real request nothing."""

    @inlineCallbacks
    def test_balancerRaises(self) -> Any:
        """The shadow's balancer raises: the copy fails (counted), the request is answered."""
        primary, _ = self.site("primary")

        class Broken:
            def pick(self, servers: Any, context: Any) -> Any:
                raise RuntimeError("broken balancer")

        shadow = Backend("shadow", [Server("s", f"127.0.0.1:{primary}")])  # it would answer
        shadow.balance = Broken()  # type: ignore[assignment]
        mirror = Mirror(shadow)
        port = self.frontend(default=backend("web", [primary]), requestRules=[mirror])
        response, body = yield self.get(port, "/x")
        self.assertEqual(response.code, 200)
        yield mirror.idle()
        self.assertEqual((mirror.mirrored, mirror.failed, mirror.answered), (1, 1, 0))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


MIRROR_SITE = """\
from lbkit import Backend, Server, http

app = Backend("app", servers=[Server("a", "127.0.0.1:{app}")])
shadow = Backend("shadow", servers=[Server("s", "127.0.0.1:{shadow}")])
listen = [http.Frontend("tcp:0:interface=127.0.0.1", default=app, name="web", log=False,
                        requestRules=[http.Mirror(shadow, fraction={fraction})])]
grace = 5
"""


class MirrorReloadTests(TestCase):
    """A reload keeps the copies going to the running shadow backend, its counters growing on."""

    timeout = 30

    @inlineCallbacks
    def test_reload(self) -> Any:
        """After a reload the new Mirror sends to the running shadow backend; the counts add up."""
        appPort, _ = startBackend(self, "a")
        shadowPort, shadowResource = startBackend(self, "s")
        path = self.mktemp() + "-site.py"
        writeSite(path, MIRROR_SITE.format(app=appPort, shadow=shadowPort, fraction=1.0))
        service = fromSiteFile(path, reactor())
        service.startService()
        self.addCleanup(service.stopService)
        port = frontendPort(service)
        client = Client(self)
        running = [b for b in service.backends() if b.name == "shadow"]
        self.assertEqual(len(running), 1)
        code, body, _ = yield client.get(port)
        self.assertEqual((code, body), (200, "a"))
        writeSite(path, MIRROR_SITE.format(app=appPort, shadow=shadowPort, fraction=0.5))
        yield service.reload()
        for _ in range(2):
            code, body, _ = yield client.get(port)
            self.assertEqual((code, body), (200, "a"))
        [frontend] = [item for item in service.listen if hasattr(item, "requestRules")]
        [mirror] = frontend.requestRules
        self.assertIs(mirror.backend, running[0])
        yield mirror.idle()
        stats = mirrorStats(running[0])
        assert stats is not None
        self.assertEqual((stats["matched"], stats["mirrored"], stats["fraction"]), (3, 2, 0.5))
        yield client.fresh()
