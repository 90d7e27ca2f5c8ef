# -*- test-case-name: tests.test_http2 -*-
"""
Choosing the protocol of a TLS http connection from its ALPN negotiation:
HTTP/2 (C{h2}) or HTTP/1.1.  This module does not need the C{h2} package;
the HTTP/2 protocol is handed to L{negotiating}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from lbkit.http._frontend import HTTPProxyFactory

__all__ = ["negotiating"]


class _NegotiatingFactory(Factory):
    """
    Wraps an L{HTTPProxyFactory} under TLS: each connection gets the
    protocol its ALPN negotiation chose.
    """

    noisy = False

    def __init__(self, wrappedFactory: HTTPProxyFactory, h2Protocol: Callable[[], Protocol]) -> None:
        self.wrappedFactory = wrappedFactory
        self.h2Protocol = h2Protocol

    def doStart(self) -> None:
        self.wrappedFactory.doStart()

    def doStop(self) -> None:
        self.wrappedFactory.doStop()

    def buildProtocol(self, addr: Any) -> Protocol:
        return _Negotiating(self.wrappedFactory, addr, self.h2Protocol)


def negotiating(factory: HTTPProxyFactory, h2Protocol: Callable[[], Protocol]) -> Factory:
    """
    A factory to put under TLS in place of C{factory}: a connection that
    negotiated C{h2} is served by a C{h2Protocol()}
    (L{lbkit.http._h2.H2FrontendProtocol}), any other by C{factory}'s own
    protocol.
    """
    return _NegotiatingFactory(factory, h2Protocol)


@implementer(IHandshakeListener)
class _Negotiating(Protocol):
    """
    Stands in until the TLS handshake is over, then hands the connection to
    the right protocol (and steps out of the data path).
    """

    def __init__(self, factory: HTTPProxyFactory, addr: Any, h2Protocol: Callable[[], Protocol]) -> None:
        self.factory = factory
        self.addr = addr
        self.h2Protocol = h2Protocol
        self.inner: Optional[Protocol] = None
        self._timer: Any = None

    def connectionMade(self) -> None:
        reactor = self.factory.reactor
        self._timer = reactor.callLater(self.factory.frontend.timeoutHttpRequest, self._timedOut)
        self.factory.connectionOpened(self, counted=False)  # the protocol it hands on to counts

    def _timedOut(self) -> None:
        self._timer = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def handshakeCompleted(self) -> None:
        self._switch()

    def _switch(self) -> Protocol:
        inner = self.inner
        if inner is not None:
            return inner
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport: Any = self.transport
        if getattr(transport, "negotiatedProtocol", None) == b"h2":
            inner = self.h2Protocol()
            inner.factory = self.factory
        else:
            inner = self.factory.buildProtocol(self.addr)
            assert inner is not None
        self.inner = inner
        if hasattr(transport, "wrappedProtocol"):
            transport.wrappedProtocol = inner  # the TLS layer delivers to it directly
        inner.makeConnection(transport)
        self.factory.connectionClosed(self)
        return inner

    def dataReceived(self, data: bytes) -> None:
        self._switch().dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.inner is not None:
            self.inner.connectionLost(reason)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.factory.connectionClosed(self)

    def stopGracefully(self) -> None:
        if self.inner is None and self.transport is not None:
            self.transport.loseConnection()

    def kill(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
