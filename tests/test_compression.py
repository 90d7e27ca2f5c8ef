"""
Tests for L{lbkit.http.Compression}'s settings, the choice of a content
coding from C{Accept-Encoding} (L{lbkit.http._compression.negotiate}),
which responses are compressed, and the streaming encoders: no network.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import brotli
import zstandard
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server
from lbkit.config import loadSite
from lbkit.error import ConfigError
from lbkit.http import Compression, Frontend, Route, _compression, pathBegins
from lbkit.http._body import ChunkedFramer
from lbkit.http._compress import CompressingSink
from lbkit.http._compression import ALGORITHMS, Encoder, negotiate, weakETag
from lbkit.http._parse import Response

ALL = ("br", "zstd", "gzip")


def decode(algorithm: str, data: bytes) -> bytes:
    """C{data} decoded by the reference decoder of C{algorithm}."""
    if algorithm == "gzip":
        return gzip.decompress(data)
    if algorithm == "br":
        return brotli.decompress(data)  # type: ignore[no-any-return]
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)  # type: ignore[no-any-return]


def response(code: int = 200, **headers: str) -> Response:
    """A response head with C{headers} (underscores in names become dashes)."""
    pairs = [[k.replace("_", "-").encode(), v.encode()] for k, v in headers.items()]
    return Response(b"HTTP/1.1", code, b"OK", pairs)


class NegotiateTests(SynchronousTestCase):
    """The content coding chosen from a request's C{Accept-Encoding}."""

    def test_noHeader(self) -> None:
        """Without C{Accept-Encoding} (or with an empty one), nothing is compressed."""
        self.assertIsNone(negotiate(None, ALL))
        self.assertIsNone(negotiate(b"", ALL))

    def test_serverOrderBreaksTies(self) -> None:
        """Codings of the same weight go in the configured order: a browser's list gets C{br}."""
        self.assertEqual(negotiate(b"gzip, deflate, br, zstd", ALL), "br")
        self.assertEqual(negotiate(b"gzip, deflate, br, zstd", ("gzip", "br")), "gzip")

    def test_weights(self) -> None:
        """A higher weight wins over the configured order."""
        self.assertEqual(negotiate(b"br;q=0.5, gzip;q=0.8", ALL), "gzip")
        self.assertEqual(negotiate(b"br;q=0.5, gzip;Q=0.8", ALL), "gzip")
        self.assertEqual(negotiate(b"br ; q=1.0 , gzip ; q=0.999", ALL), "br")

    def test_zeroRefuses(self) -> None:
        """C{q=0} refuses a coding, however it is written."""
        self.assertEqual(negotiate(b"br;q=0, gzip", ALL), "gzip")
        self.assertIsNone(negotiate(b"gzip;q=0", ("gzip",)))
        self.assertIsNone(negotiate(b"gzip;q=0.000", ("gzip",)))

    def test_star(self) -> None:
        """C{*} weighs every coding not named; C{*;q=0} leaves only those named."""
        self.assertEqual(negotiate(b"*", ALL), "br")
        self.assertEqual(negotiate(b"gzip;q=0.2, *;q=0.5", ALL), "br")
        self.assertEqual(negotiate(b"*;q=0, gzip", ALL), "gzip")
        self.assertIsNone(negotiate(b"*;q=0", ALL))
        self.assertIsNone(negotiate(b"br;q=0, *;q=0", ("br",)))

    def test_identity(self) -> None:
        """C{identity} named above every offered coding means: do not compress."""
        self.assertIsNone(negotiate(b"identity, gzip;q=0.5", ALL))
        self.assertEqual(negotiate(b"identity;q=0.5, gzip", ALL), "gzip")
        self.assertEqual(negotiate(b"identity;q=0, gzip", ALL), "gzip")
        self.assertIsNone(negotiate(b"identity", ALL))

    def test_unknownAndAliases(self) -> None:
        """Codings lbkit does not offer are ignored; C{x-gzip} is C{gzip}; names are case-insensitive."""
        self.assertIsNone(negotiate(b"deflate, compress", ALL))
        self.assertEqual(negotiate(b"x-gzip", ALL), "gzip")
        self.assertEqual(negotiate(b"GZIP", ALL), "gzip")

    def test_invalidWeights(self) -> None:
        """An element with an invalid weight is ignored, the others count."""
        self.assertEqual(negotiate(b"br;q=2, gzip", ALL), "gzip")
        self.assertEqual(negotiate(b"br;q=abc, gzip;q=0.1", ALL), "gzip")
        self.assertEqual(negotiate(b"br;q, gzip;q=0.1", ALL), "gzip")
        self.assertIsNone(negotiate(b",,;,", ALL))

    @given(st.lists(st.tuples(st.sampled_from(["br", "zstd", "gzip", "deflate", "*", "identity"]),
                              st.sampled_from([None, 0, 0.001, 0.1, 0.5, 0.999, 1])), max_size=8),
           st.permutations(ALL))
    def test_property(self, elements: list[tuple[str, Any]], algorithms: list[str]) -> None:
        """
        Whatever the header, the choice is an offered coding whose weight
        is above 0 and the highest of all offered, or nothing only when no
        offered coding has a weight above 0 (or identity beats them).
        """
        header = ", ".join(c if q is None else f"{c};q={q}" for c, q in elements).encode()
        weights: dict[str, float] = {}
        for c, q in elements:
            weights[c] = max(1.0 if q is None else float(q), weights.get(c, -1.0))
        star = weights.get("*", 0.0)

        def weight(a: str) -> float:
            return weights.get(a, star)

        best = max((weight(a) for a in algorithms), default=0.0)
        chosen = negotiate(header, algorithms)
        if chosen is None:
            self.assertTrue(best <= 0 or weights.get("identity", -1) > best, (header, algorithms))
        else:
            self.assertIn(chosen, algorithms)
            self.assertGreater(weight(chosen), 0)
            self.assertEqual(weight(chosen), best)
            first = [a for a in algorithms if weight(a) == best][0]
            self.assertEqual(chosen, first)


