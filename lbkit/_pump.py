# -*- test-case-name: tests.test_pump -*-
"""
The byte pump's two tweaks to Twisted's TCP transports, shared by tcp and
http mode.

Twisted's C{transport.write} only buffers: it arms write polling and the
next reactor pass sends.  For a proxy, which writes what it has just read,
that costs two C{epoll_ctl} calls and a loop pass per write.
L{writeThrough} sends at once when nothing is waiting in the transport's
buffer, and hands Twisted whatever the socket did not take, so ordering,
back-pressure (pausing the producer once the buffer is full) and error
handling stay Twisted's.

L{tune} raises the read size, so bulk transfers move in large chunks.
L{unsent} says how much a transport still holds (for the access log of a
response cut short).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.tcp import Connection

__all__ = ["BUFFER_SIZE", "plainTCP", "tune", "writeThrough", "unsent"]

#: Bytes read per C{recv} on a proxied TCP connection, and how much may wait
#: in its write buffer before its producer is paused (Twisted uses one
#: attribute, C{bufferSize}, for both; its default is 64 KiB).
BUFFER_SIZE = 2**18


def plainTCP(transport: Any) -> bool:
    """
    Whether C{transport} is a plain Twisted TCP connection (not TLS), whose
    socket lbkit may use directly (L{writeThrough}, and tcp mode's splice
    relay).
    """
    return isinstance(transport, Connection) and not transport.TLS and not ISSLTransport.providedBy(transport)


def tune(transport: Any, bufferSize: int = BUFFER_SIZE) -> None:
    """
    Set TCP_NODELAY where the transport has it (a proxy must not hold small
    writes back), and read and buffer in chunks of C{bufferSize} on a plain
    TCP transport.
    """
    setTcpNoDelay = getattr(transport, "setTcpNoDelay", None)
    if setTcpNoDelay is not None:
        try:
            setTcpNoDelay(True)
        except OSError:
            pass
    if plainTCP(transport):
        transport.bufferSize = bufferSize


def writeThrough(transport: Any) -> Callable[[bytes], None]:
    """
    A replacement for C{transport.write} that sends immediately when it can.

    When the transport has nothing buffered and is open for writing, the
    data goes straight to C{socket.send}; whatever the socket does not take
    (all of it when it would block or fails) is passed to C{transport.write},
    and every later write follows it there until Twisted has flushed the
    buffer.  Bytes therefore leave in order, a full buffer still pauses the
    transport's producer, and a socket error is met again by Twisted's own
    write, which closes the connection as usual.

    For anything but a plain TCP transport (TLS, a test's
    C{StringTransport}, a wrapping protocol) it returns C{transport.write}
    itself.
    """
    write: Callable[[bytes], None] = transport.write
    if not plainTCP(transport):
        return write
    send = transport.socket.send

    def sendOrBuffer(data: bytes) -> None:
        t = transport
        if t.dataBuffer or t._tempDataLen or t.disconnecting or t._writeDisconnecting or not t.connected or t.TLS:
            write(data)
            return
        try:
            sent = send(data)
        except OSError:  # would block, or broken: Twisted's write deals with it
            write(data)
            return
        if sent < len(data):
            write(data[sent:])

    return sendOrBuffer


def unsent(transport: Any) -> int:
    """
    How many bytes written to C{transport} are still in its buffer, not
    yet handed to the socket: what C{abortConnection} would throw away.

    Known for a plain TCP transport (the buffer L{writeThrough} checks);
    0 for anything else (TLS, a test's C{StringTransport}, a wrapper).
    """
    if not plainTCP(transport):
        return 0
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen  # type: ignore[no-any-return]
