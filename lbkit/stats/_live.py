# -*- test-case-name: tests.test_stats_live -*-
"""
The live changes, explanations and previews of the admin API and the
command socket (docs/beyond.md): add, drain and remove servers, swap a
backend's balancer or persistence, explain where a request would go,
preview a change of servers.  Each change is logged with who asked, on
the C{lbkit.admin} logger.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from lbkit._backend import Backend
from lbkit._explain import explainConnection
from lbkit._model import Server
from lbkit._preview import Preview
from lbkit.balance import (
    URI,
    First,
    LeastConn,
    NeverQueue,
    Random,
    RoundRobin,
    ShortestExpectedDelay,
    Source,
    StaticRR,
)
from lbkit.error import ConfigError, DrainTimeout
from lbkit.http._explain import explainRequest
from lbkit.persistence import Cookie, StickySource
from lbkit.stats._admin import AdminError

__all__ = ["BALANCERS", "HELP", "makeBalancer", "makePersistence", "runLive", "runExplain", "runPreview", "liveCommand"]

#: The balancers the admin API builds by name (a hashing one takes C{:consistent} or C{:maglev}).
BALANCERS: dict[str, Callable[..., Any]] = {
    "roundrobin": RoundRobin, "static-rr": StaticRR, "leastconn": LeastConn, "first": First,
    "source": Source, "uri": URI, "random": Random, "sed": ShortestExpectedDelay, "nq": NeverQueue,
}
_HASHING = ("source", "uri")


def makeBalancer(spec: str) -> Any:
    """A new balancer from C{"leastconn"}, C{"uri:consistent"} and the like."""
    name, _, hashType = spec.partition(":")
    factory = BALANCERS.get(name)
    if factory is None:
        raise AdminError(400, f"unknown balancer {spec!r}; expected one of {', '.join(BALANCERS)}")
    if hashType and name not in _HASHING:
        raise AdminError(400, f"balancer {name!r} takes no hash type")
    try:
        return factory(hashType=hashType) if hashType else factory()
    except ConfigError as e:
        raise AdminError(400, str(e)) from None


def makePersistence(spec: str) -> Any:
    """A new strategy from C{"none"}, C{"source"}, C{"source:SECONDS"} or C{"cookie:NAME"}."""
    kind, _, arg = spec.partition(":")
    try:
        if kind == "none" and not arg:
            return None
        if kind == "source":
            return StickySource(float(arg)) if arg else StickySource()
        if kind == "cookie" and arg:
            return Cookie(arg)
    except ValueError as e:
        raise AdminError(400, f"bad persistence {spec!r}: {e}") from None
    raise AdminError(400, f"bad persistence {spec!r}; expected none, source[:SECONDS] or cookie:NAME")


def _backend(collector: Any, name: str) -> Backend:
    backend: Backend
    for backend in collector.backends():
        if backend.name == name:
            return backend
    raise AdminError(404, f"no backend {name!r}")


def _server(collector: Any, backendName: str, serverName: str) -> Server:
    server: Server | None = collector.findServer(backendName, serverName)
    if server is None:
        raise AdminError(404, f"no server {serverName!r} in backend {backendName!r}")
    return server


def _timeout(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise AdminError(400, f"timeout must be a number of seconds over 0, not {text!r}")
    return value


def _newServer(name: str, address: str, weight: str | None) -> Server:
    try:
        return Server(name, address, weight=int(weight) if weight else 1)
    except (ConfigError, ValueError) as e:
        raise AdminError(400, f"cannot add server {name!r}: {e}") from None


def runLive(collector: Any, user: str, via: str, op: str, args: dict[str, str | None]) -> str | Deferred[str]:
    """
    Carry out one live change and log it.

    @param op: C{add-server} (C{backend}, C{server}, C{address}, optional
        C{weight}), C{drain} or C{remove-server} (C{backend}, C{server},
        optional C{timeout}: the answer comes once drained, or removed),
        C{set-balance} (C{backend}, C{balance}), C{set-persistence}
        (C{backend}, C{persistence}).
    @return: What happened, in words, or a L{Deferred} of it; a drain
        that times out answers C{"error: ..."}.
    @raise AdminError: on a bad request.
    """
    backendName = args.get("backend") or ""
    backend = _backend(collector, backendName)
    serverName = args.get("server") or ""

    def log(detail: str) -> str:
        collector.log.info("admin: {user} ({via}) changed backend {backend}: {detail}",
                           user=user, via=via, backend=backendName, detail=detail, action=op)
        return detail

    if op == "add-server":
        server = _newServer(serverName, args.get("address") or "", args.get("weight"))
        try:
            backend.addServer(server, collector.now())
        except ConfigError as e:
            raise AdminError(400, str(e)) from None
        return log(f"server {serverName} added ({server.address})")
    if op in ("drain", "remove-server"):
        server = _server(collector, backendName, serverName)
        timeout = _timeout(args.get("timeout"))
        clock = collector.clock
        log(f"server {serverName}: {'removing (draining first)' if op == 'remove-server' else 'draining'}")
        d: Deferred[Server] = (
            backend.removeServer(server, timeout, clock) if op == "remove-server" else server.drain(timeout, clock=clock)
        )

        def failed(reason: Failure) -> str:
            reason.trap(DrainTimeout)
            return f"error: {reason.getErrorMessage()}"

        done = "removed" if op == "remove-server" else "drained"
        return d.addCallbacks(lambda _: log(f"server {serverName} {done}"), failed)
    try:
        if op == "set-balance":
            changes = backend.setBalancer(makeBalancer(args.get("balance") or ""))
        elif op == "set-persistence":
            changes = backend.setPersistence(makePersistence(args.get("persistence") or ""))
        else:
            raise AdminError(400, f"unknown operation {op!r}")
    except ConfigError as e:
        raise AdminError(400, str(e)) from None
    return log("; ".join(changes) or "no change")


def _frontend(collector: Any, name: str) -> Any:
    """The http frontend called C{name} (C{"-"}: the first), else the tcp one."""
    http = [f for f in collector.listen if hasattr(f, "routes") and hasattr(f, "default")]
    for frontend in http:
        if frontend.name == name or (name in ("", "-") and frontend is http[0]):
            return frontend
    for frontend in collector.listen:
        if getattr(frontend, "name", None) == name and isinstance(getattr(frontend, "backend", None), Backend):
            return frontend
    raise AdminError(404, f"no frontend {name!r}")


def runExplain(
    collector: Any, frontend: str, method: str, path: str, headers: Sequence[tuple[str, str]], source: str
) -> dict[str, Any]:
    """
    Where an http frontend (by name; C{"-"}: the first) would send this
    request, or a tcp frontend a connection from C{source} (the method,
    path and headers are then not used), and why; nothing is sent.
    """
    found = _frontend(collector, frontend)
    try:
        if not hasattr(found, "default"):
            return explainConnection(found, source)
        if not path.startswith("/"):
            raise AdminError(400, f"path must start with '/', not {path!r}")
        return explainRequest(found, method, path, headers, source)
    except (ValueError, UnicodeError) as e:
        raise AdminError(400, f"cannot explain this request: {e}") from None


def runPreview(
    collector: Any, backendName: str, weights: dict[str, str], remove: Sequence[str], add: Sequence[tuple[str, str]]
) -> Preview:
    """What a change of C{backendName}'s servers would do (L{lbkit.Backend.preview})."""
    backend = _backend(collector, backendName)
    try:
        numbers = {name: int(value) for name, value in weights.items()}
    except ValueError:
        raise AdminError(400, f"weights must be integers: {weights!r}") from None
    try:
        return backend.preview(numbers, list(remove), [_newServer(n, a, None) for n, a in add])
    except ConfigError as e:
        raise AdminError(400, str(e)) from None


