# -*- test-case-name: tests.test_stats -*-
"""
The stats page's HTTP resources: C{/}, C{/stats.json}, C{/metrics}, and,
with an L{Admin}, C{/admin/}, C{POST /admin/server}, C{POST /admin/reload},
C{POST /admin/reopen}, C{POST /admin/restart} and C{POST /admin/purge}.

Each resource says what its requests may bring, for L{lbkit.stats._site} to
check from the head: C{bodyLimit} (bytes of body; 0 but for the admin POSTs)
and C{guard} (the L{Guard} of admin routes, C{None} elsewhere).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import attrs
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred
from twisted.web.resource import NoResource, Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.template import renderElement

from lbkit.stats._admin import Admin, AdminError, runAction, runReload, runReopen, runRestart
from lbkit.stats._cachestats import runPurge
from lbkit.stats._collect import Collector
from lbkit.stats._guard import MAX_BODY, Guard, Refusal, jsonBody
from lbkit.stats._html import StatsElement
from lbkit.stats._live import runExplain, runLive, runPreview
from lbkit.stats._metrics import MetricsCollector

__all__: list[str] = []


def _htmlHeaders(request: Request) -> None:
    _noCache(request)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    request.setHeader(b"x-frame-options", b"DENY")


def _noCache(request: Request) -> None:
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")


def _json(request: Request, body: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    _noCache(request)
    return jsonBody(body)


def _refuse(request: Request, refusal: Refusal) -> bytes:
    for name, value in refusal.headers:
        request.setHeader(name, value)
    return _json(request, {"error": refusal.error}, refusal.code)


def _arg(request: Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode())
    if not values:
        return None
    return str(values[0].decode("utf-8", "replace"))


class _Leaf(Resource):
    isLeaf = True
    bodyLimit = 0
    guard: Guard | None = None

    def __init__(self, collector: Collector) -> None:
        super().__init__()
        self.collector = collector


class HTMLResource(_Leaf):
    """The read-only page at C{/}."""

    def __init__(self, collector: Collector, refresh: float) -> None:
        super().__init__(collector)
        self.refresh = refresh

    def render_GET(self, request: Request) -> Any:
        _htmlHeaders(request)
        return renderElement(request, StatsElement(self.collector.snapshot(), self.refresh))


class JSONResource(_Leaf):
    """C{/stats.json}."""

    def render_GET(self, request: Request) -> bytes:
        return _json(request, self.collector.snapshot())


class MetricsResource(_Leaf):
    """C{/metrics}, in the Prometheus text format."""

    def __init__(self, collector: Collector) -> None:
        super().__init__(collector)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MetricsCollector(collector))

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        _noCache(request)
        return generate_latest(self.registry)


class _AdminLeaf(_Leaf):
    """
    Answers 401 unless the request carries an admin's credentials (429
    while the guard's throttle refuses).  Behind a L{StatsSite} the channel
    has checked them from the head already and set C{request.adminUser};
    mounted in another site, the check happens here.
    """

    guard: Guard

    def __init__(self, collector: Collector, guard: Guard) -> None:
        super().__init__(collector)
        self.guard = guard
        self.admin: Admin = guard.admin

    def render(self, request: Request) -> Any:
        if getattr(request, "adminUser", None) is None:
            user = self.guard.login(request.getHeader(b"authorization"), request.getClientAddress())
            if isinstance(user, Refusal):
                return _refuse(request, user)
            request.adminUser = user  # type: ignore[attr-defined]
        return super().render(request)

    def forged(self, request: Request) -> bytes | None:
        """
        The 403 answer to an admin POST that may be forged cross-site (an
        other-origin C{Origin}, or neither the page's C{token} field nor an
        C{X-LBKit-Admin} header), else C{None}.
        """
        if not _sameOrigin(request):
            return _json(request, {"error": "cross-origin request refused"}, 403)
        token = _arg(request, "token")
        user: str = request.adminUser  # type: ignore[attr-defined]
        if request.getHeader(b"x-lbkit-admin") is None and not (token and self.admin.checkToken(user, token)):
            return _json(request, {"error": "missing or bad token (or X-LBKit-Admin header)"}, 403)
        return None


class AdminHTMLResource(_AdminLeaf):
    """C{/admin/}: the page, with buttons."""

    def __init__(self, collector: Collector, guard: Guard, refresh: float) -> None:
        super().__init__(collector, guard)
        self.refresh = refresh

    def render_GET(self, request: Request) -> Any:
        if not request.path.endswith(b"/"):
            request.redirect(request.path + b"/")
            return b""
        user: str = request.adminUser  # type: ignore[attr-defined]
        _htmlHeaders(request)
        element = StatsElement(self.collector.snapshot(), self.refresh, (user, self.admin.token(user)))
        return renderElement(request, element)


def _sameOrigin(request: Request) -> bool:
    """
    Whether the request's C{Origin} (or, without it, C{Referer}) header, if
    any, names this very host; browsers send one on every cross-site POST.
    """
    host = request.getHeader(b"host")
    origin = request.getHeader(b"origin")
    if origin is None:
        origin = request.getHeader(b"referer")
        if origin is None:
            return True
    if host is None or origin == b"null":
        return False
    return urlsplit(origin.decode("latin-1")).netloc.lower() == host.decode("latin-1").lower()


class _AdminPost(_AdminLeaf):
    """
    An admin operation: C{POST} only (C{GET} is 405), and besides the
    credentials it needs, against cross-site request forgery, a same-origin
    C{Origin} (when there is one) and either the page's C{token} field or an
    C{X-LBKit-Admin} header (which a cross-site page cannot send without a
    CORS preflight, never granted here).  Then L{act} does it.
    """

    bodyLimit = MAX_BODY
    #: What it does, for the log line of an answer that failed.
    what = "admin request"

    def render_POST(self, request: Request) -> Any:
        refused = self.forged(request)
        if refused is not None:
            return refused
        user: str = request.adminUser  # type: ignore[attr-defined]
        via = f"http {getattr(request.getClientAddress(), 'host', '?')}"
        try:
            result = self.act(request, user, via)
        except AdminError as e:
            return _json(request, {"error": str(e)}, e.code)
        if not isinstance(result, Deferred):
            return result
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda f: gone.append(True))

        def answer(reply: tuple[dict[str, Any], int]) -> None:
            if not gone:  # (else the client left; the operation itself went ahead)
                body, code = reply
                request.write(_json(request, body, code))
                request.finish()

        result.addCallback(answer).addErrback(lambda f: self.collector.log.failure(f"answering a {self.what}", f))
        return NOT_DONE_YET

    def act(self, request: Request, user: str, via: str) -> bytes | Deferred[tuple[dict[str, Any], int]]:
        """
        Carry the request out: the answer's bytes, or a Deferred firing with
        its JSON body and status.

        @raise AdminError: refused, with the status to answer.
        """
        raise NotImplementedError

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"allow", b"POST")
        return _json(request, {"error": "use POST"}, 405)


class AdminActionResource(_AdminPost):
    """C{POST /admin/server?backend=B&server=S&action=A[&weight=N]}: change one server."""

    def act(self, request: Request, user: str, via: str) -> bytes:
        server = runAction(
            self.collector, user, via,
            _arg(request, "backend") or "", _arg(request, "server") or "",
            _arg(request, "action") or "", _arg(request, "weight"),
        )
        if _arg(request, "from") == "page":
            request.setResponseCode(303)
            request.setHeader(b"location", b"./")
            return b""
        return _json(request, {"ok": True, "server": self.collector.server(server)})


class AdminPurgeResource(_AdminPost):
    """
    C{POST /admin/purge?cache=NAME&key=HOST/PATH} (or C{&prefix=HOST/PREFIX}):
    drop entries from a response cache (docs/cache.md).  Answers
    C{{"ok": true, "purged": N}}.
    """

    what = "purge request"

    def act(self, request: Request, user: str, via: str) -> bytes | Deferred[tuple[dict[str, Any], int]]:
        count = runPurge(self.collector, user, via, _arg(request, "cache") or "", _arg(request, "key"),
                         _arg(request, "prefix"))
        if not isinstance(count, Deferred):
            return _json(request, {"ok": True, "purged": count})
        return count.addCallbacks(lambda n: ({"ok": True, "purged": n}, 200),
                                  lambda f: ({"error": f.getErrorMessage()}, 502))


class AdminReloadResource(_AdminPost):
    """
    C{POST /admin/reload}: load the site file again.  Answers
    C{{"ok": true, "changes": [...]}}, or 409 with C{"error"} when the file
    does not load (the running configuration is then unchanged).
    """

    #: What carries the request out (L{runReload}, L{runRestart}).
    run = staticmethod(runReload)
    what = "reload request"

    def act(self, request: Request, user: str, via: str) -> Deferred[tuple[dict[str, Any], int]]:
        def reply(result: tuple[bool, str]) -> tuple[dict[str, Any], int]:
            ok, text = result
            return ({"ok": True, "changes": text.split("\n")[1:]}, 200) if ok else ({"error": text}, 409)

        return self.run(self.collector, user, via).addCallback(reply)


class AdminRestartResource(AdminReloadResource):
    """
    C{POST /admin/restart}: replace every worker process (C{--workers}) with
    a new one on the lbkit code installed now, as SIGUSR2 does.  Answers
    C{{"ok": true, "changes": [...]}} once the new workers accept, or 409
    with C{"error"} when they did not start (the old ones go on); 404
    without workers.
    """

    run = staticmethod(runRestart)
    what = "restart request"


class AdminReopenResource(_AdminPost):
    """
    C{POST /admin/reopen}: open the access-log files again, after log
    rotation.  Answers C{{"ok": true, "files": [...]}}, one line per file
    destination.
    """

    def act(self, request: Request, user: str, via: str) -> bytes:
        return _json(request, {"ok": True, "files": runReopen(self.collector, user, via)})


def _args(request: Request, name: str) -> list[str]:
    return [v.decode("utf-8", "replace") for v in (request.args or {}).get(name.encode(), [])]


class AdminLiveResource(_AdminPost):
    """
    The live changes, explanations and previews (docs/beyond.md):

      - C{POST /admin/live?op=OP&backend=B...}: C{add-server} (C{server},
        C{address}, C{weight}), C{drain} and C{remove-server} (C{server},
        C{timeout}; answered once drained or removed), C{set-balance}
        (C{balance}, e.g. C{uri:consistent}), C{set-persistence}
        (C{persistence}: C{none}, C{source[:SECONDS]}, C{cookie:NAME});
        C{{"ok": true, "done": ...}}, or 409 when a drain timed out.
      - C{POST /admin/explain?frontend=F&method=M&path=P&source=A&header=Name:+value}:
        route, backend, server and reasons; nothing is sent.
      - C{POST /admin/preview?backend=B&weight=S=N&remove=S&add=S=HOST:PORT}:
        what the change would do.
    """

    what = "live change"

    def __init__(self, collector: Collector, guard: Guard, kind: str) -> None:
        super().__init__(collector, guard)
        self.kind = kind

    def act(self, request: Request, user: str, via: str) -> bytes | Deferred[tuple[dict[str, Any], int]]:
        if self.kind == "explain":
            headers = [tuple(h.partition(":")[::2]) for h in _args(request, "header")]
            return _json(request, runExplain(
                self.collector, _arg(request, "frontend") or "-", _arg(request, "method") or "GET",
                _arg(request, "path") or "/", [(n.strip(), v.strip()) for n, v in headers],
                _arg(request, "source") or "127.0.0.1",
            ))
        if self.kind == "preview":
            weights = dict(w.partition("=")[::2] for w in _args(request, "weight"))
            add = [tuple(a.partition("=")[::2]) for a in _args(request, "add")]
            result = runPreview(self.collector, _arg(request, "backend") or "", weights,
                                _args(request, "remove"), add)  # type: ignore[arg-type]
            return _json(request, {"ok": True, "preview": attrs.asdict(result), "text": result.lines()})
        names = ("backend", "server", "address", "weight", "timeout", "balance", "persistence")
        done = runLive(self.collector, user, via, _arg(request, "op") or "", {n: _arg(request, n) for n in names})
        if isinstance(done, str):
            return _json(request, {"ok": True, "done": done})

        def reply(text: str) -> tuple[dict[str, Any], int]:
            if text.startswith("error: "):
                return {"error": text[7:]}, 409
            return {"ok": True, "done": text}, 200

        return done.addCallback(reply)


class _Admin(Resource):
    bodyLimit = 0

    def __init__(self, collector: Collector, guard: Guard, refresh: float) -> None:
        super().__init__()
        self.guard = guard
        self.page = AdminHTMLResource(collector, guard, refresh)
        self.action = AdminActionResource(collector, guard)
        self.reload = AdminReloadResource(collector, guard)
        self.reopen = AdminReopenResource(collector, guard)
        self.restart = AdminRestartResource(collector, guard)
        self.purge = AdminPurgeResource(collector, guard)
        self.live = {kind.encode(): AdminLiveResource(collector, guard, kind) for kind in ("live", "explain", "preview")}

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"server":
            return self.action
        if path == b"reload":
            return self.reload
        if path == b"reopen":
            return self.reopen
        if path == b"restart":
            return self.restart
        if path == b"purge":
            return self.purge
        if path in self.live:
            return self.live[path]
        if path == b"":
            return self.page
        return NoResource()

    def render(self, request: Request) -> Any:
        return self.page.render(request)


def buildResource(collector: Collector, refresh: float, admin: Admin | None, clock: Any) -> Resource:
    """
    The root resource of a stats page; C{clock} (an L{IReactorTime<twisted.internet.interfaces.IReactorTime>}) times
    the admin routes' login throttle.
    """
    root = Resource()
    root.putChild(b"", HTMLResource(collector, refresh))
    root.putChild(b"stats.json", JSONResource(collector))
    root.putChild(b"metrics", MetricsResource(collector))
    if admin is not None:
        root.putChild(b"admin", _Admin(collector, Guard(admin, clock), refresh))
    return root

