"""
A health check written by a user: Redis answers C{PING} with C{+PONG}.

A check is any object providing L{lbkit.interfaces.IHealthCheck}.  The
easy way is to subclass L{lbkit.health.BaseCheck}: it brings every option
of the built-in checks (interval, rise, fall, timeout, fastinter,
downinter, addr, port, observe, ...) and C{endpointFor()}, and you write
C{check()}.  Then it is used exactly like a built-in::

    twistd -n lbkit --config examples/custom_check.py
    redis-cli -p 6390 ping          # answered by a healthy redis behind lbkit
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from lbkit import Backend, Server, tcp
from lbkit.error import CheckFailed
from lbkit.health import BaseCheck, connectFailure


class _Ping(Protocol):
    """Sends PING (after AUTH when there is a password), reads one line per command."""

    def __init__(self, password: Optional[str]) -> None:
        self.password = password
        self.buffer = b""
        self.lines: list[bytes] = []
        self.expected = 2 if password else 1
        self.answered: Deferred[list[bytes]] = Deferred()

    def connectionMade(self) -> None:
        if self.password:
            self.transport.write(b"AUTH " + self.password.encode() + b"\r\n")  # type: ignore[union-attr]
        self.transport.write(b"PING\r\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n" in self.buffer and len(self.lines) < self.expected:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            self.lines.append(line)
        if len(self.lines) >= self.expected or len(self.buffer) > 4096:
            self._answer()
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._answer()

    def _answer(self) -> None:
        if not self.answered.called:
            self.answered.callback(self.lines)


class _PingFactory(Factory):
    noisy = False

    def __init__(self, password: Optional[str]) -> None:
        self.password = password

    def buildProtocol(self, addr: Any) -> _Ping:
        return _Ping(self.password)


@attrs.frozen
class RedisCheck(BaseCheck):
    """
    Pass when the server answers C{PING} with C{+PONG}.

    @ivar password: Sent with C{AUTH} first, when set.
    """

    password: Optional[str] = attrs.field(default=None, kw_only=True)

    passReason = 'Layer7 check passed, info: "+PONG"'

    def check(self, server: Server, reactor: Any) -> Deferred[None]:
        protocols: list[_Ping] = []

        def connected(protocol: Any) -> Any:
            protocols.append(protocol)
            return protocol.answered

        def judge(lines: list[bytes]) -> None:
            expected = [b"+OK", b"+PONG"] if self.password else [b"+PONG"]
            if not lines:
                raise CheckFailed('Layer7 invalid response, info: "connection closed without answer"')
            for line, wanted in zip(lines, expected, strict=False):
                if line != wanted:
                    info = line[:60].decode("ascii", "replace")
                    raise CheckFailed(f'Layer7 wrong response, info: "{info}"')
            if len(lines) < len(expected):
                raise CheckFailed('Layer7 invalid response, info: "connection closed without answer"')

        def cancel(result: Deferred[None]) -> None:
            connecting.cancel()
            for protocol in protocols:
                if protocol.transport is not None:
                    protocol.transport.abortConnection()  # type: ignore[attr-defined]

        connecting: Deferred[Any] = self.endpointFor(server, reactor).connect(_PingFactory(self.password))
        result: Deferred[None] = Deferred(cancel)
        connecting.addCallbacks(connected, connectFailure)
        connecting.addCallback(judge)
        connecting.chainDeferred(result)
        return result


redis = Backend(
    "redis",
    servers=[
        Server("redis1", "127.0.0.1:6379"),
        Server("redis2", "127.0.0.1:6380", backup=True),
    ],
    health=RedisCheck(interval=1.0, rise=2, fall=2, timeout=0.5, observe="layer4", errorLimit=3),
)

listen = [
    tcp.Frontend("tcp:6390:interface=127.0.0.1", backend=redis, name="redis"),
]
