# -*- test-case-name: tests.test_fromhaproxy -*-
"""
Reading an HAProxy configuration for L{lbkit.fromhaproxy}: its lines as
words, its sections, its times, and its ACL conditions as lbkit matcher
expressions (Python source text).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable

__all__: list[str] = []

#: Sections that hold proxies, and the others lbkit has no use for.
PROXY_SECTIONS = ("frontend", "backend", "listen", "defaults")
SECTIONS = (*PROXY_SECTIONS, "global", "peers", "resolvers", "userlist", "cache", "program",
            "http-errors", "ring", "mailers", "crt-store", "traces", "log-forward")


class Untranslatable(Exception):
    """A line (or part of one) lbkit cannot express; the message says why."""


@dataclass
class Line:
    number: int
    words: list[str]
    text: str


@dataclass
class Section:
    kind: str
    name: str
    line: Line
    lines: list[Line] = field(default_factory=list)


@dataclass
class Proxy:
    """One frontend, backend, listen or defaults section, read."""

    kind: str
    name: str
    line: Line
    mode: str = "tcp"
    timeouts: dict[str, float] = field(default_factory=dict)
    retries: int | None = None
    balance: str | None = None
    hashType: str | None = None
    forwardfor: bool = False
    logs: bool = False
    httpchk: tuple[str, str] | None = None
    expect: list[str] = field(default_factory=list)
    cookie: str | None = None
    stick: dict[str, str] = field(default_factory=dict)
    defaultServer: list[str] = field(default_factory=list)
    binds: list[tuple[Line, str, list[str]]] = field(default_factory=list)
    acls: dict[str, list[str]] = field(default_factory=dict)
    routes: list[tuple[Line, str, str]] = field(default_factory=list)
    defaultBackend: str | None = None
    requestRules: list[str] = field(default_factory=list)
    responseRules: list[str] = field(default_factory=list)
    servers: list[Line] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    cache: str | None = None  # the cache section its http-request cache-use names (docs/cache.md)

    def inherit(self, defaults: Proxy | None) -> None:
        if defaults is None:
            return
        for name in ("mode", "retries", "balance", "hashType", "forwardfor", "logs", "httpchk", "cookie"):
            setattr(self, name, getattr(defaults, name))
        self.timeouts = dict(defaults.timeouts)
        self.expect = list(defaults.expect)
        self.defaultServer = list(defaults.defaultServer)


def readSections(text: str, problem: Callable[[Line, str], None]) -> list[Section]:
    """
    Split a configuration into its sections; lines before the first
    section, or that cannot be split into words, are reported.
    """
    sections: list[Section] = []
    current: Section | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        line = Line(number, [], stripped)
        try:
            line.words = shlex.split(stripped, comments=True)
        except ValueError as e:
            problem(line, f"cannot split it into words ({e})")
            continue
        if not line.words:
            continue
        if line.words[0] in SECTIONS:
            name = line.words[1] if len(line.words) > 1 else ""
            current = Section(line.words[0], name, line)
            sections.append(current)
        elif current is None:
            problem(line, "outside any section")
        else:
            current.lines.append(line)
    return sections


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(word: str) -> float:
    """An HAProxy time (C{5s}, C{100ms}, C{1m}; a bare number is milliseconds) in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?", word)
    if match is None:
        raise Untranslatable(f"{word!r} is not a time")
    return float(match.group(1)) * _UNITS[match.group(2) or "ms"]


# -- ACLs --------------------------------------------------------------------

_FLAGS_WITH_ARG = {"-f", "-m", "-M", "-u"}


def _values(words: list[str]) -> tuple[bool, list[str]]:
    """Split ACL flags from values: C{(ignoreCase, values)}."""
    ignoreCase = False
    values: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if not values and word.startswith("-") and word not in ("-",):
            if word == "--":
                values.extend(words[i + 1:])
                break
            if word == "-i":
                ignoreCase = True
            elif word in _FLAGS_WITH_ARG:
                raise Untranslatable(f"the ACL flag {word} is not supported")
            elif word != "-n":
                raise Untranslatable(f"the ACL flag {word} is not supported")
            i += 1
            continue
        values.append(word)
        i += 1
    if not values:
        raise Untranslatable("an ACL without values")
    return ignoreCase, values


