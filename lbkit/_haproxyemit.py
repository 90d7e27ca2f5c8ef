# -*- test-case-name: tests.test_fromhaproxy -*-
"""
Writing the site file for L{lbkit.fromhaproxy}: backends, servers, health
checks, persistence, frontends and stats pages as readable Python.
"""

from __future__ import annotations

import keyword
import os
import re
from typing import Any

from lbkit._haproxycfg import Line, Proxy, Untranslatable, seconds

__all__: list[str] = []

_HASHED = ("balance.Source(", "balance.URI(", "balance.URLParam(", "balance.Header(")
_RESERVED = {"http", "tcp", "tls", "stats", "balance", "listen", "accessLog", "Backend", "Server",
             "HTTPCheck", "TCPCheck", "Cookie", "StickySource", "AccessLog", "grace"}


def _ident(name: str, taken: set[str]) -> str:
    ident = re.sub(r"\W", "_", name) or "proxy"
    if ident[0].isdigit() or ident in _RESERVED or keyword.iskeyword(ident):
        ident = "be_" + ident
    base, n = ident, 2
    while ident in taken:
        ident, n = f"{base}_{n}", n + 1
    taken.add(ident)
    return ident


def _call(name: str, args: list[str], indent: str = "") -> str:
    """C{name(a, b)} on one line when short, else one argument per line."""
    flat = f"{name}({', '.join(args)})"
    if len(indent) + len(flat) <= 96 and "\n" not in flat:
        return flat
    inner = "".join(f"{indent}    {a.replace(chr(10), chr(10) + '    ')},\n" for a in args)
    return f"{name}(\n{inner}{indent})"


def _size(word: str) -> int:
    match = re.fullmatch(r"(\d+)([kmg]?)", word.lower())
    if match is None:
        raise Untranslatable(f"{word!r} is not a size")
    return int(match.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2)]


def _time(word: str) -> float:
    """An HAProxy time in a setting whose unit is milliseconds by default."""
    return seconds(word)


def _address(text: str) -> str:
    """A server's C{host:port} as lbkit takes it."""
    for prefix in ("ipv4@", "ipv6@"):
        text = text.removeprefix(prefix)
    if text.startswith(("unix@", "/", "abns@", "fd@", "sockpair@")):
        raise Untranslatable("lbkit servers in a site translation are host:port addresses")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        host = f"[{host}]"
    else:
        host, sep, port = text.rpartition(":")
        if host.count(":"):
            host = f"[{host}]"
    if not sep or not port.isdigit():
        raise Untranslatable(f"the server address {text!r} has no port (lbkit needs one)")
    return f"{host}:{port}"


_VALUED = {"weight", "maxconn", "cookie", "verify", "ca-file", "sni", "slowstart", "inter", "fastinter",
           "downinter", "rise", "fall", "port", "addr", "observe", "error-limit", "on-error", "on-marked-down",
           "minconn", "maxqueue", "resolvers", "init-addr", "check-sni", "crt", "alpn", "proto", "id", "agent-port",
           "agent-inter", "agent-check", "track", "redir", "source", "resolve-prefer", "pool-max-conn"}


def _server(t: Any, line: Line, defaults: list[str]) -> tuple[str, dict[str, Any]]:
    """One C{server} line: the L{lbkit.Server} source, and its check settings."""
    words = line.words
    if len(words) < 3:
        raise Untranslatable("a server needs a name and an address")
    args = [repr(words[1]), repr(_address(words[2]))]
    check: dict[str, Any] = {"enabled": False}
    options = defaults + words[3:]
    i = 0
    while i < len(options):
        key = options[i]
        value = options[i + 1] if key in _VALUED and i + 1 < len(options) else None
        if key in _VALUED and value is None:
            t.problem(line, f"server option {key} without a value")
            break
        i += 2 if value is not None else 1
        try:
            _serverOption(args, check, key, value)
        except Untranslatable as e:
            t.problem(line, str(e))
    if "proto='h2'" in args and "tls=True" not in args:
        args[args.index("proto='h2'")] = "proto='h2c'"  # HTTP/2 without ssl: cleartext
    return _call("Server", args, "        "), check


