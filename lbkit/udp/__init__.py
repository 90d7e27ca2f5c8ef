"""
UDP balancing: L{Frontend} opens a session per client address and port and
keeps it on one server of its backend (docs/udp.md).
"""

from lbkit.udp._frontend import UDP_LOG_FORMAT, Frontend, UDPProxy

__all__ = ["Frontend", "UDPProxy", "UDP_LOG_FORMAT"]
