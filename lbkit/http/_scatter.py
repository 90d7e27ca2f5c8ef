# -*- test-case-name: tests.test_http_scatter -*-
"""
Scatter-gather: L{ScatterGather}, a route target that sends one request
to every usable server of a backend (or C{k} of them) in parallel and
answers with what the user's C{merge} builds from their answers
(L{SubResponse}s), docs/beyond.md.

A L{ScatterGather} is a L{Backend} of one server, C{scatter}, that is
served in this process: the frontend proxies the request to it as to any
server (its body read, bounded by C{maxBody}, its timeouts, its access-log
line), over a loopback connection to a small twisted.web site listening
on 127.0.0.1 (started at the first request, stopped by L{close}).  That
site sends the sub-requests with twisted.web's C{Agent}, each through the
server's own endpoint (TLS included), each with its timeout and its own
access-log line.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from twisted.web.resource import Resource
from zope.interface import implementer

from lbkit._backend import Backend
from lbkit._logline import httpDate
from lbkit._model import Server
from lbkit._origin import definedAt
from lbkit.error import ConfigError
from lbkit.http._answers import Answer
from lbkit.http._headers import CODE_CLASS, HTTP_LOG_FORMAT

if TYPE_CHECKING:
    from twisted.web.client import Agent, HTTPConnectionPool

# twisted.web's client and server (with twisted.web.http, its HTTP/2 glue,
# twisted.spread, ...) cost a process about 4 MiB of RSS: they are
# imported by the first ScatterGather (its site) and its first request
# (the Agent), not when lbkit is (issue 11).

__all__ = ["ScatterGather", "SubResponse", "bindFactory", "scatterTargets"]

_log = Logger(namespace="lbkit.http")
_accessLog = Logger(namespace="lbkit.access")
#: Request headers not passed to the sub-requests (the Agent frames them itself).
_DROP = frozenset([b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"expect"])


class SubResponse:
    """
    What one server answered to its sub-request: what C{merge} is given.

    @ivar server: The L{lbkit.Server} it went to.
    @ivar status: Its status code, or 0 when it failed.
    @ivar headers: Its headers: C{(name, value)} pairs of bytes, names
        lower-case.
    @ivar body: Its body (bytes).
    @ivar error: C{None}, or why it failed: C{"timeout"}, or the error's
        message (connection refused, reset ...).
    @ivar elapsed: Seconds from sending to the whole answer (or failure).
    """

    __slots__ = ("server", "status", "headers", "body", "error", "elapsed")

    def __init__(self, server: Server, status: int = 0, headers: Sequence[tuple[bytes, bytes]] = (),
                 body: bytes = b"", error: Optional[str] = None, elapsed: float = 0.0) -> None:
        self.server = server
        self.status = status
        self.headers = list(headers)
        self.body = body
        self.error = error
        self.elapsed = elapsed

    def __repr__(self) -> str:
        return f"<SubResponse {self.server.name} {self.status or self.error}>"

    def header(self, name: bytes) -> Optional[bytes]:
        """The first value of header C{name} (any case), or C{None}."""
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None


#: What C{merge} is: the sub-responses to an answer (or a Deferred firing with one).
Merge = Callable[[list[SubResponse]], Union[Answer, "Deferred[Answer]"]]


def scatterTargets(frontend: Any) -> list[Backend]:
    """The backends the L{ScatterGather}s among C{frontend}'s routes and default send to (health, stats)."""
    targets = [r.backend for r in frontend.routes] + [frontend.default]
    return [b.target for b in targets if isinstance(b, ScatterGather)]


def bindFactory(frontend: Any, factory: Any) -> None:
    """
    A frontend built C{factory}: its L{ScatterGather}s log their
    sub-requests through it (C{factory.logAccess}), and use its reactor.
    """
    for backend in frontend.backends():
        if isinstance(backend, ScatterGather):
            backend.factories.append(factory)
            if backend._reactor is None:
                backend._reactor = factory.reactor


