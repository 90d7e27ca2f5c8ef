# -*- test-case-name: tests.test_tcp -*-
"""
The phases of a tcp-mode client connection, and the HAProxy termination
codes (docs/operations.md) they give.

A L{lbkit.tcp.TCPFrontendProtocol} is ACCEPTED, then INSPECTING (a PROXY
header and/or the TLS ClientHello, with C{acceptProxy} or C{routes}),
QUEUED (looking for a server, maybe in the backend's queue), CONNECTING (a
server chosen), RELAYING, and CLOSED from any of them.  A code is read from
the phase the connection is in, or was in when it began to close: a client
lost while QUEUED is C{CQ}, while CONNECTING C{CC}, while RELAYING C{CD}.
"""

from __future__ import annotations

import enum

__all__ = ["CLIENT_LOST", "Phase", "Termination"]


class Phase(enum.Enum):
    """Where a L{lbkit.tcp.TCPFrontendProtocol} is in its life."""

    #: Built; C{connectionMade} has not run.
    ACCEPTED = "accepted"
    #: Reading a PROXY header and/or the TLS ClientHello (C{acceptProxy},
    #: C{routes}); nothing is sent to a server yet.
    INSPECTING = "inspecting"
    #: Looking for a server, or waiting in the backend's queue for one;
    #: reading is paused.
    QUEUED = "queued"
    #: A server was chosen: connecting to it (or, after a failed connect,
    #: retrying: looking for another, maybe in the queue).
    CONNECTING = "connecting"
    #: Both connections are up and bytes flow.
    RELAYING = "relaying"
    #: Closing or closed (the protocol keeps the phase it closed from).
    CLOSED = "closed"


#: The termination code of a client connection lost (not closed cleanly),
#: by phase.
CLIENT_LOST = {
    Phase.ACCEPTED: "CQ",
    Phase.INSPECTING: "CQ",
    Phase.QUEUED: "CQ",
    Phase.CONNECTING: "CC",
    Phase.RELAYING: "CD",
}


class Termination:
    """
    The termination codes of tcp mode besides L{CLIENT_LOST}'s and the
    dispatch ones (L{lbkit._dispatch}: C{SC}, C{sC}, C{sQ}, C{RC}).
    """

    SERVER_LOST = "SD"
    MALFORMED = "PR"
    REJECTED = "PR"  # a rule closed it (lbkit.tcp.reject)
    INTERNAL_ERROR = "IC"
    SESSION_KILLED = "SK"
    KILLED_RELAYING = "KD"
    KILLED_BEFORE = "KC"
    CLIENT_IDLE_RELAYING = "cD"
    CLIENT_IDLE_BEFORE = "cR"
    SERVER_IDLE = "sD"
