"""
A user-written persistence strategy: keep every request carrying the same
``X-Session`` header on one server, used from a site file exactly like a
built-in.

    twistd -n lbkit --config examples/custom_persistence.py
    curl -H 'X-Session: alice' http://127.0.0.1:8083/   # always the same server
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from zope.interface import implementer

from lbkit import Backend, Context, Server, http
from lbkit.demo import HelloServer
from lbkit.interfaces import IPersistence


@implementer(IPersistence)
class HeaderSession:
    """Remember the server of each session id (LRU, bounded)."""

    def __init__(self, header: bytes = b"x-session", size: int = 10_000) -> None:
        self.header = header
        self.size = size
        self.table: OrderedDict[bytes, Server] = OrderedDict()

    def _session(self, context: Context) -> Optional[bytes]:
        request = context.request
        return request.header(self.header) if request is not None else None

    def recall(self, backend: Backend, context: Context) -> Optional[Server]:
        session = self._session(context)
        return self.table.get(session) if session else None

    def remember(self, backend: Backend, server: Server, context: Context) -> None:
        session = self._session(context)
        if session:
            self.table[session] = server
            self.table.move_to_end(session)
            if len(self.table) > self.size:
                self.table.popitem(last=False)


app = Backend(
    "app",
    servers=[Server("app1", "127.0.0.1:9041"), Server("app2", "127.0.0.1:9042")],
    persistence=HeaderSession(),
)

listen = [
    http.Frontend("tcp:8083:interface=127.0.0.1", default=app, name="sessions"),
    HelloServer("app1", "tcp:9041:interface=127.0.0.1"),
    HelloServer("app2", "tcp:9042:interface=127.0.0.1"),
]
