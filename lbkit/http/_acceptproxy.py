# -*- test-case-name: tests.test_http -*-
"""
http mode behind a balancer that speaks the PROXY protocol
(C{http.Frontend(acceptProxy=True)}, HAProxy's C{bind ... accept-proxy}).

Each connection's PROXY header (v1 or v2) is read first, before TLS and
HTTP.  Then the connection is handed to the frontend's protocol (TLS, or
HTTP directly), which sees the header's addresses as the connection's own:
C{getPeer()} is the original client, C{getHost()} the address it
connected to.  A connection that does not start with a valid header is
cut, as HAProxy does, before anything was parsed or answered.

The frontend's C{acceptProxy} is read as each connection is accepted (a
reload that changes it applies to the connections accepted after it);
without it a connection goes to the wrapped factory's protocol directly,
and nothing stays in its way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IProtocol, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from lbkit._address import formatAddress
from lbkit._pump import tune, writeThrough
from lbkit.proxyproto import InvalidProxyHeader, ProxyHeaderParser

if TYPE_CHECKING:
    from lbkit.http._frontend import HTTPProxyFactory

__all__ = ["AcceptProxyFactory"]

_log = Logger(namespace="lbkit.http")
_DONE = Failure(ConnectionDone())


class AcceptProxyFactory(Factory):
    """
    Wraps the outermost factory of an http frontend (its TLS factory, or
    its L{HTTPProxyFactory}) so that, while the frontend's C{acceptProxy}
    is set, each connection's PROXY header is read before it is handed on.

    @ivar wrappedFactory: The factory the connections are handed to.
    @ivar proxyFactory: The frontend's L{HTTPProxyFactory}: its reactor,
        timeouts and connection tracking (a connection still waiting for
        its header is stopped and killed with the others).
    """

    noisy = False

    def __init__(self, wrappedFactory: IProtocolFactory, proxyFactory: HTTPProxyFactory) -> None:
        self.wrappedFactory = wrappedFactory
        self.proxyFactory = proxyFactory

    def doStart(self) -> None:
        self.wrappedFactory.doStart()

    def doStop(self) -> None:
        self.wrappedFactory.doStop()

    def logPrefix(self) -> str:
        prefix: str = self.wrappedFactory.logPrefix()  # type: ignore[attr-defined]
        return prefix

    def buildProtocol(self, addr: Optional[IAddress]) -> Any:
        if not self.proxyFactory.frontend.acceptProxy:
            return self.wrappedFactory.buildProtocol(addr)  # type: ignore[arg-type]
        return _ProxyHeaderReader(self)


class _ProxyHeaderReader(Protocol):
    """
    Reads one connection's PROXY header, then stands as the transport of
    the protocol it hands the connection to.

    Only C{getPeer} and C{getHost} differ from the real transport (they
    answer the header's addresses); every other attribute is the real
    transport's.  Writes go through L{writeThrough} and received bytes are
    delivered to the protocol directly, so the reader costs next to
    nothing once the header is read.
    """

    wrapped: Optional[IProtocol] = None
    write: Callable[[bytes], None]

    def __init__(self, factory: AcceptProxyFactory) -> None:
        self.factory = factory  # type: ignore[assignment]
        self._parser: Optional[ProxyHeaderParser] = ProxyHeaderParser(stream=True)
        self._peer: Optional[IAddress] = None
        self._host: Optional[IAddress] = None
        self._timer: Any = None
        self._tracked = False

    def makeConnection(self, transport: Any) -> None:
        directlyProvides(self, providedBy(transport))  # whatever the transport is, this is too
        Protocol.makeConnection(self, transport)

    def connectionMade(self) -> None:
        transport = self.transport
        tune(transport)
        self.write = writeThrough(transport)
        proxyFactory = self.factory.proxyFactory  # type: ignore[attr-defined]
        # HAProxy waits for the header up to its timeout client
        self._timer = proxyFactory.reactor.callLater(proxyFactory.frontend.timeoutClient, self._timedOut)
        self._tracked = True
        proxyFactory.connectionOpened(self, counted=False)  # the protocol it hands on to counts

    # -- the header --------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            return  # refused already
        try:
            info = parser.feed(data)
        except InvalidProxyHeader as e:
            self._refuse(f"malformed PROXY header: {e}")
            return
        if info is None:
            return
        self._parser = None
        self._waited()
        if info.source is not None:
            self._peer, self._host = info.source, info.destination
        inner = self.factory.wrappedFactory.buildProtocol(self.getPeer())  # type: ignore[attr-defined]
        if inner is None:
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.wrapped = inner
        self.dataReceived = inner.dataReceived  # type: ignore[method-assign]  # out of the read path
        inner.makeConnection(self)
        if info.rest:
            inner.dataReceived(info.rest)

    def _refuse(self, why: str) -> None:
        proxyFactory = self.factory.proxyFactory  # type: ignore[attr-defined]
        _log.warn(
            "{frontend}: closing {client}: {why}",
            frontend=proxyFactory.frontend.name, client=formatAddress(self.transport.getPeer()), why=why,  # type: ignore[union-attr]
        )
        self._parser = None
        self._waited()
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _timedOut(self) -> None:
        """No whole header within timeoutClient: close (HAProxy closes too)."""
        self._timer = None
        if self._parser is None:
            return
        proxyFactory = self.factory.proxyFactory  # type: ignore[attr-defined]
        _log.info(
            "{frontend}: closing {client}: no PROXY header in {timeout:g}s",
            frontend=proxyFactory.frontend.name, client=formatAddress(self.transport.getPeer()),  # type: ignore[union-attr]
            timeout=proxyFactory.frontend.timeoutClient,
        )
        self._parser = None
        self._waited()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _waited(self) -> None:
        """The wait for the header is over: stop its timer, stop being tracked."""
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if self._tracked:
            self._tracked = False
            self.factory.proxyFactory.connectionClosed(self)  # type: ignore[attr-defined]

    def stopGracefully(self) -> None:
        """The frontend is stopping: a connection still waiting for its header closes now."""
        if self.transport is not None:
            self.transport.loseConnection()

    def kill(self) -> None:
        """The frontend's grace period is over: abort."""
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- the transport, as the protocol handed on sees it -----------------

    def getPeer(self) -> IAddress:
        """The client the header names, else the real peer (a C{LOCAL} or C{UNKNOWN} header)."""
        return self._peer if self._peer is not None else self.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:
        """The address the header says the client connected to, else the real one."""
        return self._host if self._host is not None else self.transport.getHost()  # type: ignore[union-attr]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        self.connected = False
        wrapped = self.wrapped
        if wrapped is None:
            self._parser = None
            self._waited()
            return
        wrapped.connectionLost(reason)
