# -*- test-case-name: tests.test_http3 -*-
"""
L{H3Service}: the UDP port of a frontend's HTTP/3 (its datagram protocol
is L{lbkit.http._h3.H3Server}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from lbkit._listening import ListenFailed, portFromSource

if TYPE_CHECKING:
    from lbkit.http._h3 import H3Server

__all__ = ["H3Service"]

_log = Logger(namespace="lbkit.http")


class H3Service(Service):
    """
    Listens for a frontend's QUIC datagrams while running: the UDP port
    with the number of its TCP one, on the same interface.
    """

    #: With --workers every worker receives on its own SO_REUSEPORT socket
    #: of the address (lbkit.workers), as a udp.Frontend does: the kernel
    #: keeps a client's address and port, so its connection, on one worker.
    shared = True

    def __init__(self, server: H3Server, port: int, interface: str) -> None:
        self.server = server
        self.factory = server
        self.portNumber = port
        self.interface = interface
        self.description = f"udp:{port}:interface={interface}" if interface else f"udp:{port}"
        self.label = f"frontend {server.factory.frontend.name} (HTTP/3)"
        self.port: Any = None

    def privilegedStartService(self) -> None:
        if self.port is not None:
            return
        adopted = portFromSource(self)
        if adopted is not None:
            self.port = adopted
            return
        try:
            self.port = self.server.factory.reactor.listenUDP(self.portNumber, self.server, interface=self.interface)
        except CannotListenError as e:
            raise ListenFailed(f"{self.label} cannot listen on {self.description!r}: {e.socketError}", e) from None
        _log.info("lbkit: {label} listening on {endpoint}", label=self.label, endpoint=self.description)

    def startService(self) -> None:
        self.privilegedStartService()
        Service.startService(self)

    def stopService(self) -> Deferred[None]:
        """
        Finish the requests in flight (the frontend's drain kills what is
        left after its grace period, as for TCP connections), then close
        the port: datagrams keep flowing while connections finish.
        """
        Service.stopService(self)
        self.server.stopGracefully()

        def close(_: object) -> Deferred[None]:
            port, self.port = self.port, None
            if port is None:
                return succeed(None)
            return maybeDeferred(port.stopListening).addCallback(lambda _: None)

        return self.server.whenEmpty().addCallback(close)
