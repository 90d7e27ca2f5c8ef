# -*- test-case-name: tests.test_reload -*-
"""
Comparing the settings of policy objects (balancers, health checks, TLS
certificates): what a reload uses to tell "configured alike" from
"changed".

Foundation: imports only L{lbkit.interfaces}.  The names are public in this
private module.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

from lbkit.interfaces import IActiveBalancer

__all__ = ["publicSettings", "samePolicy", "balanceChanges", "sameTarget", "activeHookOf"]


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


def sameTarget(old: Any, new: Any) -> bool:
    """Whether C{new} connects to the same place, the same way, as C{old}."""
    tls = ("tls", "ca", "sni", "verify")
    if [getattr(old, n, None) for n in tls] != [getattr(new, n, None) for n in tls]:
        return False
    if old.givenEndpoint is not None or new.givenEndpoint is not None:
        return old.givenEndpoint is not None and new.givenEndpoint is not None
    return bool(old.address == new.address)


def activeHookOf(balancer: Any, where: tuple[str, int]) -> Callable[[Any], object] | None:
    """
    The C{activeChanged} method of C{balancer} when it provides
    L{IActiveBalancer}.  A balancer declaring only L{IBalancer} but having
    the method (as lbkit accepted before the interface existed) still gets
    called, with a C{DeprecationWarning} pointing at C{where}, the line
    that created the backend.
    """
    if IActiveBalancer.providedBy(balancer):
        return balancer.activeChanged  # type: ignore[attr-defined,no-any-return]
    hook = getattr(balancer, "activeChanged", None)
    if hook is not None and callable(hook):
        warnings.warn_explicit(
            f"{type(balancer).__name__} has activeChanged() but does not declare"
            " @implementer(IActiveBalancer) (lbkit.interfaces); it is called for"
            " now, declare the interface to keep it so",
            DeprecationWarning,
            where[0],
            where[1],
        )
        return hook  # type: ignore[no-any-return]
    return None
