# -*- test-case-name: tests.test_workers -*-
"""
One worker process of L{lbkit.workers.WorkerSupervisor}: run as
C{python -m lbkit._worker} with its settings as JSON in the environment
variable C{LBKIT_WORKER}; never by hand.

It loads the site file, waits for the supervisor's server states, then
accepts on the listening sockets it inherited.  It runs no health checks
and serves no stats page (the supervisor does both), reports its
counters every second, reloads or reopens its access logs when told, and
drains on SIGTERM.  It stops too when its standard input closes (the
supervisor is gone).
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import sys
from typing import Any, Callable, Sequence, TextIO

from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, formatEvent, globalLogBeginner
from twisted.python.failure import Failure

from lbkit._backend import Backend, backendsOf
from lbkit._heap import trimHeap
from lbkit._latency import timeBackend
from lbkit._listening import setPortSource
from lbkit._model import Server
from lbkit._workerproc import (
    LineSplitter,
    ObservationForwarder,
    SocketAdopter,
    applyStates,
    countersOf,
    encode,
    purgeCaches,
)
from lbkit.config import Site, loadSite
from lbkit.error import ConfigError
from lbkit.logs import parseDestination
from lbkit.reactor import install as installLean
from lbkit.service import LoadBalancerService
from lbkit.stats import Page

__all__: list[str] = []

_log = Logger(namespace="lbkit")

#: Seconds between two counter reports.
REPORT_INTERVAL = 1.0


def splitMaxconn(site: Site, workers: int) -> None:
    """
    Give each worker its share of every server's C{maxconn}: the ceiling of
    C{maxconn / workers}, so the instance as a whole allows at most
    C{maxconn + workers - 1} (docs/workers.md).
    """
    for backend in backendsOf(site.listen):
        for server in backend.servers:
            if server.maxconn is not None:
                server.maxconn = max(1, math.ceil(server.maxconn / workers))


def timeSite(listen: Sequence[Any]) -> None:
    """
    Time every backend's requests when the site has a stats page (which
    the supervisor serves, from the workers' reports): docs/stats.md,
    "Latency".
    """
    if any(isinstance(item, Page) for item in listen):
        for backend in backendsOf(listen):
            timeBackend(backend)


class WorkerService(LoadBalancerService):
    """A worker's balancer: no health checks (the supervisor runs them)."""

    runsHealthChecks = False

    def __init__(self, *args: Any, workers: int = 1, **kwargs: Any) -> None:
        LoadBalancerService.__init__(self, *args, **kwargs)
        self.workers = workers

    #: Called when a discovery changed a backend's servers (the worker
    #: then asks the supervisor for the servers' states), or C{None}.
    onDiscovered: Callable[[], object] | None = None

    def loadSite(self, path: str) -> Site:
        site = LoadBalancerService.loadSite(self, path)
        splitMaxconn(site, self.workers)
        return site

    def serversDiscovered(self, backend: Backend, servers: Sequence[Server]) -> list[str]:
        for server in servers:
            if server.maxconn is not None:
                server.maxconn = max(1, math.ceil(server.maxconn / self.workers))
        changes = LoadBalancerService.serversDiscovered(self, backend, servers)
        if changes and self.onDiscovered is not None:
            self.onDiscovered()
        return changes


