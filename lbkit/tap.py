# -*- test-case-name: tests.test_tap -*-
"""
C{twistd lbkit}: options and service maker.

The site file is loaded and checked while the options are parsed, before
twistd starts logging or anything listens, so a bad file ends the process
with one line on standard error::

    lbkit: site.py:12: cannot parse server address 'app1': expected 'host:port'
"""

from __future__ import annotations

import select
import sys
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from lbkit._heap import trimHeap
from lbkit.config import checkGrace, loadSite
from lbkit.error import ConfigError
from lbkit.logs import parseDestination
from lbkit.reactor import LeanEPollReactor
from lbkit.reactor import install as installLean
from lbkit.service import ListenFailed, LoadBalancerService
from lbkit.workers import WorkerSupervisor, cpuCount

__all__ = ["Options", "makeService", "describeSite", "DEFAULT_GRACE"]

#: Seconds C{twistd lbkit} lets connections finish on SIGTERM when neither
#: C{--grace} nor the site file's C{grace} says.
DEFAULT_GRACE = 30.0


class Options(usage.Options):
    """
    The options of C{twistd lbkit}.
    """

    synopsis = "--config site.py"
    longdesc = (
        "Run the load balancer described by a site file.  The site file is "
        "ordinary Python: it builds servers (lbkit.Server), backends "
        "(lbkit.Backend) and frontends (lbkit.tcp.Frontend), and lists what "
        "to start in a module-level list named `listen`, for example:\n\n"
        "    twistd -n lbkit --config examples/demo.py\n\n"
        "The file is checked before anything listens: a mistake in it stops "
        "start-up with one line naming the file, the line and the problem.  "
        "Every name a site file may use is described in docs/config.md.  "
        "SIGHUP reloads the site file; SIGUSR1 reopens the access-log files; "
        "SIGTERM stops accepting and lets connections finish for up to "
        "--grace seconds (docs/operations.md).  --workers N runs N processes "
        "on the same sockets; SIGUSR2 then replaces them all without a gap "
        "(docs/workers.md).  --check loads and checks the site file, says "
        "what would listen, and exits."
    )
    optFlags = [
        [
            "check",
            None,
            "Load and check the site file (its names, addresses, endpoints, certificates "
            "and other files), print what would listen, and exit: 0 if it is good, 1 if "
            "not.  Binds nothing (as haproxy -c).",
        ],
    ]
    optParameters = [
        [
            "config",
            "c",
            None,
            "The site file to run: Python that defines `listen`, the list of frontends (required).",
        ],
        [
            "grace",
            None,
            None,
            "Seconds connections in flight may take to finish on SIGTERM "
            "(default: the site file's `grace`, else 30).",
        ],
        [
            "workers",
            None,
            "1",
            "Worker processes accepting on the same sockets: a positive integer, "
            "or auto (one per CPU); 1 runs everything in this process (docs/workers.md).",
        ],
        [
            "access-log-format",
            None,
            "text",
            "Format of the --access-log destinations: text or json.",
        ],
        [
            "access-log-syslog-format",
            None,
            "rfc3164",
            "Framing of the --access-log syslog destinations: rfc3164 or rfc5424.",
        ],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["access-log"] = []

    def opt_access_log(self, destination: str) -> None:
        """
        Send access-log lines to DESTINATION instead of the site file's
        `accessLog`: a file path, - (standard output), log (twistd's log),
        syslog (/dev/log), syslog:/path/to/socket or syslog:host:port.
        May be given more than once.
        """
        self["access-log"].append(destination)

    def postOptions(self) -> None:
        path = self["config"]
        if not path:
            raise usage.UsageError("--config is required: the site file to run")
        if self["grace"] is not None:
            try:
                self["grace"] = checkGrace(float(self["grace"]), "--grace")
            except ValueError:
                raise usage.UsageError(f"--grace must be a number of seconds, not {self['grace']!r}") from None
        self["workers"] = _parseWorkers(self["workers"])
        if self["access-log-format"] not in ("text", "json"):
            raise usage.UsageError("--access-log-format must be text or json")
        if self["access-log-syslog-format"] not in ("rfc3164", "rfc5424"):
            raise usage.UsageError("--access-log-syslog-format must be rfc3164 or rfc5424")
        try:
            self["accessLog"] = [
                parseDestination(d, self["access-log-format"], self["access-log-syslog-format"])
                for d in self["access-log"]
            ] or None
            self["site"] = loadSite(path)
        except ConfigError as e:
            raise SystemExit(f"lbkit: {e}") from None
        if self["check"]:
            sys.stdout.write(describeSite(path, self["site"], self["workers"]))
            sys.stdout.flush()
            raise SystemExit(0)


def describeSite(path: str, site: Any, workers: int = 1) -> str:
    """
    What C{--check} prints: the site file is good, what would listen where,
    and each backend's servers.
    """
    lines = [f"{path}: OK ({len(site.listen)} listeners" + (f", {workers} workers" if workers > 1 else "") + ")"]
    backends: list[Any] = []
    for item in site.listen:
        endpoint = getattr(item, "endpoint", None)
        found = list(getattr(item, "backends", lambda: [])())
        line = f"  {_label(item)}" + (f" on {endpoint}" if endpoint else "")
        if found:
            line += " -> " + ", ".join(b.name for b in found)
        lines.append(line)
        backends.extend(b for b in found if b not in backends)
    for backend in backends:
        balance = getattr(backend.balance, "name", None) or type(backend.balance).__name__
        servers = ", ".join(
            f"{s.name} {s.address}" + (" backup" if s.backup else "") for s in backend.servers
        )
        lines.append(f"  backend {backend.name} ({balance}): {servers or 'no servers yet'}")
    return "\n".join(lines) + "\n"


def _label(item: Any) -> str:
    """C{http frontend web}, C{stats page}, C{HelloServer web1}: what a listen item is."""
    cls = type(item)
    parts = cls.__module__.split(".")
    if cls.__name__ == "Frontend" and parts[0] == "lbkit" and len(parts) > 1:
        kind = f"{parts[1]} frontend"
    elif cls.__name__ == "Page" and parts[:2] == ["lbkit", "stats"]:
        kind = "stats page"
    else:
        kind = cls.__name__
    name = getattr(item, "name", None)
    return f"{kind} {name}" if isinstance(name, str) and name else kind


def _parseWorkers(text: str) -> int:
    if text == "auto":
        return cpuCount()
    try:
        workers = int(text)
    except ValueError:
        workers = 0
    if workers < 1:
        raise usage.UsageError(f"--workers must be a positive integer or auto, not {text!r}")
    return workers


class _ForegroundService(LoadBalancerService):
    """
    Under C{twistd -n}, a port that cannot be listened on ends start-up
    with one line instead of a traceback.

    (Only in the foreground: a daemonizing twistd waits for its child to
    report start-up through a pipe, which only an C{Exception} fills; a
    C{SystemExit} there would leave the parent waiting for ever.  The
    daemon's parent prints the L{ListenFailed} message instead.)
    """

    def privilegedStartService(self) -> None:
        try:
            LoadBalancerService.privilegedStartService(self)
        except (ListenFailed, ConfigError) as e:
            raise SystemExit(f"lbkit: {e}") from None


class _ForegroundSupervisor(WorkerSupervisor):
    """L{_ForegroundService}'s one-line start-up failure, for C{--workers}."""

    def privilegedStartService(self) -> None:
        try:
            WorkerSupervisor.privilegedStartService(self)
        except (ListenFailed, ConfigError) as e:
            raise SystemExit(f"lbkit: {e}") from None


def _installLeanReactor() -> None:
    """
    Make L{lbkit.reactor.LeanEPollReactor} the reactor of C{twistd lbkit}
    when nothing chose one (no C{--reactor}) and epoll exists: it spends
    less CPU per I/O event (docs/operations.md).  C{--reactor=epoll} (or
    any other) keeps Twisted's choice.
    """
    if "twisted.internet.reactor" in sys.modules or not hasattr(select, "epoll"):
        return
    installLean()


def makeService(options: Any) -> IService:
    """
    Build the service for the loaded site file: it reloads on SIGHUP and
    gives connections a grace period (default 30 seconds) on SIGTERM.
    """
    _installLeanReactor()
    from twisted.internet import reactor

    reactor.callWhenRunning(trimHeap)  # start-up's garbage back to the system (lbkit._heap)

    parent = getattr(options, "parent", None)
    foreground = parent is None or bool(parent.get("nodaemon"))
    site = options["site"]
    workers = options.get("workers", 1)
    if workers > 1:
        supervisorClass = _ForegroundSupervisor if foreground else WorkerSupervisor
        return supervisorClass(
            site.listen,
            reactor,
            workers=workers,
            site=site,
            grace=options.get("grace"),
            accessLog=options.get("accessLog"),
            defaultGrace=DEFAULT_GRACE,
            installSignalHandlers=True,
            workerSettings={
                "accessLog": list(options.get("access-log", [])),
                "accessLogFormat": options.get("access-log-format", "text"),
                "syslogFormat": options.get("access-log-syslog-format", "rfc3164"),
                "reactor": "lean" if isinstance(reactor, LeanEPollReactor) else "default",
            },
        )
    serviceClass = _ForegroundService if foreground else LoadBalancerService
    return serviceClass(
        site.listen,
        reactor,
        site=site,
        grace=options.get("grace"),
        accessLog=options.get("accessLog"),
        defaultGrace=DEFAULT_GRACE,
        installSignalHandlers=True,
    )
