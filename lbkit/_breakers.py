# -*- test-case-name: tests.test_breakers -*-
"""
Backends that fail fast: Envoy's circuit breakers and retry budget, and
the conditions a request is retried on (HAProxy's C{retry-on}), per
L{lbkit.Backend} (docs/breakers.md).

  - C{maxPending}: how many requests (tcp: connections) may wait in the
    backend's queue; one more is answered 503 at once (termination C{PQ}).
  - C{maxRequests}: how many may hold a server slot at once (connecting,
    sent, streaming); one more is answered 503 at once (C{PC}).
  - C{maxRetries}: how many requests may be in a retry at once.
  - C{retryBudget}: retries at most a fraction of the active requests
    (L{RetryBudget}).
  - C{retryOn}: what is retried (L{parseRetryOn}).

A retry a breaker refuses ends the request as the failed attempt did (its
termination, or the server's own response for a retried status).

Nothing here runs when a backend sets none of these: L{Breakers.install}
replaces the backend's C{tryAcquire} and C{enqueue} on the instance only
for the limits that are set, and a dispatch asks the breakers only when an
attempt failed.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Iterable, Optional, Union

from attrs import frozen
from twisted.internet.defer import Deferred, fail

from lbkit.error import ConfigError, NoServerAvailable

if TYPE_CHECKING:
    from lbkit._backend import Backend
    from lbkit._model import Context, Server

__all__ = [
    "RetryBudget", "Breakers", "Overflow", "parseRetryOn", "DEFAULT_RETRY_ON",
    "CONNECT_FAILURE", "EMPTY_RESPONSE", "JUNK_RESPONSE", "RESPONSE_TIMEOUT",
    "PENDING_OVERFLOW", "REQUEST_OVERFLOW",
]

#: The connect to a server failed (refused, timed out): the request was not sent.
CONNECT_FAILURE = "connect-failure"
#: The server closed after the request was sent, before a response head.
EMPTY_RESPONSE = "empty-response"
#: The server sent something that is not a valid response head.
JUNK_RESPONSE = "junk-response"
#: The backend's C{timeoutServer} passed before a response head arrived.
RESPONSE_TIMEOUT = "response-timeout"

#: Termination of a request turned away because the queue is full
#: (C{maxPending}): HAProxy's C{P} (a limit the proxy enforced) while queueing.
PENDING_OVERFLOW = "PQ"
#: Termination of a request turned away because C{maxRequests} are in
#: flight: C{P} before a connection was sought.
REQUEST_OVERFLOW = "PC"

_CONDITIONS = (CONNECT_FAILURE, EMPTY_RESPONSE, JUNK_RESPONSE, RESPONSE_TIMEOUT)
#: Other names accepted in C{retryOn}: HAProxy's and Envoy's.
_ALIASES: dict[str, tuple[Union[str, int], ...]] = {
    "conn-failure": (CONNECT_FAILURE,),  # HAProxy
    "reset": (EMPTY_RESPONSE,),  # Envoy
    "gateway-error": (502, 503, 504),  # Envoy
    "all-retryable-errors": (CONNECT_FAILURE, EMPTY_RESPONSE, JUNK_RESPONSE, RESPONSE_TIMEOUT, 500, 502, 503, 504),
    "none": (),
}

#: What a backend retries when C{retryOn} is not given (lbkit's behaviour
#: before C{retryOn} existed, HAProxy's C{conn-failure} plus a request that
#: may be sent again whose server closed before answering).
DEFAULT_RETRY_ON: frozenset[Union[str, int]] = frozenset([CONNECT_FAILURE, EMPTY_RESPONSE])

_LIMITS = ("maxPending", "maxRequests", "maxRetries", "retryBudget")


def parseRetryOn(name: str, value: Optional[Iterable[Union[str, int]]]) -> frozenset[Union[str, int]]:
    """
    Check a backend's C{retryOn}: condition names (L{CONNECT_FAILURE},
    L{EMPTY_RESPONSE}, L{JUNK_RESPONSE}, L{RESPONSE_TIMEOUT}, or the
    aliases C{"conn-failure"}, C{"reset"}, C{"gateway-error"},
    C{"all-retryable-errors"}, C{"none"}) and status codes (400-599).

    @param name: The backend's name, for the error message.
    @return: The conditions, aliases expanded (L{DEFAULT_RETRY_ON} for C{None}).
    @raise ConfigError: naming the value that is not one of those.
    """
    if value is None:
        return DEFAULT_RETRY_ON
    if isinstance(value, (str, int)):
        raise ConfigError(f"backend {name!r}: retryOn must be a list or tuple of conditions, not {value!r}")
    found: set[Union[str, int]] = set()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise ConfigError(f"backend {name!r}: retryOn: {item!r} is not a condition name or a status code")
        if isinstance(item, int):
            if not 400 <= item <= 599:
                raise ConfigError(f"backend {name!r}: retryOn: status {item} is not a 4xx or 5xx code")
            found.add(item)
        elif item in _CONDITIONS:
            found.add(item)
        elif item in _ALIASES:
            found.update(_ALIASES[item])
        else:
            known = ", ".join(sorted(_CONDITIONS + tuple(_ALIASES)))
            raise ConfigError(f"backend {name!r}: retryOn: unknown condition {item!r} (known: {known}, or a status code)")
    return frozenset(found)


def _budgetPercent(instance: Any, attribute: Any, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ConfigError(f"RetryBudget: budgetPercent must be a number from 0 to 100, not {value!r}")


def _minRetryConcurrency(instance: Any, attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"RetryBudget: minRetryConcurrency must be a non-negative integer, not {value!r}")


@frozen
class RetryBudget:
    """
    Envoy's retry budget: at most C{budgetPercent} percent of the backend's
    active requests (holding a server slot, or waiting in its queue) may
    be in a retry at once, and never fewer than C{minRetryConcurrency}.

    @ivar budgetPercent: Envoy's C{budget_percent} (its default, 20).
    @ivar minRetryConcurrency: Envoy's C{min_retry_concurrency} (its default, 3).
    """

    budgetPercent: float = 20.0
    minRetryConcurrency: int = 3

    def __attrs_post_init__(self) -> None:
        _budgetPercent(self, None, self.budgetPercent)
        _minRetryConcurrency(self, None, self.minRetryConcurrency)

    def allowed(self, active: int) -> int:
        """How many retries may be in progress with C{active} requests."""
        return max(self.minRetryConcurrency, int(active * self.budgetPercent / 100))


def _count(name: str, what: str, value: Optional[int]) -> Optional[int]:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigError(f"backend {name!r}: {what} must be a non-negative integer or None, not {value!r}")
    return value


class Overflow(NoServerAvailable):
    """
    A circuit breaker turned a request away (L{PENDING_OVERFLOW},
    L{REQUEST_OVERFLOW}): it is answered 503 at once.

    @ivar termination: The termination code it is logged with.
    """

    def __init__(self, message: str, termination: str) -> None:
        NoServerAvailable.__init__(self, message)
        self.termination = termination


class Breakers:
    """
    The circuit breakers and retry conditions of one backend, and what they
    counted.  Built by L{Backend} when any of its C{maxPending},
    C{maxRequests}, C{maxRetries}, C{retryBudget}, C{retryOn} is given;
    used on the reactor thread.

    @ivar retryOn: The backend's retry conditions (L{parseRetryOn}).
    @ivar statuses: The status codes among them.
    @ivar trips: How many times each limit turned a request or a retry
        away, by the limit's name.
    @ivar retried: Retries started, by condition (a status code as text).
    """

    def __init__(
        self,
        name: str,
        maxPending: Optional[int],
        maxRequests: Optional[int],
        maxRetries: Optional[int],
        retryBudget: Optional[RetryBudget],
        retryOn: frozenset[Union[str, int]],
    ) -> None:
        self.name = name
        self.maxPending = _count(name, "maxPending", maxPending)
        self.maxRequests = _count(name, "maxRequests", maxRequests)
        self.maxRetries = _count(name, "maxRetries", maxRetries)
        if retryBudget is not None and not isinstance(retryBudget, RetryBudget):
            raise ConfigError(f"backend {name!r}: retryBudget must be a lbkit.RetryBudget, not {retryBudget!r}")
        self.retryBudget = retryBudget
        self.retryOn = retryOn
        self.statuses = frozenset(c for c in retryOn if isinstance(c, int))
        self.trips = dict.fromkeys(_LIMITS, 0)
        self.retried: dict[str, int] = {}
        #: The dispatches in a retry now (each holds one until it releases).
        self.retrying: set[Any] = set()
        self._backend: Optional[Backend] = None

    def __repr__(self) -> str:
        return f"<Breakers {self.name} {self.settings()}>"

    def settings(self) -> dict[str, Any]:
        """The configured limits and conditions (what a reload compares)."""
        return {
            "maxPending": self.maxPending, "maxRequests": self.maxRequests, "maxRetries": self.maxRetries,
            "retryBudget": self.retryBudget, "retryOn": self.retryOn,
        }

    # -- installing on a backend ---------------------------------------------

    def install(self, backend: Backend) -> None:
        """
        Put the limits that are set in front of C{backend}'s C{tryAcquire}
        (C{maxRequests}) and C{enqueue} (C{maxPending}); the others cost
        nothing until an attempt fails.
        """
        self._backend = backend
        for name in ("tryAcquire", "enqueue"):
            backend.__dict__.pop(name, None)
        if self.maxRequests is not None:
            backend.tryAcquire = self._tryAcquire  # type: ignore[method-assign]
        if self.maxPending is not None:
            backend.enqueue = self._enqueue  # type: ignore[method-assign]

    def takeCounts(self, old: Breakers) -> None:
        """After a reload: keep what C{old}, the running backend's, counted."""
        self.trips = old.trips
        self.retried = old.retried
        self.retrying = old.retrying

    def _tryAcquire(self, context: Context) -> Optional[Server]:
        backend = self._backend
        assert backend is not None and self.maxRequests is not None
        if sum(s.active for s in backend.servers) >= self.maxRequests:
            self.trips["maxRequests"] += 1
            raise Overflow(f"backend {self.name!r}: {self.maxRequests} requests in flight (maxRequests)",
                           REQUEST_OVERFLOW)
        return type(backend).tryAcquire(backend, context)

    def _enqueue(self, context: Context, clock: Any) -> Deferred[Server]:
        backend = self._backend
        assert backend is not None and self.maxPending is not None
        if backend.queueLength() >= self.maxPending:
            self.trips["maxPending"] += 1
            return fail(Overflow(f"backend {self.name!r}: {self.maxPending} requests queued (maxPending)",
                                 PENDING_OVERFLOW))
        return type(backend).enqueue(backend, context, clock)

    # -- retries ---------------------------------------------------------------

    def active(self) -> int:
        """The backend's active requests: holding a server slot, or queued."""
        backend = self._backend
        if backend is None:
            return 0
        return sum(s.active for s in backend.servers) + backend.queueLength()

    def admitRetry(self, dispatch: Any, condition: Union[str, int], commit: bool) -> bool:
        """
        Whether C{dispatch} (an L{lbkit._dispatch.Dispatch} whose attempt
        failed on C{condition}) may retry under C{maxRetries} and the
        retry budget; a refusal is counted as a trip.  With C{commit},
        the retry starts: it is counted, and holds one of the concurrent
        retries until the dispatch releases its slot (its C{release},
        replaced on the instance meanwhile).
        """
        if dispatch not in self.retrying:
            current = len(self.retrying)
            if self.maxRetries is not None and current >= self.maxRetries:
                self.trips["maxRetries"] += 1
                return False
            budget = self.retryBudget
            if budget is not None:
                # this request is active, whether or not it holds a slot now
                active = self.active() + (0 if dispatch.holding else 1)
                if current >= budget.allowed(active):
                    self.trips["retryBudget"] += 1
                    return False
        if commit:
            key = str(condition)
            self.retried[key] = self.retried.get(key, 0) + 1
            if dispatch not in self.retrying:
                self.retrying.add(dispatch)
                dispatch.release = functools.partial(self._released, self.retrying, dispatch)
        return True

    @staticmethod
    def _released(retrying: set[Any], dispatch: Any) -> None:
        retrying.discard(dispatch)
        del dispatch.release
        dispatch.release()

    def stats(self) -> dict[str, Any]:
        """The C{breakers} object of a backend in C{/stats.json} (docs/stats.md)."""
        budget = self.retryBudget
        return {
            "maxPending": self.maxPending,
            "maxRequests": self.maxRequests,
            "maxRetries": self.maxRetries,
            "retryBudget": None if budget is None else {
                "budgetPercent": budget.budgetPercent, "minRetryConcurrency": budget.minRetryConcurrency,
            },
            "retryOn": sorted(str(c) for c in self.retryOn),
            "activeRetries": len(self.retrying),
            "trips": dict(self.trips),
            "retried": dict(self.retried),
        }


