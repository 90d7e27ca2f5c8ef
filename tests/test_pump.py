"""
Tests for L{lbkit._pump}: writing straight to the socket, falling back to
Twisted's buffered write without losing order or back-pressure.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from lbkit._pump import BUFFER_SIZE, tune, unsent, writeThrough


class ScriptedSocket:
    """
    A real socket whose C{send} takes at most C{allowance} bytes per call
    (raising C{EAGAIN} when that is 0), so tests choose where sends stop.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.allowance: int | None = None
        self.error: OSError | None = None
        self.calls: list[int] = []

    def send(self, data: Any) -> int:
        self.calls.append(len(data))
        if self.error is not None:
            raise self.error
        if self.allowance is not None:
            if self.allowance == 0:
                raise BlockingIOError(errno.EAGAIN, "would block")
            data = bytes(data[: self.allowance])
        return self._sock.send(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@implementer(IPushProducer)
class RecordingProducer:
    """Records whether it is paused."""

    paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


class WriteThroughTests(SynchronousTestCase):
    """
    L{writeThrough} over a real connected socket pair wrapped in Twisted's
    TCP transport, on a L{MemoryReactor} (nothing runs unless the test says).
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        theirs.setblocking(False)
        self.far = theirs
        self.socket = ScriptedSocket(ours)
        self.transport = Connection(ours, Protocol(), self.reactor)
        self.transport.socket = self.socket  # type: ignore[assignment]
        self.transport.connected = 1
        self.write = writeThrough(self.transport)

    def received(self) -> bytes:
        """Everything the far end can read now."""
        chunks = []
        while True:
            try:
                chunk = self.far.recv(2**20)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def flush(self) -> bytes:
        """Let Twisted write its buffer out as the reactor would; return what arrived."""
        self.socket.allowance = None
        out = []
        while self.transport in self.reactor.getWriters():
            self.assertIsNone(self.transport.doWrite())
            out.append(self.received())
        out.append(self.received())
        return b"".join(out)

    def test_otherTransportsUseWrite(self) -> None:
        """Transports that are not plain TCP get their own C{write} back."""
        transport = StringTransport()
        self.assertEqual(writeThrough(transport), transport.write)

    def test_sentAtOnce(self) -> None:
        """With nothing buffered, data goes to the socket at once and no write polling is armed."""
        self.write(b"hello")
        self.assertEqual(self.received(), b"hello")
        self.assertEqual(self.reactor.getWriters(), [])
        self.assertEqual((self.transport.dataBuffer, self.transport._tempDataLen), (b"", 0))

    def test_partialSendBuffersRestInOrder(self) -> None:
        """What the socket does not take goes to C{transport.write}, and later writes queue behind it."""
        self.socket.allowance = 3
        self.write(b"abcdefgh")
        self.write(b"ijk")
        self.write(b"lmn")
        self.assertEqual(self.socket.calls, [8])  # later writes did not jump the queue
        self.assertEqual(self.received(), b"abc")
        self.assertEqual(self.transport._tempDataBuffer, [b"defgh", b"ijk", b"lmn"])
        self.assertIn(self.transport, self.reactor.getWriters())
        self.assertEqual(self.flush(), b"defghijklmn")
        self.write(b"op")  # buffer drained: straight through again
        self.assertEqual(self.received(), b"op")

    def test_unsent(self) -> None:
        """unsent counts what waits in the transport's buffer, and nothing once it is flushed."""
        self.assertEqual(unsent(self.transport), 0)
        self.socket.allowance = 3
        self.write(b"abcdefgh")
        self.write(b"ijk")
        self.assertEqual(unsent(self.transport), 8)
        self.socket.allowance = 2
        self.transport.doWrite()
        self.assertEqual(unsent(self.transport), 6)
        self.flush()
        self.assertEqual(unsent(self.transport), 0)
        self.assertEqual(unsent(StringTransport()), 0)

    def test_wouldBlockBuffers(self) -> None:
        """When the socket would block, all of the data goes to Twisted's buffer."""
        self.socket.allowance = 0
        self.write(b"abc")
        self.assertEqual(self.transport._tempDataBuffer, [b"abc"])
        self.assertEqual(self.flush(), b"abc")

    def test_kernelBufferFull(self) -> None:
        """Against a real full socket buffer, every byte still arrives once and in order."""
        self.socket._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        data = bytes(range(256)) * 4096  # 1 MiB, far more than the socket takes
        for i in range(0, len(data), 65536):
            self.write(data[i : i + 65536])
        self.assertGreater(self.transport._tempDataLen, 0)
        out = [self.received()]
        while self.transport in self.reactor.getWriters():
            self.transport.doWrite()
            out.append(self.received())
        self.assertEqual(b"".join(out), data)

    def test_fullBufferPausesProducer(self) -> None:
        """A remainder larger than C{bufferSize} pauses the registered streaming producer."""
        producer = RecordingProducer()
        self.transport.registerProducer(producer, True)
        self.socket.allowance = 10
        self.write(b"x" * (self.transport.bufferSize + 11))
        self.assertTrue(producer.paused)
        self.flush()
        self.assertFalse(producer.paused)

    def test_errorLeftToTwisted(self) -> None:
        """A send error hands the data to Twisted, whose own write meets the error and reports it."""
        self.socket.error = ConnectionResetError(errno.ECONNRESET, "reset")
        self.write(b"abc")
        self.assertEqual(self.transport._tempDataBuffer, [b"abc"])
        result = self.transport.doWrite()
        self.assertIsInstance(result, Exception)

    def test_disconnectingUsesWrite(self) -> None:
        """Once the transport is closing (or closed), writes go through Twisted's rules."""
        self.transport.disconnecting = True
        self.write(b"abc")
        self.assertEqual(self.socket.calls, [])
        self.assertEqual(self.transport._tempDataBuffer, [b"abc"])
        self.transport.connected = 0
        self.write(b"def")  # Twisted drops writes to a closed transport
        self.assertEqual(self.transport._tempDataBuffer, [b"abc"])

    def test_halfClosedUsesWrite(self) -> None:
        """After C{loseWriteConnection} nothing is sent behind Twisted's back."""
        self.transport._writeDisconnecting = True
        self.write(b"abc")
        self.assertEqual(self.socket.calls, [])

    def test_startTLSUsesWrite(self) -> None:
        """A transport switched to TLS is never written to in plain text."""
        tls = StringTransport()  # stands in for the TLS protocol Twisted writes through
        self.transport.protocol = tls  # type: ignore[assignment]
        self.transport.TLS = True
        self.write(b"abc")
        self.assertEqual((self.socket.calls, tls.value()), ([], b"abc"))


class TuneTests(SynchronousTestCase):
    """L{tune} raises the read size of plain TCP transports only."""

    def test_tcp(self) -> None:
        """A TCP transport reads and buffers in L{BUFFER_SIZE} chunks, with TCP_NODELAY set."""
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        theirs = socket.create_connection(listener.getsockname())
        self.addCleanup(theirs.close)
        ours, _ = listener.accept()
        self.addCleanup(ours.close)
        transport = Connection(ours, Protocol(), MemoryReactor())
        tune(transport)
        self.assertEqual(transport.bufferSize, BUFFER_SIZE)
        self.assertTrue(transport.getTcpNoDelay())

    def test_other(self) -> None:
        """Other transports are left alone."""
        transport = StringTransport()
        tune(transport)
        self.assertFalse(hasattr(transport, "bufferSize"))
