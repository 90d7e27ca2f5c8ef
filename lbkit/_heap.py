# -*- test-case-name: tests.test_footprint -*-
"""
Give the C heap's free pages back to the system once lbkit has started
(issue 11, docs/operations.md "Memory").

Loading the site, compiling its rules and starting its services leaves
freed memory in glibc's heap that a long-running process keeps as RSS
(about 1 MiB for an http frontend).  L{trimHeap} asks glibc to return it
(C{malloc_trim(0)}); where the C library has no C{malloc_trim} (musl,
macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
from typing import Any, Optional

__all__ = ["trimHeap"]

_trim: Optional[Any] = None
_looked = False


def _mallocTrim() -> Optional[Any]:
    """The C library's C{malloc_trim}, looked up once among the process's own symbols; C{None} without one."""
    global _trim, _looked
    if not _looked:
        _looked = True
        try:
            _trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _trim = None
    return _trim


def trimHeap() -> bool:
    """
    Return the C heap's free pages to the system (glibc's
    C{malloc_trim(0)}); called once the reactor runs by C{twistd lbkit}
    and by each worker process.

    @return: Whether the C library could be asked.
    """
    trim = _mallocTrim()
    if trim is None:
        return False
    trim(0)
    return True
