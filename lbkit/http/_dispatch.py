# -*- test-case-name: tests.test_http -*-
"""
http mode: getting a server connection for one request at a time
(choose -> queue -> connect -> retry), for an L{lbkit.http._exchange.Exchange}.

A L{Dispatcher} asks the backend for a server (C{tryAcquire}), waits in
its queue when every server is full, takes a pooled connection or connects
a new one, and on a failed connect tries again (on another server when
there is one) up to the backend's C{retries}; what happens is reported to
its L{Requester}.  It calls back synchronously when it can: a request that
finds a pooled connection costs no L{Deferred}.  A request asking for an
upgrade always gets a new connection, and one to a C{sendProxy} server
its own client's (a new one starts with the client's PROXY header).

(tcp mode has its own copy of this loop; they are to become one.)
"""

from __future__ import annotations

from typing import Any, Optional, Protocol

from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

from lbkit._backend import Backend
from lbkit._connect import connectFailed, connectServer, isLocalResourceError, prepareRetry
from lbkit._model import Context, Server
from lbkit.error import NoServerAvailable, QueueTimeout
from lbkit.http._pool import ConnectionPool
from lbkit.http._server import HTTPServerProtocol
from lbkit.http._sides import ClientSide
from lbkit.proxyproto import formatV1, formatV2

__all__ = ["Dispatcher", "Requester"]


class Requester(Protocol):
    """
    What a L{Dispatcher} reports to (an L{lbkit.http._exchange.Exchange}),
    on the reactor thread.  A method called from a L{Deferred} callback
    that raises is reported to L{internalError}.

    @ivar side: The client side (pauseReading while the request waits;
        a C{sendProxy} server's connection kept for this client; the
        address the client connected to, for the PROXY header).
    @ivar client: The client's address, for the PROXY header.
    @ivar clientGone: Whether the client went away (no retry then).
    @ivar upgrading: The request asks for an upgrade (a new connection).
    """

    side: ClientSide
    client: Any
    clientGone: bool
    upgrading: bool

    def serverChosen(self, server: Server) -> None:
        """C{server} was chosen, its connection slot taken (again on each retry)."""

    def serverConnected(self, conn: HTTPServerProtocol) -> None:
        """C{conn} (pooled, or connected now) is ready for the request."""

    def fail(self, status: int, termination: str) -> None:
        """No server connection could be had: answer C{status}, log C{termination}."""

    def internalError(self, reason: Failure) -> None:
        """Something raised (a hook, the balancer, the requester itself)."""


