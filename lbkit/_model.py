# -*- test-case-name: tests.test_model -*-
"""
The server model: L{Server}, L{Context}, L{ServerState} and
L{ServerListenerMixin} (L{Backend <lbkit._backend.Backend>} is in
L{lbkit._backend}).
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from lbkit._address import parseAddress
from lbkit._latency import Latency
from lbkit._origin import definedAt
from lbkit.error import ConfigError, DrainTimeout
from lbkit.interfaces import IServerListener, IStickyCount

if TYPE_CHECKING:
    # Backend (lbkit._backend) is a layer above: for annotations only
    from lbkit._backend import Backend

__all__ = ["Server", "Context", "ServerState", "ServerListenerMixin", "setEndpointBuilder"]

_tlsLog = Logger(namespace="lbkit.tls")

#: Builds the endpoint L{Server.endpoint} returns; see L{setEndpointBuilder}.
EndpointBuilder = Callable[["Server", Any, float], IStreamClientEndpoint]
_endpointBuilder: Optional[EndpointBuilder] = None


def setEndpointBuilder(builder: EndpointBuilder) -> None:
    """
    Say how L{Server.endpoint} builds a server's client endpoint.

    The model holds the settings (address, TLS keywords) and no connecting
    or TLS code: the C{lbkit} package installs L{serverEndpoint
    <lbkit._connect.serverEndpoint>} here when it is imported, which is
    before any of its modules is.
    """
    global _endpointBuilder
    _endpointBuilder = builder


class ServerState(Enum):
    """
    The administrative and health state of a server.

      - C{UP}: takes new traffic.
      - C{DOWN}: failed its health checks; takes no traffic.
      - C{DRAIN}: keeps its existing and sticky sessions, takes no new ones.
      - C{MAINT}: takes no traffic at all (set by an operator).
    """

    UP = "UP"
    DOWN = "DOWN"
    DRAIN = "DRAIN"
    MAINT = "MAINT"


@implementer(IServerListener)
class ServerListenerMixin:
    """
    An L{IServerListener} whose methods do nothing: subclass it and
    override only the changes you care about (txtorcon's
    C{StreamListenerMixin}).  The contract each method keeps (order,
    re-entrancy, raising) is L{IServerListener}'s.
    """

    def stateChanged(self, server: Server, old: ServerState, new: ServerState, reason: str) -> None:
        """C{server} went from C{old} to C{new}; does nothing here."""

    def weightChanged(self, server: Server, old: int, new: int) -> None:
        """C{server}'s weight (or slow-start ramp) changed; does nothing here."""


@attrs.define(eq=False)
class Context:
    """
    What is known about a client when a server is chosen for it.

    @ivar client: The client's address (after any PROXY protocol header).
    @ivar frontend: The name of the frontend that accepted it.
    @ivar request: In http mode, the parsed request; C{None} in tcp mode.
    @ivar tried: Servers already tried for this connection (retries skip
        them).
    """

    client: IAddress | None = None
    frontend: str = ""
    request: Any = None
    tried: set[Server] = attrs.Factory(set)
    #: Scratch space for policies (e.g. what a persistence strategy read
    #: from the request, for its response rewriting).
    notes: dict[str, Any] = attrs.Factory(dict)
    #: C{(watcher, token)} pairs told when the request (http) or the
    #: connection (tcp) ends, by L{ended}: what stick tables track
    #: (L{lbkit.traffic}); C{None} when nothing watches.
    watchers: Optional[list[tuple[Any, Any]]] = None

    def ended(self, status: int, bytesIn: int, bytesOut: int) -> None:
        """
        The request or connection ended (once): call each watcher's
        C{ended(token, status, bytesIn, bytesOut)}; C{status} is 0 in tcp
        mode.
        """
        watchers, self.watchers = self.watchers, None
        if watchers is not None:
            for watcher, token in watchers:
                watcher.ended(token, status, bytesIn, bytesOut)


