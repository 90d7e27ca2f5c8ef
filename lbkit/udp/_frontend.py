# -*- test-case-name: tests.test_udp -*-
"""
UDP balancing: a frontend that opens a session per client address and
port, sends the session's datagrams to one server from a socket of its
own, and the server's replies back to the client from the frontend's
address (nginx's C{stream} with C{udp}, Envoy's UDP proxy).
"""

from __future__ import annotations

import socket
import time
from collections import OrderedDict
from typing import Any, Sequence

from twisted.application.service import IService, Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from lbkit._address import isIPv4, isIPv6, parseUDP
from lbkit._backend import Backend
from lbkit._listening import ListenFailed, portFromSource
from lbkit._model import Context, Server
from lbkit._origin import definedAt
from lbkit.error import ConfigError, NoServerAvailable
from lbkit.interfaces import IListener
from lbkit.udp._quiet import listenQuietly

__all__ = ["Frontend", "UDPProxy", "UDP_LOG_FORMAT"]

#: The access-log line of one session (docs/udp.md).
UDP_LOG_FORMAT = (
    "{client} [{date}] {frontend} {backend}/{server} {Tt} "
    "{bytesIn} {bytesOut} {datagramsIn}/{datagramsOut} {termination}"
)

accessLog = Logger(namespace="lbkit.access")
_log = Logger(namespace="lbkit")

#: Datagrams a session keeps while the server's name resolves.
MAX_PENDING = 64


@implementer(IListener)
class Frontend:
    """
    A UDP frontend: listens on C{endpoint} (C{"udp:PORT[:interface=ADDR]"})
    and balances sessions over C{backend}'s servers.

    @param timeoutSession: Seconds a session lives after its last datagram
        (either way).
    @param maxSessions: At most this many sessions; a new client beyond it
        evicts the session idle longest (counted in C{evicted}).
    @param responses: Close a session after this many replies from its
        server (nginx's C{proxy_responses}; 1 for DNS); C{None}: on the
        timeout only.
    @param log: Log one access-log line per session, when it ends.
    """

    mode = "udp"

    def __init__(
        self,
        endpoint: str,
        backend: Backend,
        *,
        timeoutSession: float = 30.0,
        maxSessions: int = 10_000,
        responses: int | None = None,
        name: str | None = None,
        log: bool = True,
    ) -> None:
        self.definedAt = definedAt()
        self.port, self.interface = parseUDP(endpoint)
        self.endpoint = endpoint
        if not isinstance(backend, Backend):
            raise ConfigError(f"udp.Frontend: backend must be an lbkit.Backend, not {backend!r}")
        if not timeoutSession > 0:
            raise ConfigError("udp.Frontend: timeoutSession must be positive")
        if not isinstance(maxSessions, int) or maxSessions < 1:
            raise ConfigError("udp.Frontend: maxSessions must be a positive integer")
        if responses is not None and (not isinstance(responses, int) or responses < 1):
            raise ConfigError("udp.Frontend: responses must be a positive integer or None")
        self.backend = backend
        self.timeoutSession = float(timeoutSession)
        self.maxSessions = maxSessions
        self.responses = responses
        self.name = name or f"udp-{self.port}"
        self.log = bool(log)
        #: The L{UDPProxy} of each service built (the stats page reads them).
        self.factories: list[UDPProxy] = []

    def __repr__(self) -> str:
        return f"<udp.Frontend {self.name}>"

    def backends(self) -> Sequence[Backend]:
        return [self.backend]

    def bindKey(self) -> tuple[Any, ...]:
        """What two listeners may not share (L{lbkit.config.checkListen})."""
        return ("udp", self.port, self.interface)

    def makeService(self, reactor: Any) -> IService:
        proxy = UDPProxy(self, reactor)
        self.factories.append(proxy)
        return UDPService(proxy)


