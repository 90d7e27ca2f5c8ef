"""
The contracts of lbkit: what a balancer, a health check, a persistence
strategy, a header rule, a session, a server-state listener and a source
of discovered servers must provide.

This module holds documentation only.  Every method is called on the
reactor thread; none may block.  Policy objects (balancers, checks,
persistence, rules) never see a transport: the proxy protocols do the I/O
and the policies decide.

Optional methods and options are separate interfaces extending the basic
one (L{IActiveBalancer} extends L{IBalancer}, L{IHealthCheckOptions}
extends L{IHealthCheck}), so C{verifyObject} checks each object against
what it declares.  Those of live changes and explanations (a balancer's
C{explain} and C{adopt}, a persistence strategy's C{explainRecall},
C{adopt} and C{stickyClients}) are L{IExplainingBalancer},
L{IAdoptingBalancer}, L{IExplainingPersistence}, L{IAdoptingPersistence}
and L{IStickyCount} (docs/beyond.md).  L{lbkit.testing.assertProvides} does that in a test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from lbkit._backend import Backend
    from lbkit._model import Context, Server, ServerState

# the contracts of what a site runs beside its policies, defined there
# the optional contracts of live changes and explanations (docs/beyond.md)
from lbkit._livecontracts import (
    IAdoptingBalancer,
    IAdoptingPersistence,
    IExplainingBalancer,
    IExplainingPersistence,
    IHashingBalancer,
    IStickyCount,
)
from lbkit._sitecontracts import IListener, IServerSource, IStore

__all__ = [
    "IBalancer",
    "IActiveBalancer",
    "IExplainingBalancer",
    "IAdoptingBalancer",
    "IHashingBalancer",
    "IHealthCheck",
    "IHealthCheckOptions",
    "IPersistence",
    "IStickyCount",
    "IExplainingPersistence",
    "IAdoptingPersistence",
    "IServerListener",
    "IServerSource",
    "IListener",
    "IRequestMatcher",
    "IHTTPPersistence",
    "IRequestRule",
    "IAnsweringRule",
    "IConnectionRule",
    "ISession",
    "IStore",
]


class IBalancer(Interface):
    """
    Chooses the server for each new connection (tcp mode) or request (http
    mode).

    A L{Backend} calls L{pick} once per decision, on the reactor thread.  It
    must return promptly, never block, and never touch sockets.  A balancer
    may keep state between calls (a round-robin position, a hash ring); it
    may learn about server changes by also providing L{IServerListener},
    in which case the backend subscribes it (before any other listener of
    the backend).  A balancer that reads C{Server.active} and wants to hear
    of each change of it provides L{IActiveBalancer}.  Optionally it says
    why it picked (L{IExplainingBalancer}) and takes over its predecessor's
    state when swapped in (L{IAdoptingBalancer}).
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
        @return: One of C{servers}, or C{None} when C{servers} is empty (or
            the balancer declines, which the backend treats as "no server").
        """


class IActiveBalancer(IBalancer):
    """
    A balancer that is told of every change a L{Backend} makes to a
    server's C{active} count, so it can keep a structure ordered by load
    (the built-in C{LeastConn}, C{ShortestExpectedDelay} and C{NeverQueue}
    keep a min-tree) instead of scanning the servers at each pick.

    The backend checks for this interface once, when it is created (and
    again when a reload hands it a new balancer).  For compatibility, a
    balancer that only declares L{IBalancer} but has an C{activeChanged}
    method is still called, with a C{DeprecationWarning} at backend
    creation: declare C{@implementer(IActiveBalancer)}.
    """

    def activeChanged(server: Server) -> None:
        """
        C{server.active} has just changed.

        Called by the backend on the reactor thread right after each change
        of the count that it makes: a connection slot reserved by
        C{tryAcquire}, C{enqueue} or C{reacquire}, or given back by
        C{release}; before anything else reads the count (so before the
        next L{pick}).  It must be O(1) or O(log n), must not raise (an
        exception propagates into the proxy that took or gave back the
        slot), and must not call back into the backend.

        A balancer relying on it must not trust it before the first call:
        until then the caller may be changing C{active} by hand, as tests
        of a balancer used on its own do.

        @param server: The server whose count changed; read the new value
            from C{server.active}.
        """


class IHealthCheck(Interface):
    """
    Probes one server and says whether it passed.

    A health monitor calls L{check} every C{interval} seconds per server and
    counts passes and failures: C{rise} consecutive passes bring a DOWN
    server UP, C{fall} consecutive failures take an UP server DOWN.  The
    check must not block: it returns a L{Deferred}.

    The monitor reads every attribute once, when it is created.  The
    further options of L{IHealthCheckOptions} are optional: the monitor
    reads each one the check has (and is not C{None}), and uses the
    documented default for the others.
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
        @return: A L{Deferred} that fires with C{None} when the server
            passed, or fails with L{lbkit.error.CheckFailed} (or any other
            exception) saying why it did not.  The monitor cancels it after
            C{timeout} seconds; cancelling must abort the probe.
        """


class IHealthCheckOptions(IHealthCheck):
    """
    A health check that states every timing and passive-check option the
    monitor honours, as L{lbkit.health.BaseCheck} (and so every built-in
    check) does.

    Each option may also be given alone by a check that provides only
    L{IHealthCheck}: the monitor reads it with a default when missing or
    C{None}.  Values are the ones L{lbkit.health.BaseCheck} validates.
    """

    fastinter = Attribute(
        "Seconds between checks while a server is changing state (UP with some"
        " failures, DOWN with some passes, or just marked down by live"
        " traffic) (float).  Default: C{interval}."
    )
    downinter = Attribute("Seconds between checks of a server that is fully DOWN (float).  Default: C{interval}.")
    spread = Attribute(
        "Random jitter applied to every interval, a fraction from 0 to 0.5 (float).  Default: 0."
    )
    initState = Attribute(
        "Where a server starts: C{'up'} (UP, the first failure takes it DOWN),"
        " C{'fully-up'}, C{'down'} (DOWN, the first pass brings it UP) or"
        " C{'fully-down'} (str).  Default: C{'up'}."
    )
    observe = Attribute(
        "Passive checks of live traffic: C{None} (ignore it), C{'layer4'}"
        " (count failed connects) or C{'layer7'} (also 5xx responses)."
        "  Default: C{None}."
    )
    errorLimit = Attribute("Consecutive live-traffic errors that trigger C{onError} (int).  Default: 10.")
    onError = Attribute(
        "What C{errorLimit} errors do: C{'mark-down'}, C{'fail-check'},"
        " C{'sudden-death'} or C{'fastinter'} (str).  Default: C{'mark-down'}."
    )
    backoff = Attribute(
        "Seconds to wait, after live traffic marked a server DOWN, before the"
        " first re-test (float).  Default: 0 (re-test after C{fastinter})."
    )
    onMarkedDown = Attribute(
        "C{'shutdown-sessions'} to call L{ISession.abortSession} on every"
        " session of a server its checks mark DOWN, or C{None} (sessions run"
        " on).  Default: C{None}."
    )
    passReason = Attribute("The reason shown when a check passes (str).  Default: C{'Check passed'}.")


class IPersistence(Interface):
    """
    Remembers which server a client used, and recalls it so the client
    stays on that server (session persistence, "stickiness").

    A L{Backend} asks L{recall} before its balancer; when it returns a
    server that can take the connection, the balancer is skipped.  After a
    server has been chosen by either way, the backend calls L{remember}.
    Both run on the reactor thread and must return promptly.  Optionally
    a strategy says why it recalled nothing (L{IExplainingPersistence}),
    takes over its predecessor's entries (L{IAdoptingPersistence}) and
    lists a server's sticky clients (L{IStickyCount}).
    """

    def recall(backend: Backend, context: Context) -> Server | None:
        """
        Find the server this client is stuck to, if any.

        @param backend: The backend choosing a server; its C{servers} is
            every configured server.
        @param context: The client's address (and request, in http mode).
        @return: A server of C{backend}, or C{None}.  The backend ignores a
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
    L{lbkit.Server.addListener} or L{lbkit.Backend.addListener};
    L{lbkit.ServerListenerMixin} gives no-op methods to override.

    Each method is called on the reactor thread, synchronously from the
    call that made the change (L{lbkit.Server.setState},
    L{lbkit.Server.setWeight}, L{lbkit.Server.setRampFactor}), after the
    change took effect: C{server.state}, C{server.weight} and
    C{server.effectiveWeight} already hold the new values.

    Order: a server's listeners are called in the order they subscribed,
    over a copy of the list (one added during a call is told from the next
    change on; one removed during a call is still told of this one).  The
    L{lbkit.Backend} a server belongs to subscribed to it first, when the
    backend was created: it recomputes L{lbkit.Backend.eligible}, tells
    its own listeners (the balancer first when it listens, then the others
    in subscription order), then hands freed capacity to queued
    connections; only then are the server's other listeners (its health
    monitor, listeners added with C{Server.addListener}) told.  So a
    listener of the backend already sees the new eligible list.

    Raising: a listener must not raise.  Nothing guards the calls: the
    exception propagates to whoever changed the server (the health
    monitor, the admin API, a reload) and the listeners after it are not
    told of that change.

    Re-entrancy: a listener must not change a server's state or weight
    from inside a call.  Such a change is published at once, nested inside
    the first: the listeners after it would hear of the second change
    before the first.  Schedule the change instead
    (C{clock.callLater(0, ...)}, as the health monitor does when an
    operator ends a maintenance).
    """

    def stateChanged(server: Server, old: ServerState, new: ServerState, reason: str) -> None:
        """
        C{server} went from C{old} to C{new} (never equal) because of
        C{reason} (free text for logs, possibly empty).
        """

    def weightChanged(server: Server, old: int, new: int) -> None:
        """
        C{server}'s weight was changed at run time from C{old} to C{new}.

        A slow-start ramp step is also reported here, with C{old == new}:
        the weight did not change but C{server.effectiveWeight} (weight
        times C{server.rampFactor}) did.  A listener using
        C{effectiveWeight} must treat that call as a change.
        """


class IRequestMatcher(Interface):
    """
    Decides whether an http route applies to a request (an ACL, in
    HAProxy's words).

    The http frontend calls L{matches} for each route in order, on the
    reactor thread, once the request head has arrived; the first route
    whose matcher says yes picks the backend.  It must return promptly.
    The same matchers decide the C{when=} of request rules.

    A matcher with a true C{clientOnly} attribute reads only
    C{context.client} (L{lbkit.http.sourceIn}, and L{lbkit.http.allOf} and
    friends of such matchers): only those may decide tcp-mode rules, which
    call L{matches} with C{None} for C{request}.
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
    its server (once per request, however many connections it is tried on)
    and L{rewriteResponse} when the final response head arrives, both on
    the reactor thread, for a backend's C{persistence} that provides this
    interface (C{IHTTPPersistence.providedBy}; a strategy that only has
    the methods is not called).
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


class IRequestRule(Interface):
    """
    Changes an http request on its way to its server and the response on
    its way back: HAProxy's C{http-request} and C{http-response} rules.
    The built-ins are L{lbkit.http.addHeader}, L{lbkit.http.setHeader} and
    L{lbkit.http.deleteHeader}; a frontend and each route take them in
    C{requestRules} and C{responseRules}.

    Both methods are called on the reactor thread, must return promptly
    and must not block.  A rule changes the message it is given in place
    and does no I/O: a request through its C{setHeader}, C{addHeader} and
    C{removeHeader} methods (which keep its header lookups right), a
    response by editing C{headers}, a list of C{[name, value]} lists of
    bytes.  A rule must not raise: an exception is logged, and the request
    fails or its connection is dropped.

    The second argument of each method is the I{exchange}: the object
    carrying this request and its response, over HTTP/1.1 or HTTP/2 alike
    (C{lbkit.http._exchange.Exchange}).  A rule may read only these
    attributes of it, and must not change them or call anything on it:

      - C{client}: the client's address (after any PROXY protocol header);
      - C{frontend}: the L{lbkit.http.Frontend} that accepted it (read its
        C{name});
      - C{backend}: the L{lbkit.Backend} the request was routed to;
      - C{server}: the L{lbkit.Server} chosen for it;
      - C{request}: the L{lbkit.http.Request} being proxied.
    """

    def applyToRequest(request: Any, exchange: Any) -> None:
        """
        Change C{request} (an L{lbkit.http.Request}) before its head is
        written to the server.

        Called after the server was chosen and a connection to it is
        ready (so C{exchange.server} is set): the frontend's rules first,
        then those of the route that matched; a persistence strategy's
        C{rewriteRequest} runs after them.  Once per request: a request
        retried on another connection (a kept-alive one the server had
        closed, or another server) is sent with the head built the first
        time: the rules see only the first server chosen for it.
        """

    def applyToResponse(response: Any, exchange: Any) -> None:
        """
        Change C{response} (an L{lbkit.http.Response}) before its head is
        written to the client.

        Called once per final response head from the server (not for 1xx
        interim responses, a C{101} upgrade, or the error responses lbkit
        writes itself): after a persistence strategy's
        C{rewriteResponse}, the matched route's rules first, then the
        frontend's.
        """


class IAnsweringRule(IRequestRule):
    """
    A request rule that may answer the request from the balancer, or
    change what routing sees (its path and query), before any server is
    chosen: HAProxy's C{http-request deny}, C{tarpit}, C{redirect},
    C{return}, C{set-path}.  The built-ins are L{lbkit.http.deny},
    L{lbkit.http.tarpit}, L{lbkit.http.redirect},
    L{lbkit.http.redirectScheme}, L{lbkit.http.redirectPrefix},
    L{lbkit.http.respond}, L{lbkit.http.setPath},
    L{lbkit.http.replacePath} and L{lbkit.http.setQuery}.

    It is an L{IRequestRule} too: it sits in the same C{requestRules}
    lists, and its C{applyToRequest} and C{applyToResponse} are called as
    any rule's are (a rule that only answers makes them do nothing).

    Which rules answer is read when the L{lbkit.http.Frontend} (and each
    L{lbkit.http.Route}) is built: a frontend with none pays nothing per
    request for them.
    """

    def answerRequest(request: Any, exchange: Any) -> Any:
        """
        Look at C{request} (an L{lbkit.http.Request}) and answer it, change
        it, or let it go on.

        Called on the reactor thread once the request head has arrived:
        the frontend's answering rules in their order, before the request
        is routed (so a changed path is what routing sees); then, once it
        is routed, those of its route.  The first rule that returns an
        answer ends the list; no server is chosen for the request.  The
        rule may read the attributes of C{exchange} an L{IRequestRule} may
        (C{client}, C{frontend}, C{request}, and C{context}, what the
        matchers take; C{backend} only for a route's rules).  It must not
        block, and must not raise: an exception is logged and the request
        is dropped (termination C{IC}).

        @return: C{None} to go on with the next rule, or an
            L{lbkit.http.Answer}: what the balancer answers.
        """


class IConnectionRule(Interface):
    """
    A tcp-mode rule, looked at once per accepted connection: HAProxy's
    C{tcp-request connection reject}.  The built-in is
    L{lbkit.tcp.reject}; an L{lbkit.tcp.Frontend} takes them in C{rules}.
    """

    def rejects(context: Context) -> bool:
        """
        Whether to close the connection at once, before any server is
        chosen.

        Called on the reactor thread when the client's address is known
        (after any PROXY protocol header), the frontend's rules in order
        until one says yes.  It must return promptly and must not raise.

        @param context: The client's address (C{client}) and frontend.
        """


class ISession(Interface):
    """
    A live connection through a server, kept in that server's
    C{Server.sessions} so it can be shut down with it.

    A tcp frontend's connection (L{lbkit.tcp.TCPFrontendProtocol}) adds
    itself once its server connection is made and removes itself when it
    ends.  An http request is one from when it goes to its server
    connection until its exchange ends: as its HTTP/1.1 connection
    (L{lbkit.http.HTTPFrontendProtocol}, whose C{abortSession} aborts both
    connections) or as its HTTP/2 stream (which resets only the stream).  A session added by other code must do the same:
    add itself to C{server.sessions}, and discard itself when its
    connections are lost.
    """

    def abortSession() -> None:
        """
        End this session now: abort both its connections (the client's and
        the server's), throwing away what is buffered.

        Called on the reactor thread by the health monitor when the checks
        mark the server DOWN and its check says
        C{onMarkedDown="shutdown-sessions"}, after the DOWN state was
        published; the caller iterates over a copy of C{server.sessions},
        so the session may leave the set at once or later, when its
        connections are lost.  It must not raise, and a second call must do
        no harm.
        """
