# -*- test-case-name: tests.test_http -*-
"""
http mode: the client-side and server-side protocols of the reverse proxy.

One client connection carries requests one after another (pipelined ones
wait their turn).  For each, the head is parsed first, a route picks the
backend, the backend picks a server (delayed binding), and a pooled or new
server connection carries the request.  Bodies stream through as they
arrive, in their original framing, with back-pressure both ways.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional, Union

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit._address import formatAddress
from lbkit._connect import connectFailed, connectServer, isLocalResourceError, prepareRetry
from lbkit._drain import DrainingFactory
from lbkit._model import Backend, Context, Server
from lbkit._pump import tune, unsent, writeThrough
from lbkit.error import NoServerAvailable, QueueTimeout
from lbkit.http._body import (
    CHUNKED,
    DRAIN_LIMIT,
    UNTIL_CLOSE,
    BodyReader,
    ChunkedFramer,
    bodyLength,
)
from lbkit.http._headers import (
    CODE_CLASS,
    HTTP_LOG_FORMAT,
    IDEMPOTENT,
    clientSubject,
    connectionTokens,
    errorResponse,
    requestHead,
    responseHead,
)
from lbkit.http._parse import MAX_HEAD, BadMessage, HeadReader, Request, Response, parseRequestHead
from lbkit.http._pool import ConnectionPool
from lbkit.http._server import HTTPServerProtocol
from lbkit.interfaces import ISession
from lbkit.proxyproto import formatV1, formatV2

if TYPE_CHECKING:
    from lbkit.http._frontend import Frontend

__all__ = ["HTTPProxyFactory", "HTTPFrontendProtocol", "HTTPServerProtocol", "HTTP_LOG_FORMAT"]

accessLog = Logger(namespace="lbkit.access")
_log = Logger(namespace="lbkit.http")

# client connection states (public for _h2 until H2Stream composes an Exchange)
HEAD, WAIT, SENT, TUNNEL, CLOSED = range(5)


class HTTPProxyFactory(DrainingFactory, Factory):
    """
    Builds an L{HTTPFrontendProtocol} per client connection and keeps the
    server connection pool of its frontend.
    """

    protocol: type[Protocol] = None  # type: ignore[assignment]
    noisy = False

    def __init__(self, frontend: Frontend, reactor: Any) -> None:
        self.frontend = frontend
        self.reactor = reactor
        self.pool: ConnectionPool[HTTPServerProtocol] = ConnectionPool(reactor, frontend.maxIdlePerServer, frontend.poolIdleTimeout)
        self.updateTimeouts()
        self.current = 0
        self.total = 0
        self.requests = 0
        self.bytesIn = 0
        self.bytesOut = 0
        self.responses = {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "other": 0}
        #: Where access-log lines go; the service points it at the
        #: destinations of L{lbkit.logs.AccessLog} when the site has some.
        self.accessLog = accessLog

    def updateTimeouts(self) -> None:
        """
        Work out how often each connection checks its timeouts: a quarter of
        the smallest, so a timeout fires at most 25% late.  Called again
        when a reload changes the frontend's or its backends' timeouts.
        """
        frontend = self.frontend
        timeouts = [frontend.timeoutHttpRequest, frontend.timeoutClient, frontend.timeoutTunnel]
        if frontend.timeoutRequestBody is not None:
            timeouts.append(frontend.timeoutRequestBody)
        timeouts += [b.timeoutServer for b in frontend.backends()]
        self.tickInterval = max(0.05, min(timeouts) / 4)

    def stopFactory(self) -> None:
        self.pool.closeAll()

    def logAccess(self, fields: dict[str, Any]) -> None:
        """Emit the access-log line of one finished request."""
        if self.frontend.log:
            self.accessLog.info(HTTP_LOG_FORMAT, **fields)




@implementer(ISession)
class HTTPFrontendProtocol(Protocol):
    """
    One client connection in http mode.

    While a request is on a server connection, the protocol is one of
    that server's C{sessions} (L{abortSession} cuts it when the server is
    taken down with its sessions).

    Hooks for subclasses: L{routeRequest}, L{serverChosen}, L{finished}.
    """

    factory: HTTPProxyFactory
    _abortCall: Any = None
    #: Abort a closing connection whose client does not read, after
    #: timeoutClient (an HTTP/2 stream leaves that to its connection).
    _abortOnClose = True
    upgrading = False
    decodesChunked = False
    _mtls = False
    _clientDN: Optional[bytes] = None
    #: The TLS transport whose peer certificate names the client (an
    #: HTTP/2 stream points this at its connection's transport).
    _certTransport: Any = None
    #: Idle connections to C{sendProxy} servers, which carry this client's
    #: PROXY header and so serve no other client connection.
    _private: Optional[dict[Server, HTTPServerProtocol]] = None

    def __init__(self) -> None:
        self._state = HEAD
        self._buf = b""
        self._head = HeadReader()
        self._body = BodyReader()
        self.request: Optional[Request] = None
        self.context: Optional[Context] = None
        self.backend: Optional[Backend] = None
        self.server: Optional[Server] = None
        self.conn: Optional[HTTPServerProtocol] = None
        self._keepAlive = True
        self._bodyDone = True
        self._waiting: Any = None
        self._tick: Any = None
        self._status = 0
        self._bytesOut = 0
        self._termination = "--"
        self._slotHeld = False
        self._attempts = 0
        self._responseStarted = False
        self._closeAfter = False
        self._drainLeft = 0
        self._rules: Any = None
        self._tunnel = False
        self._clientGone = False
        self._hasBody = False

    # -- connection ------------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        self.reactor = factory.reactor
        self.frontend = factory.frontend
        factory.current += 1
        factory.total += 1
        transport = self.transport
        self.client = transport.getPeer()  # type: ignore[union-attr]
        self._proto = b"https" if ISSLTransport.providedBy(transport) else b"http"
        #: mTLS: the verified client certificate's subject goes to servers
        self._mtls = self._proto == b"https" and getattr(getattr(self.frontend, "tls", None), "clientCA", None) is not None
        self._clientDN: Optional[bytes] = None
        self._clientHost = getattr(self.client, "host", "").encode("ascii")
        tune(transport)
        self.writeResponse = writeThrough(transport)
        now = self.reactor.seconds()
        self._since = now
        self._lastBytes = -1
        self._tick = self.reactor.callLater(self._tickInterval(), self._checkTimeouts)
        factory.connectionOpened(self)

    def dataReceived(self, data: bytes) -> None:
        state = self._state
        if not self._bodyDone and (state == SENT or state == HEAD):
            self._requestBody(data)
            return
        if state == TUNNEL:
            self._bytesIn += len(data)
            self._connWrite(data)
            return
        if state == HEAD:
            self._parseHead(data)
            return
        self._buf = self._buf + data if self._buf else data
        if len(self._buf) > MAX_HEAD:
            # pipelined requests pile up while one is served: stop reading
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._clientGone = True
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._abortCall is not None:
            if self._abortCall.active():
                self._abortCall.cancel()
            self._abortCall = None
        self.factory.current -= 1
        if self._state in (WAIT, SENT, TUNNEL) and self.request is not None:
            if self._termination == "--":
                self._termination = "CD" if self._state == SENT else "CC"
            self._endExchange(reusable=False)
        self._state = CLOSED
        if self._private:
            private, self._private = self._private, None
            for conn in private.values():
                conn.close()
        self.factory.connectionClosed(self)

    def stopGracefully(self) -> None:
        """
        The frontend is stopping: close now if idle between requests, else
        answer the request in flight (or the first request of a connection
        just accepted) with C{Connection: close} and close after it.
        """
        served = hasattr(self, "_requestStart")
        if served and self._state == HEAD and not self._buf and not self._head.buffered and self._bodyDone:
            self._closeClient()
        else:
            self._closeAfter = True

    def kill(self) -> None:
        """
        Abort this connection now, because a shutdown's grace period ran
        out; a request in flight is logged with termination C{KD}.
        """
        if self._state in (WAIT, SENT, TUNNEL) and self.request is not None:
            self.abortExchange("KD")
        elif self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def abortSession(self) -> None:
        """
        Cut the request in flight now, because its server was taken down
        with its sessions (L{lbkit.interfaces.ISession}): both connections
        are aborted, and the request is logged with termination C{SK}.
        (An HTTP/2 stream resets only itself.)
        """
        if self._state in (WAIT, SENT, TUNNEL) and self.request is not None:
            self.abortExchange("SK")

    # -- request ---------------------------------------------------------

    def _parseHead(self, data: bytes) -> None:
        try:
            got = self._head.feed(data)
        except BadMessage as e:
            self._reject(e.status, str(e))
            return
        if got is None:
            return
        head, rest = got
        self._requestStart = self.reactor.seconds()
        try:
            request = parseRequestHead(head)
            framing = bodyLength(request.headers, False)
            if framing == CHUNKED and rest:
                # chunks that came with the head are checked before any
                # server is chosen: a bad one then reaches no server
                ChunkedFramer().feed(rest)
        except BadMessage as e:
            self._reject(e.status, str(e))
            return
        self._buf = rest
        self.request = request
        self._bytesIn = len(head) + 4
        tokens = connectionTokens(request.headers)
        if request.version == b"HTTP/1.1":
            self._keepAlive = b"close" not in tokens
        else:
            self._keepAlive = b"keep-alive" in tokens
        self.upgrading = b"upgrade" in tokens and request.header(b"upgrade") is not None
        self._body.start(framing)
        self._bodyDone = framing == 0
        self._hasBody = framing != 0
        self._status = 0
        self._bytesOut = 0
        self._termination = "--"
        self._attempts = 0
        self._responseStarted = False
        self._closeAfter = not self._keepAlive or self.factory.stopping
        self._tw = self._tc = self._tr = -1.0
        self.server = None
        self._state = WAIT
        # The client is paused only if the request has to wait (queue or
        # connect): a pooled connection takes it at once.
        self.context = Context(client=self.client, frontend=self.frontend.name, request=request)
        backend, rules = self.routeRequest(request)
        self.backend = backend
        self._rules = rules
        self.factory.requests += 1
        self._choose()

    def routeRequest(self, request: Request) -> tuple[Backend, Any]:
        """
        Pick the backend for C{request}: the first route whose matcher
        accepts it, else the frontend's default.  Override to route
        differently.

        @return: The backend and the route (or L{None}) that chose it.
        """
        context = self.context
        if context is None or context.request is not request:
            context = Context(client=self.client, frontend=self.frontend.name, request=request)
        for route in self.frontend.routes:
            if route.matcher.matches(request, context):
                return route.backend, route
        return self.frontend.default, None

    def _choose(self) -> None:
        backend = self.backend
        assert backend is not None and self.context is not None
        try:
            server = backend.tryAcquire(self.context)
        except NoServerAvailable:
            backend.noServerCount += 1
            self._fail(503, "SC")
            return
        if server is None:
            self._tq = self.reactor.seconds()
            self.transport.pauseProducing()  # type: ignore[union-attr]
            waiting = self._waiting = backend.enqueue(self.context, self.reactor)
            waiting.addCallbacks(self._dequeued, self._queueFailed).addErrback(self._internalError)
            return
        self._gotServer(server)

    def _dequeued(self, server: Server) -> None:
        self._waiting = None
        self._gotServer(server)

    def _queueFailed(self, reason: Failure) -> None:
        self._waiting = None
        self._tw = self.reactor.seconds()  # the time queued is logged however the wait ended
        if reason.check(CancelledError):
            return
        self._fail(503, "sQ" if reason.check(QueueTimeout) else "SC")

    def _gotServer(self, server: Server) -> None:
        assert self.context is not None
        self.server = server
        self._slotHeld = True
        self._attempts += 1
        self.context.tried.add(server)
        self.serverChosen(server)
        now = self.reactor.seconds()
        self._tw = now
        if self.upgrading:
            conn = None
        elif server.sendProxy:
            conn = self._takePrivate(server)
        else:
            conn = self.factory.pool.get(server)
        if conn is not None:
            self._tc = now
            self._send(conn)
            return
        conn = HTTPServerProtocol(server, self.factory.pool)
        assert self.backend is not None
        self.transport.pauseProducing()  # type: ignore[union-attr]
        waiting = self._waiting = connectServer(self.reactor, server, conn, self.backend.timeoutConnect)
        waiting.addCallbacks(self._connected, self._connectFailed).addErrback(self._internalError)

    def _connected(self, conn: HTTPServerProtocol) -> None:
        self._waiting = None
        self._tc = self.reactor.seconds()
        server = self.server
        assert server is not None
        if server.sendProxy:
            # the first bytes say who the client is; the connection is
            # then this client connection's own (see _keepPrivate)
            fmt = formatV1 if server.sendProxy == 1 else formatV2
            conn.send(fmt(self.client, self.transport.getHost()))  # type: ignore[union-attr]
            conn.private = True
        server.observe(True)
        self._send(conn)

    def _takePrivate(self, server: Server) -> Optional[HTTPServerProtocol]:
        """This client connection's idle connection to C{server}, or L{None}."""
        private = self._private
        conn = private.pop(server, None) if private else None
        if conn is not None and conn.transport is not None and conn.connected:
            return conn
        return None

    def _keepPrivate(self, conn: HTTPServerProtocol) -> None:
        """
        Keep C{conn}, which carries this client's PROXY header, for this
        client connection's next requests; close it when there will be
        none (or the frontend keeps no idle connections).
        """
        if self._closeAfter or self._clientGone or self._state == CLOSED or self.factory.pool.maxIdle <= 0:
            conn.close()
            return
        private = self._private
        if private is None:
            private = self._private = {}
        old = private.get(conn.server)
        if old is not None and old is not conn:
            old.close()
        private[conn.server] = conn

    def _connectFailed(self, reason: Failure) -> None:
        self._waiting = None
        server = self.server
        backend = self.backend
        assert server is not None and backend is not None and self.context is not None
        self._releaseSlot()
        if reason.check(CancelledError):
            return
        if isLocalResourceError(reason):
            # lbkit ran out of file descriptors or ports: nobody's fault
            # but its own (503, RC, as HAProxy), and retried elsewhere
            connectFailed(server, reason)
            self._retryOrFail(503, "RC")
            return
        # no server could take the request, timed out (sC) or refused (SC):
        # 503, as HAProxy (502 is for a server that answered wrong)
        self._retryOrFail(503, "sC" if connectFailed(server, reason) else "SC")

    def _internalError(self, reason: Failure) -> None:
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

    def _retryOrFail(self, status: int, termination: str) -> None:
        backend = self.backend
        assert backend is not None and self.context is not None
        if self._attempts > backend.retries or self._clientGone:
            self._fail(status, termination)
            return
        # a retry after lbkit's own failure is not one the server caused
        prepareRetry(backend, None if termination == "RC" else self.server, self.context)
        self._choose()

    def _releaseSlot(self) -> None:
        if self._slotHeld:
            self._slotHeld = False
            server = self.server
            assert self.backend is not None and server is not None
            server.sessions.discard(self)
            self.backend.release(server)

    def _buildHead(self, request: Request) -> bytes:
        return requestHead(
            request,
            self._body.framing == CHUNKED,
            self.upgrading,
            self.frontend.forwardedFor,
            self._clientHost,
            self._proto,
            self._clientSubject() if self._mtls else None,
        )

    def _clientSubject(self) -> bytes:
        """The verified client certificate's subject (see L{clientSubject}), once per connection."""
        if self._clientDN is None:
            self._clientDN = clientSubject(self._certTransport or self.transport)
        return self._clientDN

    def _send(self, conn: HTTPServerProtocol) -> None:
        request = self.request
        assert request is not None and self.server is not None
        if self._clientGone:
            conn.release(True)
            self._releaseSlot()
            return
        self.conn = conn
        self._state = SENT
        self.server.sessions.add(self)
        self._applyRequestRules(request)
        self._connWrite = conn.send
        conn.startExchange(self, self._buildHead(request), request.method == b"HEAD")
        transport = self.transport
        assert transport is not None
        transport.registerProducer(conn.transport, True)  # type: ignore[attr-defined]
        if not self._bodyDone:
            conn.transport.registerProducer(transport, True)  # type: ignore[union-attr]
            buf, self._buf = self._buf, b""
            if buf:
                self._requestBody(buf)
        transport.resumeProducing()  # type: ignore[attr-defined]

    def _applyRequestRules(self, request: Request) -> None:
        for rules in (self.frontend.requestRules, getattr(self._rules, "requestRules", ())):
            for rule in rules:
                rule.applyToRequest(request, self)
        persistence = self.backend.persistence if self.backend is not None else None
        rewrite = getattr(persistence, "rewriteRequest", None)
        if rewrite is not None:
            rewrite(self.backend, request, self.context)

    def _requestBody(self, data: bytes) -> None:
        reader = self._body
        try:
            n = reader.feed(data)
        except BadMessage as e:
            _log.info("{client}: bad request body: {why}", client=formatAddress(self.client), why=str(e))
            if self._responseStarted:
                self.abortExchange("CR")
                return
            # the server got part of a broken body: drop its connection,
            # and tell the client why (400) before closing
            conn, self.conn = self.conn, None
            if conn is not None:
                conn.sink = None
                conn.abort()
            self._fail(400, "CR")
            return
        self._bytesIn += n
        self._connWrite(data if n == len(data) else data[:n])
        if reader.done:
            self._requestBodyDone(data[n:])

    def _requestBodyDone(self, rest: bytes) -> None:
        self._bodyDone = True
        conn = self.conn
        if conn is not None and conn.transport is not None:
            conn.transport.unregisterProducer()  # type: ignore[attr-defined]
        if rest:
            self._buf = rest
        if self._state == HEAD:
            # the response already finished: go on with the next request
            if self._closeAfter:
                self._closeClient()
            else:
                self._nextRequest()

    # -- response --------------------------------------------------------

    def interimResponse(self, response: Response) -> None:
        """
        A 1xx response (e.g. 100 Continue): pass it on, except to an
        HTTP/1.0 client, which does not know them (RFC 9110 §15.2).
        """
        if self.request is not None and self.request.version == b"HTTP/1.0":
            return
        self.writeResponse(self._responseHeadBytes(response, interim=True))

    def tunnelStarted(self, conn: HTTPServerProtocol, response: Response) -> None:
        """The server switched protocols: pass its 101 on, and tunnel."""
        self.responseHead(conn, response, 0, True)

    def responseHead(
        self, conn: HTTPServerProtocol, response: Response, framing: int, tunnel: bool = False
    ) -> bytes:
        """
        Account for the server's final response head and return it as it
        goes to the client (a tunnel's head is written here, and C{b""}
        returned).
        """
        self._tr = self.reactor.seconds()
        self._responseStarted = True
        code = self._status = response.code
        server = self.server
        assert server is not None
        key = CODE_CLASS[code // 100] if code < 600 else "other"
        server.responses[key] += 1
        server.requests += 1
        self.factory.responses[key] += 1
        if server._observers:
            # passive health: 5xx counts against the server (501 and 505
            # are the client's doing), anything else for it
            if code >= 500 and code != 501 and code != 505:
                server.observe(False, f"Layer7 wrong status, code: {code}")
            else:
                server.observe(True, "Layer7 response")
        if framing == UNTIL_CLOSE:
            self._closeAfter = True
        if tunnel:
            self._state = TUNNEL
            self._tunnel = True
            transport = self.transport
            assert transport is not None and conn.transport is not None
            if conn.transport.producer is None:  # type: ignore[attr-defined]
                conn.transport.registerProducer(transport, True)  # type: ignore[attr-defined]
            self._connWrite = conn.send
            buf, self._buf = self._buf, b""
            data = self._responseHeadBytes(response, tunnel=True)
            conn.bytes += len(data)
            self.writeResponse(data)
            if buf:
                self._connWrite(buf)
            return b""
        self._applyResponseRules(response)
        data = self._responseHeadBytes(response)
        conn.bytes += len(data)
        return data

    def _applyResponseRules(self, response: Response) -> None:
        persistence = self.backend.persistence if self.backend is not None else None
        rewrite = getattr(persistence, "rewriteResponse", None)
        if rewrite is not None:
            rewrite(self.backend, self.server, response, self.context)
        for rules in (getattr(self._rules, "responseRules", ()), self.frontend.responseRules):
            for rule in rules:
                rule.applyToResponse(response, self)

    def _responseHeadBytes(self, response: Response, interim: bool = False, tunnel: bool = False) -> bytes:
        request = self.request
        http10 = request is not None and request.version == b"HTTP/1.0"
        return responseHead(response, interim, tunnel, self._closeAfter, http10)

    def responseDone(self, conn: HTTPServerProtocol) -> None:
        """The whole response went to the client."""
        self._bytesOut = conn.bytes
        if not self._bodyDone:
            # The server answered before the request body was complete (an
            # early 413, say).  Read and discard the rest of the body, up to
            # DRAIN_LIMIT bytes, so the client is not reset in the middle of
            # its upload; then carry on (or close) as usual.
            self._endExchange(False)
            self._connWrite = self._discard
            self._drainLeft = DRAIN_LIMIT
            self._state = HEAD
            self._since = self.reactor.seconds()
            transport = self.transport
            if transport is not None:
                transport.resumeProducing()  # type: ignore[attr-defined]
            return
        self._endExchange(True)
        if self._closeAfter:
            self._closeClient()
        else:
            self._nextRequest()

    def _discard(self, data: bytes) -> None:
        """Drop request-body bytes nobody will read, within DRAIN_LIMIT."""
        self._drainLeft -= len(data)
        if self._drainLeft < 0:
            self._closeClient()

    def _nextRequest(self) -> None:
        if not self._bodyDone:
            self._state = HEAD  # body still arriving: finish it, then parse
            return
        self._state = HEAD
        self._since = self.reactor.seconds()
        transport = self.transport
        if transport is None:
            return
        transport.resumeProducing()  # type: ignore[attr-defined]
        if self._buf:
            buf, self._buf = self._buf, b""
            self._parseHead(buf)

    def _endExchange(self, reusable: bool) -> None:
        """Release the server connection and slot, and log the request."""
        conn, self.conn = self.conn, None
        transport = self.transport
        if transport is not None and transport.producer is not None:  # type: ignore[attr-defined]
            transport.unregisterProducer()  # type: ignore[attr-defined]
        if conn is not None:
            if conn.transport is not None and conn.transport.producer is not None:  # type: ignore[attr-defined]
                conn.transport.unregisterProducer()  # type: ignore[attr-defined]
            if conn.sink is self:
                conn.sink = None
            if self._responseStarted and self._bytesOut == 0:
                # cut short (server gone, client gone, timeout): log what
                # reached the client, as HAProxy does
                self._bytesOut = self._sentToClient(conn)
            conn.release(reusable and not self._tunnel, self._keepPrivate if conn.private else None)
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.cancel()
        server = self.server
        if server is not None and self._slotHeld:
            server.bytesIn += self._bytesIn
            server.bytesOut += self._bytesOut
        self.factory.bytesIn += self._bytesIn
        self.factory.bytesOut += self._bytesOut
        self._releaseSlot()
        self._log()
        self.request = None

    def _sentToClient(self, conn: HTTPServerProtocol) -> int:
        """
        How many bytes of the response on C{conn} (head and body) the
        client transport has sent: what was written to it, less what is
        still in its buffer, which an abort throws away.
        """
        return max(0, conn.bytes - unsent(self.transport))

    def _nobodyListens(self) -> bool:
        """No access log and no override would see the fields: skip them."""
        return (
            not self.frontend.log
            and getattr(self.finished, "__func__", None) is HTTPFrontendProtocol.finished
            and getattr(self.factory.logAccess, "__func__", None) is HTTPProxyFactory.logAccess
        )

    def _log(self) -> None:
        if self._nobodyListens():
            return
        now = self.reactor.seconds()
        start = self._requestStart
        request = self.request
        server = self.server
        backend = self.backend
        ms = lambda a, b: int((b - a) * 1000) if a >= 0 and b >= 0 else -1  # noqa: E731
        fields = dict(
            client=formatAddress(self.client),
            date=time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime()),
            frontend=self.frontend.name,
            backend=backend.name if backend is not None else "-",
            server=server.name if server is not None else "<NOSRV>",
            TR=0,
            Tw=ms(start, self._tw),
            Tc=ms(self._tw, self._tc),
            Tr=ms(self._tc, self._tr),
            Ta=ms(start, now),
            status=self._status,
            bytes=self._bytesOut,
            termination=self._termination,
            retries=max(0, self._attempts - 1),
            request=(b"%s %s %s" % (request.method, request.uri, request.version)).decode("latin-1")
            if request is not None
            else "-",
        )
        self.finished(fields)
        self.factory.logAccess(fields)

    # -- failures ----------------------------------------------------------

    def serverFailed(self, conn: HTTPServerProtocol, reason: Union[Failure, BadMessage], sentNothing: bool) -> None:
        """
        The server connection broke, or sent garbage, before a response
        head: retry elsewhere when that is safe, else answer 502.
        """
        request = self.request
        if request is None or self._clientGone:
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
            and not self._hasBody  # a body already sent cannot be sent again
        )
        self.conn = None
        if conn.transport is not None:
            conn.sink = None
            conn.abort()
        transport = self.transport
        if transport is not None and transport.producer is not None:  # type: ignore[attr-defined]
            transport.unregisterProducer()  # type: ignore[attr-defined]
        self._releaseSlot()
        if canRetry and conn.reused:
            # a kept-alive connection the server closed meanwhile: try again
            self._attempts -= 1
            assert server is not None
            self._state = WAIT
            transport.pauseProducing()  # type: ignore[union-attr]
            self._gotServerAgain(server)
            return
        if canRetry:
            self._state = WAIT
            transport.pauseProducing()  # type: ignore[union-attr]
            self._retryOrFail(502, "SH")
            return
        self._fail(502, "SH")

    def _gotServerAgain(self, server: Server) -> None:
        assert self.backend is not None and self.context is not None
        if server.hasFreeSlot():
            self.backend.reacquire(server)
            self._slotHeld = True
            self.server = server
            self._attempts += 1
            conn = HTTPServerProtocol(server, self.factory.pool)
            waiting = self._waiting = connectServer(self.reactor, server, conn, self.backend.timeoutConnect)
            waiting.addCallbacks(self._connected, self._connectFailed).addErrback(self._internalError)
        else:
            self._retryOrFail(502, "SH")

    def abortExchange(self, termination: str) -> None:
        """Something broke mid-message: drop both connections."""
        if self._termination == "--":
            self._termination = termination
        conn = self.conn
        if conn is not None:
            conn.sink = None
            conn.abort()
        self._endExchange(reusable=False)
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        self._state = CLOSED

    def tunnelEnded(self) -> None:
        """The server side of a tunnel closed: close the client too."""
        self._endExchange(reusable=False)
        self._closeClient()

    def _fail(self, status: int, termination: str) -> None:
        """Answer with an error status (if nothing was sent yet) and close."""
        self._termination = termination
        self._status = status
        if self._responseStarted:
            self.abortExchange(termination)
            return
        self._releaseSlot()
        body = errorResponse(status)
        self._bytesOut = len(body)
        self.factory.responses["5xx" if status >= 500 else "4xx"] += 1
        if self.transport is not None:
            self.writeResponse(body)
        self._endExchange(reusable=False)
        self._closeClient()

    def _reject(self, status: int, why: str) -> None:
        """A malformed request: answer C{status}, log, close."""
        _log.info(
            "{frontend}: {client}: {status} {why}",
            frontend=self.frontend.name, client=formatAddress(self.client), status=status, why=why,
        )
        self._status = status
        body = errorResponse(status)
        self.writeResponse(body)
        self.factory.responses["4xx" if status < 500 else "5xx"] += 1
        if not self._nobodyListens():
            # HAProxy's line for a request it could not parse: <BADREQ>
            fields = dict(
                client=formatAddress(self.client),
                date=time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime()),
                frontend=self.frontend.name,
                backend=self.frontend.name,
                server="<NOSRV>",
                TR=int((self.reactor.seconds() - self._since) * 1000),
                Tw=-1,
                Tc=-1,
                Tr=-1,
                Ta=int((self.reactor.seconds() - self._since) * 1000),
                status=status,
                bytes=len(body),
                termination="cR" if status == 408 else "PR",
                retries=0,
                request="<BADREQ>",
            )
            self.finished(fields)
            self.factory.logAccess(fields)
        self._closeClient()

    def _closeClient(self) -> None:
        self._state = CLOSED
        transport = self.transport
        if transport is not None:
            if transport.producer is not None:  # type: ignore[attr-defined]
                transport.unregisterProducer()  # type: ignore[attr-defined]
            transport.loseConnection()
            if self._abortOnClose and self._abortCall is None and not self._clientGone:
                # a client that never reads would keep a closing connection
                # (and its buffer) forever: abort it after timeoutClient
                self._abortCall = self.reactor.callLater(
                    max(self.frontend.timeoutClient, 1.0), transport.abortConnection  # type: ignore[attr-defined]
                )

    # -- timeouts ----------------------------------------------------------

    def _tickInterval(self) -> float:
        return self.factory.tickInterval

    def _checkTimeouts(self) -> None:
        self._tick = None
        state = self._state
        if state == CLOSED:
            return
        now = self.reactor.seconds()
        f = self.frontend
        if state == HEAD:
            if now - self._since >= f.timeoutHttpRequest:
                if self._buf or self._head.buffered:
                    self._reject(408, "request head not complete in time")
                else:
                    self._closeClient()  # idle keep-alive connection
                return
        else:
            conn = self.conn
            deadline = f.timeoutRequestBody
            if deadline is not None and state == SENT and not self._bodyDone and now - self._tc >= deadline:
                # the whole body did not arrive in time, however steadily
                # it trickles (HAProxy's timeout http-request with
                # http-buffer-request)
                self._clientTooSlow(conn)
                return
            moved = self._bytesIn + (conn.bytes if conn is not None else 0)
            if moved != self._lastBytes:
                self._lastBytes = moved
                self._since = now
            else:
                idle = now - self._since
                if state == TUNNEL:
                    if idle >= f.timeoutTunnel:
                        self.abortExchange("cD")
                        return
                elif state == SENT and idle >= f.timeoutClient and self._clientStalled():
                    # the client stopped sending its body, or stopped reading
                    self._clientTooSlow(conn)
                    return
                elif state == SENT and self.backend is not None and idle >= self.backend.timeoutServer:
                    if self._responseStarted:
                        self.abortExchange("sD")
                    else:
                        if conn is not None:
                            conn.sink = None
                            conn.abort()
                        self.conn = None
                        self._fail(504, "sH")
                    return
        self._tick = self.reactor.callLater(self._tickInterval(), self._checkTimeouts)

    def _clientTooSlow(self, conn: Optional[HTTPServerProtocol]) -> None:
        """
        The client held the exchange up too long: answer 408 if nothing
        was sent yet, else cut it; termination C{cD} either way.
        """
        if self._responseStarted:
            self.abortExchange("cD")
            return
        if conn is not None:
            conn.sink = None
            conn.abort()
        self.conn = None
        self._fail(408, "cD")

    def _clientStalled(self) -> bool:
        """
        Whether the client is the one holding things up: its request body
        is unfinished, or it does not read the response (its transport has
        paused the server connection).
        """
        if not self._bodyDone:
            return True
        return bool(getattr(self.transport, "producerPaused", False))

    # -- hooks for subclasses ---------------------------------------------

    def serverChosen(self, server: Server) -> None:
        """Called when C{server} was chosen for the current request."""

    def finished(self, fields: dict[str, Any]) -> None:
        """Called once per request when it is over, with its log fields."""


HTTPProxyFactory.protocol = HTTPFrontendProtocol