def _sentence(words: list[str]) -> tuple[str, str, str, list[tuple[str, str]], str]:
    """
    C{FRONTEND METHOD PATH [from ADDRESS] [Name: value]...} of the
    C{explain} command; for a tcp frontend, C{FRONTEND [from ADDRESS]}.
    """
    if len(words) in (1, 3) and (len(words) == 1 or words[1] == "from"):
        return words[0], "", "", [], words[2] if len(words) == 3 else "127.0.0.1"
    if len(words) < 3:
        raise AdminError(400, "usage: explain FRONTEND|- METHOD PATH [from ADDRESS] [Header: value]...")
    frontend, method, path, rest = words[0], words[1], words[2], words[3:]
    source = "127.0.0.1"
    headers: list[tuple[str, str]] = []
    i = 0
    while i < len(rest):
        word = rest[i]
        if word == "from" and i + 1 < len(rest):
            source, i = rest[i + 1], i + 2
        elif word.endswith(":") and len(word) > 1:
            value = []
            i += 1
            while i < len(rest) and not rest[i].endswith(":") and rest[i] != "from":
                value.append(rest[i])
                i += 1
            headers.append((word[:-1], " ".join(value)))
        else:
            raise AdminError(400, f"explain: expected 'from ADDRESS' or 'Header: value', not {word!r}")
    return frontend, method, path, headers, source