def _serverOption(args: list[str], check: dict[str, Any], key: str, value: str | None) -> None:
    if key == "check":
        check["enabled"] = True
    elif key == "no-check":
        check["enabled"] = False
    elif key in ("weight", "maxconn") and value is not None:
        args.append(f"{key}={int(value)}")
    elif key == "backup":
        args.append("backup=True")
    elif key == "cookie":
        args.append(f"cookie={value!r}")
    elif key in ("send-proxy", "send-proxy-v2"):
        args.append(f"sendProxy={1 if key == 'send-proxy' else 2}")
    elif key == "ssl":
        args.append("tls=True")
    elif (key == "proto" or key == "alpn") and value == "h2":  # (docs/http.md, "HTTP/2 and gRPC to servers")
        if "proto='h2'" not in args:
            args.append("proto='h2'")
    elif key == "verify" and value in ("none", "required"):
        if value == "none":
            args.append("verify=False")
    elif key == "ca-file":
        args.append(f"ca={value!r}")
    elif key == "sni" and value is not None and value.startswith("str(") and value.endswith(")"):
        args.append(f"sni={value[4:-1]!r}")
    elif key == "slowstart" and value is not None:
        args.append(f"slowstart={_time(value)!r}")
    elif key in ("inter", "fastinter", "downinter") and value is not None:
        check[{"inter": "interval"}.get(key, key)] = _time(value)
    elif key in ("rise", "fall", "port", "error-limit") and value is not None:
        check[{"error-limit": "errorLimit"}.get(key, key)] = int(value)
    elif key in ("addr", "observe", "on-error", "on-marked-down"):
        check[{"on-error": "onError", "on-marked-down": "onMarkedDown"}.get(key, key)] = value
    elif key == "disabled":
        raise Untranslatable("lbkit has no disabled servers: put it in maint with the admin API instead")
    else:
        raise Untranslatable(f"server option {key} is not supported")


def _health(t: Any, proxy: Proxy, checks: list[tuple[Line, dict[str, Any]]]) -> str | None:
    checked = [(line, c) for line, c in checks if c["enabled"]]
    if not checked:
        return None
    first = {k: v for k, v in checked[0][1].items() if k != "enabled"}
    for line, c in checks:
        if not c["enabled"]:
            t.problem(line, "lbkit checks every server of a backend: this one is checked too")
        elif {k: v for k, v in c.items() if k != "enabled"} != first:
            t.problem(line, "lbkit checks every server of a backend alike: the first checked server's settings apply")
    args = [f"{key}={value!r}" for key, value in first.items()]
    if proxy.httpchk is None:
        t.imports.add("TCPCheck")
        if proxy.expect:
            t.problem(proxy.line, "http-check expect without option httpchk: a TCP check is used")
        return _call("TCPCheck", args)
    t.imports.add("HTTPCheck")
    method, uri = proxy.httpchk
    front = [repr(uri)] + ([f"method={method!r}"] if method != "GET" else [])
    if proxy.expect:
        kind, value = proxy.expect
        if kind == "status":
            front.append(f"status={int(value)}" if value.isdigit() else f"status={value!r}")
        elif kind == "string":
            front.append(f"body={value!r}")
        else:
            t.imports.add("import re")
            front.append(f"body=re.compile({value!r})")
    return _call("HTTPCheck", front + args)


def _balancer(proxy: Proxy) -> str:
    template = proxy.balance or "balance.RoundRobin(%s)"
    hashArg = f"hashType={proxy.hashType!r}" if proxy.hashType and template.startswith(_HASHED) else ""
    if "%s" not in template:
        return template
    before = template.split("%s")[0]
    if hashArg and not before.endswith("("):
        hashArg = ", " + hashArg
    return template % hashArg


