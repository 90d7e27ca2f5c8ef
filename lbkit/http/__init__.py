"""
http mode (layer 7): a reverse proxy that routes each request.

Public names: L{Frontend}, L{Route}, the matchers (L{pathBegins} and
friends), the header rules and L{Request}.
"""

from lbkit.http._frontend import Frontend
from lbkit.http._parse import BadMessage, Request, Response
from lbkit.http._proxy import HTTPFrontendProtocol, HTTPProxyFactory, HTTPServerProtocol
from lbkit.http._routing import (
    Route,
    allOf,
    anyOf,
    headerExists,
    headerIs,
    headerMatches,
    hostIs,
    hostMatches,
    methodIs,
    notMatching,
    pathBegins,
    pathEnds,
    pathIs,
    pathMatches,
    sourceIn,
)
from lbkit.http._rules import addHeader, deleteHeader, setHeader

__all__ = [
    "Frontend",
    "Route",
    "Request",
    "Response",
    "BadMessage",
    "HTTPProxyFactory",
    "HTTPFrontendProtocol",
    "HTTPServerProtocol",
    "pathBegins",
    "pathIs",
    "pathEnds",
    "pathMatches",
    "hostIs",
    "hostMatches",
    "headerExists",
    "headerIs",
    "headerMatches",
    "methodIs",
    "sourceIn",
    "allOf",
    "anyOf",
    "notMatching",
    "addHeader",
    "setHeader",
    "deleteHeader",
]
