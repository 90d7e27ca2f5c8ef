# -*- test-case-name: tests.test_tcp -*-
"""
The configuration of a tcp-mode frontend (L{Frontend}), and the factory
that serves its connections (L{TCPProxyFactory}).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from twisted.application.service import IService
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from lbkit._accesslog import AccessLogSink
from lbkit._backend import Backend
from lbkit._drain import DrainingFactory
from lbkit._explain import enableExplain
from lbkit._listening import ListeningService
from lbkit._origin import definedAt
from lbkit.error import ConfigError
from lbkit.interfaces import IListener
from lbkit.tcp._proxy import TCPFrontendProtocol
from lbkit.tcp._rules import checkedConnectionRules
from lbkit.tcp._sni import Route
from lbkit.traffic import bindClocks

__all__ = ["Frontend", "TCPProxyFactory", "TCP_LOG_FORMAT", "accessLog"]

#: Where tcp access-log lines go unless the site says otherwise.
accessLog = Logger(namespace="lbkit.access")

#: The access-log line of a tcp connection (see docs/tcp.md).
TCP_LOG_FORMAT = (
    "{client} [{date}] {frontend} {backend}/{server} {Tw}/{Tc}/{Tt} "
    "{bytesIn} {bytesOut} {termination} {retries}"
)
@implementer(IListener)
class Frontend:
    """
    A tcp-mode frontend: listens on C{endpoint} and sends every connection
    to a server of C{backend}.

    @ivar endpoint: A Twisted server endpoint string, e.g.
        C{"tcp:8080:interface=127.0.0.1"}.
    @ivar backend: The L{Backend}.
    @ivar name: Shown in logs and stats; by default derived from the endpoint.
    @ivar timeoutClient: Seconds without traffic before the connection is
        closed (HAProxy's C{timeout client}).
    @ivar acceptProxy: Expect a PROXY protocol (v1 or v2) header first.
    @ivar log: Emit one access-log line per connection.
    @ivar factory: The factory class (a L{TCPProxyFactory} subclass).
    @ivar routes: L{Route}s tried in order on the TLS ClientHello (SNI
        pass-through, see docs/tls.md); C{backend} takes the rest.
    @ivar timeoutInspect: With routes, seconds to wait for the ClientHello
        before routing on what arrived (HAProxy's C{inspect-delay}).
    @ivar inspectLimit: With routes, bytes buffered at most while looking
        for the ClientHello.
    @ivar splice: On Linux, relay plain TCP connections with C{splice(2)}
        (zero-copy, see docs/tcp.md); elsewhere, or for TLS, the normal way.
    @ivar rules: L{lbkit.interfaces.IConnectionRule}s (L{lbkit.tcp.reject}),
        looked at in order once the client's address is known (after any
        PROXY header), before a server is chosen; see docs/rules.md.
    @ivar explain: Each connection carries the reasons of its server,
        logged as the access-log field C{explain} (docs/beyond.md); off by
        default.
    """

    def __init__(
        self,
        endpoint: str,
        backend: Backend,
        *,
        name: str | None = None,
        timeoutClient: float = 30.0,
        acceptProxy: bool = False,
        log: bool = True,
        factory: type[TCPProxyFactory] | None = None,
        routes: Sequence[Route] = (),
        timeoutInspect: float = 5.0,
        inspectLimit: int = 32768,
        splice: bool = False,
        rules: Sequence[Any] = (),
        explain: bool = False,
    ) -> None:
        self.definedAt = definedAt()
        if not isinstance(endpoint, str):
            raise ConfigError(f"frontend endpoint must be a Twisted endpoint string, not {endpoint!r}")
        if not isinstance(backend, Backend):
            raise ConfigError(f"frontend {endpoint!r}: backend must be an lbkit.Backend, not {backend!r}")
        self.routes = list(routes)
        for route in self.routes:
            if not isinstance(route, Route):
                raise ConfigError(f"frontend {endpoint!r}: routes must be tcp.Route objects, not {route!r}")
        self.timeoutInspect = float(timeoutInspect)
        self.inspectLimit = int(inspectLimit)
        self.splice = bool(splice)
        self.rules = checkedConnectionRules(rules, f"frontend {endpoint!r}")
        self.endpoint = endpoint
        self.backend = backend
        self.name = name or endpoint
        self.timeoutClient = float(timeoutClient)
        self.acceptProxy = acceptProxy
        self.log = log
        self.explain = bool(explain)
        self.factory = factory or TCPProxyFactory
        self.factories: list[TCPProxyFactory] = []
        if not (isinstance(self.factory, type) and issubclass(self.factory, TCPProxyFactory)):
            raise ConfigError(f"frontend {endpoint!r}: factory must be a TCPProxyFactory subclass")

    def __repr__(self) -> str:
        return f"<tcp.Frontend {self.name}>"

    def backends(self) -> Sequence[Backend]:
        found = [self.backend]
        for route in self.routes:
            if route.backend not in found:
                found.append(route.backend)
        return found

    def buildFactory(self, reactor: Any) -> TCPProxyFactory:
        """The factory that serves this frontend's connections."""
        factory = self.factory(self, reactor)
        self.factories.append(factory)
        if self.explain:
            for backend in self.backends():
                enableExplain(backend)
        return factory

    def makeService(self, reactor: Any) -> IService:
        listening = ListeningService(self.endpoint, self.buildFactory(reactor), reactor, f"frontend {self.name}")
        listening.shared = True  # every worker accepts on it (lbkit.workers)
        return listening


class TCPProxyFactory(DrainingFactory, Factory):
    """
    Builds a L{TCPFrontendProtocol} (or the class in L{protocol}) for each
    accepted client.  Subclass it, and the protocol classes, to change how
    connections are handled; see examples/logging_subclass.py.

    @ivar current: Client connections open now.
    @ivar total: Client connections accepted so far.
    """

    protocol: type[Protocol] = TCPFrontendProtocol
    noisy = False
    #: L{DrainingFactory} keeps C{current} and C{total}.
    countsConnections = True
    #: The service's buffered access-log destinations (set by
    #: L{lbkit.service.LoadBalancerService}); C{None} when not in a service.
    accessSink: Optional[AccessLogSink] = None

    def __init__(self, frontend: Frontend, reactor: Any) -> None:
        self.frontend = frontend
        self.backend = frontend.backend
        self.reactor = reactor
        bindClocks(frontend, reactor)  # stick tables count on this reactor's time
        self.current = 0
        self.total = 0
        self.bytesIn = 0
        self.bytesOut = 0
        #: Where access-log lines go; the service points it at the
        #: destinations of L{lbkit.logs.AccessLog} when the site has some.
        self.accessLog = accessLog

    def logAccess(self, fields: dict[str, Any]) -> None:
        """Emit the access-log line of one finished connection."""
        if self.frontend.log:
            self.accessLog.info(TCP_LOG_FORMAT + (' explain="{explain}"' if "explain" in fields else ""), **fields)

    def logsAccess(self) -> bool:
        """
        Whether L{logAccess} does anything: the frontend logs, or
        C{logAccess} is overridden (or replaced on the instance).  When it
        does not and no C{finished} hook is overridden either, the
        access-log fields of a connection are not built at all.
        """
        return bool(self.frontend.log) or getattr(self.logAccess, "__func__", None) is not TCPProxyFactory.logAccess

    def logsPlainly(self) -> bool:
        """
        Whether the frontend logs and L{logAccess} is not overridden: a
        connection may then format its line itself and write it to
        L{accessSink} (when that is active).
        """
        return (
            bool(self.frontend.log) and not self.frontend.explain
            and getattr(self.logAccess, "__func__", None) is TCPProxyFactory.logAccess
        )
