"""
The contracts of what a site file runs besides its policies: a listener
(L{IListener}), a source of discovered servers (L{IServerSource}) and a
store of shared state (L{IStore}).  Documentation only, re-exported by
L{lbkit.interfaces}, where every contract of lbkit is found.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from lbkit._backend import Backend
    from lbkit._model import Server

__all__ = ["IServerSource", "IListener", "IStore"]


class IServerSource(Interface):
    """
    Where a backend's servers come from when the site file does not list
    them: given as C{Backend(name, servers=source)}.  lbkit's are
    L{lbkit.discovery.SRV} and L{lbkit.discovery.A} (DNS); one of yours
    (a Consul or Kubernetes watcher, a file) plugs in the same way.

    A source is configuration: the site file builds it and nothing runs
    until the balancer starts.  The backend starts with no servers (a
    connection then gets what it gets when every server is down: tcp
    mode closes it, http mode answers 503) until the first answer.
    """

    def makeService(reactor: Any, deliver: Callable[[Sequence[Server]], object]) -> Any:
        """
        Build the service that finds the servers, for one backend.

        Called by L{lbkit.service.LoadBalancerService} on the reactor
        thread, once per backend using this source, when it builds its
        service tree (and when a reload brings a source that is not
        L{sameAs} the running one).  The returned
        L{IService <twisted.application.service.IService>} is started and
        stopped with the balancer.  Its C{stopService} must cancel every
        timer and close every socket it opened, returning a L{Deferred}
        when that takes time; after it, C{deliver} must not be called.

        While running, the service calls C{deliver} on the reactor thread
        with the complete new list of servers each time the set changes:
        new L{lbkit.Server} objects, in no backend, of distinct names.  The
        names must follow from what was discovered (the same server has
        the same name in every answer, and in every process of
        C{--workers}): the backend keeps the state and counters of a server
        of the same name and address, adds the new ones and drains the
        ones no longer listed (L{lbkit.Backend.setServers}), and the health
        checks follow.  A failed lookup must not call C{deliver}: the last
        servers stay.  C{deliver} may raise L{lbkit.error.ConfigError}
        for a list that breaks these rules, changing nothing.

        @param reactor: The reactor to look up, connect and schedule with.
        @param deliver: What to call with each new list of servers.
        """

    def sameAs(other: Any) -> bool:
        """
        Whether C{other} (the source a reload loaded for the same backend)
        describes the same discovery: then the running service goes on and
        C{other} is not started; else the running one stops and one of
        C{other} starts.  Called on the reactor thread by
        L{lbkit.Backend.updateFrom}; must not raise.
        """


class IListener(Interface):
    """
    Something a site file puts in its C{listen} list: a frontend, a stats
    page, or any user object that listens on an endpoint.
    """

    endpoint = Attribute("The Twisted server endpoint string it listens on.")
    definedAt = Attribute("C{(filename, line)} where the object was created.")

    def makeService(reactor: Any) -> Any:
        """
        Build the L{twisted.application.service.IService} that listens when
        started and stops listening when stopped.

        Called on the reactor thread by L{lbkit.service.LoadBalancerService}
        when the site is loaded, and by a reload that adds or replaces the
        listener (while the old one still runs).  It must not listen yet:
        the service listens in C{privilegedStartService} or
        C{startService}.
        """

    def backends() -> Sequence[Backend]:
        """
        The backends this listener sends traffic to (may be empty).
        """


class IStore(Interface):
    """
    State shared by many lbkit processes (machines, or the workers of one
    machine): named tables of string keys and string values that expire,
    such as the stick tables of L{lbkit.persistence.StickySource}.
    L{lbkit.store.Redis} and L{lbkit.store.Local} provide it.

    A store answers from local state only: L{get} and L{set} never wait on
    the network, and L{set} writes through to the shared place in the
    background, when it can.  What other processes write arrives, some
    time later, as calls to the listeners given to L{watch}.  Every
    method is called on the reactor thread and returns at once; none
    raises because the shared place is unreachable.

    A L{lbkit.service.LoadBalancerService} calls L{start} once when it
    starts, for each store found as the C{store} attribute of its backends'
    persistence (once even if several backends share it), and L{stop} once
    when it stops or no backend uses the store any longer; a store shared
    by two services is started by each, and must count.
    """

    connected = Attribute("Whether the store reaches its shared place now (bool; always true for a local one).")
    errors = Attribute("How many times the shared place failed: lost connections, failed attempts, commands (int).")
    dropped = Attribute("How many writes were thrown away because the outgoing queue was full (int).")

    def start(reactor: Any) -> None:
        """
        Begin connecting, on C{reactor}.  Called by the service that runs
        the backends using the store; each call must be balanced by one
        L{stop}, and only the first one connects.
        """

    def stop() -> Deferred[None]:
        """
        Undo one L{start}; the last one closes every connection and cancels
        every timer.

        @return: Fires once nothing of the store is left on the reactor.
        """

    def get(table: str, key: str) -> str | None:
        """
        The live value of C{key} in C{table} known here, or C{None}: no
        network round trip.
        """

    def set(table: str, key: str, value: str, ttl: float) -> None:
        """
        Give C{key} in C{table} the value C{value} for C{ttl} seconds,
        here at once and in the shared place in the background (the shared
        copy expires there too).  It must not block: a store that cannot
        write now queues a bounded number of writes and counts in
        L{dropped} those it throws away.
        """

    def watch(table: str, listener: Callable[[str, str, float], None]) -> None:
        """
        Call C{listener(key, value, ttl)} for each entry of C{table} other
        processes write from now on, and for each live entry found in the
        shared place on (re)connecting (C{ttl}: the seconds it has left).
        A listener may also hear of writes made here; applying one again
        must do no harm.  The listener must not raise.
        """
