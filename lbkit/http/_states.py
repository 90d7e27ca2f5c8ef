# -*- test-case-name: tests.test_http -*-
"""
The states of an http exchange (L{lbkit.http._exchange.Exchange}) and
every transition between them, in one table (L{TRANSITIONS}); the exchange
moves only through it::

    HEAD       request: a request head arrived              -> WAITING
    HEAD       h2c: the HTTP/2 preface arrived instead       -> TUNNEL
    WAITING    send: its head went to a server connection   -> SENT
    WAITING    answer: a rule answered it (docs/rules.md)    -> STREAMING
    SENT       response: the final response head            -> STREAMING
    SENT       tunnel: 101 Switching Protocols              -> TUNNEL
    SENT       retry: the server failed, try again          -> WAITING
    STREAMING  next: response complete, keep the connection -> HEAD
    STREAMING  drain: response complete, request body not   -> DRAINING
    DRAINING   next: the rest of the body was read          -> HEAD
    any        close (an answer sent, or a clean end), abort,
               lost (the client went away)                   -> DONE

An HTTP/1.1 connection's exchange goes round from HEAD to HEAD once per
request; an HTTP/2 stream's goes from HEAD to DONE once.  A connection
handed to HTTP/2 (h2c) leaves its exchange in TUNNEL, without a request.  In WAITING, SENT,
STREAMING and TUNNEL it is I{active}: it has a request, and (but in
WAITING) a server connection.
"""

from __future__ import annotations

import enum

__all__ = ["State", "TRANSITIONS", "ACTIVE", "ANSWERING", "HEAD", "WAITING", "SENT", "STREAMING", "DRAINING", "TUNNEL", "DONE"]


class State(enum.Enum):
    """Where an exchange is (see the module docstring)."""

    HEAD = "head"
    WAITING = "waiting"
    SENT = "sent"
    STREAMING = "streaming"
    DRAINING = "draining"
    TUNNEL = "tunnel"
    DONE = "done"

    # members are singletons: hash by identity, in C (Enum's own __hash__
    # is Python code, and the exchange looks states up on every request)
    __hash__ = object.__hash__


HEAD, WAITING, SENT, STREAMING, DRAINING, TUNNEL, DONE = State
_ENDED = {"close": DONE, "abort": DONE, "lost": DONE}

#: Every transition of an exchange: state -> input -> next state.  An
#: input a state does not list is a bug (the exchange raises RuntimeError).
TRANSITIONS: dict[State, dict[str, State]] = {
    HEAD: {"request": WAITING, "h2c": TUNNEL, **_ENDED},
    WAITING: {"send": SENT, "answer": STREAMING, **_ENDED},
    SENT: {"response": STREAMING, "tunnel": TUNNEL, "retry": WAITING, **_ENDED},
    STREAMING: {"next": HEAD, "drain": DRAINING, **_ENDED},
    DRAINING: {"next": HEAD, **_ENDED},
    TUNNEL: {**_ENDED},
    DONE: {**_ENDED},
}
#: The states in which a request is in progress.
ACTIVE = frozenset([WAITING, SENT, STREAMING, TUNNEL])
#: The states in which a request went to a server: its response is awaited, or streaming.
ANSWERING = frozenset([SENT, STREAMING])
