"""
The floor: the least a Twisted HTTP/1.1 reverse proxy can do per request,
to set lbkit's figures against (bench/run.py system C{twisted-floor}).

    python bench/floor.py PORT BACKEND_PORT[,BACKEND_PORT...]

Keep-alive on both sides, a shared pool of idle server connections (as
HAProxy's C{http-reuse always}), round robin per request, on lbkit's lean
reactor.  Per request it finds the end of each head, reads the response's
C{Content-Length} and counts the body; it forwards both heads unchanged.
Nothing else: no validation, no header rewrite, no routing, no timeouts,
no accounting, no log, no request bodies, no chunked responses.  It is
not a proxy to use; it is the cost of Twisted's reactor and transports
plus about twenty Python calls a request, so that bench/run.py can tell
how much of lbkit's cost per request is lbkit's own.
"""

from __future__ import annotations

import sys
from itertools import cycle

from lbkit.reactor import install

install()

from twisted.internet import reactor  # noqa: E402
from twisted.internet.protocol import ClientFactory, Factory, Protocol  # noqa: E402


class ServerSide(Protocol):
    """One connection to a backend, lent to one client request at a time."""

    def __init__(self, pool: list[ServerSide]) -> None:
        self.pool = pool
        self.client: ClientSide | None = None
        self.head = b""
        self.left = -1  # body bytes still to come; -1 while the head is read

    def connectionMade(self) -> None:
        self.client.serverReady(self)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        client = self.client
        if self.left < 0:
            data = self.head + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.head = data
                return
            self.head = b""
            at = data.lower().find(b"\r\ncontent-length:", 0, end)
            length = int(data[at + 17 : data.find(b"\r\n", at + 17)]) if at >= 0 else 0
            self.left = length - (len(data) - end - 4)
        else:
            self.left -= len(data)
        client.transport.write(data)  # type: ignore[union-attr]
        if self.left <= 0:
            self.left = -1
            self.client = None
            self.pool.append(self)
            client.responseDone()  # type: ignore[union-attr]

    def connectionLost(self, reason: object) -> None:
        if self in self.pool:
            self.pool.remove(self)
        elif self.client is not None:
            self.client.transport.loseConnection()  # type: ignore[union-attr]


class ClientSide(Protocol):
    """One client connection: one request at a time, each to the next backend."""

    def __init__(self, backends: cycle, pools: dict[int, list[ServerSide]]) -> None:
        self.backends = backends
        self.pools = pools
        self.buffer = b""
        self.busy = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self.next()

    def next(self) -> None:
        if self.busy:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        self.busy = True
        self.request, self.buffer = self.buffer[: end + 4], self.buffer[end + 4 :]
        port = next(self.backends)
        pool = self.pools[port]
        if pool:
            self.serverReady(pool.pop())
        else:
            reactor.connectTCP("127.0.0.1", port, _Connecting(self, pool))  # type: ignore[attr-defined]

    def serverReady(self, server: ServerSide) -> None:
        server.client = self
        server.transport.write(self.request)  # type: ignore[union-attr]

    def responseDone(self) -> None:
        self.busy = False
        if self.buffer:
            self.next()


class _Connecting(ClientFactory):
    def __init__(self, client: ClientSide, pool: list[ServerSide]) -> None:
        self.client = client
        self.pool = pool

    def buildProtocol(self, addr: object) -> ServerSide:
        server = ServerSide(self.pool)
        server.client = self.client
        return server

    def clientConnectionFailed(self, connector: object, reason: object) -> None:
        self.client.transport.loseConnection()  # type: ignore[union-attr]


def main() -> None:
    port = int(sys.argv[1])
    backends = [int(p) for p in sys.argv[2].split(",")]
    pools: dict[int, list[ServerSide]] = {p: [] for p in backends}
    turn = cycle(backends)
    factory = Factory()
    factory.buildProtocol = lambda addr: ClientSide(turn, pools)  # type: ignore[method-assign]
    reactor.listenTCP(port, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    print(f"floor listening on {port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
