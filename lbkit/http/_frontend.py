# -*- test-case-name: tests.test_http -*-
"""
The http-mode frontend: its configuration (L{Frontend}), the factory of
its connections (L{HTTPProxyFactory}: the server connection pool, the
counters, the access log) and its service.
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
from lbkit.http._acceptproxy import AcceptProxyFactory
from lbkit.http._alpn import negotiating
from lbkit.http._answers import checkedErrorPages
from lbkit.http._cache import Caching
from lbkit.http._cachestore import Cache
from lbkit.http._compression import Compression
from lbkit.http._h1 import HTTPFrontendProtocol
from lbkit.http._h2up import choosePool
from lbkit.http._h3glue import AltSvc, http3Port, http3Services
from lbkit.http._headers import HTTP_LOG_FORMAT
from lbkit.http._mirror import shadowBackends
from lbkit.http._parse import PREFACE_HEAD
from lbkit.http._pool import ConnectionPool
from lbkit.http._routing import Route, checkedRules
from lbkit.http._scatter import bindFactory, scatterTargets
from lbkit.http._server import HTTPServerProtocol
from lbkit.http._tracing import HTTP_TRACED_LOG_FORMAT, Tracing, tracerFor
from lbkit.interfaces import IAnsweringRule, IListener
from lbkit.tls import Certificates, fromSSLEndpoint, h2Available, serverFactory

__all__ = ["Frontend", "HTTPProxyFactory"]

accessLog = Logger(namespace="lbkit.access")

#: The protocol of an HTTP/2 connection, when the optional C{h2} package is
#: installed (L{lbkit.tls.h2Available}); else C{None}, and TLS frontends
#: offer only HTTP/1.1.
H2_PROTOCOL: Optional[type[Protocol]] = None
if h2Available():
    from lbkit.http._h2 import H2FrontendProtocol

    H2_PROTOCOL = H2FrontendProtocol


@implementer(IListener)
class Frontend:
    """
    An http-mode frontend (HAProxy's C{mode http}): reads each request
    head, routes it, then picks and connects to a server.

    @ivar endpoint: A Twisted server endpoint string.
    @ivar routes: L{Route}s, tried in order.
    @ivar default: The backend for requests no route takes.
    @ivar tls: The L{lbkit.tls.Certificates} this frontend terminates TLS
        with (also set from an C{ssl:} endpoint string), or C{None}.
    @ivar http2: Offer HTTP/2 through ALPN on a TLS frontend, and speak it
        to a client of a cleartext one that opens with the HTTP/2 preface
        (h2c with prior knowledge).
    @ivar acceptProxy: Every connection starts with a PROXY protocol
        header (v1 or v2, before any TLS) from a balancer in front, whose
        source address is then the client's everywhere (C{X-Forwarded-For},
        the log, balancing, C{sourceIn}); a connection without a valid one
        is cut (HAProxy's C{bind ... accept-proxy}).
    @ivar timeoutRequestBody: C{None}, or seconds within which a request
        body must have arrived whole, counted from when lbkit starts
        passing it to the server: else 408 (or a cut, if the response has
        started), termination C{cD}.
    @ivar requestRules: Request rules (L{lbkit.http.setHeader},
        L{lbkit.http.deny} and friends), before each route's; see
        docs/rules.md.
    @ivar answeringRules: Those of C{requestRules} that may answer
        (L{lbkit.interfaces.IAnsweringRule}).
    @ivar answering: Whether it or one of its routes has answering rules,
        or a cache (else requests pay nothing for them).
    @ivar errorPages: Status -> L{lbkit.http.ErrorPage}: the bodies of the
        answers lbkit gives itself (HAProxy's C{errorfile}).
    @ivar compression: The L{lbkit.http.Compression} of its responses
        (a route may have its own), or C{None}.
    @ivar compresses: Whether it or one of its routes compresses (else
        responses pay nothing for it).
    @ivar http3: With C{http3=True}: the UDP port and interface where it
        also serves HTTP/3 over QUIC (its TCP port's number), advertised by
        an C{Alt-Svc} header on its responses; else C{None}.
    @ivar quicRetry: Whether a new QUIC client must first prove it owns its
        address by echoing a Retry token (HAProxy's C{quic-force-retry},
        nginx's C{quic_retry}): one more round trip, no state kept for
        spoofed Initials.
    @ivar cache: The L{lbkit.http.Cache} its requests use (a route's own
        comes first), or C{None}; see docs/cache.md.
    @ivar caching: What looks requests up in the caches, or C{None} when
        neither it nor a route has one (requests then pay nothing).
    @ivar explain: Each request carries the reasons of its route and
        server, logged as the access-log field C{explain} (docs/beyond.md);
        off by default.
    @ivar tracer: With C{requestId=} or C{tracing=}: the
        L{lbkit.http._tracing.RequestTracer} (docs/tracing.md); else C{None}.
    """

    def __init__(
        self,
        endpoint: str,
        routes: Sequence[Route] = (),
        default: Optional[Backend] = None,
        *,
        name: Optional[str] = None,
        timeoutClient: float = 30.0,
        timeoutHttpRequest: float = 10.0,
        timeoutTunnel: float = 3600.0,
        forwardedFor: bool = True,
        requestRules: Sequence[Any] = (),
        responseRules: Sequence[Any] = (),
        maxIdlePerServer: int = 64,
        poolIdleTimeout: float = 30.0,
        log: bool = True,
        factory: Optional[type[HTTPProxyFactory]] = None,
        tls: Any = None,
        http2: bool = True,
        acceptProxy: bool = False,
        timeoutRequestBody: Optional[float] = None,
        errorPages: Optional[Any] = None,
        http3: bool = False,
        quicRetry: bool = False,
        compression: Optional[Compression] = None,
        cache: Optional[Cache] = None,
        explain: bool = False,
        requestId: "bool | str" = False,
        tracing: "bool | Tracing" = False,
    ) -> None:
        self.definedAt = definedAt()
        if not isinstance(endpoint, str):
            raise ConfigError(f"frontend endpoint must be a Twisted endpoint string, not {endpoint!r}")
        if tls is not None and not isinstance(tls, Certificates):
            raise ConfigError(f"http.Frontend {endpoint!r}: tls must be an lbkit.tls.Certificates, not {tls!r}")
        #: The endpoint string as given (an C{ssl:} one is served as C{tcp:}
        #: plus L{tls}, so that lbkit checks its files and offers ALPN).
        self.description = endpoint
        converted = fromSSLEndpoint(endpoint)
        if converted is not None:
            if tls is not None:
                raise ConfigError(f"http.Frontend {endpoint!r}: use either an ssl: endpoint or tls=, not both")
            endpoint, tls = converted
        self.tls: Optional[Certificates] = tls
        self.http2 = bool(http2)
        self.http3 = http3Port(endpoint, tls) if http3 else None
        if quicRetry and not http3:
            raise ConfigError(f"http.Frontend {endpoint!r}: quicRetry=True needs http3=True")
        self.quicRetry = bool(quicRetry)
        routes = list(routes)
        for route in routes:
            if not isinstance(route, Route):
                raise ConfigError(f"http.Frontend {endpoint!r}: routes must be http.Route objects, not {route!r}")
        if default is not None and not isinstance(default, Backend):
            raise ConfigError(f"http.Frontend {endpoint!r}: default must be an lbkit.Backend, not {default!r}")
        if default is None:
            if not routes:
                raise ConfigError(f"http.Frontend {endpoint!r}: needs a default backend or routes")
            default = routes[-1].backend
        self.endpoint = endpoint
        self.routes = routes
        self.default = default
        self.name = name or self.description
        self.timeoutClient = float(timeoutClient)
        self.timeoutHttpRequest = float(timeoutHttpRequest)
        self.timeoutTunnel = float(timeoutTunnel)
        self.acceptProxy = bool(acceptProxy)
        if timeoutRequestBody is not None:
            try:
                timeoutRequestBody = float(timeoutRequestBody)
            except (TypeError, ValueError):
                timeoutRequestBody = -1.0
            if not timeoutRequestBody > 0:
                raise ConfigError(
                    f"http.Frontend {endpoint!r}: timeoutRequestBody must be a number of seconds over 0, or None"
                )
        self.timeoutRequestBody: Optional[float] = timeoutRequestBody
        self.forwardedFor = forwardedFor
        self.requestRules = checkedRules(requestRules, f"http.Frontend {endpoint!r}")
        self.responseRules = list(responseRules)
        if self.http3 is not None:
            self.responseRules.append(AltSvc(self.http3[0]))
        self.answeringRules = tuple(r for r in self.requestRules if IAnsweringRule.providedBy(r))
        self.answering = bool(self.answeringRules) or any(r.answeringRules for r in routes)
        if compression is not None and not isinstance(compression, Compression):
            raise ConfigError(f"http.Frontend {endpoint!r}: compression must be an http.Compression, not {compression!r}")
        self.compression = compression
        self.compresses = compression is not None or any(r.compression for r in routes)
        if cache is not None and not isinstance(cache, Cache):
            raise ConfigError(f"http.Frontend {endpoint!r}: cache must be an http.Cache, not {cache!r}")
        self.cache = cache
        self.caching = Caching(cache) if cache is not None or any(r.cache is not None for r in routes) else None
        self.answering = self.answering or self.caching is not None  # the cache answers too (docs/cache.md)
        self.errorPages = checkedErrorPages(errorPages, f"http.Frontend {endpoint!r}")
        self.maxIdlePerServer = maxIdlePerServer
        self.poolIdleTimeout = float(poolIdleTimeout)
        self.log = log
        self.explain = bool(explain)
        self.tracer = tracerFor(requestId, tracing, f"http.Frontend {endpoint!r}")
        self.factory = factory or HTTPProxyFactory
        self.factories: list[HTTPProxyFactory] = []

    def __repr__(self) -> str:
        return f"<http.Frontend {self.name}>"

    def backends(self) -> Sequence[Backend]:
        found: list[Backend] = []
        extra = shadowBackends(self) + scatterTargets(self)  # (docs/beyond.md)
        for backend in [r.backend for r in self.routes] + [self.default] + extra:
            if backend not in found:
                found.append(backend)
        return found

    def buildFactory(self, reactor: Any) -> HTTPProxyFactory:
        """The factory that serves this frontend's connections."""
        factory = self.factory(self, reactor)
        self.factories.append(factory)
        bindFactory(self, factory)
        if self.explain:
            for backend in self.backends():
                enableExplain(backend)
        return factory

    def alpnProtocols(self) -> list[bytes]:
        """What a TLS frontend offers through ALPN, most preferred first."""
        return [b"h2", b"http/1.1"] if self.http2 and H2_PROTOCOL is not None else [b"http/1.1"]

    def makeService(self, reactor: Any) -> IService:
        factory: Any = self.buildFactory(reactor)
        proxyFactory = factory
        if self.tls is not None:
            protocols = self.alpnProtocols()
            if b"h2" in protocols and H2_PROTOCOL is not None:
                factory = negotiating(factory, H2_PROTOCOL)
            factory = serverFactory(self.tls, factory, reactor, protocols)
        # outermost, for the PROXY header comes before TLS; it reads
        # acceptProxy per connection, so a reload can change it
        factory = AcceptProxyFactory(factory, proxyFactory)
        listening = ListeningService(self.endpoint, factory, reactor, f"frontend {self.name}")
        listening.shared = True  # every worker accepts on it (lbkit.workers)
        if self.http3 is None:
            return listening
        return http3Services(listening, proxyFactory, self.tls, *self.http3, retry=self.quicRetry)


class HTTPProxyFactory(DrainingFactory, Factory):
    """
    Builds an L{HTTPFrontendProtocol} per client connection and keeps the
    server connection pool of its frontend.
    """

    protocol: type[Protocol] = HTTPFrontendProtocol
    noisy = False
    countsConnections = True  # current and total, in connectionOpened/Closed
    #: The service's buffered access-log destinations (set by
    #: L{lbkit.service.LoadBalancerService}); C{None} when not in a service.
    accessSink: Optional[AccessLogSink] = None
    def __init__(self, frontend: Frontend, reactor: Any) -> None:
        self.frontend = frontend
        self.reactor = reactor
        self.pool: ConnectionPool[HTTPServerProtocol] = ConnectionPool(
            reactor, frontend.maxIdlePerServer, frontend.poolIdleTimeout
        )
        self.updateTimeouts()
        self.requests = 0
        self.bytesIn = 0
        self.bytesOut = 0
        self.responses = {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "other": 0}
        # compression (HAProxy's comp_in, comp_out, comp_rsp; compByp: responses sent as they were)
        self.compIn = self.compOut = self.compRsp = self.compByp = 0
        #: Where access-log lines go; the service points it at the
        #: destinations of L{lbkit.logs.AccessLog} when the site has some.
        self.accessLog = accessLog

    def updateTimeouts(self) -> None:
        """
        Work out how often each connection checks its timeouts: a quarter of
        the smallest, so a timeout fires at most 25% late.  Called again
        when a reload changes the frontend's or its backends' timeouts.
        """
        frontend = self.frontend
        timeouts = [frontend.timeoutHttpRequest, frontend.timeoutClient, frontend.timeoutTunnel]
        if frontend.timeoutRequestBody is not None:
            timeouts.append(frontend.timeoutRequestBody)
        timeouts += [b.timeoutServer for b in frontend.backends()]
        choosePool(self.pool, frontend.backends())  # HTTP/2 servers: streams from the pool (lbkit.http._h2up)
        self.tickInterval = max(0.05, min(timeouts) / 4)

    def stopFactory(self) -> None:
        self.pool.closeAll()

    def handOverH2c(self, conn: HTTPFrontendProtocol, head: bytes, rest: bytes) -> bool:
        """
        C{conn} read a request head it cannot parse, C{head}, then C{rest}.
        If that is the HTTP/2 preface, as the first bytes of a cleartext
        connection (h2c with prior knowledge), and the frontend speaks
        HTTP/2 there (C{http2=True}, no TLS, the C{h2} package), hand the
        connection to an L{lbkit.http._h2.H2FrontendProtocol} whose streams
        go to servers with scheme C{http}, and give it all the bytes.

        @return: Whether it was handed over (else the head is a bad request).
        """
        frontend = self.frontend
        exchange = conn.exchange
        if head != PREFACE_HEAD or H2_PROTOCOL is None or not frontend.http2 or frontend.tls is not None:
            return False
        if exchange is None or exchange.started:
            return False
        h2: Any = H2_PROTOCOL()
        h2.factory = self
        h2.scheme = b"http"
        conn.speakH2(h2)
        self.connectionClosed(conn)
        self.total -= 1  # one connection: h2 counts it again
        h2.makeConnection(conn.transport)
        h2.dataReceived(head + b"\r\n\r\n" + rest)
        return True

    def logAccess(self, fields: dict[str, Any]) -> None:
        """Emit the access-log line of one finished request."""
        if self.frontend.log:
            fmt = HTTP_LOG_FORMAT if self.frontend.tracer is None else HTTP_TRACED_LOG_FORMAT
            self.accessLog.info(fmt + (' explain="{explain}"' if "explain" in fields else ""), **fields)

    def logsPlainly(self) -> bool:
        """
        Whether the frontend logs and L{logAccess} is not overridden: an
        exchange may then format the line itself and write it to
        L{accessSink} (when that is active).
        """
        return bool(self.frontend.log) and not self.frontend.explain and self.logsAccessPlainly()

    def logsAccessPlainly(self) -> bool:
        """
        Whether neither L{logAccess} nor L{logsPlainly} is overridden (by a
        subclass, or on the instance): the part of L{logsPlainly} that a
        connection decides once, when it is made.
        """
        return (
            getattr(self.logAccess, "__func__", None) is HTTPProxyFactory.logAccess
            and getattr(self.logsPlainly, "__func__", None) is HTTPProxyFactory.logsPlainly
        )

    def logsAccess(self) -> bool:
        """
        Whether L{logAccess} does anything: the frontend logs, or
        C{logAccess} is overridden (or replaced on the instance).  When it
        does not and no C{finished} hook is overridden either, the access-log
        fields of a request are not built at all.
        """
        return bool(self.frontend.log) or getattr(self.logAccess, "__func__", None) is not HTTPProxyFactory.logAccess
