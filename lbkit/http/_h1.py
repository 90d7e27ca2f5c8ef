# -*- test-case-name: tests.test_http -*-
"""
http mode: an HTTP/1.x client connection.

One client connection carries requests one after another (pipelined ones
wait their turn).  L{HTTPFrontendProtocol} reads each head
(L{lbkit.http._parse.HeadReader}) and body
(L{lbkit.http._body.BodyReader}) and hands the request to its
L{lbkit.http._exchange.Exchange}, which routes it, picks a server and
relays the response; the connection itself does keep-alive, pipelining,
back-pressure, the rest of a body after an early response, upgrade
tunnels, and its own timeouts between requests.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit._address import formatAddress
from lbkit._backend import Backend
from lbkit._model import Context, Server
from lbkit._pump import tune, unsent, writeThrough
from lbkit.http._body import CHUNKED, DRAIN_LIMIT, BodyReader, ChunkedFramer, bodyLength
from lbkit.http._exchange import Exchange
from lbkit.http._headers import connectionTokens, errorResponse, responseHead
from lbkit.http._parse import MAX_HEAD, BadMessage, HeadReader, Request, Response, parseRequestHead
from lbkit.http._server import HTTPServerProtocol
from lbkit.http._sides import exchangeAttribute, overriddenHooks
from lbkit.http._states import DONE, DRAINING, HEAD, TUNNEL, WAITING
from lbkit.http._timeouts import checkTimeouts
from lbkit.http._tunnel import refusedConnect
from lbkit.interfaces import ISession

if TYPE_CHECKING:
    from lbkit.http._frontend import HTTPProxyFactory

__all__ = ["HTTPFrontendProtocol", "streamExchange"]

_log = Logger(namespace="lbkit.http")


@implementer(ISession)
class HTTPFrontendProtocol(Protocol):
    """
    One client connection in http mode.

    While a request is on a server connection, the protocol is one of
    that server's C{sessions} (L{abortSession} cuts it when the server is
    taken down with its sessions).

    Hooks for subclasses: L{routeRequest}, L{serverChosen}, L{finished}.
    They run for HTTP/2 streams too: each stream gets its own instance of
    the frontend's protocol class as its hook holder (see
    L{streamExchange}), never connected, whose C{client}, C{frontend},
    C{factory}, C{reactor}, C{request}, C{context}, C{backend} and
    C{server} are the stream's.

    @ivar exchange: The L{Exchange} of this connection's requests.
    """

    factory: HTTPProxyFactory
    exchange: Optional[Exchange] = None
    client: Any = None
    writeResponse: Callable[[bytes], None]
    #: The HTTP/2 protocol the connection was handed to (h2c), or C{None}.
    h2c: Optional[Protocol] = None
    decodesChunked = False
    _abortCall: Any = None
    _tick: Any = None
    #: Whether the transport may be paused (lbkit paused it, or it was a
    #: server connection's producer): else it need not be resumed.
    _mayBePaused = True
    #: Idle connections to C{sendProxy} servers, which carry this client's
    #: PROXY header and so serve no other client connection.
    _private: Optional[dict[Server, HTTPServerProtocol]] = None

    request = exchangeAttribute("request", "The request in progress (C{None} between requests).")
    context = exchangeAttribute("context", "The L{Context} of the request in progress.")
    backend = exchangeAttribute("backend", "The backend the request was routed to.")
    server = exchangeAttribute("server", "The server chosen for the request, or C{None}.")
    conn = exchangeAttribute("conn", "The server connection carrying the request, or C{None}.")

    # -- connection ------------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        self.reactor = factory.reactor
        self.frontend = frontend = factory.frontend
        transport = self.transport
        self.client = transport.getPeer()  # type: ignore[union-attr]
        scheme = b"https" if ISSLTransport.providedBy(transport) else b"http"
        #: mTLS: the verified client certificate's subject goes to servers
        mtls = scheme == b"https" and getattr(getattr(frontend, "tls", None), "clientCA", None) is not None
        tune(transport)
        #: The L{ISession} in a server's C{sessions}: this connection.
        self.session: ISession = self
        self.writeResponse = writeThrough(transport)
        self._forward: Callable[[bytes], None] = self._discard
        self._buf = b""
        self._head = HeadReader()
        self._body = BodyReader()
        self._drainLeft = 0
        self._since = self.reactor.seconds()
        self.exchange = Exchange(
            factory, self, self, self.client, scheme, transport if mtls else None, self._nobodyListens,
            plainHooks=self._plainHooks(), **overriddenHooks(self, HTTPFrontendProtocol),
        )
        self._tick = self.reactor.callLater(factory.tickInterval, self._checkTimeouts)
        factory.connectionOpened(self)

    def dataReceived(self, data: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        state = exchange.state
        if state is HEAD:
            self._parseHead(data)
        elif state is TUNNEL:
            exchange.bytesIn += len(data)
            self._forward(data)
        elif state is DONE:
            return
        elif not exchange.bodyDone and state is not WAITING:
            self._requestBody(data)
        else:
            self._buf = self._buf + data if self._buf else data
            if len(self._buf) > MAX_HEAD:
                # pipelined requests pile up while one is served: stop reading
                self._mayBePaused = True
                self.transport.pauseProducing()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.h2c is not None:  # (it speaks HTTP/2: handOverH2c)
            self.h2c.connectionLost(reason)
            return
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._abortCall is not None:
            if self._abortCall.active():
                self._abortCall.cancel()
            self._abortCall = None
        if self.exchange is not None:
            self.exchange.clientLost()
        if self._private:
            private, self._private = self._private, None
            for conn in private.values():
                conn.close()
        self.factory.connectionClosed(self)

    def speakH2(self, h2: Protocol) -> None:
        """The connection is C{h2}'s from now on (h2c): every byte it reads (in TUNNEL), and its end."""
        self.h2c, self._forward = h2, h2.dataReceived
        self._tick.cancel()
        self._tick = None
        self.exchange._go("h2c")  # type: ignore[union-attr]

    def stopGracefully(self) -> None:
        """
        The frontend is stopping: close now if idle between requests, else
        answer the request in flight (or the first request of a connection
        just accepted) with C{Connection: close} and close after it.
        """
        exchange = self.exchange
        if exchange is None:
            return
        idle = exchange.state is HEAD and not self._buf and not self._head.buffered
        if exchange.started and idle:
            exchange.close()
        else:
            exchange.closeAfter = True

    def kill(self) -> None:
        """
        Abort this connection now, because a shutdown's grace period ran
        out; a request in flight is logged with termination C{KD}.
        """
        exchange = self.exchange
        if exchange is not None and exchange.active:
            exchange.abortExchange("KD")
        elif self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def abortSession(self) -> None:
        """
        Cut the request in flight now, because its server was taken down
        with its sessions (L{lbkit.interfaces.ISession}): both connections
        are aborted, and the request is logged with termination C{SK}.
        (An HTTP/2 stream resets only itself.)
        """
        exchange = self.exchange
        if exchange is not None and exchange.active:
            exchange.abortExchange("SK")

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
        try:
            request = parseRequestHead(head)
            framing = bodyLength(request.headers, False, request._lower)
            if framing == CHUNKED and rest:
                # chunks that came with the head are checked before any
                # server is chosen: a bad one then reaches no server
                ChunkedFramer().feed(rest)
        except BadMessage as e:
            if not self.factory.handOverH2c(self, head, rest):  # (the HTTP/2 preface?)
                self._reject(e.status, str(e))
            return
        self._buf = rest
        tokens = connectionTokens(request.headers, request._lower)
        if request.version == b"HTTP/1.1":
            keepAlive = b"close" not in tokens
        else:
            keepAlive = b"keep-alive" in tokens
        upgrade = b"upgrade" in tokens and request.header(b"upgrade") is not None
        if framing:
            self._body.start(framing)  # (without a body it is never fed)
        exchange = self.exchange
        assert exchange is not None
        exchange.begin(request, framing, upgrade, not keepAlive or self.factory.stopping, len(head) + 4)
        if request.method == b"CONNECT" and refusedConnect(exchange):
            return
        # The client is paused only if the request has to wait (queue or
        # connect): a pooled connection takes it at once.
        exchange.forward()

    def _requestBody(self, data: bytes) -> None:
        reader = self._body
        exchange = self.exchange
        assert exchange is not None
        try:
            n = reader.feed(data)
        except BadMessage as e:
            _log.info("{client}: bad request body: {why}", client=formatAddress(self.client), why=str(e))
            if exchange.state is DRAINING or exchange.responseStarted:
                exchange.abortExchange("CR")
            else:
                # the server got part of a broken body: drop its connection,
                # and tell the client why (400) before closing
                exchange.dropServer()
                exchange.fail(400, "CR")
            return
        exchange.bytesIn += n
        self._forward(data if n == len(data) else data[:n])
        if reader.done:
            rest = data[n:]
            if rest:
                self._buf = rest
            exchange.requestBodyDone()

    def _discard(self, data: bytes) -> None:
        """Drop request-body bytes nobody will read, within DRAIN_LIMIT."""
        self._drainLeft -= len(data)
        if self._drainLeft < 0 and self.exchange is not None:
            self.exchange.close()

    def _reject(self, status: int, why: str) -> None:
        """A malformed request head: answer C{status}, log, close."""
        _log.info(
            "{frontend}: {client}: {status} {why}",
            frontend=self.frontend.name, client=formatAddress(self.client), status=status, why=why,
        )
        body = errorResponse(status, self.frontend.errorPages)
        self.writeResponse(body)
        self.factory.responses["4xx" if status < 500 else "5xx"] += 1
        if not self._nobodyListens():
            # HAProxy's line for a request it could not parse: <BADREQ>
            took = int((self.reactor.seconds() - self._since) * 1000)
            name = self.frontend.name
            fields = dict(
                client=formatAddress(self.client), date=time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime()),
                frontend=name, backend=name, server="<NOSRV>", TR=took, Tw=-1, Tc=-1, Tr=-1, Ta=took,
                status=status, bytes=len(body), termination="cR" if status == 408 else "PR", retries=0,
                request="<BADREQ>",
            )
            self.finished(fields)
            self.factory.logAccess(fields)
        assert self.exchange is not None
        self.exchange.close()

    # -- ClientSide: what the exchange asks of the connection -------------

    def pauseReading(self) -> None:
        self._mayBePaused = True
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeReading(self) -> None:
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def serverAttached(self, conn: HTTPServerProtocol) -> None:
        """The request went to C{conn}: back-pressure both ways, and the body bytes read so far."""
        transport: Any = self.transport
        transport.registerProducer(conn.transport, True)
        exchange = self.exchange
        assert exchange is not None
        if not exchange.bodyDone:
            self._mayBePaused = True  # (by the server's transport, its consumer now)
            conn.transport.registerProducer(transport, True)  # type: ignore[union-attr]
            self._forward = conn.send if exchange.mirror is None else exchange.mirror.tee(conn.send)
            buf, self._buf = self._buf, b""
            if buf:
                self._requestBody(buf)
        elif self._mayBePaused:
            self._mayBePaused = False
        else:
            return  # reading already: the plain path
        transport.resumeProducing()

    def serverDetached(self) -> None:
        transport: Any = self.transport
        if transport is not None and transport.producer is not None:
            transport.unregisterProducer()

    def responseHeadBytes(self, response: Response, framing: int, interim: bool) -> bytes:
        exchange = self.exchange
        assert exchange is not None
        request = exchange.request
        http10 = request is not None and request.version == b"HTTP/1.0"
        return responseHead(response, interim, False, exchange.closeAfter, http10)

    def startTunnel(self, conn: HTTPServerProtocol, response: Response) -> int:
        transport: Any = self.transport
        if conn.transport.producer is None:  # type: ignore[union-attr]
            self._mayBePaused = True
            conn.transport.registerProducer(transport, True)  # type: ignore[union-attr]
        self._forward = conn.send
        buf, self._buf = self._buf, b""
        head = responseHead(response, False, response.code == 101, False, False)  # (or a CONNECT's 2xx)
        self.writeResponse(head)
        if buf:
            self._forward(buf)
        return len(head)

    def sendError(self, status: int) -> int:
        body = errorResponse(status, self.frontend.errorPages)
        if self.transport is not None:
            self.writeResponse(body)
        return len(body)

    def drain(self) -> bool:
        self._forward = self._discard
        self._drainLeft = DRAIN_LIMIT
        self._since = self.reactor.seconds()
        self.resumeReading()
        return True

    def nextRequest(self) -> None:
        self._since = self.reactor.seconds()
        transport = self.transport
        if transport is None:
            return
        if self._mayBePaused:
            self._mayBePaused = False
            transport.resumeProducing()  # type: ignore[attr-defined]
        if self._buf:
            buf, self._buf = self._buf, b""
            self._parseHead(buf)

    def closeClient(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            if transport.producer is not None:
                transport.unregisterProducer()
            transport.loseConnection()
            exchange = self.exchange
            if self._abortCall is None and not (exchange is not None and exchange.clientGone):
                # a client that never reads would keep a closing connection
                # (and its buffer) forever: abort it after timeoutClient
                self._abortCall = self.reactor.callLater(
                    max(self.frontend.timeoutClient, 1.0), transport.abortConnection
                )

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def stalled(self) -> bool:
        return bool(getattr(self.transport, "producerPaused", False))

    def responseBytes(self, conn: HTTPServerProtocol, complete: bool) -> int:
        if complete:
            return conn.bytes
        # what was written to the client, less what its transport still
        # holds (which an abort throws away)
        return max(0, conn.bytes - unsent(self.transport))

    def getHost(self) -> Any:
        return self.transport.getHost()  # type: ignore[union-attr]

    def takePrivate(self, server: Server) -> Optional[HTTPServerProtocol]:
        """This client connection's idle connection to C{server}, or C{None}."""
        private = self._private
        conn = private.pop(server, None) if private else None
        if conn is not None and conn.transport is not None and conn.connected:
            return conn
        return None

    def keepPrivate(self, conn: HTTPServerProtocol) -> None:
        """
        Keep C{conn}, which carries this client's PROXY header, for this
        client connection's next requests; close it when there will be
        none (or the frontend keeps no idle connections).
        """
        exchange = self.exchange
        closing = exchange is None or exchange.closeAfter or exchange.clientGone or exchange.state is DONE
        if closing or self.factory.pool.maxIdle <= 0:
            conn.close()
            return
        private = self._private
        if private is None:
            private = self._private = {}
        old = private.get(conn.server)
        if old is not None and old is not conn:
            old.close()
        private[conn.server] = conn

    # -- timeouts ----------------------------------------------------------

    def _checkTimeouts(self) -> None:
        self._tick = None
        exchange = self.exchange
        assert exchange is not None
        state = exchange.state
        if state is DONE:
            return
        now = self.reactor.seconds()
        if state is HEAD or state is DRAINING:
            if now - self._since >= self.frontend.timeoutHttpRequest:
                if self._buf or self._head.buffered:
                    self._reject(408, "request head not complete in time")
                else:
                    exchange.close()  # idle keep-alive connection
                return
        elif checkTimeouts(exchange, now):
            return
        self._tick = self.reactor.callLater(self.factory.tickInterval, self._checkTimeouts)

    def _plainHooks(self) -> bool:
        """C{finished} and C{logAccess} are not overridden: decided once (L{lbkit.http._accessline.plainLog})."""
        plain = getattr(self.finished, "__func__", None) is HTTPFrontendProtocol.finished
        return plain and self.factory.logsAccessPlainly()

    def _nobodyListens(self) -> bool:
        """No access log and no override would see the fields: skip them."""
        return (
            not self.frontend.log
            and getattr(self.finished, "__func__", None) is HTTPFrontendProtocol.finished
            and not self.factory.logsAccess()
        )

    # -- hooks for subclasses ---------------------------------------------

    def routeRequest(self, request: Request) -> tuple[Backend, Any]:
        """
        Pick the backend for C{request}: the first route whose matcher
        accepts it, else the frontend's default.  Override to route
        differently.

        @return: The backend and the route (or C{None}) that chose it.
        """
        exchange = self.exchange
        context = exchange.context if exchange is not None else None
        if context is None or context.request is not request:
            context = Context(client=self.client, frontend=self.frontend.name, request=request)
        for route in self.frontend.routes:
            if route.matcher.matches(request, context):
                return route.backend, route
        return self.frontend.default, None

    def serverChosen(self, server: Server) -> None:
        """Called when C{server} was chosen for the current request."""

    def finished(self, fields: dict[str, Any]) -> None:
        """Called once per request when it is over, with its log fields."""


def streamExchange(factory: HTTPProxyFactory, side: Any, address: Any, certTransport: Any, scheme: bytes) -> Exchange:
    """
    The L{Exchange} of one HTTP/2 stream (C{side}, a
    L{lbkit.http._exchange.ClientSide}), with a new instance of the
    frontend's protocol class as its hook holder: a subclass's
    L{HTTPFrontendProtocol.routeRequest}, C{serverChosen} and C{finished}
    run for the stream as for an HTTP/1.1 request.  The holder is never
    connected (no transport); its C{client}, C{frontend}, C{factory},
    C{reactor} and the exchange's attributes are set.

    @param certTransport: With mTLS, the TLS transport of the connection.
    @param scheme: C{b"https"}, or C{b"http"} for h2c (C{X-Forwarded-Proto}).
    """
    holder = factory.protocol()
    assert isinstance(holder, HTTPFrontendProtocol), f"{factory.protocol!r} is not an HTTPFrontendProtocol"
    holder.factory = factory
    holder.reactor = factory.reactor
    holder.frontend = factory.frontend
    holder.client = address
    exchange = holder.exchange = Exchange(
        factory, side, holder, address, scheme, certTransport, holder._nobodyListens, b"HTTP/2.0",
        plainHooks=holder._plainHooks(), **overriddenHooks(holder, HTTPFrontendProtocol),
    )
    return exchange
