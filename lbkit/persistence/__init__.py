"""
Session persistence strategies: each one an L{lbkit.interfaces.IPersistence}.
"""

from lbkit.persistence._cookie import Cookie
from lbkit.persistence._source import StickySource

__all__ = ["StickySource", "Cookie"]
