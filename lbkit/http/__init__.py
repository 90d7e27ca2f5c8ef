"""
http mode (layer 7): a reverse proxy that routes each request.

Public names: L{Frontend}, L{Route}, the matchers (L{pathBegins} and
friends), the request rules (header rules, and those that answer from
the balancer: L{deny}, L{redirect}, L{respond} and friends; docs/rules.md),
error pages (L{errorPage}), response compression (L{Compression}), the
response cache (L{Cache}, docs/cache.md), request IDs and trace
context (L{Tracing}; docs/tracing.md), L{Request}, and shadow traffic
(L{Mirror}, L{mirrorStats}) and scatter-gather (L{ScatterGather},
L{SubResponse}; docs/beyond.md).
"""

from lbkit.http._answers import (
    Answer,
    ErrorPage,
    Tarpit,
    deny,
    errorPage,
    redirect,
    redirectPrefix,
    redirectScheme,
    replacePath,
    respond,
    setPath,
    setQuery,
    tarpit,
)
from lbkit.http._cachestore import Cache
from lbkit.http._compression import Compression
from lbkit.http._frontend import Frontend, HTTPProxyFactory
from lbkit.http._h1 import HTTPFrontendProtocol
from lbkit.http._headers import HTTP_LOG_FORMAT
from lbkit.http._mirror import Mirror, mirrorStats
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
from lbkit.http._rules import addHeader, clientAddress, clientPort, deleteHeader, setHeader
from lbkit.http._scatter import ScatterGather, SubResponse
from lbkit.http._server import HTTPServerProtocol
from lbkit.http._tracing import HTTP_TRACED_LOG_FORMAT, Tracing

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
    "HTTP_TRACED_LOG_FORMAT",
    "Tracing",
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
    "clientAddress",
    "clientPort",
    "deny",
    "tarpit",
    "Tarpit",
    "redirect",
    "redirectScheme",
    "redirectPrefix",
    "respond",
    "setPath",
    "replacePath",
    "setQuery",
    "Answer",
    "errorPage",
    "ErrorPage",
    "Compression",
    "Mirror",
    "mirrorStats",
    "ScatterGather",
    "SubResponse",
    "Cache",
]
