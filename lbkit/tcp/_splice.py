# -*- test-case-name: tests.test_splice -*-
"""
The zero-copy relay of tcp mode (C{tcp.Frontend(..., splice=True)}), Linux
only: bytes go from one socket to the other through a pipe with
C{splice(2)}, never through Python.

How it fits into Twisted: both connections keep their own Twisted TCP
transports, registered with the reactor as usual, so pausing, closing,
half-closing and aborting stay Twisted's.  Only each transport's C{doRead}
is replaced (per instance, the way Twisted's own C{abortConnection} replaces
it): instead of C{recv} and C{dataReceived}, it splices what the socket has
into the direction's pipe and from the pipe into the other socket.  When
the other socket does not take it all, the rest waits in the pipe: reading
stops (C{pauseProducing}) and the other transport's C{doWrite} is replaced
until the pipe is empty again, then reading resumes.  So a direction holds
at most one pipe's worth (L{PIPE_SIZE}) in the kernel and nothing in Python.

End-of-file and errors come back from C{doRead} and C{doWrite} as Twisted's
C{CONNECTION_DONE} / C{CONNECTION_LOST}, so the reactor calls the transports'
C{readConnectionLost} / C{connectionLost} and the tcp protocols handle them
exactly as on the normal path.  A source is only read while its pipe is
empty, so an end-of-file is never passed on ahead of data.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Any, Callable

from twisted.internet import main

from lbkit._pump import plainTCP

__all__ = ["COPY_BELOW", "PIPE_SIZE", "SPLICE_FROM", "SpliceRelay", "available", "startSplice"]

#: The capacity asked for each direction's pipe: what one C{splice} moves at
#: most, and how much may wait in the kernel for a slow reader.
PIPE_SIZE = 2**18

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_splice: Callable[..., int] | None = getattr(os, "splice", None)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
#: Errors meaning "splice cannot be used on these descriptors".
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)
#: A read through Python of at least this many bytes switches a direction
#: to splicing ...
SPLICE_FROM = 2**14
#: ... and a splice of fewer bytes switches it back: for small reads, two
#: splices cost more system time than a C{recv} and a C{send}.
COPY_BELOW = 2**12


def available() -> bool:
    """Whether this platform has C{splice(2)} (Linux)."""
    return _splice is not None


def _flushed(transport: Any) -> bool:
    """
    Try to send what Twisted holds in C{transport}'s write buffer (a PROXY
    header, early client bytes) now; whether the buffer is empty.
    """
    if not (transport.dataBuffer or transport._tempDataLen):
        return True
    if transport.doWrite() is not None:
        return False  # an error: Twisted's next doWrite meets it again
    return not (transport.dataBuffer or transport._tempDataLen)


class _Direction:
    """
    One direction of a spliced connection: C{src}'s socket to C{dst}'s,
    through a pipe.

    @ivar inPipe: Bytes in the pipe, not yet taken by C{dst}.
    @ivar splicing: Whether reads splice (bulk) or copy through Python
        (small reads; see L{SPLICE_FROM}).
    @ivar counter: The object whose C{bytes} counts what was read from
        C{src} (the tcp protocol on that side).
    """

    def __init__(self, relay: SpliceRelay, src: Any, dst: Any, counter: Any) -> None:
        self.relay = relay
        self.src = src
        self.dst = dst
        self.counter = counter
        self.srcFd: int = src.fileno()
        self.dstFd: int = dst.fileno()
        self.pipeR, self.pipeW = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.pipeW, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # over the user's pipe quota (fs.pipe-user-pages-soft): keep the default
        try:
            self.size: int = fcntl.fcntl(self.pipeW, _F_GETPIPE_SZ)
        except OSError:
            self.size = 2**16
        self.inPipe = 0
        self.splicing = False
        self._recv = src.socket.recv
        self._send = dst.socket.send
        self.writing = False
        self.closed = False

    def close(self) -> None:
        """Close the pipe; the direction moves nothing any more."""
        if not self.closed:
            self.closed = True
            os.close(self.pipeR)
            os.close(self.pipeW)

    def _drain(self) -> bool:
        """
        Move what is in the pipe to C{dst}; whether the pipe is now empty.

        @raise OSError: C{dst} failed (reset, closed).
        """
        splice = _splice
        assert splice is not None
        while self.inPipe:
            try:
                moved = splice(self.pipeR, self.dstFd, self.inPipe, flags=_FLAGS)
            except BlockingIOError:
                return False
            if not moved:
                return False
            self.inPipe -= moved
        return True

    def doRead(self) -> Any:
        """
        Replaces C{src.doRead}: called by the reactor when C{src}'s socket is
        readable.
        """
        if self.closed or self.inPipe:
            # dst is gone (the tcp protocol is closing src), or src was
            # resumed by someone else while the pipe is not empty.
            self.src.pauseProducing()
            return None
        if self.splicing:
            splice = _splice
            assert splice is not None
            try:
                moved = splice(self.srcFd, self.pipeW, self.size, flags=_FLAGS)
            except BlockingIOError:
                return None
            except OSError as e:
                if e.errno in _UNSUPPORTED and self.relay._fallBack():
                    return self.src.doRead()
                return main.CONNECTION_LOST
            if not moved:
                return main.CONNECTION_DONE
            if moved < COPY_BELOW:
                self.splicing = False
            self.counter.bytes += moved
            self.inPipe = moved
            dst = self.dst
            if not dst.connected or dst._aborting:
                self.src.pauseProducing()
                return None
            try:
                if self._drain():
                    return None
            except OSError:
                pass  # dst's doWrite below meets the error again and closes dst
        else:
            try:
                data = self._recv(self.size)
            except BlockingIOError:
                return None
            except OSError:
                return main.CONNECTION_LOST
            if not data:
                return main.CONNECTION_DONE
            moved = len(data)
            if moved >= SPLICE_FROM:
                self.splicing = True
            self.counter.bytes += moved
            dst = self.dst
            if not dst.connected or dst._aborting:
                self.src.pauseProducing()
                return None
            try:
                sent = self._send(data)
            except OSError:  # would block, or dst failed: its doWrite below tells
                sent = 0
            if sent == moved:
                return None
            # the rest waits in the (empty) pipe, which holds a whole read
            try:
                self.inPipe = os.write(self.pipeW, memoryview(data)[sent:])
            except OSError:
                return main.CONNECTION_LOST
            if self.inPipe != moved - sent:
                return main.CONNECTION_LOST
        # back-pressure: stop reading until dst has taken the pipe's content
        self.src.pauseProducing()
        self.writing = True
        dst.doWrite = self.doWrite
        dst.startWriting()
        return None

    def doWrite(self) -> Any:
        """
        Replaces C{dst.doWrite} while the pipe holds bytes: called by the
        reactor when C{dst}'s socket is writable.
        """
        dst = self.dst
        if not self.closed:
            try:
                if not self._drain():
                    return None
            except OSError:
                return main.CONNECTION_LOST
        self.writing = False
        del dst.doWrite
        self.src.resumeProducing()  # a no-op once src is closing or gone
        # Twisted's own doWrite: stops write polling, or finishes a
        # loseConnection / loseWriteConnection asked for meanwhile.
        return dst.doWrite()


class SpliceRelay:
    """
    Relays both directions of a proxied connection with C{splice(2)}.

    Made by L{startSplice}; the tcp frontend protocol calls L{lost} as each
    of the two transports is lost.
    """

    def __init__(self, client: Any, server: Any, clientSide: Any, serverSide: Any,
                 fallBack: Callable[[], None]) -> None:
        """
        @param client: The client's Twisted TCP transport.
        @param server: The server's Twisted TCP transport.
        @param clientSide: Counts the bytes read from the client (C{bytes}).
        @param serverSide: Counts the bytes read from the server (C{bytes}).
        @param fallBack: Called, after the relay has taken itself out, to
            relay the normal way when the kernel refuses to splice.
        """
        self.client = client
        self.server = server
        self._fallBackTo = fallBack
        upstream = _Direction(self, client, server, clientSide)
        try:
            downstream = _Direction(self, server, client, serverSide)
        except OSError:
            upstream.close()
            raise
        self.directions = (upstream, downstream)
        client.doRead = upstream.doRead
        server.doRead = downstream.doRead

    def lost(self, transport: Any) -> None:
        """
        C{transport} (the client's or the server's) is gone: release the
        pipe that fed it, and the one it fed if that is empty.
        """
        for direction in self.directions:
            if direction.dst is transport or (direction.src is transport and not direction.inPipe):
                direction.close()

    def _fallBack(self) -> bool:
        """
        The kernel refused to splice: take the relay out and relay the
        normal way, if nothing waits in a pipe; whether it did.
        """
        if any(d.inPipe or d.writing for d in self.directions):
            return False
        for d in self.directions:
            if d.src.__dict__.get("doRead") == d.doRead:  # not an abort's no-op
                del d.src.doRead
            d.close()
        self._fallBackTo()
        return True


def startSplice(client: Any, server: Any, clientSide: Any, serverSide: Any,
                fallBack: Callable[[], None]) -> SpliceRelay | None:
    """
    Relay between two connected transports with C{splice(2)} from now on,
    if possible.

    Called by the tcp frontend protocol on the reactor thread once the
    server connection is up, before resuming reading from the client.

    @return: The L{SpliceRelay}, which now moves the bytes (the caller
        resumes reading from the client); or C{None} when splicing is not
        possible (no C{splice(2)}, TLS or other non-TCP transports, bytes
        that Twisted could not send yet, no file descriptors left), and the
        caller relays the normal way.
    """
    if _splice is None or not (plainTCP(client) and plainTCP(server)):
        return None
    if not (_flushed(client) and _flushed(server)):
        return None
    try:
        return SpliceRelay(client, server, clientSide, serverSide, fallBack)
    except OSError:
        return None
