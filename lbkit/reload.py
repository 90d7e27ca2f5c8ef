# -*- test-case-name: tests.test_reload -*-
"""
Applying a site file again to a running L{LoadBalancerService}, without
dropping a connection (SIGHUP, or the admin API's reload).

Listeners are matched by endpoint string, backends by name, servers by
name within their backend:

  - a listener on the same endpoint, of the same kind, keeps its port and
    its live connections; a frontend takes the new settings in place
    (backend, routes, timeouts, name, log);
  - a new endpoint starts listening; a removed one stops listening at once
    and its connections get the grace period;
  - a listener whose kind changed on the same endpoint is stopped, then the
    new one listens (a short window where connections are refused);
  - a backend of the same name stays the same object and takes the new
    definition with L{Backend.updateFrom <lbkit.Backend.updateFrom>}: its
    servers keep their state and counters, changed weights apply, new
    servers join, removed ones drain and leave once idle;
  - health checks keep running for the servers that stay; new servers get
    a monitor; a changed check restarts the backend's checks;
  - a traffic table (L{lbkit.traffic.Table}) of the same name, key and
    counters keeps its keys and counts;
  - a backend whose servers come from discovery (L{lbkit.discovery}) keeps
    its servers and its running discovery when the source is the same
    (L{IServerSource.sameAs <lbkit.interfaces.IServerSource.sameAs>}); a
    changed source restarts it.

Everything that can fail (loading, two backends with one name, opening the
access logs, listening on new endpoints) is done before anything running
changes; a failure leaves the running configuration as it was.

It does not import L{lbkit.service}: it works on a L{RunningService},
the public methods the running service offers it.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from twisted.application.service import IService
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from lbkit._backend import Backend
from lbkit._explain import enableExplain
from lbkit._listening import ListenFailed, listeningServices
from lbkit._settings import samePolicy
from lbkit.config import Site
from lbkit.error import ConfigError
from lbkit.traffic import carryOver

__all__ = ["applySite", "matchListeners", "RunningService"]

_log = Logger(namespace="lbkit")

#: Attributes of a frontend that a reload does not copy onto the running one.
_KEEP = frozenset(["definedAt", "factories", "endpoint", "description"])


class RunningService(Protocol):
    """
    What L{applySite} needs of the running service
    (L{lbkit.service.LoadBalancerService} provides it).

    @ivar reactor: The reactor its listeners run on.
    @ivar listen: Its C{listen} list (a reload sets the new one).
    @ivar site: The site file it runs (a reload sets the new one).
    """

    reactor: Any
    listen: list[Any]
    site: Site | None

    def backends(self) -> list[Backend]:
        """Every backend its listeners send traffic to, once each."""

    def effectiveAccessLog(self) -> Sequence[Any]:
        """The access-log destinations in force (from C{site} unless given)."""

    def replaceAccessLog(self, destinations: Sequence[Any]) -> None:
        """Send access lines to C{destinations}; raise L{ConfigError}, changing nothing, if one cannot open."""

    def addItem(self, item: Any) -> IService:
        """Build the service of C{item} and add it."""

    def adoptChild(self, item: Any, child: IService) -> None:
        """Add C{child}, already built (and listening) for C{item}, as its service."""

    def retire(self, item: Any) -> Deferred[None]:
        """Stop C{item}'s service (its connections get the grace period); fires once its port is free."""

    def syncHealth(self) -> list[str]:
        """Bring the health checks in line with the backends; one line per change."""

    def syncStores(self) -> list[str]:
        """Run the stores the backends' persistence uses now, and only those; one line per change."""
    def syncDiscovery(self) -> list[str]:
        """Bring the server discoveries in line with the backends; one line per change."""

    def bindSite(self) -> None:
        """Tell the items that show the whole site (stats pages) what it is now."""


def _pageSettings(page: Any) -> tuple[Any, ...]:
    return (getattr(page, "socket", None), getattr(page, "socketMode", None), getattr(page, "refresh", None))


def _sameAdmin(old: Any, new: Any) -> bool:
    before, after = getattr(old, "admin", None), getattr(new, "admin", None)
    if before is None or after is None:
        return before is after
    return bool(before.sameAs(after))


def _compatible(old: Any, new: Any) -> bool:
    """Whether C{new} can take over C{old}'s port and connections."""
    if type(old) is not type(new):
        return False
    if getattr(old, "factory", None) is not getattr(new, "factory", None):
        return False
    if not hasattr(old, "factories") and (_pageSettings(old) != _pageSettings(new) or not _sameAdmin(old, new)):
        # a stats page fixes its settings (admin users, socket, refresh) when
        # it starts: listen again with the new ones, never keep stale ones
        return False
    oldTLS: Any = getattr(old, "tls", None)
    newTLS: Any = getattr(new, "tls", None)
    if hasattr(oldTLS, "adopt") and type(oldTLS) is type(newTLS):
        return True  # the running listener adopts the re-read certificates
    return samePolicy(oldTLS, newTLS)


def matchListeners(
    running: Sequence[Any], loaded: Sequence[Any]
) -> tuple[list[tuple[Any, Any]], list[Any], list[tuple[Any, Any]], list[Any]]:
    """
    Pair the running listeners with the loaded ones by endpoint string.

    @return: C{(kept, added, replaced, removed)}: pairs (old, new) that
        keep the old port, new listeners, pairs whose kind changed, and
        old listeners with no counterpart.
    """
    byEndpoint = {item.endpoint: item for item in running}
    kept: list[tuple[Any, Any]] = []
    added: list[Any] = []
    replaced: list[tuple[Any, Any]] = []
    matched: set[int] = set()
    for new in loaded:
        old = byEndpoint.get(new.endpoint)
        if old is None:
            added.append(new)
            continue
        matched.add(id(old))
        (kept if _compatible(old, new) else replaced).append((old, new))
    removed = [old for old in running if id(old) not in matched]
    return kept, added, replaced, removed


