# -*- test-case-name: tests.test_http3 -*-
"""
What C{http.Frontend(..., http3=True)} adds to a frontend: the check of
its settings, the C{Alt-Svc} header of its responses, and the QUIC port's
service beside the TCP one.  Without aioquic (the C{lbkit[http3]}
extra) a frontend asking for HTTP/3 gets a L{ConfigError}.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService
from zope.interface import implementer

from lbkit.error import ConfigError
from lbkit.interfaces import IRequestRule

try:
    import aioquic  # the optional extra lbkit[http3]
except ImportError:  # pragma: no cover - the test extra installs it
    aioquic = None  # type: ignore[assignment]
if aioquic is not None:
    from lbkit.http._h3 import H3Server
    from lbkit.http._h3service import H3Service

__all__ = ["AltSvc", "http3Port", "http3Services"]


def http3Port(endpoint: str, tls: Any) -> tuple[int, str]:
    """
    The UDP port and interface of a frontend's HTTP/3: those of its TCP
    endpoint C{tcp:PORT[:interface=ADDRESS]}.

    @raise ConfigError: without TLS, with client certificates (mTLS is not
        offered over QUIC), without aioquic, or without a fixed port.
    """
    where = f"http.Frontend {endpoint!r}"
    if tls is None:
        raise ConfigError(f"{where}: http3=True needs TLS (tls=Certificates(...) or an ssl: endpoint)")
    if getattr(tls, "clientCA", None) is not None:
        raise ConfigError(f"{where}: http3=True cannot be combined with client certificates (clientCA)")
    if aioquic is None:
        raise ConfigError(f"{where}: http3=True needs the aioquic package (pip install 'lbkit[http3]')")
    parts = endpoint.replace("\\:", "\0").split(":")
    if parts[0] not in ("tcp", "tcp6") or len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) == 0:
        raise ConfigError(f"{where}: http3=True needs a 'tcp:PORT' endpoint with a fixed port (QUIC listens on it too)")
    interface = ""
    for option in parts[2:]:
        key, _, value = option.partition("=")
        if key == "interface":
            interface = value.replace("\0", ":")
    return int(parts[1]), interface


@implementer(IRequestRule)
class AltSvc:
    """
    A response rule: advertise HTTP/3 on C{port} (RFC 7838 C{Alt-Svc},
    kept a day), unless the server sent an C{Alt-Svc} of its own.
    """

    def __init__(self, port: int, maxAge: int = 86400) -> None:
        self.value = b'h3=":%d"; ma=%d' % (port, maxAge)

    def applyToRequest(self, request: Any, exchange: Any) -> None:
        """(Nothing: it only changes responses.)"""

    def applyToResponse(self, response: Any, exchange: Any) -> None:
        """Add C{Alt-Svc} unless the response has one."""
        if response.header(b"alt-svc") is None:
            response.headers.append([b"Alt-Svc", self.value])


def http3Services(listening: IService, factory: Any, certs: Any, port: int, interface: str,
                  retry: bool = False) -> IService:
    """The frontend's TCP service C{listening} and its QUIC port (with Retry tokens if C{retry}), as one service."""
    services = MultiService()
    services.description = listening.description  # type: ignore[attr-defined]
    listening.setServiceParent(services)
    H3Service(H3Server(factory, certs, retry=retry), port, interface).setServiceParent(services)
    return services
