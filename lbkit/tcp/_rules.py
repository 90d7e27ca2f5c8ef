# -*- test-case-name: tests.test_tcp_rules -*-
"""
tcp-mode rules (L{lbkit.interfaces.IConnectionRule}), looked at once per
accepted connection before any server is chosen: L{reject} (HAProxy's
C{tcp-request connection reject}).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from zope.interface import implementer

from lbkit._model import Context
from lbkit.error import ConfigError
from lbkit.interfaces import IConnectionRule, IRequestMatcher

__all__ = ["reject", "Reject", "checkedConnectionRules", "rejects"]


@implementer(IConnectionRule)
class Reject:
    """
    Close the connection at once when C{when} matches its client (always,
    without one); see L{reject}.

    @ivar when: A matcher that reads only the client's address
        (C{clientOnly}: L{lbkit.http.sourceIn}, or L{lbkit.http.allOf} and
        friends of such), or C{None}.
    @ivar rejected: How many connections it closed.
    """

    def __init__(self, when: Optional[Any] = None) -> None:
        if when is not None:
            if not IRequestMatcher.providedBy(when):
                raise ConfigError(f"tcp.reject: when= must be a matcher (lbkit.http.sourceIn), not {when!r}")
            if not getattr(when, "clientOnly", False):
                raise ConfigError(
                    f"tcp.reject: {when!r} reads the request; in tcp mode only matchers of the client's"
                    " address (http.sourceIn, and allOf/anyOf/notMatching of them) can be used"
                )
        self.when = when
        self.rejected = 0

    def __repr__(self) -> str:
        return "<reject>" if self.when is None else f"<reject when {self.when!r}>"

    def rejects(self, context: Context) -> bool:
        """Whether the connection of C{context} is to be closed."""
        when = self.when
        if when is None or when.matches(None, context):
            self.rejected += 1
            return True
        return False


def reject(when: Optional[Any] = None) -> Reject:
    """
    A tcp-mode rule: close the connection at once, before any server is
    chosen, when C{when} matches (HAProxy's C{tcp-request connection
    reject}); logged with termination C{PR}.
    """
    return Reject(when)


def checkedConnectionRules(rules: Sequence[Any], where: str) -> tuple[IConnectionRule, ...]:
    """C{rules}, each checked to provide L{IConnectionRule} (else L{ConfigError})."""
    for rule in rules:
        if not IConnectionRule.providedBy(rule):
            raise ConfigError(f"{where}: rule {rule!r} does not provide IConnectionRule (use tcp.reject)")
        if getattr(rule, "clientOnly", True) is False:
            raise ConfigError(f"{where}: rule {rule!r} reads the request; in tcp mode only the client's address can be")
    return tuple(rules)


def rejects(rules: Sequence[IConnectionRule], context: Context) -> bool:
    """Whether one of C{rules} rejects the connection of C{context}."""
    for rule in rules:
        if rule.rejects(context):
            return True
    return False
