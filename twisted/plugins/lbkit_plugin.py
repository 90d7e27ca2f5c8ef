"""
The C{twistd lbkit} plugin.  It imports nothing but L{ServiceMaker}: the real
work lives in L{lbkit.tap}, loaded only when the plugin is used.
"""

from twisted.application.service import ServiceMaker

lbkit = ServiceMaker(
    "lbkit",
    "lbkit.tap",
    "A load balancer and reverse proxy (tcp and http modes)",
    "lbkit",
)
