"""
DNS for the discovery tests: L{FakeResolver}, whose lookups the test
answers, with records built by L{srv}, L{a} and L{aaaa}; and L{Dnsmasq}, a
real DNS server on a free 127.0.0.1 port, in the foreground, answering
only from the records a test gives it (no upstream, no /etc/hosts), with
TTL 0 unless told otherwise.  L{Named} servers and L{Asker} clients carry
the traffic.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
from typing import Any, Sequence

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IResolver
from twisted.internet.protocol import Protocol
from twisted.names import dns
from twisted.names.client import Resolver
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

from tests.helpers import ProcessRunner, spawn

#: A name every zone answers, to know dnsmasq is ready.
READY = "ready.example.test"


@implementer(IResolver)
class FakeResolver:
    """An L{IResolver} whose lookups stay pending until the test answers them."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, str, Deferred[Any]]] = []

    def _ask(self, kind: str, name: str) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.queries.append((kind, name, d))
        return d

    def lookupService(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return self._ask("SRV", name)

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return self._ask("A", name)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return self._ask("AAAA", name)

    def answer(self, answers: Sequence[Any], additional: Sequence[Any] = ()) -> tuple[str, str]:
        """Answer the oldest pending lookup; return its kind and name."""
        kind, name, d = self.queries.pop(0)
        d.callback((list(answers), [], list(additional)))
        return kind, name

    def fail(self, error: Exception) -> None:
        """Fail the oldest pending lookup."""
        self.queries.pop(0)[2].errback(error)


NAME = "_http._tcp.web.example.test"


def srv(target: str, port: int, priority: int = 0, weight: int = 0, ttl: int = 30) -> dns.RRHeader:
    return dns.RRHeader(NAME, dns.SRV, ttl=ttl, payload=dns.Record_SRV(priority, weight, port, target, ttl=ttl))


def a(name: str, ip: str, ttl: int = 30) -> dns.RRHeader:
    return dns.RRHeader(name, dns.A, ttl=ttl, payload=dns.Record_A(ip, ttl))


def aaaa(name: str, ip: str, ttl: int = 30) -> dns.RRHeader:
    return dns.RRHeader(name, dns.AAAA, ttl=ttl, payload=dns.Record_AAAA(ip, ttl))


def findDnsmasq() -> str:
    """The dnsmasq binary (Debian puts it in /usr/sbin), or skip the test."""
    found = shutil.which("dnsmasq", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if found is None:
        raise SkipTest("dnsmasq is not installed (Debian package dnsmasq)")
    return found


def freeDNSPort() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 a moment ago."""
    while True:
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
        finally:
            tcp.close()
            udp.close()


def srvHost(name: str, target: str, port: int, priority: int = 0, weight: int = 0) -> str:
    """The dnsmasq option of one SRV record."""
    return f"--srv-host={name},{target},{port},{priority},{weight}"


def hostRecord(name: str, address: str) -> str:
    """The dnsmasq option of one A (or AAAA) record."""
    return f"--host-record={name},{address}"


class Dnsmasq:
    """
    dnsmasq serving C{records} (dnsmasq options such as L{srvHost}'s) on
    L{port}; L{restart} serves other records on the same port.  The
    test's cleanup stops it.

    @ivar port: Its UDP and TCP port on 127.0.0.1.
    @ivar nameserver: C{"127.0.0.1:port"}.
    """

    def __init__(self, testCase: TestCase, reactor: Any, ttl: int = 0) -> None:
        self.binary = findDnsmasq()
        self.testCase = testCase
        self.reactor = reactor
        self.ttl = ttl
        self.port = freeDNSPort()
        self.nameserver = f"127.0.0.1:{self.port}"
        self.process: ProcessRunner | None = None

    def argv(self, records: Sequence[str]) -> list[str]:
        return [
            self.binary, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={self.port}", "--pid-file=",
            f"--user={getpass.getuser()}", "--local=/example.test/", f"--local-ttl={self.ttl}",
            "--log-facility=-", hostRecord(READY, "127.0.0.9"), *records,
        ]

    @inlineCallbacks
    def start(self, records: Sequence[str]) -> Any:
        """Start serving C{records}; fires once it answers queries."""
        self.process = spawn(self.testCase, self.reactor, self.argv(records))
        resolver = Resolver(servers=[("127.0.0.1", self.port)], reactor=self.reactor)
        for _ in range(100):
            if not self.process.running:
                raise RuntimeError(f"dnsmasq exited: {self.process.output!r}")
            try:
                yield resolver.lookupAddress(READY, timeout=(0.1,))
            except Exception:
                continue  # not listening yet: the query timed out
            return None
        raise RuntimeError(f"dnsmasq does not answer: {self.process.output!r}")

    def stop(self) -> Deferred[int]:
        """Stop it; fires once it exited."""
        assert self.process is not None
        return self.process.stop()

    @inlineCallbacks
    def restart(self, records: Sequence[str]) -> Any:
        """Serve C{records} instead, on the same port."""
        yield self.stop()
        yield self.start(records)


class Named(Protocol):
    """A server answering C{label:data} to each chunk."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(self.factory.label + b":" + data)  # type: ignore[attr-defined]


class Asker(Protocol):
    """A client that asks questions one at a time on one connection."""

    def __init__(self) -> None:
        self.answer: Deferred[bytes] | None = None
        self.lost: Deferred[None] = Deferred()

    def ask(self, data: bytes) -> Deferred[bytes]:
        assert self.transport is not None
        self.answer = Deferred()
        self.transport.write(data)
        return self.answer.addTimeout(5, self.factory.reactor)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        answer, self.answer = self.answer, None
        if answer is not None:
            answer.callback(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)
