# -*- test-case-name: tests.test_tcp -*-
"""
Connecting to a server: its client endpoint (L{serverEndpoint}, with TLS
when the server has C{tls=True}), and one connect call that both modes use.
"""

from __future__ import annotations

from typing import Any, Optional, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import NotConnectingError
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IOpenSSLClientConnectionCreator,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure

from lbkit._address import hostEndpoint, isIPv4
from lbkit._backend import Backend
from lbkit._model import Context, Server
from lbkit._resources import resourceErrno, watch
from lbkit.error import ConfigError
from lbkit.tls import clientCreator, wrapClientEndpoint

__all__ = [
    "serverEndpoint",
    "tlsCreatorOf",
    "checkServerTLS",
    "connectServer",
    "connectFailed",
    "isLocalResourceError",
    "prepareRetry",
]

P = TypeVar("P", bound=Protocol)


def tlsCreatorOf(server: Server) -> IOpenSSLClientConnectionCreator | None:
    """
    The TLS connection creator of a C{tls=True} server (C{None} without
    TLS), built from its settings with L{lbkit.tls.clientCreator} the first
    time and kept on the server as C{server.tlsCreator}.

    @raise ConfigError: when its C{ca} file cannot be read or holds no
        certificate.
    """
    if not server.tls:
        return None
    if server.tlsCreator is None:
        # the server logged the verify=False warning when it was built
        alpn = [b"h2"] if server.proto == "h2" else None
        server.tlsCreator = clientCreator(server.tlsServerName, server.ca, server.verify, warn=False, alpn=alpn)
    return server.tlsCreator  # type: ignore[no-any-return]


def checkServerTLS(server: Server) -> None:
    """
    Build the TLS connection creator of C{server} now (reading its C{ca}
    file), as L{lbkit.config.checkListen} does for every server at load.

    @raise ConfigError: naming the file and line that created the server
        (C{"site.py:12: cannot read TLS CA file ..."}) when its TLS files
        are wrong.
    """
    try:
        tlsCreatorOf(server)
    except ConfigError as e:
        filename, line = server.definedAt
        raise ConfigError(f"{filename}:{line}: {e}" if line else str(e)) from None


def serverEndpoint(server: Server, reactor: Any, timeout: float = 30) -> IStreamClientEndpoint:
    """
    The client endpoint that connects to C{server}: the endpoint it was
    given, or one to its host and port; wrapped in TLS when it has
    C{tls=True}.  L{Server.endpoint} returns this.

    @param timeout: Seconds a connect may take (not for a given endpoint).
    """
    endpoint = server.givenEndpoint
    if endpoint is None:
        endpoint = hostEndpoint(reactor, server.host, server.port, timeout)
    creator = tlsCreatorOf(server)
    if creator is not None:
        return wrapClientEndpoint(creator, endpoint, reactor)
    return endpoint


class _OneShotFactory(Factory):
    """Hands out one protocol instance; quiet, unlike C{connectProtocol}'s."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Optional[IAddress]) -> Protocol:
        return self._protocol


class _DirectFactory(ClientFactory):
    noisy = False

    def __init__(self, protocol: Protocol, deferred: Deferred[Any]) -> None:
        self._protocol = protocol
        self._deferred = deferred

    def buildProtocol(self, addr: Optional[IAddress]) -> Protocol:
        protocol = self._protocol
        d = self._deferred
        original = protocol.makeConnection

        def makeConnection(transport: Any) -> None:
            del protocol.makeConnection
            original(transport)
            if not d.called:
                d.callback(protocol)

        protocol.makeConnection = makeConnection  # type: ignore[method-assign]
        return protocol

    #: Set when the attempt was cancelled: C{stopConnecting} then reports a
    #: failure synchronously, which must not pass for the server's fault.
    cancelled = False

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if not self._deferred.called and not self.cancelled:
            self._deferred.errback(reason)


def connectServer(reactor: Any, server: Server, protocol: P, timeout: float) -> Deferred[P]:
    """
    Connect C{protocol} to C{server}.

    An IPv4 server is reached with C{reactor.connectTCP} directly (no
    wrapping protocol in the data path); anything else, TLS servers
    included, through the server's endpoint.

    @return: A L{Deferred} firing with C{protocol} once connected, failing
        with the connect error, or with L{twisted.internet.defer.TimeoutError}
        after C{timeout} seconds (or at once with L{ConfigError} when the
        TLS files of a server never checked at load are wrong).  Cancelling
        it stops the attempt.
    """
    if server.givenEndpoint is None and not server.tls and isIPv4(server.host):
        connector: list[IConnector] = []

        def cancel(d: Deferred[P]) -> None:
            # Deferred.cancel fails d with CancelledError once this returns
            factory.cancelled = True
            if connector:
                try:
                    connector[0].stopConnecting()
                except NotConnectingError:
                    pass

        d: Deferred[P] = Deferred(cancel)
        factory = _DirectFactory(protocol, d)
        connector.append(reactor.connectTCP(server.host, server.port, factory, timeout=timeout))
    else:
        try:
            endpoint = serverEndpoint(server, reactor, timeout)
        except ConfigError:
            # TLS files not checked at load (no checkListen) and wrong: this
            # attempt fails with the error that names them
            return fail()
        d = endpoint.connect(_OneShotFactory(protocol))  # type: ignore[assignment]
    d.addTimeout(timeout, reactor)
    return d


def isLocalResourceError(reason: Failure) -> bool:
    """
    Whether a connect failed because lbkit itself ran out of something
    (file descriptors, socket memory, local ports) rather than because of
    the server: HAProxy's C{SF_ERR_RESOURCE}, logged with termination
    C{RC}.  L{connectFailed} charges such a failure to nobody.
    """
    return resourceErrno(reason.value) is not None


def connectFailed(server: Server, reason: Failure) -> bool:
    """
    Count a failed connect against C{server} and report it to passive
    health checks; both modes call this.

    A failure for lack of a local resource (L{isLocalResourceError}) is not
    the server's: it is not counted, not reported to the health checks,
    and only logged, once per episode (see L{lbkit._resources.watch}).

    @return: Whether the attempt timed out (C{timeout connect}), as opposed
        to being refused or failing otherwise.
    """
    number = resourceErrno(reason.value)
    if number is not None:
        watch.exhausted(number, f"server {server.fullName}")
        return False
    server.connectFailures += 1
    server.observe(False, f"Layer4 connection problem: {reason.getErrorMessage()}")
    return reason.check(DeferredTimeoutError, ConnectTimeoutError) is not None


def prepareRetry(backend: Backend, server: Server | None, context: Context) -> None:
    """
    Before choosing again after a failed attempt: count the retry, and when
    every eligible server has been tried, allow them all again (so a
    one-server backend retries that server).
    """
    if server is not None:
        server.retries += 1
    if not [s for s in backend.eligible() if s not in context.tried]:
        context.tried.clear()
