# -*- test-case-name: tests.test_dispatch -*-
"""
Getting a server connection for one client connection (tcp mode) or one
request (http mode): choose a server, wait in the backend's queue when all
are full, connect, and retry on another server when the connect fails.
Both modes only adapt the result of a L{Dispatch}: tcp mode through the
L{Deferred} of L{Dispatch.start}, http mode (one dispatch per request, the
pooled connections first) through callbacks with L{Dispatch.run}, which
costs no L{Deferred} when a kept-alive connection is at hand, and reuses
one L{Dispatch} per client connection (L{Dispatch.rerun}, L{Dispatch.reset}).

The states of a L{Dispatch} (L{DispatchState}), and what moves it::

    IDLE        start()                               -> CHOOSING
    CHOOSING    a server with a free slot             -> CONNECTING (CONNECTED: from the pool)
    CHOOSING    every usable server is full           -> QUEUED
    CHOOSING    no server usable at all               -> FAILED (SC)
    QUEUED      a slot came free                      -> CONNECTING (CONNECTED: from the pool)
    QUEUED      timeoutQueue, or no server usable     -> FAILED (sQ, SC)
    CONNECTING  connected                             -> CONNECTED
    CONNECTING  failed, a retry left                  -> CHOOSING (another server)
    CONNECTING  failed, no retry left                 -> FAILED (SC, sC, RC)
    QUEUED or CONNECTING: cancel()                    -> CANCELLED
    CONNECTED   retry() / again(), the caller's connection failed later -> CHOOSING / CONNECTING

A server's connection slot is taken when it is chosen and is the
L{Dispatch}'s to give back: on a failure, on cancel, and, after success,
when the caller calls L{Dispatch.release}.  A hook or balancer that
raises fails the dispatch with its error, the slot given back.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Generic, Optional, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from lbkit._backend import Backend
from lbkit._breakers import CONNECT_FAILURE, EMPTY_RESPONSE, Overflow
from lbkit._connect import connectFailed, connectServer, isLocalResourceError, prepareRetry
from lbkit._model import Context, Server
from lbkit.error import LBKitError, NoServerAvailable, QueueTimeout

__all__ = [
    "Dispatch", "DispatchFailed", "DispatchState",
    "SERVER_REFUSED", "CONNECT_TIMEOUT", "QUEUE_TIMEOUT", "OUT_OF_RESOURCES",
]

P = TypeVar("P")

#: HAProxy's C{SC}: the server refused the connection, or no server was
#: usable at all (every one down).
SERVER_REFUSED = "SC"
#: HAProxy's C{sC}: the connect timed out (C{timeoutConnect}).
CONNECT_TIMEOUT = "sC"
#: HAProxy's C{sQ}: no slot came free within C{timeoutQueue}.
QUEUE_TIMEOUT = "sQ"
#: HAProxy's C{RC}: lbkit itself ran out of a resource (file descriptors,
#: socket memory, local ports) while connecting.
OUT_OF_RESOURCES = "RC"

_log = Logger(namespace="lbkit.dispatch")


class DispatchState(enum.Enum):
    """Where a L{Dispatch} is (see the module docstring)."""

    IDLE = "idle"
    CHOOSING = "choosing"
    QUEUED = "queued"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"
    CANCELLED = "cancelled"


# (module-level names: an Enum member looked up on its class costs more,
# and http mode dispatches once per request)
_IDLE, _CHOOSING, _QUEUED, _CONNECTING, _CONNECTED, _FAILED, _CANCELLED = DispatchState


class DispatchFailed(LBKitError):
    """
    No server connection could be had.

    @ivar termination: HAProxy's termination code: L{SERVER_REFUSED},
        L{CONNECT_TIMEOUT}, L{QUEUE_TIMEOUT}, L{OUT_OF_RESOURCES}, or what
        the caller gave to L{Dispatch.retry}.
    @ivar status: The HTTP status an http client is answered with.
    @ivar reason: The failure behind it (the connect error, the queue's
        L{QueueTimeout} or L{NoServerAvailable}), or C{None}.
    """

    def __init__(self, termination: str, status: int = 503, reason: Optional[Failure] = None) -> None:
        why = reason.getErrorMessage() if reason is not None else "no retries left"
        LBKitError.__init__(self, f"{termination}: {why}")
        self.termination = termination
        self.status = status
        self.reason = reason


class Dispatch(Generic[P]):
    """
    Gets a connected server protocol for one client (tcp) or request (http):
    C{backend.tryAcquire}, else C{backend.enqueue} (with the backend's
    queue timeout), then L{lbkit._connect.connectServer}; a failed connect
    is retried on another server up to C{backend.retries} times.

    Used on the reactor thread by one frontend protocol; not reusable for
    another client.

    @ivar backend: The L{Backend} servers are chosen from.
    @ivar context: The client's L{Context}; C{context.tried} holds the
        servers chosen so far (L{tried}).
    @ivar state: A L{DispatchState}.
    @ivar server: The server chosen last, or C{None} before one was.
    @ivar attempts: How many times a server was chosen (1 + retries).
    @ivar holding: Whether a connection slot of C{server} is held: after
        success it is the caller's to end with L{release}.
    @ivar reused: Whether the protocol came from C{pooled}, not a connect.
    @ivar waited: Seconds spent in the queue, all waits together.
    @ivar queuedAt: C{reactor.seconds()} when last queued; -1.0 before.
    @ivar chosenAt: When a server was last chosen (after the
        C{serverChosen} hook); -1.0 before.
    @ivar connectedAt: When the connection was made or taken from the pool;
        -1.0 before.
    """

    # defaults (one connection sets few of them)
    state = DispatchState.IDLE
    server: Optional[Server] = None
    attempts = 0
    holding = False
    reused = False
    waited = 0.0
    queuedAt = chosenAt = connectedAt = -1.0
    _result: Optional[Deferred[tuple[Server, P]]] = None
    _running = False
    _waiting: Optional[Deferred[Any]] = None

    def __init__(
        self,
        backend: Backend,
        context: Context,
        reactor: Any,
        protocol: Callable[[Server], P],
        *,
        connect: Callable[[Any, Server, P, float], Deferred[P]] = connectServer,  # type: ignore[assignment]
        serverChosen: Optional[Callable[[Server], None]] = None,
        pooled: Optional[Callable[[Server], Optional[P]]] = None,
        connected: Optional[Callable[[Server, P], None]] = None,
        failed: Optional[Callable[[Failure], None]] = None,
    ) -> None:
        """
        @param reactor: Connects (C{IReactorTCP}) and times (C{IReactorTime}).
        @param protocol: Builds the protocol to connect to a server.
        @param connect: How to connect it: C{connect(reactor, server,
            protocol, timeout)} returns a cancellable L{Deferred} firing
            with the protocol (L{lbkit._connect.connectServer}).
        @param serverChosen: Called with each server chosen (again on each
            retry), before connecting; may raise (the dispatch then fails
            with that error and gives the slot back).
        @param pooled: Called after C{serverChosen}: an already connected
            protocol for that server (a kept-alive connection), or C{None}
            to connect.
        @param connected: With L{run}, L{runRetry} and L{runAgain}: called
            with C{(server, protocol)} on success, the slot held.
        @param failed: With L{run}, L{runRetry} and L{runAgain}: called with
            the failure (L{DispatchFailed}, or what a hook or the balancer
            raised) when no connection could be had; not for a cancelled
            dispatch.
        """
        self.backend = backend
        self.context = context
        self.reactor = reactor
        self._newProtocol = protocol
        self._connect = connect
        self._serverChosen = serverChosen
        self._pooled = pooled
        self._onConnected = connected
        self._onFailed = failed

    def __repr__(self) -> str:
        return f"<Dispatch {self.backend.name} {self.state.name} server={self.server and self.server.name}>"

    @property
    def tried(self) -> set[Server]:
        """The servers chosen so far (cleared when all were tried)."""
        return self.context.tried

    # -- what callers call ---------------------------------------------------

    def start(self) -> Deferred[tuple[Server, P]]:
        """
        Choose a server and connect to it.

        @return: A L{Deferred} firing with C{(server, protocol)}, the slot
            held; or failing with L{DispatchFailed}, or with the error a
            hook or the balancer raised.  Cancelling it stops the wait or
            the connect, gives the slot back and fails it with
            L{CancelledError}.
        """
        d = self._begin()
        try:
            self._choose()
        except Exception:
            self._fail(Failure())
        return d

    def retry(self, termination: str, status: int, condition: str | int = EMPTY_RESPONSE) -> Deferred[tuple[Server, P]]:
        """
        The connection L{start} gave failed later (http: the server closed
        before answering a request that may be sent again): give its slot
        back and choose another server, counting a retry, or fail with
        C{DispatchFailed(termination, status)} when no retry is left
        (L{mayRetry}, for what failed: C{condition}).

        @return: As L{start}.
        """
        d = self._begin()
        try:
            self.release()
            self._retryOrFail(termination, status, self.server, None, condition)
        except Exception:
            self._fail(Failure())
        return d

    def again(self, termination: str, status: int) -> Deferred[tuple[Server, P]]:
        """
        The pooled connection L{start} gave was already dead: connect to
        the same server once more, without choosing and without counting
        an attempt, if it has a free slot; else as L{retry}.

        @return: As L{start}.
        """
        d = self._begin()
        try:
            self._again(termination, status)
        except Exception:
            self._fail(Failure())
        return d

    def reset(self, backend: Backend, context: Context) -> None:
        """
        Make this dispatch (not running, its slot released) a new one, for
        the next request of the same client connection: as if built again
        with C{backend} and C{context}, the other arguments kept.
        """
        if self._running or (self._result is not None and not self._result.called):
            raise RuntimeError(f"{self!r} is still running")
        self._clear(backend, context)
        self._result = None

    def _clear(self, backend: Backend, context: Context) -> None:
        """What L{reset} and L{rerun} make new for the next request."""
        self.backend = backend
        self.context = context
        self.state, self.server, self.attempts = _IDLE, None, 0
        self.holding = self.reused = False
        self.waited = 0.0
        self.queuedAt = self.chosenAt = self.connectedAt = -1.0

    def rerun(self, backend: Backend, context: Context) -> None:
        """
        L{reset} and L{run} in one call: http mode's next request on the
        same client connection.
        """
        if self._running or self._result is not None or self._onFailed is None or self._onConnected is None:
            self.reset(backend, context)  # raises why not
            self.run()
            return
        self._clear(backend, context)
        self._running = True
        try:
            self._choose()
        except Exception:
            self._fail(Failure())

    # -- the same, reporting to the connected and failed callables -------------

    def run(self) -> None:
        """
        As L{start}, but the result goes to the C{connected} or C{failed}
        callable given to the constructor instead of a L{Deferred}: at
        once when a server and a pooled connection are at hand.
        """
        if self._running or self._result is not None or self._onFailed is None or self._onConnected is None:
            self._beginRun()  # raises why not
        self._running = True
        try:
            self._choose()
        except Exception:
            self._fail(Failure())

    def runRetry(self, termination: str, status: int, condition: str | int = EMPTY_RESPONSE) -> None:
        """As L{retry}, reporting to C{connected} or C{failed} (see L{run})."""
        self._beginRun()
        try:
            self.release()
            self._retryOrFail(termination, status, self.server, None, condition)
        except Exception:
            self._fail(Failure())

    def runAgain(self, termination: str, status: int) -> None:
        """As L{again}, reporting to C{connected} or C{failed} (see L{run})."""
        self._beginRun()
        try:
            self._again(termination, status)
        except Exception:
            self._fail(Failure())

    def cancel(self) -> None:
        """Stop a dispatch in progress (as cancelling its L{Deferred}); else nothing."""
        if self._running:
            self._cancelled(None)
        elif self._result is not None and not self._result.called:
            self._result.cancel()

    def mayRetry(self, condition: str | int, commit: bool = False) -> bool:
        """
        Whether a failed attempt may be retried: C{condition} (a
        L{lbkit._breakers} name, or a status code) is in the backend's
        C{retryOn}, a retry is left (C{backend.retries}), and the
        backend's breakers (C{maxRetries}, C{retryBudget}) allow one (a
        refusal counts as their trip).  With C{commit} the retry starts.
        """
        backend = self.backend
        if condition not in backend.retryOn or self.attempts > backend.retries:
            return False
        breakers = backend.breakers
        return breakers is None or breakers.admitRetry(self, condition, commit)

    def release(self) -> None:
        """Give back the slot held on C{server}, if one is held."""
        if self.holding:
            self.holding = False
            assert self.server is not None
            self.backend.release(self.server)

    # -- the loop ------------------------------------------------------------
    #
    # start(), retry(), again() and the callbacks of the queue's and the
    # connect's Deferreds are the entry points: each turns an exception (a
    # hook, a balancer) into a failed dispatch, the slot given back.

    def _begin(self) -> Deferred[tuple[Server, P]]:
        if self._running or (self._result is not None and not self._result.called):
            raise RuntimeError(f"{self!r} is already running")
        d: Deferred[tuple[Server, P]] = Deferred(self._cancelled)
        self._result = d
        return d

    def _beginRun(self) -> None:
        if self._running or (self._result is not None and not self._result.called):
            raise RuntimeError(f"{self!r} is already running")
        if self._onConnected is None or self._onFailed is None:
            raise TypeError(f"{self!r}: run() needs the connected and failed callables")
        self._result = None
        self._running = True

    def _again(self, termination: str, status: int) -> None:
        self.release()
        server = self.server
        assert server is not None
        self.attempts -= 1
        if server.hasFreeSlot():
            self.backend.reacquire(server)
            self.holding = True
            self.attempts += 1
            self._connectTo(server)
        else:
            self._retryOrFail(termination, status, server, None)

    def _choose(self, dequeued: Optional[Server] = None) -> None:
        # choose (or take the server the queue reserved), then pool or connect
        if dequeued is None:
            self.state = _CHOOSING
            backend = self.backend
            try:
                server = backend.tryAcquire(self.context)
            except Overflow as e:  # maxRequests (lbkit._breakers)
                self._fail(Failure(DispatchFailed(e.termination, 503, Failure())))
                return
            except NoServerAvailable:
                backend.noServerCount += 1
                self._fail(Failure(DispatchFailed(SERVER_REFUSED, 503, Failure())))
                return
            if server is None:
                self.state = _QUEUED
                self.queuedAt = self.reactor.seconds()
                waiting = self._waiting = backend.enqueue(self.context, self.reactor)
                waiting.addCallbacks(self._dequeued, self._queueFailed)
                return
        else:
            server = dequeued
        self.server = server
        self.holding = True  # before the hook: if it raises, _fail gives it back
        self.attempts += 1
        self.context.tried.add(server)
        if self._serverChosen is not None:
            self._serverChosen(server)
        chosenAt = self.chosenAt = self.reactor.seconds()
        protocol = self._pooled(server) if self._pooled is not None else None
        if protocol is None:
            self._connectTo(server)
            return
        self.reused = True
        self.connectedAt = chosenAt
        self._succeed(server, protocol)

    def _dequeued(self, server: Server) -> None:
        self._waiting = None
        self.waited += self.reactor.seconds() - self.queuedAt
        try:
            self._choose(server)
        except Exception:
            self._fail(Failure())

    def _queueFailed(self, reason: Failure) -> None:
        # nothing here calls out: no exception to catch
        self._waiting = None
        self.waited += self.reactor.seconds() - self.queuedAt
        if reason.check(CancelledError) or self.state is _CANCELLED:
            self.state = _CANCELLED
            return
        termination = QUEUE_TIMEOUT if reason.check(QueueTimeout) else SERVER_REFUSED
        if reason.check(Overflow):  # maxPending (lbkit._breakers)
            termination = reason.value.termination  # type: ignore[union-attr]
        self._fail(Failure(DispatchFailed(termination, 503, reason)))

    def _connectTo(self, server: Server) -> None:
        self.state = _CONNECTING
        self.reused = False
        protocol = self._newProtocol(server)
        waiting = self._waiting = self._connect(self.reactor, server, protocol, self.backend.timeoutConnect)
        waiting.addCallbacks(self._connected, self._connectFailed)

    def _connected(self, protocol: P) -> None:
        self._waiting = None
        self.connectedAt = self.reactor.seconds()
        server = self.server
        assert server is not None
        try:
            server.observe(True)
        except Exception:
            self._fail(Failure())
            return
        self._succeed(server, protocol)

    def _connectFailed(self, reason: Failure) -> None:
        self._waiting = None
        server = self.server
        assert server is not None
        try:
            self.release()
            if reason.check(CancelledError) or self.state is _CANCELLED:
                # cancelled: nobody's failure (a connector may report its own)
                self.state = _CANCELLED
                return
            local = isLocalResourceError(reason)
            timedOut = connectFailed(server, reason)
            _log.debug("{server}: connect failed: {why}", server=server.fullName, why=reason.getErrorMessage())
            termination = OUT_OF_RESOURCES if local else CONNECT_TIMEOUT if timedOut else SERVER_REFUSED
            # a retry after lbkit's own failure is not one the server caused
            self._retryOrFail(termination, 503, None if local else server, reason, CONNECT_FAILURE)
        except Exception:
            self._fail(Failure())

    def _retryOrFail(self, termination: str, status: int, blame: Optional[Server], reason: Optional[Failure],
                     condition: str | int = EMPTY_RESPONSE) -> None:
        if not self.mayRetry(condition, True):
            self._fail(Failure(DispatchFailed(termination, status, reason)))
            return
        prepareRetry(self.backend, blame, self.context)
        self._choose()

    def _succeed(self, server: Server, protocol: P) -> None:
        self.state = _CONNECTED
        if self._running:
            self._running = False
            try:
                self._onConnected(server, protocol)  # type: ignore[misc]
            except Exception:
                # the caller's own error: its to handle (it holds the slot)
                self._onFailed(Failure())  # type: ignore[misc]
            return
        result = self._result
        assert result is not None
        result.callback((server, protocol))

    def _fail(self, reason: Failure) -> None:
        try:
            self.release()
        except Exception:  # a balancer's hook: the failure still gets out
            _log.failure("{dispatch}: giving back the slot failed", dispatch=self)
        self.state = _FAILED
        if self._running:
            self._running = False
            self._onFailed(reason)  # type: ignore[misc]
            return
        result = self._result
        if result is not None and not result.called:
            result.errback(reason)
        else:  # nobody is waiting for the result any more
            _log.failure("{dispatch}: failed after its result", reason, dispatch=self)

    def _cancelled(self, result: Optional[Deferred[Any]]) -> None:
        # Deferred.cancel fails result with CancelledError once this returns
        self._running = False
        self.state = _CANCELLED
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()
        self.release()
