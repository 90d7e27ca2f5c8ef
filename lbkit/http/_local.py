# -*- test-case-name: tests.test_http_rules -*-
"""
http mode: answering a request from the balancer.  L{answerFirst} runs a
request's answering rules (L{lbkit.interfaces.IAnsweringRule}: the
frontend's, then, once routed, its route's) and writes the first
L{lbkit.http.Answer} one returns to the client side, HTTP/1.1 or HTTP/2
alike, instead of choosing a server; a delayed answer (tarpit) is held
by a L{Held}.

An exchange calls it only when its frontend's C{answering} is true; it
then also asks the response cache (L{lbkit.http._cache}), if any.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from twisted.python.failure import Failure

from lbkit.http._answers import Answer
from lbkit.http._headers import CODE_CLASS, errorBody

if TYPE_CHECKING:
    from lbkit.http._exchange import Exchange

__all__ = ["answerFirst", "answerWith", "Held"]


def answerFirst(exchange: Exchange) -> bool:
    """
    Run the answering rules of C{exchange}'s request, routing it between
    the frontend's and its route's (C{exchange.backend}, C{route}).

    @return: Whether the request was answered (or dropped, when a rule or
        the routing hook raised): nothing more is to be done for it.
    """
    try:
        if _run(exchange, exchange.frontend.answeringRules):
            return True
        exchange.backend, exchange.route = exchange.hooks.routeRequest(exchange.request)  # type: ignore[arg-type]
        rules = getattr(exchange.route, "answeringRules", None)
        if rules is not None and _run(exchange, rules):
            return True
        caching = exchange.frontend.caching  # (docs/cache.md)
        return caching is not None and caching.lookUp(exchange)
    except Exception:
        exchange.internalError(Failure())
        return True


def _run(exchange: Exchange, rules: Sequence[Any]) -> bool:
    request = exchange.request
    for rule in rules:
        answer = rule.answerRequest(request, exchange)
        if answer is not None:
            if not isinstance(answer, Answer):
                raise TypeError(f"{rule!r}.answerRequest returned {answer!r}, not an lbkit.http.Answer")
            _deliver(exchange, answer)
            return True
    return False


def answerWith(exchange: Exchange, answer: Answer) -> None:
    """Give C{answer} to C{exchange}'s request (WAITING, routed or not), logged as any answer."""
    _deliver(exchange, answer)


def _deliver(exchange: Exchange, answer: Answer) -> None:
    exchange.termination = answer.termination
    exchange.status = answer.status
    if answer.close or not exchange.bodyDone:
        # a body not read yet is not read: the connection closes after it
        exchange.closeAfter = True
    if answer.delay > 0:
        exchange.side.pauseReading()
        exchange.held = Held(exchange, answer)
        return
    _write(exchange, answer)


def _write(exchange: Exchange, answer: Answer) -> None:
    side = exchange.side
    request = exchange.request
    assert request is not None
    if answer.errorPage:
        body, contentType = errorBody(answer.status, exchange.frontend.errorPages)
    else:
        body, contentType = answer.body, answer.contentType
    status = answer.status
    exchange.respondedAt = exchange.reactor.seconds()
    exchange.factory.responses[CODE_CLASS[status // 100]] += 1
    exchange._go("answer")
    if request.method == b"HEAD":
        sent = b""
    else:
        sent = body
    head = side.responseHeadBytes(answer.response(body, contentType), len(sent), False)
    if head:
        side.writeResponse(head)
    if sent:
        side.writeResponse(sent)
    exchange.bytesOut = len(head) + len(sent)
    if exchange.closeAfter:
        exchange._end(False)
        exchange.close()
    else:
        exchange._end(True)
        exchange._after()


class Held:
    """
    A delayed answer (tarpit): the client side is paused until it is
    written, C{answer.delay} seconds on; the exchange L{cancel}s it if the
    client leaves first.
    """

    def __init__(self, exchange: Exchange, answer: Answer) -> None:
        self.exchange = exchange
        self.answer = answer
        self.call = exchange.reactor.callLater(answer.delay, self._fire)

    def _fire(self) -> None:
        exchange, answer = self.exchange, self.answer
        exchange.held = None
        if answer.done is not None:
            answer.done()
        _write(exchange, answer)

    def cancel(self) -> None:
        """The client left, or the exchange was dropped: answer nothing."""
        self.exchange.held = None
        if self.call.active():
            self.call.cancel()
            if self.answer.done is not None:
                self.answer.done()
