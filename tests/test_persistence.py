"""
Session persistence: the stick table and every cookie mode.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Context, Server, ServerState
from lbkit.http import Request, Response
from lbkit.persistence import Cookie, StickySource


def client(host: str = "10.0.0.1") -> IPv4Address:
    return IPv4Address("TCP", host, 40000)


def request(cookie: Optional[bytes] = None) -> Request:
    headers = [[b"Host", b"example.com"]]
    if cookie is not None:
        headers.append([b"Cookie", cookie])
    return Request(b"GET", b"/", b"HTTP/1.1", headers)


def response(*setCookies: bytes, extra: Any = ()) -> Response:
    headers = [[b"Content-Type", b"text/plain"]]
    headers += [[b"Set-Cookie", c] for c in setCookies]
    headers += [list(h) for h in extra]
    return Response(b"HTTP/1.1", 200, b"OK", headers)


def setCookies(resp: Response) -> list[bytes]:
    return resp.headerValues(b"set-cookie")


class Servers:
    def __init__(self, persistence: Any) -> None:
        self.a = Server("s1", "127.0.0.1:1")
        self.b = Server("s2", "127.0.0.1:2")
        self.backend = Backend("app", [self.a, self.b], persistence=persistence)

    def pick(self, context: Context) -> Server:
        server = self.backend.tryAcquire(context)
        assert server is not None
        self.backend.release(server)
        return server


class StickySourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.table = StickySource(expire=60, size=2, clock=self.clock)
        self.s = Servers(self.table)

    def test_sameClientSameServer(self) -> None:
        """A client address keeps going to the server it first got."""
        first = self.s.pick(Context(client=client()))
        picks = {self.s.pick(Context(client=client())) for _ in range(10)}
        self.assertEqual(picks, {first})

    def test_expires(self) -> None:
        """An entry unused for longer than expire is forgotten."""
        self.s.pick(Context(client=client()))
        self.assertIsNotNone(self.table.recall(self.s.backend, Context(client=client())))
        self.clock.advance(61)
        self.assertIsNone(self.table.recall(self.s.backend, Context(client=client())))

    def test_lruEviction(self) -> None:
        """Past size entries, the least recently used client is evicted."""
        for host in ("10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.3"):
            self.s.pick(Context(client=client(host)))
        self.assertEqual(sorted(e[0] for e in self.table.entries()), ["10.0.0.1", "10.0.0.3"])

    def test_downServerRedispatches(self) -> None:
        """A client stuck to a DOWN server moves once and is stuck again."""
        first = self.s.pick(Context(client=client()))
        first.setState(ServerState.DOWN, "test")
        moved = self.s.pick(Context(client=client()))
        self.assertIsNot(moved, first)
        first.setState(ServerState.UP, "test")
        self.assertIs(self.s.pick(Context(client=client())), moved)
        self.assertEqual(self.s.backend.redispatches, 1)

    def test_drainKeepsStickyClients(self) -> None:
        """A DRAIN server keeps its sticky clients but gets no new ones."""
        first = self.s.pick(Context(client=client("10.0.0.1")))
        first.setState(ServerState.DRAIN, "operator")
        self.assertIs(self.s.pick(Context(client=client("10.0.0.1"))), first)
        others = {self.s.pick(Context(client=client(f"10.0.1.{i}"))) for i in range(5)}
        self.assertNotIn(first, others)


class CookieInsertTests(SynchronousTestCase):
    def test_badMode(self) -> None:
        """An unknown mode is refused at configuration time."""
        self.assertRaises(ValueError, Cookie, "SERVERID", mode="bogus")

    def test_insertSetsCookie(self) -> None:
        """insert: a response to a client without the cookie sets NAME=server."""
        c = Cookie("SERVERID")
        s = Servers(c)
        ctx = Context(request=request())
        server = s.pick(ctx)
        resp = response()
        c.rewriteResponse(s.backend, server, resp, ctx)
        self.assertEqual(setCookies(resp), [b"SERVERID=" + server.name.encode() + b"; path=/"])

    def test_cookieRoutes(self) -> None:
        """A request carrying the cookie goes to the server it names."""
        c = Cookie("SERVERID")
        s = Servers(c)
        for _ in range(5):
            self.assertIs(s.pick(Context(request=request(b"a=1; SERVERID=s2; b=2"))), s.b)

    def test_customCookieValue(self) -> None:
        """A server's cookie value is settable with Server(cookie=...)."""
        c = Cookie("SERVERID")
        a = Server("s1", "127.0.0.1:1", cookie="alpha")
        backend = Backend("app", [a, Server("s2", "127.0.0.1:2")], persistence=c)
        self.assertIs(c.recall(backend, Context(request=request(b"SERVERID=alpha"))), a)
        self.assertIsNone(c.recall(backend, Context(request=request(b"SERVERID=s1"))))

    def test_unknownValueIgnored(self) -> None:
        """An unknown or forged value is treated as absent."""
        c = Cookie("SERVERID")
        s = Servers(c)
        for value in (b"SERVERID=nope", b"SERVERID=127.0.0.1:1", b"SERVERID=", b"SERVERID"):
            self.assertIsNone(c.recall(s.backend, Context(request=request(value))))

    def test_notSetAgainWhenHeld(self) -> None:
        """A client already holding the right value does not get it again."""
        c = Cookie("SERVERID", indirect=True)
        s = Servers(c)
        ctx = Context(request=request(b"SERVERID=s1"))
        server = s.pick(ctx)
        resp = response()
        c.rewriteResponse(s.backend, server, resp, ctx)
        self.assertEqual(setCookies(resp), [])

    def test_downServerRedispatched(self) -> None:
        """A cookie naming a DOWN server is ignored and replaced."""
        c = Cookie("SERVERID")
        s = Servers(c)
        s.a.setState(ServerState.DOWN, "test")
        ctx = Context(request=request(b"SERVERID=s1"))
        server = s.pick(ctx)
        self.assertIs(server, s.b)
        resp = response()
        c.rewriteResponse(s.backend, server, resp, ctx)
        self.assertEqual(setCookies(resp), [b"SERVERID=s2; path=/"])

    def test_maintServerRedispatched(self) -> None:
        """A cookie naming a server in MAINT is ignored."""
        c = Cookie("SERVERID")
        s = Servers(c)
        s.a.setState(ServerState.MAINT, "operator")
        self.assertIs(s.pick(Context(request=request(b"SERVERID=s1"))), s.b)

    def test_indirectStripsRequestCookie(self) -> None:
        """indirect: the persistence cookie never reaches the server."""
        c = Cookie("SERVERID", indirect=True)
        s = Servers(c)
        req = request(b"a=1; SERVERID=s1; b=2")
        c.rewriteRequest(s.backend, req, Context(request=req))
        self.assertEqual(req.headerValues(b"cookie"), [b"a=1; b=2"])
        only = request(b"SERVERID=s1")
        c.rewriteRequest(s.backend, only, Context(request=only))
        self.assertEqual(only.headerValues(b"cookie"), [])

    def test_withoutIndirectCookiePassed(self) -> None:
        """Without indirect, the server sees the cookie."""
        c = Cookie("SERVERID")
        s = Servers(c)
        req = request(b"SERVERID=s1")
        c.rewriteRequest(s.backend, req, Context(request=req))
        self.assertEqual(req.headerValues(b"cookie"), [b"SERVERID=s1"])

    def test_serverCookieRemovedUnlessPreserve(self) -> None:
        """A server's own cookie of that name is replaced, unless preserve."""
        c = Cookie("SERVERID", indirect=True)
        s = Servers(c)
        ctx = Context(request=request())
        resp = response(b"SERVERID=mine; path=/app")
        c.rewriteResponse(s.backend, s.a, resp, ctx)
        self.assertEqual(setCookies(resp), [b"SERVERID=s1; path=/"])
        p = Cookie("SERVERID", indirect=True, preserve=True)
        resp = response(b"SERVERID=; expires=Thu, 01 Jan 1970 00:00:00 GMT")
        p.rewriteResponse(s.backend, s.a, resp, ctx)
        self.assertEqual(setCookies(resp), [b"SERVERID=; expires=Thu, 01 Jan 1970 00:00:00 GMT"])

    def test_nocache(self) -> None:
        """nocache: a response that sets the cookie is marked private."""
        c = Cookie("SERVERID", nocache=True)
        s = Servers(c)
        resp = response(extra=[(b"Cache-Control", b"public, max-age=60")])
        c.rewriteResponse(s.backend, s.a, resp, Context(request=request()))
        self.assertEqual(resp.headerValues(b"cache-control"), [b"max-age=60, private"])
        plain = response()
        c.rewriteResponse(s.backend, s.a, plain, Context(request=request()))
        self.assertEqual(plain.headerValues(b"cache-control"), [b"private"])

    def test_attributes(self) -> None:
        """httponly, secure and domain appear on the inserted cookie."""
        c = Cookie("SERVERID", httponly=True, secure=True, domain="example.com")
        s = Servers(c)
        resp = response()
        c.rewriteResponse(s.backend, s.a, resp, Context(request=request()))
        self.assertEqual(setCookies(resp), [b"SERVERID=s1; path=/; domain=example.com; HttpOnly; Secure"])

    def test_maxidleAndMaxlife(self) -> None:
        """A cookie unused past maxidle, or older than maxlife, is ignored."""
        now = [1_000_000.0]
        c = Cookie("SERVERID", maxidle=60, maxlife=600, clock=lambda: now[0])
        s = Servers(c)
        ctx = Context(request=request())
        resp = response()
        c.rewriteResponse(s.backend, s.a, resp, ctx)
        value = setCookies(resp)[0].split(b";")[0].split(b"=", 1)[1]
        self.assertIs(c.recall(s.backend, Context(request=request(b"SERVERID=" + value))), s.a)
        now[0] += 61
        self.assertIsNone(c.recall(s.backend, Context(request=request(b"SERVERID=" + value))))
        # refreshed on every response, but capped by maxlife
        for _ in range(12):
            ctx = Context(request=request(b"SERVERID=" + value))
            now[0] += 50
            if c.recall(s.backend, ctx) is None:
                break
            resp = response()
            c.rewriteResponse(s.backend, s.a, resp, ctx)
            value = setCookies(resp)[0].split(b";")[0].split(b"=", 1)[1]
        self.assertIsNone(c.recall(s.backend, Context(request=request(b"SERVERID=" + value))))

    def test_datedGarbageIgnored(self) -> None:
        """A malformed dated value is treated as absent."""
        c = Cookie("SERVERID", maxidle=60)
        s = Servers(c)
        for value in (b"s1", b"s1|zz|", b"s1|!!|00", b"s1|1|2|3"):
            self.assertIsNone(c.recall(s.backend, Context(request=request(b"SERVERID=" + value))))