def backend(t: Any, proxy: Proxy, ident: str) -> str | None:
    """The L{lbkit.Backend} assignment for a backend (or listen) section, or C{None}."""
    servers: list[str] = []
    checks: list[tuple[Line, dict[str, Any]]] = []
    for line in proxy.servers:
        try:
            source, check = _server(t, line, proxy.defaultServer)
        except Untranslatable as e:
            t.problem(line, str(e))
            continue
        servers.append(source)
        checks.append((line, check))
    if not servers:
        t.problem(proxy.line, f"{proxy.kind} {proxy.name} has no server lbkit can use: left out")
        return None
    args = [repr(proxy.name), "servers=[\n" + "".join(f"        {s},\n" for s in servers) + "    ]"]
    t.imports.add("balance")
    args.append(f"balance={_balancer(proxy)}")
    health = _health(t, proxy, checks)
    if health is not None:
        args.append(f"health={health}")
    persistence = _persistence(t, proxy)
    if persistence is not None:
        args.append(f"persistence={persistence}")
    if proxy.retries is not None and proxy.retries != 3:
        args.append(f"retries={proxy.retries}")
    for key, name in (("connect", "timeoutConnect"), ("server", "timeoutServer"), ("queue", "timeoutQueue")):
        if key in proxy.timeouts:
            args.append(f"{name}={proxy.timeouts[key]!r}")
    if proxy.kind == "backend" and proxy.mode == "http" and (proxy.requestRules or proxy.responseRules):
        t.backendRules[proxy.name] = (proxy.requestRules, proxy.responseRules)
    elif proxy.kind == "backend" and (proxy.requestRules or proxy.responseRules):
        t.problem(proxy.line, "http rules of a tcp backend: left out")
    body = "".join(f"    {a},\n" for a in args)
    return f"# {t.filename}:{proxy.line.number}: {proxy.kind} {proxy.name}\n{ident} = Backend(\n{body})\n"


def _persistence(t: Any, proxy: Proxy) -> str | None:
    cookie = proxy.cookie if proxy.mode == "http" else None
    if proxy.cookie is not None and proxy.mode != "http":
        t.problem(proxy.line, "cookie persistence needs mode http: left out")
    if proxy.stick and proxy.stick.get("on") == "src":
        args = []
        if "expire" in proxy.stick:
            args.append(f"expire={_time(proxy.stick['expire'])!r}")
        if "size" in proxy.stick:
            args.append(f"size={_size(proxy.stick['size'])}")
        if cookie is not None:
            t.problem(proxy.line, "both a cookie and a stick table: lbkit takes one; the cookie is kept")
            return cookie
        t.imports.add("from lbkit.persistence import StickySource")
        return _call("StickySource", args)
    if proxy.stick:
        t.problem(proxy.line, "a stick-table without 'stick on src': left out")
    return cookie


def bind(t: Any, line: Line, address: str, options: list[str], mode: str) -> tuple[str, list[str]]:
    """A C{bind} line: the endpoint string and extra frontend arguments."""
    if "," in address:
        t.problem(line, "one address per bind in lbkit: only the first is used")
        address = address.split(",")[0]
    for prefix in ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"):
        address = address.removeprefix(prefix)
    if address.startswith(("unix@", "/")):
        endpoint = f"unix:{address.removeprefix('unix@')}"
    elif address.startswith(("fd@", "abns@", "sockpair@", "udp@", "quic")):
        raise Untranslatable(f"lbkit cannot listen on {address}")
    else:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise Untranslatable(f"the bind address {address!r} has no single port")
        host = host.strip("[]")
        if ":" in host:
            endpoint = f"tcp6:{port}" + ("" if host == "::" else ":interface=" + host.replace(":", "\\:"))
        else:
            endpoint = f"tcp:{port}" + ("" if host in ("", "*", "0.0.0.0") else f":interface={host}")
    extra: list[str] = []
    ssl, crts = False, []
    i = 0
    while i < len(options):
        word = options[i]
        if word == "ssl":
            ssl = True
        elif word == "crt" and i + 1 < len(options):
            crts.append(os.path.join(t.crtBase, options[i + 1]))
            i += 1
        elif word == "accept-proxy":
            extra.append("acceptProxy=True")
        elif word in ("name", "alpn", "process", "thread", "id") and i + 1 < len(options):
            i += 1
        elif word not in ("v4v6", "v6only"):
            t.problem(line, f"bind option {word} is not supported")
        i += 1
    if ssl:
        if not crts:
            raise Untranslatable("ssl without crt")
        if len(crts) > 1:
            t.problem(line, "lbkit picks certificates by SNI with tls.Certificates(byHost=...): only the first is used")
        if mode == "http":
            t.imports.add("tls")
            extra.append(f"tls=tls.Certificates({crts[0]!r})")
        else:
            key = crts[0].replace(":", "\\:")
            endpoint = "ssl:" + endpoint.split(":", 1)[1] + f":certKey={key}:privateKey={key}"
    return endpoint, extra


