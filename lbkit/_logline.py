# -*- test-case-name: tests.test_accesslog -*-
"""
Access-log lines formatted straight to bytes.

The documented formats (docs/tcp.md, docs/http.md) are
C{lbkit.tcp.TCP_LOG_FORMAT} and C{lbkit.http.HTTP_LOG_FORMAT}, applied
with C{str.format} to a dict of fields and encoded as UTF-8.  The
functions here give the same bytes from the values themselves, with no
dict, no log event and no C{strftime} per line: L{httpDate} and
L{tcpDate} keep the text of the current second.

An exchange logs with::

    values = (client, httpDate(), frontend.name, backend.name, server.name,
              0, Tw, Tc, Tr, Ta, status, sent, termination, retries, requestLine)
    sink.emit(formatHTTPLine(*values), lambda: httpFields(*values))

L{httpFields} and L{tcpFields} build the documented dict from the same
values, for the destinations (JSON) and hooks that want it.
"""

from __future__ import annotations

import builtins
import time
from typing import Any

__all__ = [
    "formatHTTPLine", "formatTCPLine", "httpFields", "tcpFields", "httpDate", "tcpDate", "HTTP_DATE", "TCP_DATE",
    "SecondText", "httpSecond",
]

#: The C{strftime} format of an http line's date (to the second).
HTTP_DATE = "%d/%b/%Y:%H:%M:%S"
#: The C{strftime} format of a tcp line's date, before its milliseconds.
TCP_DATE = HTTP_DATE


class SecondText:
    """
    The C{strftime} text of a second of local time, computed once per
    second: a clock that goes back or jumps only costs one more call.

    @ivar second: The second (C{int(time.time())}) that L{text} is of, or -1.
    @ivar start: L{second} as a float: a time C{t} is of it when
        C{start <= t < until}.
    @ivar until: The start of the next second, as a float.
    @ivar text: Its text.
    @ivar data: The same text encoded as UTF-8, for lines formatted as bytes.
    """

    __slots__ = ("second", "start", "until", "text", "data", "format")

    def __init__(self, format: str) -> None:
        self.format = format
        self.second = -1
        self.start = self.until = -1.0
        self.text = ""
        self.data = b""

    def at(self, second: int) -> str:
        """The text of C{second} (now L{text} and L{data} are of it too)."""
        if second != self.second:
            self.text = time.strftime(self.format, time.localtime(second))
            self.data = self.text.encode()
            self.second = second
            self.start = float(second)
            self.until = float(second + 1)
        return self.text


#: The text of an http line's date, of the current second (what
#: L{httpDate} gives): a line formatted as bytes reads C{httpSecond.data}
#: after C{httpSecond.at(int(t))} when C{t = time.time()} is past
#: C{httpSecond.until} (or before C{httpSecond.start}).
httpSecond = SecondText(HTTP_DATE)
_httpSecond = httpSecond
_tcpSecond = SecondText(TCP_DATE)
_now = time.time


def httpDate(when: float | None = None) -> str:
    """
    The C{date} field of an http line: local time C{when} (now when
    C{None}) as C{05/Mar/2026:10:01:02}.
    """
    if when is None:
        when = _now()
    return _httpSecond.at(int(when))


def tcpDate(when: float) -> str:
    """
    The C{date} field of a tcp line: local time C{when} (the accept time)
    to the millisecond, C{05/Mar/2026:10:01:02.418}.
    """
    return f"{_tcpSecond.at(int(when))}.{int(when * 1000) % 1000:03d}"


def formatHTTPLine(
    client: Any,
    date: Any,
    frontend: Any,
    backend: Any,
    server: Any,
    TR: Any,
    Tw: Any,
    Tc: Any,
    Tr: Any,
    Ta: Any,
    status: Any,
    bytes: Any,
    termination: Any,
    retries: Any,
    request: builtins.bytes | bytearray | str,
) -> builtins.bytes:
    """
    The access-log line of one http request, without its newline: the
    bytes C{HTTP_LOG_FORMAT.format(...).encode("utf-8")} gives for the
    same fields.

    @param request: The request line as it came (C{method uri version}),
        or C{b"<BADREQ>"}, or C{b"-"}; bytes are read as Latin-1, as the
        C{request} field of the fields dict is.
    @param client: Like every other field, anything whose C{str()} is the
        text to show (names, the formatted address, numbers).
    """
    if not isinstance(request, str):
        request = request.decode("latin-1")
    return (
        f'{client} [{date}] {frontend} {backend}/{server} {TR}/{Tw}/{Tc}/{Tr}/{Ta} '
        f'{status} {bytes} {termination} {retries} "{request}"'
    ).encode()


def formatTCPLine(
    client: Any,
    date: Any,
    frontend: Any,
    backend: Any,
    server: Any,
    Tw: Any,
    Tc: Any,
    Tt: Any,
    bytesIn: Any,
    bytesOut: Any,
    termination: Any,
    retries: Any,
) -> builtins.bytes:
    """
    The access-log line of one tcp connection, without its newline: the
    bytes C{TCP_LOG_FORMAT.format(...).encode("utf-8")} gives for the same
    fields (C{date} from L{tcpDate}).
    """
    return (
        f"{client} [{date}] {frontend} {backend}/{server} {Tw}/{Tc}/{Tt} "
        f"{bytesIn} {bytesOut} {termination} {retries}"
    ).encode()


def httpFields(
    client: Any,
    date: Any,
    frontend: Any,
    backend: Any,
    server: Any,
    TR: Any,
    Tw: Any,
    Tc: Any,
    Tr: Any,
    Ta: Any,
    status: Any,
    bytes: Any,
    termination: Any,
    retries: Any,
    request: builtins.bytes | bytearray | str,
) -> dict[str, Any]:
    """
    The fields dict of an http line (what C{finished(fields)} and JSON
    destinations get), from L{formatHTTPLine}'s arguments: C{request} as
    text (bytes read as Latin-1).
    """
    if not isinstance(request, str):
        request = request.decode("latin-1")
    return {
        "client": client, "date": date, "frontend": frontend, "backend": backend, "server": server,
        "TR": TR, "Tw": Tw, "Tc": Tc, "Tr": Tr, "Ta": Ta, "status": status, "bytes": bytes,
        "termination": termination, "retries": retries, "request": request,
    }


def tcpFields(
    client: Any,
    date: Any,
    frontend: Any,
    backend: Any,
    server: Any,
    Tw: Any,
    Tc: Any,
    Tt: Any,
    bytesIn: Any,
    bytesOut: Any,
    termination: Any,
    retries: Any,
) -> dict[str, Any]:
    """The fields dict of a tcp line, from L{formatTCPLine}'s arguments."""
    return {
        "client": client, "date": date, "frontend": frontend, "backend": backend, "server": server,
        "Tw": Tw, "Tc": Tc, "Tt": Tt, "bytesIn": bytesIn, "bytesOut": bytesOut,
        "termination": termination, "retries": retries,
    }