class UDPService(Service):
    """Listens for the frontend's datagrams while running."""

    #: With --workers every worker receives on its own SO_REUSEPORT socket
    #: of the address (lbkit.workers): the kernel keeps a client on one.
    shared = True

    def __init__(self, proxy: UDPProxy) -> None:
        self.proxy = proxy
        self.factory = proxy
        self.description = proxy.frontend.endpoint
        self.label = f"frontend {proxy.frontend.name}"
        self.port: Any = None

    def privilegedStartService(self) -> None:
        if self.port is not None:
            return
        adopted = portFromSource(self)
        if adopted is not None:
            self.port = adopted
            return
        frontend = self.proxy.frontend
        try:
            self.port = self.proxy.reactor.listenUDP(frontend.port, self.proxy, interface=frontend.interface)
        except CannotListenError as e:
            raise ListenFailed(f"{self.label} cannot listen on {self.description!r}: {e.socketError}", e) from None
        _log.info("lbkit: {label} listening on {endpoint}", label=self.label, endpoint=self.description)

    def startService(self) -> None:
        self.privilegedStartService()
        Service.startService(self)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        port, self.port = self.port, None
        self.proxy.closeAll("stopped")
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)


class _ToServer(DatagramProtocol):
    """A session's own socket, connected to its server."""

    noisy = False  # one per session: no "Starting protocol" line each

    def __init__(self, session: Session) -> None:
        self.session = session

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.session.replied(data)

    def connectionRefused(self) -> None:
        self.session.refused()

    def stopProtocol(self) -> None:
        # Twisted's epoll reactor drops a connected UDP port whose socket
        # reports an error (an ICMP port unreachable) instead of calling
        # connectionRefused: a port lost while its session is open is that.
        if not self.session.closed:
            self.session.port = None
            self.session.refused()