def _args(text: str) -> tuple[str, list[str]]:
    """C{hdr(host)} -> C{("hdr", ["host"])}."""
    match = re.fullmatch(r"([a-z_.0-9]+)(?:\(([^)]*)\))?", text)
    if match is None:
        raise Untranslatable(f"cannot read the fetch {text!r}")
    args = [a.strip() for a in match.group(2).split(",")] if match.group(2) else []
    return match.group(1), args


def _alternatives(values: list[str], ignoreCase: bool, begin: str, end: str, literal: bool = True) -> str:
    flags = "(?i)" if ignoreCase else ""
    parts = "|".join(re.escape(v) if literal else v for v in values)
    return f"{flags}{begin}(?:{parts}){end}"


_FETCHES = {"req_ssl_sni", "req.ssl_sni", "src", "method", "path_beg", "path_end", "path", "path_reg", "path_sub",
            "path_dir", "hdr", "req.hdr", "hdr_beg", "hdr_end", "hdr_reg", "hdr_sub", "hdr_dom", "hdr_cnt"}


def aclExpression(words: list[str], mode: str) -> str:
    """
    The lbkit matcher (Python source) for one ACL's criterion and values,
    e.g. C{["path_beg", "/img", "/css"]} -> C{http.pathBegins('/img', '/css')}.
    """
    if not words:
        raise Untranslatable("an empty ACL")
    fetch, args = _args(words[0])
    if fetch not in _FETCHES:
        raise Untranslatable(f"the ACL criterion {fetch} has no lbkit matcher")
    ignoreCase, values = _values(words[1:])
    quoted = ", ".join(repr(v) for v in values)
    if mode == "tcp":
        if fetch in ("req_ssl_sni", "req.ssl_sni"):
            return f"tcp.sniIs({quoted})" if ignoreCase or all(v == v.lower() for v in values) else \
                _unsupported(fetch, "case-sensitive SNI")
        if fetch == "src":
            raise Untranslatable("tcp mode routes on SNI only (req_ssl_sni); src is not supported there")
        raise Untranslatable(f"tcp mode cannot route on {fetch}")
    if fetch == "src":
        return f"http.sourceIn({quoted})"
    if fetch == "method":
        return f"http.methodIs({', '.join(repr(v.upper()) for v in values)})"
    if fetch in ("path_beg", "path_end", "path", "path_reg", "path_sub", "path_dir"):
        if fetch == "path_beg" and not ignoreCase:
            return f"http.pathBegins({quoted})"
        if fetch == "path_end" and not ignoreCase:
            return f"http.pathEnds({quoted})"
        if fetch == "path" and not ignoreCase:
            return f"http.pathIs({quoted})" if len(values) == 1 else \
                f"http.anyOf({', '.join(f'http.pathIs({v!r})' for v in values)})"
        pattern = {
            "path_beg": lambda: _alternatives(values, ignoreCase, "^", ""),
            "path_end": lambda: _alternatives(values, ignoreCase, "", "$"),
            "path": lambda: _alternatives(values, ignoreCase, "^", "$"),
            "path_reg": lambda: _alternatives(values, ignoreCase, "", "", literal=False),
            "path_sub": lambda: _alternatives(values, ignoreCase, "", ""),
            "path_dir": lambda: _alternatives(values, ignoreCase, "(?:^|/)", "(?:/|$)"),
        }[fetch]()
        return f"http.pathMatches({pattern!r})"
    if fetch in ("hdr", "req.hdr", "hdr_beg", "hdr_end", "hdr_reg", "hdr_sub", "hdr_dom", "hdr_cnt"):
        if not args or not args[0]:
            raise Untranslatable(f"{fetch} without a header name")
        if len(args) > 1 or fetch == "hdr_cnt":
            raise Untranslatable(f"{words[0]}: occurrence arguments are not supported")
        name = args[0].lower()
        if fetch in ("hdr", "req.hdr"):
            if name == "host" and ignoreCase:
                return f"http.hostIs({quoted})"
            if not ignoreCase:
                return f"http.headerIs({name!r}, {quoted})"
            return f"http.headerMatches({name!r}, {_alternatives(values, True, '^', '$')!r})"
        pattern = {
            "hdr_beg": lambda: _alternatives(values, ignoreCase, "^", ""),
            "hdr_end": lambda: _alternatives(values, ignoreCase, "", "$"),
            "hdr_reg": lambda: _alternatives(values, ignoreCase, "", "", literal=False),
            "hdr_sub": lambda: _alternatives(values, ignoreCase, "", ""),
            "hdr_dom": lambda: _alternatives(values, ignoreCase, r"(?:^|\.)", r"(?:\.|:|$)"),
        }[fetch]()
        return f"http.headerMatches({name!r}, {pattern!r})"
    raise Untranslatable(f"the ACL criterion {fetch} has no lbkit matcher")


