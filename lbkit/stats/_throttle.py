# -*- test-case-name: tests.test_stats_security -*-
"""
L{LoginThrottle}: how many failed admin logins the stats page checks, per
client address and over all clients.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

__all__: list[str] = []


class _Entry:
    """One address's recent failures."""

    __slots__ = ("windowStart", "failures", "blockedUntil", "touched")

    def __init__(self, now: float) -> None:
        self.windowStart = now
        self.failures = 0
        self.blockedUntil = 0.0
        self.touched = now


class LoginThrottle:
    """
    Refuses admin logins from an address that failed C{failures} times
    within C{window} seconds, for C{lockout} seconds, without checking
    them; and refuses everybody's logins while more than C{rate} failures
    per second (bursts of up to four seconds' worth) are coming in over all
    addresses.  Time comes from C{clock}; the table of addresses holds at
    most C{tableSize} entries (the least recently seen go first), and no
    call costs more than constant time, amortised.

    The caller asks L{wait} before it checks a password, and reports the
    outcome with L{failed} or L{succeeded}.

    @param clock: An L{IReactorTime<twisted.internet.interfaces.IReactorTime>}; only its C{seconds()} is used, so the
        throttle schedules nothing.
    """

    def __init__(
        self,
        clock: Any,
        failures: int = 10,
        window: float = 60.0,
        lockout: float = 60.0,
        rate: float = 5.0,
        tableSize: int = 4096,
    ) -> None:
        self.clock = clock
        self.failures = failures
        self.window = window
        self.lockout = lockout
        self.rate = rate
        self.burst = max(1.0, 4 * rate)
        self.tableSize = tableSize
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._tokens = self.burst
        self._filled = clock.seconds()

    def __len__(self) -> int:
        return len(self._entries)

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._filled) * self.rate)
        self._filled = now

    def _forget(self, now: float) -> None:
        """Drop the least recently seen entries that are over, and any beyond C{tableSize}."""
        keep = max(self.window, self.lockout)
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.touched + keep > now and len(entries) <= self.tableSize:
                break
            entries.popitem(last=False)

    def blocked(self, key: str) -> int | None:
        """
        The whole seconds C{key} is still locked out for, or C{None} if it
        is not (the global rate is not looked at).
        """
        entry = self._entries.get(key)
        now: float = self.clock.seconds()
        if entry is None or entry.blockedUntil <= now:
            return None
        return max(1, math.ceil(entry.blockedUntil - now))

    def wait(self, key: str) -> int | None:
        """
        Whether a login from C{key} may be checked now: C{None} if so, else
        the whole seconds to wait (for C{Retry-After}).
        """
        lockedOut = self.blocked(key)
        if lockedOut is not None:
            self._entries.move_to_end(key)
            return lockedOut
        now = self.clock.seconds()
        self._refill(now)
        if self._tokens < 1:
            return max(1, math.ceil((1 - self._tokens) / self.rate))
        return None

    def failed(self, key: str) -> None:
        """A login from C{key} was checked and failed."""
        now = self.clock.seconds()
        self._refill(now)
        self._tokens = max(0.0, self._tokens - 1)
        entry = self._entries.pop(key, None)
        if entry is None:
            entry = _Entry(now)
        elif now - entry.windowStart >= self.window:
            entry.windowStart = now
            entry.failures = 0
        entry.failures += 1
        entry.touched = now
        if entry.failures >= self.failures:
            entry.blockedUntil = now + self.lockout
            entry.windowStart = now
            entry.failures = 0
        self._entries[key] = entry
        self._forget(now)

    def succeeded(self, key: str) -> None:
        """A login from C{key} was checked and succeeded: forget its failures."""
        self._entries.pop(key, None)
