"""
Microseconds per access-log line, by path and destination.

    .venv/bin/python bench/logbench.py            # 200,000 lines each
    .venv/bin/python bench/logbench.py 50000      # fewer

Not a test.  Each row logs the same http line N times and prints the
mean cost of one line, everything included (building the line, the
writer, the flushes, the system calls):

  - "before": what every request did before the buffered writers (a
    copy of that code, L{_Before}): the fields dict (with a C{strftime}
    per line), a Twisted log event (C{Logger.info(HTTP_LOG_FORMAT,
    **fields)}), L{formatEvent}, one write or send per line;
  - "event": the same event path, as C{factory.logAccess(fields)} still
    works, into the buffered writers (the dispatcher applies the format
    with C{str.format_map});
  - "fast": the line formatted straight to bytes
    (L{lbkit._logline.formatHTTPLine}, the date cached per second) and
    handed to the sink (C{sink.emit(line, fields)}).

Destinations: a file in a temporary directory, and syslog over UDP to a
socket on 127.0.0.1 that does not read (the sends cost the same; the
kernel drops what overflows its buffer).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from typing import Callable

from twisted.internet.task import Clock
from twisted.logger import LogEvent, Logger, formatEvent

from lbkit._logline import formatHTTPLine, httpDate, httpFields
from lbkit.http import HTTP_LOG_FORMAT
from lbkit.logs import AccessLog, AccessLogDispatcher, jsonRecord


class _Before:
    """The access-log observer as it was before the buffered writers: one destination."""

    def __init__(self, spec: AccessLog) -> None:
        self.spec = spec
        if spec.syslog is not None:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.connect(spec.syslog)  # type: ignore[arg-type]
            self.sock.setblocking(False)
        else:
            assert spec.path is not None
            self.file = open(spec.path, "a", encoding="utf-8", buffering=1)

    def text(self, event: LogEvent) -> str:
        if self.spec.format == "json":
            return json.dumps(jsonRecord(event), sort_keys=True, default=str)
        return formatEvent(event)

    def __call__(self, event: LogEvent) -> None:
        if self.spec.syslog is None:
            self.file.write(self.text(event) + "\n")
            return
        now = time.localtime(event.get("log_time", time.time()))
        stamp = time.strftime("%b ", now) + f"{now.tm_mday:2d}" + time.strftime(" %H:%M:%S", now)
        data = f"<134>{stamp} lbkit[{os.getpid()}]: {self.text(event)}".encode()
        try:
            self.sock.send(data)
        except OSError:
            pass

    def close(self) -> None:
        if self.spec.syslog is None:
            self.file.close()
        else:
            self.sock.close()

CLIENT = "127.0.0.1:53422"
REQUEST = b"GET /index.html?user=12 HTTP/1.1"


def eventPath(log: Logger) -> Callable[[int], None]:
    def one(i: int) -> None:
        fields = dict(
            client=CLIENT,
            date=time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime()),
            frontend="demo", backend="web", server="web2",
            TR=0, Tw=0, Tc=1, Tr=2, Ta=i % 100,
            status=200, bytes=187, termination="--", retries=0,
            request=REQUEST.decode("latin-1"),
        )
        log.info(HTTP_LOG_FORMAT, **fields)

    return one


def fastPath(dispatcher: AccessLogDispatcher) -> Callable[[int], None]:
    sink = dispatcher.sink

    def one(i: int) -> None:
        if sink.active:
            values = (CLIENT, httpDate(), "demo", "web", "web2", 0, 0, 1, 2, i % 100, 200, 187, "--", 0, REQUEST)
            sink.emit(formatHTTPLine(*values), lambda: httpFields(*values))

    return one


def run(n: int, destination: AccessLog, path: str) -> float:
    clock = Clock()
    closer: Callable[[], None]
    if path == "before":
        before = _Before(destination)
        one = eventPath(Logger(namespace="lbkit.access", observer=before))
        closer = before.close
    else:
        dispatcher = AccessLogDispatcher(clock)
        dispatcher.replace([destination])
        one = fastPath(dispatcher) if path == "fast" else eventPath(Logger(namespace="lbkit.access", observer=dispatcher))
        closer = dispatcher.close
    start = time.perf_counter()
    for i in range(n):
        one(i)
        if i % 2000 == 0:
            clock.advance(0.2)  # the flush timer, as the reactor would run it
    closer()
    return (time.perf_counter() - start) / n * 1e6


def main(argv: list[str]) -> None:
    n = int(argv[1]) if len(argv) > 1 else 200_000
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    address = receiver.getsockname()
    rows: list[tuple[str, Callable[[], AccessLog]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            ("file", lambda: AccessLog(os.path.join(tmp, "access.log"))),
            ("file, JSON", lambda: AccessLog(os.path.join(tmp, "access.json"), format="json")),
            ("syslog UDP", lambda: AccessLog(syslog=address)),
            ("syslog UDP, RFC 5424", lambda: AccessLog(syslog=address, syslogFormat="rfc5424")),
        ]
        print(f"{n} lines each; microseconds per line (lower is better)\n")
        print(f"{'destination':<22} {'before':>8} {'event':>8} {'fast':>8} {'before/fast':>12}")
        for name, make in rows:
            results: dict[str, float] = {}
            for path in ("before", "event", "fast"):
                if path == "before" and "5424" in name:
                    results[path] = float("nan")  # there was no RFC 5424 before
                    continue
                results[path] = min(run(n, make(), path) for _ in range(3))
            print(
                f"{name:<22} {results['before']:>8.2f} {results['event']:>8.2f} {results['fast']:>8.2f} "
                f"{results['before'] / results['fast']:>11.1f}x"
            )
    receiver.close()


if __name__ == "__main__":
    main(sys.argv)