def _frontends(t: Any, proxy: Proxy, idents: dict[str, str]) -> list[str]:
    """The frontends (or stats pages) of a frontend or listen section, one per bind."""
    if not proxy.binds:
        t.problem(proxy.line, f"{proxy.kind} {proxy.name} has no bind: nothing listens")
        return []
    default = proxy.defaultBackend or (proxy.name if proxy.kind == "listen" and proxy.servers else None)
    if proxy.stats.get("enable") and not proxy.servers and not proxy.routes and default is None:
        return _pages(t, proxy)
    if proxy.stats.get("enable"):
        t.problem(proxy.line, "lbkit's stats page needs a listener of its own (stats.Page): left out here")
    if default is not None and default not in idents:
        t.problem(proxy.line, f"the backend {default!r} was not translated: no default backend")
        default = None
    routes = []
    for line, name, matcher in proxy.routes:
        if name not in idents:
            t.problem(line, f"the backend {name!r} was not translated: route left out")
            continue
        routes.append(_route(proxy.mode, matcher, idents[name], t.backendRules.get(name)))
    if default is not None and t.backendRules.get(default) and proxy.mode == "http":
        # a backend's own rules travel with the routes to it: the default
        # backend gets a route that matches everything, last
        routes.append(_route("http", "http.pathBegins('')", idents[default], t.backendRules[default]))
    out: list[str] = []
    if default is None and not routes:
        t.problem(proxy.line, f"{proxy.kind} {proxy.name} sends traffic to no backend lbkit has: left out")
        return out
    for n, (line, address, options) in enumerate(proxy.binds):
        try:
            endpoint, extra = bind(t, line, address, options, proxy.mode)
        except Untranslatable as e:
            t.problem(line, str(e))
            continue
        name = proxy.name if n == 0 else f"{proxy.name}-{n + 1}"
        args = [repr(endpoint)]
        if proxy.mode == "tcp":
            if default is None:
                t.problem(proxy.line, "a tcp frontend needs a default_backend: left out")
                return out
            args.append(f"backend={idents[default]}")
        else:
            if default is not None:
                args.append(f"default={idents[default]}")
        if routes:
            args.append("routes=[\n" + "".join(f"            {r},\n" for r in routes) + "        ]")
        args.append(f"name={name!r}")
        if "client" in proxy.timeouts:
            args.append(f"timeoutClient={proxy.timeouts['client']!r}")
        if proxy.mode == "http":
            if "http-request" in proxy.timeouts:
                args.append(f"timeoutHttpRequest={proxy.timeouts['http-request']!r}")
            if "tunnel" in proxy.timeouts:
                args.append(f"timeoutTunnel={proxy.timeouts['tunnel']!r}")
            if not proxy.forwardfor:
                args.append("forwardedFor=False")
            if proxy.cache is not None:
                args.append(f"cache={t.cacheIdents[proxy.cache]}")
            for key, rules in (("requestRules", proxy.requestRules), ("responseRules", proxy.responseRules)):
                if rules:
                    args.append(f"{key}=[\n" + "".join(f"            {r},\n" for r in rules) + "        ]")
        if not proxy.logs:
            args.append("log=False")
        args.extend(extra)
        t.imports.add(proxy.mode)
        out.append(f"    # {t.filename}:{line.number}: {proxy.kind} {proxy.name}\n"
                   f"    {proxy.mode}.Frontend(\n" + "".join(f"        {a},\n" for a in args) + "    ),\n")
    return out


def _route(mode: str, matcher: str, ident: str, rules: tuple[list[str], list[str]] | None) -> str:
    """A route; with the rules of the backend it leads to (HAProxy runs a backend's rules after the frontend's)."""
    args = [matcher, ident]
    if rules is not None:
        for key, found in zip(("requestRules", "responseRules"), rules, strict=True):
            if found:
                args.append(f"{key}=[\n" + "".join(f"                {r},\n" for r in found) + "            ]")
    return _call(f"{mode}.Route", args, "            ")


