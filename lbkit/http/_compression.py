# -*- test-case-name: tests.test_compression -*-
"""
http mode, response compression (docs/http.md, "Compression"): the
settings (L{Compression}), the choice of a content coding from a request's
C{Accept-Encoding} (L{negotiate}), which responses may be compressed
(L{Compression.eligible}), and the streaming encoders.  No I/O: the filter
that compresses a response as it flows is L{lbkit.http._compress}.

gzip comes from the standard library's C{zlib}; C{br} from the C{brotli}
package and C{zstd} from C{zstandard}, both optional (C{pip install
lbkit[compression]}).
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Mapping, Optional, Sequence

from lbkit._origin import definedAt
from lbkit.error import ConfigError
from lbkit.http._parse import Response

# The brotli and zstandard modules: None when not installed, _UNLOADED
# until the first L{available} (a Compression's check) or L{Encoder} asks,
# so that a process that compresses nothing does not import them (issue
# 11: RSS).
_UNLOADED: Any = object()
_brotli: Any = _UNLOADED
_zstandard: Any = _UNLOADED


def _codec(algorithm: str) -> Any:
    """The module behind C{"br"} or C{"zstd"}, imported at the first call; C{None} if it is not installed."""
    global _brotli, _zstandard
    if algorithm == "br":
        if _brotli is _UNLOADED:
            try:
                import brotli as _brotli  # type: ignore[import-untyped]
            except ImportError:  # pragma: no cover (the test extra installs it)
                _brotli = None
        return _brotli
    if _zstandard is _UNLOADED:
        try:
            import zstandard as _zstandard
        except ImportError:  # pragma: no cover
            _zstandard = None
    return _zstandard

__all__ = [
    "ALGORITHMS",
    "BROTLI_LGWIN",
    "STATUSES",
    "routeCompression",
    "DEFAULT_LEVELS",
    "DEFAULT_TYPES",
    "Compression",
    "Encoder",
    "available",
    "negotiate",
    "weakETag",
]

#: Every content coding lbkit can produce, in its default order of preference.
ALGORITHMS = ("br", "zstd", "gzip")

#: The level of each algorithm unless C{levels} says otherwise: chosen from
#: the figures of C{bench/compression.py} (docs/http.md, "Compression").
DEFAULT_LEVELS: Mapping[str, int] = {"gzip": 4, "br": 4, "zstd": 3}

#: The media types compressed unless C{types} says otherwise (an entry
#: ending in C{/} is a prefix).
DEFAULT_TYPES = (
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/manifest+json",
    "application/wasm",
    "image/svg+xml",
)

#: The statuses whose responses are compressed (HAProxy's list).
STATUSES = frozenset((200, 201, 202, 203))

#: C{br}'s window: 2**19 bytes, as ngx_brotli's default C{brotli_window 512k}.
BROTLI_LGWIN = 19

_PACKAGES = {"br": "brotli", "zstd": "zstandard"}


def available(algorithm: str) -> bool:
    """Whether the library behind C{algorithm} (C{"br"}, C{"zstd"}, C{"gzip"}) is installed."""
    if algorithm in ("br", "zstd"):
        return _codec(algorithm) is not None
    return algorithm == "gzip"


class Encoder:
    """
    One response's compressor: fed the body piece by piece, it returns the
    encoded bytes of each piece at once (flushed, so that a streamed
    response reaches the client as it flows), then the end of the stream.

    @ivar compress: Encode one piece of the body; returns its bytes.
    @ivar finish: End the stream; returns its last bytes.
    """

    compress: Callable[[bytes], bytes]
    finish: Callable[[], bytes]

    def __init__(self, algorithm: str, level: int, size: Optional[int] = None) -> None:
        """
        @param size: The body's length, when known: zstd then sizes its
            window and tables to it (and writes it in the frame), a third
            cheaper on 100 KiB than a context made for any size.
        """
        if algorithm == "gzip":
            z = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            sync = zlib.Z_SYNC_FLUSH

            def compress(data: bytes) -> bytes:
                return z.compress(data) + z.flush(sync)

            self.compress = compress
            self.finish = z.flush
        elif algorithm == "br":
            brotli = _codec("br")
            assert brotli is not None
            b = brotli.Compressor(quality=level, lgwin=BROTLI_LGWIN)

            def compressBr(data: bytes) -> bytes:
                return b.process(data) + b.flush()  # type: ignore[no-any-return]

            self.compress = compressBr
            self.finish = b.finish
        else:
            zstandard = _codec("zstd")
            assert zstandard is not None
            compressor = zstandard.ZstdCompressor(level=level)
            zs = compressor.compressobj() if size is None else compressor.compressobj(size=size)
            block = zstandard.COMPRESSOBJ_FLUSH_BLOCK

            def compressZstd(data: bytes) -> bytes:
                return zs.compress(data) + zs.flush(block)  # type: ignore[no-any-return]

            self.compress = compressZstd
            self.finish = zs.flush


def _q(params: list[str]) -> float:
    """The weight among a coding's parameters (1 without one, -1 if invalid)."""
    for param in params:
        name, eq, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return -1.0
            if not eq or not 0.0 <= q <= 1.0:
                return -1.0
            return q
    return 1.0


