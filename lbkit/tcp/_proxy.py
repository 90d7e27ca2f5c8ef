# -*- test-case-name: tests.test_tcp -*-
"""
The client side of a tcp-mode (layer 4) connection: accept a client, choose
a server, connect, and pump bytes both ways with back-pressure and half-close.
L{TCPFrontendProtocol}'s life is one L{Phase} at a time, its termination codes
the phase's (L{lbkit.tcp._phase}); the half-close flags C{_clientEOF} and
C{_serverEOF} are apart.  Choosing, queueing, connecting, retrying: L{lbkit._dispatch}.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit._address import formatAddress
from lbkit._dispatch import Dispatch, DispatchFailed
from lbkit._explain import connectionReasons
from lbkit._logline import formatTCPLine, tcpDate, tcpFields
from lbkit._model import Context, Server
from lbkit._pump import tune, writeThrough
from lbkit.interfaces import ISession
from lbkit.proxyproto import InvalidProxyHeader, formatV1, formatV2
from lbkit.tcp._phase import CLIENT_LOST, Phase, Termination
from lbkit.tcp._rules import rejects
from lbkit.tcp._server import TCPServerProtocol, halfClose, relayBoth
from lbkit.tcp._sni import ClientHello, Inspected, Inspector, InvalidClientHello, chooseBackend
from lbkit.tcp._splice import startSplice

if TYPE_CHECKING:
    from lbkit.tcp._frontend import Frontend, TCPProxyFactory

__all__ = ["TCPFrontendProtocol"]

_log = Logger(namespace="lbkit.tcp")
_DONE = Failure(ConnectionDone())


@implementer(IHalfCloseableProtocol, ISession)
class TCPFrontendProtocol(Protocol):
    """
    The client side of one proxied connection.

    Its life: accepted (reading paused) → optional PROXY header and TLS
    ClientHello → a server is chosen (maybe after waiting in the backend
    queue) → connected (both transports registered as each other's
    producers) → both directions end → closed and logged.

    Hooks for subclasses: L{serverChosen}, L{serverConnected}, L{finished}.

    @ivar hello: With C{routes}, the L{ClientHello} once read, else C{None}.
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
        self.hello: Optional[ClientHello] = None
        self._phase = Phase.ACCEPTED
        self._closedIn = Phase.ACCEPTED
        self._clientEOF = False
        self._serverEOF = False
        self._clientGone = False
        self._serverGone = True
        self._peerWrite: Callable[[bytes], None] | None = None
        self._pending: list[bytes] = []
        self._inspector: Inspector | None = None
        self._inspectCall: Any = None
        self._dispatch: Dispatch[TCPServerProtocol] | None = None
        self._idleCall: Any = None
        self._idleBytes = 0
        self._destination: IAddress | None = None
        self._abortCall: Any = None
        self._splice: Any = None

    @property
    def _where(self) -> Phase:
        """The phase now, or the one the connection was in when it began closing."""
        return self._closedIn if self._phase is Phase.CLOSED else self._phase

    # -- client events ---------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        self.reactor = factory.reactor
        self.backend = factory.backend
        factory.connectionOpened(self)
        self.acceptTime = time.time()
        self.start = self.reactor.seconds()
        transport = self.transport
        assert transport is not None
        tune(transport)
        frontend = factory.frontend
        self.context = Context(client=transport.getPeer(), frontend=frontend.name)
        self._startIdleTimer()
        if frontend.routes or frontend.acceptProxy:
            self._startInspecting(frontend)
        else:
            transport.pauseProducing()  # type: ignore[attr-defined]
            self._startDispatch()

    def dataReceived(self, data: bytes) -> None:
        peerWrite = self._peerWrite
        if peerWrite is not None:
            self.bytes += len(data)
            peerWrite(data)
            return
        if self._phase is Phase.INSPECTING:
            self._inspect(data)
            return
        self.bytes += len(data)
        self._pending.append(data)

    def readConnectionLost(self) -> None:
        if self._clientEOF:
            return
        self._clientEOF = True
        phase = self._phase
        if phase is Phase.RELAYING:
            peer = self.peer
            assert peer is not None and peer.transport is not None
            peer.transport.unregisterProducer()  # type: ignore[attr-defined]
            halfClose(peer.transport)
            if self._serverEOF:
                self._close()
        elif phase is Phase.INSPECTING:
            self._close()
        # QUEUED or CONNECTING: passed on once connected (_relay)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = _DONE) -> None:
        if self.termination == "--" and not reason.check(ConnectionDone):
            self.termination = CLIENT_LOST[self._where]
        if self._dispatch is not None:
            self._dispatch.cancel()
        self._clientGone = True
        if self._splice is not None:
            self._splice.lost(self.transport)
        self._close()
        self._finish()
        self._maybeStopAbortTimer()
        self.factory.connectionClosed(self)

    # -- inspecting: PROXY header, TLS ClientHello ------------------------

    def _startInspecting(self, frontend: Frontend) -> None:
        self._phase = Phase.INSPECTING
        # with routes (SNI pass-through), the ClientHello chooses self.backend
        routes = bool(frontend.routes)
        self._inspector = Inspector(frontend.acceptProxy, frontend.inspectLimit if routes else None)
        if routes and frontend.timeoutInspect > 0:
            self._inspectCall = self.reactor.callLater(frontend.timeoutInspect, self._inspectTimedOut)

    def _inspect(self, data: bytes) -> None:
        assert self._inspector is not None
        try:
            done = self._inspector.feed(data)
        except (InvalidProxyHeader, InvalidClientHello) as e:
            self.hello = self._inspector.hello
            _log.warn(
                "{frontend}: closing {client}: malformed {what}: {why}",
                frontend=self.factory.frontend.name, client=formatAddress(self.context.client if self.context else None),
                what="PROXY header" if isinstance(e, InvalidProxyHeader) else "TLS ClientHello", why=str(e),
            )
            self._giveUp(Termination.MALFORMED, abort=True)
            return
        if done is not None:
            self._endInspecting(done)

    def _inspectTimedOut(self) -> None:
        self._inspectCall = None
        if self._phase is not Phase.INSPECTING:
            return
        assert self._inspector is not None
        if self._inspector.waitingForProxy:
            # Not even the PROXY header came: close, as the PROXY phase would.
            self._giveUp(Termination.CLIENT_IDLE_BEFORE)
            return
        self._endInspecting(self._inspector.finish())

    def _stopInspecting(self) -> None:
        self._inspector = None
        if self._inspectCall is not None:
            self._inspectCall.cancel()
            self._inspectCall = None

    def _endInspecting(self, done: Inspected) -> None:
        """Route on what the inspect phase read, and replay it to the server chosen now."""
        self._stopInspecting()
        context = self.context
        assert context is not None and self.transport is not None
        hello = self.hello = done.hello
        if hello is not None:
            frontend = self.factory.frontend
            self.backend = chooseBackend(frontend.routes, frontend.backend, hello)
            context.notes["sni"] = hello.serverName
        info = done.proxy
        if info is not None and info.source is not None:
            context.client = info.source
            self._destination = info.destination
        self.transport.pauseProducing()  # type: ignore[attr-defined]
        if done.rest:
            self.bytes += len(done.rest)
            self._pending.append(done.rest)
        self._startDispatch()

    # -- choosing and connecting ------------------------------------------

    def _startDispatch(self) -> None:
        assert self.context is not None
        if self.factory.frontend.rules and rejects(self.factory.frontend.rules, self.context):
            self._giveUp(Termination.REJECTED, abort=True)
            return
        self._phase = Phase.QUEUED
        dispatch = self._dispatch = Dispatch(
            self.backend, self.context, self.reactor, self._newPeer, serverChosen=self._chose
        )
        dispatch.start().addCallbacks(self._connected, self._notConnected)

    def _newPeer(self, server: Server) -> TCPServerProtocol:
        return self.serverProtocol(self)

    def _chose(self, server: Server) -> None:
        assert self._dispatch is not None
        self.server = server
        self.attempts = self._dispatch.attempts
        self._phase = Phase.CONNECTING
        self.serverChosen(server)

    def _notConnected(self, reason: Failure) -> None:
        if isinstance(reason.value, DispatchFailed):
            self._giveUp(reason.value.termination)
        elif not reason.check(CancelledError):
            self._internalError(reason)  # a hook or the balancer raised

    def _internalError(self, reason: Failure) -> None:
        """
        Something raised while choosing or connecting (e.g. a subclass
        hook): log it and abort the connection rather than leave it hanging.
        """
        _log.failure(
            "{frontend}: internal error handling {client}",
            reason,
            frontend=self.factory.frontend.name,
            client=formatAddress(self.context.client if self.context else None),
        )
        if self.termination == "--":
            self.termination = Termination.INTERNAL_ERROR
        self._abortBoth()

    def _connected(self, result: tuple[Server, TCPServerProtocol]) -> None:
        try:
            self._relayTo(*result)
        except Exception:
            self._internalError(Failure())

    def _relayTo(self, server: Server, peer: TCPServerProtocol) -> None:
        self.peer = peer
        self._serverGone = False
        self._phase = Phase.RELAYING
        assert self.transport is not None and peer.transport is not None and self.context is not None
        serverTransport = peer.transport
        if server.sendProxy:
            fmt = formatV1 if server.sendProxy == 1 else formatV2
            destination = self._destination or self.transport.getHost()
            serverTransport.write(fmt(self.context.client, destination))  # type: ignore[arg-type]
        server.sessions.add(self)
        self.serverConnected(server, peer)
        if self._pending:
            serverTransport.writeSequence(self._pending)
            self._pending = []
        if self.factory.frontend.splice and not self._clientEOF:
            self._splice = startSplice(self.transport, serverTransport, self, peer, self._relay)
            if self._splice is not None:
                self.transport.resumeProducing()  # type: ignore[attr-defined]
                return
        self._relay(clientDone=self._clientEOF)

    def _relay(self, clientDone: bool = False) -> None:
        """
        Relay through Python, each transport the other's producer, or through the reactor
        (L{relayBoth}).  (Also the splice relay's fall-back.)
        @param clientDone: The client's end-of-file came before the server
            connection: pass it on now.
        """
        assert self.peer is not None and self.transport is not None
        serverTransport = self.peer.transport
        assert serverTransport is not None
        self._peerWrite = writeThrough(serverTransport)
        serverTransport.registerProducer(self.transport, True)  # type: ignore[attr-defined]
        self.transport.registerProducer(serverTransport, True)  # type: ignore[attr-defined]
        relayBoth(self, TCPFrontendProtocol.dataReceived, self.peer)
        if clientDone:
            serverTransport.unregisterProducer()  # type: ignore[attr-defined]
            halfClose(serverTransport)
        else:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    # -- server events ----------------------------------------------------

    def serverEOF(self) -> None:
        """The server shut its write half: pass it on to the client."""
        self._serverEOF = True
        transport = self.transport
        assert transport is not None
        transport.unregisterProducer()  # type: ignore[attr-defined]
        halfClose(transport)
        if self._clientEOF:
            self._close()

    def serverLost(self, reason: Failure) -> None:
        """The server connection is gone: close the client side too."""
        if self.termination == "--" and not reason.check(ConnectionDone) and self._phase is not Phase.CLOSED:
            self.termination = Termination.SERVER_LOST
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
        phase = self._phase
        if phase is Phase.CLOSED:
            return
        now = self.reactor.seconds()
        moved = self.bytes + (self.peer.bytes if self.peer is not None else 0)
        timeout = self._idleTimeout()
        # waiting for a server is not the client's idleness
        established = phase is Phase.RELAYING or phase is Phase.INSPECTING
        if moved != self._idleBytes or not established:
            self._idleBytes = moved
            self._idleSince = now
        elif now - self._idleSince >= timeout:
            if self.factory.frontend.timeoutClient <= self.backend.timeoutServer:
                self.termination = Termination.CLIENT_IDLE_RELAYING if phase is Phase.RELAYING else Termination.CLIENT_IDLE_BEFORE
            else:
                self.termination = Termination.SERVER_IDLE
            self._close()
            return
        self._idleCall = self.reactor.callLater(timeout / 4, self._checkIdle)

    # -- ending -----------------------------------------------------------

    def _enterClosed(self) -> None:
        """Move to CLOSED and stop the timers."""
        if self._phase is Phase.CLOSED:
            return
        self._closedIn, self._phase = self._phase, Phase.CLOSED
        if self._inspector is not None:
            self._stopInspecting()
        if self._idleCall is not None:
            self._idleCall.cancel()
            self._idleCall = None

    def _giveUp(self, termination: str, abort: bool = False) -> None:
        """End a connection that will get no server: close (or abort) the client."""
        self.termination = termination
        self._enterClosed()
        transport = self.transport
        assert transport is not None
        if abort:
            transport.abortConnection()  # type: ignore[attr-defined]
        else:
            transport.loseConnection()

    def _close(self) -> None:
        """Close both sides, flushing what is buffered."""
        if self._phase is Phase.CLOSED:
            return
        self._enterClosed()
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
            self.termination = Termination.SESSION_KILLED
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
            self.termination = Termination.KILLED_RELAYING if self._where is Phase.RELAYING else Termination.KILLED_BEFORE
        self.abortSession()

    def _maybeStopAbortTimer(self) -> None:
        if self._abortCall is not None and self._clientGone and self._serverGone:
            self._abortCall.cancel()
            self._abortCall = None

    def _finish(self) -> None:
        factory = self.factory
        server = self.server
        peer = self.peer
        dispatch = self._dispatch
        bytesOut = peer.bytes if peer is not None else 0
        factory.bytesIn += self.bytes
        factory.bytesOut += bytesOut
        if self.context is not None and self.context.watchers is not None:  # stick tables (lbkit.traffic)
            self.context.ended(0, self.bytes, bytesOut)
        if server is not None:
            server.sessions.discard(self)
        if server is not None and dispatch is not None and dispatch.holding:
            server.bytesIn += self.bytes
            server.bytesOut += bytesOut
            dispatch.release()
        latency = server.latency if server is not None else getattr(self.backend, "latency", None)
        if latency is not None:  # (a stats page times it: docs/stats.md, "Latency")
            latency.addConnection(dispatch, peer is not None, self.reactor.seconds() - self.start, server is not None)
        finished = getattr(self.finished, "__func__", None) is not TCPFrontendProtocol.finished
        sink = factory.accessSink
        if not finished and not factory.logsAccess():
            return
        values = self._logValues(server, dispatch, peer, bytesOut)
        if not finished and sink is not None and sink.active and factory.logsPlainly():
            sink.emit(formatTCPLine(*values), lambda: tcpFields(*values))
            return
        fields = tcpFields(*values)
        if factory.frontend.explain:  # (docs/beyond.md)
            fields["explain"] = connectionReasons(self.backend, self.context)
        self.finished(fields)
        factory.logAccess(fields)

    def _logValues(
        self, server: Optional[Server], dispatch: Optional[Dispatch[Any]], peer: Any, bytesOut: int
    ) -> tuple[Any, ...]:
        """The access-log fields, in the order of L{lbkit._logline.formatTCPLine}'s arguments."""
        now = self.reactor.seconds()
        return (
            formatAddress(self.context.client if self.context else None),
            tcpDate(self.acceptTime),
            self.factory.frontend.name,
            self.backend.name,
            server.name if server is not None else "<NOSRV>",
            # Tw is -1 for a connection that never looked for a server
            int(dispatch.waited * 1000) if dispatch is not None else -1,
            int((dispatch.connectedAt - dispatch.chosenAt) * 1000) if peer is not None and dispatch else -1,
            int((now - self.start) * 1000),
            self.bytes,
            bytesOut,
            self.termination,
            max(0, self.attempts - 1),
        )

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
