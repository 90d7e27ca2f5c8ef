# -*- test-case-name: tests.test_tcp -*-
"""
The server side of a tcp-mode connection (L{TCPServerProtocol}), and how
either side passes an end-of-file on (L{halfClose}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit._pump import relay, tune, writeThrough

if TYPE_CHECKING:
    from lbkit.tcp._proxy import TCPFrontendProtocol

__all__ = ["TCPServerProtocol", "halfClose", "relayBoth"]

_DONE = Failure(ConnectionDone())


def halfClose(transport: Any) -> None:
    """
    Shut the write half of C{transport}, or close it where half-close is not
    possible (TLS: Twisted #5341).
    """
    if ISSLTransport.providedBy(transport) or not hasattr(transport, "loseWriteConnection"):
        transport.loseConnection()
    else:
        transport.loseWriteConnection()


def relayBoth(front: TCPFrontendProtocol, ownRead: Callable[..., None], peer: TCPServerProtocol) -> None:
    """
    Once C{front} relays to C{peer} (each the other's producer), let the
    reactor move the bytes itself where it can (L{relay}), each way whose
    protocol's C{dataReceived} is tcp mode's own (C{ownRead} for C{front}'s
    class, L{TCPServerProtocol.dataReceived}): a subclass that overrides it
    sees every read, as before.
    """
    if type(front).dataReceived is ownRead and front._peerWrite is not None:
        relay(front.transport, peer.transport, front, front._peerWrite)
    if type(peer).dataReceived is TCPServerProtocol.dataReceived and peer._write is not None:
        relay(peer.transport, front.transport, peer, peer._write)


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
