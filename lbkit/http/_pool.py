# -*- test-case-name: tests.test_http -*-
"""
Persistent connections to servers, kept idle between requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from lbkit._model import Server

if TYPE_CHECKING:
    from lbkit.http._server import HTTPServerProtocol

__all__ = ["ConnectionPool"]


class ConnectionPool:
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
        self._idle: dict[Server, list[HTTPServerProtocol]] = {}
        self._sweeper: Any = None

    def get(self, server: Server) -> Optional[HTTPServerProtocol]:
        """An idle connection to C{server}, taken out of the pool, or L{None}."""
        idle = self._idle.get(server)
        while idle:
            conn = idle.pop()
            if conn.transport is not None and conn.connected:
                return conn
        return None

    def put(self, conn: HTTPServerProtocol) -> None:
        """Keep C{conn} for reuse, or close it when the pool is full."""
        idle = self._idle.setdefault(conn.server, [])
        if len(idle) >= self.maxIdle or self.maxIdle <= 0:
            conn.close()
            return
        conn.idleSince = self.reactor.seconds()
        idle.append(conn)
        if self._sweeper is None and self.idleTimeout > 0:
            self._sweeper = self.reactor.callLater(self.idleTimeout / 2, self._sweep)

    def discard(self, conn: HTTPServerProtocol) -> None:
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
