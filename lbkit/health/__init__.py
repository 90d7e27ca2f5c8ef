"""
Health checks: active probes (L{TCPCheck}, L{HTTPCheck}, L{AgentCheck}, or
your own L{BaseCheck} subclass), passive checks of live traffic
(C{observe=}), and slow start, run per server by L{HealthMonitor} under a
backend's L{HealthService}.  See docs/health.md.
"""

from lbkit.health._agent import AgentCheck, AgentReply, parseAgentReply
from lbkit.health._base import BaseCheck, connectFailure
from lbkit.health._http import HTTPCheck
from lbkit.health._monitor import HealthMonitor, monitorFor
from lbkit.health._service import HealthService
from lbkit.health._tcp import TCPCheck
from lbkit.health._udp import DNSCheck, UDPCheck

__all__ = [
    "BaseCheck",
    "connectFailure",
    "TCPCheck",
    "HTTPCheck",
    "UDPCheck",
    "DNSCheck",
    "AgentCheck",
    "AgentReply",
    "parseAgentReply",
    "HealthMonitor",
    "HealthService",
    "monitorFor",
]
