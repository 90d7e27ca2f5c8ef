# -*- test-case-name: tests.test_tcp -*-
"""
tcp mode (layer 4): accept a client, choose a server, connect, and pump
bytes both ways with back-pressure and half-close.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from twisted.application.service import IService
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit._connect import connectFailed, connectServer, isLocalResourceError, prepareRetry
from lbkit._drain import DrainingFactory
from lbkit._model import Backend, Context, Server, definedAt, formatAddress
from lbkit._pump import tune, writeThrough
from lbkit.error import ConfigError, NoServerAvailable, QueueTimeout
from lbkit.interfaces import IListener, ISession
from lbkit.tcp._sni import ClientHello, InvalidClientHello, Route, sniAbsent, sniEnds, sniIs

__all__ = [
    "Frontend", "TCPProxyFactory", "TCPFrontendProtocol", "TCPServerProtocol",
    "Route", "sniIs", "sniEnds", "sniAbsent", "ClientHello",
]

accessLog = Logger(namespace="lbkit.access")
_log = Logger(namespace="lbkit.tcp")
_DONE = Failure(ConnectionDone())

#: The access-log line of a tcp connection (see docs/tcp.md).
TCP_LOG_FORMAT = (
    "{client} [{date}] {frontend} {backend}/{server} {Tw}/{Tc}/{Tt} "
    "{bytesIn} {bytesOut} {termination} {retries}"
)


_formatAddress = formatAddress


def _halfClose(transport: Any) -> None:
    """
    Shut the write half of C{transport}, or close it where half-close is not
    possible (TLS: Twisted #5341).
    """
    if ISSLTransport.providedBy(transport) or not hasattr(transport, "loseWriteConnection"):
        transport.loseConnection()
    else:
        transport.loseWriteConnection()


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
        self.endpoint = endpoint
        self.backend = backend
        self.name = name or endpoint
        self.timeoutClient = float(timeoutClient)
        self.acceptProxy = acceptProxy
        self.log = log
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
        return factory

    def makeService(self, reactor: Any) -> IService:
        from lbkit.service import ListeningService

        return ListeningService(self.endpoint, self.buildFactory(reactor), reactor, f"frontend {self.name}")


class TCPProxyFactory(DrainingFactory, Factory):
    """
    Builds a L{TCPFrontendProtocol} (or the class in L{protocol}) for each
    accepted client.  Subclass it, and the protocol classes, to change how
    connections are handled; see examples/logging_subclass.py.

    @ivar current: Client connections open now.
    @ivar total: Client connections accepted so far.
    """

    protocol: type[Protocol] = None  # type: ignore[assignment]
    noisy = False

    def __init__(self, frontend: Frontend, reactor: Any) -> None:
        self.frontend = frontend
        self.backend = frontend.backend
        self.reactor = reactor
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
            self.accessLog.info(TCP_LOG_FORMAT, **fields)


@implementer(IHalfCloseableProtocol)
class TCPServerProtocol(Protocol):
    """
    The server side of one proxied connection: passes what the server sends
    to the client.
    """

    def __init__(self, front: TCPFrontendProtocol) -> None:
        self.front = front
        self.bytes = 0
        self._write: Callable[[bytes], None] | None = None
        self.readDone = False

    def connectionMade(self) -> None:
        tune(self.transport)
        self._write = writeThrough(self.front.transport)

    def dataReceived(self, data: bytes) -> None:
        self.bytes += len(data)
        self._write(data)  # type: ignore[misc]

    def readConnectionLost(self) -> None:
        if not self.readDone:
            self.readDone = True
            self.front.serverEOF()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = _DONE) -> None:
        self.front.serverLost(reason)


@implementer(IHalfCloseableProtocol, ISession)
class TCPFrontendProtocol(Protocol):
    """
    The client side of one proxied connection.

    Its life: accepted (reading paused) → optional PROXY header → a server
    is chosen (maybe after waiting in the backend queue) → connected (both
    transports registered as each other's producers) → both directions end
    → closed and logged.

    Hooks for subclasses: L{serverChosen}, L{serverConnected}, L{finished}.
    """

    factory: TCPProxyFactory
    serverProtocol = TCPServerProtocol

    def __init__(self) -> None:
        self.server: Server | None = None
        self.peer: TCPServerProtocol | None = None
        self.context: Context | None = None
        self.termination = "--"
        self.bytes = 0
        self.attempts = 0
        self._peerWrite: Callable[[bytes], None] | None = None
        self._pending: list[bytes] = []
        self._pendingEOF = False
        self._parser: Any = None
        self._waiting: Deferred[Any] | None = None
        self._idleCall: Any = None
        self._idleBytes = 0
        self._closed = False
        self._clientEOF = False
        self._serverEOF = False
        self._destination: IAddress | None = None
        self._tq = self._tc = -1.0
        #: Seconds spent in the queue; -1 until a server is looked for.
        self._tw = -1.0
        self._slotHeld = False
        self._abortCall: Any = None
        self._clientGone = False
        self._serverGone = True
        self._splice: Any = None

    # -- client events ---------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        self.reactor = factory.reactor
        self.backend = factory.backend
        factory.current += 1
        factory.total += 1
        factory.connectionOpened(self)
        self.acceptTime = time.time()
        self.start = self.reactor.seconds()
        transport = self.transport
        assert transport is not None
        tune(transport)
        self.context = Context(client=transport.getPeer(), frontend=factory.frontend.name)
        self._startIdleTimer()
        if factory.frontend.routes:
            # SNI pass-through: read the ClientHello, choose self.backend.
            from lbkit.tcp._sni import _SNIPhase

            self._parser = _SNIPhase(self, factory.frontend.acceptProxy)
        elif factory.frontend.acceptProxy:
            from lbkit.proxyproto import ProxyHeaderParser

            self._parser = ProxyHeaderParser()
        else:
            transport.pauseProducing()  # type: ignore[attr-defined]
            try:
                self._choose()
            except Exception:
                self._internalError(Failure())

    def dataReceived(self, data: bytes) -> None:
        peerWrite = self._peerWrite
        if peerWrite is not None:
            self.bytes += len(data)
            peerWrite(data)
            return
        if self._parser is not None:
            self._parseProxyHeader(data)
            return
        self.bytes += len(data)
        self._pending.append(data)

    def _parseProxyHeader(self, data: bytes) -> None:
        from lbkit.proxyproto import InvalidProxyHeader

        try:
            info = self._parser.feed(data)
        except (InvalidProxyHeader, InvalidClientHello) as e:
            _log.warn(
                "{frontend}: closing {client}: malformed {what}: {why}",
                frontend=self.factory.frontend.name, client=_formatAddress(self.context.client if self.context else None),
                what="PROXY header" if isinstance(e, InvalidProxyHeader) else "TLS ClientHello", why=str(e),
            )
            self._parser = None
            self.termination = "PR"
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if info is None:
            return
        self._parser = None
        assert self.context is not None
        if info.source is not None:
            self.context.client = info.source
            self._destination = info.destination
        self.transport.pauseProducing()  # type: ignore[union-attr]
        if info.rest:
            self.bytes += len(info.rest)
            self._pending.append(info.rest)
        self._choose()

    def readConnectionLost(self) -> None:
        if self._clientEOF:
            return
        self._clientEOF = True
        peer = self.peer
        if peer is None:
            if self._parser is not None:
                self._close()
            else:
                self._pendingEOF = True
            return
        peer.transport.unregisterProducer()  # type: ignore[union-attr]
        _halfClose(peer.transport)
        if self._serverEOF:
            self._close()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = _DONE) -> None:
        if self.termination == "--" and not reason.check(ConnectionDone):
            self.termination = "CD" if self.peer is not None else ("CQ" if self.server is None else "CC")
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.cancel()
        self._clientGone = True
        if self._splice is not None:
            self._splice.lost(self.transport)
        stopParser = getattr(self._parser, "stop", None)
        if stopParser is not None:
            stopParser()
        self._close()
        self._finish()
        self._maybeStopAbortTimer()
        self.factory.connectionClosed(self)

    # -- choosing and connecting ------------------------------------------

    def _choose(self) -> None:
        assert self.context is not None
        if self._tw < 0:
            self._tw = 0.0
        try:
            server = self.backend.tryAcquire(self.context)
        except NoServerAvailable:
            self.backend.noServerCount += 1
            self._giveUp("SC")
            return
        if server is None:
            self._tq = self.reactor.seconds()
            waiting = self._waiting = self.backend.enqueue(self.context, self.reactor)
            waiting.addCallbacks(self._dequeued, self._queueFailed).addErrback(self._internalError)
            return
        self._connect(server)

    def _dequeued(self, server: Server) -> None:
        self._waiting = None
        self._tw += self.reactor.seconds() - self._tq
        self._connect(server)

    def _queueFailed(self, reason: Failure) -> None:
        self._waiting = None
        self._tw += self.reactor.seconds() - self._tq
        if reason.check(CancelledError):
            return
        self._giveUp("sQ" if reason.check(QueueTimeout) else "SC")

    def _internalError(self, reason: Failure) -> None:
        """
        Something raised while choosing or connecting (e.g. a subclass
        hook): log it and abort the connection rather than leave it hanging.
        """
        _log.failure(
            "{frontend}: internal error handling {client}",
            reason,
            frontend=self.factory.frontend.name,
            client=_formatAddress(self.context.client if self.context else None),
        )
        if self.termination == "--":
            self.termination = "IC"
        self._abortBoth()

    def _giveUp(self, termination: str) -> None:
        self.termination = termination
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _connect(self, server: Server) -> None:
        assert self.context is not None
        self.server = server
        self.attempts += 1
        self.context.tried.add(server)
        self._slotHeld = True  # before the hook: if it raises, _finish releases
        self.serverChosen(server)
        self._tc = self.reactor.seconds()
        peer = self.serverProtocol(self)
        waiting = self._waiting = connectServer(self.reactor, server, peer, self.backend.timeoutConnect)
        waiting.addCallbacks(self._connected, self._connectFailed).addErrback(self._internalError)

    def _connectFailed(self, reason: Failure) -> None:
        self._waiting = None
        server = self.server
        assert server is not None and self.context is not None
        self._slotHeld = False
        self.backend.release(server)
        if reason.check(CancelledError):
            return
        local = isLocalResourceError(reason)
        timedOut = connectFailed(server, reason)
        _log.debug("{server}: connect failed: {why}", server=server.fullName, why=reason.getErrorMessage())
        if self.attempts > self.backend.retries:
            self._giveUp("RC" if local else "sC" if timedOut else "SC")
            return
        # a retry after lbkit's own failure is not one the server caused
        prepareRetry(self.backend, None if local else server, self.context)
        self._choose()

    def _connected(self, peer: TCPServerProtocol) -> None:
        self._waiting = None
        self.peer = peer
        self._serverGone = False
        server = self.server
        assert server is not None and self.transport is not None and peer.transport is not None
        self._tc = self.reactor.seconds() - self._tc
        serverTransport = peer.transport
        if server.sendProxy:
            from lbkit.proxyproto import formatV1, formatV2

            assert self.context is not None
            fmt = formatV1 if server.sendProxy == 1 else formatV2
            destination = self._destination or self.transport.getHost()
            serverTransport.write(fmt(self.context.client, destination))  # type: ignore[arg-type]
        server.sessions.add(self)
        server.observe(True)
        self.serverConnected(server, peer)
        if self._pending:
            serverTransport.writeSequence(self._pending)
            self._pending = []
        if self.factory.frontend.splice and not self._pendingEOF:
            from lbkit.tcp._splice import startSplice

            self._splice = startSplice(self.transport, serverTransport, self, peer, self._relay)
            if self._splice is not None:
                self.transport.resumeProducing()  # type: ignore[attr-defined]
                return
        self._relay()

    def _relay(self) -> None:
        """Relay through Python: each transport the other's producer."""
        assert self.peer is not None and self.transport is not None
        serverTransport = self.peer.transport
        assert serverTransport is not None
        self._peerWrite = writeThrough(serverTransport)
        serverTransport.registerProducer(self.transport, True)  # type: ignore[attr-defined]
        self.transport.registerProducer(serverTransport, True)  # type: ignore[attr-defined]
        if self._pendingEOF:
            serverTransport.unregisterProducer()  # type: ignore[attr-defined]
            _halfClose(serverTransport)
        else:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    # -- server events ----------------------------------------------------

    def serverEOF(self) -> None:
        """The server shut its write half: pass it on to the client."""
        self._serverEOF = True
        transport = self.transport
        assert transport is not None
        transport.unregisterProducer()  # type: ignore[attr-defined]
        _halfClose(transport)
        if self._clientEOF or self._pendingEOF:
            self._close()

    def serverLost(self, reason: Failure) -> None:
        """The server connection is gone: close the client side too."""
        if self.termination == "--" and not reason.check(ConnectionDone) and not self._closed:
            self.termination = "SD"
        self._serverGone = True
        if self._splice is not None:
            self._splice.lost(self.peer.transport)  # type: ignore[union-attr]
        self._close()
        self._maybeStopAbortTimer()

    # -- idle timeout -----------------------------------------------------

    def _idleTimeout(self) -> float:
        return min(self.factory.frontend.timeoutClient, self.backend.timeoutServer)

    def _startIdleTimer(self) -> None:
        timeout = self._idleTimeout()
        if timeout > 0:
            self._idleSince = self.reactor.seconds()
            self._idleCall = self.reactor.callLater(timeout / 4, self._checkIdle)

    def _checkIdle(self) -> None:
        self._idleCall = None
        if self._closed:
            return
        now = self.reactor.seconds()
        moved = self.bytes + (self.peer.bytes if self.peer is not None else 0)
        timeout = self._idleTimeout()
        established = self.peer is not None or self._parser is not None
        if moved != self._idleBytes or not established:
            self._idleBytes = moved
            self._idleSince = now
        elif now - self._idleSince >= timeout:
            if self.factory.frontend.timeoutClient <= self.backend.timeoutServer:
                self.termination = "cD" if self.peer is not None else "cR"
            else:
                self.termination = "sD"
            self._close()
            return
        self._idleCall = self.reactor.callLater(timeout / 4, self._checkIdle)

    # -- ending -----------------------------------------------------------

    def _close(self) -> None:
        """Close both sides, flushing what is buffered."""
        if self._closed:
            return
        self._closed = True
        if self._idleCall is not None:
            self._idleCall.cancel()
            self._idleCall = None
        peer = self.peer
        transport = self.transport
        if peer is not None and peer.transport is not None:
            peer.transport.unregisterProducer()  # type: ignore[attr-defined]
            peer.transport.loseConnection()
        if transport is not None:
            transport.unregisterProducer()  # type: ignore[attr-defined]
            transport.loseConnection()
        if not (self._clientGone and self._serverGone):
            # A peer that never reads would keep its side open: abort it.
            self._abortCall = self.reactor.callLater(max(self._idleTimeout(), 1.0), self._abortBoth)

    def _abortBoth(self) -> None:
        self._abortCall = None
        for transport in (self.transport, self.peer.transport if self.peer else None):
            if transport is not None:
                transport.abortConnection()  # type: ignore[attr-defined]

    def abortSession(self) -> None:
        """
        Kill this session now: abort both connections, discarding what is
        buffered (used when its server is taken down with its sessions).
        """
        if self.termination == "--":
            self.termination = "SK"
        if self._abortCall is not None:
            self._abortCall.cancel()
        self._abortBoth()

    def stopGracefully(self) -> None:
        """
        The frontend is stopping: nothing to do, a tcp connection cannot be
        asked to end; it runs until either side closes or L{kill}.
        """

    def kill(self) -> None:
        """
        Abort this connection now, because a shutdown's grace period ran out;
        it is logged with termination C{KD} (C{KC} before a server was
        connected).
        """
        if self.termination == "--":
            self.termination = "KD" if self.peer is not None else "KC"
        self.abortSession()

    def _maybeStopAbortTimer(self) -> None:
        if self._abortCall is not None and self._clientGone and self._serverGone:
            self._abortCall.cancel()
            self._abortCall = None

    def _finish(self) -> None:
        factory = self.factory
        factory.current -= 1
        server = self.server
        peer = self.peer
        bytesOut = peer.bytes if peer is not None else 0
        factory.bytesIn += self.bytes
        factory.bytesOut += bytesOut
        if server is not None:
            server.sessions.discard(self)
        if server is not None and self._slotHeld:
            self._slotHeld = False
            server.bytesIn += self.bytes
            server.bytesOut += bytesOut
            self.backend.release(server)
        now = self.reactor.seconds()
        tw = int(self._tw * 1000) if self._tw >= 0 else -1
        fields = dict(
            client=_formatAddress(self.context.client if self.context else None),
            date=time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(self.acceptTime))
            + f".{int(self.acceptTime * 1000) % 1000:03d}",
            frontend=factory.frontend.name,
            backend=self.backend.name,
            server=server.name if server is not None else "<NOSRV>",
            Tw=tw,
            Tc=int(self._tc * 1000) if peer is not None else -1,
            Tt=int((now - self.start) * 1000),
            bytesIn=self.bytes,
            bytesOut=bytesOut,
            termination=self.termination,
            retries=max(0, self.attempts - 1),
        )
        self.finished(fields)
        factory.logAccess(fields)

    # -- hooks for subclasses ---------------------------------------------

    def serverChosen(self, server: Server) -> None:
        """
        Called when C{server} was chosen, before connecting to it (again on
        each retry).  Override to observe; the default does nothing.
        """

    def serverConnected(self, server: Server, peer: TCPServerProtocol) -> None:
        """
        Called once the connection to C{server} is up, before any client
        byte is relayed.  The default does nothing.
        """

    def finished(self, fields: dict[str, Any]) -> None:
        """
        Called once per connection when it is over, with the access-log
        fields (see docs/tcp.md).  The default does nothing.
        """


TCPProxyFactory.protocol = TCPFrontendProtocol