class SettingsTests(SynchronousTestCase):
    """L{Compression}'s arguments, and the errors a site file gets for bad ones."""

    def test_defaults(self) -> None:
        """By default every installed algorithm, br first, text and JSON, 1 KiB."""
        c = Compression()
        self.assertEqual(c.algorithms, ALGORITHMS)
        self.assertEqual(c.minSize, 1024)
        self.assertTrue(c.typeMatches(b"text/html; charset=utf-8"))
        self.assertTrue(c.typeMatches(b"Application/JSON"))
        self.assertFalse(c.typeMatches(b"image/png"))
        self.assertFalse(c.typeMatches(None))
        self.assertEqual(dict(c.levels), {"gzip": 4, "br": 4, "zstd": 3})

    def test_issueExample(self) -> None:
        """The issue's own example builds."""
        c = Compression(algorithms=("br", "zstd", "gzip"), types=("text/", "application/json"), minSize=1024)
        self.assertEqual(c.types, (b"text/", b"application/json"))

    def assertConfigError(self, expected: str, **kwargs: Any) -> None:
        """C{Compression(**kwargs)} raises a ConfigError saying C{expected}, naming this file."""
        with self.assertRaises(ConfigError) as e:
            Compression(**kwargs)
        self.assertIn(expected, str(e.exception))

    def test_unknownAlgorithm(self) -> None:
        """An algorithm lbkit does not have is an error naming the site-file line."""
        self.assertConfigError("unknown algorithm 'deflate'", algorithms=("gzip", "deflate"))
        self.assertConfigError("algorithms must be a sequence", algorithms="gzip")
        self.assertConfigError("no algorithms", algorithms=())

    def test_missingLibrary(self) -> None:
        """
        Asking for C{br} or C{zstd} without its package installed is a
        ConfigError naming the package; the default then leaves it out.
        """
        self.patch(_compression, "_brotli", None)
        self.patch(_compression, "_zstandard", None)
        self.assertConfigError("algorithm 'br' needs the brotli package, which is not installed"
                               " (pip install lbkit[compression])", algorithms=("br", "gzip"))
        self.assertConfigError("needs the zstandard package", algorithms=("zstd",))
        self.assertEqual(Compression().algorithms, ("gzip",))

    def test_siteFileLine(self) -> None:
        """A site file asking for a missing library gets a ConfigError naming its line."""
        self.patch(_compression, "_brotli", None)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("from lbkit import Backend, Server, http\n"
                    "be = Backend('be', [Server('s1', '127.0.0.1:9160')])\n"
                    "listen = [http.Frontend('tcp:8120', default=be,\n"
                    "                        compression=http.Compression(algorithms=('br', 'gzip')))]\n")
        with self.assertRaises(ConfigError) as e:
            loadSite(path)
        self.assertEqual(str(e.exception), f"{path}:4: http.Compression: algorithm 'br' needs the brotli package,"
                                           " which is not installed (pip install lbkit[compression])")

    def test_badTypesSizesLevels(self) -> None:
        """Types, minSize and levels are checked."""
        self.assertConfigError("types must be a sequence", types="text/html")
        self.assertConfigError("is not a media type", types=("html",))
        self.assertConfigError("minSize must be", minSize=-1)
        self.assertConfigError("minSize must be", minSize="1k")
        self.assertConfigError("gzip takes a level from 1 to 9", levels={"gzip": 10})
        self.assertConfigError("unknown algorithm 'lz4'", levels={"lz4": 1})
        self.assertEqual(Compression(levels={"br": 5}).levels["br"], 5)

    def test_onFrontendAndRoute(self) -> None:
        """
        A frontend compresses if it or one of its routes has compression;
        a route's own replaces the frontend's, C{False} turns it off.
        """
        be = Backend("be", [Server("s1", "127.0.0.1:1")])
        self.assertFalse(Frontend("tcp:0", default=be).compresses)
        c = Compression()
        self.assertTrue(Frontend("tcp:0", default=be, compression=c).compresses)
        route = Route(pathBegins("/api"), be, compression=c)
        self.assertIs(route.compression, c)
        self.assertTrue(Frontend("tcp:0", [route], default=be).compresses)
        self.assertFalse(Frontend("tcp:0", [Route(pathBegins("/"), be, compression=False)], default=be).compresses)
        with self.assertRaises(ConfigError):
            Frontend("tcp:0", default=be, compression="gzip")  # type: ignore[arg-type]
        with self.assertRaises(ConfigError):
            Route(pathBegins("/api"), be, compression="gzip")  # type: ignore[arg-type]


