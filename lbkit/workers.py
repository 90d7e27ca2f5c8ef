# -*- test-case-name: tests.test_workers -*-
"""
Every core: L{WorkerSupervisor} runs a site file in several worker processes that accept on the same
listening sockets (C{twistd lbkit --workers N}; docs/workers.md).

The supervisor holds each frontend's sockets (one per worker slot) and
never accepts on them, so workers can be replaced a generation at a time
(SIGUSR2) without refusing a connection.  It also runs what must happen
once: health checks (states go to every worker), stats pages, the admin
API and command socket (the counters shown sum the workers' reports)::

    from lbkit.workers import WorkerSupervisor

    service = WorkerSupervisor.fromSiteFile("site.py", workers=4)
    service.setServiceParent(application)
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, Sequence

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

import lbkit
from lbkit._backend import Backend
from lbkit._listening import setPortSource
from lbkit._model import Server, ServerState
from lbkit._workerproc import (
    FIRST_FD,
    LineSplitter,
    SocketHolder,
    applyCounters,
    applyObservation,
    encode,
    purgeWorkers,
    statesOf,
    sumCounters,
)
from lbkit.config import Site, loadSite
from lbkit.error import ConfigError
from lbkit.interfaces import IServerListener
from lbkit.service import LoadBalancerService

__all__ = ["WorkerSupervisor", "WorkerProcess", "cpuCount"]

_log = Logger(namespace="lbkit")

#: Seconds a worker gets beyond the grace period to exit before it is killed.
KILL_AFTER = 10.0


def cpuCount() -> int:
    """The CPUs this process may run on (C{--workers auto})."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class WorkerProcess(ProcessProtocol):
    """
    One worker, seen from the supervisor.

    @ivar index: Its slot, 0 to C{workers - 1}; a replacement takes the same.
    @ivar generation: Which start or rolling restart created it.
    @ivar ready: Fires when it accepts connections; fails if it ends first.
    @ivar exited: Fires when the process has ended.
    @ivar counters: Its latest counter report.
    """

    def __init__(self, supervisor: WorkerSupervisor, index: int, generation: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.generation = generation
        self.pid: int | None = None
        self.isReady = False
        self.draining = False
        self.started = supervisor.reactor.seconds()
        self.ready: Deferred[WorkerProcess] = Deferred()
        self.exited: Deferred[None] = Deferred()
        self.counters: dict[str, Any] = {}
        self._replies: dict[int, Deferred[dict[str, Any]]] = {}
        self._asked = 0
        self._killer: Any = None
        self._out = LineSplitter(self._message)
        self._err = LineSplitter(self._logLine)

    def __repr__(self) -> str:
        return f"worker {self.index} (pid {self.pid})"

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # type: ignore[union-attr]
        self.send({"op": "states", "states": statesOf(self.supervisor.listen)})

    def send(self, message: dict[str, Any]) -> None:
        if self.transport is not None and self.pid is not None and not self.exited.called:
            self.transport.write(encode(message))

    def ask(self, message: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """Send C{message}; the L{Deferred} fires with the worker's reply to it."""
        if self.exited.called:
            return fail(ConfigError(f"{self} has ended"))
        self._asked += 1
        d: Deferred[dict[str, Any]] = Deferred()
        self._replies[self._asked] = d
        self.send({**message, "id": self._asked})
        return d

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        (self._out if childFD == 1 else self._err).feed(data)

    def _message(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            _log.warn("lbkit: {worker} wrote a line that is not a message: {line!r}", worker=self, line=line[:200])
            return
        op = message.get("op")
        if op == "counters":
            self.counters = message["counters"]
            self.supervisor.countersChanged()
        elif op == "ready":
            self.isReady = True
            self.ready.callback(self)
        elif op == "observe":
            applyObservation(self.supervisor.listen, message)
        elif op == "discovered":  # its discovery found servers: it gets the states the checks set
            self.send({"op": "states", "states": statesOf(self.supervisor.listen)})
        elif op == "failed":
            _log.error("lbkit: {worker} failed to start: {why}", worker=self, why=message.get("why"))
        waiting = self._replies.pop(message.get("id", 0), None)
        if waiting is not None:
            waiting.callback(message)

    def _logLine(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        if not text:
            return
        if "#error]" in text or "#critical]" in text or text.startswith("Traceback") or text.startswith("lbkit:"):
            _log.error("{worker}: {text}", worker=self, text=text)
        else:
            _log.info("{worker}: {text}", worker=self, text=text)

    def stop(self, grace: float | None) -> Deferred[None]:
        """Ask it to stop (SIGTERM: it stops accepting and drains); kill it if it outstays."""
        self.draining = True
        if not self.exited.called:
            self._signal("TERM")
            if self._killer is None or not self._killer.active():  # asked before: the first limit holds
                limit = (grace or 0.0) + KILL_AFTER
                self._killer = self.supervisor.reactor.callLater(limit, self._signal, "KILL")
        return self.exited

    def _signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)  # type: ignore[union-attr]
        except Exception:  # it ended meanwhile
            pass

    def processEnded(self, reason: Failure) -> None:  # type: ignore[override]
        if self._killer is not None and self._killer.active():
            self._killer.cancel()
        replies, self._replies = self._replies, {}
        for d in replies.values():
            d.errback(ConfigError(f"{self} ended"))
        if not self.ready.called:
            self.ready.errback(ConfigError(f"{self} ended before it was ready: {reason.value}"))
            self.ready.addErrback(lambda f: None)
        self.supervisor.workerEnded(self, reason)
        self.exited.callback(None)


@implementer(IServerListener)
class WorkerSupervisor(LoadBalancerService):
    """
    A site file run by C{workers} processes (see the module's docstring):
    a L{LoadBalancerService} whose L{reload} and L{reopenAccessLogs} reach
    the workers; L{restartWorkers} replaces them all without a gap.

    @param workers: How many worker processes.
    @param site: The loaded site file (required: each worker loads it too).
    @param workerSettings: Passed to each worker: C{accessLog} (a list of
        C{--access-log} strings), C{accessLogFormat}, C{syslogFormat},
        C{reactor} (C{"lean"} for L{lbkit.reactor}).
    """

    runsStores = False  # the workers run the stores, each with its own connections

    def __init__(
        self,
        listen: Sequence[Any],
        reactor: Any = None,
        *,
        workers: int,
        site: Site | None = None,
        workerSettings: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if site is None or not site.path:
            raise ConfigError("WorkerSupervisor runs a site file: give it site=lbkit.config.loadSite(path)")
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigError(f"workers must be a positive integer, not {workers!r}")
        LoadBalancerService.__init__(self, listen, reactor, site=site, **kwargs)
        self.workers = workers
        self.workerSettings = dict(workerSettings or {})
        self.holder: SocketHolder | None = None
        #: The workers of the current generation, by slot.
        self.processes: list[WorkerProcess] = []
        #: Workers of older generations that are draining.
        self.retiring: list[WorkerProcess] = []
        self.generation = 0
        #: Workers started again after they ended on their own.
        self.restarts = 0
        self._ended: dict[str, Any] = {}
        self._subscribed: set[int] = set()
        self._stopping = False
        self._restarting = False
        self._quickDeaths = 0
        self._respawns: list[Any] = []
        self._previousUsr2: Any = None
        self._previousSource: Any = None

    @classmethod
    def fromSiteFile(cls, path: str, reactor: Any = None, **kwargs: Any) -> WorkerSupervisor:
        """Load a site file and return its supervisor; C{kwargs} go to the constructor."""
        site = loadSite(path)
        return cls(site.listen, reactor, site=site, **kwargs)

    # -- starting and stopping -------------------------------------------

    def privilegedStartService(self) -> None:
        if self.holder is None:
            self._build()
            self.holder = SocketHolder(self.reactor, self.workers)
            self._previousSource = setPortSource(self.holder)
        try:
            LoadBalancerService.privilegedStartService(self)
        except Exception:
            setPortSource(self._previousSource)
            self.holder.closeAll()
            self.holder = None
            raise

    def startService(self) -> None:
        LoadBalancerService.startService(self)
        if self.installSignalHandlers:
            self._previousUsr2 = signal.signal(signal.SIGUSR2, self._sigusr2)
        self._subscribe()
        self.generation = 1
        self.processes = [self._spawn(i) for i in range(self.workers)]

    def bindSite(self) -> None:
        LoadBalancerService.bindSite(self)
        for item in self.listen:
            bindWorkers = getattr(item, "bindWorkers", None)
            if bindWorkers is not None:
                bindWorkers(self.workersView)
                item.bindRestarter(self.restartWorkers)
                item.bindPurger(lambda *args: purgeWorkers(self.processes, *args))  # (docs/cache.md)

    def _sigusr2(self, signum: int, frame: Any) -> None:
        _log.info("lbkit: SIGUSR2: starting new workers, then draining the old ones")
        self.reactor.callFromThread(lambda: self.restartWorkers().addErrback(lambda f: None))

    def stopService(self) -> Deferred[None]:
        self._stopping = True
        if self._previousUsr2 is not None:
            signal.signal(signal.SIGUSR2, self._previousUsr2)
            self._previousUsr2 = None
        for call in self._respawns:
            if call.active():
                call.cancel()
        self._respawns = []
        grace = self.effectiveGrace()
        everyone = self.processes + self.retiring
        exited = [p.stop(grace) for p in everyone]
        if self.holder is not None:
            self.holder.closeAll()  # the workers stop accepting on their copies now
        own = LoadBalancerService.stopService(self)
        d = gatherResults([own, *exited], consumeErrors=True)

        def done(result: object) -> None:
            setPortSource(self._previousSource)
            self.holder = None

        return d.addBoth(done)

    # -- workers ----------------------------------------------------------

    def _spawn(self, index: int) -> WorkerProcess:
        assert self.holder is not None and self.site is not None
        childFDs: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        sockets = []
        for i, (description, fd, family) in enumerate(self.holder.sockets(index)):
            childFDs[FIRST_FD + i] = fd
            sockets.append([description, FIRST_FD + i, int(family)])
        settings = {
            **self.workerSettings,
            "site": self.site.path,
            "workers": self.workers,
            "index": index,
            "sockets": sockets,
            "grace": self.grace,
            "defaultGrace": self.defaultGrace,
        }
        env = dict(os.environ)
        env["LBKIT_WORKER"] = json.dumps(settings)
        here = os.path.dirname(os.path.dirname(os.path.abspath(lbkit.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in [here, env.get("PYTHONPATH", "")] if p)
        process = WorkerProcess(self, index, self.generation)
        argv = [sys.executable, "-m", "lbkit._worker"]
        self.reactor.spawnProcess(process, sys.executable, argv, env=env, childFDs=childFDs)
        process.ready.addCallback(self._workerReady)
        return process

    def _workerReady(self, process: WorkerProcess) -> WorkerProcess:
        _log.info("lbkit: {worker} accepting connections", worker=process)
        self.workerStarted(process)
        return process

    def workerStarted(self, process: WorkerProcess) -> None:
        """
        Called when a worker accepts connections (at start, after a
        restart, and when one replaces a worker that ended); does nothing
        here: override it to watch them.
        """

    def workerEnded(self, process: WorkerProcess, reason: Failure) -> None:
        """Called when a worker process ends: a current one that ended on its own is replaced."""
        self._ended = sumCounters([process.counters], self._ended, gauges=False)
        process.counters = {}
        if process in self.retiring:
            self.retiring.remove(process)
            self.countersChanged()
            return
        if process not in self.processes:
            return
        current = not self._stopping and not process.draining
        if not current:
            self.countersChanged()
            return
        if not process.isReady and self._restarting:
            return  # restartWorkers sees it fail
        lived = self.reactor.seconds() - process.started
        delay = 0.0 if lived > 5.0 else min(30.0, 0.5 * 2 ** min(6, self._quickDeaths))
        self._quickDeaths = 0 if lived > 5.0 else self._quickDeaths + 1
        _log.error(
            "lbkit: {worker} ended ({why}); starting another in {delay:g}s",
            worker=process, why=str(reason.value), delay=delay,
        )
        self.restarts += 1

        def respawn() -> None:
            if self._stopping or process not in self.processes:
                return
            self.processes[self.processes.index(process)] = self._spawn(process.index)

        self._respawns = [c for c in self._respawns if c.active()]
        self._respawns.append(self.reactor.callLater(delay, respawn))
        self.countersChanged()

    def restartWorkers(self) -> Deferred[list[str]]:
        """
        Replace every worker: start a new generation on the code installed
        now and the site file as it is, and once all of them accept, drain
        the old ones (SIGUSR2).  The listening sockets never close, so no
        connection is refused.  If a new worker fails to start, the new
        ones stop and the old ones go on.

        @return: Fires once the new workers accept and the old ones were
            told to drain, with one line saying so.
        """
        if self._restarting:
            return self._failed(ConfigError("a restart of the workers is in progress"))
        if self._stopping or self.holder is None:
            return self._failed(ConfigError("the supervisor is not running"))
        self._restarting = True
        old = list(self.processes)
        self.generation += 1
        new = [self._spawn(i) for i in range(self.workers)]
        self.processes = new
        d = gatherResults([p.ready for p in new], consumeErrors=True)

        def started(result: object) -> list[str]:
            self._restarting = False
            self.retiring.extend(old)
            for process in old:
                process.stop(self.effectiveGrace())
            line = (
                f"workers restarted: generation {self.generation} "
                f"(pids {', '.join(str(p.pid) for p in new)}) accepts; "
                f"draining pids {', '.join(str(p.pid) for p in old) or 'none'}"
            )
            _log.info("lbkit: {line}", line=line)
            return [line]

        def failed(failure: Failure) -> Failure:
            self._restarting = False
            self.processes = old
            for process in new:
                process.stop(0)
            why = getattr(failure.value, "subFailure", failure).value
            return self._failed(ConfigError(f"new workers did not start, the old ones go on: {why}"))  # type: ignore[return-value]

        return d.addCallbacks(started, failed)

    def _failed(self, error: Exception) -> Deferred[list[str]]:
        _log.error("lbkit: {why}", why=str(error))
        return fail(error)

    # -- what reaches every worker ----------------------------------------

    def _subscribe(self) -> None:
        for backend in self.backends():
            if id(backend) not in self._subscribed:
                self._subscribed.add(id(backend))
                backend.addListener(self)

    def _broadcast(self, message: dict[str, Any]) -> None:
        for process in self.processes + self.retiring:
            process.send(message)

    def stateChanged(self, server: Server, old: ServerState, new: ServerState, reason: str) -> None:
        self._broadcastServer(server)

    def weightChanged(self, server: Server, old: int, new: int) -> None:
        self._broadcastServer(server)

    def _broadcastServer(self, server: Server) -> None:
        backend: Backend | None = server.backend
        if backend is not None:
            states = [[backend.name, server.name, server.state.value, server.weight, server.rampFactor]]
            self._broadcast({"op": "states", "states": states})

    def reload(self, path: str | None = None) -> Deferred[list[str]]:
        """
        Reload here (a bad file changes nothing anywhere), then in every
        worker; a reload that adds a listener restarts the workers
        instead (they must inherit its socket).
        """
        holder = self.holder
        before = holder.descriptions() if holder is not None else set()
        d = LoadBalancerService.reload(self, path)

        def applied(changes: list[str]) -> Deferred[list[str]]:
            self._subscribe()
            after = holder.descriptions() if holder is not None else set()
            if after - before:
                spread = self.restartWorkers()
            else:
                spread = self._reloadWorkers()

            def closeUnused(notes: list[str]) -> list[str]:
                for note in notes:
                    _log.info("lbkit: reload: {note}", note=note)
                if holder is not None:
                    holder.closeUnused()
                return changes + notes

            return spread.addCallback(closeUnused)

        return d.addCallback(applied)

    def _reloadWorkers(self) -> Deferred[list[str]]:
        def one(process: WorkerProcess) -> Deferred[str]:
            def answered(reply: dict[str, Any]) -> str:
                process.send({"op": "states", "states": statesOf(self.listen)})
                if reply.get("ok"):
                    return f"{process}: reloaded"
                return f"{process}: reload failed, it runs the previous site: {reply.get('why')}"

            return process.ask({"op": "reload"}).addCallbacks(answered, lambda f: f"{process}: {f.value}")

        return gatherResults([one(p) for p in self.processes])  # type: ignore[arg-type]

    def reopenAccessLogs(self) -> list[str]:
        results = LoadBalancerService.reopenAccessLogs(self)
        self._broadcast({"op": "reopen"})
        return results + [f"{len(self.processes)} workers told to reopen theirs"]

    # -- counters ---------------------------------------------------------

    def countersChanged(self) -> None:
        """Show the sum of the workers' counters on this process's objects (the stats pages)."""
        reports = [p.counters for p in self.processes + self.retiring if p.counters]
        applyCounters(self.listen, sumCounters(reports, self._ended))

    def collect(self) -> Deferred[None]:
        """Have every worker report its counters now; fires once all did (or ended)."""
        asked = [p.ask({"op": "report"}) for p in self.processes + self.retiring if p.isReady]
        return gatherResults(asked, consumeErrors=True).addBoth(lambda _: None)

    def workersView(self) -> list[dict[str, Any]]:
        """Each worker, for C{/stats.json}'s C{workers} (docs/stats.md)."""
        now = self.reactor.seconds()
        rows = []
        for process in self.processes + self.retiring:
            frontends = process.counters.get("frontends", {})
            factories = [f for fs in frontends.values() for f in fs]
            rows.append({
                "index": process.index,
                "pid": process.pid,
                "generation": process.generation,
                "state": "draining" if process.draining else ("ready" if process.isReady else "starting"),
                "uptime": max(0.0, now - process.started),
                "sessions": {
                    "current": sum(f.get("current", 0) for f in factories),
                    "total": sum(f.get("total", 0) for f in factories),
                },
                "requests": sum(f.get("requests", 0) for f in factories),
            })
        return rows
