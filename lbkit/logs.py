# -*- test-case-name: tests.test_logs -*-
"""
Where access-log lines go: L{AccessLog} destinations.

Every tcp connection and every http request ends with one access-log
event on the C{lbkit.access} namespace (formats: docs/tcp.md, docs/http.md,
docs/operations.md).  By default they go to Twisted's log, which
C{twistd} prints or writes to C{twistd.log}.  A site file sends them
elsewhere with a module-level C{accessLog}::

    from lbkit.logs import AccessLog

    accessLog = [
        AccessLog("/var/log/lbkit/access.log"),             # text lines
        AccessLog("/var/log/lbkit/access.json", format="json"),
        AccessLog(syslog=True),                             # /dev/log, local0
    ]

(or C{twistd lbkit --access-log PATH|syslog[:ADDRESS] --access-log-format
json}).  Once destinations are set, access lines go only there.  Files are
opened when the service starts (before twistd drops privileges) and again
on every reload, so C{logrotate} only needs to send SIGHUP.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import IO, Any, Sequence

from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import implementer

from lbkit._origin import definedAt
from lbkit.error import ConfigError

__all__ = ["AccessLog", "AccessLogDispatcher", "FACILITIES", "jsonRecord", "checkAccessLog", "parseDestination"]

#: syslog facility names and numbers.
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}
_INFO = 6


def jsonRecord(event: LogEvent) -> dict[str, Any]:
    """
    The JSON object of one access-log event: every field of the line (see
    docs/operations.md), plus C{"mode"} (C{"tcp"} or C{"http"}) and
    C{"time"} (when the line was logged, in seconds since the epoch).
    """
    record = {k: v for k, v in event.items() if not k.startswith("log_")}
    record["mode"] = "http" if "status" in record else "tcp"
    record["time"] = event.get("log_time", time.time())
    return record


class AccessLog:
    """
    One destination of access-log lines.

    @param path: A file to append lines to; C{"-"} for the process's
        standard output, written directly; L{None} (with no C{syslog}) for
        Twisted's log, which is where lines go without any C{AccessLog}.
    @param format: C{"text"}: the documented line; C{"json"}: one JSON
        object per line (L{jsonRecord}).
    @param syslog: Send to syslog instead: C{True} for C{/dev/log}, the
        path of another UNIX datagram socket, or C{("host", port)} for UDP.
        Each line is one RFC 3164 message, facility C{facility}, severity
        info, tagged C{tag[pid]}.  Messages that would block are dropped
        and counted (C{dropped}): logging never stalls the proxy.
    @param facility: A name from L{FACILITIES}.
    @param tag: The syslog program name.
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        format: str = "text",
        syslog: bool | str | tuple[str, int] | None = None,
        facility: str = "local0",
        tag: str = "lbkit",
    ) -> None:
        self.definedAt = definedAt()
        if path is not None and (not isinstance(path, str) or not path):
            raise ConfigError(f"AccessLog: path must be a file name, '-' or None, not {path!r}")
        if format not in ("text", "json"):
            raise ConfigError(f"AccessLog: format must be 'text' or 'json', not {format!r}")
        if syslog is True:
            syslog = "/dev/log"
        elif syslog is False:
            syslog = None
        if syslog is not None:
            if path is not None:
                raise ConfigError("AccessLog: give either path= or syslog=, not both (use two AccessLogs)")
            if not (
                (isinstance(syslog, str) and syslog)
                or (
                    isinstance(syslog, tuple) and len(syslog) == 2
                    and isinstance(syslog[0], str) and isinstance(syslog[1], int)
                )
            ):
                raise ConfigError(
                    f"AccessLog: syslog must be True, a UNIX socket path or ('host', port), not {syslog!r}"
                )
        if facility not in FACILITIES:
            raise ConfigError(f"AccessLog: unknown syslog facility {facility!r}; one of {', '.join(FACILITIES)}")
        self.path = path
        self.format = format
        self.syslog = syslog
        self.facility = facility
        self.tag = tag

    def __repr__(self) -> str:
        where = f"syslog {self.syslog!r}" if self.syslog is not None else (self.path or "twisted log")
        return f"<AccessLog {where} {self.format}>"

    def open(self) -> _Writer:
        """
        Open the destination.

        @raise ConfigError: when it cannot be opened (missing directory,
            permissions, no syslog socket), saying why.
        """
        if self.syslog is not None:
            return _SyslogWriter(self)
        if self.path is None:
            return _TwistedLogWriter(self)
        return _FileWriter(self)


class _Writer:
    def __init__(self, spec: AccessLog) -> None:
        self.spec = spec

    def text(self, event: LogEvent) -> str:
        if self.spec.format == "json":
            return json.dumps(jsonRecord(event), sort_keys=True, default=str)
        return formatEvent(event)

    def write(self, event: LogEvent) -> None:
        raise NotImplementedError()

    def close(self) -> None:
        pass