def _unsupported(fetch: str, why: str) -> str:
    raise Untranslatable(f"{fetch}: {why} is not supported")


def condition(words: list[str], acls: dict[str, list[str]], mode: str) -> str:
    """
    The matcher for an HAProxy condition (the words after C{if} or
    C{unless}): ACL names and anonymous C{{ ... }} ACLs, joined by
    juxtaposition (and), C{||} or C{or} (or), each maybe negated by C{!}.
    """
    if not words or words[0] not in ("if", "unless"):
        raise Untranslatable("expected 'if' or 'unless'")
    terms: list[list[str]] = [[]]
    rest = words[1:]
    i = 0
    while i < len(rest):
        word = rest[i]
        if word in ("||", "or"):
            terms.append([])
            i += 1
            continue
        negate = False
        if word.startswith("!"):
            negate, word = True, word[1:]
            if not word:
                i += 1
                word = rest[i] if i < len(rest) else ""
        if word == "{":
            end = rest.index("}", i + 1) if "}" in rest[i + 1:] else -1
            if end < 0:
                raise Untranslatable("an anonymous ACL without its closing }")
            expression = aclExpression(rest[i + 1:end], mode)
            i = end + 1
        elif word.startswith("{"):
            raise Untranslatable("write anonymous ACLs with spaces inside the braces: { path_beg /x }")
        else:
            if word in ("TRUE", "FALSE", "HTTP", "LOCALHOST", "METH_GET", "METH_POST"):
                expression = _predefined(word, mode)
            elif word not in acls:
                raise Untranslatable(f"the ACL {word!r} is not defined (before this line)")
            else:
                defs = acls[word]
                expression = defs[0] if len(defs) == 1 else f"{_join('anyOf', defs, mode)}"
            i += 1
        terms[-1].append(f"{_ns(mode)}.notMatching({expression})" if negate else expression)
    if any(not t for t in terms):
        raise Untranslatable("an empty condition")
    ands = [t[0] if len(t) == 1 else _join("allOf", t, mode) for t in terms]
    result = ands[0] if len(ands) == 1 else _join("anyOf", ands, mode)
    if words[0] == "unless":
        result = f"{_ns(mode)}.notMatching({result})"
    return result


def _ns(mode: str) -> str:
    if mode == "tcp":
        raise Untranslatable("tcp mode routes take one SNI ACL, without and, or, ! or unless")
    return "http"


def _join(how: str, parts: list[str], mode: str) -> str:
    return f"{_ns(mode)}.{how}({', '.join(parts)})"


def _predefined(name: str, mode: str) -> str:
    if mode == "tcp":
        raise Untranslatable(f"the predefined ACL {name} is not supported in tcp mode")
    return {
        "TRUE": "http.pathBegins('')",
        "FALSE": "http.notMatching(http.pathBegins(''))",
        "HTTP": "http.pathBegins('')",
        "LOCALHOST": "http.sourceIn('127.0.0.1/8', '::1')",
        "METH_GET": "http.methodIs('GET', 'HEAD')",
        "METH_POST": "http.methodIs('POST')",
    }[name]


# -- http-request and http-response rules ------------------------------------


