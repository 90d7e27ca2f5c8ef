"""
Seeing and changing a running balancer: the stats page (HTML, JSON,
Prometheus metrics), the admin API and the command socket.

Put a L{Page} in the site file's C{listen} list::

    stats.Page("tcp:8404:interface=127.0.0.1",
               admin=stats.Admin(users={"admin": "secret"}))

See docs/stats.md.
"""

from lbkit.stats._admin import Admin
from lbkit.stats._page import Page

__all__ = ["Page", "Admin"]
