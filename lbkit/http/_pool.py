# -*- test-case-name: tests.test_http -*-
"""
Persistent connections to servers, kept idle between requests.
"""

from __future__ import annotations

from typing import Any, Generic, Optional, Protocol, TypeVar

from lbkit._model import Server

__all__ = ["ConnectionPool", "Pooled"]


class Pooled(Protocol):
    """
    What a L{ConnectionPool} keeps: a connection to one server
    (L{lbkit.http.HTTPServerProtocol}).

    @ivar server: The server it is connected to.
    @ivar idleSince: Set by the pool, to when it was put back.
    @ivar connected: Whether it is still connected (a closed one is not handed out).
    @ivar transport: Its transport, or C{None} before it is connected.
    """

    server: Server
    idleSince: float
    connected: int
    transport: Any

    def close(self) -> None:
        """Close the connection (the pool drops one it does not keep)."""


P = TypeVar("P", bound=Pooled)


class ConnectionPool(Generic[P]):
    """
    Idle keep-alive connections to each server, most recently used first.

    @ivar maxIdle: At most this many idle connections per server; more are
        closed when returned.
    @ivar idleTimeout: An idle connection unused this long is closed.
    """

    def __init__(self, reactor: Any, maxIdle: int = 64, idleTimeout: float = 30.0) -> None:
        self.reactor = reactor
        self.maxIdle = maxIdle
        self.idleTimeout = idleTimeout
        self._idle: dict[Server, list[P]] = {}
        self._sweeper: Any = None

    def get(self, server: Server) -> Optional[P]:
        """An idle connection to C{server}, taken out of the pool, or C{None}."""
        idle = self._idle.get(server)
        while idle:
            conn = idle.pop()
            if conn.transport is not None and conn.connected:
                return conn
        return None

    def put(self, conn: P) -> None:
        """Keep C{conn} for reuse, or close it when the pool is full."""
        idle = self._idle.setdefault(conn.server, [])
        if len(idle) >= self.maxIdle or self.maxIdle <= 0:
            conn.close()
            return
        conn.idleSince = self.reactor.seconds()
        idle.append(conn)
        if self._sweeper is None and self.idleTimeout > 0:
            self._sweeper = self.reactor.callLater(self.idleTimeout / 2, self._sweep)

    def discard(self, conn: P) -> None:
        """Forget C{conn} (it closed while idle)."""
        idle = self._idle.get(conn.server)
        if idle and conn in idle:
            idle.remove(conn)

    def idleCount(self, server: Optional[Server] = None) -> int:
        """How many idle connections are kept (to C{server}, or in all)."""
        if server is not None:
            return len(self._idle.get(server, ()))
        return sum(len(v) for v in self._idle.values())

    def _sweep(self) -> None:
        self._sweeper = None
        limit = self.reactor.seconds() - self.idleTimeout
        remaining = 0
        for idle in self._idle.values():
            old = [c for c in idle if c.idleSince <= limit]
            for conn in old:
                idle.remove(conn)
                conn.close()
            remaining += len(idle)
        if remaining:
            self._sweeper = self.reactor.callLater(self.idleTimeout / 2, self._sweep)

    def closeAll(self) -> None:
        """Close every idle connection and stop the sweeper."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for conn in list(idle):
                conn.close()
            idle.clear()
