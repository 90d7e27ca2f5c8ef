# -*- test-case-name: tests.test_persistence -*-
"""
Cookie-based persistence (http mode), as HAProxy's C{cookie} keyword.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from zope.interface import implementer

from lbkit._model import Context, Server
from lbkit.interfaces import IAdoptingPersistence, IExplainingPersistence, IHTTPPersistence

if TYPE_CHECKING:
    from lbkit._backend import Backend

__all__ = ["Cookie"]

_MODES = ("insert", "rewrite", "prefix")


def _parseCookieHeader(value: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for part in value.split(b";"):
        name, sep, v = part.strip().partition(b"=")
        if sep and name:
            pairs.append((name.strip(), v.strip()))
    return pairs


def _encodeTime(seconds: float) -> bytes:
    n = int(seconds)
    digits = b""
    alphabet = b"0123456789abcdefghijklmnopqrstuv"
    while True:
        n, r = divmod(n, 32)
        digits = alphabet[r : r + 1] + digits
        if n == 0:
            return digits


def _decodeTime(text: bytes) -> Optional[int]:
    if not text or len(text) > 13:
        return None
    try:
        return int(text, 32)
    except ValueError:
        return None


@implementer(IHTTPPersistence, IExplainingPersistence, IAdoptingPersistence)
class Cookie:
    """
    Keep a client on one server with a cookie.

    @param name: The cookie's name.
    @param mode: C{"insert"}: lbkit sets C{name=<server cookie>};
        C{"rewrite"}: the server sets the cookie and lbkit replaces its
        value with the server's cookie value; C{"prefix"}: the
        application's own cookie C{name} gets C{<server cookie>~} in front
        on the way out, removed on the way in.
    @param indirect: (insert) remove the cookie from requests before the
        server sees them, and do not set it again when the client already
        has the right value; a server's own cookie of that name is dropped
        unless C{preserve}.
    @param nocache: mark responses that set the cookie
        C{Cache-Control: private} (dropping C{public}).
    @param preserve: when the server sets or clears the cookie itself, pass
        its cookie on untouched.
    @param httponly: add C{HttpOnly}.
    @param secure: add C{Secure}.
    @param domain: add C{Domain=...}.
    @param maxidle: ignore (and replace) a cookie unused for this many
        seconds; the cookie then carries its dates.
    @param maxlife: ignore (and replace) a cookie older than this.
    @param path: the cookie's C{Path} (C{/} by default).
    @param clock: A callable returning wall-clock seconds (C{time.time}).
    """

    def __init__(
        self,
        name: str,
        mode: str = "insert",
        indirect: bool = False,
        nocache: bool = False,
        preserve: bool = False,
        httponly: bool = False,
        secure: bool = False,
        domain: Optional[str] = None,
        maxidle: Optional[float] = None,
        maxlife: Optional[float] = None,
        path: str = "/",
        clock: Optional[Callable[[], float]] = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"Cookie mode must be one of {', '.join(_MODES)}, not {mode!r}")
        if not name or any(c in name for c in "=;, \t"):
            raise ValueError(f"invalid cookie name {name!r}")
        self.name = name
        self._name = name.encode("ascii")
        self.mode = mode
        self.indirect = indirect
        self.nocache = nocache
        self.preserve = preserve
        self.httponly = httponly
        self.secure = secure
        self.domain = domain
        self.maxidle = maxidle
        self.maxlife = maxlife
        self.path = path
        self._now = clock or time.time
        #: id(backend) -> (the backend's server list it was built from, cookie value -> server)
        self._byValue: dict[int, tuple[object, dict[bytes, Server]]] = {}

    def __repr__(self) -> str:
        return f"<Cookie {self.name} {self.mode}>"

    # -- helpers -----------------------------------------------------------

    def _servers(self, backend: Backend) -> dict[bytes, Server]:
        cached = self._byValue.get(id(backend))
        if cached is not None and cached[0] is backend.servers:
            return cached[1]
        # a backend replaces its list when its servers change (a reload, addServer)
        table = {s.cookie.encode("utf-8"): s for s in backend.servers}
        self._byValue[id(backend)] = (backend.servers, table)
        return table

    def _dated(self) -> bool:
        return self.maxidle is not None or self.maxlife is not None

    def _readValue(self, raw: bytes, backend: Backend, context: Context) -> Optional[Server]:
        """The server a cookie value names, if valid and not expired."""
        if self.mode == "prefix":
            raw = raw.partition(b"~")[0]
        if self._dated():
            parts = raw.split(b"|")
            if len(parts) != 3:
                return None
            raw = parts[0]
            last, first = _decodeTime(parts[1]), _decodeTime(parts[2])
            if last is None or first is None:
                return None
            now = self._now()
            if self.maxidle is not None and now - last > self.maxidle:
                return None
            if self.maxlife is not None and now - first > self.maxlife:
                return None
            context.notes["cookieFirst"] = first
        return self._servers(backend).get(raw)

    def _value(self, server: Server, context: Context) -> bytes:
        value = server.cookie.encode("utf-8")
        if self._dated():
            now = self._now()
            first = context.notes.get("cookieFirst", now)
            value += b"|" + _encodeTime(now) + b"|" + _encodeTime(first)
        return value

    def _attributes(self) -> bytes:
        parts = [b"; path=" + self.path.encode("ascii")]
        if self.domain:
            parts.append(b"; domain=" + self.domain.encode("ascii"))
        if self.httponly:
            parts.append(b"; HttpOnly")
        if self.secure:
            parts.append(b"; Secure")
        return b"".join(parts)

    # -- IPersistence ----------------------------------------------------

    def recall(self, backend: Backend, context: Context) -> Optional[Server]:
        request = context.request
        if request is None:
            return None
        for header in request.headerValues(b"cookie"):
            for name, value in _parseCookieHeader(header):
                if name == self._name:
                    server = self._readValue(value, backend, context)
                    if server is not None:
                        context.notes["cookieServer"] = server
                        return server
        return None

    def remember(self, backend: Backend, server: Server, context: Context) -> None:
        """Nothing to store: the client carries the cookie."""

    def explainRecall(self, backend: Backend, context: Context) -> str:
        """What L{recall} is about to find for C{context}, in one phrase; changes nothing."""
        request = context.request
        if request is None:
            return "cookie: no request (tcp mode)"
        values = [v for h in request.headerValues(b"cookie") for n, v in _parseCookieHeader(h) if n == self._name]
        if not values:
            return f"cookie: no {self.name} cookie"
        scratch = Context(client=context.client, request=request)
        for value in values:
            server = self._readValue(value, backend, scratch)
            if server is not None:
                return f"cookie: {self.name}={value.decode('latin-1')} -> {server.name}"
        raw = values[0]
        named = raw.partition(b"~")[0] if self.mode == "prefix" else raw
        base = named.split(b"|")[0]
        if self._dated() and base in self._servers(backend):
            return f"cookie: {self.name} for {self._servers(backend)[base].name} expired (maxidle/maxlife)"
        return f"cookie: {self.name}={raw.decode('latin-1')} names no server (forged, or the server was removed)"

    def adopt(self, previous: object) -> bool:
        """A L{Cookie} of the same name and mode: the clients' cookies go on naming their servers."""
        return isinstance(previous, Cookie) and previous.name == self.name and previous.mode == self.mode

    # -- IHTTPPersistence ----------------------------------------------

    def rewriteRequest(self, backend: Backend, request: Any, context: Context) -> None:
        strip = self.mode == "insert" and self.indirect
        prefix = self.mode == "prefix"
        if not (strip or prefix):
            return
        values = request.headerValues(b"cookie")
        if not values:
            return
        kept: list[bytes] = []
        changed = False
        for header in values:
            for name, value in _parseCookieHeader(header):
                if name == self._name:
                    changed = True
                    if strip:
                        continue
                    server, sep, rest = value.partition(b"~")
                    kept.append(name + b"=" + (rest if sep else value))
                else:
                    kept.append(name + b"=" + value)
        if not changed:
            return
        request.removeHeader(b"cookie")
        if kept:
            request.addHeader(b"Cookie", b"; ".join(kept))

    def rewriteResponse(self, backend: Backend, server: Server, response: Any, context: Context) -> None:
        name = self._name
        setCookies = [
            i
            for i, (n, v) in enumerate(response.headers)
            if n.lower() == b"set-cookie" and v.split(b"=", 1)[0].strip() == name
        ]
        changed = False
        if self.mode == "insert":
            if setCookies and self.preserve:
                return
            if setCookies:
                response.headers = [h for i, h in enumerate(response.headers) if i not in setCookies]
            holds = context.notes.get("cookieServer") is server
            if holds and not self._dated():
                return
            response.headers.append(
                [b"Set-Cookie", name + b"=" + self._value(server, context) + self._attributes()]
            )
            changed = True
        elif self.mode == "rewrite":
            if not setCookies or self.preserve and self._isClearing(response.headers[setCookies[0]][1]):
                return
            for i in setCookies:
                header = response.headers[i]
                _, _, attrs = header[1].partition(b";")
                header[1] = name + b"=" + self._value(server, context) + (b";" + attrs if attrs else b"")
            changed = True
        else:  # prefix
            for i in setCookies:
                header = response.headers[i]
                pair, _, attrs = header[1].partition(b";")
                value = pair.split(b"=", 1)[1].strip() if b"=" in pair else b""
                if not value and self.preserve:
                    continue
                header[1] = name + b"=" + server.cookie.encode("utf-8") + b"~" + value + (b";" + attrs if attrs else b"")
                changed = True
        if changed and self.nocache:
            self._noCache(response)

    @staticmethod
    def _isClearing(value: bytes) -> bool:
        pair = value.split(b";", 1)[0]
        return pair.split(b"=", 1)[-1].strip() == b""

    @staticmethod
    def _noCache(response: Any) -> None:
        headers = []
        for header in response.headers:
            if header[0].lower() == b"cache-control":
                directives = [d.strip() for d in header[1].split(b",") if d.strip().lower() != b"public"]
                if b"private" not in [d.lower() for d in directives]:
                    directives.append(b"private")
                header = [header[0], b", ".join(directives)]
            headers.append(header)
        if not any(h[0].lower() == b"cache-control" for h in headers):
            headers.append([b"Cache-Control", b"private"])
        response.headers = headers
