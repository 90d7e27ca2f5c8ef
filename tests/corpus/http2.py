"""
HTTP/2 entries of the differential corpus (see L{tests.corpus}).

Sources named C{<file>.vtc <client>} are HAProxy's reg-tests, in
C{reg-tests/http-messaging/} of the HAProxy repository; "hardening" is
lbkit's hardening issue (HTTP/2 to HTTP/1.1 smuggling, pseudo-header
validation); RFC 9113 sections are given as "RFC 9113 §n".

Each entry's frames follow the connection preface and SETTINGS on a new
TLS connection that negotiated h2.  Frames that end a stream are the
default: C{headers(..., end=False)} leaves the stream open for DATA.
"""

from __future__ import annotations

from typing import Optional

from tests.corpus import DIFFERS, STRICTER, Frame, H2Case, data, headers

__all__ = ["CASES"]

_DA = "h2_desync_attacks.vtc"
_HH = "h2_to_h1.vtc"
_SN = "scheme_based_normalize.vtc"
_PU = "protocol_upgrade.vtc"


def request(method: bytes = b"GET", path: Optional[bytes] = b"/", scheme: Optional[bytes] = b"https",
            authority: Optional[bytes] = b"a.example") -> tuple[tuple[bytes, bytes], ...]:
    """The four pseudo-headers of a request (each left out when C{None})."""
    pairs = ((b":method", method), (b":path", path), (b":scheme", scheme), (b":authority", authority))
    return tuple((n, v) for n, v in pairs if v is not None)


GET = request()
POST = request(b"POST")
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


def post(*extra: tuple[bytes, bytes], body: bytes = b"hello") -> tuple[Frame, ...]:
    """A POST with C{extra} headers and C{body} in one DATA frame that ends the stream."""
    return (headers(*POST, *extra, end=False), data(body))


def get(*extra: tuple[bytes, bytes], **pseudo: bytes) -> tuple[Frame, ...]:
    """A GET with C{extra} headers (pseudo-headers from L{request}'s arguments)."""
    return (headers(*request(**pseudo), *extra),)


def continued(*pairs: tuple[bytes, bytes], stream: int = 1) -> Frame:
    """A header block sent as HEADERS (without END_HEADERS) then CONTINUATION, ending the stream."""
    return Frame("continued", stream, tuple(pairs), b"", True)


