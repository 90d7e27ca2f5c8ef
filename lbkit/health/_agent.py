# -*- test-case-name: tests.test_health_checks -*-
"""
L{AgentCheck}: the server reports its own health and weight on a side
port, as HAProxy's C{agent-check}.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from lbkit._model import Server
from lbkit.error import CheckFailed, ConfigError
from lbkit.health._base import BaseCheck, connectFailure

__all__ = ["AgentCheck", "AgentReply", "parseAgentReply"]

_PERCENT = re.compile(r"^(\d{1,3})%$")
_MAXCONN = re.compile(r"^maxconn:(\d+)$")
_DOWN_WORDS = ("down", "fail", "stopped", "maint")


@attrs.frozen
class AgentReply:
    """
    What an agent said.

    @ivar state: The last state word (C{"up"}, C{"ready"}, C{"drain"},
        C{"down"}, C{"fail"}, C{"stopped"}, C{"maint"}), or C{None}.
    @ivar percent: A weight as a percentage of the initial weight, or
        C{None}.
    @ivar maxconn: A new C{maxconn}, or C{None}.
    @ivar message: Text after a C{#}, shown in the reason.
    """

    state: Optional[str] = None
    percent: Optional[int] = None
    maxconn: Optional[int] = None
    message: str = ""


def parseAgentReply(line: bytes) -> AgentReply:
    """
    Parse one agent line, e.g. C{b"up 75%\\n"}, C{b"drain"},
    C{b"down #disk full"}, C{b"maxconn:30 ready"}.  Words are separated by
    spaces, commas or tabs; unknown words are ignored, as HAProxy does.
    """
    text = line.decode("ascii", "replace").strip()
    text, _, message = text.partition("#")
    state = percent = maxconn = None
    for word in re.split(r"[\s,]+", text.strip().lower()):
        if not word:
            continue
        m = _PERCENT.match(word)
        if m:
            percent = min(int(m.group(1)), 100 * 256)
            continue
        m = _MAXCONN.match(word)
        if m:
            maxconn = int(m.group(1))
            continue
        if word in ("up", "ready", "drain", *_DOWN_WORDS):
            state = word
    return AgentReply(state=state, percent=percent, maxconn=maxconn, message=message.strip())


class _AgentProtocol(Protocol):
    def __init__(self, send: bytes, limit: int = 1024) -> None:
        self.send = send
        self.limit = limit
        self.buffer = b""
        self.finished: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        if self.send and self.transport is not None:
            self.transport.write(self.send)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" in self.buffer or len(self.buffer) >= self.limit:
            self._done()
            if self.transport is not None:
                self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._done()

    def _done(self) -> None:
        if not self.finished.called:
            self.finished.callback(self.buffer.split(b"\n", 1)[0][: self.limit])


class _AgentFactory(Factory):
    noisy = False

    def __init__(self, send: bytes) -> None:
        self.send = send

    def buildProtocol(self, addr: Any) -> _AgentProtocol:
        return _AgentProtocol(self.send)


def _checkSend(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bytes):
        raise ConfigError(f"AgentCheck: send must be bytes, not {value!r}")


@attrs.frozen
class AgentCheck(BaseCheck):
    """
    Connect to the server's agent (on C{port}, required, and C{addr} if
    set), optionally send C{send}, and read one line back.  The line holds
    words, as HAProxy's C{agent-check}:

      - C{"75%"}: set the server's weight to 75% of its configured weight
        (applied with L{lbkit.Server.setWeight}, so balancers see it);
      - C{"maxconn:30"}: set its C{maxconn};
      - C{"drain"}: weight 0, so only sticky clients reach it;
        C{"ready"} or C{"up"} give back the weight C{drain} took;
      - C{"down"}, C{"fail"}, C{"stopped"}, C{"maint"}: the check fails
        (C{fall} of them take it DOWN); text after C{#} is the reason.

    A connection failure also fails the check.  Takes every keyword
    argument of L{BaseCheck}.
    """

    send: bytes = attrs.field(default=b"", validator=_checkSend, kw_only=True)

    passReason = "Layer7 agent check passed"

    def __attrs_post_init__(self) -> None:
        BaseCheck.__attrs_post_init__(self)
        if self.port is None:
            raise ConfigError("AgentCheck: port= (the agent's port) is required")

    def check(self, server: Server, reactor: Any) -> Deferred[None]:
        factory = _AgentFactory(self.send)
        d: Deferred[Any] = self.endpointFor(server, reactor).connect(factory)
        holder: list[_AgentProtocol] = []

        def connected(protocol: Any) -> Any:
            holder.append(protocol)
            return protocol.finished

        def cancel(outer: Deferred[None]) -> None:
            d.cancel()
            for protocol in holder:
                if protocol.transport is not None:
                    protocol.transport.abortConnection()  # type: ignore[attr-defined]

        result: Deferred[None] = Deferred(cancel)
        d.addCallbacks(connected, connectFailure)
        d.addCallback(lambda line: self.apply(server, parseAgentReply(line)))
        d.chainDeferred(result)
        return result

    def apply(self, server: Server, reply: AgentReply) -> None:
        """
        Act on C{reply} for C{server}: change its weight and C{maxconn},
        and fail when the agent says it is down.

        @raise CheckFailed: when the agent reports C{down}, C{fail},
            C{stopped} or C{maint}.
        """
        if reply.maxconn is not None:
            server.maxconn = reply.maxconn or None
        if reply.state == "drain":
            server.setWeight(0)
        elif reply.percent is not None:
            server.setWeight(min(256, server.initialWeight * reply.percent // 100))
        elif reply.state in ("up", "ready") and server.weight == 0 and server.initialWeight:
            server.setWeight(server.initialWeight)
        if reply.state in _DOWN_WORDS:
            why = f", info: \"{reply.message}\"" if reply.message else ""
            raise CheckFailed(f"Layer7 agent reports {reply.state}{why}")
