# -*- test-case-name: tests.test_pump -*-
"""
The byte pump's two tweaks to Twisted's TCP transports, shared by tcp and
http mode.

Twisted's C{transport.write} only buffers: it arms write polling and the
next reactor pass sends.  For a proxy, which writes what it has just read,
that costs two C{epoll_ctl} calls and a loop pass per write.
L{writeThrough} sends at once when nothing is waiting in the transport's
buffer, and hands Twisted whatever the socket did not take, so ordering and
error handling stay Twisted's.  It also pauses the transport's producer as
soon as anything is left in that buffer, where Twisted would wait until the
buffer holds more than C{bufferSize}: with large reads, that wait let a
second whole read pile up behind the first one's unsent rest, for each
client that stops reading.  So a direction holds at most one read
(L{BUFFER_SIZE}) in Python.

L{tune} raises the read size, so bulk transfers move in large chunks.
L{relay} lets lbkit's reactor move a tcp-mode connection's bytes from one
socket to the other itself, with no protocol call per read.
L{unsent} says how much a transport still holds (for the access log of a
response cut short).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.tcp import Connection

__all__ = ["BUFFER_SIZE", "plainTCP", "tune", "writeThrough", "relay", "unsent", "holdProducer"]

#: Bytes read per C{recv} on a proxied TCP connection (Twisted's
#: C{bufferSize}, 64 KiB by default).  Twisted also pauses a transport's
#: producer once more than C{bufferSize} waits in its write buffer; writes
#: through L{writeThrough} pause it as soon as anything waits there.
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
    writes back), and, on a plain TCP transport, read and buffer in chunks
    of C{bufferSize}, pause a producer registered while bytes wait, and let
    go of the write buffer once the connection is lost (see L{_watch}).
    """
    setTcpNoDelay = getattr(transport, "setTcpNoDelay", None)
    if setTcpNoDelay is not None:
        try:
            setTcpNoDelay(True)
        except OSError:
            pass
    if plainTCP(transport):
        transport.bufferSize = bufferSize
        if "connectionLost" not in transport.__dict__:
            _watch(transport)


def _buffered(transport: Any) -> bool:
    return bool(transport._tempDataLen or len(transport.dataBuffer) > transport.offset)


def _watch(transport: Any) -> None:
    """
    Replace two of C{transport}'s methods, on the instance (the way
    Twisted's own C{abortConnection} replaces C{doRead}):

      - C{registerProducer}: a streaming producer registered while bytes
        still wait in the buffer (an http connection's next response
        behind the rest of the previous one) is paused at once, like one
        that wrote them (L{writeThrough}).  C{producerPaused}, which
        Twisted leaves set when a producer is unregistered before the
        buffer drained, is set afresh, so it says whether I{this} producer
        waits for the buffer (http mode reads it to tell a client that
        does not read from a slow server).

      - C{connectionLost}: Twisted's (and so the protocol's, which may still
        ask L{unsent}) runs first, then the write buffer is emptied.  A lost
        connection's transport and protocols usually sit in reference cycles
        (each protocol holds its transport, the two protocols of a proxied
        connection hold each other) that only the garbage collector's rare
        full passes free; the bytes a client never read (up to one read,
        L{BUFFER_SIZE}) stayed with them meanwhile, and a process that cut
        many stalled readers kept tens of MiB that way.  Both replacements
        are removed then, which also breaks their own cycle.
    """
    register = transport.registerProducer
    lost = transport.connectionLost

    def registerProducer(producer: Any, streaming: bool) -> None:
        register(producer, streaming)
        if transport.producer is producer and streaming:
            paused = transport.producerPaused = _buffered(transport)
            if paused:
                producer.pauseProducing()

    def connectionLost(reason: Any) -> None:
        stopRelaying = getattr(transport.reactor, "stopRelaying", None)
        if stopRelaying is not None:
            stopRelaying(transport)
        try:
            lost(reason)
        finally:
            d = transport.__dict__
            d.pop("connectionLost", None)
            d.pop("registerProducer", None)
            transport.dataBuffer = b""
            transport.offset = 0
            transport._tempDataBuffer = []
            transport._tempDataLen = 0

    transport.registerProducer = registerProducer
    transport.connectionLost = connectionLost


def writeThrough(transport: Any) -> Callable[[bytes], None]:
    """
    A replacement for C{transport.write} that sends immediately when it can.

    When the transport has nothing buffered and is open for writing, the
    data goes straight to C{socket.send}; whatever the socket does not take
    (all of it when it would block or fails) is passed to C{transport.write},
    and every later write follows it there until Twisted has flushed the
    buffer.  Bytes therefore leave in order, and a socket error is met again
    by Twisted's own write, which closes the connection as usual.

    Whenever a write leaves bytes in that buffer, the transport's streaming
    producer (the other side of the proxy) is paused at once, the way
    Twisted's own write pauses it once the buffer passes C{bufferSize}, and
    Twisted's C{doWrite} resumes it when the buffer is empty.  The producer
    therefore delivers no further read while one is still unsent: a
    stalled reader costs at most one read (L{BUFFER_SIZE}), plus whatever
    the producer's protocol writes in that same turn (a response head).

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
        # (LeanEPollReactor.doPoll's relay repeats this test inline: keep them alike)
        if t.dataBuffer or t._tempDataLen or t.disconnecting or t._writeDisconnecting or not t.connected or t.TLS:
            write(data)
        else:
            try:
                sent = send(data)
            except OSError:  # would block, or broken: Twisted's write deals with it
                write(data)
            else:
                if sent == len(data):
                    return
                write(data[sent:])
        # Something now waits in Twisted's buffer: stop the producer at once,
        # as Twisted's write would above bufferSize, so that no further read
        # piles up behind it; Twisted's doWrite resumes it once the buffer
        # is empty.
        producer = t.producer
        if producer is not None and t._tempDataLen and t.streamingProducer:
            t.producerPaused = True
            producer.pauseProducing()

    return sendOrBuffer


def relay(reader: Any, writer: Any, counter: Any, writeRest: Callable[[bytes], None]) -> bool:
    """
    Where the reactor can (lbkit's own, L{lbkit.reactor.LeanEPollReactor}),
    have it relay what C{reader} reads straight to C{writer}'s socket,
    adding the bytes to C{counter.bytes}, instead of calling C{reader}'s
    protocol's C{dataReceived}: what tcp mode's relaying protocols do, less
    two Python calls per read.  Whatever C{writer}'s socket does not take
    goes to C{writeRest} (C{writer}'s L{writeThrough}), so ordering and
    back-pressure are as before.  Undone when C{reader}'s connection is
    lost (L{tune} set that up).

    @return: Whether the reactor relays C{reader} now; if not (another
        reactor, TLS, a transport with its own C{doRead}), the protocol's
        C{dataReceived} goes on doing it.
    """
    relayDirectly = getattr(getattr(reader, "reactor", None), "relayDirectly", None)
    if relayDirectly is None or not (plainTCP(reader) and plainTCP(writer)):
        return False
    if "connectionLost" not in reader.__dict__:  # (not tuned: nothing would undo it)
        return False
    return bool(relayDirectly(reader, writer, counter, writeRest))


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


def holdProducer(holder: Any, blocked: bool) -> None:
    """
    Pause C{holder.producer} when C{blocked}, resume it when not, once per
    change: C{holder.producerPaused} says which it is (an HTTP/2 or HTTP/3
    stream holding back the connection that feeds it).
    """
    if blocked != holder.producerPaused:
        holder.producerPaused = blocked
        if blocked:
            holder.producer.pauseProducing()
        else:
            holder.producer.resumeProducing()
