# -*- test-case-name: tests.test_shutdown -*-
"""
Graceful stop for the proxy factories: know which connections are open,
ask them to finish, wait for them, and kill what is left.

L{DrainingFactory} is mixed into L{lbkit.tcp.TCPProxyFactory} and
L{lbkit.http.HTTPProxyFactory}; their protocols call L{connectionOpened}
and L{connectionClosed}.  L{lbkit.service.ListeningService} drives it when
a frontend stops (shutdown, or a reload that removes the frontend).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

__all__ = ["DrainingFactory"]


class DrainingFactory:
    """
    Mixin for a factory: tracks its live protocols.

    A protocol may provide C{stopGracefully()} (finish what is in flight,
    take nothing new: an http connection closes after the current response,
    at once when idle) and C{kill()} (abort now, logging a C{K}
    termination).  Without them, L{stopGracefully} does nothing and
    L{killAll} aborts the transport.

    @ivar stopping: Whether L{stopGracefully} was called: protocols read it
        to refuse new work (http answers with C{Connection: close}).
    @ivar current: With L{countsConnections}, the connections open now.
    @ivar total: With L{countsConnections}, the connections opened so far.
    """

    stopping = False
    #: Whether L{connectionOpened} and L{connectionClosed} keep C{current}
    #: and C{total}; a factory that sets it must not count them itself.
    countsConnections = False
    current = 0
    total = 0

    @property
    def connections(self) -> set[Any]:
        """The protocols whose connections are open now."""
        conns: set[Any] | None = self.__dict__.get("_connections")
        if conns is None:
            conns = self.__dict__["_connections"] = set()
        return conns

    def connectionOpened(self, protocol: Any, counted: bool = True) -> None:
        """
        Called by a protocol from C{connectionMade}.

        @param counted: Whether it counts in C{current} and C{total} (with
            L{countsConnections}): false for a stand-in that hands the
            connection on to a protocol that registers in turn (http's ALPN
            negotiation), so the connection is counted once.
        """
        self.connections.add(protocol)
        if self.countsConnections:
            if counted:
                self.current += 1
                self.total += 1
            else:
                self.__dict__.setdefault("_uncounted", set()).add(protocol)
        if self.stopping:
            # accepted in the very turn the port stopped: finish it too
            _stop(protocol)

    def connectionClosed(self, protocol: Any) -> None:
        """Called by a protocol from C{connectionLost}."""
        conns = self.connections
        if protocol in conns:
            conns.remove(protocol)
            if self.countsConnections:
                uncounted: set[Any] | None = self.__dict__.get("_uncounted")
                if uncounted and protocol in uncounted:
                    uncounted.remove(protocol)
                else:
                    self.current -= 1
        if not conns:
            waiters: list[Deferred[None]] = self.__dict__.pop("_idleWaiters", [])
            for d in waiters:
                d.callback(None)

    def whenIdle(self) -> Deferred[None]:
        """A L{Deferred} that fires once no connection is open."""
        if not self.connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self.__dict__.setdefault("_idleWaiters", []).append(d)
        return d

    def stopGracefully(self) -> None:
        """Ask every open connection to finish its work and close."""
        self.stopping = True
        for protocol in list(self.connections):
            _stop(protocol)

    def killAll(self) -> None:
        """Abort every open connection now."""
        for protocol in list(self.connections):
            kill = getattr(protocol, "kill", None)
            if kill is not None:
                kill()
            elif protocol.transport is not None:
                protocol.transport.abortConnection()


def _stop(protocol: Any) -> None:
    stop = getattr(protocol, "stopGracefully", None)
    if stop is not None:
        stop()
