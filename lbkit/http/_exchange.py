# -*- test-case-name: tests.test_http -*-
"""
http mode: one request and its response, whichever the client speaks.

An L{Exchange} routes a request (or answers it: L{lbkit.http._local}),
chooses and connects to a server (pooled connections first), sends the
request head (rules and persistence applied once), relays the response
through an L{lbkit.http._server.ResponseSink} interface, and accounts for
it (counters, passive health, the access log and the C{finished} hook).
Its client side (L{ClientSide}) is an HTTP/1.1 connection (L{lbkit.http._h1}:
its requests one after another) or an HTTP/2 stream (L{lbkit.http._h2}, one
exchange per stream).  Its states and transitions: L{lbkit.http._states}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from twisted.logger import Logger
from twisted.python.failure import Failure

from lbkit._address import formatAddress
from lbkit._backend import Backend
from lbkit._dispatch import Dispatch, DispatchFailed, DispatchState
from lbkit._model import Context, Server
from lbkit.http._body import CHUNKED, UNTIL_CLOSE
from lbkit.http._compress import compressResponse
from lbkit.http._endings import (
    abortExchange,
    clientLost,
    detachServer,
    dropServer,
    fail,
    resend,
    serverFailed,
)
from lbkit.http._h2up import connectAny
from lbkit.http._headers import CODE_CLASS, clientSubject, logRequest, requestHead
from lbkit.http._local import Held, answerFirst
from lbkit.http._parse import Request, Response
from lbkit.http._retry import newServerProtocol
from lbkit.http._routing import Route
from lbkit.http._rules import rewriteRequest, rewriteResponse
from lbkit.http._server import HTTPServerProtocol
from lbkit.http._sides import ClientSide, Hooks
from lbkit.http._states import ACTIVE, DRAINING, HEAD, STREAMING, TRANSITIONS, TUNNEL
from lbkit.proxyproto import formatV1, formatV2

if TYPE_CHECKING:
    from lbkit.http._cache import CacheTx
    from lbkit.http._frontend import HTTPProxyFactory

__all__ = ["Exchange"]

_log = Logger(namespace="lbkit.http")
_QUEUED, _CONNECTING, _CONNECTED = DispatchState.QUEUED, DispatchState.CONNECTING, DispatchState.CONNECTED


class Exchange:
    """
    One request and its response at a time (see the module docstring): an
    HTTP/1.1 connection keeps one and L{begin}s it again for each request,
    an HTTP/2 stream has its own.  The L{ResponseSink} of its server connection.

    The attributes an L{lbkit.interfaces.IRequestRule} may read are
    C{client}, C{frontend}, C{backend}, C{server} and C{request}.

    @ivar state: A L{lbkit.http._states.State}.
    @ivar request: The request (C{None} once the exchange ended).
    @ivar context: Its L{Context}.
    @ivar backend: The backend it was routed to.
    @ivar server: The server chosen for it, or C{None}.
    @ivar conn: The server connection carrying it, or C{None}.
    @ivar dispatch: The L{Dispatch} getting it a server connection, or C{None}.
    @ivar bodyDone: Whether the request body was read whole.
    @ivar closeAfter: Whether the client connection closes after it.
    @ivar quiet: Log nothing for it (an HTTP/2 stream reset before it went
        to a server).
    @ivar waitedUntil: When its wait for a server ended in the queue, or -1.0.
    @ivar route: The route it took (C{None}: the default backend's).
    @ivar held: The L{Held} answer (tarpit) or cache wait it waits on, or C{None}.
    """

    # Slots: an exchange has more attributes than CPython 3.11 keeps in an
    # instance's inline values (30), and every attribute access on it paid
    # for a dict lookup (issue 11: about 4,000 instructions a request).  The
    # __dict__ slot keeps it open to attributes set from outside.
    __slots__ = (
        "_certTransport", "_chosenHook", "_clientDN", "_clientHost", "_dispatch", "_head",
        "_routeHook", "_scheme", "backend", "bodyDone", "bytesIn", "bytesOut", "client",
        "clientGone", "closeAfter", "conn", "context", "dispatch", "factory", "framing", "frontend",
        "hooks", "lastBytes", "logVersion", "nobodyListens", "plainHooks", "quiet", "reactor",
        "request", "respondedAt", "route", "server", "side", "since", "started", "startedAt",
        "state", "status", "termination", "waitedUntil",
        "__dict__", "__weakref__",
    )


    upgrading = False  # (ResponseSink)
    decodesChunked = False
    writeResponse: Callable[[bytes], None]
    held: Optional[Held] = None
    mirror: Any = None  # its lbkit.http._mirror.MirrorCopy, if mirrored
    cacheTx: Optional[CacheTx] = None  # a request the cache follows (docs/cache.md)
    noServer = "<NOSRV>"  # the log's server when none was chosen (a cache hit: "<CACHE>")
    trace: Any = None  # an http._tracing.Trace (docs/tracing.md)

    def __init__(
        self,
        factory: HTTPProxyFactory,
        client: ClientSide,
        hooks: Hooks,
        address: Any,
        scheme: bytes,
        certTransport: Any,
        nobodyListens: Callable[[], bool],
        logVersion: Optional[bytes] = None,
        plainHooks: bool = False,
        *,
        routeHook: bool = True,
        chosenHook: bool = True,
    ) -> None:
        """
        @param address: The client's address (C{client} for the rules).
        @param scheme: C{b"http"} or C{b"https"} (C{X-Forwarded-Proto}).
        @param certTransport: With mTLS, the TLS transport whose verified
            peer certificate names the client; else C{None}.
        @param nobodyListens: Whether nobody would see the access-log fields (then not built).
        @param logVersion: The protocol version shown in the access log,
            if not the request's (C{b"HTTP/2.0"}).
        @param plainHooks: Whether C{hooks} and C{factory} override (by
            their class or on the instance) neither C{finished} nor
            C{logAccess}, as the exchange is made: the line may then be
            formatted straight to bytes and handed to C{factory.accessSink}
            (L{lbkit.http._accessline.plainLog} checks the rest for each
            request).
        @param routeHook: Whether C{hooks.routeRequest} is to be called:
            C{False} when it is L{lbkit.http.HTTPFrontendProtocol}'s own,
            which, with no routes, gives the default backend.
        @param chosenHook: Whether C{hooks.serverChosen} is to be called:
            C{False} when it is the protocol's own, which does nothing.
        """
        self.factory = factory
        self.reactor = factory.reactor
        self.frontend = factory.frontend
        self.client = address
        self.side = client
        self.writer: Union[ClientSide, CacheTx] = client  # or the cache's copier (docs/cache.md)
        self.hooks = hooks
        self.decodesChunked = client.decodesChunked
        self._scheme = scheme
        self._clientHost = getattr(address, "host", "").encode("ascii")
        self._certTransport = certTransport
        self._clientDN: Optional[bytes] = None
        self.nobodyListens = nobodyListens
        self.plainHooks = plainHooks
        self.logCache: Any = None  # the parts its access-log lines repeat (http._accessline.LineCache)
        self.logVersion = logVersion
        self.state = HEAD
        self.started = self.bytesIn = 0
        self.bodyDone = True
        self.closeAfter = self.clientGone = self.quiet = False
        self.request: Optional[Request] = None
        self.context: Optional[Context] = None
        self.backend: Optional[Backend] = None
        self.server: Optional[Server] = None
        self.conn: Optional[HTTPServerProtocol] = None
        self.dispatch: Optional[Dispatch[HTTPServerProtocol]] = None
        self._dispatch: Optional[Dispatch[HTTPServerProtocol]] = None  # kept for the next request
        self.waitedUntil = -1.0
        self._routeHook = routeHook
        self._chosenHook = chosenHook

    def __repr__(self) -> str:
        return f"<Exchange {self.state.name} {self.request!r}>"

    def _go(self, event: str) -> None:
        try:
            self.state = TRANSITIONS[self.state][event]
        except KeyError:
            raise RuntimeError(f"{self!r}: no transition on {event!r}") from None

    @property
    def active(self) -> bool:
        """Whether a request is in progress (WAITING, SENT, STREAMING, TUNNEL)."""
        return self.state in ACTIVE

    @property
    def responseStarted(self) -> bool:
        """Whether a response head went to the client (STREAMING, TUNNEL)."""
        return self.state is STREAMING or self.state is TUNNEL

    # -- the request -----------------------------------------------------------

    def begin(self, request: Request, framing: int, upgrade: bool, closeAfter: bool, headBytes: int) -> None:
        """
        A request head arrived (HEAD -> WAITING); L{dispatch} sends it on.

        @param framing: Its body's framing (0: none).
        @param upgrade: It asks for a protocol upgrade.
        @param closeAfter: The connection closes after this request.
        @param headBytes: The bytes of its head, read from the client.
        """
        self.state = TRANSITIONS[self.state]["request"]  # (inline: once per request)
        now = self.reactor.seconds()
        self.started += 1
        self.request = request
        self.framing = framing
        self.bodyDone = framing == 0
        self.upgrading = upgrade
        self.closeAfter = closeAfter
        self.bytesIn = headBytes
        self.bytesOut = 0
        self.status = 0
        self.termination = "--"
        self.quiet = False
        self._head: Optional[bytes] = None
        self.route: Any = None
        #: For the timeouts: when bytes last moved, and how many had then.
        self.startedAt = self.since = now
        self.lastBytes = -1
        self.respondedAt = self.waitedUntil = -1.0
        self.dispatch = self.mirror = None
        self.server = None
        self.backend = None
        self.context = Context(client=self.client, frontend=self.frontend.name, request=request)
        self.factory.requests += 1
        if self.frontend.tracer is not None:
            self.frontend.tracer.begin(self, request)

    def forward(self) -> None:
        """Route the request (the C{routeRequest} hook), then L{toServer} (unless a rule or the cache answers)."""
        assert self.request is not None
        frontend = self.frontend
        if frontend.answering:
            if answerFirst(self):  # (docs/rules.md)
                return
        elif self._routeHook or frontend.routes:
            self.backend, self.route = self.hooks.routeRequest(self.request)
        else:
            self.backend = frontend.default  # (what routeRequest gives without routes)
        dispatch = self._dispatch
        if dispatch is None:
            self.toServer()
            return
        # as toServer (inline: once per request)
        self.dispatch = dispatch
        dispatch.rerun(self.backend, self.context)  # type: ignore[arg-type]
        state = dispatch.state
        if state is _QUEUED or state is _CONNECTING:
            self.side.pauseReading()  # it waits for a server: stop reading the client

    def toServer(self) -> None:
        """Get the routed request a server connection (L{lbkit._dispatch.Dispatch}: choose, queue, connect, retry), and send it."""
        backend, context = self.backend, self.context
        assert backend is not None and context is not None
        dispatch = self._dispatch
        if dispatch is None:
            dispatch = self._dispatch = Dispatch(
                backend, context, self.reactor, self._newServerProtocol,
                serverChosen=self._serverChosen if self._chosenHook else None, pooled=self._pooled,
                connected=self._connected, failed=self._dispatchFailed, connect=connectAny,
            )
        else:
            dispatch.reset(backend, context)
        self.dispatch = dispatch
        dispatch.run()
        state = dispatch.state
        if state is _QUEUED or state is _CONNECTING:
            self.side.pauseReading()  # it waits for a server: stop reading the client

    def requestBodyDone(self) -> None:
        """The client side read the whole request body."""
        self.bodyDone = True
        conn = self.conn
        if conn is not None and conn.transport is not None:
            conn.transport.unregisterProducer()  # type: ignore[attr-defined]
        if self.state is DRAINING:
            self._after()

    # -- choosing and connecting: what the Dispatch calls ---------------------

    def _serverChosen(self, server: Server) -> None:
        self.server = server
        self.hooks.serverChosen(server)

    def _pooled(self, server: Server) -> Optional[HTTPServerProtocol]:
        # an upgrade gets a new connection, a sendProxy server's is this client's own
        self.server = server  # (without a serverChosen hook, _serverChosen is not called)
        if self.upgrading:
            return None
        if server.sendProxy:
            return self.side.takePrivate(server)
        return self.factory.pool.get(server)

    def _newServerProtocol(self, server: Server) -> HTTPServerProtocol:
        return newServerProtocol(server, self.factory.pool)

    def _dispatchFailed(self, reason: Failure) -> None:
        failure = reason.value
        if not isinstance(failure, DispatchFailed):
            self.internalError(reason)  # a hook, the balancer, or sending raised
            return
        dispatch = self.dispatch
        if dispatch is not None and dispatch.queuedAt > dispatch.chosenAt:
            self.waitedUntil = self.reactor.seconds()  # the time queued is logged however the wait ended
        self.fail(failure.status, failure.termination)

    def internalError(self, reason: Failure) -> None:
        """Something raised while choosing, connecting or sending (a rule, a hook): log it, drop the exchange (IC)."""
        _log.failure("{frontend}: internal error handling {client}", reason,
                     frontend=self.frontend.name, client=formatAddress(self.client))
        self.abortExchange("IC")

    def _releaseSlot(self) -> None:
        dispatch = self.dispatch
        if dispatch is not None and dispatch.holding:
            server = dispatch.server
            assert server is not None
            server.sessions.discard(self.side.session)
            dispatch.release()

    def _connected(self, server: Server, conn: HTTPServerProtocol) -> None:
        """The dispatch got C{conn}: send the request head (rules and persistence applied once)."""
        if server.sendProxy and not self.dispatch.reused:  # type: ignore[union-attr]
            # the first bytes say who the client is; the connection is then
            # this client's own (ClientSide.keepPrivate)
            fmt = formatV1 if server.sendProxy == 1 else formatV2
            conn.send(fmt(self.client, self.side.getHost()))
            conn.private = True
        request = self.request
        assert request is not None
        if self.clientGone:
            conn.release(True)
            self._releaseSlot()
            return
        self.conn = conn
        self.state = TRANSITIONS[self.state]["send"]  # (inline: once per request)
        server.sessions.add(self.side.session)
        head = self._head
        if head is None:
            # once per request: a retry sends the same head again
            route, backend = self.route, self.backend
            assert backend is not None and self.context is not None
            if route is not None or self.frontend.requestRules or backend.persistence is not None:
                routeRules = route.requestRules if isinstance(route, Route) else ()
                rewriteRequest(request, self, self.frontend.requestRules, routeRules, backend, self.context)
            if self._certTransport is not None and self._clientDN is None:
                self._clientDN = clientSubject(self._certTransport)
            dn = self._clientDN if self._certTransport is not None else None
            head = self._head = requestHead(request, self.framing == CHUNKED, self.upgrading,
                                            self.frontend.forwardedFor, self._clientHost, self._scheme, dn)
        self.writeResponse = self.writer.writeResponse
        conn.startExchange(self, head, request.method)
        self.side.serverAttached(conn)

    # -- the response (ResponseSink) ---------------------------------------------

    def interimResponse(self, response: Response) -> None:
        """A 1xx response: pass it on, except to an HTTP/1.0 client (RFC 9110 §15.2)."""
        request = self.request
        if request is not None and request.version == b"HTTP/1.0":
            return
        data = self.side.responseHeadBytes(response, 0, True)
        if data:
            self.writeResponse(data)

    def _account(self, response: Response) -> None:
        self.respondedAt = self.reactor.seconds()
        code = self.status = response.code
        server = self.server
        assert server is not None
        key = CODE_CLASS[code // 100] if code < 600 else "other"
        server.responses[key] += 1
        server.requests += 1
        self.factory.responses[key] += 1
        # passive health: 5xx counts against the server (not 501, 505: the client's doing)
        if server.observers:
            if code >= 500 and code != 501 and code != 505:
                server.observe(False, f"Layer7 wrong status, code: {code}")
            else:
                server.observe(True, "Layer7 response")

    def responseHead(self, conn: HTTPServerProtocol, response: Response, framing: int) -> bytes:
        """The final response head: account for it, rewrite it, return it as it goes to the client."""
        self._account(response)
        backend, server, route, frontend = self.backend, self.server, self.route, self.frontend
        assert backend is not None and server is not None and self.context is not None
        if framing == UNTIL_CLOSE:
            self.closeAfter = True
        self.state = TRANSITIONS[self.state]["response"]  # (inline: once per request)
        if route is not None or frontend.responseRules or backend.persistence is not None:
            routeRules = route.responseRules if isinstance(route, Route) else ()
            rewriteResponse(response, self, routeRules, frontend.responseRules, backend, server, self.context)
        if frontend.compresses:  # (docs/http.md, "Compression")
            return compressResponse(self, conn, response, framing)
        data = self.writer.responseHeadBytes(response, framing, False)
        conn.bytes += len(data)
        return data

    def tunnelStarted(self, conn: HTTPServerProtocol, response: Response) -> None:
        """The server switched protocols: pass its 101 on, and tunnel."""
        self._account(response)
        self._go("tunnel")
        conn.bytes += self.side.startTunnel(conn, response)

    def responseDone(self, conn: HTTPServerProtocol) -> None:
        """The whole response went to the client."""
        self.bytesOut = self.side.responseBytes(conn, True)
        if not self.bodyDone:
            # The server answered before the request body was complete (an
            # early 413, say): the client side drops the rest of the body
            # (HTTP/1.1, up to DRAIN_LIMIT bytes, so the client is not
            # reset in the middle of its upload) or refuses it (HTTP/2).
            self._end(False)
            if self.side.drain():
                self._go("drain")
                return
            self._after()
            return
        self._end(True)
        self._after()

    def _after(self) -> None:
        """The exchange is over: the next request, or close."""
        if self.closeAfter:
            self.close()
        else:
            self.state = TRANSITIONS[self.state]["next"]  # (inline: once per request)
            self.side.nextRequest()

    # -- ending early (lbkit.http._endings) ----------------------------------

    serverFailed = serverFailed
    detachServer = detachServer
    resend = resend
    fail = fail
    abortExchange = abortExchange
    clientLost = clientLost
    dropServer = dropServer

    # -- ending ----------------------------------------------------------------

    def tunnelEnded(self) -> None:
        """The server side of a tunnel closed: close the client too."""
        self._end(False)
        self.close()

    def close(self) -> None:
        """Close the client connection (or end the stream) cleanly."""
        self._go("close")
        self.side.closeClient()

    def _end(self, reusable: bool) -> None:
        """Release the server connection and slot, and log the request."""
        conn, self.conn = self.conn, None
        self.side.serverDetached()
        if conn is not None:
            transport = conn.transport
            if transport is not None and transport.producer is not None:  # type: ignore[attr-defined]
                transport.unregisterProducer()  # type: ignore[attr-defined]
            if conn.sink is self:
                conn.sink = None
            if self.bytesOut == 0 and self.responseStarted:
                # cut short (server gone, client gone, timeout): log what reached the client (HAProxy)
                self.bytesOut = self.side.responseBytes(conn, False)
            conn.release(reusable and self.state is not TUNNEL, self.side.keepPrivate if conn.private else None)
        dispatch = self.dispatch
        if dispatch is not None and dispatch.state is not _CONNECTED:
            dispatch.cancel()
        factory = self.factory
        factory.bytesIn += self.bytesIn
        factory.bytesOut += self.bytesOut
        if dispatch is not None and dispatch.holding:
            server = self.server
            if server is not None:
                server.bytesIn += self.bytesIn
                server.bytesOut += self.bytesOut
            # as _releaseSlot (inline: once per request)
            held = dispatch.server
            assert held is not None
            held.sessions.discard(self.side.session)
            dispatch.holding = False  # as dispatch.release()
            dispatch.backend.release(held)
        if self.cacheTx is not None:
            self.cacheTx.ended(self, reusable)
        if self.context is not None and self.context.watchers is not None:  # stick tables (lbkit.traffic)
            self.context.ended(self.status, self.bytesIn, self.bytesOut)
        if not self.quiet:
            logRequest(self, factory)
        self.request = None
