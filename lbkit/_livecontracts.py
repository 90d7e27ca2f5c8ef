"""
The optional contracts of live changes and explanations (docs/beyond.md):
a balancer or persistence strategy that says why it decided
(L{IExplainingBalancer}, L{IExplainingPersistence}), that takes over its
predecessor's state when swapped in at run time (L{IAdoptingBalancer},
L{IAdoptingPersistence}), and a persistence strategy that counts the
clients stuck to a server (L{IStickyCount}).  Documentation only,
re-exported by L{lbkit.interfaces}, where every contract of lbkit is found.

Each extends L{IBalancer} or L{IPersistence}: a strategy declares the
ones it provides, and the backend checks C{providedBy} once, when it is
given the strategy (never per request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from zope.interface import Interface

if TYPE_CHECKING:
    from lbkit._backend import Backend
    from lbkit._model import Context, Server

__all__ = [
    "IExplainingBalancer",
    "IAdoptingBalancer",
    "IStickyCount",
    "IExplainingPersistence",
    "IAdoptingPersistence",
    "IHashingBalancer",
]


class IExplainingBalancer(Interface):
    """
    A balancer (an L{lbkit.interfaces.IBalancer}) that says, in one short
    phrase, why it picked a server: C{"leastconn: s2 had 3 active, s1 4"},
    C{"uri hash 0x3f2a... -> s1"}, C{"first: s1 full"}.  Every built-in
    balancer provides it.

    Called only when someone asked for explanations (a frontend with
    C{explain=True}, the C{explain} command): nothing calls it otherwise.
    """

    def explain(servers: Sequence[Server], context: Context, chosen: Server | None) -> str:
        """
        Why C{chosen} was picked.

        Called by the backend on the reactor thread right after
        C{pick(servers, context)} returned C{chosen}, before the backend
        reserves a slot on it (so C{Server.active} still holds the values
        the pick saw).  It must not change the balancer's state, must
        return promptly and must not raise.

        @param servers: What C{pick} was given.
        @param chosen: What it returned.
        @return: One line, without a newline, starting with the
            algorithm's name.
        """


class IAdoptingBalancer(Interface):
    """
    A balancer that can take over the state of the one it replaces when a
    backend swaps balancers at run time (L{lbkit.Backend.setBalancer}, or a
    reload): a round robin its credits, a consistent-hash ring its points,
    a least-connections balancer its live load tree.
    """

    def adopt(previous: Any) -> bool:
        """
        Take what is useful of C{previous}, the balancer in use until now.

        Called by the backend on the reactor thread, once, before this
        balancer's first C{pick} and before C{previous} stops being used
        (no request is being chosen meanwhile).  It may read C{previous}'s
        state and take objects from it (C{previous} is never called again);
        it must not raise for a C{previous} it does not understand: it
        returns C{False}.

        @return: Whether it took anything (for the change log).
        """


class IStickyCount(Interface):
    """
    A persistence strategy (an L{lbkit.interfaces.IPersistence}) that
    knows how many clients are stuck to a server, so that
    L{lbkit.Server.drain} waits for the last one and
    L{lbkit.Backend.preview} lists who would move.  The built-in
    L{lbkit.persistence.StickySource} provides it; a cookie strategy
    cannot (the clients hold the cookies).
    """

    def stickyClients(backend: Backend, server: Server) -> list[str]:
        """
        The clients (as text: an address, a key) whose live, unexpired
        entry names C{server} of C{backend}.

        Called on the reactor thread by a drain, about twice a second
        while it waits, and by a preview; may take time linear in the
        size of the table but must not block.
        """


class IExplainingPersistence(Interface):
    """
    A persistence strategy that says why it recalled no server for a
    client: no cookie, a cookie naming no server (forged, or of a server
    since removed), an entry expired.  The built-ins provide it.
    """

    def explainRecall(backend: Backend, context: Context) -> str:
        """
        What C{recall(backend, context)} is about to find, in one phrase.

        Called on the reactor thread just before C{recall}, only when
        explanations are asked for; it must not change anything (not even
        drop an expired entry) and must not raise.
        """


class IAdoptingPersistence(Interface):
    """
    A persistence strategy that takes over the entries of the one it
    replaces (L{lbkit.Backend.setPersistence}, a reload), so sticky
    clients stay where they are.  Without it (or when L{adopt} says
    C{False}) the backend keeps asking the previous strategy for the
    clients the new one does not know, so they stay all the same.
    """

    def adopt(previous: Any) -> bool:
        """
        Take C{previous}'s entries.

        Called by the backend on the reactor thread, once, before this
        strategy's first C{recall}.  It must not raise for a C{previous}
        it does not understand: it returns C{False}.

        @return: Whether it took them all (then C{previous} is dropped).
        """


class IHashingBalancer(Interface):
    """
    A balancer that maps keys (a path, an address) to servers through a
    table built from the servers' names and weights (the built-in C{URI},
    C{Source}, C{Header}, C{URLParam}), so that
    L{lbkit.Backend.preview} can say which share of the keys would move
    if the servers changed.
    """

    def keyTable(servers: Sequence[Any]) -> Callable[[int], Any]:
        """
        The lookup of a table built as this balancer would build it for
        C{servers} (objects with C{name} and C{weight}, real servers or
        stand-ins), without touching the balancer's own table: it maps a
        64-bit key hash to one of C{servers} (or C{None} when there is
        none).  Called by a preview, on the reactor thread.
        """
