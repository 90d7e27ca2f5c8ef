# -*- test-case-name: tests.test_http_mirror -*-
"""
The connections mirror copies (L{lbkit.http._mirror}) go to shadow
servers over: L{ShadowProtocol} reads a whole response, keeps its status
code and throws the rest away, and can then wait, idle, for the next copy
in the frontend's L{ConnectionPool} (under a L{ShadowKey}, never handed
to a real request).
"""

from __future__ import annotations

from typing import Any, Optional
from typing import Protocol as TypingProtocol

from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from lbkit._model import Server
from lbkit.http._body import UNTIL_CLOSE, BodyReader, bodyLength
from lbkit.http._headers import connectionTokens
from lbkit.http._parse import BadMessage, HeadReader, parseResponseHead
from lbkit.http._pool import ConnectionPool

__all__ = ["ShadowKey", "ShadowProtocol", "ShadowCopy"]


class ShadowKey:
    """
    What a shadow connection is pooled under instead of its L{Server}: a
    real request asks the pool for a L{Server}, and so never gets one.

    @ivar server: The shadow server.
    """

    __slots__ = ("server",)

    def __init__(self, server: Server) -> None:
        self.server = server

    def __repr__(self) -> str:
        return f"<ShadowKey {self.server.name}>"


class ShadowCopy(TypingProtocol):
    """What a L{ShadowProtocol} reports to: the copy it carries."""

    def shadowAnswered(self, code: int) -> None:
        """The whole response arrived, with this status code."""

    def shadowLost(self) -> None:
        """The connection closed (or the response was garbage) before the whole response."""


class ShadowProtocol(Protocol):
    """
    A connection to a shadow server, carrying one copy at a time.

    @ivar server: Its L{ShadowKey} (what the pool files it under).
    @ivar copy: The copy it carries now, or C{None} (idle).
    @ivar complete: Whether the last response arrived whole and the
        connection may carry another.
    """

    idleSince = 0.0

    def __init__(self, key: ShadowKey, pool: Optional[ConnectionPool[Any]]) -> None:
        self.server = key  # type: ignore[assignment]
        self.pool = pool
        self.copy: Optional[ShadowCopy] = None
        self.complete = False
        self._head = HeadReader(request=False)
        self._body: Optional[BodyReader] = None
        self._code = 0
        self._isHead = False

    def carry(self, copy: ShadowCopy, isHead: bool) -> None:
        """Read the response to C{copy}'s request (of method HEAD if C{isHead})."""
        self.copy = copy
        self.complete = False
        self._head = HeadReader(request=False)
        self._body = None
        self._code = 0
        self._isHead = isHead

    def dataReceived(self, data: bytes) -> None:
        copy = self.copy
        if copy is None:  # nothing was asked: a server talking out of turn
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        try:
            self._feed(data)
        except BadMessage:
            self.copy = None
            copy.shadowLost()

    def _feed(self, data: bytes) -> None:
        while self._body is None:
            got = self._head.feed(data)
            if got is None:
                return
            head, data = got
            response = parseResponseHead(head)
            if 100 <= response.code < 200:
                continue  # an interim response: the final one follows
            self._code = response.code
            framing = 0 if self._isHead or response.code in (204, 304) else bodyLength(response.headers, True)
            self._keep = (framing != UNTIL_CLOSE and response.version == b"HTTP/1.1"
                          and b"close" not in connectionTokens(response.headers))
            self._body = BodyReader(framing)
        body = self._body
        if not body.done:
            n = body.feed(data)
            data = data[n:]
        if body.done:
            copy, self.copy = self.copy, None
            self.complete = self._keep and not data
            assert copy is not None
            copy.shadowAnswered(self._code)

    def close(self) -> None:
        """Close the connection (the pool's C{Pooled}: an idle one)."""
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.complete = False
        copy, self.copy = self.copy, None
        if copy is not None:
            copy.shadowLost()
        elif self.pool is not None:
            self.pool.discard(self)
