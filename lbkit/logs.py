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
on every reload; SIGUSR1 (or L{LoadBalancerService.reopenAccessLogs
<lbkit.service.LoadBalancerService.reopenAccessLogs>}) only reopens them,
for C{logrotate}.  Lines are buffered and written in batches, never
blocking the proxy (L{lbkit._accesslog}).
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import implementer

from lbkit._accesslog import AccessLogSink, FileWriter, LineWriter, StdoutWriter
from lbkit._origin import definedAt
from lbkit._syslog import FACILITIES, SYSLOG_FORMATS, SyslogWriter
from lbkit.error import ConfigError

__all__ = [
    "AccessLog", "AccessLogDispatcher", "AccessLogSink", "FACILITIES", "jsonRecord", "checkAccessLog",
    "parseDestination",
]


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


def _lineOf(event: LogEvent) -> bytes:
    """
    The text of an access-log event, as L{formatEvent} gives it, encoded.
    A plain format (no C{{name()}} calls, as the documented ones) is
    applied with C{str.format_map}, which gives the same text many times
    faster than L{formatEvent}'s own formatter.
    """
    format = event.get("log_format")
    if isinstance(format, str) and "(" not in format and "log_flattened" not in event:
        try:
            return format.format_map(event).encode("utf-8", "backslashreplace")
        except Exception:
            pass  # formatEvent says what went wrong, in the line
    return formatEvent(event).encode("utf-8", "backslashreplace")


def _checkTag(tag: Any, syslogFormat: str) -> None:
    if not isinstance(tag, str) or not tag:
        raise ConfigError(f"AccessLog: tag must be a program name, not {tag!r}")
    if syslogFormat == "rfc5424" and (len(tag) > 48 or not all(33 <= ord(c) <= 126 for c in tag)):
        raise ConfigError(
            f"AccessLog: an RFC 5424 tag (APP-NAME) is 1 to 48 printable ASCII characters without spaces, not {tag!r}"
        )


class AccessLog:
    """
    One destination of access-log lines.

    @param path: A file to append lines to; C{"-"} for the process's
        standard output, written directly; C{None} (with no C{syslog}) for
        Twisted's log, which is where lines go without any C{AccessLog}.
    @param format: C{"text"}: the documented line; C{"json"}: one JSON
        object per line (L{jsonRecord}).
    @param syslog: Send to syslog instead: C{True} for C{/dev/log}, the
        path of another UNIX datagram socket, or C{("host", port)} for UDP.
        Each line is one message, facility C{facility}, severity info,
        tagged C{tag}, framed as C{syslogFormat} says.  Messages the socket
        does not take wait in a bounded buffer, then are dropped and
        counted: logging never stalls the proxy.
    @param facility: A name from L{FACILITIES}.
    @param tag: The syslog program name (RFC 5424's APP-NAME).
    @param syslogFormat: C{"rfc3164"} (C{<PRI>Mmm dd hh:mm:ss tag[pid]:
        line}) or C{"rfc5424"} (C{<PRI>1 TIMESTAMP HOSTNAME tag pid - -
        line}, the timestamp to the microsecond with its UTC offset).
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        format: str = "text",
        syslog: bool | str | tuple[str, int] | None = None,
        facility: str = "local0",
        tag: str = "lbkit",
        syslogFormat: str = "rfc3164",
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
        if syslogFormat not in SYSLOG_FORMATS:
            raise ConfigError(f"AccessLog: syslogFormat must be one of {', '.join(SYSLOG_FORMATS)}, not {syslogFormat!r}")
        _checkTag(tag, syslogFormat)
        self.path = path
        self.format = format
        self.syslog = syslog
        self.facility = facility
        self.tag = tag
        self.syslogFormat = syslogFormat

    def __repr__(self) -> str:
        where = f"syslog {self.syslog!r}" if self.syslog is not None else (self.path or "twisted log")
        return f"<AccessLog {where} {self.format}>"

    def open(self, clock: Any = None) -> _TwistedLogWriter | LineWriter:
        """
        Open the destination.

        @param clock: Schedules the flushes of the writer's buffer (an
            L{IReactorTime<twisted.internet.interfaces.IReactorTime>}); C{None} writes every line at once.
        @raise ConfigError: when it cannot be opened (missing directory,
            permissions, no syslog socket), saying why.
        """
        writer: _TwistedLogWriter | LineWriter
        if self.syslog is not None:
            writer = SyslogWriter(
                self.syslog, self.format, clock, facility=self.facility, tag=self.tag, framing=self.syslogFormat
            )
        elif self.path is None:
            return _TwistedLogWriter(self)
        elif self.path == "-":
            writer = StdoutWriter(self.format, clock)
        else:
            writer = FileWriter(self.path, self.format, clock)
        writer.spec = self
        return writer


class _TwistedLogWriter:
    """Access lines as events on Twisted's global log (the default)."""

    def __init__(self, spec: AccessLog) -> None:
        self.spec = spec

    def write(self, event: LogEvent) -> None:
        if self.spec.format == "json":
            text = json.dumps(jsonRecord(event), sort_keys=True, default=str)
            event = dict(event, log_format="{accessJSON}", accessJSON=text)
        globalLogPublisher(event)

    def close(self) -> None:
        pass


