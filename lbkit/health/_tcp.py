# -*- test-case-name: tests.test_health_checks -*-
"""
L{TCPCheck}: a server passes when a TCP connection to it succeeds.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from lbkit._model import Server
from lbkit.health._base import BaseCheck, connectFailure

__all__ = ["TCPCheck"]


class _ProbeFactory(Factory):
    protocol = Protocol
    noisy = False


@attrs.frozen
class TCPCheck(BaseCheck):
    """
    Connect, and close at once with a reset (so neither side keeps a
    C{TIME_WAIT} socket): a server passes when the connection succeeds.
    HAProxy's plain C{check}.

    Takes every keyword argument of L{BaseCheck}: C{interval}, C{rise},
    C{fall}, C{timeout}, C{fastinter}, C{downinter}, C{addr}, C{port},
    C{observe} and the rest.
    """

    passReason = "Layer4 check passed"

    def check(self, server: Server, reactor: Any) -> Deferred[None]:
        d = self.endpointFor(server, reactor).connect(_ProbeFactory())

        def connected(protocol: Protocol) -> None:
            if protocol.transport is not None:
                protocol.transport.abortConnection()  # type: ignore[attr-defined]

        return d.addCallbacks(connected, connectFailure)