class CookieRewritePrefixTests(SynchronousTestCase):
    def test_rewrite(self) -> None:
        """rewrite: the server's cookie value becomes the server's id."""
        c = Cookie("SERVERID", mode="rewrite")
        s = Servers(c)
        resp = response(b"SERVERID=anything; path=/; HttpOnly")
        c.rewriteResponse(s.backend, s.b, resp, Context(request=request()))
        self.assertEqual(setCookies(resp), [b"SERVERID=s2; path=/; HttpOnly"])
        self.assertIs(c.recall(s.backend, Context(request=request(b"SERVERID=s2"))), s.b)

    def test_rewriteWithoutServerCookie(self) -> None:
        """rewrite: nothing is set when the server sets nothing."""
        c = Cookie("SERVERID", mode="rewrite")
        s = Servers(c)
        resp = response()
        c.rewriteResponse(s.backend, s.a, resp, Context(request=request()))
        self.assertEqual(setCookies(resp), [])

    def test_prefixOut(self) -> None:
        """prefix: the application's cookie gets 'server~' in front."""
        c = Cookie("JSESSIONID", mode="prefix")
        s = Servers(c)
        resp = response(b"JSESSIONID=abc123; path=/", b"other=1")
        c.rewriteResponse(s.backend, s.a, resp, Context(request=request()))
        self.assertEqual(setCookies(resp), [b"JSESSIONID=s1~abc123; path=/", b"other=1"])

    def test_prefixIn(self) -> None:
        """prefix: the prefix routes the request and is stripped from it."""
        c = Cookie("JSESSIONID", mode="prefix")
        s = Servers(c)
        req = request(b"JSESSIONID=s2~abc123; x=y")
        ctx = Context(request=req)
        self.assertIs(s.pick(ctx), s.b)
        c.rewriteRequest(s.backend, req, ctx)
        self.assertEqual(req.headerValues(b"cookie"), [b"JSESSIONID=abc123; x=y"])
