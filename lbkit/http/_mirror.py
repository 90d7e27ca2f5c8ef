# -*- test-case-name: tests.test_http_mirror -*-
"""
Mirroring (shadow traffic): L{Mirror}, a request rule that sends a copy
of the requests it matches, body included up to C{maxBody} bytes, to a
shadow backend and throws the shadow's answers away, counting how they
differ from the primary's (docs/beyond.md).

A copy never delays or fails the real request: it is chosen, queued and
connected by a L{Dispatch} of its own on the shadow backend, its body is
teed from what the client side forwards to the primary server (the
client side forwards the body through L{MirrorCopy.tee}), at most C{maxInFlight} copies are in flight
(more are dropped and counted), and each one ends after C{timeout}
seconds whatever the shadow does.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbkit._backend import Backend
from lbkit._dispatch import Dispatch, DispatchFailed
from lbkit._model import Context, Server
from lbkit._origin import definedAt
from lbkit.error import ConfigError
from lbkit.http._answers import checkedWhen
from lbkit.http._body import CHUNKED
from lbkit.http._headers import CODE_CLASS, requestHead
from lbkit.http._parse import Request, Response
from lbkit.http._shadow import ShadowKey, ShadowProtocol
from lbkit.interfaces import IAnsweringRule

if TYPE_CHECKING:
    from lbkit.http._exchange import Exchange

__all__ = ["Mirror", "MirrorCopy", "mirrorsOf", "mirrorStats", "shadowBackends"]

_log = Logger(namespace="lbkit.http")
#: Each shadow backend's mirrors, for the stats (L{mirrorsOf}).
_SHADOWS: weakref.WeakKeyDictionary[Backend, list[Mirror]] = weakref.WeakKeyDictionary()


def mirrorsOf(backend: Backend) -> list[Mirror]:
    """The L{Mirror}s that send copies to C{backend} (for the stats page)."""
    return list(_SHADOWS.get(backend, ()))


def shadowBackends(frontend: Any) -> list[Backend]:
    """The shadow backends of the L{Mirror}s in C{frontend}'s and its routes' request rules."""
    rules = list(frontend.requestRules)
    for route in frontend.routes:
        rules.extend(route.requestRules)
    return [rule.backend for rule in rules if isinstance(rule, Mirror)]


def mirrorStats(backend: Backend) -> Optional[dict[str, Any]]:
    """
    The counters of the mirrors sending to C{backend}, added up
    (L{Mirror.stats}), or C{None} when none does: the C{mirror} entry of
    a backend in C{/stats.json}.
    """
    mirrors = _SHADOWS.get(backend)
    if not mirrors:
        return None
    total = mirrors[0].stats()
    total["fraction"] = mirrors[-1].fraction
    for other in mirrors[1:]:
        for key, value in other.stats().items():
            if key == "divergence":
                for pair, n in value.items():
                    total[key][pair] = total[key].get(pair, 0) + n
            elif key != "fraction":
                total[key] += value
    return total


def _statusClass(code: int) -> str:
    return CODE_CLASS[code // 100] if 100 <= code < 600 else "other"


@implementer(IAnsweringRule)
class Mirror:
    """
    Send a copy of the requests that match to C{backend}, the shadow, and
    discard its answers.  A request rule: put it in the C{requestRules} of
    an L{lbkit.http.Route} or an L{lbkit.http.Frontend}.  It never answers
    (its C{answerRequest} starts the copy and returns C{None}).

    @ivar backend: The shadow L{Backend}.
    @ivar fraction: The share of matching requests copied, from 0 to 1:
        deterministic (a running credit: 0.25 copies every fourth).
    @ivar when: A matcher the request must match, or C{None} (all).
    @ivar maxBody: Requests with a longer body are not copied (a chunked
        body is cut off, its copy aborted, once past it); counted in
        C{tooLarge}.
    @ivar maxInFlight: At most this many copies at once; the rest are
        dropped, counted in C{dropped}.
    @ivar timeout: Seconds a copy may take, from the request to the
        shadow's status line; then it is aborted (C{timedOut}).
    @ivar matched: Requests that matched C{when}.
    @ivar mirrored: Copies started.
    @ivar answered: Copies the shadow answered (a status line).
    @ivar failed: Copies that got no answer (no server, connect failed,
        connection lost, timed out).
    @ivar divergence: C{{"2xx/5xx": n, ...}}: pairs of status classes,
        primary's first, where the primary server's and the shadow's
        differ.
    @ivar agreed: Copies whose status class matched the primary's.
    @ivar inFlight: The copies in flight (L{MirrorCopy}).
    """

    def __init__(
        self,
        backend: Backend,
        fraction: float = 1.0,
        when: Any = None,
        *,
        maxBody: int = 64 * 1024,
        maxInFlight: int = 100,
        timeout: float = 10.0,
    ) -> None:
        self.definedAt = definedAt()
        if not isinstance(backend, Backend):
            raise ConfigError(f"{self.definedAt}: Mirror: backend must be an lbkit.Backend, not {backend!r}")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise ConfigError(f"{self.definedAt}: Mirror: fraction must be a number from 0 to 1, not {fraction!r}")
        for name, value in (("maxBody", maxBody), ("maxInFlight", maxInFlight)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{self.definedAt}: Mirror: {name} must be an integer >= 0, not {value!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"{self.definedAt}: Mirror: timeout must be a number of seconds > 0, not {timeout!r}")
        self.backend = backend
        self.fraction = float(fraction)
        self.when = checkedWhen(when, "Mirror")
        self.maxBody = maxBody
        self.maxInFlight = maxInFlight
        self.timeout = float(timeout)
        self._credit = 0.0
        self.matched = self.mirrored = self.answered = self.failed = 0
        self.dropped = self.tooLarge = self.timedOut = self.agreed = 0
        self.divergence: dict[str, int] = {}
        self.inFlight: set[MirrorCopy] = set()
        self._idle: list[Deferred[None]] = []
        self._home = backend
        self._keys: dict[Server, ShadowKey] = {}
        _SHADOWS.setdefault(backend, []).append(self)

    def __repr__(self) -> str:
        return f"<Mirror -> {self.backend.name} {self.fraction:g}>"

    # -- IAnsweringRule ----------------------------------------------------------

    def answerRequest(self, request: Request, exchange: Exchange) -> None:
        """Start a copy of C{request} if it matches, is sampled, fits and a slot is free; answer nothing."""
        when = self.when
        if when is not None and not when.matches(request, exchange.context):  # type: ignore[arg-type]
            return None
        self.matched += 1
        self._credit += self.fraction
        if self._credit < 1.0 - 1e-9:
            return None
        self._credit -= 1.0
        framing = exchange.framing
        if framing > self.maxBody:
            self.tooLarge += 1
            return None
        if self._home is not self.backend:
            # a reload pointed it at the running backend of that name: its
            # counters add to those of the mirrors it replaced
            self._home = self.backend
            _SHADOWS.setdefault(self.backend, []).append(self)
        if len(self.inFlight) >= self.maxInFlight:
            self.dropped += 1
            return None
        try:
            exchange.mirror = MirrorCopy(self, exchange, request)
        except Exception:  # a copy never fails the real request
            self.failed += 1
            _log.failure("{mirror}: could not start a copy", mirror=self)
        return None

    def applyToRequest(self, request: Request, exchange: Any) -> None:
        """Nothing: the copy was started by L{answerRequest}."""

    def applyToResponse(self, response: Response, exchange: Any) -> None:
        """Nothing: the primary's status reaches the copy as the request is logged."""

    def keyFor(self, server: Server) -> ShadowKey:
        """What the idle connections to the shadow C{server} are pooled under."""
        key = self._keys.get(server)
        if key is None:
            key = self._keys[server] = ShadowKey(server)
        return key

    def idle(self) -> Deferred[None]:
        """A L{Deferred} that fires once no copy is in flight (at once if none is)."""
        if not self.inFlight:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    # -- what copies report ------------------------------------------------------

    def compare(self, primary: int, shadow: int) -> None:
        """Count one pair of status codes, the primary's and the shadow's."""
        a, b = _statusClass(primary), _statusClass(shadow)
        if a == b:
            self.agreed += 1
        else:
            key = f"{a}/{b}"
            self.divergence[key] = self.divergence.get(key, 0) + 1

    def stats(self) -> dict[str, Any]:
        """The counters, as C{/stats.json} shows them under the shadow backend's C{mirror}."""
        return {
            "fraction": self.fraction,
            "matched": self.matched,
            "mirrored": self.mirrored,
            "inFlight": len(self.inFlight),
            "answered": self.answered,
            "failed": self.failed,
            "timedOut": self.timedOut,
            "dropped": self.dropped,
            "tooLarge": self.tooLarge,
            "agreed": self.agreed,
            "divergence": dict(sorted(self.divergence.items())),
        }


