# -*- test-case-name: tests.test_http3 -*-
"""
One HTTP/3 request stream: an L{lbkit.http._h2stream.H2Stream} whose
frames go through aioquic's C{H3Connection} instead of the C{h2} package.

Everything above the frames is the HTTP/2 stream's: the request head is
checked by the same rules (RFC 9114 §4.3 asks what RFC 9113 §8.3 asks),
re-framed for HTTP/1.1 servers, and proxied as one exchange, so routing,
balancing, persistence, rules, timeouts and the access log are the same
code (the log's version field says C{HTTP/3.0}).

Flow control: a request stream's QUIC window (MAX_STREAM_DATA) is
C{ServerQuicConnection}'s (L{lbkit.http._h3quic.serverQuicConnection}): it slides forward only while
the stream has no request bytes waiting for a paused server connection
(L{H3Stream.waiting}), so a client uploading to a server that reads slowly
is held back, and lbkit holds at most
L{REQUEST_WINDOW<lbkit.http._h3quic.REQUEST_WINDOW>} bytes of its body.  Towards the client, response bytes are handed to
aioquic as they come, and the server connection is paused while more than
L{HIGH_WATER} bytes of the stream are unacknowledged (resumed below
L{LOW_WATER}, checked whenever the client's datagrams arrive).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from h2.errors import ErrorCodes

from lbkit._pump import holdProducer
from lbkit.http._h2stream import H2Stream

if TYPE_CHECKING:
    from lbkit.http._h3 import H3FrontendConnection

__all__ = [
    "H3Stream", "HIGH_WATER", "LOW_WATER", "H3_NO_ERROR", "H3_INTERNAL_ERROR", "H3_EXCESSIVE_LOAD",
    "H3_REQUEST_REJECTED", "H3_REQUEST_CANCELLED", "H3_MESSAGE_ERROR",
]

#: Unacknowledged response bytes of a stream above which its server
#: connection is paused, and below which it is resumed.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024

#: The HTTP/3 error codes lbkit sends (RFC 9114 §8.1; aioquic's
#: C{ErrorCode} has the same values, but importing aioquic is left to a
#: frontend with C{http3=True}: issue 11, RSS).
H3_NO_ERROR = 0x100
H3_INTERNAL_ERROR = 0x102
H3_EXCESSIVE_LOAD = 0x107
H3_REQUEST_REJECTED = 0x10B
H3_REQUEST_CANCELLED = 0x10C
H3_MESSAGE_ERROR = 0x10E

#: The HTTP/2 reset codes the stream logic uses, as HTTP/3 error codes.
_CODES = {
    ErrorCodes.NO_ERROR: H3_NO_ERROR,
    ErrorCodes.PROTOCOL_ERROR: H3_MESSAGE_ERROR,
    ErrorCodes.INTERNAL_ERROR: H3_INTERNAL_ERROR,
    ErrorCodes.REFUSED_STREAM: H3_REQUEST_REJECTED,
    ErrorCodes.CANCEL: H3_REQUEST_CANCELLED,
}


class H3Stream(H2Stream):
    """One HTTP/3 request stream, proxied as one HTTP/1.1 exchange."""

    h2: H3FrontendConnection  # type: ignore[assignment]  # the connection: what H2Stream calls its h2

    def __init__(self, connection: H3FrontendConnection, streamId: int) -> None:
        super().__init__(connection, streamId)  # type: ignore[arg-type]
        self.exchange.logVersion = b"HTTP/3.0"

    def flushOut(self) -> None:
        """Hand the response bytes to aioquic, and end the stream once the exchange is over."""
        if self._done:
            return
        connection = self.h2
        h3 = connection.h3
        out = self._out
        sid = self.streamId
        try:
            while out:
                chunk = out.popleft()
                offset, self._outOffset = self._outOffset, 0
                piece = chunk[offset:] if offset else chunk
                h3.send_data(sid, piece, end_stream=False)
                self._sent += len(piece)
            if self._ending:
                h3.send_data(sid, b"", end_stream=True)
                self._streamEnded()
        except Exception as e:  # aioquic refuses to send on a stream the client reset
            connection.flushSoon()
            self._cannotSend(e)
            return
        connection.flushSoon()
        self.updateProducer()

    def waiting(self) -> bool:
        """Whether request bytes of this stream wait for the server connection to take them."""
        return bool(self._pending)

    def unacknowledged(self) -> int:
        """Response bytes aioquic holds for this stream, not yet acknowledged by the client."""
        return self.h2.unacknowledged(self.streamId)

    def updateProducer(self) -> None:
        """Pause the server connection above L{HIGH_WATER} unacknowledged bytes; resume below L{LOW_WATER}."""
        if self.producer is None:
            return
        waiting = self.unacknowledged()
        holdProducer(self, waiting > LOW_WATER if self.producerPaused else waiting > HIGH_WATER)

    def _sendHeaders(self, headers: list[tuple[bytes, bytes]], end: bool) -> bool:
        if self._done:
            return False
        try:
            self.h2.h3.send_headers(self.streamId, headers, end_stream=end)
        except Exception as e:
            self.h2.flushSoon()
            self._cannotSend(e)
            return False
        self.h2.flushSoon()
        return True

    def _cannotSend(self, error: Exception) -> None:
        """aioquic would not send: the client reset the stream (or the connection is closing)."""
        self.clientGone("SD" if self.exchange.responseStarted else "CD")

    def _resetQuietly(self, code: ErrorCodes) -> None:
        quic = self.h2.quic
        h3code = _CODES.get(code, H3_INTERNAL_ERROR)
        try:
            if code == ErrorCodes.NO_ERROR:
                # the response is complete: only ask the client to stop
                # sending the rest of its request (RFC 9114 §4.1)
                quic.stop_stream(self.streamId, h3code)
            else:
                quic.reset_stream(self.streamId, h3code)
                if not self._clientEnded:
                    quic.stop_stream(self.streamId, h3code)
        except Exception:  # the stream is gone already
            pass
        self.h2.flushSoon()

    def getHost(self) -> Any:
        return self.h2.getHost()
