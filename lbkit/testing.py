# -*- test-case-name: tests.test_testing -*-
"""
Public test fakes for code built on lbkit, so a balancer, check,
persistence strategy, listener or header rule of yours is tested the way
lbkit tests its own (see docs/testing.md):

  - L{FakeEndpoint}: a client endpoint whose connects the test completes
    by hand (give it to a L{lbkit.Server} as its address), with
    L{ConnectAttempt} records;
  - L{HalfCloseableStringTransport}: a string transport with half-close;
  - L{FakeCheck}: a health check whose probes are L{Deferred}s the test
    fires;
  - L{RecordingListener}: an L{IServerListener} that records what it hears;
  - L{FakeSession}: an L{ISession} in a server's C{sessions};
  - L{assertProvides}: C{verifyObject} with a readable failure;
  - L{HTTPHarness}: the real http frontend and server protocols run in
    memory, on a L{MemoryReactorClock}, with L{FakeEndpoint} servers.

Use them with Twisted's own L{twisted.internet.testing.MemoryReactorClock}
and L{twisted.internet.task.Clock}::

    endpoint = FakeEndpoint()
    backend = Backend("be", [Server("a", endpoint)])
    ...
    serverSide = endpoint.succeed()      # the pending connect completes
    endpoint.fail()                      # or: the pending connect fails
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IAddress, IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.exceptions import Invalid
from zope.interface.interface import InterfaceClass
from zope.interface.verify import verifyObject

from lbkit import Server, ServerState
from lbkit.error import CheckFailed
from lbkit.health import BaseCheck
from lbkit.http import Frontend, HTTPFrontendProtocol, HTTPServerProtocol
from lbkit.interfaces import IServerListener, ISession

__all__ = [
    "FakeEndpoint",
    "HalfCloseableStringTransport",
    "ConnectAttempt",
    "FakeCheck",
    "RecordingListener",
    "FakeSession",
    "assertProvides",
    "HTTPHarness",
    "ClientSide",
    "ServerSide",
]


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
    @ivar protocol: The protocol L{FakeEndpoint.succeed} connected, or
        C{None} while the attempt has not succeeded.
    """

    factory: IProtocolFactory
    deferred: Deferred[IProtocol]
    cancelled: bool = False
    protocol: IProtocol | None = None


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

        @raise TypeError: when C{protocolFactory} does not provide
            L{IProtocolFactory}, as a real endpoint would fail later.
        """
        if not IProtocolFactory.providedBy(protocolFactory):
            raise TypeError(
                f"FakeEndpoint.connect() takes an IProtocolFactory, not {protocolFactory!r}:"
                " is the implementation marked with @implementer(IProtocolFactory)"
                " (or a twisted.internet.protocol.Factory subclass)?"
            )

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
        attempt.protocol = protocol
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



@attrs.frozen
class FakeCheck(BaseCheck):
    """
    A health check whose probes stay pending until the test fires them:
    each call of L{check} appends a L{Deferred} to C{probes}.  It takes
    every option of L{BaseCheck} (C{interval}, C{rise}, C{fall},
    C{observe}...), so a L{lbkit.health.HealthMonitor} on a
    L{twisted.internet.task.Clock} runs its real state machine over it::

        check = FakeCheck(interval=2.0, fall=2)
        monitor = HealthMonitor(server, check, clock)
        monitor.start()
        clock.advance(0)
        check.failLast()         # first failure
        clock.advance(2.0)
        check.failLast()         # second: the server goes DOWN

    @ivar probes: Every probe's L{Deferred}, oldest first.
    @ivar cancelled: The probes the monitor cancelled (its C{timeout}).
    """

    probes: list[Deferred[None]] = attrs.field(factory=list, kw_only=True)
    cancelled: list[Deferred[None]] = attrs.field(factory=list, kw_only=True)

    def check(self, server: Server, reactor: Any) -> Deferred[None]:
        """Start a probe: a new pending L{Deferred}, also kept in C{probes}."""
        d: Deferred[None] = Deferred(self.cancelled.append)
        self.probes.append(d)
        return d

    def passLast(self) -> None:
        """The latest probe passes."""
        self.probes[-1].callback(None)

    def failLast(self, reason: str = "Layer7 wrong status, code: 500") -> None:
        """The latest probe fails with L{CheckFailed}C{(reason)}."""
        self.probes[-1].errback(CheckFailed(reason))


@implementer(IServerListener)
class RecordingListener:
    """
    An L{IServerListener} that records every call, for a test to compare;
    subscribe it with C{server.addListener} or C{backend.addListener}.

    @ivar states: C{(old.value, new.value, reason)} of each state change,
        e.g. C{("UP", "DOWN", "Layer4 timeout")}.
    @ivar weights: C{(old, new)} of each weight change (slow-start ramp
        steps come as C{old == new}).
    @ivar events: Every call in order, as C{("state", server, old, new,
        reason)} or C{("weight", server, old, new)}.
    """

    def __init__(self) -> None:
        self.states: list[tuple[str, str, str]] = []
        self.weights: list[tuple[int, int]] = []
        self.events: list[tuple[Any, ...]] = []

    def stateChanged(self, server: Server, old: ServerState, new: ServerState, reason: str) -> None:
        """Record a state change."""
        self.states.append((old.value, new.value, reason))
        self.events.append(("state", server, old, new, reason))

    def weightChanged(self, server: Server, old: int, new: int) -> None:
        """Record a weight change."""
        self.weights.append((old, new))
        self.events.append(("weight", server, old, new))


@implementer(ISession)
class FakeSession:
    """
    An L{ISession} that joins C{server.sessions} when created and leaves
    when aborted, as a tcp connection does; C{aborted} says whether
    L{abortSession} was called (by a health monitor with
    C{onMarkedDown="shutdown-sessions"}, say).
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.aborted = False
        server.sessions.add(self)

    def abortSession(self) -> None:
        """Record the abort and leave the server's sessions."""
        self.aborted = True
        self.server.sessions.discard(self)


