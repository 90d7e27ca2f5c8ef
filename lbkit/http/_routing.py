# -*- test-case-name: tests.test_http_routing -*-
"""
Routes and request matchers (HAProxy's ACLs): pick a backend per request.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Optional, Sequence, Union

from zope.interface import implementer

from lbkit._backend import Backend
from lbkit._model import Context
from lbkit._origin import definedAt
from lbkit.error import ConfigError
from lbkit.http._cachestore import Cache
from lbkit.http._compression import Compression, routeCompression
from lbkit.http._parse import Request
from lbkit.interfaces import IAnsweringRule, IRequestMatcher, IRequestRule

__all__ = [
    "Route",
    "checkedRules",
    "pathBegins",
    "pathIs",
    "pathEnds",
    "pathMatches",
    "hostIs",
    "hostMatches",
    "headerExists",
    "headerIs",
    "headerMatches",
    "methodIs",
    "sourceIn",
    "allOf",
    "anyOf",
    "notMatching",
]

_Text = Union[str, bytes]


def checkedRules(rules: Sequence[Any], where: str) -> list[Any]:
    """C{rules} as a list, each checked to provide L{IRequestRule} (else L{ConfigError})."""
    for rule in rules:
        if not IRequestRule.providedBy(rule):
            raise ConfigError(f"{where}: request rule {rule!r} does not provide IRequestRule")
    return list(rules)


def _b(value: _Text) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


class Route:
    """
    Send requests that C{matcher} accepts to C{backend}.

    @ivar matcher: An L{IRequestMatcher}.
    @ivar backend: The L{Backend}.
    @ivar requestRules: Request rules (L{lbkit.http.setHeader},
        L{lbkit.http.deny} and friends) for the requests this route takes,
        after the frontend's.
    @ivar answeringRules: Those of C{requestRules} that may answer
        (L{lbkit.interfaces.IAnsweringRule}), as given when it was built.
    @ivar responseRules: Header rules for their responses, before the
        frontend's.
    @ivar allowConnect: HTTP/1.1 C{CONNECT} requests this route takes go
        to its backend, and a server's 2xx opens a tunnel; without it (the
        default) lbkit answers them C{405} (docs/http.md, "CONNECT").
    @ivar compression: The L{lbkit.http.Compression} of its responses,
        C{None} for the frontend's, C{False} for none (docs/http.md).
    @ivar cache: The L{lbkit.http.Cache} for the requests it takes (in
        place of the frontend's), or C{None}; see docs/cache.md.
    """

    def __init__(
        self,
        matcher: IRequestMatcher,
        backend: Backend,
        *,
        requestRules: Sequence[Any] = (),
        responseRules: Sequence[Any] = (),
        allowConnect: bool = False,
        compression: Optional[Union[Compression, bool]] = None,
        cache: Optional[Cache] = None,
    ) -> None:
        self.definedAt = definedAt()
        if not IRequestMatcher.providedBy(matcher):
            raise ConfigError(f"Route: {matcher!r} does not provide IRequestMatcher")
        if not isinstance(backend, Backend):
            raise ConfigError(f"Route: backend must be an lbkit.Backend, not {backend!r}")
        if cache is not None and not isinstance(cache, Cache):
            raise ConfigError(f"Route: cache must be an http.Cache, not {cache!r}")
        self.matcher = matcher
        self.backend = backend
        self.cache = cache
        self.requestRules = checkedRules(requestRules, "Route")
        self.responseRules = list(responseRules)
        self.answeringRules = tuple(r for r in self.requestRules if IAnsweringRule.providedBy(r))
        if not isinstance(allowConnect, bool):
            filename, line = self.definedAt
            raise ConfigError(f"{filename}:{line}: Route: allowConnect must be True or False, not {allowConnect!r}")
        self.allowConnect = allowConnect
        self.compression: Optional[Union[Compression, bool]] = routeCompression(compression)

    def __repr__(self) -> str:
        return f"<Route {self.matcher!r} -> {self.backend.name}>"


@implementer(IRequestMatcher)
class _Matcher:
    """Base of the built-in matchers: a description and a test."""

    description = ""
    #: Whether it reads only the client's address (usable in tcp mode).
    clientOnly = False

    def matches(self, request: Request, context: Context) -> bool:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.description


class _PathBegins(_Matcher):
    def __init__(self, prefixes: Sequence[_Text]) -> None:
        self.prefixes = tuple(_b(p) for p in prefixes)
        self.description = f"pathBegins{self.prefixes!r}"

    def matches(self, request: Request, context: Context) -> bool:
        return request.path.startswith(self.prefixes)


class _PathIs(_Matcher):
    def __init__(self, paths: Sequence[_Text]) -> None:
        self.paths = frozenset(_b(p) for p in paths)
        self.description = f"pathIs{tuple(self.paths)!r}"

    def matches(self, request: Request, context: Context) -> bool:
        return request.path in self.paths


class _PathEnds(_Matcher):
    def __init__(self, suffixes: Sequence[_Text]) -> None:
        self.suffixes = tuple(_b(p) for p in suffixes)
        self.description = f"pathEnds{self.suffixes!r}"

    def matches(self, request: Request, context: Context) -> bool:
        return request.path.endswith(self.suffixes)


class _PathMatches(_Matcher):
    def __init__(self, pattern: _Text) -> None:
        self.pattern = re.compile(_b(pattern))
        self.description = f"pathMatches({self.pattern.pattern!r})"

    def matches(self, request: Request, context: Context) -> bool:
        return self.pattern.search(request.path) is not None


class _HostIs(_Matcher):
    def __init__(self, hosts: Sequence[_Text]) -> None:
        self.hosts = frozenset(_b(h).lower() for h in hosts)
        self.description = f"hostIs{tuple(self.hosts)!r}"

    def matches(self, request: Request, context: Context) -> bool:
        return request.host in self.hosts


class _HostMatches(_Matcher):
    def __init__(self, pattern: _Text) -> None:
        self.pattern = re.compile(_b(pattern), re.IGNORECASE)
        self.description = f"hostMatches({self.pattern.pattern!r})"

    def matches(self, request: Request, context: Context) -> bool:
        host = request.host
        return host is not None and self.pattern.search(host) is not None


class _HeaderExists(_Matcher):
    def __init__(self, name: _Text) -> None:
        self.name = _b(name)
        self.description = f"headerExists({self.name!r})"

    def matches(self, request: Request, context: Context) -> bool:
        return request.header(self.name) is not None


class _HeaderIs(_Matcher):
    def __init__(self, name: _Text, values: Sequence[_Text]) -> None:
        self.name = _b(name)
        self.values = frozenset(_b(v) for v in values)
        self.description = f"headerIs({self.name!r}, {tuple(self.values)!r})"

    def matches(self, request: Request, context: Context) -> bool:
        return any(v in self.values for v in request.headerValues(self.name))


class _HeaderMatches(_Matcher):
    def __init__(self, name: _Text, pattern: _Text) -> None:
        self.name = _b(name)
        self.pattern = re.compile(_b(pattern))
        self.description = f"headerMatches({self.name!r}, {self.pattern.pattern!r})"

    def matches(self, request: Request, context: Context) -> bool:
        return any(self.pattern.search(v) for v in request.headerValues(self.name))


class _MethodIs(_Matcher):
    def __init__(self, methods: Sequence[_Text]) -> None:
        self.methods = frozenset(_b(m).upper() for m in methods)
        self.description = f"methodIs{tuple(self.methods)!r}"

    def matches(self, request: Request, context: Context) -> bool:
        return request.method in self.methods


class _SourceIn(_Matcher):
    clientOnly = True

    def __init__(self, networks: Sequence[str]) -> None:
        try:
            self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        except ValueError as e:
            raise ConfigError(f"sourceIn: {e}") from None
        self.description = f"sourceIn{tuple(str(n) for n in self.networks)!r}"

    def matches(self, request: Request, context: Context) -> bool:
        host = getattr(context.client, "host", None)
        if host is None:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in n for n in self.networks)


class _AllOf(_Matcher):
    def __init__(self, matchers: Sequence[IRequestMatcher]) -> None:
        self.matchers = _checked(matchers)
        self.clientOnly = all(getattr(m, "clientOnly", False) for m in self.matchers)
        self.description = f"allOf{tuple(self.matchers)!r}"

    def matches(self, request: Request, context: Context) -> bool:
        return all(m.matches(request, context) for m in self.matchers)


class _AnyOf(_Matcher):
    def __init__(self, matchers: Sequence[IRequestMatcher]) -> None:
        self.matchers = _checked(matchers)
        self.clientOnly = all(getattr(m, "clientOnly", False) for m in self.matchers)
        self.description = f"anyOf{tuple(self.matchers)!r}"

    def matches(self, request: Request, context: Context) -> bool:
        return any(m.matches(request, context) for m in self.matchers)


class _Not(_Matcher):
    def __init__(self, matcher: IRequestMatcher) -> None:
        self.matcher = _checked([matcher])[0]
        self.clientOnly = bool(getattr(self.matcher, "clientOnly", False))
        self.description = f"notMatching({self.matcher!r})"

    def matches(self, request: Request, context: Context) -> bool:
        return not self.matcher.matches(request, context)


def _checked(matchers: Sequence[Any]) -> list[IRequestMatcher]:
    for m in matchers:
        if not IRequestMatcher.providedBy(m):
            raise ConfigError(f"{m!r} does not provide IRequestMatcher")
    return list(matchers)


def pathBegins(*prefixes: _Text) -> IRequestMatcher:
    """The path starts with one of C{prefixes} (HAProxy's C{path_beg})."""
    return _PathBegins(prefixes)


def pathIs(*paths: _Text) -> IRequestMatcher:
    """The path is exactly one of C{paths} (HAProxy's C{path})."""
    return _PathIs(paths)


def pathEnds(*suffixes: _Text) -> IRequestMatcher:
    """The path ends with one of C{suffixes} (HAProxy's C{path_end})."""
    return _PathEnds(suffixes)


def pathMatches(pattern: _Text) -> IRequestMatcher:
    """The regular expression C{pattern} is found in the path (C{path_reg})."""
    return _PathMatches(pattern)


def hostIs(*hosts: _Text) -> IRequestMatcher:
    """The Host header, without port, is one of C{hosts} (case-insensitive)."""
    return _HostIs(hosts)


def hostMatches(pattern: _Text) -> IRequestMatcher:
    """The regular expression C{pattern} is found in the Host (no port)."""
    return _HostMatches(pattern)


def headerExists(name: _Text) -> IRequestMatcher:
    """The request has a header C{name}."""
    return _HeaderExists(name)


def headerIs(name: _Text, *values: _Text) -> IRequestMatcher:
    """A header C{name} has exactly one of C{values}."""
    return _HeaderIs(name, values)


def headerMatches(name: _Text, pattern: _Text) -> IRequestMatcher:
    """The regular expression C{pattern} is found in a header C{name}."""
    return _HeaderMatches(name, pattern)


def methodIs(*methods: _Text) -> IRequestMatcher:
    """The method is one of C{methods}."""
    return _MethodIs(methods)


def sourceIn(*networks: str) -> IRequestMatcher:
    """The client address is in one of the CIDR C{networks} (C{src})."""
    return _SourceIn(networks)


def allOf(*matchers: IRequestMatcher) -> IRequestMatcher:
    """Every one of C{matchers} matches (and)."""
    return _AllOf(matchers)


def anyOf(*matchers: IRequestMatcher) -> IRequestMatcher:
    """At least one of C{matchers} matches (or)."""
    return _AnyOf(matchers)


def notMatching(matcher: IRequestMatcher) -> IRequestMatcher:
    """C{matcher} does not match (not)."""
    return _Not(matcher)
