# -*- test-case-name: tests.test_accesslog -*-
"""
The syslog destination of access-log lines: L{SyslogWriter}, one datagram
per line over UDP or a UNIX datagram socket, framed as RFC 3164 or RFC
5424, sent from the buffer of an L{lbkit._accesslog.LineWriter} without
ever blocking.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import Any

from lbkit._accesslog import LineWriter
from lbkit.error import ConfigError

__all__ = ["SyslogWriter", "FACILITIES", "SYSLOG_FORMATS"]

#: syslog facility names and numbers.
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}
#: The syslog framings a L{SyslogWriter} can use.
SYSLOG_FORMATS = ("rfc3164", "rfc5424")
_INFO = 6
_time = time.time


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
        if isinstance(address, str):
            where = address
        else:
            host = f"[{address[0]}]" if ":" in address[0] else address[0]
            where = f"{host}:{address[1]}"
        super().__init__(f"syslog:{where}", format, clock, **kwargs)
        # (on the instance even when it is the class's: read for every line)
        self.batch = 1 if clock is None else batch if batch is not None else self.batch
        self._frames: list[bytes] = []
        self._size = 0
        #: The second the header is of (L{_restamp}), as C{int} and as the
        #: floats C{start <= now < until} of its times.
        self._second = -1
        self._start = self._until = -1.0
        self._prefix = b""
        self._suffix = b""
        self._host = _hostname()
        self._rfc5424 = framing == "rfc5424"
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
        self._start = float(second)
        self._until = float(second + 1)

    def add(self, line: bytes) -> None:
        if self._size >= self.maxBuffer:
            self.dropped += 1
            return
        # the header of this second (made once a second), then the line
        now = _time()
        if not self._start <= now < self._until:
            self._restamp(int(now))
        if self._rfc5424:
            frame = b"%s.%06d%s%s" % (self._prefix, int((now - self._start) * 1e6), self._suffix, line)
        else:
            frame = self._prefix + line
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
