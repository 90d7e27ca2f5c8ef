"""
The contracts of lbkit: what a balancer, a health check, a persistence
strategy and a server-state listener must provide.

This module holds documentation only.  Every method is called on the
reactor thread; none may block.  Policy objects (balancers, checks,
persistence) never see a transport: the proxy protocols do the I/O and the
policies decide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from lbkit._model import Backend, Context, Server, ServerState

__all__ = [
    "IBalancer",
    "IHealthCheck",
    "IPersistence",
    "IServerListener",
    "IListener",
    "IRequestMatcher",
    "IHTTPPersistence",
]


class IBalancer(Interface):
    """
    Chooses the server for each new connection (tcp mode) or request (http
    mode).

    A L{Backend} calls L{pick} once per decision, on the reactor thread.  It
    must return promptly, never block, and never touch sockets.  A balancer
    may keep state between calls (a round-robin position, a hash ring); it
    may learn about server changes by also providing L{IServerListener},
    in which case the backend subscribes it.

    Optional: a balancer that reads C{Server.active} may define
    C{activeChanged(server)}, returning nothing.  The backend looks it up
    once, when created, and then calls it on the reactor thread right
    after each change of a server's C{active} count that it makes (a
    connection slot reserved by C{tryAcquire}, C{enqueue} or C{reacquire},
    or given back by C{release}), before anything else reads the count.
    It must be O(1) or O(log n).  A balancer relying on it must not trust
    it before the first call (until then the caller may be changing
    C{active} by hand, as tests do).
    """

    def pick(servers: Sequence[Server], context: Context) -> Server | None:
        """
        Choose one server.

        @param servers: The servers that may take this connection right
            now: usable (UP, or in slow start), with a free C{maxconn} slot,
            not already tried for this connection, in configuration order.
            Backup servers appear only when no normal server is usable.
            May be empty.
        @param context: What is known about the client at decision time:
            its address, and in http mode the request.
        @return: One of C{servers}, or L{None} when C{servers} is empty (or
            the balancer declines, which the backend treats as "no server").
        """


class IHealthCheck(Interface):
    """
    Probes one server and says whether it passed.

    A health monitor calls L{check} every C{interval} seconds per server and
    counts passes and failures: C{rise} consecutive passes bring a DOWN
    server UP, C{fall} consecutive failures take an UP server DOWN.  The
    check must not block: it returns a L{Deferred}.
    """

    interval = Attribute("Seconds between two checks of one server (float).")
    rise = Attribute("Consecutive passes needed to mark a server UP (int).")
    fall = Attribute("Consecutive failures needed to mark a server DOWN (int).")
    timeout = Attribute("Seconds a check may take before it counts as failed.")

    def check(server: Server, reactor: Any) -> Deferred[None]:
        """
        Probe C{server} once.

        Called by the health monitor on the reactor thread.

        @param server: The server to probe; its C{host} and C{port} say where.
        @param reactor: The reactor to connect and schedule with.
        @return: A L{Deferred} that fires with L{None} when the server
            passed, or fails with L{lbkit.error.CheckFailed} (or any other
            exception) saying why it did not.  The monitor cancels it after
            C{timeout} seconds; cancelling must abort the probe.
        """


class IPersistence(Interface):
    """
    Remembers which server a client used, and recalls it so the client
    stays on that server (session persistence, "stickiness").

    A L{Backend} asks L{recall} before its balancer; when it returns a
    server that can take the connection, the balancer is skipped.  After a
    server has been chosen by either way, the backend calls L{remember}.
    Both run on the reactor thread and must return promptly.
    """

    def recall(backend: Backend, context: Context) -> Server | None:
        """
        Find the server this client is stuck to, if any.

        @param backend: The backend choosing a server; its C{servers} is
            every configured server.
        @param context: The client's address (and request, in http mode).
        @return: A server of C{backend}, or L{None}.  The backend ignores a
            server that is DOWN or in MAINT and redispatches the client; a
            server in DRAIN still takes its sticky clients.
        """

    def remember(backend: Backend, server: Server, context: Context) -> None:
        """
        Record that C{context}'s client now uses C{server}.
        """


class IServerListener(Interface):
    """
    Told about changes to servers: state transitions and weight changes.
    Balancers, stats and health monitors subscribe through
    L{lbkit.Server.addListener} or L{lbkit.Backend.addListener}.  Each method
    is called on the reactor thread, after the change took effect.
    """

    def stateChanged(server: Server, old: ServerState, new: ServerState, reason: str) -> None:
        """
        C{server} went from C{old} to C{new} because of C{reason}.
        """

    def weightChanged(server: Server, old: int, new: int) -> None:
        """
        C{server}'s weight was changed at run time from C{old} to C{new}.
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
        """

    def backends() -> Sequence[Backend]:
        """
        The backends this listener sends traffic to (may be empty).
        """


class IRequestMatcher(Interface):
    """
    Decides whether an http route applies to a request (an ACL, in
    HAProxy's words).

    The http frontend calls L{matches} for each route in order, on the
    reactor thread, once the request head has arrived; the first route
    whose matcher says yes picks the backend.  It must return promptly.
    """

    def matches(request: Any, context: Context) -> bool:
        """
        @param request: The L{lbkit.http.Request}: C{method}, C{uri},
            C{path}, C{query}, C{headers}, C{header(name)}, C{host}.
        @param context: The client's address and frontend.
        @return: Whether the route applies.
        """


class IHTTPPersistence(IPersistence):
    """
    A persistence strategy that also rewrites http messages (cookies).

    The http frontend calls L{rewriteRequest} just before a request goes to
    its server and L{rewriteResponse} when the response head arrives, both
    on the reactor thread.
    """

    def rewriteRequest(backend: Backend, request: Any, context: Context) -> None:
        """
        Change C{request} (an L{lbkit.http.Request}) before the server sees
        it, e.g. strip the persistence cookie.
        """

    def rewriteResponse(backend: Backend, server: Server, response: Any, context: Context) -> None:
        """
        Change C{response} (an L{lbkit.http.Response}) before the client
        sees it, e.g. insert a C{Set-Cookie}.
        """
