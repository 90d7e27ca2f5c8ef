"""
Response compression (docs/http.md, "Compression") on an http-mode frontend
on 127.0.0.1:8120, in front of a small content server on 127.0.0.1:9160
(started in this same process) that serves a page, a JSON API and a
download.  br and zstd need C{pip install lbkit[compression]}.

    twistd -n lbkit --config examples/compression.py
    curl -s --compressed -D - -o /dev/null http://127.0.0.1:8120/page.html   # content-encoding: br
    curl -s -H 'Accept-Encoding: gzip' -D - -o /dev/null http://127.0.0.1:8120/page.html   # gzip
    curl -s -D - -o /dev/null http://127.0.0.1:8120/page.html          # as the server sent it (Vary says why)
    curl -s --compressed -D - -o /dev/null http://127.0.0.1:8120/api/items   # zstd, from 256 bytes on
    curl -s --compressed -D - -o /dev/null http://127.0.0.1:8120/downloads/report.csv   # never compressed
"""

import json

from twisted.application import strports
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from lbkit import Backend, Server, http
from lbkit.interfaces import IListener

#: The page: about 200 kB of HTML.
PAGE = b"<html><body>\n" + b"".join(b"<p>Paragraph %d of the page, served through lbkit.</p>\n" % i
                                    for i in range(4000)) + b"</body></html>\n"
#: The API's answer: a JSON list.
ITEMS = json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(500)]).encode()
#: The download: a CSV file the route does not compress.
REPORT = b"".join(b"%d,%d,%d\n" % (i, i * i, i * 7 % 13) for i in range(20000))


class Content(Resource):
    """C{/page.html}, C{/api/items} and C{/downloads/report.csv}."""

    isLeaf = True

    def render_GET(self, request):
        answers = {
            b"/page.html": (b"text/html; charset=utf-8", PAGE),
            b"/api/items": (b"application/json", ITEMS),
            b"/downloads/report.csv": (b"text/csv", REPORT),
        }
        contentType, body = answers.get(request.path, (b"text/plain", b"not here\n"))
        if body == b"not here\n":
            request.setResponseCode(404)
        request.setHeader(b"content-type", contentType)
        request.setHeader(b"etag", b'"%x"' % (hash(body) & 0xFFFFFFFF))
        return body


@implementer(IListener)
class ContentServer:
    """The content server, as a C{listen} item started in the same process."""

    definedAt = (__file__, 0)

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def backends(self):
        return []

    def makeService(self, reactor):
        site = Site(Content())
        site.noisy = False
        site.log = lambda request: None
        return strports.service(self.endpoint, site, reactor=reactor)


content = Backend("content", [Server("content1", "127.0.0.1:9160")])

listen = [
    http.Frontend(
        "tcp:8120:interface=127.0.0.1",
        routes=[
            # the API prefers zstd and compresses small answers too
            http.Route(http.pathBegins("/api"), content,
                       compression=http.Compression(algorithms=("zstd", "br", "gzip"),
                                                    types=("application/json",), minSize=256)),
            # downloads go as they are
            http.Route(http.pathBegins("/downloads"), content, compression=False),
        ],
        default=content,
        name="compression",
        # br for browsers, zstd, then gzip for everyone else; text and JSON from 1 KiB
        compression=http.Compression(algorithms=("br", "zstd", "gzip"),
                                     types=("text/", "application/json", "image/svg+xml"), minSize=1024),
    ),
    ContentServer("tcp:9160:interface=127.0.0.1"),
]
