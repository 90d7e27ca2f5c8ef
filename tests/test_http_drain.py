"""
A server that answers before the request body is complete (an early 413):
lbkit passes the answer on, reads and drops the rest of the body, and the
client's kept-alive connection carries its next request.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from lbkit import Backend, Server, http

reactor: Any = _reactor


class EarlyAnswer(Protocol):
    """Answers 413 to every request as soon as its head arrives."""

    def dataReceived(self, data: bytes) -> None:
        for _ in range(data.count(b"\r\n\r\n")):
            self.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig\n"
            )


class Client(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.waiting: tuple[bytes, Deferred[bytes]] | None = None
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.waiting is not None and self.waiting[0] in self.data:
            d = self.waiting[1]
            self.waiting = None
            d.callback(self.data)

    def waitFor(self, marker: bytes) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        if marker in self.data:
            d.callback(self.data)
        else:
            self.waiting = (marker, d)
        return d

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(None)


class DrainTests(TestCase):
    timeout = 15

    @inlineCallbacks
    def test_earlyAnswerKeepsConnection(self) -> Any:
        """The 413 arrives, the body's rest is dropped, and the next request works."""
        factory = Factory.forProtocol(EarlyAnswer)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        backend = Backend("b", [Server("s1", f"127.0.0.1:{port.getHost().port}")])
        service = http.Frontend("tcp:0:interface=127.0.0.1", default=backend, log=False).makeService(reactor)
        service.startService()
        self.addCleanup(service.stopService)
        front = service.port.getHost().port  # type: ignore[attr-defined]

        client = Client()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", front), client)
        body = b"x" * 200_000
        client.transport.write(  # type: ignore[union-attr]
            b"POST /upload HTTP/1.1\r\nHost: lb\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:1000]
        )
        yield client.waitFor(b"big\n")
        self.assertTrue(client.data.startswith(b"HTTP/1.1 413 "), client.data[:40])
        client.transport.write(body[1000:])  # type: ignore[union-attr]
        client.transport.write(b"GET /next HTTP/1.1\r\nHost: lb\r\n\r\n")  # type: ignore[union-attr]
        data = yield client.waitFor(b"big\nHTTP/1.1 413 ")
        self.assertEqual(data.count(b"HTTP/1.1 413 "), 2)
        self.assertFalse(client.lost.called)
        client.transport.loseConnection()  # type: ignore[union-attr]
        yield client.lost


class Silent(Protocol):
    """Reads everything and never answers."""

    def dataReceived(self, data: bytes) -> None:
        pass


class ClientTimeoutTests(TestCase):
    timeout = 15

    @inlineCallbacks
    def test_stalledUploadGets408(self) -> Any:
        """A client that stops sending its body gets 408 after timeoutClient, and is closed."""
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(Silent))
        self.addCleanup(port.stopListening)
        backend = Backend("b", [Server("s1", f"127.0.0.1:{port.getHost().port}")], timeoutServer=30)
        frontend = http.Frontend("tcp:0:interface=127.0.0.1", default=backend, log=False, timeoutClient=0.4)
        service = frontend.makeService(reactor)
        service.startService()
        self.addCleanup(service.stopService)
        client = Client()
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", service.port.getHost().port), client  # type: ignore[attr-defined]
        )
        started = reactor.seconds()
        client.transport.write(b"POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 100\r\n\r\n0123456789")  # type: ignore[union-attr]
        yield client.lost
        self.assertTrue(client.data.startswith(b"HTTP/1.1 408 "), client.data[:60])
        self.assertLess(reactor.seconds() - started, 5)
        self.assertEqual(backend.servers[0].active, 0)


class BadRequestLogTests(TestCase):
    timeout = 15

    @inlineCallbacks
    def test_badRequestIsLogged(self) -> Any:
        """A request lbkit cannot parse gets 400 and one access-log line saying <BADREQ>."""
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "lbkit.access":
                events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        backend = Backend("b", [Server("s1", "127.0.0.1:1")])
        service = http.Frontend("tcp:0:interface=127.0.0.1", default=backend, name="fe").makeService(reactor)
        service.startService()
        self.addCleanup(service.stopService)
        client = Client()
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", service.port.getHost().port), client  # type: ignore[attr-defined]
        )
        client.transport.write(b"GARBAGE\r\n\r\n")  # type: ignore[union-attr]
        yield client.lost
        self.assertTrue(client.data.startswith(b"HTTP/1.1 400 "), client.data[:40])
        self.assertEqual(
            [(e["status"], e["request"], e["termination"], e["server"]) for e in events],
            [(400, "<BADREQ>", "PR", "<NOSRV>")],
        )
