# -*- test-case-name: tests.test_fromhaproxy -*-
"""
Translate an HAProxy configuration into an lbkit site file::

    python -m lbkit.fromhaproxy haproxy.cfg > site.py

What lbkit can express becomes a readable site file on standard output;
every line it cannot translate is reported on standard error with its line
number and why (and listed at the top of the site file).  The exit status
is 0, or 1 with C{--strict} when any line was not translated, 2 when the
file cannot be read.  docs/fromhaproxy.md lists what is translated.
"""

from __future__ import annotations

import argparse
import os
import sys

from lbkit._haproxycfg import (
    Line,
    Proxy,
    Section,
    Untranslatable,
    aclExpression,
    condition,
    httpRule,
    readSections,
    seconds,
)
from lbkit._haproxyemit import emitSite

__all__ = ["translate", "main"]

#: Lines accepted without a word: lbkit does the same by default.
_SAME = {
    ("log", "global"), ("option", "httplog"), ("option", "tcplog"), ("option", "dontlognull"),
    ("option", "http-keep-alive"), ("option", "redispatch"), ("option", "splice-auto"),
    ("http-reuse", "safe"), ("http-reuse", "always"), ("http-reuse", "aggressive"),
    ("option", "abortonclose"), ("option", "log-health-checks"), ("stats", "timeout"),
}
_TWISTD = {
    "daemon": "run twistd without -n", "user": "use twistd --uid", "uid": "use twistd --uid",
    "group": "use twistd --gid", "gid": "use twistd --gid", "chroot": "use twistd --chroot",
    "pidfile": "use twistd --pidfile", "nbthread": "use twistd lbkit --workers N",
    "nbproc": "use twistd lbkit --workers N",
}
_CHECK_KEYS = {"inter": "interval", "fastinter": "fastinter", "downinter": "downinter"}