class Server:
    """
    One server behind a backend.

    @ivar name: The server's name, unique in its backend.
    @ivar host: Its host name or IP address.
    @ivar port: Its port.
    @ivar weight: Its current weight (0-256); changed with L{setWeight}.
    @ivar maxconn: At most this many concurrent connections, or C{None}.
    @ivar backup: Whether it takes traffic only when no normal server is up.
    @ivar state: Its L{ServerState}.
    @ivar active: Connections in progress (including connects in flight).
    @ivar latency: The L{Latency} of its requests, set by a stats page that
        shows them (L{lbkit.stats}); else C{None}, and nothing is timed.
    @ivar proto: How http mode speaks to it: C{None} (HTTP/1.1), C{"h2"}
        or C{"h2c"} (see docs/http.md, "HTTP/2 and gRPC to servers").
    """

    latency: Optional[Latency] = None

    def __init__(
        self,
        name: str,
        address: Union[str, IStreamClientEndpoint],
        weight: int = 1,
        maxconn: int | None = None,
        backup: bool = False,
        *,
        sendProxy: int | None = None,
        slowstart: float = 0.0,
        cookie: str | None = None,
        tls: bool = False,
        ca: str | None = None,
        sni: str | None = None,
        verify: bool = True,
        proto: str | None = None,
    ) -> None:
        self.definedAt = definedAt()
        if not isinstance(name, str) or not name:
            raise ConfigError(f"server name must be a non-empty string, not {name!r}")
        self.name = name
        #: The endpoint given instead of a C{"host:port"} address, or C{None}.
        self.givenEndpoint: IStreamClientEndpoint | None = None
        if IStreamClientEndpoint.providedBy(address):
            self.givenEndpoint = address  # type: ignore[assignment]
            self.host, self.port = "", 0
            self.address = repr(address)
        else:
            self.host, self.port = parseAddress(address)  # type: ignore[arg-type]
            self.address = address
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 256:
            raise ConfigError(f"server {name!r}: weight must be an integer from 0 to 256, not {weight!r}")
        self.weight = weight
        self.initialWeight = weight
        if maxconn is not None and (not isinstance(maxconn, int) or maxconn < 1):
            raise ConfigError(f"server {name!r}: maxconn must be a positive integer or None, not {maxconn!r}")
        self.maxconn = maxconn
        self.backup = bool(backup)
        if sendProxy not in (None, 1, 2):
            raise ConfigError(f"server {name!r}: sendProxy must be None, 1 or 2, not {sendProxy!r}")
        self.sendProxy = sendProxy
        self.slowstart = float(slowstart)
        self.cookie = name if cookie is None else cookie
        # "h2" (HTTP/2 over TLS with ALPN), "h2c" (cleartext HTTP/2, prior
        # knowledge) or None (HTTP/1.1): how http mode speaks to it
        self.proto = proto
        if proto is not None:
            if proto not in ("h2", "h2c"):
                raise ConfigError(f"server {name!r}: proto must be None, 'h2' or 'h2c', not {proto!r}")
            if proto == "h2c" and tls:
                raise ConfigError(f"server {name!r}: proto='h2c' is cleartext; use proto='h2' for HTTP/2 over TLS")
            if sendProxy is not None:
                raise ConfigError(f"server {name!r}: sendProxy= does not apply to proto={proto!r} (shared connections)")
            tls = tls or proto == "h2"
        self._initTLS(tls, ca, sni, verify)
        self.state = ServerState.UP
        self.backend: Backend | None = None
        self.id = 0
        self._listeners: list[IServerListener] = []
        # live counters
        self.active = 0
        self.maxActive = 0
        self.total = 0
        self.connectFailures = 0
        self.retries = 0
        self.bytesIn = 0
        self.bytesOut = 0
        self.lastChange = 0.0
        #: http mode: requests answered, and responses by status class.
        self.requests = 0
        self.responses = {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "other": 0}
        #: 0.0-1.0 while in slow start (set by the health monitor), else 1.0.
        self.rampFactor = 1.0
        #: Live sessions on this server; each has an C{abortSession()} method
        #: (used to shut sessions down when the server is marked DOWN).
        self.sessions: set[Any] = set()
        #: The passive-health observers (L{addObserver}); the proxies skip
        #: L{observe} when there are none.
        self.observers: list[Callable[[Server, bool, str], None]] = []
        #: Whether the health monitor probes this server (the admin API
        #: can pause checks).
        self.checkEnabled = True
        #: The last health-check result (set by the monitor), or C{None}.
        self.lastCheck: Any = None
        #: The health monitor checking this server, set by it while it runs
        #: (see L{lbkit.health.monitorFor}), or C{None}.
        self.healthMonitor: Any = None

    def __repr__(self) -> str:
        return f"<Server {self.name} {self.address} {self.state.value}>"

    def _initTLS(self, tls: bool, ca: str | None, sni: str | None, verify: bool) -> None:
        """
        Check the TLS keyword arguments and keep them as settings; the
        connection creator is built from them by L{lbkit._connect} (when
        the site is checked at load, so a bad C{ca} file is a configuration
        error there, or on the first connect).
        """
        self.tls = bool(tls)
        self.ca = ca
        self.sni = sni
        self.verify = bool(verify)
        #: The TLS connection creator of a C{tls=True} server, once built
        #: (see L{lbkit._connect.tlsCreatorOf}); C{None} before and without TLS.
        self.tlsCreator: Any = None
        if not self.tls:
            given = [k for k, v in (("ca", ca), ("sni", sni)) if v is not None] + ([] if verify else ["verify"])
            if given:
                raise ConfigError(f"server {self.name!r}: {', '.join(given)}= only apply with tls=True")
            return
        if sni is not None and (not isinstance(sni, str) or not sni):
            raise ConfigError(f"server {self.name!r}: sni must be a host name, not {sni!r}")
        if not self.tlsServerName:
            raise ConfigError(f"server {self.name!r}: tls=True with an endpoint address needs sni=")
        if not self.verify:
            _tlsLog.warn(
                # as lbkit.tls.clientCreator logs it
                "lbkit: {label}: TLS certificate verification is OFF (verify=False): the connection can be intercepted",
                label=f"server {self.name!r} ({self.address})",
            )

    @property
    def tlsServerName(self) -> str:
        """The name sent as SNI and checked on the certificate: C{sni}, else the host."""
        return self.sni or self.host

    def endpoint(self, reactor: Any, timeout: float = 30) -> IStreamClientEndpoint:
        """
        The client endpoint that connects to this server (TLS-wrapped when
        the server has C{tls=True}): L{lbkit._connect.serverEndpoint}.
        """
        if _endpointBuilder is None:
            raise RuntimeError("lbkit._connect is not loaded (import lbkit loads it)")
        return _endpointBuilder(self, reactor, timeout)

    @property
    def effectiveWeight(self) -> int:
        """
        The weight dynamic balancers use: C{weight}, scaled by C{rampFactor}
        while the server is in slow start (never below 1 for a non-zero
        weight).
        """
        factor = self.rampFactor
        if factor >= 1.0:
            return self.weight
        return max(1, int(self.weight * factor)) if self.weight else 0

    @property
    def fullName(self) -> str:
        """C{backend/server}, as logs show it."""
        return f"{self.backend.name if self.backend else '-'}/{self.name}"

    def hasFreeSlot(self) -> bool:
        """Whether one more connection stays within C{maxconn}."""
        return self.maxconn is None or self.active < self.maxconn

    def addListener(self, listener: IServerListener) -> None:
        """Subscribe C{listener} to this server's changes."""
        self._listeners.append(listener)

    def removeListener(self, listener: IServerListener) -> None:
        """Unsubscribe C{listener}."""
        self._listeners.remove(listener)

    def addObserver(self, observer: Callable[[Server, bool, str], None]) -> None:
        """
        Subscribe C{observer(server, ok, reason)} to the outcomes of live
        traffic (passive health checks): the proxies report each connect
        failure, each connect success, and in http mode each response.
        """
        self.observers.append(observer)

    def removeObserver(self, observer: Callable[[Server, bool, str], None]) -> None:
        """Unsubscribe an observer added with L{addObserver}."""
        self.observers.remove(observer)

    def setRampFactor(self, factor: float) -> None:
        """
        Set the slow-start factor (0.0-1.0) that scales L{effectiveWeight};
        listeners are told as of a weight change.
        """
        self.rampFactor = min(1.0, max(0.0, float(factor)))
        for listener in list(self._listeners):
            listener.weightChanged(self, self.weight, self.weight)

    def observe(self, ok: bool, reason: str = "") -> None:
        """
        Report one outcome of live traffic; called by the proxies.

        @param ok: Whether it went well.
        @param reason: Why not, e.g. C{"Layer4 connection problem"} or
            C{"Layer7 status 503"}.
        """
        for observer in self.observers:
            observer(self, ok, reason)

    def setState(self, state: ServerState, reason: str = "", now: float = 0.0) -> None:
        """
        Move to C{state}, telling every listener.  Setting the current state
        again does nothing.
        """
        old = self.state
        if old is state:
            return
        self.state = state
        self.lastChange = now
        for listener in list(self._listeners):
            listener.stateChanged(self, old, state, reason)

    def setWeight(self, weight: int) -> None:
        """
        Change the weight at run time (0 to 256); listeners are told.
        """
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 256:
            raise ValueError(f"weight must be an integer from 0 to 256, not {weight!r}")
        old, self.weight = self.weight, weight
        if old != weight:
            for listener in list(self._listeners):
                listener.weightChanged(self, old, weight)


    def drain(self, timeout: float | None = None, *, clock: Any = None, interval: float = 0.5) -> Deferred[Server]:
        """
        Put this server in DRAIN (it keeps its connections and sticky
        clients, takes no new ones) and wait until it has neither.

        The state is set as the admin API sets it (through the health
        monitor, when one runs, so that C{ready} later restores what the
        checks found).  A server already in DRAIN or MAINT keeps its
        state, and so does one DOWN (its clients went elsewhere already, and
        DRAIN would send its sticky ones back to it).  Sticky clients are counted when the backend's persistence
        provides L{lbkit.interfaces.IStickyCount} (a cookie strategy
        cannot: only connections count then).

        @param timeout: Seconds to wait at most, or C{None} (for ever).
        @param clock: What to look again with (an L{twisted.internet.interfaces.IReactorTime}); the
            global reactor if C{None}.
        @param interval: Seconds between two looks.
        @return: A L{Deferred} firing with this server once it has no
            connection and no sticky client left, or failing with
            L{lbkit.error.DrainTimeout} saying what is still there.
            Cancelling it stops the wait (the server stays in DRAIN).
        @raise ValueError: on a C{timeout} or C{interval} that is not a
            positive number (nothing changes then).
        """
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"drain: timeout must be None or a number of seconds over 0, not {timeout!r}")
        if not (isinstance(interval, (int, float)) and interval > 0):
            raise ValueError(f"drain: interval must be a number of seconds over 0, not {interval!r}")
        if clock is None:
            from twisted.internet import reactor as clock
        if self.state is ServerState.UP:
            monitor = self.healthMonitor
            if monitor is not None and getattr(monitor, "running", False):
                monitor.setAdmin(ServerState.DRAIN, "drain()")
            else:
                self.setState(ServerState.DRAIN, "drain()", clock.seconds())
        return _DrainWait(self, clock, timeout, interval).d

    def remaining(self) -> tuple[int, int]:
        """
        What keeps this server busy: C{(connections, sticky clients)}, the
        latter -1 when its backend's persistence cannot count them.
        """
        backend = self.backend
        persistence = backend.persistence if backend is not None else None
        sticky = -1
        if backend is not None and IStickyCount.providedBy(persistence):
            sticky = len(persistence.stickyClients(backend, self))  # type: ignore[union-attr]
        return max(self.active, len(self.sessions)), sticky


class _DrainWait:
    """The wait of one L{Server.drain}: look every C{interval} seconds."""

    def __init__(self, server: Server, clock: Any, timeout: float | None, interval: float) -> None:
        self.server = server
        self.clock = clock
        self.interval = interval
        self.deadline = None if timeout is None else clock.seconds() + timeout
        self.timeout = timeout
        self.call: Any = None
        self.d: Deferred[Server] = Deferred(self._cancel)
        self._look()

    def _cancel(self, d: Deferred[Server]) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None

    def _look(self) -> None:
        self.call = None
        connections, sticky = self.server.remaining()
        if connections <= 0 and sticky <= 0:
            self.d.callback(self.server)
            return
        now = self.clock.seconds()
        if self.deadline is not None and now >= self.deadline:
            what = f"{connections} connections" + (f" and {sticky} sticky clients" if sticky > 0 else "")
            self.d.errback(DrainTimeout(
                f"server {self.server.fullName} still has {what} after {self.timeout:g}s of draining",
                self.server, connections, sticky,
            ))
            return
        delay = self.interval if self.deadline is None else min(self.interval, self.deadline - now)
        self.call = self.clock.callLater(delay, self._look)
