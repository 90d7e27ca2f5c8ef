# -*- test-case-name: tests.test_stats_socket -*-
"""
The command socket: a line-based runtime API on a UNIX socket, like
HAProxy's.  Whoever can connect (the socket file's mode decides) may use
it; changes are logged with the peer's uid where the OS tells it.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit.stats._admin import AdminError, runAction, runReload, runReopen, runRestart
from lbkit.stats._cachestats import cacheRows, runPurge
from lbkit.stats._collect import Collector
from lbkit.stats._live import HELP as LIVE_HELP
from lbkit.stats._live import liveCommand
from lbkit.stats._tables import findTable, showTable, showTables

__all__: list[str] = []

HELP = """\
Commands (one per line; each answer ends with an empty line):
  help
  show servers [BACKEND]
  show stat                               all statistics, as one JSON line
  show info
  show table [BACKEND]                    stick-table entries (StickySource)
  show tables                             the traffic tables (lbkit.traffic)
  show table NAME                         a traffic table's keys and counters
  clear table NAME [KEY]                  forget one key of a traffic table, or all
  reload                                  load the site file again
  reopen logs                             reopen the access-log files (log rotation)
  restart workers                         new worker processes on the code installed now (--workers)
  set server BACKEND/SERVER state ready|drain|maint
  set server BACKEND/SERVER weight N
  set weight BACKEND/SERVER N
  enable health BACKEND/SERVER
  disable health BACKEND/SERVER
  show caches                             the response caches' counters
  purge cache NAME key HOST/PATH          drop one key's entries from cache NAME
  purge cache NAME prefix HOST/PREFIX     drop every key starting with PREFIX