def assertProvides(testCase: Any, interface: InterfaceClass, obj: object) -> None:
    """
    Fail C{testCase} unless C{obj} declares C{interface} and has each of
    its methods (with compatible signatures) and attributes: zope's
    C{verifyObject}, with one readable failure message.

    @param testCase: A trial (or unittest) test case, for its C{fail}.
    @param interface: The interface, e.g. L{lbkit.interfaces.IBalancer}.
    @param obj: The object under test (an instance, not its class).
    """
    try:
        verifyObject(interface, obj)
    except Invalid as e:
        declared = "" if interface.providedBy(obj) else " (is its class marked with @implementer?)"
        testCase.fail(f"{obj!r} does not provide {interface.__name__}{declared}: {e}")


_DONE = Failure(ConnectionDone())


@attrs.define(eq=False)
class ClientSide:
    """
    A client connection of an L{HTTPHarness}: the real frontend protocol
    and the transport standing for the client's socket.

    @ivar protocol: The L{HTTPFrontendProtocol} (or the frontend's
        subclass) serving this client.
    @ivar transport: What the client receives: C{transport.value()}.
    """

    protocol: HTTPFrontendProtocol
    transport: HalfCloseableStringTransport

    def send(self, data: bytes) -> None:
        """The client sends C{data}."""
        self.protocol.dataReceived(data)

    def received(self) -> bytes:
        """Everything the client has received so far."""
        return bytes(self.transport.value())

    def lose(self, reason: Failure = _DONE) -> None:
        """The client's connection is lost (the client hung up)."""
        self.protocol.connectionLost(reason)


@attrs.define(eq=False)
class ServerSide:
    """
    A connection to a server in an L{HTTPHarness}: the real server-side
    protocol and the transport standing for the server's socket.

    @ivar server: The L{lbkit.Server} connected to.
    @ivar protocol: The L{HTTPServerProtocol}.
    @ivar transport: What the server receives: C{transport.value()}.
    """

    server: Server
    protocol: HTTPServerProtocol
    transport: HalfCloseableStringTransport

    def received(self) -> bytes:
        """Everything the server has received so far (request heads and bodies)."""
        return bytes(self.transport.value())

    def respond(self, data: bytes) -> None:
        """The server sends C{data} (a response, or part of one)."""
        self.protocol.dataReceived(data)

    def lose(self, reason: Failure = _DONE) -> None:
        """The server's connection is lost (the server closed it)."""
        self.protocol.connectionLost(reason)


