"""
tcp mode (layer 4): accept a client, choose a server, connect, and pump
bytes both ways with back-pressure and half-close.

Public names: L{Frontend}, L{TCPProxyFactory}, L{TCPFrontendProtocol},
L{TCPServerProtocol}, SNI routing (L{Route}, L{sniIs}, L{sniEnds},
L{sniAbsent}, L{ClientHello}), connection rules (L{reject}) and
L{TCP_LOG_FORMAT}.
"""

from lbkit.tcp._frontend import TCP_LOG_FORMAT, Frontend, TCPProxyFactory
from lbkit.tcp._proxy import TCPFrontendProtocol
from lbkit.tcp._rules import Reject, reject
from lbkit.tcp._server import TCPServerProtocol
from lbkit.tcp._sni import ClientHello, Route, sniAbsent, sniEnds, sniIs

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
    "reject",
    "Reject",
]