def negotiate(acceptEncoding: Optional[bytes], algorithms: Sequence[str]) -> Optional[str]:
    """
    The content coding to send, from a request's C{Accept-Encoding}
    (RFC 9110 section 12.5.3) and the algorithms offered, in the server's order
    of preference; C{None} for none (send the body as it is).

    The coding with the highest weight wins, ties going to the earlier of
    C{algorithms}; C{q=0} refuses a coding; C{*} weighs every coding not
    named; C{x-gzip} is C{gzip}; C{identity} wins only when it is named
    with a weight above every acceptable coding.  Without the header,
    nothing is compressed (as HAProxy and nginx do).
    """
    if not acceptEncoding:
        return None
    weights: dict[str, float] = {}
    try:
        text = acceptEncoding.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover (latin-1 decodes anything)
        return None
    for element in text.split(","):
        coding, *params = element.split(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        if coding == "x-gzip":
            coding = "gzip"
        q = _q(params)
        if q < 0:
            continue
        weights[coding] = max(q, weights.get(coding, -1.0))
    star = weights.get("*", 0.0)
    best: Optional[str] = None
    bestQ = 0.0
    for algorithm in algorithms:
        q = weights.get(algorithm, star)
        if q > bestQ:
            best, bestQ = algorithm, q
    if best is not None and weights.get("identity", -1.0) > bestQ:
        return None
    return best


def weakETag(etag: bytes) -> Optional[bytes]:
    """
    C{etag} made weak (C{W/"..."}), as nginx does to a compressed
    response's; C{None} if it is not a valid entity tag.
    """
    etag = etag.strip()
    if etag.startswith(b"W/"):
        opaque = etag[2:]
        weak = True
    else:
        opaque, weak = etag, False
    if len(opaque) < 2 or opaque[:1] != b'"' or opaque[-1:] != b'"' or b'"' in opaque[1:-1]:
        return None
    return etag if weak else b"W/" + etag


def _checkedTypes(types: Sequence[str], where: str) -> tuple[bytes, ...]:
    if isinstance(types, (str, bytes)):
        raise ConfigError(f"{where}: types must be a sequence of media types, like ('text/', 'application/json')")
    out = []
    for t in types:
        if isinstance(t, bytes):
            t = t.decode("ascii", "replace")
        if not isinstance(t, str) or "/" not in t or t.strip() != t or not t:
            raise ConfigError(f"{where}: {t!r} is not a media type (like 'text/html') or a prefix (like 'text/')")
        out.append(t.lower().encode("ascii"))
    return tuple(out)


class Compression:
    """
    Compress responses for clients that accept it (HAProxy's C{compression
    algo} and C{compression type}, nginx's C{gzip}): on an
    L{lbkit.http.Frontend} (C{compression=}) or an L{lbkit.http.Route}.

    @ivar algorithms: The codings offered (C{"br"}, C{"zstd"}, C{"gzip"}),
        preferred first (the client's weights come first, see
        L{negotiate}).
    @ivar types: The media types compressed, lowercase bytes; one ending in
        C{/} is a prefix (C{b"text/"}).
    @ivar minSize: Responses whose C{Content-Length} is under this many
        bytes are sent as they are (one of unknown length is compressed).
    @ivar levels: Algorithm -> level (L{DEFAULT_LEVELS} for those not given).
    @ivar definedAt: C{(filename, line)} where it was made.
    """

    def __init__(
        self,
        algorithms: Optional[Sequence[str]] = None,
        types: Sequence[str] = DEFAULT_TYPES,
        minSize: int = 1024,
        *,
        levels: Optional[Mapping[str, int]] = None,
    ) -> None:
        """
        @param algorithms: The codings offered, preferred first; by default
            every one installed of C{("br", "zstd", "gzip")}.
        @raise ConfigError: for an unknown algorithm, one whose library is
            not installed, a bad type, size or level (the site loader
            prefixes the site file's line).
        """
        self.definedAt = definedAt()
        where = "http.Compression"  # the site loader says which file and line
        if algorithms is None:
            algorithms = tuple(a for a in ALGORITHMS if available(a))
        elif isinstance(algorithms, (str, bytes)):
            raise ConfigError(f"{where}: algorithms must be a sequence, like ('br', 'gzip'), not {algorithms!r}")
        chosen: list[str] = []
        for a in algorithms:
            if a not in ALGORITHMS:
                raise ConfigError(f"{where}: unknown algorithm {a!r} (lbkit has {', '.join(ALGORITHMS)})")
            if not available(a):
                raise ConfigError(
                    f"{where}: algorithm {a!r} needs the {_PACKAGES[a]} package, which is not installed"
                    f" (pip install lbkit[compression])"
                )
            if a not in chosen:
                chosen.append(a)
        if not chosen:
            raise ConfigError(f"{where}: no algorithms")
        self.algorithms = tuple(chosen)
        self.types = _checkedTypes(types, where)
        if isinstance(minSize, bool) or not isinstance(minSize, int) or minSize < 0:
            raise ConfigError(f"{where}: minSize must be a number of bytes, 0 or more, not {minSize!r}")
        self.minSize = minSize
        merged = dict(DEFAULT_LEVELS)
        for a, level in (levels or {}).items():
            low, high = {"gzip": (1, 9), "br": (0, 11), "zstd": (1, 19)}.get(a, (0, -1))
            if high < 0:
                raise ConfigError(f"{where}: levels: unknown algorithm {a!r}")
            if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
                raise ConfigError(f"{where}: levels: {a} takes a level from {low} to {high}, not {level!r}")
            merged[a] = level
        self.levels: Mapping[str, int] = merged

    def __repr__(self) -> str:
        return f"<http.Compression {'/'.join(self.algorithms)} minSize={self.minSize}>"

    def typeMatches(self, contentType: Optional[bytes]) -> bool:
        """Whether a response of C{contentType} (a header value, or C{None}) is compressed."""
        if not contentType:
            return False
        media = contentType.split(b";", 1)[0].strip().lower()
        for t in self.types:
            if media == t or (t.endswith(b"/") and media.startswith(t)):
                return True
        return False

    def eligible(self, response: Response) -> bool:
        """
        Whether C{response} (with a body) may be compressed, whatever the
        client accepts: a status of 200-203, an HTTP/1.1 server, no
        C{Content-Encoding}, no C{Cache-Control: no-transform}, one valid
        C{ETag} at most, a type of L{types}, and a C{Content-Length} (if
        any) of L{minSize} or more.
        """
        if response.code not in STATUSES or response.version == b"HTTP/1.0":
            return False
        if not self.typeMatches(response.header(b"content-type")):
            return False
        if response.header(b"content-encoding") is not None:
            return False
        for value in response.headerValues(b"cache-control"):
            if b"no-transform" in value.lower():
                return False
        etags = response.headerValues(b"etag")
        if len(etags) > 1 or (etags and weakETag(etags[0]) is None):
            return False
        length = response.header(b"content-length")
        if length is not None and self.minSize:
            try:
                if int(length) < self.minSize:
                    return False
            except ValueError:
                return False
        return True

    def encoder(self, algorithm: str, size: Optional[int] = None) -> Encoder:
        """A new L{Encoder} for one response (of C{size} bytes, if known)."""
        return Encoder(algorithm, self.levels[algorithm], size)


def routeCompression(route: Any) -> Any:
    """
    A route's C{compression} argument checked: C{None} (the frontend's),
    C{False} (none) or a L{Compression}.
    """
    if route is None or route is False or isinstance(route, Compression):
        return route
    raise ConfigError(f"Route: compression must be an http.Compression (or None, or False), not {route!r}")