class HTTPHarness:
    """
    Runs an L{http.Frontend<lbkit.http.Frontend>} in memory: the real
    L{HTTPFrontendProtocol} and L{HTTPServerProtocol} (routing, rules,
    persistence, balancing, pooling, timeouts) over
    L{HalfCloseableStringTransport}s, on a L{MemoryReactorClock}.  Every
    server of the frontend's backends must have a L{FakeEndpoint} as its
    address, so the test decides when a server connection is made::

        harness = HTTPHarness(frontend)
        self.addCleanup(harness.close)
        client = harness.request(b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")
        server = harness.connect()          # the pending connect succeeds
        server.respond(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
        assert client.received().endswith(b"ok")

    @ivar reactor: The L{MemoryReactorClock} (C{advance} it for timeouts).
    @ivar factory: The frontend's running factory.
    @ivar clients: Every L{ClientSide}, oldest first.
    @ivar servers: Every L{ServerSide}, oldest first.
    @ivar logged: The access-log fields of each finished request, as the
        protocol's C{finished} hook receives them (the harness wraps the
        hook of each protocol it accepts; the frontend's own still runs).
    """

    def __init__(
        self,
        frontend: Frontend,
        reactor: MemoryReactorClock | None = None,
        *,
        clientAddress: IPv4Address = IPv4Address("TCP", "198.51.100.7", 51000),
        frontendAddress: IPv4Address = IPv4Address("TCP", "127.0.0.1", 8080),
    ) -> None:
        self.frontend = frontend
        self.reactor = MemoryReactorClock() if reactor is None else reactor
        self.clientAddress = clientAddress
        self.frontendAddress = frontendAddress
        self.factory = frontend.buildFactory(self.reactor)
        self.factory.startFactory()
        self.clients: list[ClientSide] = []
        self.servers: list[ServerSide] = []
        self.logged: list[dict[str, Any]] = []

    def accept(self, peer: IPv4Address | None = None) -> ClientSide:
        """
        A client connects (from C{peer}, by default C{clientAddress}).
        """
        peer = self.clientAddress if peer is None else peer
        protocol = self.factory.buildProtocol(peer)
        if not isinstance(protocol, HTTPFrontendProtocol):
            raise TypeError(f"the frontend's factory built {protocol!r}, not an HTTPFrontendProtocol")
        hook = protocol.finished

        def finished(fields: dict[str, Any]) -> None:
            self.logged.append(fields)
            hook(fields)

        protocol.finished = finished  # type: ignore[method-assign]
        transport = HalfCloseableStringTransport(hostAddress=self.frontendAddress, peerAddress=peer)
        protocol.makeConnection(transport)
        client = ClientSide(protocol, transport)
        self.clients.append(client)
        return client

    def request(self, data: bytes, peer: IPv4Address | None = None) -> ClientSide:
        """A client connects and sends C{data} (one or more requests)."""
        client = self.accept(peer)
        client.send(data)
        return client

    def _endpoints(self) -> list[tuple[Server, FakeEndpoint]]:
        found: dict[Server, FakeEndpoint] = {}
        for backend in self.frontend.backends():
            for server in backend.servers:
                endpoint = server.endpoint(self.reactor)
                if isinstance(endpoint, FakeEndpoint):
                    found[server] = endpoint
        return list(found.items())

    def pending(self) -> list[Server]:
        """The servers with a connect waiting for the test, each once."""
        return [server for server, endpoint in self._endpoints() if endpoint.pending]

    def connect(self, server: Server | None = None) -> ServerSide:
        """
        Complete the oldest pending connect to C{server}; with no
        argument, to the one server that has a connect pending.

        @raise RuntimeError: when no connect (or, with no argument, more
            than one server's) is pending.
        @raise TypeError: when C{server}'s address is not a L{FakeEndpoint}.
        """
        if server is None:
            waiting = self.pending()
            if len(waiting) != 1:
                names = ", ".join(s.name for s in waiting) or "none"
                raise RuntimeError(f"connect() needs a server: connects are pending to {names}")
            server = waiting[0]
        endpoint = server.endpoint(self.reactor)
        if not isinstance(endpoint, FakeEndpoint):
            raise TypeError(f"server {server.name!r} must have a FakeEndpoint as its address, not {endpoint!r}")
        attempts = endpoint.pending
        if not attempts:
            raise RuntimeError(f"no connect to server {server.name!r} is pending")
        attempt = attempts[0]
        transport = endpoint.succeed()
        protocol = attempt.protocol
        if not isinstance(protocol, HTTPServerProtocol):
            raise TypeError(f"the connect to {server.name!r} built {protocol!r}, not an HTTPServerProtocol")
        side = ServerSide(server, protocol, transport)
        self.servers.append(side)
        return side

    def serverFor(self, client: ClientSide) -> ServerSide:
        """
        The server connection carrying C{client}'s current request: the
        one it was sent on (a pooled connection, say), or else the oldest
        pending connect to the server chosen for it, completed now.

        @raise RuntimeError: when no server was chosen for it (yet), or no
            connect to it is pending.
        """
        conn = client.protocol.conn
        for side in self.servers:
            if side.protocol is conn:
                return side
        server = client.protocol.server
        if server is None:
            raise RuntimeError("no server was chosen for this client's request")
        return self.connect(server)

    def close(self) -> None:
        """
        End the test: every client connection still open and every server
        connection still connected (pooled ones included) is lost, and the
        factory stops.  Then no timer of the frontend is left: a test can
        assert C{harness.reactor.getDelayedCalls() == []}.
        """
        for protocol in list(self.factory.connections):
            protocol.connectionLost(_DONE)
        for side in self.servers:
            if side.protocol.connected:
                side.protocol.connectionLost(_DONE)
        self.factory.stopFactory()
