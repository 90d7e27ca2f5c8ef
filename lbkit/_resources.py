# -*- test-case-name: tests.test_resources -*-
"""
Running out of local resources (file descriptors, socket memory, local
ports) is lbkit's trouble, not a server's.

  - L{resourceErrno} tells such a failure from a server's refusal or
    silence; L{lbkit._connect.connectFailed} then charges nothing to the
    server (HAProxy's C{SF_ERR_RESOURCE}, logged C{RC}).
  - L{guardAccept} makes a listening port stop accepting for
    L{ACCEPT_PAUSE} seconds when C{accept()} fails so, and try again
    (HAProxy pauses a listener for 100 ms, nginx for C{accept_mutex_delay}):
    clients wait in the kernel's backlog instead of being accepted and
    closed at once, as Twisted's own C{EMFILE} recovery does.
  - L{watch} logs one line when an episode starts, and one when a paused
    listener accepts again, however many accepts and connects failed in
    between.
"""

from __future__ import annotations

import errno
import time
from typing import Any, Callable

from twisted.internet.error import ConnectError
from twisted.logger import Logger

__all__ = ["ACCEPT_PAUSE", "resourceErrno", "guardAccept", "watch"]

_log = Logger(namespace="lbkit")

#: Seconds a listening port stops accepting after C{accept()} failed for
#: lack of a resource, before it tries again.
ACCEPT_PAUSE = 0.1

#: C{accept()} failures that mean this process or host ran out of something.
_ACCEPT_ERRNOS = frozenset([errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
#: C{socket()}/C{connect()} failures of the same kind, and no free local
#: port (HAProxy's "no free ports", C{CO_ER_FREE_PORTS}).
_CONNECT_ERRNOS = _ACCEPT_ERRNOS | {errno.EADDRNOTAVAIL}


def _fdLimit() -> str:
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return "?"
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


def _describe(number: int) -> str:
    if number == errno.EMFILE:
        return f"out of file descriptors (the process limit, ulimit -n {_fdLimit()}, is reached)"
    if number == errno.ENFILE:
        return "the system is out of file descriptors (fs.file-max is reached)"
    if number == errno.EADDRNOTAVAIL:
        return "out of local ports to connect from"
    return "out of socket memory"


def resourceErrno(value: object) -> int | None:
    """
    The errno of C{value}, a connect or socket error, if it means a local
    resource ran out (file descriptors, socket memory, local ports); else
    C{None}.

    Twisted reports a failed C{socket()} as
    L{twisted.internet.error.ConnectBindError} and a failed C{connect()} as
    a L{ConnectError}, both with the errno in C{osError}; a plain
    C{OSError} is read too.
    """
    number: Any
    if isinstance(value, ConnectError):
        number = value.osError
    elif isinstance(value, OSError):
        number = value.errno
    else:
        return None
    return number if isinstance(number, int) and number in _CONNECT_ERRNOS else None


class _Episode:
    def __init__(self, start: float) -> None:
        self.start = self.last = start
        self.count = 0


class ResourceWatch:
    """
    The process's record of resource exhaustion, for the log: one line when
    an episode starts (an error of a kind not seen for L{quiet} seconds),
    one when a paused listener accepts again.

    @ivar quiet: Seconds without an error of a kind that end its episode.
    """

    quiet = 10.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._episodes: dict[int, _Episode] = {}

    def exhausted(self, number: int, where: str) -> None:
        """
        C{where} (a frontend accepting, a server being connected to) failed
        with C{number}, an errno L{resourceErrno} accepts.
        """
        now = self._clock()
        episode = self._episodes.get(number)
        if episode is None or now - episode.last > self.quiet:
            episode = self._episodes[number] = _Episode(now)
            _log.error(
                "lbkit: {code}: {what} at {where}: listeners pause accepting for {pause:g}s at a time "
                "and retry; server connects failing for this are not the servers' fault (logged RC). "
                "Raise the limit or lower maxconn.",
                what=_describe(number), code=errno.errorcode.get(number, str(number)), where=where,
                pause=ACCEPT_PAUSE,
            )
        episode.last = now
        episode.count += 1

    def recovered(self, where: str) -> None:
        """A listener paused for an exhausted resource accepted a connection."""
        now = self._clock()
        for number in sorted(_ACCEPT_ERRNOS & self._episodes.keys()):
            episode = self._episodes.pop(number)
            _log.warn(
                "lbkit: {code} over, {where} accepts again: it lasted {seconds:.1f}s, "
                "{count} accepts or connects failed",
                code=errno.errorcode.get(number, str(number)), where=where,
                seconds=now - episode.start, count=episode.count,
            )

    def active(self) -> list[int]:
        """The errnos of the episodes going on (for tests and diagnostics)."""
        now = self._clock()
        return sorted(n for n, e in self._episodes.items() if now - e.last <= self.quiet)


#: The one record of this process: file descriptors are per process.
watch = ResourceWatch()


class _GuardedSocket:
    """
    Stands in for a listening port's socket, so that an C{accept()} failing
    for lack of a resource pauses the port and reads, to Twisted, as "no
    more clients" (C{EAGAIN}): nothing is accepted and closed.
    """

    def __init__(self, socket: Any, guard: _AcceptGuard) -> None:
        self._socket = socket
        self._guard = guard

    def accept(self) -> Any:
        try:
            pair = self._socket.accept()
        except OSError as e:
            if e.errno not in _ACCEPT_ERRNOS:
                raise
            self._guard.failed(e.errno)
            raise BlockingIOError(errno.EAGAIN, "accepting paused: " + (e.strerror or "")) from None
        if self._guard.pausedBefore:
            self._guard.accepted()
        return pair

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)


class _AcceptGuard:
    """Pauses one listening port while accepting fails for lack of a resource."""

    def __init__(self, port: Any, reactor: Any, label: str, records: ResourceWatch) -> None:
        self._port = port
        self._reactor = reactor
        self._label = label
        self._watch = records
        self._resume: Any = None
        #: Whether the port has paused since it last accepted.
        self.pausedBefore = False
        port.socket = _GuardedSocket(port.socket, self)

    def failed(self, number: int) -> None:
        self._watch.exhausted(number, self._label)
        self.pausedBefore = True
        if self._resume is None:
            self._port.stopReading()
            self._resume = self._reactor.callLater(ACCEPT_PAUSE, self._again)

    def accepted(self) -> None:
        self.pausedBefore = False
        self._watch.recovered(self._label)

    def _again(self) -> None:
        self._resume = None
        port = self._port
        if port.connected and not port.disconnecting:
            port.startReading()

    def stop(self) -> None:
        """The port stops listening: drop a pending resume."""
        if self._resume is not None:
            if self._resume.active():
                self._resume.cancel()
            self._resume = None


def guardAccept(port: Any, reactor: Any, label: str, records: ResourceWatch | None = None) -> _AcceptGuard | None:
    """
    Make C{port}, a Twisted TCP (or UNIX) listening port, pause accepting
    for L{ACCEPT_PAUSE} seconds whenever C{accept()} fails for lack of a
    resource.

    @param label: Names the listener in the log, e.g. C{"frontend web"}.
    @return: The guard (call its C{stop} when the port stops listening), or
        C{None} for a port this does not apply to.
    """
    from twisted.internet import tcp

    if not isinstance(port, tcp.Port) or getattr(port, "socket", None) is None:
        return None
    return _AcceptGuard(port, reactor, label, watch if records is None else records)