def _splitCondition(words: list[str]) -> tuple[list[str], list[str]]:
    for i, word in enumerate(words):
        if word in ("if", "unless"):
            return words[:i], words[i:]
    return words, []


def _noLogFormat(value: str) -> str:
    if "%[" in value or re.search(r"%[A-Za-z{]", value):
        raise Untranslatable("log-format values (%[...], %ci ...) are not supported; use a callable value")
    return value


def httpRule(kind: str, words: list[str], mode: str, acls: dict[str, list[str]], tarpit: float | None) -> str:
    """
    The lbkit rule (Python source) for one C{http-request} or
    C{http-response} line's words (after the keyword), with its condition
    as C{when=}.
    """
    if mode != "http":
        raise Untranslatable(f"{kind} rules need mode http")
    action, cond = _splitCondition(words)
    when = [f"when={condition(cond, acls, mode)}"] if cond else []
    verb, args = action[0], action[1:]
    if verb in ("set-header", "add-header") and len(args) == 2:
        name = {"set-header": "setHeader", "add-header": "addHeader"}[verb]
        return f"http.{name}({', '.join([repr(args[0]), repr(_noLogFormat(args[1])), *when])})"
    if verb == "del-header" and len(args) == 1:
        return f"http.deleteHeader({', '.join([repr(args[0]), *when])})"
    if kind == "http-response":
        raise Untranslatable(f"http-response {verb} is not supported (set-header, add-header, del-header are)")
    if verb == "deny":
        extra = _options(args, {"deny_status": int})
        return f"http.deny({', '.join([*when, *extra])})"
    if verb == "tarpit":
        extra = _options(args, {"deny_status": int})
        if extra:
            raise Untranslatable("tarpit deny_status is not supported")
        delay = [f"delay={tarpit!r}"] if tarpit is not None else []
        return f"http.tarpit({', '.join([*when, *delay])})"
    if verb == "redirect" and len(args) >= 2:
        how, target = args[0], args[1]
        extra = _options(args[2:], {"code": int})
        redirects = {"location": "redirect", "scheme": "redirectScheme", "prefix": "redirectPrefix"}
        if how not in redirects:
            raise Untranslatable(f"redirect {how} is not supported")
        return f"http.{redirects[how]}({', '.join([repr(_noLogFormat(target)), *when, *extra])})"
    if verb == "return":
        return _respond(args, when)
    if verb in ("set-path", "set-query") and len(args) == 1:
        name = {"set-path": "setPath", "set-query": "setQuery"}[verb]
        return f"http.{name}({', '.join([repr(_noLogFormat(args[0])), *when])})"
    if verb == "replace-path" and len(args) == 2:
        replacement = re.sub(r"\\(\d)", r"\\g<\1>", args[1])
        return f"http.replacePath({', '.join([repr(args[0]), repr(replacement), *when])})"
    raise Untranslatable(f"{kind} {verb} has no lbkit rule")


def _options(words: list[str], known: dict[str, type]) -> list[str]:
    if len(words) % 2:
        raise Untranslatable(f"cannot read the options {' '.join(words)!r}")
    out = []
    names = {"deny_status": "status", "code": "code"}
    for key, value in zip(words[::2], words[1::2], strict=False):
        if key not in known:
            raise Untranslatable(f"the option {key} is not supported")
        out.append(f"{names[key]}={known[key](value)!r}")
    return out


def _respond(words: list[str], when: list[str]) -> str:
    status, contentType, body = "200", None, None
    i = 0
    while i < len(words):
        key = words[i]
        value = words[i + 1] if i + 1 < len(words) else None
        if value is None:
            raise Untranslatable(f"return {key} without a value")
        if key == "status":
            status = value
        elif key == "content-type":
            contentType = value
        elif key == "string":
            body = value
        else:
            raise Untranslatable(f"return {key} is not supported (status, content-type and string are)")
        i += 2
    args = [str(int(status))]
    if body is not None:
        args.append(f"body={body.encode()!r}")
    if contentType is not None:
        args.append(f"contentType={contentType!r}")
    return f"http.respond({', '.join([*args, *when])})"
