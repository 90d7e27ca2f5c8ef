"""
The C{twistd lbkit} plugin and the C{lbkit-epoll} reactor.  It imports
nothing but Twisted's plugin helpers (L{ServiceMaker}, L{Reactor}): the
real work lives in L{lbkit.tap} and L{lbkit.reactor}, loaded only when
used.  Importing a reactor here would break C{--reactor} for every plugin.
"""

from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

lbkit = ServiceMaker(
    "lbkit",
    "lbkit.tap",
    "A load balancer and reverse proxy (tcp and http modes)",
    "lbkit",
)

lbkitepoll = Reactor(
    "lbkit-epoll",
    "lbkit.reactor",
    "epoll reactor without per-event log context (faster)",
)
