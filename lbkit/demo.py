# -*- test-case-name: tests.test_examples -*-
"""
Tiny in-process HTTP servers for demos and examples: each answers every
request with C{200} and a body naming itself.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.application.service import IService
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from lbkit._listening import ListeningService
from lbkit._origin import definedAt
from lbkit.interfaces import IListener

__all__ = ["HelloServer"]


class _Hello(Resource):
    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"x-served-by", self.name.encode())
        return f"{self.name}\n".encode()


@implementer(IListener)
class HelloServer:
    """
    A demo backend server: put it in C{listen} next to the frontends, and it
    is started in the same process.

    @param name: What it answers with.
    @param endpoint: Where it listens, e.g. C{"tcp:9001:interface=127.0.0.1"}.
    """

    def __init__(self, name: str, endpoint: str) -> None:
        self.definedAt = definedAt()
        self.name = name
        self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"<demo.HelloServer {self.name} {self.endpoint}>"

    def backends(self) -> Sequence[Any]:
        return []

    def makeService(self, reactor: Any) -> IService:
        site = Site(_Hello(self.name))
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]
        label = f"demo server {self.name}"
        return ListeningService(self.endpoint, site, reactor, label)  # type: ignore[arg-type]