def _retarget(item: Any, mapping: dict[int, Backend]) -> None:
    """Point C{item}'s backend references at the backends that run on."""
    for name in ("backend", "default"):
        value = getattr(item, name, None)
        if isinstance(value, Backend):
            setattr(item, name, mapping.get(id(value), value))
    rules = list(getattr(item, "requestRules", ()))
    for route in getattr(item, "routes", ()):
        if isinstance(route.backend, Backend):
            route.backend = mapping.get(id(route.backend), route.backend)
        rules.extend(getattr(route, "requestRules", ()))
    for rule in rules:  # rules that send to a backend of their own (http.Mirror)
        if isinstance(getattr(rule, "backend", None), Backend):
            rule.backend = mapping.get(id(rule.backend), rule.backend)


def _takeOver(old: Any, new: Any) -> None:
    """Give the running frontend C{old} the settings of C{new}."""
    oldTLS: Any = getattr(old, "tls", None)
    newTLS: Any = getattr(new, "tls", None)
    for name, value in vars(new).items():
        if name in _KEEP or (name == "tls" and hasattr(oldTLS, "adopt")):
            continue
        setattr(old, name, value)
    if hasattr(oldTLS, "adopt") and newTLS is not None:
        # certificate files were read again when the site file loaded
        oldTLS.adopt(newTLS)
    for factory in getattr(old, "factories", ()):
        if hasattr(factory, "backend") and hasattr(old, "backend"):
            factory.backend = old.backend
        pool = getattr(factory, "pool", None)
        if pool is not None and hasattr(old, "maxIdlePerServer"):
            pool.maxIdle = old.maxIdlePerServer
            pool.idleTimeout = old.poolIdleTimeout
        updateTimeouts = getattr(factory, "updateTimeouts", None)
        if updateTimeouts is not None:
            updateTimeouts()


def applySite(service: RunningService, site: Site) -> Deferred[list[str]]:
    """
    Apply C{site} to the running C{service}.

    @return: Fires with one line per change, once replaced listeners listen
        again.
    @raise ConfigError: before changing anything, when the new site has two
        backends with one name or an access log cannot be opened.
    @raise lbkit.service.ListenFailed: before changing anything, when a new
        endpoint cannot be listened on.
    """
    reactor = service.reactor
    kept, added, replaced, removed = matchListeners(service.listen, site.listen)

    # -- checks: nothing running changes if one fails -----------------------
    newBackends = site.backends()
    names: dict[str, Backend] = {}
    for backend in newBackends:
        if backend.name in names:
            raise ConfigError(f"{site.path}: two backends are named {backend.name!r}; a reload matches them by name")
        names[backend.name] = backend
    running = {b.name: b for b in service.backends()}
    mapping = {id(b): running.get(b.name, b) for b in newBackends}

    oldSite, service.site = service.site, site
    try:
        service.replaceAccessLog(service.effectiveAccessLog())
    except ConfigError:
        service.site = oldSite
        raise
    for item in site.listen:
        _retarget(item, mapping)
    started: list[Any] = []
    try:
        for item in added:
            child = item.makeService(reactor)
            child.privilegedStartService()
            started.append((item, child))
    except ListenFailed as e:
        for _, child in started:
            for listening in listeningServices(child):
                listening.stopListening()
        service.site = oldSite
        service.replaceAccessLog(service.effectiveAccessLog())
        e.message = f"{site.path}: {e.message}"
        raise

    # -- apply ---------------------------------------------------------------
    changes: list[str] = carryOver(service.listen, site.listen)  # stick tables keep their counts
    now = reactor.seconds()
    for backend in newBackends:
        old = running.get(backend.name)
        if old is None:
            changes.append(f"backend {backend.name} added")
        elif old is not backend:
            changes.extend(f"backend {old.name}: {c}" for c in old.updateFrom(backend, now))
    for old, new in kept:
        if hasattr(old, "factories"):
            _takeOver(old, new)
    effective = [next((o for o, n in kept if n is item), item) for item in site.listen]
    service.listen = effective
    for item in effective:  # a frontend that explains has its (running) backends explain
        if getattr(item, "explain", False):
            for backend in item.backends():
                enableExplain(backend)
    for item, child in started:
        service.adoptChild(item, child)
        changes.append(f"{_label(item)} added")
    for old in removed:
        service.retire(old)
        changes.append(f"{_label(old)} removed: stopped listening, connections finish")
    rebinding: list[Deferred[Any]] = []
    for old, new in replaced:
        changes.append(f"{_label(new)} replaced (listening again on {new.endpoint})")
        rebinding.append(service.retire(old).addCallback(_listenAgain, service, new))
    changes.extend(service.syncDiscovery())
    changes.extend(service.syncHealth())
    changes.extend(service.syncStores())
    service.bindSite()
    for line in changes:
        _log.info("lbkit: reload: {change}", change=line)
    _log.info("lbkit: reloaded {path}: {count} changes", path=site.path, count=len(changes))
    return gatherResults(rebinding).addCallback(lambda _: changes)


def _listenAgain(ignored: object, service: RunningService, item: Any) -> None:
    try:
        service.addItem(item)
    except ListenFailed as e:
        _log.error("lbkit: reload: {why}", why=str(e))


def _label(item: Any) -> str:
    name = getattr(item, "name", None)
    kind = "frontend" if hasattr(item, "factories") else type(item).__name__
    return f"{kind} {name or item.endpoint}"