class MirrorCopy:
    """
    One copy of a request on its way to the shadow: a L{Dispatch} on the
    shadow backend, the head, the body teed from the client side (kept
    until connected, at most C{maxBody} bytes), and a timer.

    @ivar mirror: Its L{Mirror}.
    @ivar primary: The primary server's status code, or 0 before it is known.
    @ivar shadow: The shadow's status code, or 0 before it is known.
    """

    def __init__(self, mirror: Mirror, exchange: Exchange, request: Request) -> None:
        self.mirror = mirror
        self.primary = self.shadow = 0
        self.done = False
        framing = exchange.framing
        self._left = framing if framing > 0 else (mirror.maxBody if framing == CHUNKED else 0)
        self._chunked = framing == CHUNKED
        frontend = exchange.frontend
        self._head = requestHead(request, self._chunked, False, frontend.forwardedFor,
                                 getattr(exchange.client, "host", "").encode("ascii"),
                                 getattr(exchange, "_scheme", b"http"), None)
        self._pending: list[bytes] = [self._head]
        self._proto: Optional[ShadowProtocol] = None
        self._isHead = request.method == b"HEAD"
        self._pool = exchange.factory.pool
        mirror.mirrored += 1
        mirror.inFlight.add(self)
        reactor = exchange.reactor
        self._timer = reactor.callLater(mirror.timeout, self._timedOut)
        context = Context(client=exchange.client, frontend=frontend.name, request=request)
        self._dispatch: Dispatch[ShadowProtocol] = Dispatch(mirror.backend, context, reactor, self._newProtocol,
                                                            pooled=self._pooled)
        d = self._dispatch.start()
        d.addCallbacks(self._connected, self._failed)

    def __repr__(self) -> str:
        return f"<MirrorCopy -> {self.mirror.backend.name} primary={self.primary} shadow={self.shadow}>"

    def _newProtocol(self, server: Server) -> ShadowProtocol:
        return ShadowProtocol(self.mirror.keyFor(server), self._pool)

    def _pooled(self, server: Server) -> Optional[ShadowProtocol]:
        return self._pool.get(self.mirror.keyFor(server))  # type: ignore[arg-type,return-value]

    def tee(self, send: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """A body forwarder that calls C{send} and then L{feed}s the copy."""

        def forward(data: bytes) -> None:
            send(data)
            try:
                self.feed(data)
            except Exception:  # a copy never fails the real request
                _log.failure("{copy}: could not copy body bytes", copy=self)
                self._finish(failed=True)

        return forward

    def feed(self, data: bytes) -> None:
        """Body bytes of the request, as they went to the primary server."""
        if self.done:
            return
        if len(data) > self._left:
            if self._chunked:  # past maxBody: abort this copy
                self.mirror.tooLarge += 1
                self._finish(failed=True)
                return
            data = data[: self._left]  # (a retry forwards the same body again)
        self._left -= len(data)
        if not data:
            return
        proto = self._proto
        if proto is not None and proto.transport is not None:
            proto.transport.write(data)
        else:
            self._pending.append(data)

    def primaryAnswered(self, code: int) -> None:
        """The status the client got (0: none, it left first): compared with the shadow's once both are known."""
        if not code:
            return
        self.primary = code
        if self.shadow:
            self.mirror.compare(code, self.shadow)

    def _connected(self, result: tuple[Server, ShadowProtocol]) -> None:
        if self.done:
            result[1].transport.abortConnection()  # type: ignore[union-attr]
            self._dispatch.release()
            return
        proto = self._proto = result[1]
        proto.carry(self, self._isHead)
        pending, self._pending = self._pending, []
        proto.transport.writeSequence(pending)  # type: ignore[union-attr]

    def _failed(self, reason: Failure) -> None:
        if not reason.check(DispatchFailed, CancelledError):  # the shadow's balancer or a hook raised
            _log.failure("{copy}: choosing a shadow server failed", reason, copy=self)
        if not self.done:
            self._finish(failed=True)

    def shadowAnswered(self, code: int) -> None:
        """The shadow's whole response arrived: count it, compare, end the copy."""
        if self.done:
            return
        self.shadow = code
        self.mirror.answered += 1
        if self.primary:
            self.mirror.compare(self.primary, code)
        self._finish(failed=False)

    def shadowLost(self) -> None:
        """The shadow's connection closed before its status line."""
        if not self.done:
            self._finish(failed=True)

    def _timedOut(self) -> None:
        self.mirror.timedOut += 1
        self._finish(failed=True)

    def _finish(self, failed: bool) -> None:
        self.done = True
        self._pending = []
        mirror = self.mirror
        mirror.inFlight.discard(self)
        if failed:
            mirror.failed += 1
        if not mirror.inFlight and mirror._idle:
            waiting, mirror._idle = mirror._idle, []
            for d in waiting:
                d.callback(None)
        if self._timer.active():
            self._timer.cancel()
        dispatch = self._dispatch
        dispatch.cancel()
        dispatch.release()
        proto, self._proto = self._proto, None
        if proto is None or proto.transport is None:
            return
        if not failed and proto.complete and self._left == 0 and not self._chunked:
            self._pool.put(proto)  # type: ignore[arg-type]
        else:
            proto.copy = None
            proto.transport.abortConnection()  # type: ignore[attr-defined]
