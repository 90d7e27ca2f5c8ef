# -*- test-case-name: tests.test_accesslog -*-
"""
Access-log destinations off the hot path: an L{AccessLogSink} and its
buffered L{LineWriter}s: a file, standard output, and (L{lbkit._syslog})
syslog over UDP or a UNIX datagram socket.

An exchange that formats its own line (L{lbkit._logline},
L{lbkit.http._accessline}) hands it over with::

    sink = factory.accessSink
    if sink is not None and sink.active:
        if sink.wantsFields:
            sink.emit(line, lambda: fields)
        else:
            sink.writeLine(line)

(the fields are built only for JSON destinations).

Each writer appends the line to its own buffer and writes the buffer out
when it passes C{flushSize} bytes, or C{flushInterval} seconds after the
first line went into it (one timer per writer per period, on the clock it
was given).  A destination that cannot keep up (a full pipe, a syslog
daemon that does not read) keeps at most C{maxBuffer} bytes; further
lines are dropped and counted in its C{dropped}.  Nothing here ever
blocks the reactor, except that writes to a regular file are ordinary
writes (as nginx and HAProxy do them): the kernel does not report a slow
disk as "would block".

A writer given no clock writes every line at once (what
L{lbkit.logs.AccessLogDispatcher} does when used on its own).
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import stat
import time
from typing import Any, Callable, Sequence

from twisted.logger import Logger

from lbkit.error import ConfigError

__all__ = ["AccessLogSink", "LineWriter", "FileWriter", "StdoutWriter", "jsonLine"]

_log = Logger(namespace="lbkit.logs")
_time = time.time
#: What C{json.dumps(record, sort_keys=True, default=str)} does, without
#: building an encoder per line.
_encode = json.JSONEncoder(sort_keys=True, default=str).encode

#: What L{AccessLogSink.emit} calls for the fields of a JSON record.
Fields = Callable[[], dict[str, Any]]


def jsonLine(record: dict[str, Any] | None, now: float, line: bytes = b"") -> bytes:
    """
    The JSON line of one access-log record: its fields, plus C{"mode"}
    (C{"http"} when it has a C{status}, else C{"tcp"}) and C{"time"}
    (C{now}) unless it has them.  With no record, C{{"line": ...}}.
    """
    record = {"line": line.decode("utf-8", "replace")} if record is None else dict(record)
    if "mode" not in record:
        record["mode"] = "http" if "status" in record else "tcp"
    if "time" not in record:
        record["time"] = now
    return _encode(record).encode("utf-8")


class LineWriter:
    """
    One destination of access-log lines, with its buffer.

    @ivar name: What the stats page and the metric call it:
        C{file:PATH}, C{stdout}, C{syslog:PATH} or C{syslog:HOST:PORT}.
    @ivar format: C{"text"} or C{"json"}: which lines the sink gives it.
    @ivar dropped: Lines lost: the buffer was full, or a write failed.
    @ivar spec: The L{lbkit.logs.AccessLog} it was opened from, if any.
    """

    #: Seconds from the first line in an empty buffer to its flush.
    flushInterval = 0.2
    #: Bytes in the buffer that make it flush at once.
    flushSize = 65536
    #: Bytes the buffer may hold while the destination cannot take them.
    maxBuffer = 1 << 20

    spec: Any = None

    def __init__(
        self,
        name: str,
        format: str,
        clock: Any,
        *,
        flushInterval: float | None = None,
        flushSize: int | None = None,
        maxBuffer: int | None = None,
    ) -> None:
        self.name = name
        self.format = format
        self.dropped = 0
        self._clock = clock
        if flushInterval is not None:
            self.flushInterval = flushInterval
        if flushSize is not None:
            self.flushSize = flushSize
        # (on the instance even when it is the class's: read for every line)
        self.maxBuffer = maxBuffer if maxBuffer is not None else self.maxBuffer
        self._timer: Any = None
        #: The destination said "would block": wait for the timer.
        self._blocked = False
        self._failing = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.format}>"

    def add(self, line: bytes) -> None:
        """Take one line (without its newline); never raises, never blocks."""
        raise NotImplementedError()

    def flush(self) -> None:
        """Write out what the destination takes now; never blocks."""
        raise NotImplementedError()

    def pending(self) -> int:
        """Bytes waiting in the buffer."""
        raise NotImplementedError()

    def reopen(self) -> str | None:
        """Open the destination again (a file after rotation); say how it went."""
        return None

    def close(self) -> None:
        """
        Flush what can be written, stop the timer, close the destination
        (what it did not take counts as dropped).  Closing again does
        nothing.
        """
        if self._closed:
            return
        self._closed = True
        self.flush()
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        lost = self._countPending()
        if lost:
            self.dropped += lost
        self._closeHandle()

    def _countPending(self) -> int:
        raise NotImplementedError()

    def _closeHandle(self) -> None:
        pass

    def _schedule(self) -> None:
        if self._timer is None and self._clock is not None:
            self._timer = self._clock.callLater(self.flushInterval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._blocked = False
        self.flush()
        if self.pending():
            self._schedule()

    def _wouldBlock(self) -> None:
        if self._clock is not None:
            self._blocked = True
            self._schedule()

    def _failed(self, error: OSError) -> None:
        if not self._failing:
            self._failing = True
            _log.error(
                "access log {name}: cannot write: {why}; lines are dropped (and counted) until it can",
                name=self.name, why=error.strerror or str(error),
            )


class _StreamWriter(LineWriter):
    """A byte stream (file, standard output): lines joined by newlines."""

    def __init__(self, name: str, format: str, clock: Any, **kwargs: Any) -> None:
        super().__init__(name, format, clock, **kwargs)
        self._buf = bytearray()
        self._flushAt = self.flushSize if clock is not None else 0

    def add(self, line: bytes) -> None:
        buf = self._buf
        if len(buf) >= self.maxBuffer:
            self.dropped += 1
            return
        buf += line
        buf += b"\n"
        if len(buf) >= self._flushAt:
            if not self._blocked:
                self.flush()
        elif self._timer is None:
            self._schedule()

    def pending(self) -> int:
        return len(self._buf)

    def _countPending(self) -> int:
        return self._buf.count(b"\n")

    def _write(self, data: memoryview) -> int:
        raise NotImplementedError()

    def flush(self) -> None:
        buf = self._buf
        if not buf:
            return
        done = 0
        size = len(buf)
        view = memoryview(buf)
        try:
            while done < size:
                written = self._write(view[done:])
                if not written:
                    self._wouldBlock()
                    break
                done += written
            else:
                self._failing = False
        except BlockingIOError:
            self._wouldBlock()
        except OSError as e:
            self.dropped += buf.count(b"\n", done)
            done = size
            self._failed(e)
        finally:
            view.release()
        del buf[:done]


class FileWriter(_StreamWriter):
    """
    Appends to a file, opened with C{O_APPEND}; L{reopen} opens the same
    path again (after C{logrotate} renamed it).
    """

    def __init__(self, path: str, format: str = "text", clock: Any = None, **kwargs: Any) -> None:
        self.path = path
        self._fd = self._open()
        super().__init__(f"file:{path}", format, clock, **kwargs)

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as e:
            raise ConfigError(f"AccessLog: cannot open {self.path!r}: {e.strerror}") from None

    def _write(self, data: memoryview) -> int:
        return os.write(self._fd, data)

    def reopen(self) -> str:
        try:
            fd = self._open()
        except ConfigError as e:
            return f"{self.name}: {e}; still writing to the file open before"
        self.flush()
        old, self._fd = self._fd, fd
        os.close(old)
        return f"{self.name}: reopened"

    def _closeHandle(self) -> None:
        os.close(self._fd)


def _stdoutWriter() -> tuple[Callable[[memoryview], int], Callable[[], None]]:
    """
    A write function for the process's standard output that never blocks,
    and its closer; the flags of fd 1 itself (which twistd's own log shares)
    are left alone.
    """
    try:
        mode = os.fstat(1).st_mode
    except OSError as e:
        raise ConfigError(f"AccessLog: cannot write to standard output: {e.strerror}") from None
    if stat.S_ISREG(mode):
        fd = os.dup(1)  # a regular file does not block
        return (lambda data: os.write(fd, data)), (lambda: os.close(fd))
    if stat.S_ISSOCK(mode):  # e.g. systemd's journal
        sock = socket.socket(fileno=os.dup(1))
        return (lambda data: sock.send(data, socket.MSG_DONTWAIT)), sock.close
    try:
        # a pipe or a terminal: a description of our own, non-blocking
        fd = os.open("/proc/self/fd/1", os.O_WRONLY | os.O_NONBLOCK)
        return (lambda data: os.write(fd, data)), (lambda: os.close(fd))
    except OSError:
        pass
    fd = os.dup(1)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)

    def guarded(data: memoryview) -> int:
        # a pipe that polls writable takes PIPE_BUF bytes without blocking
        if not poller.poll(0):
            raise BlockingIOError(errno.EAGAIN, "standard output is full")
        return os.write(fd, data[: select.PIPE_BUF])

    return guarded, (lambda: os.close(fd))


class StdoutWriter(_StreamWriter):
    """
    Writes to the process's standard output: when it is a pipe nobody
    reads, lines wait in the buffer (up to C{maxBuffer}), then are dropped.
    """

    def __init__(self, format: str = "text", clock: Any = None, **kwargs: Any) -> None:
        self._writer, self._closer = _stdoutWriter()
        super().__init__("stdout", format, clock, **kwargs)

    def _write(self, data: memoryview) -> int:
        return self._writer(data)

    def _closeHandle(self) -> None:
        self._closer()


class AccessLogSink:
    """
    The access-log destinations of a service, for an exchange that formats
    its own line (the fast path): one per service, kept across reloads.

    @ivar active: C{True} when there are destinations and all of them are
        L{LineWriter}s, so L{emit} reaches every one; C{False} (no
        destinations: Twisted's log; or one of them is Twisted's log)
        means the line must go the old way, as a log event
        (C{factory.logAccess(fields)}).
    @ivar writers: The writers, in destination order.
    @ivar wantsFields: C{True} when a destination writes JSON, which needs
        the fields of each line (L{emit}); else L{writeLine} is enough.
    """

    def __init__(self) -> None:
        self.active = False
        self.wantsFields = False
        self.writers: list[LineWriter] = []
        self._text: list[LineWriter] = []
        self._json: list[LineWriter] = []

    def writeLine(self, line: bytes) -> None:
        """
        Write one line (without its newline) to every text destination:
        all of them, when L{wantsFields} is C{False} (else use L{emit}).
        """
        for writer in self._text:
            writer.add(line)

    def emit(self, line: bytes, fields: Fields | None = None) -> None:
        """
        Write one line (without its newline) to every text destination,
        and its record to every JSON destination.

        @param fields: Returns the line's fields (the dict documented for
            C{finished(fields)}); called at most once, and only when a
            destination writes JSON.
        """
        for writer in self._text:
            writer.add(line)
        if self._json:
            data = jsonLine(fields() if fields is not None else None, _time(), line)
            for writer in self._json:
                writer.add(data)

    def replace(self, writers: Sequence[LineWriter], active: bool) -> None:
        """
        Use C{writers} from now on and close the old ones (what they hold
        is written first); a writer with the name of an old one goes on
        counting its drops.

        @param active: Whether L{emit} reaches every destination (none is
            Twisted's log).
        """
        old, self.writers = self.writers, list(writers)
        self._text = [w for w in writers if w.format != "json"]
        self._json = [w for w in writers if w.format == "json"]
        self.wantsFields = bool(self._json)
        self.active = active and bool(writers)
        drops: dict[str, int] = {}
        for writer in old:
            writer.close()
            drops[writer.name] = drops.get(writer.name, 0) + writer.dropped
        for writer in writers:
            writer.dropped += drops.pop(writer.name, 0)

    def flush(self) -> None:
        """Write out every buffer now (as far as each destination takes it)."""
        for writer in self.writers:
            writer.flush()

    def reopen(self) -> list[str]:
        """
        Open every file destination again (after log rotation): lines
        already buffered go to the old file, new ones to the new file.

        @return: One line per file destination, saying how it went.
        """
        results = []
        for writer in self.writers:
            result = writer.reopen()
            if result is not None:
                results.append(result)
        return results

    def close(self) -> None:
        """Flush and close every destination; L{emit} then writes nowhere."""
        self.replace([], False)

    def stats(self) -> list[dict[str, Any]]:
        """Per destination: its C{destination} name, C{format}, C{dropped} and C{pending} bytes."""
        return [
            {"destination": w.name, "format": w.format, "dropped": w.dropped, "pending": w.pending()}
            for w in self.writers
        ]
