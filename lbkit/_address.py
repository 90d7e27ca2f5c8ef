# -*- test-case-name: tests.test_model -*-
"""
Host-and-port helpers shared by the model, TLS, health checks and the
connecting code: parsing C{"host:port"}, formatting addresses for logs,
telling IP addresses from host names, and the client endpoint that reaches
a host (L{hostEndpoint}).

Foundation: imports nothing from lbkit but L{lbkit.error}.  The names are
public in this private module; the modules of lbkit import them from here.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Tuple

from twisted.internet import endpoints
from twisted.internet.interfaces import IStreamClientEndpoint

from lbkit.error import ConfigError

__all__ = ["parseAddress", "formatAddress", "isIPv4", "isIPv6", "hostEndpoint", "parseUDP"]


def parseAddress(address: str) -> Tuple[str, int]:
    """
    Split C{"host:port"} (or C{"[v6addr]:port"}) into host and port.

    @raise ConfigError: when C{address} cannot be parsed.
    """
    if not isinstance(address, str):
        raise ConfigError(f"server address must be a 'host:port' string, not {address!r}")
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"cannot parse server address {address!r}: expected '[v6addr]:port'")
        portText = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"cannot parse server address {address!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, portText = address.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"cannot parse server address {address!r}: expected 'host:port'")
        if ":" in host:
            raise ConfigError(f"cannot parse server address {address!r}: write IPv6 addresses as '[addr]:port'")
    if not portText.isdigit() or not 0 < int(portText) < 65536:
        raise ConfigError(f"cannot parse server address {address!r}: port {portText!r} is not a number from 1 to 65535")
    return host, int(portText)


def formatAddress(address: Any) -> str:
    """
    C{host:port} (C{[v6]:port}) of an address for logs, or C{-} when it has
    no host (UNIX sockets, unknown).
    """
    host = getattr(address, "host", None)
    if host is None:
        return "-"
    port = getattr(address, "port", 0)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def isIPv4(host: str) -> bool:
    """Whether C{host} is an IPv4 address (not a host name)."""
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def isIPv6(host: str) -> bool:
    """Whether C{host} is an IPv6 address (not a host name)."""
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def hostEndpoint(reactor: Any, host: str, port: int, timeout: float) -> IStreamClientEndpoint:
    """
    The client endpoint that connects to C{host}:C{port}: TCP over IPv4 or
    IPv6 for an address, else a L{HostnameEndpoint
    <twisted.internet.endpoints.HostnameEndpoint>} (which resolves the name
    without blocking).

    @param timeout: Seconds a connect may take.
    """
    if isIPv4(host):
        return endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    if isIPv6(host):
        return endpoints.TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return endpoints.HostnameEndpoint(reactor, host.encode("ascii"), port, timeout=timeout)


def parseUDP(description: str) -> tuple[int, str]:
    """C{"udp:5353:interface=127.0.0.1"} -> C{(5353, "127.0.0.1")}."""
    parts = description.replace("\\:", "\0").split(":")
    if parts[0] != "udp" or len(parts) < 2 or not parts[1].isdigit():
        raise ConfigError(f"udp.Frontend: expected 'udp:PORT[:interface=ADDRESS]', not {description!r}")
    port = int(parts[1])
    if not 0 <= port <= 65535:
        raise ConfigError(f"udp.Frontend: port {port} is not from 0 to 65535")
    interface = ""
    for option in parts[2:]:
        key, _, value = option.partition("=")
        if key != "interface" or not value:
            raise ConfigError(f"udp.Frontend: unknown option {option!r} in {description!r} (interface= is known)")
        interface = value.replace("\0", ":")
    return port, interface
