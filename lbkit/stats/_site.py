# -*- test-case-name: tests.test_stats_security -*-
"""
L{StatsSite}: the stats page's twisted.web site, which decides on each
request from its head, before any body is read.

C{twisted.web}'s L{Request} reads a whole body (into memory, or a temporary
file past 100 kB) before a resource sees the request.  Here the channel
looks at the head first: the route it names (found by walking the resource
tree exactly as the site will), that route's credentials when it is an admin
route (L{lbkit.stats._guard.Guard}), and the declared body against what the
route takes (C{bodyLimit} on the resource: 0 but for the admin POSTs).  A
refusal is written at once, the write side is closed, and whatever the
client still sends is thrown away unread, for at most L{LINGER} seconds and
L{LINGER_BYTES} bytes, so the client can read the answer before the
connection is aborted.  Chunked bodies are counted as they arrive and cut at
the limit.

Twisted has no public hook between the head and the body, so this leans
on L{HTTPChannel} internals of Twisted 26: C{allHeadersReceived} runs after
the last header and before any body byte, C{_path} holds the request
target then, and C{_networkProducer} / C{_respondToBadRequestAndDisconnect}
are what C{loseConnection} and bad input use.  tests/test_stats_security.py
fails if any of that changes.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, cast
from urllib.parse import unquote_to_bytes

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, getChildForRequest
from twisted.web.server import Request, Site

from lbkit.stats._guard import Refusal, bodyTooLarge

__all__: list[str] = []

#: Seconds a refused connection may stay open for the client to read the answer.
LINGER = 2.0

#: Bytes of a refused request read (and thrown away) before the connection is aborted.
LINGER_BYTES = 256 * 1024


class _Probe:
    """Just what L{getChildForRequest} reads and writes of a request."""

    def __init__(self, postpath: list[bytes]) -> None:
        self.prepath: list[bytes] = []
        self.postpath = postpath


def routeFor(root: IResource, target: bytes) -> Any:
    """
    The resource of C{root}'s tree a request for C{target} (the request
    line's target) renders, found as L{Site.getResourceFor} will find it.
    """
    path = target.split(b"?", 1)[0]
    return getChildForRequest(root, _Probe([unquote_to_bytes(p) for p in path[1:].split(b"/")]))


class StatsRequest(Request):
    """
    A request that keeps its body to the C{bodyLimit} its route allows.

    @ivar adminUser: The admin user the head's credentials proved, on admin
        routes (set by L{StatsChannel}).
    """

    adminUser: str | None = None
    bodyLimit = 0
    _bodyLength = 0

    def handleContentChunk(self, data: bytes) -> None:
        channel = cast(StatsChannel, self.channel)
        if channel.refused:
            return
        self._bodyLength += len(data)
        if self._bodyLength > self.bodyLimit:
            channel.refuse(bodyTooLarge(self.bodyLimit))
            return
        super().handleContentChunk(data)


class StatsChannel(HTTPChannel):
    """An L{HTTPChannel} that refuses requests from their head (see the module)."""

    refused = False
    site: StatsSite
    _lingering: Any = None
    _discarded = 0
    _aborted = False

    def allHeadersReceived(self) -> None:
        if not hasattr(self, "_path"):
            # the request line was bad: HTTPChannel answered 400 and closes
            self.refused = True
            return
        request = cast(StatsRequest, self.requests[-1])
        refusal = self._check(request)
        if refusal is not None:
            self.refuse(refusal)
            return
        super().allHeadersReceived()

    def _check(self, request: StatsRequest) -> Refusal | None:
        route = routeFor(self.site.resource, self._path)
        guard = getattr(route, "guard", None)
        if guard is not None:
            user = guard.login(request.getHeader(b"authorization"), request.getClientAddress())
            if isinstance(user, Refusal):
                return user
            request.adminUser = user
        limit: int = getattr(route, "bodyLimit", 0)
        if self.length is None:
            if limit == 0:
                return bodyTooLarge(0)  # chunked, on a route that takes no body
        elif self.length > limit:
            return bodyTooLarge(limit)
        request.bodyLimit = limit
        return None

    def refuse(self, refusal: Refusal) -> None:
        """
        Answer with C{refusal} now and close: read nothing more of the
        request (see the module for how the connection ends).
        """
        if self.refused or self.transport is None:
            return
        self.refused = True
        self.clearLineBuffer()
        self.setTimeout(None)
        transport: Any = self.transport
        transport.write(refusal.toBytes())
        cast(Any, self._networkProducer).unregisterProducer()
        if ISSLTransport.providedBy(transport) or not hasattr(transport, "loseWriteConnection"):
            transport.loseConnection()
            return
        transport.loseWriteConnection()
        self._lingering = self.callLater(LINGER, self._abort)

    def dataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().dataReceived(data)
            return
        self._discarded += len(data)
        if self._discarded > LINGER_BYTES:
            self._abort()

    def _abort(self) -> None:
        if self._lingering is not None and self._lingering.active():
            self._lingering.cancel()
        self._lingering = None
        if self.transport is not None and not self._aborted:
            self._aborted = True
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def allContentReceived(self) -> None:
        if not self.refused:
            super().allContentReceived()

    def _respondToBadRequestAndDisconnect(self) -> None:
        # the chunk decoder goes on with the rest of the bytes it was given
        # after a refusal: what it finds there gets no second answer
        if not self.refused:
            super()._respondToBadRequestAndDisconnect()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._lingering is not None and self._lingering.active():
            self._lingering.cancel()
        self._lingering = None
        super().connectionLost(reason)


class StatsSite(Site):
    """
    The stats page's site: L{StatsChannel}s making L{StatsRequest}s, bodies
    kept in memory (none is over L{lbkit.stats._guard.MAX_BODY}), HTTP/1.1
    only, no access log, no tracebacks shown.
    """

    protocol = StatsChannel  # type: ignore[assignment]
    requestFactory = StatsRequest
    noisy = False
    displayTracebacks = False

    def __init__(self, resource: IResource, reactor: Any) -> None:
        super().__init__(resource, reactor=reactor)

    def getContentFile(self, length: int | None) -> BytesIO:
        return BytesIO()

    def acceptableProtocols(self) -> list[bytes]:
        """
        HTTP/1.1 only, also over TLS: HTTP/2 streams would not go through
        L{StatsChannel}'s checks.
        """
        return [b"http/1.1"]

    def log(self, request: Any) -> None:
        pass