@implementer(ILogObserver)
class AccessLogDispatcher:
    """
    The observer of a service's access-log events: sends each to the open
    destinations, or to Twisted's log when there are none.  L{replace}
    swaps the destinations (at start and on reload).

    The destinations other than Twisted's log are the writers of L{sink},
    which an exchange may also write to directly, formatting its own line
    (see L{lbkit._accesslog}).

    @param clock: Schedules the writers' flushes (the service's reactor);
        C{None}: every line is written at once.
    @ivar writers: Every open destination, in order.
    """

    def __init__(self, clock: Any = None) -> None:
        self.clock = clock
        self.sink = AccessLogSink()
        self.writers: list[_TwistedLogWriter | LineWriter] = []
        self._twisted: list[_TwistedLogWriter] = []

    def __call__(self, event: LogEvent) -> None:
        if not self.writers:
            globalLogPublisher(event)
            return
        for writer in self._twisted:
            writer.write(event)
        sink = self.sink
        if sink.writers:
            sink.emit(_lineOf(event), lambda: jsonRecord(event))

    def replace(self, destinations: Sequence[AccessLog]) -> None:
        """
        Open C{destinations} and use them from now on, closing the old ones
        (their buffered lines are written first).

        @raise ConfigError: when one cannot be opened; the old ones are
            then kept.
        """
        opened: list[_TwistedLogWriter | LineWriter] = []
        try:
            for destination in destinations:
                opened.append(destination.open(self.clock))
        except ConfigError:
            for writer in opened:
                writer.close()
            raise
        self.writers = opened
        self._twisted = [w for w in opened if isinstance(w, _TwistedLogWriter)]
        lines = [w for w in opened if isinstance(w, LineWriter)]
        self.sink.replace(lines, active=not self._twisted)

    def reopen(self) -> list[str]:
        """Open the file destinations again (L{AccessLogSink.reopen})."""
        return self.sink.reopen()

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


def parseDestination(text: str, format: str = "text", syslogFormat: str = "rfc3164") -> AccessLog:
    """
    An C{--access-log} option: C{log} (Twisted's log), C{-} (standard
    output), C{syslog}, C{syslog:/path/to/socket}, C{syslog:host:port}, or a
    file path; C{syslogFormat} frames the syslog ones.

    @raise ConfigError: when it cannot be understood.
    """
    if text == "log":
        return AccessLog(format=format)
    if text == "syslog":
        return AccessLog(format=format, syslog=True, syslogFormat=syslogFormat)
    if text.startswith("syslog:"):
        rest = text[len("syslog:"):]
        if rest.startswith("/"):
            return AccessLog(format=format, syslog=rest, syslogFormat=syslogFormat)
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--access-log {text!r}: expected syslog:/path or syslog:host:port")
        return AccessLog(format=format, syslog=(host, int(port)), syslogFormat=syslogFormat)
    return AccessLog(text, format=format)