class ScatterGather(Backend):
    """
    Send each request to all (or C{servers}) usable servers of C{backend}
    at once and answer with C{merge(responses)}: a route target, given
    where a L{Backend} goes (L{lbkit.http.Route}, a frontend's
    C{default}).

    @ivar target: The L{Backend} whose servers get the sub-requests.
    @ivar merge: Called with the list of L{SubResponse}s (in the order of
        C{target.servers}); returns an L{lbkit.http.Answer}, or a Deferred
        firing with one.  If it raises or returns something else the
        client gets a 500 (logged).
    @ivar servers: C{"all"}, or how many servers each request goes to
        (taken in turn from the usable ones).
    @ivar timeout: Seconds each sub-request may take, to its whole answer.
    @ivar partial: C{"fail"}: if any sub-request fails, answer 504 (one
        timed out) or 502, without calling C{merge}.  C{"merge"}: call
        C{merge} with the answers that arrived (502/504 only when none did).
    @ivar maxBody: A request body above this many bytes is answered 413.
    @ivar factories: The frontend factories it logs through (the first).
    """

    def __init__(
        self,
        backend: Backend,
        merge: Merge,
        servers: Union[str, int] = "all",
        timeout: float = 5.0,
        *,
        partial: str = "fail",
        maxBody: int = 1024 * 1024,
        name: Optional[str] = None,
        reactor: Any = None,
    ) -> None:
        where = definedAt()
        if not isinstance(backend, Backend):
            raise ConfigError(f"{where}: ScatterGather: backend must be an lbkit.Backend, not {backend!r}")
        if not callable(merge):
            raise ConfigError(f"{where}: ScatterGather: merge must be callable, not {merge!r}")
        if servers != "all" and (isinstance(servers, bool) or not isinstance(servers, int) or servers < 1):
            raise ConfigError(f"{where}: ScatterGather: servers must be \"all\" or an integer >= 1, not {servers!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"{where}: ScatterGather: timeout must be a number of seconds > 0, not {timeout!r}")
        if partial not in ("fail", "merge"):
            raise ConfigError(f"{where}: ScatterGather: partial must be \"fail\" or \"merge\", not {partial!r}")
        if isinstance(maxBody, bool) or not isinstance(maxBody, int) or maxBody < 0:
            raise ConfigError(f"{where}: ScatterGather: maxBody must be an integer >= 0, not {maxBody!r}")
        self.target = backend
        self.merge = merge
        self.servers_ = servers
        self.timeout = float(timeout)
        self.partial = partial
        self.maxBody = maxBody
        self.factories: list[Any] = []
        self._reactor = reactor
        self._next = 0
        self._port: Any = None
        self._agentObject: Optional[Agent] = None
        self._httpPool: Optional[HTTPConnectionPool] = None
        self._tokens: dict[Server, bytes] = {}
        self._servers: dict[bytes, Server] = {}
        self._trigger: Any = None
        self._site = _scatterSite()(self)
        Backend.__init__(self, name or f"{backend.name}-scatter", [Server("scatter", _LocalEndpoint(self))],
                         retries=0, timeoutServer=self.timeout + 30.0)
        self.definedAt = where

    def __repr__(self) -> str:
        return f"<ScatterGather {self.name} -> {self.target.name} servers={self.servers_!r}>"

    @property
    def reactor(self) -> Any:
        """The reactor given, or the global one (looked up when first needed)."""
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def close(self) -> Deferred[None]:
        """
        Stop the loopback listener and drop its connections, and close the
        kept-alive connections to the servers (all start again on the next
        request).  Called before the reactor shuts down.
        """
        port, self._port = self._port, None
        trigger, self._trigger = self._trigger, None
        if trigger is not None:
            self.reactor.removeSystemEventTrigger(trigger)
        gone = [lost for lost, transport in self._site.open.values()]
        for _lost, transport in list(self._site.open.values()):
            if transport is not None:
                transport.abortConnection()
        if port is not None:
            gone.append(maybeDeferred(port.stopListening))
        pool, self._httpPool, self._agentObject = self._httpPool, None, None
        if pool is not None:
            gone.append(pool.closeCachedConnections())
        return DeferredList(gone).addCallback(lambda _: None)

    def updateFrom(self, new: Backend, now: float = 0.0) -> list[str]:
        """
        A reload: take C{new}'s settings (C{merge}, C{servers}, C{timeout},
        C{partial}, C{maxBody}, its target if it names another backend;
        the running target of the same name takes its own update), keeping
        this one's loopback listener.  A plain L{Backend} in its place is
        taken as L{Backend.updateFrom} takes it.
        """
        if not isinstance(new, ScatterGather):
            return Backend.updateFrom(self, new, now)
        changes = []
        for name, label in (("merge", "merge"), ("servers_", "servers"), ("timeout", "timeout"),
                            ("partial", "partial"), ("maxBody", "maxBody")):
            old, value = getattr(self, name), getattr(new, name)
            if old != value:
                changes.append(f"{label} {getattr(old, '__name__', old)!r} -> {getattr(value, '__name__', value)!r}")
                setattr(self, name, value)
        if new.target.name != self.target.name:
            changes.append(f"target {self.target.name} -> {new.target.name}")
            self.target = new.target
        self.timeoutServer = new.timeoutServer
        return changes

    # -- the scatter ---------------------------------------------------------

    def choose(self) -> list[Server]:
        """The servers the next request goes to: every usable one, or C{servers} of them in turn."""
        usable = list(self.target.eligible())
        k = self.servers_
        if k == "all" or not usable or k >= len(usable):  # type: ignore[operator]
            return usable
        start = self._next % len(usable)
        self._next += 1
        return (usable[start:] + usable[:start])[: k]  # type: ignore[misc,index]

    def scatter(self, method: bytes, uri: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
                client: str) -> Deferred[Answer]:
        """Send one request to the chosen servers; fire with the answer to give (merged, or an error)."""
        chosen = self.choose()
        if not chosen:
            return succeed(Answer(503, body=b"no server available\n"))
        agent = self._agent()
        sent = [self._one(agent, server, method, uri, headers, body, client) for server in chosen]
        d = DeferredList(sent, consumeErrors=True)

        def gathered(results: list[tuple[bool, Any]]) -> Any:
            parts: list[SubResponse] = [r for ok, r in results]
            failed = [p for p in parts if p.error is not None]
            status = 504 if any(p.error == "timeout" for p in failed) else 502
            if failed and (self.partial == "fail" or len(failed) == len(parts)):
                names = ", ".join(f"{p.server.name}: {p.error}" for p in failed)
                return Answer(status, body=f"scatter-gather failed: {names}\n".encode())
            return maybeDeferred(self.merge, [p for p in parts if p.error is None]).addCallback(self._checked)

        def mergeFailed(reason: Failure) -> Answer:
            _log.failure("{name}: merge failed", reason, name=self.name)
            return Answer(500, body=b"merge failed\n")

        return d.addCallback(gathered).addErrback(mergeFailed)

    def _checked(self, answer: Any) -> Answer:
        if not isinstance(answer, Answer):
            raise TypeError(f"{self.name}: merge returned {answer!r}, not an lbkit.http.Answer")
        return answer

    def _agent(self) -> Agent:
        """The Agent the sub-requests go through, its connections kept alive (made at the first request)."""
        if self._agentObject is None:
            from twisted.web.client import Agent, HTTPConnectionPool  # (see the imports)

            self._httpPool = HTTPConnectionPool(self.reactor, persistent=True)
            self._httpPool.maxPersistentPerHost = 16
            self._agentObject = Agent.usingEndpointFactory(self.reactor, _Endpoints(self), pool=self._httpPool)
        return self._agentObject

    def tokenFor(self, server: Server) -> bytes:
        """The host name a sub-request to C{server} is sent to (what its kept-alive connections are filed under)."""
        token = self._tokens.get(server)
        if token is None:
            token = self._tokens[server] = b"s%d.scatter" % len(self._tokens)
            self._servers[token] = server
        return token

    def _one(self, agent: Agent, server: Server, method: bytes, uri: bytes,
             headers: list[tuple[bytes, bytes]], body: bytes, client: str) -> Deferred[SubResponse]:
        from twisted.web.client import readBody  # (see the imports)

        reactor = self.reactor
        started = reactor.seconds()
        timedOut = []
        h = Headers()
        for name, value in headers:
            h.addRawHeader(name, value)
        producer: Any = _BytesProducer(body) if body else None
        d = agent.request(method, b"http://%s%s" % (self.tokenFor(server), uri), h, producer)

        def gotResponse(response: Any) -> Any:
            got = [(k.lower(), v) for k, vs in response.headers.getAllRawHeaders() for v in vs]
            return readBody(response).addCallback(lambda data: SubResponse(server, response.code, got, data))

        def timeUp() -> None:
            timedOut.append(True)
            d.cancel()

        call = reactor.callLater(self.timeout, timeUp)

        def done(result: Any) -> SubResponse:
            if call.active():
                call.cancel()
            if isinstance(result, Failure):
                why = "timeout" if timedOut else (result.getErrorMessage() or repr(result.value))
                result = SubResponse(server, error=why)
            part: SubResponse = result
            part.elapsed = reactor.seconds() - started
            self._account(part, method, uri, client)
            return part

        return d.addCallback(gotResponse).addBoth(done)

    def _account(self, part: SubResponse, method: bytes, uri: bytes, client: str) -> None:
        server = part.server
        server.requests += 1
        if part.status:
            key = CODE_CLASS[part.status // 100] if 100 <= part.status < 600 else "other"
            server.responses[key] += 1
        took = int(part.elapsed * 1000)
        fields = dict(
            client=client, date=httpDate(), frontend=self.name, backend=self.target.name, server=server.name,
            TR=0, Tw=0, Tc=-1, Tr=took if part.status else -1, Ta=took,
            status=part.status or (504 if part.error == "timeout" else 502), bytes=len(part.body),
            termination="--" if part.error is None else ("sD" if part.error == "timeout" else "SH"),
            retries=0, request=f"{method.decode('latin-1')} {uri.decode('latin-1')} HTTP/1.1",
        )
        if self.factories:
            self.factories[0].logAccess(fields)
        else:
            _accessLog.info(HTTP_LOG_FORMAT, **fields)


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """The endpoint of the server a sub-request's URI names (L{ScatterGather.tokenFor})."""

    def __init__(self, owner: ScatterGather) -> None:
        self.owner = owner

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        server = self.owner._servers[uri.host]
        return server.endpoint(self.owner.reactor)  # type: ignore[no-any-return]


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body for the Agent, written at once."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IStreamClientEndpoint)
class _LocalEndpoint:
    """The C{scatter} server's endpoint: the loopback site, listening from the first connect on."""

    def __init__(self, owner: ScatterGather) -> None:
        self.owner = owner

    def __repr__(self) -> str:
        return f"<scatter-gather {self.owner.target.name}>"

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        owner = self.owner
        reactor = owner.reactor
        if owner._port is None:
            owner._port = reactor.listenTCP(0, owner._site, interface="127.0.0.1")
            owner._trigger = reactor.addSystemEventTrigger("before", "shutdown", owner.close)
        port = owner._port.getHost().port
        return TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(protocolFactory)  # type: ignore[no-any-return]


class _ScatterResource(Resource):
    isLeaf = True

    def __init__(self, owner: ScatterGather) -> None:
        super().__init__()
        self.owner = owner

    def render(self, request: Any) -> Any:
        from twisted.web.server import NOT_DONE_YET  # (see the imports: the site loaded it)

        if request.tooLarge:
            request.setResponseCode(413)
            return b"request body too large\n"
        assert request.content is not None
        request.content.seek(0)
        body = request.content.read()
        headers = [(k, v) for k, vs in request.requestHeaders.getAllRawHeaders() for v in vs
                   if k.lower() not in _DROP]
        xff = request.getHeader(b"x-forwarded-for")
        client = xff.split(b",")[-1].strip().decode("latin-1") if xff else "-"
        d = self.owner.scatter(request.method, request.uri, headers, body, client)
        finished = request.notifyFinish()
        finished.addErrback(lambda _: d.cancel())
        d.addCallback(self._write, request)
        d.addErrback(lambda f: None if f.check(Exception) else f)
        return NOT_DONE_YET

    def _write(self, answer: Answer, request: Any) -> None:
        if request.finished or request._disconnected:
            return
        response = answer.response(answer.body, answer.contentType)
        request.setResponseCode(answer.status, answer.reason)
        for name, value in response.headers:
            request.responseHeaders.addRawHeader(name, value)
        if request.method != b"HEAD":
            request.write(answer.body)
        request.finish()


@functools.cache
def _scatterSite() -> Any:
    """The class of a L{ScatterGather}'s loopback site (twisted.web's server imported at the first call)."""
    from twisted.web.server import Request as WebRequest
    from twisted.web.server import Site

    class _BoundedRequest(WebRequest):
        """A twisted.web request that keeps at most C{maxBody} body bytes, and remembers it had more."""

        tooLarge = False

        def handleContentChunk(self, data: bytes) -> None:
            limit = self.channel.site.owner.maxBody  # type: ignore[union-attr,attr-defined]
            if self.tooLarge:
                return
            assert self.content is not None
            if self.content.tell() + len(data) > limit:
                self.tooLarge = True
                return
            WebRequest.handleContentChunk(self, data)

    class _ScatterSite(Site):
        """The loopback site; knows its open connections (for L{ScatterGather.close})."""

        noisy = False
        requestFactory = _BoundedRequest

        def __init__(self, owner: ScatterGather) -> None:
            Site.__init__(self, _ScatterResource(owner))
            self.owner = owner
            #: Each open connection: a Deferred that fires when it is gone, and its transport.
            self.open: dict[Any, tuple[Deferred[None], Any]] = {}

        def buildProtocol(self, addr: Any) -> Any:
            proto = Site.buildProtocol(self, addr)
            lost: Deferred[None] = Deferred()
            lose, make = proto.connectionLost, proto.makeConnection

            def makeConnection(transport: Any) -> None:
                self.open[proto] = (lost, transport)
                make(transport)

            def connectionLost(reason: Failure) -> None:
                self.open.pop(proto, None)
                lose(reason)
                lost.callback(None)

            proto.makeConnection, proto.connectionLost = makeConnection, connectionLost
            self.open[proto] = (lost, None)
            return proto

        def log(self, request: Any) -> None:
            pass

    return _ScatterSite
