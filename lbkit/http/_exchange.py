# -*- test-case-name: tests.test_http -*-
"""
http mode: one request and its response, whichever the client speaks.

An L{Exchange} routes a request, chooses and connects to a server (pooled
connections first), sends the request head (rules and persistence applied
once), relays the response through an L{lbkit.http._server.ResponseSink}
interface, and accounts for it (counters, passive health, the access log
and the C{finished} hook).  The client connection (L{ClientSide}) is an
HTTP/1.1 connection (L{lbkit.http._h1}, which keeps one exchange and runs
its requests one after another) or an HTTP/2 stream (L{lbkit.http._h2},
one exchange per stream).

Its states and their one transition table are in L{lbkit.http._states}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from twisted.logger import Logger
from twisted.python.failure import Failure

from lbkit._address import formatAddress
from lbkit._backend import Backend
from lbkit._model import Context, Server
from lbkit.http._body import CHUNKED, UNTIL_CLOSE
from lbkit.http._dispatch import Dispatcher
from lbkit.http._headers import CODE_CLASS, IDEMPOTENT, clientSubject, logFields, requestHead
from lbkit.http._parse import BadMessage, Request, Response
from lbkit.http._routing import Route
from lbkit.http._server import HTTPServerProtocol
from lbkit.http._sides import ClientSide, Hooks
from lbkit.http._states import (
    ACTIVE,
    ANSWERING,
    DRAINING,
    HEAD,
    STREAMING,
    TRANSITIONS,
    TUNNEL,
)
from lbkit.interfaces import IHTTPPersistence

if TYPE_CHECKING:
    from lbkit.http._frontend import HTTPProxyFactory

__all__ = ["Exchange"]

_log = Logger(namespace="lbkit.http")


class Exchange:
    """
    One request and its response at a time (see the module docstring):
    an HTTP/1.1 connection keeps one and L{begin}s it again for each
    request, an HTTP/2 stream has its own.  It is the L{ResponseSink} of
    the server connection that carries its request.

    The attributes an L{lbkit.interfaces.IRequestRule} may read are
    C{client}, C{frontend}, C{backend}, C{server} and C{request}.

    @ivar state: A L{State}.
    @ivar request: The request (L{None} once the exchange ended).
    @ivar context: Its L{Context}.
    @ivar backend: The backend it was routed to.
    @ivar server: The server chosen for it, or L{None}.
    @ivar conn: The server connection carrying it, or L{None}.
    @ivar bodyDone: Whether the request body was read whole.
    @ivar closeAfter: Whether the client connection closes after it.
    @ivar quiet: Log nothing for it (an HTTP/2 stream reset before it went
        to a server).
    """

    # ResponseSink
    upgrading = False
    decodesChunked = False
    writeResponse: Callable[[bytes], None]

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
    ) -> None:
        """
        @param address: The client's address (C{client} for the rules).
        @param scheme: C{b"http"} or C{b"https"} (C{X-Forwarded-Proto}).
        @param certTransport: With mTLS, the TLS transport whose verified
            peer certificate names the client; else L{None}.
        @param nobodyListens: Whether nobody would see the access-log
            fields (they are then not built).
        @param logVersion: The protocol version shown in the access log,
            if not the request's (C{b"HTTP/2.0"}).
        """
        self.factory = factory
        self.reactor = factory.reactor
        self.frontend = factory.frontend
        self.client = address
        self.side = client
        self.hooks = hooks
        self.decodesChunked = client.decodesChunked
        self._scheme = scheme
        self._clientHost = getattr(address, "host", "").encode("ascii")
        self._certTransport = certTransport
        self._clientDN: Optional[bytes] = None
        self._nobodyListens = nobodyListens
        self.logVersion = logVersion
        self.state = HEAD
        self.started = 0
        self.request: Optional[Request] = None
        self.context: Optional[Context] = None
        self.backend: Optional[Backend] = None
        self.server: Optional[Server] = None
        self.conn: Optional[HTTPServerProtocol] = None
        self.bodyDone = True
        self.closeAfter = False
        self.clientGone = False
        self.quiet = False
        self.bytesIn = 0
        self.dispatcher = Dispatcher(self.reactor, factory.pool, self)

    def __repr__(self) -> str:
        return f"<Exchange {self.state.name} {self.request!r}>"

    def _go(self, event: str) -> None:
        # the transitions every request makes look TRANSITIONS up inline
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
        self._route: Any = None
        self.startedAt = self.since = now
        self._lastBytes = -1
        self.respondedAt = -1.0
        self.server = None
        self.backend = None
        self.context = Context(client=self.client, frontend=self.frontend.name, request=request)
        self.factory.requests += 1

    def dispatch(self) -> None:
        """Route the request (the C{routeRequest} hook), then choose a server for it."""
        assert self.request is not None and self.context is not None
        backend, self._route = self.hooks.routeRequest(self.request)
        self.backend = backend
        self.dispatcher.start(backend, self.context)

    def requestBodyDone(self) -> None:
        """The client side read the whole request body."""
        self.bodyDone = True
        conn = self.conn
        if conn is not None and conn.transport is not None:
            conn.transport.unregisterProducer()  # type: ignore[attr-defined]
        if self.state is DRAINING:
            self._after()

    # -- choosing and connecting: the Dispatcher's Requester -------------------

    def serverChosen(self, server: Server) -> None:
        """The dispatcher chose C{server} (the C{serverChosen} hook runs)."""
        self.server = server
        self.hooks.serverChosen(server)

    def internalError(self, reason: Failure) -> None:
        """
        Something raised while choosing, connecting or sending (a rule, a
        persistence hook, a subclass): log it and drop the exchange rather
        than leave the client waiting.
        """
        _log.failure(
            "{frontend}: internal error handling {client}",
            reason,
            frontend=self.frontend.name,
            client=formatAddress(self.client),
        )
        self.abortExchange("IC")

    def _releaseSlot(self) -> None:
        dispatcher = self.dispatcher
        if dispatcher.holding:
            server = dispatcher.server
            assert server is not None
            server.sessions.discard(self.side.session)
            dispatcher.release()

    def serverConnected(self, conn: HTTPServerProtocol) -> None:
        """C{conn} (pooled, or connected now) is ready: send the request on it."""
        request = self.request
        server = self.server
        assert request is not None and server is not None
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
            self._applyRequestRules(request)
            head = self._head = requestHead(
                request,
                self.framing == CHUNKED,
                self.upgrading,
                self.frontend.forwardedFor,
                self._clientHost,
                self._scheme,
                self._clientSubject() if self._certTransport is not None else None,
            )
        self.writeResponse = self.side.writeResponse
        conn.startExchange(self, head, request.method == b"HEAD")
        self.side.serverAttached(conn)

    def _applyRequestRules(self, request: Request) -> None:
        route = self._route
        for rule in self.frontend.requestRules:
            rule.applyToRequest(request, self)
        if isinstance(route, Route):
            for rule in route.requestRules:
                rule.applyToRequest(request, self)
        backend = self.backend
        assert backend is not None and self.context is not None
        persistence = backend.persistence
        # (providedBy(None) alone costs more than the rest of this method)
        if persistence is not None and IHTTPPersistence.providedBy(persistence):
            persistence.rewriteRequest(backend, request, self.context)

    def _clientSubject(self) -> bytes:
        if self._clientDN is None:
            self._clientDN = clientSubject(self._certTransport)
        return self._clientDN

    # -- the response (ResponseSink) ---------------------------------------------

    def interimResponse(self, response: Response) -> None:
        """
        A 1xx response (e.g. 100 Continue): pass it on, except to an
        HTTP/1.0 client, which does not know them (RFC 9110 §15.2).
        """
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
        # passive health: 5xx counts against the server (501 and 505 are
        # the client's doing), anything else for it
        if code >= 500 and code != 501 and code != 505:
            server.observe(False, f"Layer7 wrong status, code: {code}")
        else:
            server.observe(True, "Layer7 response")

    def responseHead(self, conn: HTTPServerProtocol, response: Response, framing: int) -> bytes:
        """The final response head: account for it, rewrite it, return it as it goes to the client."""
        self._account(response)
        if framing == UNTIL_CLOSE:
            self.closeAfter = True
        self.state = TRANSITIONS[self.state]["response"]  # (inline: once per request)
        backend, server = self.backend, self.server
        assert backend is not None and server is not None and self.context is not None
        persistence = backend.persistence
        if persistence is not None and IHTTPPersistence.providedBy(persistence):
            persistence.rewriteResponse(backend, server, response, self.context)
        route = self._route
        if isinstance(route, Route):
            for rule in route.responseRules:
                rule.applyToResponse(response, self)
        for rule in self.frontend.responseRules:
            rule.applyToResponse(response, self)
        data = self.side.responseHeadBytes(response, framing, False)
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

    def serverFailed(self, conn: HTTPServerProtocol, reason: Union[Failure, BadMessage], sentNothing: bool) -> None:
        """
        The server connection broke, or sent garbage, before a response
        head: retry elsewhere when that is safe, else answer 502.
        """
        request = self.request
        if request is None or self.clientGone:
            return
        server = self.server
        why = reason.getErrorMessage() if isinstance(reason, Failure) else str(reason)
        if isinstance(reason, BadMessage):
            _log.warn("{server}: invalid response: {why}", server=server.fullName if server else "-", why=why)
        if server is not None:
            server.observe(False, f"Layer7 invalid response: {why}")
        canRetry = (
            isinstance(reason, Failure)
            and request.method in IDEMPOTENT
            and self.framing == 0  # a body already sent cannot be sent again
        )
        self.conn = None
        if conn.transport is not None:
            conn.sink = None
            conn.abort()
        self.side.serverDetached()
        self._releaseSlot()
        if canRetry:
            self._go("retry")
            self.side.pauseReading()
            if conn.reused:
                # a kept-alive connection the server closed meanwhile: again
                self.dispatcher.again(502, "SH")
            else:
                self.dispatcher.retry(502, "SH")
            return
        self.fail(502, "SH")

    def tunnelEnded(self) -> None:
        """The server side of a tunnel closed: close the client too."""
        self._end(False)
        self.close()

    # -- ending ----------------------------------------------------------------

    def fail(self, status: int, termination: str) -> None:
        """Answer with an error status (if nothing was sent yet) and close."""
        self.termination = termination
        self.status = status
        if self.responseStarted:
            self.abortExchange(termination)
            return
        self._releaseSlot()
        self.bytesOut = self.side.sendError(status)
        self.factory.responses["5xx" if status >= 500 else "4xx"] += 1
        self._end(False)
        self.close()

    def abortExchange(self, termination: str) -> None:
        """Drop the server connection and the client's (or its stream) now."""
        if self.termination == "--":
            self.termination = termination
        conn = self.conn
        if conn is not None:
            conn.sink = None
            conn.abort()
        if self.request is not None:
            self._end(False)
        self._go("abort")
        self.side.abort()

    def close(self) -> None:
        """Close the client connection (or end the stream) cleanly."""
        self._go("close")
        self.side.closeClient()

    def clientLost(self, termination: Optional[str] = None) -> None:
        """
        The client went away (its connection, or its stream reset): a
        request in progress ends with C{termination}, by default C{CD} once
        sent to a server and C{CC} before.
        """
        self.clientGone = True
        if self.active and self.request is not None:
            if self.termination == "--":
                self.termination = termination or ("CD" if self.state in ANSWERING else "CC")
            self._end(False)
        self._go("lost")

    def dropServer(self) -> None:
        """Abort the server connection, if any, and forget it."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.sink = None
            conn.abort()

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
                # cut short (server gone, client gone, timeout): log what
                # reached the client, as HAProxy does
                self.bytesOut = self.side.responseBytes(conn, False)
            conn.release(reusable and self.state is not TUNNEL, self.side.keepPrivate if conn.private else None)
        dispatcher = self.dispatcher
        if dispatcher.pending is not None:
            dispatcher.cancel()
        server = self.server
        if server is not None and dispatcher.holding:
            server.bytesIn += self.bytesIn
            server.bytesOut += self.bytesOut
        factory = self.factory
        factory.bytesIn += self.bytesIn
        factory.bytesOut += self.bytesOut
        self._releaseSlot()
        if not self.quiet and not self._nobodyListens():
            fields = logFields(self)
            self.hooks.finished(fields)
            factory.logAccess(fields)
        self.request = None

    # -- timeouts ----------------------------------------------------------------

    def checkTimeouts(self, now: float) -> bool:
        """
        Called by the client side's timer while the exchange is active:
        apply C{timeoutRequestBody}, C{timeoutClient}, the backend's
        C{timeoutServer} and C{timeoutTunnel}.

        @return: Whether the exchange ended (no more checks are needed).
        """
        state = self.state
        frontend = self.frontend
        conn = self.conn
        answering = state in ANSWERING
        deadline = frontend.timeoutRequestBody
        if deadline is not None and answering and not self.bodyDone and now - self.dispatcher.connectedAt >= deadline:
            # the whole body did not arrive in time, however steadily it
            # trickles (HAProxy's timeout http-request with http-buffer-request)
            self._clientTooSlow()
            return True
        moved = self.bytesIn + (conn.bytes if conn is not None else 0)
        if moved != self._lastBytes:
            self._lastBytes = moved
            self.since = now
            return False
        idle = now - self.since
        if state is TUNNEL:
            if idle >= frontend.timeoutTunnel:
                self.abortExchange("cD")
                return True
        elif answering and idle >= frontend.timeoutClient and (not self.bodyDone or self.side.stalled()):
            # the client stopped sending its body, or stopped reading
            self._clientTooSlow()
            return True
        elif answering and self.backend is not None and idle >= self.backend.timeoutServer:
            if self.responseStarted:
                self.abortExchange("sD")
            else:
                self.dropServer()
                self.fail(504, "sH")
            return True
        return False

    def _clientTooSlow(self) -> None:
        """The client held the exchange up too long: 408 if nothing was sent yet, else a cut (cD)."""
        if self.responseStarted:
            self.abortExchange("cD")
            return
        self.dropServer()
        self.fail(408, "cD")
