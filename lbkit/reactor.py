# -*- test-case-name: tests.test_reactor -*-
"""
An opt-in epoll reactor that skips Twisted's per-event log context.

Select it with C{twistd --reactor=lbkit-epoll ...} (the plugin in
C{twisted/plugins/lbkit_plugin.py}), or call L{install} before anything
imports C{twisted.internet.reactor}.

L{twisted.internet.epollreactor.EPollReactor.doPoll} dispatches every ready
descriptor through C{log.callWithLogger(selectable, ...)}, which asks the
selectable for its C{logPrefix()}, copies the legacy log context and calls
through C{twisted.python.context}: some 3-5 microseconds per event, a good
part of lbkit's CPU time on small proxied requests (docs/operations.md).
L{LeanEPollReactor.doPoll} calls C{_doReadOrWrite} directly instead, and
handles a read-only event on one of Twisted's own TCP connections itself
(C{recv} and C{dataReceived}, with no call in between).

What is kept: the legacy log C{system} (the transport's log prefix, such as
C{"HTTPFrontendProtocol,12,127.0.0.1"}) wherever something goes wrong or a
connection ends.  L{LeanEPollReactor._doReadOrWrite} (upstream's, otherwise
unchanged) logs the traceback of an exception from C{doRead}/C{doWrite}
(that is, from C{dataReceived} and friends) with the selectable's log
prefix as its C{system}, then disconnects the selectable as before; the
disconnection (C{connectionLost}, once per connection) runs under
C{log.callWithLogger}, so whatever C{connectionLost} logs, or raises, carries
the prefix too.  Anything else that escapes is caught and logged with the
prefix, so one bad connection never stops the loop.  A C{KeyboardInterrupt}
that escapes C{_doReadOrWrite} propagates, as upstream.

What is still lost: a legacy C{twisted.python.log.msg} (or C{log.err}) call
I{inside} a successful read or write callback, such as user code in a
C{dataReceived} that does not raise, gets the default C{system} C{"-"}
instead of the transport's log prefix.  Events from
L{twisted.logger.Logger} (all of lbkit's own logging) never carried it, and
are unchanged.
"""

from __future__ import annotations

import errno
import sys
from errno import EWOULDBLOCK
from select import EPOLLIN
from typing import Any, Callable

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionFdescWentAway
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.tcp import Connection
from twisted.python import log

__all__ = ["LeanEPollReactor", "install"]

#: What C{_doReadOrWrite} disconnects a selectable whose C{fileno()} is -1
#: with (upstream's C{posixbase._NO_FILEDESC}).
_NO_FILEDESC = ConnectionFdescWentAway("File descriptor lost")


def _logPrefix(selectable: object) -> str:
    """The selectable's C{logPrefix()}, or a placeholder if that fails."""
    try:
        return str(selectable.logPrefix())  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        raise
    except BaseException:
        return "(buggy logPrefix method)"


def _readsPlainly(kind: type) -> bool:
    """
    Whether selectables of class C{kind} read as Twisted's own TCP
    connections do (C{tcp.Connection.doRead} and C{_dataReceived},
    neither overridden), so that L{LeanEPollReactor.doPoll} may read them
    itself.
    """
    return (
        getattr(kind, "doRead", None) is Connection.doRead
        and getattr(kind, "_dataReceived", None) is Connection._dataReceived
    )


