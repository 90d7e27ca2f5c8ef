"""
http mode (layer 7): a reverse proxy that routes each request.

Public names: L{Frontend}, L{Route}, the matchers (L{pathBegins} and
friends), the header rules and L{Request}.
"""

from lbkit.http._frontend import Frontend, HTTPProxyFactory
from lbkit.http._h1 import HTTPFrontendProtocol
from lbkit.http._headers import HTTP_LOG_FORMAT
from lbkit.http._parse import BadMessage, Request, Response
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
from lbkit.http._server import HTTPServerProtocol

__all__ = [
    "Frontend",
    "Route",
    "Request",
    "Response",
    "BadMessage",
    "HTTPProxyFactory",
    "HTTPFrontendProtocol",
    "HTTPServerProtocol",
    "HTTP_LOG_FORMAT",
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
