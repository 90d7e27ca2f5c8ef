# -*- test-case-name: tests.test_reactor -*-
"""
An opt-in epoll reactor that skips Twisted's per-event log context.

Select it with C{twistd --reactor=lbkit-epoll ...} (the plugin in
C{twisted/plugins/lbkit_plugin.py}), or call L{install} before anything
imports C{twisted.internet.reactor}.

L{twisted.internet.epollreactor.EPollReactor.doPoll} dispatches every ready
descriptor through C{log.callWithLogger(selectable, ...)}, which asks the
selectable for its C{logPrefix()}, copies the legacy log context and calls
through C{twisted.python.context}: some 3-5 microseconds per event, about a
quarter of lbkit's CPU time on small proxied requests.  L{LeanEPollReactor}
calls C{_doReadOrWrite} directly instead.

What is the same: C{_doReadOrWrite} already catches any exception raised by
C{doRead}/C{doWrite} (that is, by C{dataReceived} and friends), logs it with
C{log.err()} and disconnects the selectable, exactly as before.  What it
does not catch (an exception from C{connectionLost} while the selectable is
being disconnected, or from C{fileno()}) is caught here and logged with the
selectable's log prefix as the C{system}, as C{callWithLogger} did, so one
bad connection never stops the loop.  C{KeyboardInterrupt} propagates in
both.

What is lost: legacy C{twisted.python.log.msg}/C{log.err} events emitted
I{inside} an I/O callback no longer carry the transport's log prefix (such
as C{"TCPFrontendProtocol,12,127.0.0.1"}) as their C{system}; they get the
default C{"-"}.  That includes the traceback C{_doReadOrWrite} logs for an
exception in C{dataReceived}.  Events from L{twisted.logger.Logger} (all of
lbkit's own logging) never carried it, and are unchanged.
"""

from __future__ import annotations

import errno

from twisted.internet.epollreactor import EPollReactor
from twisted.python import log

__all__ = ["LeanEPollReactor", "install"]


def _logPrefix(selectable: object) -> str:
    """The selectable's C{logPrefix()}, or a placeholder if that fails."""
    try:
        return str(selectable.logPrefix())  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        raise
    except BaseException:
        return "(buggy logPrefix method)"


class LeanEPollReactor(EPollReactor):
    """
    L{EPollReactor} whose C{doPoll} calls C{_doReadOrWrite} for each ready
    descriptor directly, without C{log.callWithLogger}.  See the module
    docstring for what that trades.
    """

    def doPoll(self, timeout: float | None) -> None:
        """
        Poll the poller for new events and handle them.

        Called by the reactor's main loop, on the reactor thread, once per
        iteration.

        @param timeout: The longest to wait, in seconds; L{None} waits until
            an event arrives.
        """
        # Upstream's doPoll (Twisted 26.10), with the dispatch inlined.
        if timeout is None:
            timeout = -1  # Wait indefinitely.

        try:
            # As many events as we have selectables; block at most timeout.
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            # Any other failure of epoll_wait(2) is a programming error:
            # announce it loudly.
            raise

        _drdw = self._doReadOrWrite
        selectables = self._selectables
        for fd, event in events:
            try:
                selectable = selectables[fd]
            except KeyError:
                pass
            else:
                try:
                    _drdw(selectable, fd, event)
                except KeyboardInterrupt:
                    raise
                except BaseException:
                    # What callWithLogger would have caught and logged.
                    log.err(system=_logPrefix(selectable))

    doIteration = doPoll


def install() -> None:
    """
    Install L{LeanEPollReactor} as the global reactor.  Call it before
    anything imports C{twisted.internet.reactor}; C{twistd
    --reactor=lbkit-epoll} does.
    """
    p = LeanEPollReactor()
    from twisted.internet.main import installReactor

    installReactor(p)
