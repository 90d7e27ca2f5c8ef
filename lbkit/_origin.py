# -*- test-case-name: tests.test_config -*-
"""
Where a configuration object was made: L{definedAt} records the file and
line of the site file (or other code outside lbkit) that created it, so a
configuration error can say C{"site.py:12: ..."}.

Foundation: imports nothing from lbkit.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Tuple

__all__ = ["DefinedAt", "definedAt"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

#: C{(filename, line)}; C{("<unknown>", 0)} when no caller is outside lbkit.
DefinedAt = Tuple[str, int]


def definedAt() -> DefinedAt:
    """
    The file and line, outside lbkit itself, that is creating an object.
    Used in configuration errors ("site.py:12: ...").
    """
    frame: Any = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_PACKAGE_DIR + os.sep):
            return (frame.f_code.co_filename, frame.f_lineno)
        frame = frame.f_back
    return ("<unknown>", 0)
