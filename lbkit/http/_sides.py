# -*- test-case-name: tests.test_http -*-
"""
http mode: what an L{lbkit.http._exchange.Exchange} talks to besides its
server connection: its client side (an HTTP/1.1 connection or an HTTP/2
stream) and the hooks of the frontend's protocol class.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

from lbkit._backend import Backend
from lbkit._model import Server
from lbkit.http._parse import Request, Response
from lbkit.http._server import HTTPServerProtocol
from lbkit.interfaces import ISession

__all__ = ["ClientSide", "Hooks", "exchangeAttribute", "overriddenHooks"]


class ClientSide(Protocol):
    """
    The client end of an L{Exchange}: an HTTP/1.1 connection or an HTTP/2
    stream.  Called by the exchange on the reactor thread.

    @ivar writeResponse: Writes response bytes to the client: the head
        bytes L{responseHeadBytes} returned and the body (in its HTTP/1.1
        framing, or, with L{decodesChunked}, the data of a chunked body).
    @ivar decodesChunked: Whether a chunked response body is wanted as data.
    """

    writeResponse: Callable[[bytes], None]
    decodesChunked: bool

    @property
    def session(self) -> ISession:
        """The L{ISession} in the server's C{sessions} while the request is on it."""

    def pauseReading(self) -> None:
        """Read nothing more of the request until L{resumeReading} (waiting for a server)."""

    def resumeReading(self) -> None:
        """Read the request again."""

    def serverAttached(self, conn: HTTPServerProtocol) -> None:
        """
        The request head went to C{conn}: pass the request body (unless
        the exchange's C{bodyDone}) to C{conn.send}, with back-pressure both
        ways, and resume reading.
        """

    def serverDetached(self) -> None:
        """The server connection is gone or released: stop pausing it."""

    def responseHeadBytes(self, response: Response, framing: int, interim: bool) -> bytes:
        """The head of C{response} as it goes to the client (C{b""} if sent already)."""

    def startTunnel(self, conn: HTTPServerProtocol, response: Response) -> int:
        """
        Write the head of C{response} (a 101), then relay bytes both ways
        with C{conn}; return the head's size.
        """

    def sendError(self, status: int) -> int:
        """Answer with lbkit's error response C{status}; return its size in bytes."""

    def drain(self) -> bool:
        """
        The response is complete but the request body is not: read and
        drop the rest (and return true), or refuse it (false).
        """

    def nextRequest(self) -> None:
        """The exchange is over and the connection kept: read the next request."""

    def closeClient(self) -> None:
        """The exchange is over: close the connection (or end the stream) cleanly."""

    def abort(self) -> None:
        """Drop the connection (or reset the stream) now."""

    def stalled(self) -> bool:
        """Whether the client does not read: the server connection is paused for it."""

    def responseBytes(self, conn: HTTPServerProtocol, complete: bool) -> int:
        """The bytes of the response on C{conn} the client got (C{complete} or cut short)."""

    def getHost(self) -> Any:
        """The address the client connected to (for a PROXY header to a server)."""

    def takePrivate(self, server: Server) -> Optional[HTTPServerProtocol]:
        """An idle connection to a C{sendProxy} server kept for this client, or C{None}."""

    def keepPrivate(self, conn: HTTPServerProtocol) -> None:
        """Keep C{conn} (it carries this client's PROXY header) for this client, or close it."""


class Hooks(Protocol):
    """
    The hooks an L{Exchange} calls: an L{lbkit.http.HTTPFrontendProtocol}
    (the user's subclass), whose C{client}, C{frontend}, C{factory},
    C{request}, C{context}, C{backend} and C{server} are those of the
    exchange while they run.
    """

    def routeRequest(self, request: Request) -> tuple[Backend, Any]:
        """Choose the backend (and the route, or C{None}) of C{request}."""

    def serverChosen(self, server: Server) -> None:
        """C{server} was chosen for the request."""

    def finished(self, fields: dict[str, Any]) -> None:
        """The request is over: its access-log fields."""


def overriddenHooks(holder: Hooks, base: Any) -> dict[str, Any]:
    """
    Which hooks of C{holder} an L{lbkit.http._exchange.Exchange} is to
    call, as its C{routeHook} and C{chosenHook} arguments: those that
    C{holder}'s class (or the instance itself) overrides, C{base}'s own
    needing no call (its C{routeRequest} gives the default backend when
    there are no routes; its C{serverChosen} does nothing).
    """
    return {
        "routeHook": getattr(holder.routeRequest, "__func__", None) is not base.routeRequest,
        "chosenHook": getattr(holder.serverChosen, "__func__", None) is not base.serverChosen,
    }


def exchangeAttribute(name: str, doc: str) -> Any:
    """
    A read-only property of a hook holder: its exchange's attribute
    C{name} (C{None} while it has no C{exchange}).
    """
    def get(self: Any) -> Any:
        exchange = self.exchange
        return getattr(exchange, name) if exchange is not None else None

    return property(get, doc=doc)