class _TwistedLogWriter(_Writer):
    def write(self, event: LogEvent) -> None:
        if self.spec.format == "json":
            event = dict(event, log_format="{accessJSON}", accessJSON=self.text(event))
        globalLogPublisher(event)


class _FileWriter(_Writer):
    def __init__(self, spec: AccessLog) -> None:
        super().__init__(spec)
        self._own = spec.path != "-"
        if not self._own:
            self._file: IO[str] = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
            return
        assert spec.path is not None
        try:
            self._file = open(spec.path, "a", encoding="utf-8", buffering=1)
        except OSError as e:
            raise ConfigError(f"AccessLog: cannot open {spec.path!r}: {e.strerror}") from None

    def write(self, event: LogEvent) -> None:
        self._file.write(self.text(event) + "\n")

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # what could not be flushed is lost, as a failed write is


class _SyslogWriter(_Writer):
    def __init__(self, spec: AccessLog) -> None:
        super().__init__(spec)
        self.address = spec.syslog
        self.priority = FACILITIES[spec.facility] * 8 + _INFO
        #: Messages dropped because the socket would have blocked.
        self.dropped = 0
        self._sock = self._connect()

    def _connect(self) -> socket.socket:
        address = self.address
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.connect(address)  # type: ignore[arg-type]
        except OSError as e:
            sock.close()
            raise ConfigError(f"AccessLog: cannot reach syslog at {address!r}: {e.strerror}") from None
        sock.setblocking(False)
        return sock

    def write(self, event: LogEvent) -> None:
        now = time.localtime(event.get("log_time", time.time()))
        stamp = time.strftime("%b ", now) + f"{now.tm_mday:2d}" + time.strftime(" %H:%M:%S", now)
        data = f"<{self.priority}>{stamp} {self.spec.tag}[{os.getpid()}]: {self.text(event)}".encode()
        try:
            self._sock.send(data)
        except BlockingIOError:
            self.dropped += 1
        except OSError:
            if not isinstance(self.address, str):
                # UDP: a refused send only means nobody listened to the last
                # one; reconnecting would look the host up again, on the
                # reactor thread, for every line
                self.dropped += 1
                return
            # the local syslog daemon restarted: reconnect once
            try:
                self._sock.close()
                self._sock = self._connect()
                self._sock.send(data)
            except (OSError, ConfigError):
                self.dropped += 1

    def close(self) -> None:
        self._sock.close()


@implementer(ILogObserver)
class AccessLogDispatcher:
    """
    The observer of a service's access-log events: sends each to the open
    destinations, or to Twisted's log when there are none.  L{replace}
    swaps the destinations (at start and on reload).
    """

    def __init__(self) -> None:
        self.writers: list[_Writer] = []

    def __call__(self, event: LogEvent) -> None:
        writers = self.writers
        if not writers:
            globalLogPublisher(event)
            return
        for writer in writers:
            try:
                writer.write(event)
            except OSError:
                # a full disk or a closed pipe must not break the proxy:
                # the line is lost and counted
                writer.dropped = getattr(writer, "dropped", 0) + 1  # type: ignore[attr-defined]

    def replace(self, destinations: Sequence[AccessLog]) -> None:
        """
        Open C{destinations} and use them from now on, closing the old ones.

        @raise ConfigError: when one cannot be opened; the old ones are
            then kept.
        """
        opened: list[_Writer] = []
        try:
            for destination in destinations:
                opened.append(destination.open())
        except ConfigError:
            for writer in opened:
                writer.close()
            raise
        old, self.writers = self.writers, opened
        for writer in old:
            writer.close()

    def close(self) -> None:
        """Close every destination; events go to Twisted's log again."""
        self.replace([])


def checkAccessLog(value: Any, where: str) -> tuple[AccessLog, ...]:
    """
    A site file's C{accessLog}: one L{AccessLog} or a list of them.

    @raise ConfigError: otherwise, prefixed with C{where}.
    """
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not isinstance(item, AccessLog):
            raise ConfigError(f"{where}: `accessLog` must be an AccessLog or a list of them, not {item!r}")
    return tuple(items)


def parseDestination(text: str, format: str = "text") -> AccessLog:
    """
    An C{--access-log} option: C{log} (Twisted's log), C{-} (standard
    output), C{syslog}, C{syslog:/path/to/socket}, C{syslog:host:port}, or a
    file path.

    @raise ConfigError: when it cannot be understood.
    """
    if text == "log":
        return AccessLog(format=format)
    if text == "syslog":
        return AccessLog(format=format, syslog=True)
    if text.startswith("syslog:"):
        rest = text[len("syslog:"):]
        if rest.startswith("/"):
            return AccessLog(format=format, syslog=rest)
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--access-log {text!r}: expected syslog:/path or syslog:host:port")
        return AccessLog(format=format, syslog=(host, int(port)))
    return AccessLog(text, format=format)
