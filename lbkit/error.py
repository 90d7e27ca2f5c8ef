# -*- test-case-name: tests.test_config -*-
"""
The exceptions lbkit raises.
"""

from __future__ import annotations

__all__ = [
    "LBKitError",
    "ConfigError",
    "NoServerAvailable",
    "QueueTimeout",
    "CheckFailed",
    "DrainTimeout",
]


class LBKitError(Exception):
    """
    Base class of every error lbkit raises on purpose.
    """


class ConfigError(LBKitError, ValueError):
    """
    A site file or a configuration object is wrong.  The message says what
    is wrong in words a user can act on.
    """


class NoServerAvailable(LBKitError):
    """
    No server of a backend can take the connection or request: all are
    down, in maintenance or draining.  tcp mode closes the client connection;
    http mode answers 503.
    """


class QueueTimeout(NoServerAvailable):
    """
    Every usable server was at its C{maxconn} and no slot freed up within the
    backend's C{timeoutQueue}.
    """


class CheckFailed(LBKitError):
    """
    A health check did not pass.  The message is the reason shown in logs
    and on the stats page, e.g. C{"Layer7 wrong status, code: 500"}.
    """


class DrainTimeout(LBKitError):
    """
    A server did not finish draining (L{lbkit.Server.drain}) in time.  The
    message says what is still there.

    @ivar server: The L{lbkit.Server}.
    @ivar connections: Its connections still open.
    @ivar sticky: Its sticky sessions still alive (-1: its backend's
        persistence cannot count them).
    """

    def __init__(self, message: str, server: object, connections: int, sticky: int) -> None:
        super().__init__(message)
        self.server = server
        self.connections = connections
        self.sticky = sticky
