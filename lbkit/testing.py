# -*- test-case-name: tests.test_tcp -*-
"""
Public test fakes for code built on lbkit: a client endpoint whose connects
the test completes by hand, and a string transport that supports half-close.

Use them with Twisted's own L{twisted.internet.testing.MemoryReactorClock}::

    endpoint = FakeEndpoint()
    backend = Backend("be", [Server("a", endpoint)])
    ...
    serverSide = endpoint.succeed()      # the pending connect completes
    endpoint.fail()                      # or: the pending connect fails
"""

from __future__ import annotations

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IAddress, IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["FakeEndpoint", "HalfCloseableStringTransport", "ConnectAttempt"]


class HalfCloseableStringTransport(StringTransport):
    """
    A L{StringTransport} that also supports C{loseWriteConnection} and
    behaves like a real TCP transport where L{StringTransport} is stricter:
    unregistering when no producer is registered, or resuming after
    C{loseConnection}, does nothing.

    @ivar writeDisconnected: C{True} once C{loseWriteConnection} was called.
        Writing after that raises C{RuntimeError}, so a proxy that writes
        after passing on an end-of-file is caught.
    """

    writeDisconnected = False

    def __init__(
        self,
        hostAddress: IAddress | None = None,
        peerAddress: IAddress | None = None,
        lenient: bool = True,
    ) -> None:
        StringTransport.__init__(self, hostAddress, peerAddress, lenient)

    def loseWriteConnection(self) -> None:
        """Shut the write half: record it in C{writeDisconnected}."""
        self.writeDisconnected = True

    def write(self, data: bytes) -> None:
        if self.writeDisconnected:
            raise RuntimeError("write after loseWriteConnection")
        StringTransport.write(self, data)

    def unregisterProducer(self) -> None:
        if self.producer is not None:
            StringTransport.unregisterProducer(self)


@attrs.define(eq=False)
class ConnectAttempt:
    """
    One call to L{FakeEndpoint.connect}.

    @ivar factory: The factory passed to C{connect}.
    @ivar deferred: The L{Deferred} C{connect} returned.
    @ivar cancelled: Whether the caller cancelled it.
    """

    factory: IProtocolFactory
    deferred: Deferred[IProtocol]
    cancelled: bool = False


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    An L{IStreamClientEndpoint} whose connects stay pending until the test
    calls L{succeed} or L{fail}; use it as a L{lbkit.Server}'s address.

    @ivar attempts: Every connect attempt, oldest first.
    @ivar address: The peer address the connected transports report.
    """

    def __init__(self, address: IAddress | None = None) -> None:
        self.attempts: list[ConnectAttempt] = []
        self.address = address if address is not None else IPv4Address("TCP", "192.0.2.1", 80)

    def __repr__(self) -> str:
        return f"<FakeEndpoint {self.address}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Record an attempt and return its pending L{Deferred}; cancelling it
        marks the attempt cancelled and fails it with C{CancelledError}.
        """

        def cancel(d: Deferred[IProtocol]) -> None:
            attempt.cancelled = True

        attempt = ConnectAttempt(protocolFactory, Deferred(cancel))
        self.attempts.append(attempt)
        return attempt.deferred

    @property
    def pending(self) -> list[ConnectAttempt]:
        """The attempts not yet completed, failed or cancelled, oldest first."""
        return [a for a in self.attempts if not a.deferred.called]

    def _next(self) -> ConnectAttempt:
        pending = self.pending
        if not pending:
            raise RuntimeError("no connect attempt is pending on this endpoint")
        return pending[0]

    def succeed(self, transport: HalfCloseableStringTransport | None = None) -> HalfCloseableStringTransport:
        """
        Complete the oldest pending connect: build the protocol, connect it
        to C{transport} (a new L{HalfCloseableStringTransport} by default)
        and fire the L{Deferred} with it.

        @return: The transport the protocol got.
        """
        attempt = self._next()
        if transport is None:
            transport = HalfCloseableStringTransport(
                hostAddress=IPv4Address("TCP", "127.0.0.1", 40000 + len(self.attempts)),
                peerAddress=self.address,
            )
        protocol = attempt.factory.buildProtocol(self.address)
        assert protocol is not None, "the factory refused to build a protocol"
        protocol.makeConnection(transport)
        attempt.deferred.callback(protocol)
        return transport

    def fail(self, reason: BaseException | Failure | None = None) -> None:
        """
        Fail the oldest pending connect with C{reason} (by default
        L{ConnectionRefusedError}).
        """
        attempt = self._next()
        failure = reason if isinstance(reason, Failure) else Failure(reason or ConnectionRefusedError())
        attempt.deferred.errback(failure)