class _Control(Protocol):
    """The supervisor's messages, on standard input; replies on standard output."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.lines = LineSplitter(self.lineReceived)

    def dataReceived(self, data: bytes) -> None:
        self.lines.feed(data)

    def lineReceived(self, line: bytes) -> None:
        if line.strip():
            self.worker.received(json.loads(line))

    def send(self, message: dict[str, Any]) -> None:
        if self.transport is not None:
            self.transport.write(encode(message))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.worker.orphaned()


class Worker:
    """What one worker process does, driven by the supervisor's messages."""

    def __init__(self, reactor: Any, settings: dict[str, Any]) -> None:
        self.reactor = reactor
        self.settings = settings
        site = loadSite(settings["site"])
        splitMaxconn(site, settings["workers"])
        timeSite(site.listen)
        accessLog = [
            parseDestination(d, settings.get("accessLogFormat", "text"), settings.get("syslogFormat", "rfc3164"))
            for d in settings.get("accessLog", [])
        ] or None
        self.service = WorkerService(
            site.listen, reactor, site=site, grace=settings.get("grace"), accessLog=accessLog,
            defaultGrace=settings.get("defaultGrace"), installSignalHandlers=False, workers=settings["workers"],
        )
        self.control = _Control(self)
        self.observations = ObservationForwarder(self.control.send)
        self.service.onDiscovered = lambda: self.control.send({"op": "discovered"})
        self.reporter = LoopingCall(self.report)
        self.reporter.clock = reactor
        self.started = False
        self.stopping = False
        self.stopRequested = False

    def received(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        reply = {"id": message["id"]} if "id" in message else {}
        if op == "states":
            applyStates(self.service.listen, message["states"], self.reactor.seconds())
            if not self.started:
                self.start()
        elif op == "reload":
            self.service.reload().addCallbacks(
                lambda changes: self.reloaded(changes, reply),
                lambda f: self.control.send({"op": "reloaded", "ok": False, "why": str(f.value), **reply}),
            )
        elif op == "purge":  # (docs/cache.md)
            purged = purgeCaches(self.service.listen, message["cache"], message.get("key"), message.get("prefix"))
            self.control.send({"op": "purged", "purged": purged, **reply})
        elif op == "reopen":
            self.control.send({"op": "reopened", "results": self.service.reopenAccessLogs(), **reply})
        elif op == "report":
            self.report(reply)

    def reloaded(self, changes: list[str], reply: dict[str, Any]) -> None:
        timeSite(self.service.listen)
        self.observations.watch(self.service.listen)
        self.control.send({"op": "reloaded", "ok": True, "changes": changes, **reply})

    def start(self) -> None:
        self.started = True
        setPortSource(SocketAdopter(self.reactor, self.settings["sockets"]))
        try:
            self.service.startService()
        except Exception as e:
            _log.error("lbkit: worker cannot start: {why}", why=str(e))
            self.control.send({"op": "failed", "why": str(e)})
            self.reactor.stop()
            return
        self.reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        self.observations.watch(self.service.listen)
        self.reporter.start(REPORT_INTERVAL, now=False)
        self.control.send({"op": "ready", "pid": os.getpid()})

    def report(self, extra: dict[str, Any] | None = None) -> None:
        self.control.send({"op": "counters", "counters": countersOf(self.service.listen), **(extra or {})})

    def stop(self) -> Any:
        if self.stopping:
            return None
        self.stopping = True
        if self.reporter.running:
            self.reporter.stop()
        d = self.service.stopService()
        return d.addBoth(lambda _: self.report())

    def orphaned(self) -> None:
        if not self.stopping and self.reactor.running:
            _log.info("lbkit: worker: the supervisor is gone; stopping")
            self.terminate()

    def terminate(self) -> None:
        """Stop the reactor once, whichever asks first: SIGTERM, SIGINT or the supervisor leaving."""
        if not self.stopRequested:
            self.stopRequested = True
            self.reactor.stop()


def _observer(stream: TextIO) -> Any:
    """Log lines without timestamps: the supervisor's log adds its own."""

    def observe(event: dict[str, Any]) -> None:
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        level = getattr(event.get("log_level"), "name", "info")
        stream.write(f"[{event.get('log_namespace', '-')}#{level}] {text}\n")
        stream.flush()

    return observe


def main() -> None:
    settings = json.loads(os.environ["LBKIT_WORKER"])
    if settings.get("reactor") == "lean" and hasattr(select, "epoll"):
        installLean()
    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO

    for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)  # the supervisor's signals, not ours
    globalLogBeginner.beginLoggingTo([_observer(sys.stderr)], redirectStandardIO=False)
    try:
        worker = Worker(reactor, settings)
    except ConfigError as e:
        sys.stderr.write(f"lbkit: {e}\n")
        raise SystemExit(3) from None
    StandardIO(worker.control, reactor=reactor)
    reactor.callWhenRunning(trimHeap)  # start-up's garbage back to the system (lbkit._heap)

    def onSignal(signum: int, frame: Any) -> None:
        _log.info("lbkit: worker: {name}: stopping", name=signal.Signals(signum).name)
        reactor.callFromThread(worker.terminate)  # type: ignore[attr-defined]

    # our own handlers: Twisted's would stop the reactor a second time when
    # the supervisor's SIGTERM and the end of our stdin both arrive
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, onSignal)
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]


if __name__ == "__main__":
    main()
