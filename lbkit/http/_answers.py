# -*- test-case-name: tests.test_http_rules -*-
"""
Request rules that answer from the balancer, or change what routing sees,
before any server is chosen (L{lbkit.interfaces.IAnsweringRule}):
L{deny}, L{tarpit}, L{redirect}, L{redirectScheme}, L{redirectPrefix},
L{respond}, L{setPath}, L{replacePath}, L{setQuery}; what they answer
(L{Answer}); and a frontend's custom error pages (L{errorPage}).

No I/O here: the exchange writes an L{Answer} to its client
(L{lbkit.http._local}).
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from zope.interface import implementer

from lbkit.error import ConfigError
from lbkit.http._parse import Request, Response
from lbkit.interfaces import IAnsweringRule, IRequestMatcher

__all__ = [
    "AnsweringRule",
    "Tarpit",
    "Answer",
    "ErrorPage",
    "errorPage",
    "checkedErrorPages",
    "checkedWhen",
    "deny",
    "tarpit",
    "redirect",
    "redirectScheme",
    "redirectPrefix",
    "respond",
    "setPath",
    "replacePath",
    "setQuery",
]

_Text = Union[str, bytes]
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: What a header value, a Location or a content type may not hold.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: What a path or query set by a rule may not hold (the request line's separators).
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
#: Headers an answer's own framing sets: a rule may not add them.
_FRAMING = frozenset([b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade"])
#: The codes HAProxy's C{redirect} allows.
REDIRECT_CODES = frozenset([301, 302, 303, 307, 308])


def _b(value: _Text, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise ConfigError(f"{what} must be str or bytes, not {value!r}")


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


def checkedWhen(when: Any, what: str) -> Optional[IRequestMatcher]:
    """C{when}, checked to be C{None} or an L{IRequestMatcher} (else L{ConfigError})."""
    if when is not None and not IRequestMatcher.providedBy(when):
        raise ConfigError(f"{what}: when= must be a matcher (lbkit.http.pathBegins and friends), not {when!r}")
    return when


class Answer:
    """
    What the balancer answers a request with, in place of a server: what
    an L{lbkit.interfaces.IAnsweringRule} returns.

    @ivar status: The status code.
    @ivar reason: Its reason phrase (bytes).
    @ivar headers: C{(name, value)} pairs of bytes, besides C{Content-Length}
        (lbkit's) and C{Content-Type}.
    @ivar body: The body (not sent to a C{HEAD} request).
    @ivar contentType: The C{Content-Type} of a non-empty body.
    @ivar errorPage: The body is the frontend's error page for C{status}
        (L{errorPage}) or lbkit's own message, not C{body}.
    @ivar close: Close the client connection after it (an HTTP/2 stream
        only ends).  An answer given before a request body was read always
        closes.
    @ivar termination: The access log's termination code: C{LR} (answered
        locally), C{PR} (denied), C{PT} (tarpit).
    @ivar delay: Seconds to hold the connection before answering (tarpit).
    @ivar done: Called once when a delayed answer is sent or its client left.
    """

    __slots__ = ("status", "reason", "headers", "body", "contentType", "errorPage", "close", "termination", "delay", "done")

    def __init__(
        self,
        status: int,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes = b"",
        contentType: bytes = b"text/plain; charset=utf-8",
        *,
        errorPage: bool = False,
        close: bool = False,
        termination: str = "LR",
        delay: float = 0.0,
        done: Optional[Callable[[], None]] = None,
    ) -> None:
        self.status = status
        self.reason = _reason(status)
        self.headers = tuple(headers)
        self.body = body
        self.contentType = contentType
        self.errorPage = errorPage
        self.close = close
        self.termination = termination
        self.delay = delay
        self.done = done

    def __repr__(self) -> str:
        return f"<Answer {self.status} {self.termination}>"

    def response(self, body: bytes, contentType: bytes) -> Response:
        """The response head that carries C{body} (of type C{contentType})."""
        headers = [[b"Content-Length", b"%d" % len(body)]]
        if body:
            headers.append([b"Content-Type", contentType])
        headers += [[n, v] for n, v in self.headers]
        return Response(b"HTTP/1.1", self.status, self.reason, headers)


class ErrorPage:
    """
    A frontend's body for one of the statuses lbkit answers itself
    (HAProxy's C{errorfile}); made by L{errorPage}.

    @ivar body: The body (bytes).
    @ivar contentType: Its C{Content-Type} (bytes).
    """

    __slots__ = ("body", "contentType")

    def __init__(self, body: bytes, contentType: bytes) -> None:
        self.body = body
        self.contentType = contentType

    def __repr__(self) -> str:
        return f"<ErrorPage {self.contentType!r} {len(self.body)} bytes>"


def errorPage(source: Union[bytes, str], contentType: _Text = "text/html; charset=utf-8") -> ErrorPage:
    """
    A custom error page: C{source} is the body (bytes), or the path of a
    file holding it (str), read now.  For C{Frontend(errorPages=...)}.
    """
    if isinstance(source, str):
        try:
            with open(source, "rb") as f:
                body = f.read()
        except OSError as e:
            raise ConfigError(f"errorPage: cannot read {source!r}: {e.strerror}") from None
    elif isinstance(source, bytes):
        body = source
    else:
        raise ConfigError(f"errorPage: source must be bytes (the body) or str (a file path), not {source!r}")
    ctype = _b(contentType, "errorPage: contentType")
    if _BAD_VALUE.search(ctype) or not ctype:
        raise ConfigError(f"errorPage: contentType {ctype!r} is not a header value")
    return ErrorPage(body, ctype)


def checkedErrorPages(pages: Optional[Mapping[Any, Any]], where: str) -> dict[int, ErrorPage]:
    """
    C{errorPages} of a frontend, checked: statuses 400 to 599, each page
    bytes (an HTML body) or an L{ErrorPage}.
    """
    if pages is None:
        return {}
    if not isinstance(pages, Mapping):
        raise ConfigError(f"{where}: errorPages must be a dict of status -> page, not {pages!r}")
    checked: dict[int, ErrorPage] = {}
    for status, page in pages.items():
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
            raise ConfigError(f"{where}: errorPages: {status!r} is not an error status (400 to 599)")
        if isinstance(page, bytes):
            page = errorPage(page)
        if not isinstance(page, ErrorPage):
            raise ConfigError(
                f"{where}: errorPages[{status}] must be bytes or http.errorPage(...), not {page!r}"
            )
        checked[status] = page
    return checked


@implementer(IAnsweringRule)
class AnsweringRule:
    """
    Base of the built-in answering rules: a C{when=} matcher, and nothing
    to do as an L{lbkit.interfaces.IRequestRule}.
    """

    name = "rule"
    when: Optional[IRequestMatcher] = None

    def __repr__(self) -> str:
        return f"<{self.name}{'' if self.when is None else f' when {self.when!r}'}>"

    def answerRequest(self, request: Request, exchange: Any) -> Optional[Answer]:
        """Answer (or change) C{request} if C{when} matches it."""
        when = self.when
        if when is None or when.matches(request, exchange.context):
            return self.apply(request, exchange)
        return None

    def apply(self, request: Request, exchange: Any) -> Optional[Answer]:
        raise NotImplementedError

    def applyToRequest(self, request: Request, exchange: Any) -> None:
        """Nothing: it acted before the request was routed."""

    def applyToResponse(self, response: Response, exchange: Any) -> None:
        """Nothing."""


class _Fixed(AnsweringRule):
    """An answer that is the same for every request (deny, respond)."""

    def __init__(self, name: str, answer: Answer, when: Any) -> None:
        self.name = name
        self.answer = answer
        self.when = checkedWhen(when, name)

    def apply(self, request: Request, exchange: Any) -> Optional[Answer]:
        return self.answer


def _errorStatus(status: Any, what: str) -> int:
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        raise ConfigError(f"{what}: status must be an error status (400 to 599), not {status!r}")
    return status


def deny(when: Any = None, status: int = 403) -> AnsweringRule:
    """
    Answer C{status} (the frontend's error page, if it has one) and close
    (HAProxy's C{http-request deny}); logged with termination C{PR}.
    """
    status = _errorStatus(status, "deny")
    return _Fixed(f"deny({status})", Answer(status, [(b"Cache-Control", b"no-cache")], errorPage=True,
                                            close=True, termination="PR"), when)


class Tarpit(AnsweringRule):
    """
    Hold the connection C{delay} seconds, then answer 500 and close
    (HAProxy's C{http-request tarpit}); logged with termination C{PT}.

    @ivar limit: How many connections it holds at most; beyond, the 500
        goes at once.
    @ivar held: How many it holds now.
    @ivar overflowed: How many it answered at once for being over C{limit}.
    """

    name = "tarpit"

    def __init__(self, when: Any, delay: float, limit: int) -> None:
        try:
            self.delay = float(delay)
        except (TypeError, ValueError):
            self.delay = -1.0
        if not self.delay >= 0:
            raise ConfigError(f"tarpit: delay must be a number of seconds, not {delay!r}")
        if not isinstance(limit, int) or limit < 0:
            raise ConfigError(f"tarpit: limit must be a number of connections, not {limit!r}")
        self.limit = limit
        self.when = checkedWhen(when, "tarpit")
        self.held = 0
        self.overflowed = 0
        self._now = Answer(500, [(b"Cache-Control", b"no-cache")], errorPage=True, close=True, termination="PT")

    def apply(self, request: Request, exchange: Any) -> Optional[Answer]:
        if self.held >= self.limit or self.delay == 0:
            if self.delay:
                self.overflowed += 1
            return self._now
        self.held += 1
        return Answer(500, [(b"Cache-Control", b"no-cache")], errorPage=True, close=True, termination="PT",
                      delay=self.delay, done=self._release)

    def _release(self) -> None:
        self.held -= 1


def tarpit(when: Any = None, delay: float = 5.0, limit: int = 1000) -> Tarpit:
    """
    Hold the connection C{delay} seconds, then answer 500 and close; at
    most C{limit} at a time (beyond, at once).  See L{Tarpit}.
    """
    return Tarpit(when, delay, limit)


def _redirectCode(code: Any, what: str) -> int:
    if code not in REDIRECT_CODES or isinstance(code, bool):
        raise ConfigError(f"{what}: code must be one of 301, 302, 303, 307, 308, not {code!r}")
    return int(code)


def _location(value: _Text, what: str) -> bytes:
    location = _b(value, what)
    if _BAD_VALUE.search(location):
        raise ConfigError(f"{what}: {location!r} may not hold control characters")
    return location


class _Redirect(AnsweringRule):
    """A redirect whose Location is C{base} plus, but for C{"location"}, the request's target."""

    def __init__(self, kind: str, base: bytes, code: int, when: Any, dropQuery: bool) -> None:
        self.name = f"redirect{kind.capitalize() if kind != 'location' else ''}({base!r}, {code})"
        self.kind = kind
        self.base = base
        self.code = code
        self.dropQuery = bool(dropQuery)
        self.when = checkedWhen(when, self.name)
        self._fixed = Answer(code, [(b"Location", base), (b"Cache-Control", b"no-cache")])

    def apply(self, request: Request, exchange: Any) -> Optional[Answer]:
        kind = self.kind
        if kind == "location":
            return self._fixed
        path = request.path
        target = path if self.dropQuery or not request.query else b"%s?%s" % (path, request.query)
        if kind == "prefix":
            # HAProxy: a prefix of exactly "/" adds nothing before the target
            location = target if self.base == b"/" else self.base + target
        else:
            if not path or path == b"*":
                target = b"/" + target[len(path):]
            location = b"%s://%s%s" % (self.base, request.header(b"host") or b"", target)
        return Answer(self.code, [(b"Location", location), (b"Cache-Control", b"no-cache")])


def redirect(location: _Text, when: Any = None, code: int = 302) -> AnsweringRule:
    """Answer C{code} with C{Location: location}, exactly (HAProxy's C{redirect location})."""
    code = _redirectCode(code, "redirect")
    return _Redirect("location", _location(location, "redirect"), code, when, False)


def redirectScheme(scheme: _Text = "https", when: Any = None, code: int = 301, dropQuery: bool = False) -> AnsweringRule:
    """
    Answer C{code} with C{Location: scheme://host/path?query}, the Host
    header and target of the request (HAProxy's C{redirect scheme}).
    """
    code = _redirectCode(code, "redirectScheme")
    name = _b(scheme, "redirectScheme")
    if not re.match(rb"^[A-Za-z][A-Za-z0-9+.\-]*\Z", name):
        raise ConfigError(f"redirectScheme: {name!r} is not a URI scheme")
    return _Redirect("scheme", name, code, when, dropQuery)


def redirectPrefix(prefix: _Text, when: Any = None, code: int = 302, dropQuery: bool = False) -> AnsweringRule:
    """
    Answer C{code} with C{Location: prefix/path?query}, the request's target
    after C{prefix} (HAProxy's C{redirect prefix}; a prefix of C{"/"} adds
    nothing).
    """
    code = _redirectCode(code, "redirectPrefix")
    return _Redirect("prefix", _location(prefix, "redirectPrefix"), code, when, dropQuery)


def respond(
    status: int,
    body: _Text = b"",
    contentType: _Text = "text/plain; charset=utf-8",
    headers: Sequence[tuple[_Text, _Text]] = (),
    when: Any = None,
) -> AnsweringRule:
    """
    Answer C{status} with C{body} and C{headers}, keeping the connection
    (HAProxy's C{http-request return}); logged with termination C{LR}.
    """
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise ConfigError(f"respond: status must be 200 to 599, not {status!r}")
    data = _b(body, "respond: body")
    if data and status in (204, 304):
        raise ConfigError(f"respond: a {status} answer has no body")
    pairs = []
    for pair in headers:
        try:
            name, value = pair
        except (TypeError, ValueError):
            raise ConfigError(f"respond: headers must be (name, value) pairs, not {pair!r}") from None
        n, v = _b(name, "respond: a header name"), _b(value, "respond: a header value")
        if not _TOKEN.match(n) or n.lower() in _FRAMING or n.lower() == b"content-type":
            raise ConfigError(f"respond: {n!r} is not a header name a rule may set")
        if _BAD_VALUE.search(v):
            raise ConfigError(f"respond: the value of {n!r} may not hold CR, LF or control characters")
        pairs.append((n, v))
    ctype = _location(contentType, "respond: contentType")
    return _Fixed(f"respond({status})", Answer(status, pairs, data, ctype), when)


def _target(value: _Text, what: str) -> bytes:
    data = _b(value, what)
    if _BAD_TARGET.search(data) or b"?" in data or b"#" in data:
        raise ConfigError(f"{what}: {data!r} may not hold spaces, control characters, '?' or '#'")
    return data


def _setTarget(request: Request, path: bytes, query: bytes) -> None:
    request.path = path
    request.query = query
    request.uri = b"%s?%s" % (path, query) if query else path


class _SetPath(AnsweringRule):
    def __init__(self, path: bytes, when: Any) -> None:
        self.name = f"setPath({path!r})"
        self.path = path
        self.when = checkedWhen(when, "setPath")

    def apply(self, request: Request, exchange: Any) -> Optional[Answer]:
        _setTarget(request, self.path, request.query)
        return None


class _ReplacePath(AnsweringRule):
    def __init__(self, pattern: bytes, replacement: bytes, when: Any) -> None:
        self.name = f"replacePath({pattern!r}, {replacement!r})"
        try:
            self.pattern = re.compile(pattern)
            self.pattern.sub(replacement, b"")  # a bad group reference fails now
        except re.error as e:
            raise ConfigError(f"replacePath: {e}") from None
        self.replacement = replacement
        self.when = checkedWhen(when, "replacePath")

    def apply(self, request: Request, exchange: Any) -> Optional[Answer]:
        path = self.pattern.sub(self.replacement, request.path, count=1)
        if path != request.path and not _BAD_TARGET.search(path) and b"?" not in path:
            _setTarget(request, path, request.query)
        return None


class _SetQuery(AnsweringRule):
    def __init__(self, query: bytes, when: Any) -> None:
        self.name = f"setQuery({query!r})"
        self.query = query
        self.when = checkedWhen(when, "setQuery")

    def apply(self, request: Request, exchange: Any) -> Optional[Answer]:
        _setTarget(request, request.path, self.query)
        return None


def setPath(path: _Text, when: Any = None) -> AnsweringRule:
    """Replace the request's path, keeping its query (HAProxy's C{http-request set-path})."""
    data = _target(path, "setPath")
    if not data.startswith(b"/"):
        raise ConfigError(f"setPath: {data!r} must start with '/'")
    return _SetPath(data, when)


def replacePath(pattern: _Text, replacement: _Text, when: Any = None) -> AnsweringRule:
    """
    Replace the first match of the regular expression C{pattern} in the
    path by C{replacement} (C{\\1} for a group; HAProxy's C{replace-path}).
    """
    return _ReplacePath(_b(pattern, "replacePath: pattern"), _b(replacement, "replacePath: replacement"), when)


def setQuery(query: _Text, when: Any = None) -> AnsweringRule:
    """Replace the request's query (without C{?}; empty removes it; HAProxy's C{set-query})."""
    data = _b(query, "setQuery")
    if _BAD_TARGET.search(data) or b"#" in data:
        raise ConfigError(f"setQuery: {data!r} may not hold spaces, control characters or '#'")
    return _SetQuery(data[1:] if data.startswith(b"?") else data, when)