def installBreakers(
    backend: Backend,
    maxPending: Optional[int],
    maxRequests: Optional[int],
    maxRetries: Optional[int],
    retryBudget: Optional[RetryBudget],
    retryOn: Optional[Iterable[Union[str, int]]],
) -> None:
    """
    Check a L{Backend}'s breaker arguments and set its C{retryOn} and
    C{breakers} (C{None} when none is given: nothing then runs).

    @raise ConfigError: naming the bad argument.
    """
    backend.retryOn = parseRetryOn(backend.name, retryOn)
    given = (maxPending, maxRequests, maxRetries, retryBudget, retryOn)
    if all(v is None for v in given):
        backend.breakers = None
        return
    breakers = Breakers(backend.name, maxPending, maxRequests, maxRetries, retryBudget, backend.retryOn)
    backend.breakers = breakers
    breakers.install(backend)


def updateBreakers(backend: Backend, new: Backend) -> list[str]:
    """
    A reload: C{backend} (running) takes the breakers of C{new} (just
    loaded), keeping what its own counted.

    @return: One line per change, for the log.
    """
    old, fresh = backend.breakers, new.breakers
    before = old.settings() if old is not None else None
    after = fresh.settings() if fresh is not None else None
    changes = [] if before == after else [f"breakers {before!r} -> {after!r}"]
    for name in ("tryAcquire", "enqueue"):
        backend.__dict__.pop(name, None)
    backend.retryOn = new.retryOn
    backend.breakers = fresh
    if fresh is not None:
        if old is not None:
            fresh.takeCounts(old)
        fresh.install(backend)
    return changes
