# -*- test-case-name: tests.test_replay -*-
"""
Reading real traffic for the simulator (C{python -m lbkit.simulate
--replay access.log}, docs/beyond.md): L{readLog} turns access-log
lines into L{Arrival}s, when each request arrived and how long its server
took.  No I/O beyond the lines it is given.

Three formats, told apart line by line:

  - lbkit's http line (L{lbkit.http.HTTP_LOG_FORMAT}): its date is when
    the request ended, to the second, so a request arrived C{Ta}
    milliseconds before it; the lines logged in one second are spread
    evenly over it, in file order;
  - lbkit's JSON records (C{format="json"}): C{time} is when the request
    ended, to the microsecond;
  - HAProxy's C{option httplog} (with or without a syslog prefix): its
    date, to the millisecond, is when the request was received.

The service time is C{Tr}: from the request sent to the server to its
response head.  Lines without one (C{-1}: no server answered, the request
was answered by the balancer, or it is not an http line) are skipped, and
counted.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Iterable, Optional

import attrs

__all__ = ["Arrival", "ReplayLog", "parseLine", "readLog"]

_LINE = re.compile(
    r"(?P<client>\S+) \[(?P<date>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d)(?P<ms>\.\d+)?\] \S+ "
    r"(?P<backend>\S+?)/(?P<server>\S+) -?\d+/-?\d+/-?\d+/(?P<Tr>-?\d+)/\+?(?P<Ta>-?\d+) "
    r"-?\d+ \+?\d+ .*?\"(?P<request>[^\"]*)\"\s*$"
)


@attrs.frozen
class Arrival:
    """
    One request, as replayed.

    @ivar at: When it arrived, in seconds (any origin; L{readLog} starts at 0).
    @ivar service: Seconds its server took (the log's C{Tr}).
    @ivar client: The client's address as logged (C{"10.0.0.1:51000"}).
    @ivar method: Its method (bytes).
    @ivar uri: Its target (bytes).
    @ivar server: The server that served it, as logged.
    """

    at: float
    service: float
    client: str
    method: bytes
    uri: bytes
    server: str


@attrs.frozen
class ReplayLog:
    """
    What L{readLog} read.

    @ivar arrivals: The requests, by arrival time, the first at 0.
    @ivar servers: The servers named, in first-seen order.
    @ivar skipped: Lines that were not requests with a service time.
    """

    arrivals: list[Arrival]
    servers: list[str]
    skipped: int


def _request(line: str) -> tuple[bytes, bytes]:
    parts = line.split(" ")
    method = parts[0].encode("latin-1") if parts and parts[0] else b"GET"
    uri = parts[1].encode("latin-1") if len(parts) > 1 else b"/"
    return method, uri


def _seconds(date: str) -> float:
    return datetime.strptime(date, "%d/%b/%Y:%H:%M:%S").timestamp()


def parseLine(line: str) -> Optional[tuple[Arrival, Optional[float]]]:
    """
    One access-log line: C{(arrival, took)}, or C{None} when it is not a
    request with a service time.  C{took} is C{None} when C{arrival.at}
    is the arrival (lbkit JSON, HAProxy); for lbkit's text line it is
    C{Ta} in seconds and C{arrival.at} the second the request ended
    (L{readLog} spreads that second and moves the arrival back by C{took}).
    """
    line = line.strip()
    if not line:
        return None
    if line.startswith("{"):
        try:
            record = json.loads(line)
            tr, ta, when = int(record["Tr"]), int(record["Ta"]), float(record["time"])
            method, uri = _request(str(record.get("request", "")))
            server, client = str(record["server"]), str(record.get("client", "-"))
        except (ValueError, KeyError, TypeError):
            return None
        if tr < 0 or ta < 0 or server.startswith("<"):
            return None
        return Arrival(when - ta / 1000.0, tr / 1000.0, client, method, uri, server), None
    m = _LINE.search(line)
    if m is None:
        return None
    tr, ta = int(m.group("Tr")), int(m.group("Ta"))
    server = m.group("server")
    if tr < 0 or server.startswith("<"):
        return None
    try:
        second = _seconds(m.group("date"))
    except ValueError:
        return None
    method, uri = _request(m.group("request"))
    ms = m.group("ms")
    arrival = Arrival(second + float(ms or 0), tr / 1000.0, m.group("client"), method, uri, server)
    return arrival, (None if ms is not None else max(ta, tr) / 1000.0)


def readLog(lines: Iterable[str]) -> ReplayLog:
    """The requests of an access log (any mix of the formats in the module docstring), by arrival."""
    skipped = 0
    exact: list[Arrival] = []
    ended: list[tuple[Arrival, float]] = []
    for line in lines:
        parsed = parseLine(line)
        if parsed is None:
            if line.strip():
                skipped += 1
        elif parsed[1] is None:
            exact.append(parsed[0])
        else:
            ended.append((parsed[0], parsed[1]))
    perSecond: dict[float, int] = {}
    for a, _ in ended:
        perSecond[a.at] = perSecond.get(a.at, 0) + 1
    seen: dict[float, int] = {}
    for a, took in ended:
        i = seen.get(a.at, 0)
        seen[a.at] = i + 1
        exact.append(attrs.evolve(a, at=a.at + (i + 0.5) / perSecond[a.at] - took))
    exact.sort(key=lambda a: a.at)
    origin = exact[0].at if exact else 0.0
    arrivals = [attrs.evolve(a, at=a.at - origin) for a in exact]
    servers: list[str] = []
    for a in arrivals:
        if a.server not in servers:
            servers.append(a.server)
    return ReplayLog(arrivals, servers, skipped)
