"""
Balance algorithms: each one an L{lbkit.interfaces.IBalancer}.
"""

from lbkit.balance._roundrobin import RoundRobin

__all__ = ["RoundRobin"]
