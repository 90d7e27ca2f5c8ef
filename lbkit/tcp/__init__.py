"""
tcp mode (layer 4): accept a client, choose a server, connect, and pump
bytes both ways with back-pressure and half-close.
"""

from lbkit.tcp._proxy import (
    TCP_LOG_FORMAT,
    ClientHello,
    Frontend,
    Route,
    TCPFrontendProtocol,
    TCPProxyFactory,
    TCPServerProtocol,
    sniAbsent,
    sniEnds,
    sniIs,
)

__all__ = [
    "Frontend",
    "TCPProxyFactory",
    "TCPFrontendProtocol",
    "TCPServerProtocol",
    "Route",
    "sniIs",
    "sniEnds",
    "sniAbsent",
    "ClientHello",
    "TCP_LOG_FORMAT",
]
