# -*- test-case-name: tests.test_accesslog -*-
"""
Access-log destinations off the hot path: an L{AccessLogSink} and its
buffered L{LineWriter}s (a file, standard output, syslog over UDP or a
UNIX datagram socket).

An exchange that formatted its line to bytes (L{lbkit._logline}) hands
it over with::

    sink = factory.accessSink
    if sink is not None and sink.active:
        sink.emit(line, lambda: fields)   # fields: only JSON destinations call it

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

__all__ = [
    "AccessLogSink", "LineWriter", "FileWriter", "StdoutWriter", "SyslogWriter",
    "FACILITIES", "SYSLOG_FORMATS", "jsonLine",
]

#: syslog facility names and numbers.
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}
#: The syslog framings a L{SyslogWriter} can use.
SYSLOG_FORMATS = ("rfc3164", "rfc5424")
_INFO = 6

_log = Logger(namespace="lbkit.logs")
_time = time.time

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
    return json.dumps(record, sort_keys=True, default=str).encode("utf-8")


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
        if maxBuffer is not None:
            self.maxBuffer = maxBuffer
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
    mode = os.fstat(1).st_mode
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


def _hostname() -> bytes:
    """This host's name for RFC 5424's HOSTNAME field, or C{-}."""
    name = socket.gethostname()
    if not name or len(name) > 255 or not all(33 <= ord(c) <= 126 for c in name):
        return b"-"
    return name.encode("ascii")


class SyslogWriter(LineWriter):
    """
    Sends each line as one syslog datagram, from a buffer flushed every
    C{batch} lines or C{flushInterval} seconds; a socket that would block
    keeps the rest for the next tick.

    @param address: A UNIX datagram socket's path, or C{(host, port)} for UDP.
    @param framing: C{"rfc3164"}: C{<PRI>Mmm dd hh:mm:ss tag[pid]: line};
        C{"rfc5424"}: C{<PRI>1 2026-03-05T10:01:02.418123+01:00 host tag
        pid - - line}.
    """

    #: Lines in the buffer that make it flush at once (small bursts: a UDP
    #: receiver's buffer overflows silently).
    batch = 64

    def __init__(
        self,
        address: str | tuple[str, int],
        format: str = "text",
        clock: Any = None,
        *,
        facility: str = "local0",
        tag: str = "lbkit",
        framing: str = "rfc3164",
        batch: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.address = address
        self.priority = FACILITIES[facility] * 8 + _INFO
        self.tag = tag
        self.framing = framing
        where = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
        super().__init__(f"syslog:{where}", format, clock, **kwargs)
        if batch is not None:
            self.batch = batch
        if clock is None:
            self.batch = 1
        self._frames: list[bytes] = []
        self._size = 0
        self._second = -1
        self._prefix = b""
        self._suffix = b""
        self._host = _hostname()
        self._frame = self._frame5424 if framing == "rfc5424" else self._frame3164
        self._sock: socket.socket | None = self._connect()

    def _connect(self) -> socket.socket:
        address = self.address
        try:
            if isinstance(address, str):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                target: Any = address
            else:
                family, _, _, _, target = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_DGRAM)[0]
                sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as e:
            raise ConfigError(f"AccessLog: cannot reach syslog at {address!r}: {e.strerror}") from None
        try:
            sock.connect(target)
        except OSError as e:
            sock.close()
            raise ConfigError(f"AccessLog: cannot reach syslog at {address!r}: {e.strerror}") from None
        sock.setblocking(False)
        return sock

    def _restamp(self, second: int) -> None:
        now = time.localtime(second)
        tag = self.tag
        if self.framing == "rfc5424":
            offset = now.tm_gmtoff or 0
            sign = "+" if offset >= 0 else "-"
            zone = f"{sign}{abs(offset) // 3600:02d}:{abs(offset) % 3600 // 60:02d}"
            self._prefix = f"<{self.priority}>1 {time.strftime('%Y-%m-%dT%H:%M:%S', now)}".encode()
            self._suffix = f"{zone} ".encode() + self._host + f" {tag} {os.getpid()} - - ".encode()
        else:
            stamp = time.strftime("%b ", now) + f"{now.tm_mday:2d}" + time.strftime(" %H:%M:%S", now)
            self._prefix = f"<{self.priority}>{stamp} {tag}[{os.getpid()}]: ".encode()
        self._second = second

    def _frame3164(self, line: bytes) -> bytes:
        second = int(_time())
        if second != self._second:
            self._restamp(second)
        return self._prefix + line

    def _frame5424(self, line: bytes) -> bytes:
        now = _time()
        second = int(now)
        if second != self._second:
            self._restamp(second)
        return b"%s.%06d%s%s" % (self._prefix, int((now - second) * 1e6), self._suffix, line)

    def add(self, line: bytes) -> None:
        if self._size >= self.maxBuffer:
            self.dropped += 1
            return
        frame = self._frame(line)
        frames = self._frames
        frames.append(frame)
        self._size += len(frame)
        if len(frames) >= self.batch:
            if not self._blocked:
                self.flush()
        elif self._timer is None:
            self._schedule()

    def pending(self) -> int:
        return self._size

    def _countPending(self) -> int:
        return len(self._frames)

    def flush(self) -> None:
        frames = self._frames
        count = len(frames)
        if not count:
            return
        sent = 0
        sock = self._sock
        reconnected = False
        if sock is None:  # the last reconnect failed: try once more
            reconnected = True
            sock = self._reconnect()
            if sock is None:
                self.dropped += count
                frames.clear()
                self._size = 0
                return
        send = sock.send
        while sent < count:
            try:
                while sent < count:
                    send(frames[sent])
                    sent += 1
            except BlockingIOError:
                self._wouldBlock()  # the receiver is full: the rest waits
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self._wouldBlock()
                    break
                if isinstance(self.address, str) and not reconnected:
                    # the local syslog daemon restarted: reconnect, once a flush
                    reconnected = True
                    sock.close()
                    sock = self._reconnect()
                    if sock is None:
                        self.dropped += count - sent
                        sent = count
                        break
                    send = sock.send
                    continue
                # UDP: a refused send only means nobody listened to an
                # earlier one; this line is lost, the others may go
                self.dropped += 1
                sent += 1
        else:
            self._failing = False
        del frames[:sent]
        self._size = sum(map(len, frames)) if frames else 0

    def _reconnect(self) -> socket.socket | None:
        try:
            self._sock = self._connect()
        except ConfigError as e:
            self._sock = None
            self._failed(OSError(errno.ECONNREFUSED, str(e)))
        return self._sock

    def _closeHandle(self) -> None:
        if self._sock is not None:
            self._sock.close()


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
    """

    def __init__(self) -> None:
        self.active = False
        self.writers: list[LineWriter] = []
        self._text: list[LineWriter] = []
        self._json: list[LineWriter] = []

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
