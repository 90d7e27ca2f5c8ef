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


class AdminActionResource(_AdminLeaf):
    """
    C{POST /admin/server?backend=B&server=S&action=A[&weight=N]}: change one
    server.  Besides the credentials it needs, against cross-site request
    forgery, a same-origin C{Origin} (when there is one) and either the
    page's C{token} field or an C{X-LBKit-Admin} header (which a cross-site
    page cannot send without a CORS preflight, never granted here).
    """

    bodyLimit = MAX_BODY

    def render_POST(self, request: Request) -> Any:
        refused = self.forged(request)
        if refused is not None:
            return refused
        user: str = request.adminUser  # type: ignore[attr-defined]
        client = request.getClientAddress()
        via = f"http {getattr(client, 'host', '?')}"
        try:
            server = runAction(
                self.collector, user, via,
                _arg(request, "backend") or "", _arg(request, "server") or "",
                _arg(request, "action") or "", _arg(request, "weight"),
            )
        except AdminError as e:
            return _json(request, {"error": str(e)}, e.code)
        if _arg(request, "from") == "page":
            request.setResponseCode(303)
            request.setHeader(b"location", b"./")
            return b""
        return _json(request, {"ok": True, "server": self.collector.server(server)})

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"allow", b"POST")
        return _json(request, {"error": "use POST"}, 405)


class AdminPurgeResource(_AdminLeaf):
    """
    C{POST /admin/purge?cache=NAME&key=HOST/PATH} (or C{&prefix=HOST/PREFIX}):
    drop entries from a response cache (docs/cache.md); same credentials
    and forgery checks as L{AdminActionResource}.  Answers
    C{{"ok": true, "purged": N}}.
    """

    bodyLimit = MAX_BODY

    def render_POST(self, request: Request) -> Any:
        refused = self.forged(request)
        if refused is not None:
            return refused
        user: str = request.adminUser  # type: ignore[attr-defined]
        client = request.getClientAddress()
        try:
            count = runPurge(self.collector, user, f"http {getattr(client, 'host', '?')}",
                             _arg(request, "cache") or "", _arg(request, "key"), _arg(request, "prefix"))
        except AdminError as e:
            return _json(request, {"error": str(e)}, e.code)
        if not isinstance(count, Deferred):
            return _json(request, {"ok": True, "purged": count})
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda f: gone.append(True))

        def answer(body: dict[str, Any], code: int) -> None:
            if not gone:
                request.write(_json(request, body, code))
                request.finish()

        count.addCallbacks(lambda n: answer({"ok": True, "purged": n}, 200),
                           lambda f: answer({"error": f.getErrorMessage()}, 502))
        return NOT_DONE_YET

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"allow", b"POST")
        return _json(request, {"error": "use POST"}, 405)


class AdminReloadResource(_AdminLeaf):
    """
    C{POST /admin/reload}: load the site file again (same credentials and
    forgery checks as L{AdminActionResource}).  Answers
    C{{"ok": true, "changes": [...]}}, or 409 with C{"error"} when the file
    does not load (the running configuration is then unchanged).
    """

    bodyLimit = MAX_BODY
    #: What carries the request out (L{runReload}, L{runRestart}).
    run = staticmethod(runReload)
    what = "reload"

    def render_POST(self, request: Request) -> Any:
        refused = self.forged(request)
        if refused is not None:
            return refused
        user: str = request.adminUser  # type: ignore[attr-defined]
        client = request.getClientAddress()
        try:
            d = self.run(self.collector, user, f"http {getattr(client, 'host', '?')}")
        except AdminError as e:
            return _json(request, {"error": str(e)}, e.code)

        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda f: gone.append(True))

        def answer(result: tuple[bool, str]) -> None:
            if gone:
                return  # the client left; the reload itself went ahead
            ok, text = result
            lines = text.split("\n")
            body = {"ok": True, "changes": lines[1:]} if ok else {"error": text}
            request.write(_json(request, body, 200 if ok else 409))
            request.finish()

        d.addCallback(answer)
        d.addErrback(lambda f: self.collector.log.failure(f"answering a {self.what} request", f))
        from twisted.web.server import NOT_DONE_YET

        return NOT_DONE_YET

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"allow", b"POST")
        return _json(request, {"error": "use POST"}, 405)


class AdminRestartResource(AdminReloadResource):
    """
    C{POST /admin/restart}: replace every worker process (C{--workers}) with
    a new one on the lbkit code installed now, as SIGUSR2 does.  Answers
    C{{"ok": true, "changes": [...]}} once the new workers accept, or 409
    with C{"error"} when they did not start (the old ones go on); 404
    without workers.
    """

    run = staticmethod(runRestart)
    what = "restart"


class AdminReopenResource(_AdminLeaf):
    """
    C{POST /admin/reopen}: open the access-log files again, after log
    rotation (same credentials and forgery checks as
    L{AdminActionResource}).  Answers C{{"ok": true, "files": [...]}}, one
    line per file destination.
    """

    bodyLimit = MAX_BODY

    def render_POST(self, request: Request) -> bytes:
        refused = self.forged(request)
        if refused is not None:
            return refused
        user: str = request.adminUser  # type: ignore[attr-defined]
        client = request.getClientAddress()
        try:
            files = runReopen(self.collector, user, f"http {getattr(client, 'host', '?')}")
        except AdminError as e:
            return _json(request, {"error": str(e)}, e.code)
        return _json(request, {"ok": True, "files": files})

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"allow", b"POST")
        return _json(request, {"error": "use POST"}, 405)


def _args(request: Request, name: str) -> list[str]:
    return [v.decode("utf-8", "replace") for v in (request.args or {}).get(name.encode(), [])]


class AdminLiveResource(_AdminLeaf):
    """
    The live changes, explanations and previews (docs/beyond.md), same
    credentials and forgery checks as L{AdminActionResource}:

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

    bodyLimit = MAX_BODY

    def __init__(self, collector: Collector, guard: Guard, kind: str) -> None:
        super().__init__(collector, guard)
        self.kind = kind

    def render_POST(self, request: Request) -> Any:
        refused = self.forged(request)
        if refused is not None:
            return refused
        user: str = request.adminUser  # type: ignore[attr-defined]
        via = f"http {getattr(request.getClientAddress(), 'host', '?')}"
        try:
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
        except AdminError as e:
            return _json(request, {"error": str(e)}, e.code)
        if isinstance(done, str):
            return _json(request, {"ok": True, "done": done})
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda f: gone.append(True))

        def answer(text: str) -> None:
            if not gone:
                failed = text.startswith("error: ")
                request.write(_json(request, {"error": text[7:]} if failed else {"ok": True, "done": text},
                                    409 if failed else 200))
                request.finish()

        done.addCallback(answer).addErrback(lambda f: self.collector.log.failure("answering a live change", f))
        return NOT_DONE_YET

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"allow", b"POST")
        return _json(request, {"error": "use POST"}, 405)


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