class Dispatcher:
    """
    Gets a server connection for one request at a time (see the module
    docstring); reused for the next request with L{start}.

    @ivar backend: The backend of the request.
    @ivar server: The server chosen last, or L{None}.
    @ivar attempts: How many times a server was chosen (1 + retries).
    @ivar holding: Whether a connection slot of C{server} is held.
    @ivar chosenAt: When a server was last chosen, or the queue wait
        failed; -1.0 before.
    @ivar connectedAt: When the connection was made or taken from the
        pool; -1.0 before.
    """

    def __init__(self, reactor: Any, pool: ConnectionPool[HTTPServerProtocol], requester: Requester) -> None:
        self.reactor = reactor
        self.pool = pool
        self.requester = requester
        self.backend: Optional[Backend] = None
        self.context: Optional[Context] = None
        self.server: Optional[Server] = None
        self.attempts = 0
        self.holding = False
        self.chosenAt = self.connectedAt = -1.0
        #: The queue wait or connect in progress (a L{Deferred}), or L{None}.
        self.pending: Any = None

    def start(self, backend: Backend, context: Context) -> None:
        """Get a connection for a new request."""
        self.backend = backend
        self.context = context
        self.server = None
        self.attempts = 0
        self.holding = False
        self.chosenAt = self.connectedAt = -1.0
        self._choose()

    def retry(self, status: int, termination: str) -> None:
        """
        The connection given failed before a response: give its slot back
        and choose again, counting a retry, or fail with C{status} and
        C{termination} when no retry is left.
        """
        self.release()
        self._retryOrFail(status, termination)

    def again(self, status: int, termination: str) -> None:
        """
        The pooled connection given was dead: connect to the same server
        once more, without counting an attempt, if it has a free slot;
        else as L{retry}.
        """
        self.release()
        server = self.server
        backend = self.backend
        assert server is not None and backend is not None
        self.attempts -= 1
        if server.hasFreeSlot():
            backend.reacquire(server)
            self.holding = True
            self.attempts += 1
            self._connect(server)
        else:
            self._retryOrFail(status, termination)

    def release(self) -> None:
        """Give back the slot held on C{server}, if one is held."""
        if self.holding:
            self.holding = False
            assert self.backend is not None and self.server is not None
            self.backend.release(self.server)

    def cancel(self) -> None:
        """Stop waiting for the queue or a connect (the slot is given back)."""
        waiting, self.pending = self.pending, None
        if waiting is not None:
            waiting.cancel()

    # -- the loop ----------------------------------------------------------

    def _choose(self) -> None:
        backend = self.backend
        assert backend is not None and self.context is not None
        try:
            server = backend.tryAcquire(self.context)
        except NoServerAvailable:
            backend.noServerCount += 1
            self.requester.fail(503, "SC")
            return
        if server is None:
            self.requester.side.pauseReading()
            waiting = self.pending = backend.enqueue(self.context, self.reactor)
            waiting.addCallbacks(self._chosen, self._queueFailed).addErrback(self.requester.internalError)
            return
        self._chosen(server)

    def _queueFailed(self, reason: Failure) -> None:
        self.pending = None
        self.chosenAt = self.reactor.seconds()  # the time queued is logged however the wait ended
        if reason.check(CancelledError):
            return
        self.requester.fail(503, "sQ" if reason.check(QueueTimeout) else "SC")

    def _chosen(self, server: Server) -> None:
        assert self.context is not None
        self.pending = None
        self.server = server
        self.holding = True
        self.attempts += 1
        self.context.tried.add(server)
        requester = self.requester
        requester.serverChosen(server)
        now = self.chosenAt = self.reactor.seconds()
        if requester.upgrading:
            conn = None
        elif server.sendProxy:
            conn = requester.side.takePrivate(server)
        else:
            conn = self.pool.get(server)
        if conn is not None:
            self.connectedAt = now
            requester.serverConnected(conn)
            return
        requester.side.pauseReading()
        self._connect(server)

    def _connect(self, server: Server) -> None:
        assert self.backend is not None
        conn = HTTPServerProtocol(server, self.pool)
        waiting = self.pending = connectServer(self.reactor, server, conn, self.backend.timeoutConnect)
        waiting.addCallbacks(self._connected, self._connectFailed).addErrback(self.requester.internalError)

    def _connected(self, conn: HTTPServerProtocol) -> None:
        self.pending = None
        self.connectedAt = self.reactor.seconds()
        server = self.server
        assert server is not None
        requester = self.requester
        if server.sendProxy:
            # the first bytes say who the client is; the connection is then
            # this client's own (ClientSide.keepPrivate)
            fmt = formatV1 if server.sendProxy == 1 else formatV2
            conn.send(fmt(requester.client, requester.side.getHost()))
            conn.private = True
        server.observe(True)
        requester.serverConnected(conn)

    def _connectFailed(self, reason: Failure) -> None:
        self.pending = None
        server = self.server
        assert server is not None
        self.release()
        if reason.check(CancelledError):
            return
        if isLocalResourceError(reason):
            # lbkit ran out of file descriptors or ports: nobody's fault but
            # its own (503, RC, as HAProxy), and retried elsewhere
            connectFailed(server, reason)
            self._retryOrFail(503, "RC")
            return
        # no server could take the request, timed out (sC) or refused (SC):
        # 503, as HAProxy (502 is for a server that answered wrong)
        self._retryOrFail(503, "sC" if connectFailed(server, reason) else "SC")

    def _retryOrFail(self, status: int, termination: str) -> None:
        backend = self.backend
        assert backend is not None and self.context is not None
        if self.attempts > backend.retries or self.requester.clientGone:
            self.requester.fail(status, termination)
            return
        # a retry after lbkit's own failure is not one the server caused
        prepareRetry(backend, None if termination == "RC" else self.server, self.context)
        self._choose()
