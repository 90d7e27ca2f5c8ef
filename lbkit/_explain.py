# -*- test-case-name: tests.test_explain -*-
"""
Explaining where a connection or request goes (docs/beyond.md): the
reasons of a backend's choice, from the persistence strategy and the
balancer, either recorded as real traffic is dispatched
(L{enableExplain}: the backend's choice runs through L{chooseExplained},
which is what it does anyway plus the reasons) or worked out without
sending anything (L{explainChoice}, on a copy of the balancer, so that
the next real decision is not disturbed and goes where it said).

Nothing here runs unless asked: a backend nobody explains makes its
choices with its own method, untouched.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address, IPv6Address

from lbkit._model import Context, Server, ServerState
from lbkit.error import NoServerAvailable
from lbkit.interfaces import IExplainingBalancer, IExplainingPersistence

if TYPE_CHECKING:
    from lbkit._backend import Backend

__all__ = [
    "enableExplain", "disableExplain", "explaining", "explainChoice", "chooseExplained", "connectionReasons",
    "explainConnection", "clientAddress", "NOTE",
]

#: The key of C{Context.notes} that holds the reasons of a live decision.
NOTE = "explain"


def explaining(backend: Backend) -> bool:
    """Whether the reasons of C{backend}'s decisions are recorded."""
    return backend.explained


def enableExplain(backend: Backend) -> None:
    """
    Record the reasons of each of C{backend}'s decisions in the context's
    C{notes["explain"]} (a list of phrases), for the access log.  The
    choices themselves do not change.
    """
    if not explaining(backend):
        backend._choose = lambda context: chooseExplained(backend, context, backend.balance, True)  # type: ignore[method-assign]
        backend.explained = True


def disableExplain(backend: Backend) -> None:
    """Undo L{enableExplain}."""
    backend.__dict__.pop("_choose", None)
    backend.explained = False


def connectionReasons(backend: Backend | None, context: Context | None) -> str:
    """
    The C{explain} access-log field of a tcp connection: how its backend
    was chosen (by the TLS SNI name when a route took it) and what the
    backend noted as it chose, C{"; "} between them.
    """
    if backend is None or context is None:
        return "not dispatched"
    sni = context.notes.get("sni")
    parts = [f"sni {sni} -> {backend.name}" if sni else f"backend {backend.name}"]
    parts.extend(context.notes.get(NOTE, ()))
    return "; ".join(parts)


def _why(server: Server, tried: set[Server]) -> str:
    if server.state is not ServerState.UP and server.state is not ServerState.DRAIN:
        return f"server {server.state.value}"
    if server in tried:
        return "already tried"
    return f"full (maxconn {server.maxconn})"


def _names(servers: Any) -> str:
    return ", ".join(s.name for s in servers)