class Session:
    """One client address and port, stuck to one server."""

    def __init__(self, proxy: UDPProxy, client: tuple[str, int], server: Server) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.started = time.time()
        self.bytesIn = self.bytesOut = self.datagramsIn = self.datagramsOut = 0
        self.pending: list[bytes] | None = []
        self.port: Any = None
        self.closed = False
        self.timer: IDelayedCall = proxy.reactor.callLater(proxy.frontend.timeoutSession, self.close, "timeout")

    def open(self, address: str) -> None:
        """Open the socket to the server at C{address} (an IP) and send what waited."""
        if self.closed:
            return
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        interface = "::" if family == socket.AF_INET6 else "0.0.0.0"
        try:
            self.port = listenQuietly(self.proxy.reactor, _ToServer(self), interface)
            self.port.connect(address, self.server.port)
        except Exception as e:
            self.server.observe(False, f"Layer4 connection problem: {e}")
            self.close("connect")
            return
        pending, self.pending = self.pending or [], None
        for data in pending:
            self.port.write(data)

    def send(self, data: bytes) -> None:
        self.bytesIn += len(data)
        self.datagramsIn += 1
        self.server.bytesIn += len(data)
        self.timer.reset(self.proxy.frontend.timeoutSession)
        if self.pending is not None:
            if len(self.pending) < MAX_PENDING:
                self.pending.append(data)
            else:
                self.proxy.dropped += 1
            return
        try:
            self.port.write(data)
        except Exception:  # e.g. ECONNREFUSED left over from an ICMP error
            self.proxy.dropped += 1

    def replied(self, data: bytes) -> None:
        if self.closed:
            return
        self.bytesOut += len(data)
        self.datagramsOut += 1
        self.server.bytesOut += len(data)
        proxy = self.proxy
        proxy.bytesOut += len(data)
        transport = proxy.transport
        assert transport is not None
        transport.write(data, self.client)
        if self.datagramsOut == 1:
            self.server.observe(True, "Layer4 reply")
        limit = proxy.frontend.responses
        if limit is not None and self.datagramsOut >= limit:
            self.close("--")
        else:
            self.timer.reset(proxy.frontend.timeoutSession)

    def refused(self) -> None:
        self.server.observe(False, "Layer4 connection problem: port unreachable")
        self.close("refused")

    def close(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer.active():
            self.timer.cancel()
        if why == "timeout" and self.proxy.frontend.responses is not None and self.datagramsOut == 0:
            self.server.observe(False, "Layer4 timeout: no reply")
        port, self.port = self.port, None
        if port is not None:
            port.stopListening()
        self.proxy.ended(self, why)


#: Access-log termination codes of a session (docs/udp.md).
TERMINATIONS = {"--": "--", "timeout": "sD", "refused": "SC", "connect": "SC", "evicted": "cR", "stopped": "KD"}


class UDPProxy(DatagramProtocol):
    """
    The frontend's socket: sessions by client address, and the counters
    the stats page reads.  Subclass to change how datagrams are handled.

    @ivar current: Sessions open now.
    @ivar total: Sessions opened so far.
    @ivar evicted: Sessions closed to make room (C{maxSessions}).
    @ivar dropped: Datagrams dropped: no server, or too many waiting.
    """

    noisy = False

    def __init__(self, frontend: Frontend, reactor: Any) -> None:
        self.frontend = frontend
        self.reactor = reactor
        self.sessions: OrderedDict[tuple[str, int], Session] = OrderedDict()
        self.current = self.total = self.maxCurrent = 0
        self.bytesIn = self.bytesOut = 0
        self.evicted = self.dropped = 0
        self.accessLog = accessLog
        self.accessSink: Any = None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.bytesIn += len(data)
        session = self.sessions.get(addr)
        if session is None:
            session = self.openSession(addr)
            if session is None:
                self.dropped += 1
                return
        else:
            self.sessions.move_to_end(addr)
        session.send(data)

    def openSession(self, addr: tuple[str, int]) -> Session | None:
        """A new session for C{addr}: evict the oldest if full, choose a server."""
        frontend = self.frontend
        while len(self.sessions) >= frontend.maxSessions:
            oldest = next(iter(self.sessions.values()))
            self.evicted += 1
            oldest.close("evicted")
        host, port = addr[0], addr[1]
        client = (IPv6Address if ":" in host else IPv4Address)("UDP", host, port)
        backend = frontend.backend
        try:
            server = backend.tryAcquire(Context(client=client, frontend=frontend.name))
        except NoServerAvailable:
            backend.noServerCount += 1
            return None
        if server is None:  # every server at maxconn: UDP does not queue
            return None
        session = Session(self, addr, server)
        self.sessions[addr] = session
        self.total += 1
        self.current = len(self.sessions)
        self.maxCurrent = max(self.maxCurrent, self.current)
        if isIPv4(server.host) or isIPv6(server.host):
            session.open(server.host)
        else:
            self.reactor.resolve(server.host).addCallbacks(session.open, lambda f: session.close("connect"))
        return session

    def ended(self, session: Session, why: str) -> None:
        """A session closed: release its server slot and log it."""
        if self.sessions.get(session.client) is session:
            del self.sessions[session.client]
        self.current = len(self.sessions)
        self.frontend.backend.release(session.server)
        if self.frontend.log:
            self.logAccess(session, TERMINATIONS.get(why, "--"))

    def logAccess(self, session: Session, termination: str) -> None:
        """Emit the access-log line of one finished session."""
        server = session.server
        self.accessLog.info(
            UDP_LOG_FORMAT,
            client=f"{session.client[0]}:{session.client[1]}",
            date=time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(session.started)),
            frontend=self.frontend.name,
            backend=self.frontend.backend.name,
            server=server.name,
            Tt=int((time.time() - session.started) * 1000),
            bytesIn=session.bytesIn,
            bytesOut=session.bytesOut,
            datagramsIn=session.datagramsIn,
            datagramsOut=session.datagramsOut,
            termination=termination,
        )

    def closeAll(self, why: str) -> None:
        """Close every session (the frontend stops)."""
        for session in list(self.sessions.values()):
            session.close(why)
