# -*- test-case-name: tests.test_discovery -*-
"""
Servers from DNS service discovery: a backend whose servers are the
records of a name, looked up again on their TTL while the balancer runs::

    from lbkit import Backend
    from lbkit.discovery import SRV, A

    web = Backend("web", servers=SRV("_http._tcp.web.example.test", nameservers=["127.0.0.1:5353"]))
    api = Backend("api", servers=A("api.example.test", port=8080, server=dict(maxconn=100)))

L{SRV} and L{A} provide L{IServerSource <lbkit.interfaces.IServerSource>};
L{DiscoveryService} is the refresh loop they run (TTL floor and ceiling,
back-off, logging), reusable by a source of your own: give it a
C{lookup} returning L{Answer}s.  See docs/discovery.md.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Callable, Mapping, Sequence

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, TimeoutError, gatherResults, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IResolver
from twisted.logger import Logger
from twisted.names import dns
from twisted.names import error as dnserror
from twisted.names.client import Resolver
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit._model import Server
from lbkit.error import ConfigError
from lbkit.interfaces import IServerSource

__all__ = ["SRV", "A", "Answer", "DiscoveryService", "NoRecords", "srvWeight", "parseNameserver"]

_log = Logger(namespace="lbkit.discovery")

#: Why a lookup failed, by exception class, for the log.
_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (dnserror.DNSNameError, "NXDOMAIN"), (dnserror.DNSServerError, "SERVFAIL"),
    (dnserror.DNSQueryRefusedError, "REFUSED"), (dnserror.DNSQueryTimeoutError, "timeout"), (TimeoutError, "timeout"),
)


class NoRecords(Exception):
    """An answer that names no usable server (no records, or no address for any target)."""


@attrs.frozen
class Answer:
    """
    What one lookup found.

    @ivar servers: New L{Server}s, of distinct names, in a stable order.
    @ivar ttl: Seconds the answer may be kept (the smallest record TTL).
    @ivar notes: Things worth a warning (a target without an address).
    """

    servers: Sequence[Server]
    ttl: float
    notes: Sequence[str] = ()


def srvWeight(weight: int) -> int:
    """
    The server weight (1-256) of an SRV record's weight (0-65535):
    C{ceil(weight / 256)}, as HAProxy computes it, except that weight 0
    gives 1, not 0: a weight-0 target stays usable (RFC 2782: "a very
    small chance of being selected").
    """
    return max(1, (int(weight) + 255) // 256)


def parseNameserver(text: object) -> tuple[str, int]:
    """
    C{(host, port)} of C{"127.0.0.1"}, C{"127.0.0.1:5353"},
    C{"::1"} or C{"[::1]:5353"} (port 53 when not given).

    @raise ConfigError: when C{text} is not an IP address with an optional port.
    """
    if not isinstance(text, str):
        raise ConfigError(f"nameserver must be an 'address[:port]' string, not {text!r}")
    host, port = text, "53"
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"nameserver {text!r}: expected '[v6addr]:port'")
        port = rest[1:] if rest else port
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"nameserver {text!r}: {host!r} is not an IP address (e.g. '127.0.0.1:53')") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"nameserver {text!r}: port {port!r} is not a number from 1 to 65535")
    return host, int(port)


def _systemNameservers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ConfigError(f"no nameservers given and {path} cannot be read: {e}") from None
    found = [parseNameserver(ln.split()[1]) for ln in lines if ln.split()[:1] == ["nameserver"] and len(ln.split()) > 1]
    if not found:
        raise ConfigError(f"no nameservers given and {path} lists none")
    return found


def _checkName(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name.strip(". "):
        raise ConfigError(f"{kind}: the name to look up must be a non-empty domain name, not {name!r}")
    bare = name.rstrip(".")
    labels = bare.split(".")
    if len(bare) > 253 or any(not 0 < len(label) < 64 or any(c.isspace() for c in label) for label in labels):
        raise ConfigError(f"{kind}: {name!r} is not a valid domain name")
    return bare


def _positive(kind: str, what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{kind}: {what} must be a positive number of seconds, not {value!r}")
    return float(value)


def _address(payload: Any) -> str:
    if isinstance(payload, dns.Record_AAAA):
        return socket.inet_ntop(socket.AF_INET6, payload.address)
    return str(payload.dottedQuad())


def _addressOrder(ip: str) -> tuple[int, int]:
    parsed = ipaddress.ip_address(ip)
    return (parsed.version, int(parsed))


class DiscoveryService(Service):
    """
    Runs C{lookup} now and again while running: after an answer, once its
    TTL has passed (at least C{minInterval}, at most C{maxInterval}
    seconds); after a failure, at C{minInterval}, doubling with each
    failure in a row up to C{maxInterval}.  Each answer whose servers
    (names, addresses, weights, backup flags) differ from the last is
    passed to C{deliver}.  A failure delivers nothing (the last servers
    stay) and is logged once, not at every retry; so is the recovery.

    Stopping cancels the next lookup; a lookup in flight is left to end
    (Twisted's DNS client cannot cancel one: at most its timeout), and
    L{stopService}'s L{Deferred} fires then.

    @ivar servers: The servers last delivered (empty before the first).
    @ivar failures: Lookups failed in a row.
    @ivar lastError: Why the last lookup failed, or C{None}.
    """

    def __init__(
        self,
        lookup: Callable[[], Deferred[Answer]],
        deliver: Callable[[Sequence[Server]], object],
        clock: Any,
        *,
        minInterval: float = 1.0,
        maxInterval: float = 300.0,
        description: str = "discovery",
    ) -> None:
        self.lookup = lookup
        self.deliver = deliver
        self.clock = clock
        self.minInterval = minInterval
        self.maxInterval = maxInterval
        self.description = description
        self.servers: Sequence[Server] = ()
        self.failures = 0
        self.lastError: str | None = None
        self._signature: tuple[Any, ...] | None = None
        self._notes: Sequence[str] = ()
        self._call: IDelayedCall | None = None
        self._pending: Deferred[None] | None = None
        self._idle: list[Deferred[None]] = []
        self._watchers: list[Deferred[Sequence[Server]]] = []
        self._lookedUp: list[Deferred[None]] = []

    def startService(self) -> None:
        Service.startService(self)
        if self._pending is None:
            self._run()

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        if self._pending is None:
            return None
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def whenDelivered(self) -> Deferred[Sequence[Server]]:
        """A L{Deferred} firing with the servers of the next delivery (for tests and tools)."""
        d: Deferred[Sequence[Server]] = Deferred()
        self._watchers.append(d)
        return d

    def whenLookedUp(self) -> Deferred[None]:
        """A L{Deferred} firing once the lookup in flight, else the next, has ended (for tests and tools)."""
        d: Deferred[None] = Deferred()
        self._lookedUp.append(d)
        return d

    def _run(self) -> None:
        self._call = None
        d = maybeDeferred(self.lookup).addCallbacks(self._answered, self._failed)
        self._pending = d.addErrback(self._unexpected)
        d.addBoth(self._ended)

    def _unexpected(self, failure: Failure) -> None:
        _log.failure("lbkit: {what}: unexpected error", failure, what=self.description)
        if self._call is None:
            self._failed(failure)  # never stop looking

    def _ended(self, ignored: object) -> None:
        self._pending = None
        waiting, self._idle, self._lookedUp = self._idle + self._lookedUp, [], []
        for d in waiting:
            d.callback(None)

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._call = self.clock.callLater(delay, self._run)

    def _answered(self, answer: Answer) -> None:
        if not self.running:
            return
        servers = list(answer.servers)
        signature = tuple((s.name, s.address, s.weight, s.backup) for s in servers)
        if signature != self._signature:
            try:
                self.deliver(servers)
            except ConfigError as e:
                self._failed(Failure(e))
                return
            self._signature, self.servers = signature, servers
            watchers, self._watchers = self._watchers, []
            for d in watchers:
                d.callback(servers)
        if self.lastError is not None:
            _log.info("lbkit: {what}: answers again ({count} servers) after {failures} failed lookups",
                      what=self.description, count=len(servers), failures=self.failures)
        self.failures, self.lastError = 0, None
        if answer.notes and list(answer.notes) != list(self._notes):
            _log.warn("lbkit: {what}: {notes}", what=self.description, notes="; ".join(answer.notes))
        self._notes = list(answer.notes)
        self._schedule(min(max(float(answer.ttl), self.minInterval), self.maxInterval))

    def _failed(self, failure: Failure) -> None:
        if not self.running:
            return
        reason = next((why for kind, why in _REASONS if failure.check(kind)), None) or (
            str(failure.value) or type(failure.value).__name__)
        self.failures += 1
        delay = min(self.minInterval * 2 ** min(self.failures - 1, 30), self.maxInterval)
        if reason != self.lastError:
            _log.error(
                "lbkit: {what}: lookup failed ({reason}); keeping the {count} servers found before,"
                " retrying in {delay:g}s, then backing off up to {most:g}s",
                what=self.description, reason=reason, count=len(self.servers), delay=delay, most=self.maxInterval,
            )
        self.lastError = reason
        self._schedule(delay)


class _DNSSource:
    """What L{SRV} and L{A} share: settings, checks, and the service."""

    kind = "DNS"

    def __init__(
        self,
        name: str,
        *,
        port: int | None,
        nameservers: Sequence[str] | None,
        resolver: IResolver | None,
        minInterval: float,
        maxInterval: float,
        timeout: float | Sequence[float],
        server: Mapping[str, Any] | None,
        fixed: Sequence[str],
    ) -> None:
        kind = self.kind
        self.name = _checkName(kind, name)
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            raise ConfigError(f"{kind} {name!r}: port must be a number from 1 to 65535, not {port!r}")
        self.port = port
        if resolver is not None and nameservers is not None:
            raise ConfigError(f"{kind} {name!r}: give nameservers or resolver, not both")
        if resolver is not None and not IResolver.providedBy(resolver):
            raise ConfigError(f"{kind} {name!r}: resolver={resolver!r} does not provide twisted's IResolver")
        self.resolver = resolver
        if resolver is not None:
            self.nameservers: tuple[tuple[str, int], ...] = ()
        elif nameservers is None:
            self.nameservers = tuple(_systemNameservers())
        elif isinstance(nameservers, str) or not nameservers:
            raise ConfigError(f"{kind} {name!r}: nameservers must be a non-empty list such as ['127.0.0.1:53']")
        else:
            self.nameservers = tuple(parseNameserver(n) for n in nameservers)
        self.minInterval = _positive(kind, "minInterval", minInterval)
        self.maxInterval = _positive(kind, "maxInterval", maxInterval)
        if self.maxInterval < self.minInterval:
            raise ConfigError(f"{kind} {name!r}: maxInterval ({maxInterval!r}) is below minInterval ({minInterval!r})")
        steps = [timeout] if isinstance(timeout, (int, float)) else list(timeout)
        self.timeout = tuple(_positive(kind, "timeout", t) for t in steps) or (1.0,)
        self.server = dict(server or {})
        for key in ("name", "address", *fixed):
            if key in self.server:
                raise ConfigError(f"{kind} {name!r}: server={{{key!r}: ...}}: {key} comes from the DNS records")
        try:
            Server("template", "127.0.0.1:1", **self.server)
        except TypeError as e:
            raise ConfigError(f"{kind} {name!r}: server={self.server!r}: {e}") from None

    def __repr__(self) -> str:
        port = f", port={self.port}" if self.port is not None and self.kind == "A" else ""
        return f"{self.kind}({self.name!r}{port})"

    def _key(self) -> tuple[Any, ...]:
        return (
            type(self), self.name, self.port, self.nameservers, id(self.resolver), self.minInterval,
            self.maxInterval, self.timeout, sorted(self.server.items(), key=repr), vars(self).get("ignoreWeight"),
        )

    def sameAs(self, other: Any) -> bool:
        """Whether C{other} is of the same class with the same settings."""
        return isinstance(other, _DNSSource) and self._key() == other._key()

    def makeService(self, reactor: Any, deliver: Callable[[Sequence[Server]], object]) -> DiscoveryService:
        """A L{DiscoveryService} looking this name up through C{reactor}."""
        resolver: Any = self.resolver
        if resolver is None:
            resolver = Resolver(servers=list(self.nameservers), reactor=reactor, timeout=self.timeout)
        return DiscoveryService(
            lambda: self.lookup(resolver), deliver, reactor,
            minInterval=self.minInterval, maxInterval=self.maxInterval, description=f"discovery {self!r}",
        )

    def lookup(self, resolver: Any) -> Deferred[Answer]:
        """Look the name up once with C{resolver}, an L{IResolver}."""
        raise NotImplementedError()

    def _server(self, name: str, ip: str, port: int, **settings: Any) -> Server:
        address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        return Server(name, address, **{**self.server, **settings})

    def _addresses(self, resolver: Any, name: str) -> Deferred[list[tuple[str, int]]]:
        """The A addresses of C{name}, else its AAAA ones, with their TTLs."""

        def found(result: Any, kind: int) -> Any:
            records = [(_address(rr.payload), rr.ttl) for rr in result[0] if rr.type == kind]
            if records or kind == dns.AAAA:
                return records
            return resolver.lookupIPV6Address(name, timeout=self.timeout).addCallback(found, dns.AAAA)

        return resolver.lookupAddress(name, timeout=self.timeout).addCallback(found, dns.A)  # type: ignore[no-any-return]


@implementer(IServerSource)
class SRV(_DNSSource):
    """
    The servers of a DNS SRV name (C{_service._proto.name}): one per
    record, named C{"target:port"}, at the target's address (from the
    answer's additional section, else looked up: A, else AAAA; the
    lowest address when it has several).

    The records of the lowest priority value are the primary servers,
    the others C{backup=True}; the weight is L{srvWeight} of the record's
    (unless C{ignoreWeight}: then C{server}'s, default 1).

    @param name: The SRV name, e.g. C{"_http._tcp.web.example.test"}.
    @param nameservers: C{"address[:port]"} strings; C{None}: those of
        C{/etc/resolv.conf}.
    @param resolver: An L{IResolver} to use instead of C{nameservers}.
    @param minInterval: The fewest seconds between two lookups (TTL floor),
        and the first retry after a failure.
    @param maxInterval: The most seconds between two lookups (TTL ceiling),
        and the longest retry back-off.
    @param timeout: Seconds to wait for an answer; a sequence: one query
        per step (Twisted's resolver timeouts).
    @param server: L{lbkit.Server} keyword arguments for every server
        (C{maxconn}, C{sendProxy}, C{slowstart}, C{tls}...).
    @param ignoreWeight: Take the weight from C{server}, not the records
        (HAProxy's C{resolve-opts ignore-weight}).
    @raise ConfigError: when a setting is wrong.
    """

    kind = "SRV"

    def __init__(
        self,
        name: str,
        *,
        nameservers: Sequence[str] | None = None,
        resolver: IResolver | None = None,
        minInterval: float = 1.0,
        maxInterval: float = 300.0,
        timeout: float | Sequence[float] = (1.0, 2.0),
        server: Mapping[str, Any] | None = None,
        ignoreWeight: bool = False,
    ) -> None:
        self.ignoreWeight = bool(ignoreWeight)
        _DNSSource.__init__(
            self, name, port=None, nameservers=nameservers, resolver=resolver, minInterval=minInterval,
            maxInterval=maxInterval, timeout=timeout, server=server,
            fixed=("port",) if ignoreWeight else ("port", "weight"),
        )

    def lookup(self, resolver: Any) -> Deferred[Answer]:
        """Look the SRV records up once, then any target's address missing from the answer."""
        d = resolver.lookupService(self.name, timeout=self.timeout)
        return d.addCallback(self._gotRecords, resolver)  # type: ignore[no-any-return]

    def _gotRecords(self, result: Any, resolver: Any) -> Deferred[Answer]:
        answers, authority, additional = result
        records = [rr.payload for rr in answers if rr.type == dns.SRV and str(rr.payload.target).rstrip(".")]
        if not records:
            raise NoRecords(f"no SRV records for {self.name}")
        ttl = min(rr.ttl for rr in answers if rr.type == dns.SRV)
        known: dict[str, list[tuple[str, int]]] = {}
        for rr in additional:
            if rr.type in (dns.A, dns.AAAA):
                known.setdefault(str(rr.name).lower().rstrip("."), []).append((_address(rr.payload), rr.ttl))
        missing = sorted({str(r.target).lower().rstrip(".") for r in records} - set(known))
        notes: list[str] = []

        def resolved(addresses: list[tuple[str, int]], target: str) -> None:
            known[target] = addresses
            if not addresses:
                notes.append(f"SRV target {target} has no address")

        def unresolved(failure: Failure, target: str) -> None:
            notes.append(f"SRV target {target} has no address ({type(failure.value).__name__})")

        lookups = [self._addresses(resolver, t).addCallback(resolved, t).addErrback(unresolved, t) for t in missing]
        return gatherResults(lookups).addCallback(lambda _: self._answer(records, ttl, known, notes))

    def _answer(self, records: list[Any], ttl: int, known: dict[str, list[tuple[str, int]]], notes: list[str]) -> Answer:
        usable = [r for r in records if known.get(str(r.target).lower().rstrip("."))]
        if not usable:
            raise NoRecords(f"no SRV target of {self.name} has an address")
        primary = min(r.priority for r in usable)
        servers: dict[str, Server] = {}
        ttls = [ttl]
        for r in sorted(usable, key=lambda r: (r.priority, str(r.target).lower(), r.port, -r.weight)):
            target = str(r.target).lower().rstrip(".")
            name = f"{target}:{r.port}"
            if name in servers:
                continue
            ip, addressTTL = min(known[target], key=lambda pair: _addressOrder(pair[0]))
            ttls.append(addressTTL)
            settings: dict[str, Any] = {"backup": bool(self.server.get("backup")) or r.priority > primary}
            if not self.ignoreWeight:
                settings["weight"] = srvWeight(r.weight)
            servers[name] = self._server(name, ip, r.port, **settings)
        return Answer(list(servers.values()), min(ttls), notes)


@implementer(IServerSource)
class A(_DNSSource):
    """
    The servers of a DNS name's A records, one per address, named
    C{"address:port"}, all on C{port}, in address order.

    The other parameters are L{SRV}'s (C{server} may set C{weight} and
    C{backup} here).

    @param name: The name, e.g. C{"web.example.test"}.
    @param port: The port of every server.
    @raise ConfigError: when a setting is wrong.
    """

    kind = "A"

    def __init__(
        self,
        name: str,
        port: int,
        *,
        nameservers: Sequence[str] | None = None,
        resolver: IResolver | None = None,
        minInterval: float = 1.0,
        maxInterval: float = 300.0,
        timeout: float | Sequence[float] = (1.0, 2.0),
        server: Mapping[str, Any] | None = None,
    ) -> None:
        _DNSSource.__init__(
            self, name, port=port, nameservers=nameservers, resolver=resolver, minInterval=minInterval,
            maxInterval=maxInterval, timeout=timeout, server=server, fixed=("port",),
        )

    def lookup(self, resolver: Any) -> Deferred[Answer]:
        """Look the A records up once."""
        d = resolver.lookupAddress(self.name, timeout=self.timeout)
        return d.addCallback(self._gotRecords)  # type: ignore[no-any-return]

    def _gotRecords(self, result: Any) -> Answer:
        records = [rr for rr in result[0] if rr.type == dns.A]
        if not records:
            raise NoRecords(f"no A records for {self.name}")
        port, ips = self.port or 0, sorted({_address(rr.payload) for rr in records}, key=_addressOrder)
        servers = [self._server(f"{ip}:{port}", ip, port) for ip in ips]
        return Answer(servers, min(rr.ttl for rr in records))