class LeanEPollReactor(EPollReactor):
    """
    L{EPollReactor} whose C{doPoll} calls C{_doReadOrWrite} for each ready
    descriptor directly, without C{log.callWithLogger}; errors and
    disconnections still carry the selectable's log prefix.  See the module
    docstring for what that trades.
    """

    def __init__(self) -> None:
        self._plainReads = {}
        self._relays = {}
        self._relayed = {}
        super().__init__()

    def doPoll(self, timeout: float | None) -> None:
        """
        Poll the poller for new events and handle them.

        Called by the reactor's main loop, on the reactor thread, once per
        iteration.

        @param timeout: The longest to wait, in seconds; C{None} waits until
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
        plainReads = self._plainReads
        relays = self._relays
        why: BaseException | None
        for fd, event in events:
            try:
                selectable = selectables[fd]
            except KeyError:
                continue
            try:
                if event == EPOLLIN:
                    relay = relays.get(fd) if relays else None
                    # (a relayed transport has no doRead of its own: nothing sets one
                    # but abortConnection, which stops its events)
                    if relay is None or relay[0] is not selectable:
                        relay = None
                        kind = type(selectable)
                        plain = plainReads.get(kind)
                        if plain is None:
                            plain = plainReads[kind] = _readsPlainly(kind)
                        if not plain or "doRead" in selectable.__dict__ or selectable.fileno() == -1:
                            # (a doRead of the instance's own: tcp mode's splice relay,
                            # an abortConnection's no-op; or a closed socket)
                            _drdw(selectable, fd, event)
                            continue
                    # tcp.Connection.doRead and _dataReceived, inlined (see
                    # _plainReads), or a relay's read and write (relayDirectly);
                    # the rest as _doReadOrWrite.
                    try:
                        if relay is None:
                            data = selectable.socket.recv(selectable.bufferSize)
                        else:
                            data = relay[1](relay[2])
                    except OSError as se:
                        if se.args[0] == EWOULDBLOCK:
                            continue
                        why, inRead = CONNECTION_LOST, True
                    else:
                        if data:
                            try:
                                if relay is None:
                                    selectable.protocol.dataReceived(data)
                                    continue
                                n = len(data)
                                relay[5].bytes += n
                                writer = relay[3]
                                # writeThrough's own test, inline: calling that writer
                                # for every read instead cost 0.3-0.4 us of the 2.2 us
                                # of user CPU a tcp request takes (measured 2026-12-04)
                                if (
                                    writer.dataBuffer or writer._tempDataLen or writer.disconnecting
                                    or writer._writeDisconnecting or not writer.connected
                                ):
                                    relay[6](data)
                                    continue
                                try:
                                    sent = relay[4](data)
                                except OSError:  # would block, or broken: writeRest deals with it
                                    sent = 0
                                if sent != n:
                                    relay[6](data[sent:])
                                continue
                            except BaseException:
                                why, inRead = sys.exc_info()[1], False
                                log.err(system=_logPrefix(selectable))
                        else:
                            why, inRead = CONNECTION_DONE, True
                    log.callWithLogger(selectable, self._disconnectSelectable, selectable, why, inRead)
                    continue
                _drdw(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                # _doReadOrWrite catches what the selectable raises;
                # anything else, log as callWithLogger would have.
                log.err(system=_logPrefix(selectable))

    doIteration = doPoll

    #: Per selectable class: whether its read is Twisted's own
    #: C{tcp.Connection.doRead} (L{_readsPlainly}).  A read-only event on
    #: such a connection is handled in C{doPoll} itself, without the three
    #: calls of C{_doReadOrWrite}, C{doRead} and C{_dataReceived}: C{recv}
    #: once and hand the bytes to the protocol; an error, the end of the
    #: stream or an exception from C{dataReceived} disconnects it as
    #: C{_doReadOrWrite} does (about a tenth of the CPU of a small
    #: request in tcp mode; docs/operations.md).
    _plainReads: dict[type, bool]

    #: Per descriptor: the direct relay L{relayDirectly} set up for it.
    _relays: dict[int, tuple[Any, ...]]
    #: Per relaying transport: its descriptor in L{_relays}.
    _relayed: dict[Any, int]

    def relayDirectly(self, reader: Any, writer: Any, counter: Any, writeRest: Callable[[bytes], None]) -> bool:
        """
        Relay what C{reader} reads straight to C{writer}'s socket, in
        C{doPoll} itself: C{recv} on one socket, C{send} on the other, and
        C{counter.bytes} raised by what was read, with no Python call in
        between.  Whatever the socket does not take, and every read while
        C{writer} still holds unsent bytes or is closing, goes to
        C{writeRest} (L{lbkit._pump.writeThrough}'s writer, which buffers
        it in Twisted's transport and pauses C{reader}).  The end of the
        stream, an error, or an exception from C{writeRest} ends C{reader}
        the way a plain read does.  C{reader}'s protocol's C{dataReceived}
        is not called: relay only for a protocol whose C{dataReceived} does
        nothing else (tcp mode's).

        Both must be Twisted's own TCP connections, read as
        C{tcp.Connection} reads (L{_readsPlainly}); otherwise nothing is set
        up.  L{stopRelaying} undoes it; lbkit calls it when C{reader}'s
        connection is lost (L{lbkit._pump.relay}).

        @return: Whether the relay was set up.
        """
        if not (_readsPlainly(type(reader)) and isinstance(writer, Connection)) or "doRead" in reader.__dict__:
            return False
        fd = reader.fileno()
        if fd == -1:
            return False
        self._relays[fd] = (reader, reader.socket.recv, reader.bufferSize, writer, writer.socket.send, counter, writeRest)
        self._relayed[reader] = fd
        return True

    def stopRelaying(self, reader: Any) -> None:
        """
        Undo L{relayDirectly} for C{reader}, if it was set up: its reads go
        to its protocol's C{dataReceived} again.
        """
        fd = self._relayed.pop(reader, None)
        if fd is not None and self._relays.get(fd, (None,))[0] is reader:
            del self._relays[fd]

    def _doReadOrWrite(self, selectable: object, fd: int, event: int) -> None:
        """
        Do the read or write C{event} says C{fd} (C{selectable}'s
        descriptor) is ready for, and disconnect C{selectable} if that ends
        its connection.

        Upstream's C{_PollLikeMixin._doReadOrWrite} (Twisted 26.10), with
        the same behaviour, except that the traceback of an exception from
        C{doRead}/C{doWrite} is logged with the selectable's log prefix as
        its C{system}, and the disconnection runs under
        C{log.callWithLogger}: what upstream's C{doPoll} gave every event.
        """
        why: BaseException | None = None
        inRead = False
        if event & self._POLL_DISCONNECTED and not (event & self._POLL_IN):
            # Disconnected, with all pending input processed.  If we were
            # reading, a clean shutdown (or a half-close, hence inRead);
            # otherwise an error shutdown of some sort.
            if fd in self._reads:
                inRead = True
                why = CONNECTION_DONE
            else:
                why = CONNECTION_LOST
        else:
            # Any non-disconnect event turns into a doRead or a doWrite.
            try:
                # fileno() first: -1 means it closed (and fileno() may raise).
                if selectable.fileno() == -1:  # type: ignore[attr-defined]
                    why = _NO_FILEDESC
                else:
                    if event & self._POLL_IN:
                        why = selectable.doRead()  # type: ignore[attr-defined]
                        inRead = True
                    if not why and event & self._POLL_OUT:
                        # A write, as long as doRead did not disconnect us.
                        why = selectable.doWrite()  # type: ignore[attr-defined]
                        inRead = False
            except BaseException:
                # Any exception from application code is logged, under the
                # selectable's log prefix, and disconnects the selectable.
                why = sys.exc_info()[1]
                log.err(system=_logPrefix(selectable))
        if why:
            # Once per connection: worth the log context, so that whatever
            # connectionLost logs (or raises) names the connection.
            log.callWithLogger(selectable, self._disconnectSelectable, selectable, why, inRead)


def install() -> None:
    """
    Install L{LeanEPollReactor} as the global reactor.  Call it before
    anything imports C{twisted.internet.reactor}; C{twistd
    --reactor=lbkit-epoll} does.
    """
    p = LeanEPollReactor()
    from twisted.internet.main import installReactor

    installReactor(p)