def _changes(words: list[str]) -> tuple[dict[str, str], list[str], list[tuple[str, str]]]:
    """C{[weight SERVER N]... [remove SERVER]... [add SERVER HOST:PORT]...} of the C{preview} command."""
    weights: dict[str, str] = {}
    remove: list[str] = []
    add: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        match words[i:i + 3]:
            case ["weight", name, value]:
                weights[name] = value
                i += 3
            case ["add", name, address]:
                add.append((name, address))
                i += 3
            case ["remove", name, *_]:
                remove.append(name)
                i += 2
            case _:
                raise AdminError(400, "usage: preview BACKEND [weight SERVER N]... [remove SERVER]... [add SERVER HOST:PORT]...")
    return weights, remove, add


#: The command socket's lines for these commands (its C{help}).
HELP = """\
  add server BACKEND/SERVER HOST:PORT [WEIGHT]
  drain server BACKEND/SERVER [TIMEOUT]     answers once drained (no connection, no sticky client)
  del server BACKEND/SERVER [TIMEOUT]       drain, then remove; answers once removed
  set balance BACKEND ALGORITHM[:HASHTYPE]  roundrobin, leastconn, uri:consistent, ...
  set persistence BACKEND none|source[:SECONDS]|cookie:NAME
  explain FRONTEND|- METHOD PATH [from ADDRESS] [Header: value]...
  explain TCPFRONTEND [from ADDRESS]        where a tcp connection would go
  preview BACKEND [weight SERVER N]... [remove SERVER]... [add SERVER HOST:PORT]..."""


def liveCommand(collector: Any, user: str, words: list[str]) -> str | Deferred[str] | None:
    """
    Run one command line of the command socket if it is one of these
    (L{HELP}); C{None} if it is not.
    """
    via = f"socket {user}"

    def split(name: str) -> tuple[str, str]:
        backend, sep, server = name.partition("/")
        if not sep or not backend or not server:
            raise AdminError(400, f"expected BACKEND/SERVER, not {name!r}")
        return backend, server

    match words:
        case ["add", "server", name, address, *weight] if len(weight) <= 1:
            b, s = split(name)
            return runLive(collector, user, via, "add-server",
                           {"backend": b, "server": s, "address": address, "weight": weight[0] if weight else None})
        case [("drain" | "del") as verb, "server", name, *timeout] if len(timeout) <= 1:
            b, s = split(name)
            op = "drain" if verb == "drain" else "remove-server"
            return runLive(collector, user, via, op, {"backend": b, "server": s, "timeout": timeout[0] if timeout else None})
        case ["set", "balance", backend, spec]:
            return runLive(collector, user, via, "set-balance", {"backend": backend, "balance": spec})
        case ["set", "persistence", backend, spec]:
            return runLive(collector, user, via, "set-persistence", {"backend": backend, "persistence": spec})
        case ["explain", *rest]:
            answer = runExplain(collector, *_sentence(rest))
            return "\n".join([
                f"route: {answer['route']}", f"backend: {answer['backend']}",
                f"server: {answer['server'] or '-'}", *(f"reason: {r}" for r in answer["reasons"][1:]),
            ])
        case ["preview", backend, *rest]:
            return "\n".join(runPreview(collector, backend, *_changes(rest)).lines())
    return None
