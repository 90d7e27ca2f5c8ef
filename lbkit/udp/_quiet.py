# -*- test-case-name: tests.test_udp -*-
"""
A session's UDP socket without Twisted's log lines: C{listenUDP} logs
"starting on", "Starting protocol", "(UDP Port N Closed)" and "Stopping
protocol" for every port, four legacy log events per session (with
C{responses=1}, per DNS query), which cost more than the query itself.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import base, error, udp
from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.protocol import DatagramProtocol

__all__ = ["listenQuietly"]


class _QuietPort(udp.Port):
    """L{udp.Port}, opening and closing without a log line."""

    def _bindSocket(self) -> None:
        try:
            skt = self.createInternetSocket()
            skt.bind((self.interface, self.port))
        except OSError as le:
            raise error.CannotListenError(self.interface, self.port, le) from None
        self._realPortNumber = skt.getsockname()[1]
        self.connected = 1
        self.socket = skt
        self.fileno = self.socket.fileno  # type: ignore[method-assign]

    def connectionLost(self, reason: Any = None) -> None:
        self._realPortNumber = None
        self.maxThroughput = -1
        base.BasePort.connectionLost(self, reason)
        self.protocol.doStop()
        self.socket.close()
        del self.socket
        del self.fileno
        if hasattr(self, "d"):
            self.d.callback(None)
            del self.d


def listenQuietly(reactor: Any, protocol: DatagramProtocol, interface: str) -> Any:
    """
    A UDP port on an ephemeral port of C{interface} for C{protocol}, as
    C{reactor.listenUDP(0, protocol, interface=interface)} but unlogged
    (on a reactor that is not a file-descriptor reactor, such as a test's
    fake, C{listenUDP} itself).
    """
    if not IReactorFDSet.providedBy(reactor):
        return reactor.listenUDP(0, protocol, interface=interface)
    port = _QuietPort(0, protocol, interface, reactor=reactor)
    port.startListening()
    return port