def _pages(t: Any, proxy: Proxy) -> list[str]:
    uri = proxy.stats.get("uri", "/")
    if uri != "/":
        t.problem(proxy.line, f"lbkit's stats page answers at / (with /stats.json and /metrics), not at {uri}")
    t.imports.add("stats")
    out = []
    for line, address, options in proxy.binds:
        try:
            endpoint, extra = bind(t, line, address, options, "http")
        except Untranslatable as e:
            t.problem(line, str(e))
            continue
        args = [repr(endpoint)]
        if proxy.stats.get("users"):
            realm = [f"realm={proxy.stats['realm']!r}"] if "realm" in proxy.stats else []
            args.append(_call("admin=stats.Admin", [repr(proxy.stats["users"]), *realm]))
        if t.statsSocket is not None:
            args.append(f"socket={t.statsSocket!r}")
            t.statsSocket = None
        if "refresh" in proxy.stats:
            args.append(f"refresh={proxy.stats['refresh']!r}")
        if extra:
            t.problem(line, "TLS and other bind options are not translated for a stats page")
        out.append(f"    # {t.filename}:{line.number}: {proxy.kind} {proxy.name} (stats)\n"
                   f"    {_call('stats.Page', args, '    ')},\n")
    return out


def emitSite(t: Any, proxies: list[Proxy]) -> str:
    """The whole site file for the sections read by C{t} (a L{lbkit.fromhaproxy.Translation})."""
    taken: set[str] = set()
    idents: dict[str, str] = {}
    backends = []
    for proxy in proxies:
        if proxy.kind == "backend" or (proxy.kind == "listen" and proxy.servers):
            ident = _ident(proxy.name, taken)
            source = backend(t, proxy, ident)
            if source is not None:
                idents[proxy.name] = ident
                backends.append(source)
        elif proxy.servers:
            t.problem(proxy.servers[0], "server lines belong in a backend or listen section")
    t.cacheIdents = {name: _ident(name, taken) for name in t.caches}
    caches = [f"{t.cacheIdents[name]} = {source}\n" for name, source in t.caches.items()]
    if caches:
        t.imports.add("http")
    frontends: list[str] = []
    for proxy in proxies:
        if proxy.kind in ("frontend", "listen"):
            frontends.extend(_frontends(t, proxy, idents))
    if t.statsSocket is not None:
        t.problem(t.statsSocketLine, "a stats socket needs a stats page in lbkit (stats.Page(socket=...))")
    logging = t.globalLog is not None and any(p.logs for p in proxies)
    head = [f'"""\nTranslated from {t.filename} by python -m lbkit.fromhaproxy.\n']
    if t.workers:
        head.append(f"\nThe original ran nbthread {t.workers}: run twistd lbkit --workers {t.workers}.\n")
    problems = sorted(set(t.problems))
    if problems:
        head.append(f"\n{len(problems)} line(s) were not translated (also listed on standard error):\n\n")
        head.extend(f"    {t.filename}:{n}: {text}\n        {why}\n" for n, text, why in problems)
    head.append('"""\n\n')
    imports = ["from lbkit import Backend, Server"]
    modules = sorted(m for m in ("balance", "http", "stats", "tcp", "tls") if m in t.imports)
    imports[0] += "".join(f", {m}" for m in modules)
    checks = [c for c in ("HTTPCheck", "TCPCheck") if c in t.imports]
    if checks:
        imports.append(f"from lbkit.health import {', '.join(checks)}")
    imports.extend(sorted(i for i in t.imports if i.startswith("from ") and (logging or "AccessLog" not in i)))
    if "import re" in t.imports:
        imports.insert(0, "import re\n")
    parts = ["".join(head), "\n".join(imports), "\n\n"]
    parts.extend(f"{b}\n" for b in backends)
    if caches:
        parts.append("# HAProxy's max-age caps every entry; lbkit's defaultTTL only gives one to responses that say nothing\n")
        parts.extend(caches + ["\n"])
    if logging:
        parts.append(f"accessLog = {t.globalLog}\n\n")
    parts.append("listen = [\n" + "".join(frontends) + "]\n")
    return "".join(parts)