class EligibleTests(SynchronousTestCase):
    """Which responses L{Compression.eligible} lets be compressed (HAProxy's and nginx's rules)."""

    c = Compression(minSize=100)

    def test_plain(self) -> None:
        """A 200 of a listed type, long enough or of unknown length, is compressed."""
        self.assertTrue(self.c.eligible(response(content_type="text/html", content_length="100")))
        self.assertTrue(self.c.eligible(response(content_type="text/html", transfer_encoding="chunked")))
        for code in (201, 202, 203):
            self.assertTrue(self.c.eligible(response(code, content_type="application/json")))

    def test_skipped(self) -> None:
        """Other statuses (206 ranges too), types, encoded, no-transform, short bodies are not."""
        c = self.c
        self.assertFalse(c.eligible(response(206, content_type="text/html", content_range="bytes 0-9/100")))
        self.assertFalse(c.eligible(response(404, content_type="text/html")))
        self.assertFalse(c.eligible(response(content_type="image/png")))
        self.assertFalse(c.eligible(response()))
        self.assertFalse(c.eligible(response(content_type="text/html", content_encoding="gzip")))
        self.assertFalse(c.eligible(response(content_type="text/html", cache_control="public, No-Transform")))
        self.assertFalse(c.eligible(response(content_type="text/html", content_length="99")))
        self.assertFalse(c.eligible(response(content_type="text/html", etag="unquoted")))
        self.assertFalse(c.eligible(Response(b"HTTP/1.0", 200, b"OK", [[b"Content-Type", b"text/html"]])))

    def test_etags(self) -> None:
        """Strong entity tags are made weak; weak ones and invalid ones are recognised."""
        self.assertEqual(weakETag(b'"abc"'), b'W/"abc"')
        self.assertEqual(weakETag(b'W/"abc"'), b'W/"abc"')
        self.assertIsNone(weakETag(b"abc"))
        self.assertIsNone(weakETag(b'"a"b"'))
        self.assertTrue(self.c.eligible(response(content_type="text/html", etag='"v1"')))