BASELINE = [
    H2Case("get", f"{_DA} c1", get(), "a plain GET"),
    H2Case("get-cl0", f"{_HH} c1h2 stream 3", get((b"content-length", b"0"))),
    H2Case("get-body", f"{_HH} c1h2 stream 5",
           (headers(*GET, end=False), data(b"this must be delivered, like it or not")),
           "a GET body without content-length: sent chunked"),
    H2Case("post-no-body", f"{_HH} c3h2 stream 1", (headers(*POST),)),
    H2Case("post-cl0", f"{_HH} c3h2 stream 3", (headers(*POST, (b"content-length", b"0")),)),
    H2Case("post-body", f"{_HH} c3h2 stream 5",
           (headers(*POST, end=False), data(b"this must be delivered, like it or not"))),
    H2Case("post-cl-body", "RFC 9113 §8.1.1", post((b"content-length", b"5"))),
    H2Case("post-frames", "RFC 9113 §8.1",
           (headers(*POST, (b"content-length", b"5"), end=False), data(b"hel", end=False), data(b"lo"))),
    H2Case("post-empty-end", "RFC 9113 §8.1", (headers(*POST, end=False), data(b""))),
    H2Case("post-trailers", "RFC 9113 §8.1",
           (headers(*POST, end=False), data(b"hello", end=False), headers((b"x-t", b"1")))),
    H2Case("head", "RFC 9110 §9.3.2", get(method=b"HEAD")),
    H2Case("options-star", "RFC 9113 §8.3.1", get(method=b"OPTIONS", path=b"*")),
    H2Case("scheme-http-80", f"{_SN} c1", get(scheme=b"http", authority=b"hostname:80")),
    H2Case("scheme-http-8080", f"{_SN} c2", get(scheme=b"http", authority=b"hostname:8080")),
    H2Case("scheme-https-443", f"{_SN} c3", get(authority=b"hostname:443")),
    H2Case("scheme-https-80", f"{_SN} c4", get(authority=b"hostname:80")),
    H2Case("host-and-authority", f"{_DA} c6-host-authority", get((b"host", b"other_host"), authority=b"hostname"),
           "the Host header is ignored when :authority is there"),
    H2Case("host-no-authority", "RFC 9113 §8.3.1",
           (headers((b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"), (b"host", b"a.example")),)),
    H2Case("no-authority-no-host", "RFC 9113 §8.3.1",
           (headers((b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https")),),
           "lbkit refuses an https request with neither :authority nor Host (RFC 9113 §8.3.1); HAProxy "
           "forwards it without a Host", expect=STRICTER),
    H2Case("cookies", "RFC 9113 §8.2.3", get((b"cookie", b"a=1"), (b"cookie", b"b=2")),
           "cookie crumbs, joined for HTTP/1.1"),
    H2Case("two-streams", "RFC 9113 §5.1",
           (headers(*request(path=b"/1")), headers(*request(path=b"/2"), stream=3))),
    H2Case("continuation", "RFC 9113 §6.10", (continued(*request(path=b"/continued")),),
           "a header block in HEADERS and CONTINUATION frames"),
]

SMUGGLING = [
    H2Case("cl-end-stream-post", "hardening: content-length on END_STREAM HEADERS",
           (headers(*POST, (b"content-length", b"10")),),
           "a content-length the stream never carries: forwarded as is, the server would wait for 10 bytes "
           "and read the next request on that connection as the body.  It is malformed (RFC 9113 §8.1.1): "
           "lbkit resets the stream, HAProxy forwards the request without the content-length", expect=STRICTER),
    H2Case("cl-end-stream-get", "hardening: content-length on END_STREAM HEADERS",
           (headers(*GET, (b"content-length", b"5")),), "the same for a GET", expect=STRICTER),
    H2Case("cl-end-stream-then-get", "hardening: content-length on END_STREAM HEADERS",
           (headers(*POST, (b"content-length", b"36")), headers(*request(path=b"/next"), stream=3)),
           "the second stream's request must not become the first one's body", expect=STRICTER),
    H2Case("cl-more-than-data", "hardening: content-length vs DATA", post((b"content-length", b"10"))),
    H2Case("cl-less-than-data", f"{_HH} c1h2 stream 7",
           (headers(*request(path=b"/test4.html"), (b"content-length", b"2"), end=False),
            data(b"this is sent and ignored"))),
    H2Case("cl-less-than-data-smuggle", "hardening: content-length vs DATA",
           post((b"content-length", b"5"), body=b"hello" + SMUGGLED),
           "DATA past the content-length must not reach the server as a request"),
    H2Case("cl-zero-data", "hardening: content-length vs DATA", post((b"content-length", b"0"), body=SMUGGLED)),
    H2Case("cl-trailing-comma", f"{_HH} c1h2 stream 9",
           (headers(*request(path=b"/test5.html"), (b"content-length", b"0,"), end=False),), incomplete=True),
    H2Case("cl-empty", f"{_HH} c1h2 stream 11",
           (headers(*request(path=b"/test6.html"), (b"content-length", b""), end=False),), incomplete=True),
    H2Case("cl-conflicting", "hardening: multiple/conflicting CL",
           post((b"content-length", b"5"), (b"content-length", b"6"))),
    H2Case("cl-identical", "RFC 9110 §8.6", post((b"content-length", b"5"), (b"content-length", b"5"))),
    H2Case("cl-list", "RFC 9110 §8.6", post((b"content-length", b"5, 5")),
           "a list of identical values (RFC 9110 §8.6 lets a recipient take it as one): the h2 library lbkit "
           "uses refuses any content-length that is not digits alone", expect=STRICTER),
    H2Case("cl-plus", "RFC 9110 §8.6", post((b"content-length", b"+5"))),
    H2Case("cl-space", "RFC 9110 §8.6", post((b"content-length", b" 5")),
           "whitespace around a value is malformed in HTTP/2 (RFC 9113 §8.2.1): the h2 library lbkit uses "
           "refuses it, HAProxy trims it", expect=STRICTER),
    H2Case("cl-vt", "hardening: CL with control characters", post((b"content-length", b"5\x0b"))),
    H2Case("te-chunked", "hardening: connection-specific headers in h2 (H2.TE)",
           post((b"transfer-encoding", b"chunked"), body=b"0\r\n\r\n" + SMUGGLED),
           "a transfer-encoding in HTTP/2 is malformed (RFC 9113 §8.2.2)"),
    H2Case("te-chunked-cl", "hardening: connection-specific headers in h2",
           post((b"transfer-encoding", b"chunked"), (b"content-length", b"5"))),
    H2Case("data-after-end", "RFC 9113 §5.1 (half-closed remote)", (headers(*GET), data(SMUGGLED)),
           "DATA on a stream its HEADERS ended: STREAM_CLOSED, and the DATA never reaches the server"),
    H2Case("trailers-cl", "RFC 9110 §6.5.1",
           (headers(*POST, end=False), data(b"hello", end=False), headers((b"content-length", b"0"))),
           "a framing field in trailers (RFC 9110 §6.5.1): both reset the stream"),
    H2Case("trailers-pseudo", "RFC 9113 §8.1",
           (headers(*POST, end=False), data(b"hello", end=False), headers((b":path", b"/other")))),
    H2Case("trailers-no-end", "RFC 9113 §8.1",
           (headers(*POST, end=False), data(b"hello", end=False), headers((b"x-t", b"1"), end=False),
            data(b"more")), incomplete=True),
]

CONNECTION_HEADERS = [
    H2Case("connection-keep-alive", "hardening: connection-specific headers in h2", get((b"connection", b"keep-alive"))),
    H2Case("connection-close", "hardening: connection-specific headers in h2", get((b"connection", b"close"))),
    H2Case("keep-alive", "hardening: connection-specific headers in h2", get((b"keep-alive", b"timeout=5"))),
    H2Case("proxy-connection", "hardening: connection-specific headers in h2", get((b"proxy-connection", b"keep-alive"))),
    H2Case("upgrade-h2c", "hardening: connection-specific headers in h2", get((b"upgrade", b"h2c"))),
    H2Case("te-trailers", "RFC 9113 §8.2.2", get((b"te", b"trailers"))),
    H2Case("te-gzip", "RFC 9113 §8.2.2", get((b"te", b"gzip"))),
]

PSEUDO = [
    H2Case("path-relative", f"{_DA} c3-path", get(path=b"hello-world")),
    H2Case("path-space", "hardening: :path with spaces", get(path=b"/a b")),
    H2Case("path-space-version", "hardening: :path with spaces", get(path=b"/a HTTP/1.1")),
    H2Case("path-absolute", "hardening: :path absolute", get(path=b"http://evil.example/x")),
    H2Case("path-absolute-https", "hardening: :path absolute", get(path=b"https://a.example/x")),
    H2Case("path-ctl", "hardening: :path with control bytes", get(path=b"/a\x01b")),
    H2Case("path-crlf", "hardening: :path with control bytes",
           get(path=b"/a HTTP/1.1\r\nX-Injected: 1\r\nX-B: /")),
    H2Case("path-nul", "hardening: :path with control bytes", get(path=b"/a\x00b")),
    H2Case("path-tab", "hardening: :path with control bytes", get(path=b"/a\tb")),
    H2Case("path-del", "hardening: :path with control bytes", get(path=b"/a\x7fb")),
    H2Case("path-hash", "hardening: # in target", get(path=b"/a#b")),
    H2Case("path-high-byte", "hardening: bytes >= 0x80 in target", get(path=b"/a\x80b"),
           "HAProxy forwards bytes >= 0x80 in a target; lbkit refuses them, as over HTTP/1.1", expect=STRICTER),
    H2Case("path-empty", "RFC 9113 §8.3.1", get(path=b"")),
    H2Case("path-missing", "RFC 9113 §8.3.1",
           (headers((b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.example")),)),
    H2Case("path-twice", "RFC 9113 §8.3", (headers(*GET, (b":path", b"/admin")),)),
    H2Case("path-star-get", "RFC 9113 §8.3.1", get(path=b"*"),
           "'*' is a target for OPTIONS only (RFC 9113 §8.3.1): lbkit resets the stream, HAProxy forwards 'GET /'",
           expect=STRICTER),
    H2Case("scheme-invalid", f"{_DA} c4-scheme", get(scheme=b"http://localhost/?")),
    H2Case("scheme-missing", "RFC 9113 §8.3.1",
           (headers((b":method", b"GET"), (b":path", b"/"), (b":authority", b"a.example")),)),
    H2Case("scheme-ftp", "RFC 9113 §8.3.1", get(scheme=b"ftp"),
           "lbkit takes any valid :scheme and sends the path; HAProxy sends the absolute URI ftp://a.example/",
           expect=DIFFERS),
    H2Case("method-invalid", f"{_DA} c5-method", get(method=b"GET?")),
    H2Case("method-space", "hardening: :method with spaces", get(method=b"GE T")),
    H2Case("method-request-line", "hardening: :method with spaces",
           get(method=b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET")),
    H2Case("method-missing", "RFC 9113 §8.3.1",
           (headers((b":path", b"/"), (b":scheme", b"https"), (b":authority", b"a.example")),)),
    H2Case("method-lowercase", "RFC 9110 §9.1", get(method=b"get")),
    H2Case("authority-userinfo", "RFC 9113 §8.3.1", get(authority=b"user@a.example"),
           ":authority MUST NOT include userinfo (RFC 9113 §8.3.1): lbkit resets the stream, HAProxy drops it",
           expect=STRICTER),
    H2Case("authority-space", "hardening", get(authority=b"a b")),
    H2Case("authority-crlf", "hardening", get(authority=b"a.example\r\nX-Injected: 1")),
    H2Case("pseudo-after-regular", "RFC 9113 §8.3",
           (headers((b":method", b"GET"), (b":scheme", b"https"), (b"x-a", b"1"), (b":path", b"/"),
                    (b":authority", b"a.example")),)),
    H2Case("pseudo-unknown", "RFC 9113 §8.3", get((b":foo", b"bar"))),
    H2Case("pseudo-status", "RFC 9113 §8.3", get((b":status", b"200"))),
    H2Case("connect", "RFC 9113 §8.5", (headers((b":method", b"CONNECT"), (b":authority", b"a.example:443")),),
           "lbkit has no plain CONNECT tunnels over HTTP/2: 405", expect=STRICTER),
    H2Case("connect-extended", f"{_PU} c2_h2",
           (headers(*request(b"CONNECT", scheme=b"http", authority=b"127.0.0.1"), (b":protocol", b"custom_protocol"),
                    end=False),),
           "lbkit's extended CONNECT (RFC 8441) is for :protocol websocket only: another protocol is answered "
           "501; HAProxy turns it into an HTTP/1.1 upgrade", incomplete=True, expect=STRICTER),
    H2Case("connect-extended-h2c", f"{_PU} c9_h2c",
           (headers(*request(b"CONNECT", scheme=b"http", authority=b"127.0.0.1"), (b":protocol", b"h2c"),
                    end=False),), "the same, for the h2c protocol", incomplete=True, expect=STRICTER),
]

FIELDS = [
    H2Case("name-uppercase", "hardening: header names in h2", get((b"X-Foo", b"1"))),
    H2Case("name-space", "hardening: header names with non-token chars", get((b"x foo", b"1"))),
    H2Case("name-colon", "hardening: header names with non-token chars", get((b"x:foo", b"1"))),
    H2Case("name-nul", "hardening: header names with non-token chars", get((b"x\x00foo", b"1"))),
    H2Case("name-empty", "hardening: header names with non-token chars", get((b"", b"1"))),
    H2Case("name-paren", "hardening: header names with non-token chars", get((b"x(a)", b"1"))),
    H2Case("name-crlf", "hardening: header names with non-token chars", get((b"x-a\r\nx-injected", b"1"))),
    H2Case("value-crlf", "hardening: CRLF in h2 header values", get((b"x-a", b"1\r\nx-injected: 1"))),
    H2Case("value-crlf-smuggle", "hardening: CRLF in h2 header values (H2.CRLF)",
           get((b"x-a", b"1\r\n\r\n" + SMUGGLED[:-4]))),
    H2Case("value-cr", "hardening: CRLF in h2 header values", get((b"x-a", b"1\r2"))),
    H2Case("value-lf", "hardening: CRLF in h2 header values", get((b"x-a", b"1\n2"))),
    H2Case("value-nul", "RFC 9113 §8.2.1", get((b"x-a", b"1\x002"))),
    H2Case("value-leading-space", "RFC 9113 §8.2.1", get((b"x-a", b" 1")),
           "a field value MUST NOT start with whitespace (RFC 9113 §8.2.1): lbkit resets the stream, HAProxy "
           "trims it", expect=STRICTER),
    H2Case("host-crlf", "hardening: CRLF in h2 header values",
           (headers((b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"),
                    (b"host", b"a.example\r\nX-Injected: 1")),)),
]

CASES = BASELINE + SMUGGLING + CONNECTION_HEADERS + PSEUDO + FIELDS