def chooseExplained(backend: Backend, context: Context, balancer: Any, live: bool) -> Server | None:
    """
    What C{Backend._choose} does (and returns, and raises), noting why in
    C{context.notes["explain"]}.

    @param balancer: The backend's balancer, or (L{explainChoice}) a copy.
    @param live: Whether this is a real decision (it then counts a
        redispatch as the backend does).
    """
    reasons: list[str] = context.notes.setdefault(NOTE, [])
    tried = context.tried
    persistence = backend.persistence
    if persistence is not None:
        said = None
        if IExplainingPersistence.providedBy(persistence):
            said = persistence.explainRecall(backend, context)  # type: ignore[attr-defined]
        said = said or type(persistence).__name__
        sticky = persistence.recall(backend, context)
        if sticky is not None:
            if (
                (sticky.state is ServerState.UP or sticky.state is ServerState.DRAIN)
                and sticky not in tried
                and sticky.hasFreeSlot()
            ):
                reasons.append(f"persistence recalled {sticky.name}: {said}")
                return sticky
            reasons.append(f"persistence ignored {sticky.name} ({_why(sticky, tried)}), redispatched: {said}")
            if live:
                backend.redispatches += 1
        else:
            reasons.append(f"persistence recalled nothing: {said}")
    candidates = backend._eligible
    if candidates and candidates[0].backup:
        reasons.append(f"no normal server is up: backup {_names(candidates)}")
    if tried:
        skipped = [s for s in candidates if s in tried]
        candidates = [s for s in candidates if s not in tried]
        if skipped:
            reasons.append(f"retry: {_names(skipped)} already tried")
    if not candidates:
        down = [f"{s.name} {s.state.value}" for s in backend.servers if s.state is not ServerState.UP]
        reasons.append("no server available" + (f": {', '.join(down)}" if down else ""))
        raise NoServerAvailable(f"backend {backend.name!r} has no server available")
    if backend._anyMaxconn:
        full = [s for s in candidates if not (s.maxconn is None or s.active < s.maxconn)]
        candidates = [s for s in candidates if s.maxconn is None or s.active < s.maxconn]
        if full:
            reasons.append(f"full: {_names(full)}")
        if not candidates:
            reasons.append("every usable server is full: queued")
            return None
    server = balancer.pick(candidates, context) or None
    if IExplainingBalancer.providedBy(balancer):
        reasons.append(balancer.explain(candidates, context, server))
    else:
        reasons.append(f"{type(balancer).__name__}: picked {server.name if server is not None else 'nothing'}")
    return server


def explainChoice(backend: Backend, context: Context) -> tuple[Server | None, list[str]]:
    """
    Where C{backend} would send C{context}'s client now, and why, without
    sending anything or changing what the next real decision will be: the
    balancer deciding is a copy of C{backend}'s (its servers shared, not
    copied).

    @return: The server (C{None} when the client would wait in the queue)
        and the reasons.
    @raise NoServerAvailable: as the backend would (the reasons are then
        in C{context.notes["explain"]}).
    """
    real = backend.balance
    memo: dict[int, Any] = {id(s): s for s in backend.servers}
    memo[id(backend)] = backend
    memo[id(backend._eligible)] = backend._eligible
    memo[id(backend.servers)] = backend.servers
    balancer: Any
    try:
        balancer = copy.deepcopy(real, memo)
    except Exception:  # a user's balancer holding what cannot be copied
        balancer = real
        context.notes.setdefault(NOTE, []).append(
            f"(the balancer {type(real).__name__} cannot be copied: this explanation was a real pick)"
        )
    try:
        server = chooseExplained(backend, context, balancer, False)
    finally:
        for s in backend.servers:  # a copy that rebuilt its tables subscribed to the servers
            if balancer is not real and balancer in s._listeners:
                s.removeListener(balancer)
    return server, list(context.notes.get(NOTE, ()))


def clientAddress(source: str) -> Any:
    """The address of a client given as C{"host"}, C{"host:port"} or C{"[v6]:port"}."""
    host, _, port = source.rpartition(":") if source.count(":") == 1 or source.startswith("[") else (source, "", "")
    host = host.strip("[]") or source
    number = int(port) if port.isdigit() else 0
    return (IPv6Address if ":" in host else IPv4Address)("TCP", host, number)


def explainConnection(frontend: Any, source: str = "127.0.0.1") -> dict[str, Any]:
    """
    Where a tcp frontend would send a new connection from C{source} now,
    and why, connecting nothing (SNI routes are not looked at: there is
    no ClientHello).

    @return: C{frontend}, C{route}, C{backend}, C{server} (a name, or
        C{None}) and C{reasons}, as L{lbkit.http._explain.explainRequest}.
    """
    backend = frontend.backend
    context = Context(client=clientAddress(source), frontend=frontend.name)
    reason = f"backend {backend.name}"
    try:
        server, reasons = explainChoice(backend, context)
    except NoServerAvailable:
        server, reasons = None, [*context.notes.get(NOTE, ()), "connection closed"]
    return {"frontend": frontend.name, "route": reason, "backend": backend.name,
            "server": server.name if server is not None else None, "reasons": [reason, *reasons]}