class EncoderTests(SynchronousTestCase):
    """The streaming encoders give back exactly the bytes given, piece by piece."""

    def test_roundTrip(self) -> None:
        """Each piece's output is decodable as it comes (flushed); the whole stream decodes to the input."""
        pieces = [b"<p>hello %d</p>\n" % i * 50 for i in range(20)] + [b"", b"x"]
        for algorithm in ALL:
            encoder = Encoder(algorithm, Compression().levels[algorithm])
            out = [encoder.compress(p) for p in pieces if p]
            if algorithm == "gzip":
                partial = b"".join(out[:3])
                d = zlib.decompressobj(16 + 15)
                self.assertEqual(d.decompress(partial), b"".join(pieces[:3]))
            out.append(encoder.finish())
            self.assertEqual(decode(algorithm, b"".join(out)), b"".join(pieces), algorithm)

    def test_sizeHint(self) -> None:
        """An encoder told the body's length gives back the same bytes (zstd writes the size in its frame)."""
        body = b"<p>sized</p>\n" * 5000
        for algorithm in ALL:
            encoder = Compression().encoder(algorithm, len(body))
            out = encoder.compress(body[:30000]) + encoder.compress(body[30000:]) + encoder.finish()
            self.assertEqual(decode(algorithm, out), body, algorithm)
        zstd = Compression().encoder("zstd", len(body))
        frame = zstandard.get_frame_parameters(zstd.compress(body) + zstd.finish())
        self.assertEqual(frame.content_size, len(body))


class _Side:
    decodesChunked = False

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.writeResponse = self.written.append


class _Factory:
    compIn = compOut = compRsp = compByp = 0


class _Exchange:
    def __init__(self) -> None:
        self.side = self.writer = _Side()
        self.factory = _Factory()
        self.done: list[Any] = []
        self.aborted: list[str] = []

    def responseDone(self, conn: Any) -> None:
        self.done.append(conn)

    def abortExchange(self, termination: str) -> None:
        self.aborted.append(termination)


class _Conn:
    bytes = 0


class SinkTests(SynchronousTestCase):
    """L{CompressingSink} alone, with stand-ins for the exchange and the server connection."""

    def sink(self, head: bytes, chunked: bool = True) -> tuple[CompressingSink, _Exchange, _Conn]:
        exchange, conn = _Exchange(), _Conn()
        conn.bytes = len(head)
        sink = CompressingSink(exchange, conn, Compression().encoder("gzip"), chunked, len(head))  # type: ignore[arg-type]
        return sink, exchange, conn

    def test_headPassesThrough(self) -> None:
        """
        The head goes out as it is, however the connection splits it from
        the body; the body is compressed in chunks and ended with the
        last chunk; the connection's byte count is what was written.
        """
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = b"<p>compressed</p>" * 1000
        sink, exchange, conn = self.sink(head)
        sink.writeResponse(head[:10])
        sink.writeResponse(head[10:] + body[:100])
        sink.writeResponse(b"")
        sink.writeResponse(body[100:])
        sink.responseDone(conn)  # type: ignore[arg-type]
        out = b"".join(exchange.side.written)
        self.assertTrue(out.startswith(head))
        self.assertEqual(exchange.side.written[0], head[:10])
        framer = ChunkedFramer(True)
        self.assertEqual(framer.feed(out[len(head):]), len(out) - len(head))
        self.assertTrue(framer.done)
        self.assertEqual(gzip.decompress(b"".join(framer.pieces)), body)
        self.assertEqual(conn.bytes, len(out))
        self.assertEqual(exchange.done, [conn])

    def test_unframed(self) -> None:
        """For an HTTP/2 stream the compressed bytes go unframed; an abort goes to the exchange."""
        sink, exchange, conn = self.sink(b"", chunked=False)
        sink.writeResponse(b"abc" * 100)
        sink.responseDone(conn)  # type: ignore[arg-type]
        self.assertEqual(gzip.decompress(b"".join(exchange.side.written)), b"abc" * 100)
        sink.abortExchange("SD")
        self.assertEqual(exchange.aborted, ["SD"])