class Translation:
    """
    The translation of one configuration: L{run} returns the site file's
    source; L{problems} has C{(line number, line, why)} for each line (or
    part of one) left out.
    """

    def __init__(self, text: str, filename: str = "haproxy.cfg") -> None:
        self.text = text
        self.filename = filename
        self.problems: list[tuple[int, str, str]] = []
        self.imports: set[str] = set()
        self.globalLog: str | None = None
        self.statsSocket: str | None = None
        self.statsSocketLine: Line | None = None
        self.crtBase = ""
        self.workers: int | None = None
        #: A backend section's own http-request and http-response rules, by name.
        self.backendRules: dict[str, tuple[list[str], list[str]]] = {}
        #: Cache sections, by name: the C{http.Cache(...)} each becomes.
        self.caches: dict[str, str] = {}

    def problem(self, line: Line, why: str) -> None:
        self.problems.append((line.number, line.text, why))

    # -- reading ------------------------------------------------------------

    def run(self) -> str:
        defaults: Proxy | None = None
        proxies: list[Proxy] = []
        for section in readSections(self.text, self.problem):
            if section.kind == "global":
                self._global(section)
            elif section.kind == "cache":
                self._cache(section)
            elif section.kind in ("frontend", "backend", "listen", "defaults"):
                proxy = Proxy(section.kind, section.name, section.line)
                proxy.inherit(defaults)
                for line in section.lines:
                    try:
                        self._proxyLine(proxy, line)
                    except Untranslatable as e:
                        self.problem(line, str(e))
                if section.kind == "defaults":
                    defaults = proxy
                else:
                    proxies.append(proxy)
            else:
                self.problem(section.line, f"lbkit has no {section.kind} section; its lines are left out")
        return self._emit(proxies)

    def _global(self, section: Section) -> None:
        for line in section.lines:
            word = line.words[0]
            if word in _TWISTD:
                if word in ("nbthread", "nbproc") and line.words[1:] == ["1"]:
                    continue  # one process: what twistd lbkit runs
                if word == "nbthread" and len(line.words) > 1 and line.words[1].isdigit():
                    self.workers = int(line.words[1])
                self.problem(line, f"a process setting: {_TWISTD[word]}")
            elif word == "log" and len(line.words) >= 2 and self.globalLog is None:
                self.globalLog = self._syslog(line)
            elif word == "stats" and line.words[1:2] == ["socket"] and len(line.words) > 2:
                self.statsSocket = line.words[2]
                self.statsSocketLine = line
                if len(line.words) > 3:
                    self.problem(line, "the command socket's access is its file mode (stats.Page(socketMode=...))")
            elif word == "crt-base" and len(line.words) > 1:
                self.crtBase = line.words[1]
            elif (word, line.words[1] if len(line.words) > 1 else "") in _SAME:
                continue
            else:
                self.problem(line, "no lbkit equivalent for this global setting")

    def _cache(self, section: Section) -> None:
        """A C{cache} section: an C{http.Cache} (docs/cache.md); C{max-age} becomes C{defaultTTL}."""
        settings = {"total-max-size": "1", "max-age": "60"}
        for line in section.lines:
            words = line.words
            if len(words) == 2 and words[0] in ("total-max-size", "max-object-size", "max-age") and words[1].isdigit():
                settings[words[0]] = words[1]
            elif words[:1] == ["process-vary"]:
                continue  # lbkit always honours Vary
            else:
                self.problem(line, "no lbkit equivalent for this cache setting")
        maxBytes = int(settings["total-max-size"]) * 2**20
        maxObject = int(settings.get("max-object-size", maxBytes // 256))
        self.caches[section.name] = (f"http.Cache(maxBytes={maxBytes}, maxObjectBytes={min(maxObject, maxBytes)}, "
                                     f"defaultTTL={settings['max-age']}, name={section.name!r})")

    def _cacheRule(self, proxy: Proxy, words: list[str]) -> None:
        if len(words) != 2:
            raise Untranslatable("a cache used under a condition: give the routes that need it a cache of their own")
        if words[1] not in self.caches:
            raise Untranslatable(f"no cache section {words[1]!r}")
        if proxy.kind == "backend" or proxy.mode != "http":
            raise Untranslatable("lbkit's cache is on an http frontend or a route (cache=...), not a backend")
        proxy.cache = words[1]

    def _syslog(self, line: Line) -> str | None:
        target = line.words[1]
        facility = line.words[2] if len(line.words) > 2 else "local0"
        self.imports.add("from lbkit.logs import AccessLog")
        if target in ("stdout", "stderr"):
            if target == "stderr":
                self.problem(line, "lbkit writes access-log lines to standard output ('-'), not to stderr")
            return 'AccessLog("-")'
        if target.startswith("/"):
            return f"AccessLog(syslog={target!r}, facility={facility!r})"
        target = target.removeprefix("udp@").removeprefix("udp4@")
        host, _, port = target.rpartition(":") if ":" in target else (target, "", "514")
        if not port.isdigit():
            self.problem(line, f"cannot read the syslog address {line.words[1]!r}")
            return None
        return f"AccessLog(syslog=({host!r}, {int(port)}), facility={facility!r})"

    def _proxyLine(self, proxy: Proxy, line: Line) -> None:
        words = line.words
        word, rest = words[0], words[1:]
        if (word, rest[0] if rest else "") in _SAME:
            proxy.logs = proxy.logs or word == "log"
            return
        if word == "log":
            proxy.logs = True
            if self.globalLog is None:
                self.globalLog = self._syslog(line)
            return
        if word == "mode" and rest and rest[0] in ("http", "tcp"):
            proxy.mode = rest[0]
        elif word == "timeout" and len(rest) == 2:
            if rest[0] not in ("connect", "client", "server", "queue", "http-request", "tunnel", "tarpit",
                               "check", "http-keep-alive", "client-fin", "server-fin"):
                raise Untranslatable(f"no lbkit timeout like {rest[0]}")
            proxy.timeouts[rest[0]] = seconds(rest[1])
            if rest[0] in ("http-keep-alive", "client-fin", "server-fin"):
                raise Untranslatable("lbkit has no separate timeout for this (timeoutClient covers it)")
        elif word == "retries" and rest and rest[0].isdigit():
            proxy.retries = int(rest[0])
        elif word == "balance" and rest:
            proxy.balance = self._balance(rest)
        elif word == "hash-type" and rest:
            if rest[0] not in ("map-based", "consistent"):
                raise Untranslatable(f"hash-type {rest[0]} is not supported")
            proxy.hashType = rest[0]
            if rest[1:]:
                raise Untranslatable("hash functions other than lbkit's own are not supported")
        elif word == "option" and rest[:1] == ["forwardfor"]:
            proxy.forwardfor = True
            if rest[1:]:
                raise Untranslatable("forwardfor options (except, header, if-none) are not supported")
        elif word == "option" and rest[:1] == ["httpchk"]:
            args = rest[1:]
            method, uri = ("GET", "/") if not args else ("GET", args[0]) if len(args) == 1 else (args[0], args[1])
            proxy.httpchk = (method, uri)
        elif word == "http-check" and rest[:1] == ["expect"] and len(rest) >= 3:
            proxy.expect = rest[1:3]
            if rest[1] not in ("status", "string", "rstring"):
                raise Untranslatable(f"http-check expect {rest[1]} is not supported")
        elif word == "http-check" and rest[:1] == ["send"]:
            self._checkSend(proxy, rest[1:])
        elif word == "cookie" and rest:
            proxy.cookie = self._cookie(rest)
        elif word == "stick-table":
            proxy.stick.update(self._pairs(rest, {"type", "size", "expire"}))
            if proxy.stick.get("type") not in ("ip", "ipv6"):
                raise Untranslatable("lbkit's stick table (StickySource) is keyed by client address: type ip")
        elif word == "stick" and rest in (["on", "src"], ["match", "src"], ["store-request", "src"]):
            proxy.stick["on"] = "src"
        elif word == "default-server":
            proxy.defaultServer = proxy.defaultServer + rest
        elif word == "server":
            proxy.servers.append(line)
        elif word == "bind" and rest:
            proxy.binds.append((line, rest[0], rest[1:]))
        elif word == "acl" and len(rest) >= 2:
            expression = aclExpression(rest[1:], proxy.mode)
            proxy.acls.setdefault(rest[0], []).append(expression)
        elif word == "use_backend" and len(rest) >= 3:
            proxy.routes.append((line, rest[0], condition(rest[1:], proxy.acls, proxy.mode)))
        elif word == "default_backend" and len(rest) == 1:
            proxy.defaultBackend = rest[0]
        elif word in ("http-request", "http-response") and rest[:1] in (["cache-use"], ["cache-store"]):
            self._cacheRule(proxy, rest)
        elif word in ("http-request", "http-response") and rest:
            self._httpRule(proxy, word, rest)
        elif word == "redirect" and rest:
            self._httpRule(proxy, "http-request", ["redirect", *rest])
        elif word == "stats" and rest:
            self._stats(proxy, line, rest)
        else:
            raise Untranslatable("no lbkit equivalent")

    def _pairs(self, words: list[str], known: set[str]) -> dict[str, str]:
        pairs = dict(zip(words[::2], words[1::2], strict=False))
        unknown = set(pairs) - known
        if unknown or len(words) % 2:
            raise Untranslatable(f"stick-table settings {sorted(unknown) or words[-1:]} are not supported")
        return pairs

    def _checkSend(self, proxy: Proxy, words: list[str]) -> None:
        pairs = dict(zip(words[::2], words[1::2], strict=False))
        method, uri = proxy.httpchk or ("GET", "/")
        proxy.httpchk = (pairs.pop("meth", method), pairs.pop("uri", uri))
        if pairs:
            raise Untranslatable(f"http-check send {', '.join(pairs)} is not supported")

    def _balance(self, words: list[str]) -> str:
        algo = words[0]
        simple = {"roundrobin": "RoundRobin", "static-rr": "StaticRR", "leastconn": "LeastConn", "first": "First",
                  "source": "Source"}
        if algo in simple:
            if words[1:]:
                raise Untranslatable(f"balance {algo} takes no options")
            return f"balance.{simple[algo]}(%s)"
        if algo == "uri":
            args: list[str] = []
            i = 1
            while i < len(words):
                if words[i] == "whole":
                    args.append("whole=True")
                elif words[i] in ("len", "depth") and i + 1 < len(words):
                    args.append(f"{words[i]}={int(words[i + 1])}")
                    i += 1
                else:
                    raise Untranslatable(f"balance uri {words[i]} is not supported")
                i += 1
            return f"balance.URI({', '.join(args)}%s)"
        if algo == "url_param" and len(words) >= 2:
            if words[2:]:
                raise Untranslatable("balance url_param options (check_post) are not supported")
            return f"balance.URLParam({words[1]!r}%s)"
        if algo.startswith("hdr(") and algo.endswith(")"):
            domain = ", useDomainOnly=True" if words[1:] == ["use_domain_only"] else ""
            if words[1:] and not domain:
                raise Untranslatable(f"balance hdr option {words[1]} is not supported")
            return f"balance.Header({algo[4:-1]!r}{domain}%s)"
        if algo == "random" or algo.startswith("random("):
            draws = algo[7:-1] if algo.startswith("random(") else "2"
            return f"balance.Random(draws={int(draws)})"
        raise Untranslatable(f"balance {algo} has no lbkit balancer")

    def _cookie(self, words: list[str]) -> str:
        args = [repr(words[0])]
        flags = {"indirect": "indirect=True", "nocache": "nocache=True", "preserve": "preserve=True",
                 "httponly": "httponly=True", "secure": "secure=True"}
        i = 1
        while i < len(words):
            word = words[i]
            if word in ("insert", "rewrite", "prefix"):
                args.append(f"mode={word!r}")
            elif word in flags:
                args.append(flags[word])
            elif word in ("domain", "maxidle", "maxlife") and i + 1 < len(words):
                value = repr(words[i + 1]) if word == "domain" else repr(seconds(words[i + 1] + (
                    "" if words[i + 1][-1:].isalpha() else "s")))
                args.append(f"{word}={value}")
                i += 1
            else:
                raise Untranslatable(f"cookie option {word} is not supported")
            i += 1
        self.imports.add("from lbkit.persistence import Cookie")
        return f"Cookie({', '.join(args)})"

    def _httpRule(self, proxy: Proxy, kind: str, words: list[str]) -> None:
        expression = httpRule(kind, words, proxy.mode, proxy.acls, proxy.timeouts.get("tarpit"))
        (proxy.requestRules if kind == "http-request" else proxy.responseRules).append(expression)

    def _stats(self, proxy: Proxy, line: Line, words: list[str]) -> None:
        if words[0] == "enable":
            proxy.stats["enable"] = True
        elif words[0] == "uri" and len(words) == 2:
            proxy.stats["enable"] = True
            proxy.stats["uri"] = words[1]
        elif words[0] == "refresh" and len(words) == 2:
            proxy.stats["refresh"] = seconds(words[1] + ("" if words[1][-1:].isalpha() else "s"))
        elif words[0] == "auth" and len(words) == 2 and ":" in words[1]:
            user, _, password = words[1].partition(":")
            proxy.stats.setdefault("users", {})[user] = password
            raise Untranslatable(
                "lbkit's stats page is readable by all; stats auth users become its admin users (stats.Admin)"
            )
        elif words[0] in ("admin", "realm", "hide-version", "show-legends", "show-node", "show-desc"):
            if words[0] == "realm" and len(words) == 2:
                proxy.stats["realm"] = words[1]
            elif words[0] != "admin":
                raise Untranslatable("no lbkit equivalent for this stats setting")
        else:
            raise Untranslatable("no lbkit equivalent for this stats setting")

    # -- writing ------------------------------------------------------------

    def _emit(self, proxies: list[Proxy]) -> str:
        return emitSite(self, proxies)


def translate(text: str, filename: str = "haproxy.cfg") -> tuple[str, list[tuple[int, str, str]]]:
    """
    Translate the HAProxy configuration C{text}.

    @return: The site file's source, and C{(line number, line, why)} for
        each line (or part of one) it leaves out.
    """
    translation = Translation(text, filename)
    source = translation.run()
    return source, sorted(translation.problems)


def main(argv: list[str] | None = None) -> int:
    """C{python -m lbkit.fromhaproxy CONFIG [--strict]}: the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m lbkit.fromhaproxy",
        description="Translate an HAProxy configuration into an lbkit site file (on standard output).",
    )
    parser.add_argument("config", help="the HAProxy configuration file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any line was not translated")
    args = parser.parse_args(argv)
    try:
        with open(args.config, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        sys.stderr.write(f"{args.config}: cannot read it: {e.strerror}\n")
        return 2
    source, problems = translate(text, os.path.basename(args.config))
    sys.stdout.write(source)
    for number, line, why in problems:
        sys.stderr.write(f"{args.config}:{number}: not translated: {line}: {why}\n")
    return 1 if problems and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
