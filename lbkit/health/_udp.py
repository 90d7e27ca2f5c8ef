# -*- test-case-name: tests.test_udp -*-
"""
Health checks for UDP servers: L{UDPCheck} sends bytes and expects a reply
(that starts with given bytes); L{DNSCheck} asks a DNS question and expects
an answer.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Optional

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

from lbkit._address import isIPv4, isIPv6
from lbkit._model import Server
from lbkit.error import CheckFailed, ConfigError
from lbkit.health._base import BaseCheck

__all__ = ["UDPCheck", "DNSCheck"]


def _dns() -> Any:
    """C{twisted.names.dns}, imported by the first L{DNSCheck}, not when lbkit is (issue 11: RSS)."""
    from twisted.names import dns

    return dns


class _Probe(DatagramProtocol):
    """Sends one datagram from its own connected socket and waits for a reply."""

    def __init__(self, accept: Callable[[bytes], Optional[str]]) -> None:
        self.accept = accept
        self.done: Deferred[None] = Deferred(lambda d: self.finish())
        self.port: Any = None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        why = self.accept(data)
        if why is None:
            self.finish()
            self.done.callback(None)
        elif why:  # "" means: not the answer, keep waiting
            self.finish()
            self.done.errback(CheckFailed(why))

    def connectionRefused(self) -> None:
        self.finish()
        self.unreachable()

    def stopProtocol(self) -> None:
        # Twisted's epoll reactor drops a connected UDP port on an ICMP
        # error instead of calling connectionRefused
        if self.port is not None:
            self.port = None
            self.unreachable()

    def unreachable(self) -> None:
        if not self.done.called:
            self.done.errback(CheckFailed("Layer4 connection problem, info: \"port unreachable\""))

    def finish(self) -> None:
        port, self.port = self.port, None
        if port is not None:
            port.stopListening()


def _probe(
    check: BaseCheck, server: Server, reactor: Any, payload: bytes, accept: Callable[[bytes], Optional[str]]
) -> Deferred[None]:
    """
    Send C{payload} to the check's target; C{accept(reply)} says C{None}
    (pass), a reason (fail) or C{""} (not the reply: keep waiting).
    Cancelling (the monitor's timeout) closes the socket.
    """
    host, port = check.target(server)
    if not host:
        raise ConfigError(f"{type(check).__name__}: server {server.name!r} has no host; set addr=")
    probe = _Probe(accept)

    def start(address: str) -> None:
        if probe.done.called:  # cancelled (timed out) while resolving
            return
        try:
            probe.port = reactor.listenUDP(0, probe, interface="::" if ":" in address else "0.0.0.0")
            probe.port.connect(address, port)
            probe.port.write(payload)
        except Exception as e:
            probe.finish()
            probe.done.errback(CheckFailed(f"Layer4 connection problem, info: \"{e}\""))

    def unresolved(reason: Any) -> None:
        if not probe.done.called:
            probe.done.errback(CheckFailed(f"Layer4 connection problem, info: \"cannot resolve {host}\""))

    if isIPv4(host) or isIPv6(host):
        start(host)
    else:
        reactor.resolve(host).addCallbacks(start, unresolved)
    return probe.done


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    raise ConfigError(f"UDPCheck: send and expect must be bytes or str, not {value!r}")


def _optionalBytes(value: Any) -> Optional[bytes]:
    return None if value is None else _bytes(value)


@attrs.frozen
class UDPCheck(BaseCheck):
    """
    Send C{send} in one datagram; the server passes when a reply arrives
    (starting with C{expect}, when given) within C{timeout}.  A port
    unreachable (ICMP) fails at once.  Takes every keyword argument of
    L{BaseCheck}.
    """

    send: bytes = attrs.field(default=b"", converter=_bytes)
    expect: Optional[bytes] = attrs.field(default=None, kw_only=True, converter=_optionalBytes)

    passReason = "Layer4 check passed"

    def check(self, server: Server, reactor: Any) -> Deferred[None]:
        expect = self.expect

        def accept(data: bytes) -> Optional[str]:
            if expect is None or data.startswith(expect):
                return None
            return f"Layer7 wrong reply, info: \"{data[:40]!r}\""

        return _probe(self, server, reactor, self.send, accept)


@attrs.frozen
class DNSCheck(BaseCheck):
    """
    Ask C{name} (record C{type}, default A) over UDP; the server passes when
    it answers the question with NOERROR (or NXDOMAIN, with
    C{acceptNXDomain=True}).  Takes every keyword argument of L{BaseCheck}.
    """

    name: str = attrs.field(default="")
    type: str = attrs.field(default="A", kw_only=True)
    acceptNXDomain: bool = attrs.field(default=False, kw_only=True)

    passReason = "Layer7 check passed"

    def __attrs_post_init__(self) -> None:
        BaseCheck.__attrs_post_init__(self)
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("DNSCheck: name must be a non-empty host name")
        if not hasattr(_dns(), self.type):
            raise ConfigError(f"DNSCheck: unknown record type {self.type!r}")

    def check(self, server: Server, reactor: Any) -> Deferred[None]:
        dns = _dns()
        ident = random.randrange(1, 65536)
        message = dns.Message(id=ident, recDes=True)
        message.queries = [dns.Query(self.name, getattr(dns, self.type), dns.IN)]
        good = (dns.OK, dns.ENAME) if self.acceptNXDomain else (dns.OK,)

        def accept(data: bytes) -> Optional[str]:
            answer = dns.Message()
            try:
                answer.fromStr(data)
            except Exception:
                return "Layer7 invalid response, info: \"not a DNS message\""
            if answer.id != ident:
                return ""  # not ours: keep waiting
            if answer.rCode not in good:
                return f"Layer7 wrong status, info: \"rcode {answer.rCode}\""
            return None

        return _probe(self, server, reactor, message.toStr(), accept)
