# -*- test-case-name: tests.test_reload -*-
"""
Comparing the settings of policy objects (balancers, health checks, TLS
certificates): what a reload uses to tell "configured alike" from
"changed".

Foundation: imports nothing from lbkit.  The names are public in this
private module.
"""

from __future__ import annotations

from typing import Any

__all__ = ["publicSettings", "samePolicy", "balanceChanges"]


def publicSettings(o: Any) -> dict[str, Any]:
    """
    The settings of a policy object: its public attributes (for lbkit's
    balancers and checks, what their constructors were given).
    """
    names = list(getattr(o, "__dict__", {})) + [
        n for klass in type(o).__mro__ for n in getattr(klass, "__slots__", ())
    ]
    return {n: getattr(o, n, None) for n in names if not n.startswith("_")}


def samePolicy(a: Any, b: Any) -> bool:
    """Whether two policy objects (health checks, certificates) are configured alike."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    objectEq: Any = object.__eq__
    if type(a).__eq__ is not objectEq:
        return bool(a == b)  # attrs classes and others that compare their settings
    return bool(publicSettings(a) == publicSettings(b))


def balanceChanges(old: Any, new: Any) -> list[str]:
    """
    The change lines of a reload replacing balancer C{old} by C{new}: the
    class, or each setting (public attribute) that differs.
    """
    if old is new:
        return []
    before, after = type(old).__name__, type(new).__name__
    if type(old) is not type(new):
        return [f"balance {before} -> {after}"]
    was, now = publicSettings(old), publicSettings(new)
    return [
        f"balance {after}: {name} {was.get(name)!r} -> {now.get(name)!r}"
        for name in sorted(set(was) | set(now))
        if was.get(name) != now.get(name)
    ]