""" + LIVE_HELP + """
  quit"""


def _peerUser(transport: Any) -> str:
    """C{"uid N"} of the peer of a UNIX socket transport, or C{"unknown"}."""
    getHandle = getattr(transport, "getHandle", None)
    peercred = getattr(socket, "SO_PEERCRED", None)
    if getHandle is None or peercred is None:
        return "unknown"
    try:
        raw = getHandle().getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
    except (OSError, struct.error, AttributeError):
        return "unknown"
    return f"uid {uid}"


def _split(name: str) -> tuple[str, str]:
    backend, sep, server = name.partition("/")
    if not sep or not backend or not server:
        raise AdminError(400, f"expected BACKEND/SERVER, not {name!r}")
    return backend, server


def execute(collector: Collector, user: str, line: str) -> str | Deferred[str]:
    """
    Run one command line and return its answer (without the final empty
    line), or a L{Deferred} of it (C{reload}).
    """
    words = line.split()
    if not words:
        return ""
    try:
        return _execute(collector, user, words)
    except AdminError as e:
        return f"error: {e}"


def _execute(collector: Collector, user: str, words: list[str]) -> str | Deferred[str]:
    via = "socket"
    live = liveCommand(collector, user, words)  # add/drain/del server, set balance/persistence, explain, preview
    if live is not None:
        return live
    match words:
        case ["help"]:
            return HELP
        case ["reload"]:
            return runReload(collector, user, f"{via} {user}").addCallback(
                lambda result: result[1] if result[0] else f"error: {result[1]}"
            )
        case ["restart", "workers"]:
            return runRestart(collector, user, f"{via} {user}").addCallback(
                lambda result: result[1] if result[0] else f"error: {result[1]}"
            )
        case ["reopen", "logs"]:
            return "\n".join(["reopened", *runReopen(collector, user, f"{via} {user}")])
        case ["show", "servers", *rest] if len(rest) <= 1:
            lines = ["# backend/server state weight current max total connect_errors check"]
            for backend in collector.backends():
                if rest and backend.name != rest[0]:
                    continue
                for s in backend.servers:
                    row = collector.server(s)
                    check = row["check"]
                    checkText = (row["check"]["last"] or "-") if check["enabled"] else "disabled"
                    lines.append(
                        f"{backend.name}/{s.name} {row['state']} {s.weight} {s.active} "
                        f"{s.maxActive} {s.total} {s.connectFailures} {checkText.replace(' ', '_')}"
                    )
            if rest and len(lines) == 1:
                raise AdminError(404, f"no backend {rest[0]!r}")
            return "\n".join(lines)
        case ["show", "tables"]:
            return showTables(collector.frontends())
        case ["show", "table", name] if findTable(collector.frontends(), name) is not None:
            return showTable(findTable(collector.frontends(), name))  # type: ignore[arg-type]
        case ["clear", "table", name, *key] if len(key) <= 1:
            table = findTable(collector.frontends(), name)
            if table is None:
                raise AdminError(404, f"no table {name!r}")
            if table.reported is not None:
                raise AdminError(409, "with workers the tables live in the workers: clear table is not supported yet")
            cleared = table.clear(key[0] if key else None)
            collector.log.info("{user} ({via}): clear table {table} {key}: {n} keys", user=user, via=via,
                               table=name, key=key[0] if key else "(all)", n=cleared)
            return f"cleared {cleared}"
        case ["show", "table", *rest] if len(rest) <= 1:
            lines = ["# backend client server idle_seconds"]
            found = False
            for backend in collector.backends():
                if rest and backend.name != rest[0]:
                    continue
                found = True
                entries = getattr(backend.persistence, "entries", None)
                if entries is None:
                    continue
                for client, server, idle in entries():
                    if server.startswith(backend.name + "/"):
                        lines.append(f"{backend.name} {client} {server.partition('/')[2]} {idle:.0f}")
            if rest and not found:
                raise AdminError(404, f"no backend {rest[0]!r}")
            return "\n".join(lines)
        case ["show", "stat"]:
            return json.dumps(collector.snapshot(), sort_keys=True)
        case ["show", "info"]:
            snap = collector.snapshot()
            return (
                f"uptime: {int(snap['uptime'])}\nfrontends: {len(snap['frontends'])}\n"
                f"backends: {len(snap['backends'])}"
            )
        case ["set", "server", name, "state", state]:
            if state not in ("ready", "drain", "maint"):
                raise AdminError(400, f"state must be ready, drain or maint, not {state!r}")
            runAction(collector, user, via, *_split(name), state)
            return "done"
        case ["set", "server", name, "weight", weight] | ["set", "weight", name, weight]:
            runAction(collector, user, via, *_split(name), "weight", weight)
            return "done"
        case ["show", "caches"]:
            lines = ["# cache hits misses revalidated stores evictions purged objects bytes max_bytes"]
            for c in cacheRows(collector.frontends()):
                lines.append(f"{c['name']} {c['hits']} {c['misses']} {c['revalidated']} {c['stores']} "
                             f"{c['evictions']} {c['purged']} {c['objects']} {c['bytes']} {c['maxBytes']}")
            return "\n".join(lines)
        case ["purge", "cache", name, ("key" | "prefix") as what, value]:
            count = runPurge(collector, user, via, name, value if what == "key" else None,
                             value if what == "prefix" else None)
            if isinstance(count, Deferred):
                return count.addCallbacks(lambda n: f"purged {n}", lambda f: f"error: {f.getErrorMessage()}")
            return f"purged {count}"
        case [("enable" | "disable") as verb, "health", name]:
            runAction(collector, user, via, *_split(name), f"{verb}-health")
            return "done"
    raise AdminError(400, f"unknown command {' '.join(words)!r}; try 'help'")


@implementer(IHalfCloseableProtocol)
class CommandProtocol(LineOnlyReceiver):
    """One connection to the command socket."""

    delimiter = b"\n"
    MAX_LENGTH = 4096
    factory: CommandFactory

    def connectionMade(self) -> None:
        self.user = _peerUser(self.transport)

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if text == "quit":
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        answer = execute(self.factory.collector, self.user, text)
        if isinstance(answer, Deferred):
            answer.addCallback(self._answer)
        else:
            self._answer(answer)

    def _answer(self, answer: str) -> None:
        if self.transport is not None:
            self.sendLine((answer + "\n").encode("utf-8"))

    def lineLengthExceeded(self, line: bytes) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        rest, self._buffer = self._buffer, b""
        if rest.strip():
            self.lineReceived(rest)
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure | None = None) -> None:
        pass


class CommandFactory(Factory):
    """Builds a L{CommandProtocol} per connection."""

    protocol: Callable[[], Any] = CommandProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
