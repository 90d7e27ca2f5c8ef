"""
HTTP/1.x entries of the differential corpus (see L{tests.corpus}).

Sources named C{<file>.vtc <client>} are HAProxy's reg-tests, in
C{reg-tests/http-messaging/} (or C{reg-tests/http-rules/}) of the HAProxy
repository; "hardening" is lbkit's hardening issue (its findings 5-9 on
HTTP/1.1 parsing); RFC 9112 sections are given as "RFC 9112 §n".
"""

from __future__ import annotations

from tests.corpus import LENIENT, STRICTER, H1Case

__all__ = ["CASES"]

#: Why lbkit refuses what HAProxy forwards, for the CONNECT entries.
_CONNECT = ("lbkit answers a CONNECT 405 unless a route says allowConnect=True (docs/http.md, CONNECT); "
            "HAProxy forwards it")

#: The start of most requests.
G = b"GET / HTTP/1.1\r\nHost: a\r\n"
P = b"POST / HTTP/1.1\r\nHost: a\r\n"
TE = P + b"Transfer-Encoding: chunked\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"

_H1 = "h1_to_h1.vtc"
_TE = "http_transfer_encoding.vtc"
_HN = "h1_host_normalization.vtc"
_TV = "h1_request_target_validation.vtc"
_RB = "http_request_buffer.vtc"
_PU = "protocol_upgrade.vtc"
#: Where http_request_buffer.vtc c3 cuts its request: after "1\r\n1\r\n1".
_RB_SPLIT = len(b"POST /1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n1\r\n1")


def _cl(value: bytes, body: bytes = b"hello") -> bytes:
    return P + b"Content-Length: " + value + b"\r\n\r\n" + body


def _te(value: bytes, body: bytes = b"5\r\nhello\r\n0\r\n\r\n") -> bytes:
    return P + b"Transfer-Encoding: " + value + b"\r\n\r\n" + body


def _chunks(body: bytes) -> bytes:
    return TE + b"\r\n" + body


def _abs(target: bytes, host: bytes | None = None, method: bytes = b"GET") -> bytes:
    head = method + b" " + target + b" HTTP/1.1\r\n"
    if host is not None:
        head += b"Host: " + host + b"\r\n"
    return head + b"\r\n"


BASELINE = [
    H1Case("get", "baseline", G + b"\r\n", "a plain GET: both forward it alike"),
    H1Case("get-http10", "baseline", b"GET / HTTP/1.0\r\n\r\n", "HTTP/1.0 without Host"),
    H1Case("post-cl", "baseline", _cl(b"5"), "a Content-Length body"),
    H1Case("post-chunked", "baseline", _chunks(b"5;name=\"v\"\t;x\r\nhello\r\n000\r\nX-T: 1\r\n\r\n"),
           "chunk extensions, leading zeros, a trailer: all valid"),
    H1Case("get-cl0", f"{_H1} c1h1 test2", b"GET /test2.html HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n"),
    H1Case("get-with-body", f"{_H1} c1h1 test3",
           b"GET /test3.html HTTP/1.1\r\nHost: a\r\nContent-Length: 38\r\n\r\nthis must be delivered, like it or not",
           "a GET body must be delivered"),
    H1Case("get-close-then-garbage", f"{_H1} c1h1 test4",
           b"GET /test4.html HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
           b"this is not sent\r\n\r\n",
           "bytes after a Connection: close request are dropped, never read as a request"),
    H1Case("head-with-body", f"{_H1} c2h1 test13",
           b"HEAD /test13.html HTTP/1.1\r\nHost: a\r\nContent-Length: 38\r\n\r\nthis must be delivered, like it or not"),
    H1Case("post-no-body", f"{_H1} c3h1 test21", b"POST /test21.html HTTP/1.1\r\nHost: a\r\n\r\n"),
    H1Case("post-close-then-garbage", f"{_H1} c3h1 test24",
           b"POST /test24.html HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
           b"this is not sent\r\n\r\n"),
    H1Case("pipelined-three", f"{_H1} c3h1",
           b"POST /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nthis is sent"
           + NEXT, "three pipelined requests, one write", responses=3),
    H1Case("pipelined-split", f"{_H1} c3h1",
           b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nthis is sent" + NEXT,
           "the same, one byte per write", split=1, responses=2),
    H1Case("leading-crlf", "RFC 9112 §2.2", b"\r\n" + G + b"\r\n", "an empty line before the request line is ignored"),
    H1Case("header-underscore", "restrict_req_hdr_names.vtc c1", G + b"X-my_hdr: on\r\n\r\n",
           "an underscore is a token character: forwarded"),
    H1Case("header-obs-text", "RFC 9110 §5.5", G + b"X-A: caf\xe9\r\n\r\n", "bytes >= 0x80 in a value (obs-text)"),
    H1Case("method-lowercase", "RFC 9110 §9.1", b"get / HTTP/1.1\r\nHost: a\r\n\r\n", "methods are case-sensitive tokens"),
    H1Case("expect-continue", "RFC 9110 §10.1.1", P + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"),
    H1Case("http10-keepalive-pipelined", "RFC 9112 §9.3",
           b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + b"GET /2 HTTP/1.0\r\n\r\n", responses=2),
    H1Case("http10-close-pipelined", "RFC 9112 §9.3", b"GET /1 HTTP/1.0\r\n\r\n" + b"GET /2 HTTP/1.0\r\n\r\n",
           "an HTTP/1.0 request without keep-alive ends the connection: the second is never read"),
    H1Case("close-pipelined", "RFC 9112 §9.6", G + b"Connection: close\r\n\r\n" + NEXT,
           "nothing after Connection: close is read"),
    H1Case("options-star", f"{_TV} c1", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
    H1Case("options-slash", f"{_TV} c2", b"OPTIONS / HTTP/1.1\r\nHost: a\r\n\r\n"),
]

CONTENT_LENGTH = [
    H1Case("cl-trailing-comma", f"{_H1} c4h1", b"GET /test31.html HTTP/1.1\r\nHost: a\r\ncontent-length: 0,\r\n\r\n"),
    H1Case("cl-empty", f"{_H1} c5h1", b"GET /test41.html HTTP/1.1\r\nHost: a\r\ncontent-length:\r\n\r\n"),
    H1Case("cl-conflicting", "hardening: multiple/conflicting CL", P + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    H1Case("cl-conflicting-split", "hardening: multiple/conflicting CL",
           P + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", split=1),
    H1Case("cl-identical", "RFC 9112 §6.3", P + b"Content-Length: 5\r\ncontent-length: 5\r\n\r\nhello"),
    H1Case("cl-list-identical", "RFC 9110 §8.6", _cl(b"5, 5"),
           "a list of identical values, which a recipient may take as one", expect=STRICTER),
    H1Case("cl-list-different", "RFC 9110 §8.6", _cl(b"5, 6", b"hello!")),
    H1Case("cl-vt-before", "hardening: CL with control characters", _cl(b"\x0b5")),
    H1Case("cl-ff-after", "hardening: CL with control characters", _cl(b"5\x0c")),
    H1Case("cl-nul-after", "hardening: CL with control characters", _cl(b"5\x00")),
    H1Case("cl-cr-inside", "hardening: CL with control characters", _cl(b"5\r1")),
    H1Case("cl-tabs-around", "RFC 9110 §5.5 (OWS)", _cl(b"\t5\t")),
    H1Case("cl-plus", "RFC 9110 §8.6", _cl(b"+5")),
    H1Case("cl-minus", "RFC 9110 §8.6", _cl(b"-5")),
    H1Case("cl-hex", "RFC 9110 §8.6", _cl(b"0x5")),
    H1Case("cl-decimal", "RFC 9110 §8.6", _cl(b"5.0")),
    H1Case("cl-space-inside", "RFC 9110 §8.6", _cl(b"5 5")),
    H1Case("cl-leading-zeros", "RFC 9110 §8.6", _cl(b"005")),
    H1Case("cl-overflow", "hardening: CL overflow", _cl(b"99999999999999999999")),
    H1Case("cl-space-before-colon", "hardening: whitespace before colon", P + b"Content-Length : 5\r\n\r\nhello"),
    H1Case("cl-underscore-name", "hardening", P + b"Content_Length: 5\r\n\r\nhello",
           "not a Content-Length: the body is read as the start of a next request, never finished"),
    H1Case("cl0-then-request", "RFC 9112 §6.3", _cl(b"0", NEXT),
           "a request after a zero-length body is the next request", responses=2),
    H1Case("cl-body-then-request", "RFC 9112 §6.3", _cl(b"5", b"hello" + NEXT), responses=2),
    H1Case("cl-short-body-eats-request", "RFC 9112 §6.3", _cl(b"10", b"hello" + NEXT),
           "the first 10 bytes after the head are the body, the rest is garbage"),
    H1Case("cl-body-cut", "RFC 9112 §8", _cl(b"10"), incomplete=True),
    H1Case("cl-body-cut-long-url", f"{_RB} c1",
           b"GET /this-is-a-long-url" + b"-this-is-a-long-url" * 6 + b" HTTP/1.1\r\nContent-Length: 209\r\n\r\n"
           + b"abcdefghijklmnopqrstuvwxyz" * 8,
           "one byte of the body missing, sent in small writes", split=(3, 4, 23, 42, 61, 80, 99, 118, 137, 141),
           incomplete=True),
]

TRANSFER_ENCODING = [
    H1Case("te-cl-smuggle", f"{_TE} c1",
           TE + b"Content-Length: 31\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
           "HAProxy drops the Content-Length and closes after; lbkit refuses both together (RFC 9112 §6.1: "
           "a server may reject it, and lbkit does, at no cost to correct clients)", expect=STRICTER),
    H1Case("cl-te-smuggle", "hardening: TE + CL (CL.TE)",
           P + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
           "the classic CL.TE probe", expect=STRICTER),
    H1Case("te-cl-split", "hardening: TE + CL", TE + b"Content-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
           "the same, sent three bytes at a time", split=3, expect=STRICTER),
    H1Case("te-http10", f"{_TE} c2", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
           "HTTP/1.0 has no chunked coding: a recipient cannot be sure a server reads it (RFC 9112 §6.1)",
           expect=STRICTER),
    H1Case("te-with-te-trailers", f"{_TE} c5",
           b"POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTE: trailers, gzip\r\n\r\n0\r\n\r\n"),
    H1Case("te-chunked-chunked", f"{_TE} c6", _te(b"chunked, chunked")),
    H1Case("te-chunked-gzip-chunked", f"{_TE} c7", _te(b"chunked, gzip, chunked")),
    H1Case("te-chunked-gzip", f"{_TE} c8", _te(b"chunked, gzip")),
    H1Case("te-gzip", f"{_TE} c9", _te(b"gzip", b"")),
    H1Case("te-gzip-chunked", f"{_TE} c10", _te(b"gzip, chunked")),
    H1Case("te-identity-chunked", "hardening: identity, chunked", _te(b"identity, chunked")),
    H1Case("te-two-lines", "hardening: chunked, chunked",
           P + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    H1Case("te-uppercase", "RFC 9112 §7 (codings are case-insensitive)", _te(b"CHUNKED")),
    H1Case("te-name-mixed-case", "RFC 9110 §5.1", P + b"transfer-ENCODING: chunked\r\n\r\n0\r\n\r\n"),
    H1Case("te-space-before-colon", "hardening: whitespace before colon",
           P + b"Transfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    H1Case("te-tab-value", "RFC 9110 §5.5 (OWS)", _te(b"\tchunked")),
    H1Case("te-xchunked", "hardening", _te(b"xchunked")),
    H1Case("te-chunked-trailing-comma", "RFC 9110 §5.6.1 (empty list elements)", _te(b"chunked,")),
    H1Case("te-leading-comma", "RFC 9110 §5.6.1 (empty list elements)", _te(b", chunked"), expect=LENIENT,
           why=("an empty list element is allowed (RFC 9110 §5.6.1): lbkit reads chunked and sends "
                "the server a plain 'Transfer-Encoding: chunked'; HAProxy answers 422")),
    H1Case("te-chunked-param", "RFC 9112 §7", _te(b"chunked;q=1")),
    H1Case("te-vt", "hardening: control characters", _te(b"chunked\x0b")),
    H1Case("te-nul-in-name", "hardening", P + b"Transfer-Encoding\x00: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    H1Case("te-obs-fold", "hardening: obsolete line folding",
           P + b"Transfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
           "a folded Transfer-Encoding: HAProxy unfolds it, lbkit refuses any folding (RFC 9112 §5.2 allows "
           "either)", expect=STRICTER),
    H1Case("te-first-line-folded", "hardening: obsolete line folding",
           b"POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: a\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
           "whitespace before the first header line (RFC 9112 §2.2: reject)"),
    H1Case("te-get-empty-body", "RFC 9112 §6.1", b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    H1Case("te-chunked-then-request", "RFC 9112 §7.1", _chunks(b"5\r\nhello\r\n0\r\n\r\n" + NEXT), responses=2),
]

CHUNKS = [
    H1Case("chunk-size-overflow", "hardening: chunk sizes that overflow", _chunks(b"10000000000000\r\nhello\r\n0\r\n\r\n")),
    H1Case("chunk-size-ffff", "hardening: chunk sizes that overflow", _chunks(b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n")),
    H1Case("chunk-size-17-digits", "hardening: chunk sizes that overflow",
           _chunks(b"00000000000000005\r\nhello\r\n0\r\n\r\n"), expect=STRICTER,
           why=("17 hex digits, a small value: lbkit takes at most 16 digits, as a size that fits 64"
                " bits")),
    H1Case("chunk-size-overflow-split", "hardening: chunk sizes that overflow",
           _chunks(b"10000000000000\r\nhello\r\n0\r\n\r\n"), split=2),
    H1Case("chunk-size-largest", "hardening: chunk sizes", _chunks(b"fffffffffffff\r\nhello"),
           "2**52 - 1, the largest both take: the body is then unfinished", incomplete=True),
    H1Case("chunk-size-0x", "RFC 9112 §7.1", _chunks(b"0x5\r\nhello\r\n0\r\n\r\n")),
    H1Case("chunk-size-plus", "RFC 9112 §7.1", _chunks(b"+5\r\nhello\r\n0\r\n\r\n")),
    H1Case("chunk-size-minus", "RFC 9112 §7.1", _chunks(b"-5\r\nhello\r\n0\r\n\r\n")),
    H1Case("chunk-size-space-before", "RFC 9112 §7.1", _chunks(b" 5\r\nhello\r\n0\r\n\r\n")),
    H1Case("chunk-size-space-after", "RFC 9112 §7.1.1 (BWS)", _chunks(b"5 \r\nhello\r\n0\r\n\r\n")),
    H1Case("chunk-size-empty", "RFC 9112 §7.1", _chunks(b"\r\nhello\r\n0\r\n\r\n")),
    H1Case("chunk-ext-bare-cr", "hardening: bare CR in chunk extension", _chunks(b"5;a\rb\r\nhello\r\n0\r\n\r\n")),
    H1Case("chunk-ext-bare-cr-split", "hardening: bare CR in chunk extension",
           _chunks(b"5;a\rb\r\nhello\r\n0\r\n\r\n"), split=(len(TE) + 5, len(TE) + 6)),
    H1Case("chunk-ext-bare-lf", "hardening: bare LF", _chunks(b"5;a\nb\r\nhello\r\n0\r\n\r\n")),
    H1Case("chunk-ext-nul", "hardening: control characters", _chunks(b"5;a\x00b\r\nhello\r\n0\r\n\r\n"), expect=STRICTER,
           why=("HAProxy re-chunks bodies and drops extensions; lbkit forwards chunks as they are, "
                "so it refuses control bytes in extensions")),
    H1Case("chunk-ext-tab", "RFC 9112 §7.1.1", _chunks(b"5;a=b\tc\r\nhello\r\n0\r\n\r\n")),
    H1Case("chunk-size-bare-lf", "hardening: bare LF line endings", _chunks(b"5\nhello\r\n0\r\n\r\n"),
           expect=STRICTER, why="HAProxy takes LF alone as a chunk line end; lbkit wants CRLF (RFC 9112 §7.1)"),
    H1Case("chunk-data-bare-lf", "hardening: bare LF line endings", _chunks(b"5\r\nhello\n0\r\n\r\n"),
           expect=STRICTER, why="the same after chunk data"),
    H1Case("chunk-last-bare-lf", "hardening: bare LF line endings", _chunks(b"5\r\nhello\r\n0\n\n"), expect=STRICTER,
           why=("HAProxy takes LF alone as the end of the last chunk and trailers; lbkit wants CRLF")),
    H1Case("chunk-data-too-long", "RFC 9112 §7.1", _chunks(b"5\r\nhelloXX\r\n0\r\n\r\n")),
    H1Case("chunk-data-no-crlf", "RFC 9112 §7.1", _chunks(b"5\r\nhello0\r\n\r\n")),
    H1Case("chunk-trailer-malformed", "hardening: malformed trailer line", _chunks(b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n")),
    H1Case("chunk-trailer-bare-cr", "hardening: malformed trailer line", _chunks(b"5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n")),
    H1Case("chunk-trailer-space-before-colon", "hardening: whitespace before colon",
           _chunks(b"5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n")),
    H1Case("chunk-trailer-folded", "hardening: obsolete line folding", _chunks(b"5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"), expect=STRICTER,
           why='HAProxy drops or unfolds trailers; lbkit refuses folding anywhere'),
    H1Case("chunk-trailer-smuggle", "hardening", _chunks(b"0\r\nContent-Length: 5\r\n\r\nhello"),
           "a Content-Length trailer says nothing of framing: 'hello' is the start of a next request"),
    H1Case("chunk-zero-ext", "RFC 9112 §7.1.1", _chunks(b"0;ext=1\r\n\r\n")),
    H1Case("chunk-split-on-size", f"{_RB} c3",
           b"POST /1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n1\r\n1\r\n1\r\n0\r\n\r\n",
           "a chunked body split in two writes on a chunk size", split=(_RB_SPLIT,)),
    H1Case("chunk-double-space", f"{_RB} c3",
           b"POST /1  HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n1\r\n1\r\n1\r\n0\r\n\r\n",
           "two spaces before the version: HAProxy takes it, lbkit wants the request line's single spaces "
           "(RFC 9112 §3)", split=(_RB_SPLIT + 1,), expect=STRICTER),
    H1Case("chunk-cut-before-crlf", f"{_RB} c4",
           b"POST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n1\r\n1\r\n1\r\n0\r\n",
           "the last CRLF never comes", split=(_RB_SPLIT,), incomplete=True),
]

LIMITS = [
    H1Case("request-line-70k", "hardening: huge request line", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"),
    H1Case("request-line-70k-split", "hardening: huge request line, small writes",
           b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", split=1024),
    H1Case("headers-10000", "hardening: 10,000 headers", G + b"X-A: 1\r\n" * 10000 + b"\r\n"),
    H1Case("headers-10000-split", "hardening: 10,000 headers, small writes", G + b"X-A: 1\r\n" * 10000 + b"\r\n",
           split=1024),
    H1Case("header-100k", "hardening: one 100 KB header", G + b"X-Big: " + b"x" * 100000 + b"\r\n\r\n"),
    H1Case("header-100k-split", "hardening: one 100 KB header, small writes",
           G + b"X-Big: " + b"x" * 100000 + b"\r\n\r\n", split=1024),
    H1Case("headers-100", "tune.http.maxhdr (101 with the request line)", b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 100 + b"\r\n"),
    H1Case("headers-101", "tune.http.maxhdr (101 with the request line)", b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n"),
    H1Case("head-60k", "tune.bufsize - tune.maxrewrite (set to lbkit's MAX_HEAD)", G + b"X-Big: " + b"x" * 60000 + b"\r\n\r\n"),
]

TARGETS = [
    H1Case("abs-host-match", "RFC 9112 §3.2.2", _abs(b"http://a.example/x", b"a.example")),
    H1Case("abs-no-host", "RFC 9112 §3.2.2", _abs(b"http://a.example/x")),
    H1Case("abs-userinfo", f"{_HN} c1", _abs(b"http://toto:poue@hostname:80/c1", b"hostname:80"),
           "userinfo in a target is deprecated (RFC 9110 §4.2.4): lbkit refuses it, HAProxy skips it", expect=STRICTER),
    H1Case("abs-8080", f"{_HN} c2", _abs(b"http://hostname:8080/c2", b"hostname:8080")),
    H1Case("abs-https-443", f"{_HN} c3", _abs(b"https://hostname:443/c3", b"hostname:443")),
    H1Case("abs-https-80", f"{_HN} c4", _abs(b"https://hostname:80/c4", b"hostname:80")),
    H1Case("abs-host-mismatch", f"{_HN} c8 / hardening: absolute-form with a mismatching Host",
           _abs(b"http://hostname1/", b"hostname2")),
    H1Case("abs-port-mismatch", f"{_HN} c9", _abs(b"http://hostname:80/", b"hostname:81")),
    H1Case("abs-port-host-no-port", f"{_HN} c10", _abs(b"http://hostname:8080/", b"hostname")),
    H1Case("abs-no-port-host-81", f"{_HN} c11", _abs(b"http://hostname/", b"hostname:81")),
    H1Case("abs-two-hosts", f"{_HN} c12",
           b"GET http://hostname1/ HTTP/1.1\r\nhost: hostname1\r\nhost: hostname2\r\n\r\n"),
    H1Case("abs-two-hosts-port", f"{_HN} c13",
           b"GET http://hostname1/ HTTP/1.1\r\nhost: hostname1:80\r\nhost: hostname1\r\n\r\n"),
    H1Case("abs-default-port-host-bare", f"{_HN} c20", _abs(b"http://hostname:80/c20", b"hostname")),
    H1Case("abs-https-default-host-bare", f"{_HN} c21", _abs(b"https://hostname:443/c21", b"hostname")),
    H1Case("abs-bare-host-default", f"{_HN} c22", _abs(b"http://hostname/c22", b"hostname:80")),
    H1Case("abs-empty-port", f"{_HN} c24", _abs(b"http://hostname:/c24", b"hostname")),
    H1Case("abs-host-empty-port", f"{_HN} c26", _abs(b"http://hostname/c26", b"hostname:")),
    H1Case("abs-default-port-host-empty", f"{_HN} c28", _abs(b"http://hostname:80/c28", b"hostname:")),
    H1Case("abs-empty-port-host-default", f"{_HN} c29", _abs(b"http://hostname:/c29", b"hostname:80")),
    H1Case("abs-empty-authority", f"{_HN} c32", _abs(b"http://:", b":80"),
           "no host at all: lbkit refuses an empty authority (RFC 9110 §4.2.1), HAProxy forwards it",
           expect=STRICTER),
    H1Case("abs-empty-authority-host-colon", f"{_HN} c34", _abs(b"http://:", b":"),
           "the same, with Host ':'", expect=STRICTER),
    H1Case("abs-no-path", f"{_HN} c36", _abs(b"http://hostname", b"hostname")),
    H1Case("abs-no-path-port", f"{_HN} c37", _abs(b"http://hostname:80", b"hostname")),
    H1Case("abs-no-path-81", f"{_HN} c42", _abs(b"http://hostname:81", b"hostname:81")),
    H1Case("abs-ftp", "hardening: absolute-form with ftp://", _abs(b"ftp://a.example/x", b"a.example"),
           "lbkit forwards http and https targets only", expect=STRICTER),
    H1Case("abs-options", f"{_TV} c3", _abs(b"http://haproxy.org", b"haproxy.org", b"OPTIONS")),
    H1Case("connect", f"{_HN} c5", _abs(b"hostname:80", b"hostname:80", b"CONNECT"), expect=STRICTER,
           why=_CONNECT),
    H1Case("connect-no-port", f"{_HN} c14", _abs(b"hostname", b"hostname", b"CONNECT")),
    H1Case("connect-host-mismatch", f"{_HN} c15", _abs(b"hostname1:80", b"hostname2:80", b"CONNECT")),
    H1Case("connect-port-mismatch", f"{_HN} c16", _abs(b"hostname:80", b"hostname:443", b"CONNECT")),
    H1Case("connect-slash", f"{_HN} c18", _abs(b"/", b"hostname", b"CONNECT")),
    H1Case("connect-empty-port", f"{_HN} c19", _abs(b"hostname:", b"hostname", b"CONNECT")),
    H1Case("connect-absolute", f"{_TV} c9", _abs(b"http://haproxy.org:80", b"haproxy.org", b"CONNECT"),
           expect=STRICTER, why=_CONNECT),
    H1Case("options-star-path", f"{_TV} c4", _abs(b"*/test", b"a", b"OPTIONS"), expect=STRICTER,
           why=("HAProxy 2.6 forwards '*/test' (3.0 refuses it, as the reg-test says); lbkit takes "
                "'*' alone")),
    H1Case("get-star", f"{_TV} c5", _abs(b"*", b"a")),
    H1Case("get-authority-form", f"{_TV} c12", _abs(b"haproxy.org:80", b"haproxy.org")),
    H1Case("get-relative", f"{_TV} c13", _abs(b"admin", b"a")),
    H1Case("get-relative-path", f"{_TV} c14", _abs(b"admin/a/b", b"a")),
    H1Case("target-hash", "hardening: # in target", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"),
    H1Case("target-0x80", "hardening: bytes >= 0x80 in target", b"GET /a\x80b HTTP/1.1\r\nHost: a\r\n\r\n",
           "HAProxy forwards bytes >= 0x80 in a target; lbkit refuses them (RFC 3986 allows none)", expect=STRICTER),
    H1Case("target-0xff", "hardening: bytes >= 0x80 in target", b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n"),
    H1Case("target-ctl", "hardening: control bytes in target", b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n"),
    H1Case("target-del", "hardening: control bytes in target", b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n"),
    H1Case("target-tab", "hardening: control bytes in target", b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"),
    H1Case("target-nul", "hardening: control bytes in target", b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n"),
]

HOSTS = [
    H1Case("host-duplicate", "hardening: duplicate Host", G + b"Host: b\r\n\r\n"),
    H1Case("host-duplicate-split", "hardening: duplicate Host", G + b"X: 1\r\nhost: b\r\n\r\n", split=7),
    H1Case("host-duplicate-same", "hardening: duplicate Host", G + b"Host: a\r\n\r\n"),
    H1Case("host-duplicate-case", "hardening: duplicate Host", G + b"Host: A\r\n\r\n"),
    H1Case("host-duplicate-port", "hardening: duplicate Host", b"GET / HTTP/1.0\r\nHost: a\r\nHost: a:80\r\n\r\n"),
    H1Case("host-missing", "RFC 9112 §3.2", b"GET / HTTP/1.1\r\n\r\n"),
    H1Case("host-empty", "RFC 9112 §3.2", b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
    H1Case("host-space-inside", "RFC 9110 §7.2", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
    H1Case("host-userinfo", "RFC 9110 §7.2", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
]

SYNTAX = [
    H1Case("bare-lf", "hardening: bare LF line endings", b"GET / HTTP/1.1\nHost: a\n\n",
           "HAProxy takes LF alone as a line end; lbkit wants CRLF (RFC 9112 §2.2 allows either)", expect=STRICTER),
    H1Case("bare-lf-last", "hardening: bare LF line endings", b"GET / HTTP/1.1\r\nHost: a\n\r\n",
           "the same, on the last header line only", expect=STRICTER),
    H1Case("bare-lf-request-line", "hardening: bare LF line endings", b"GET / HTTP/1.1\nHost: a\r\n\r\n",
           "the same, on the request line only", expect=STRICTER),
    H1Case("bare-cr-in-value", "hardening: bare CR", G + b"X-A: a\rb\r\n\r\n"),
    H1Case("bare-cr-line-end", "hardening: bare CR", b"GET / HTTP/1.1\rHost: a\r\n\r\n"),
    H1Case("obs-fold", "hardening: obsolete line folding", G + b"X-A: 1\r\n 2\r\n\r\n",
           "HAProxy unfolds obs-fold; lbkit refuses it (RFC 9112 §5.2 allows either)", expect=STRICTER),
    H1Case("obs-fold-tab", "hardening: obsolete line folding", G + b"X-A: 1\r\n\t2\r\n\r\n",
           "the same, folded with a tab", expect=STRICTER),
    H1Case("space-before-colon", "hardening: whitespace before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
    H1Case("tab-before-colon", "hardening: whitespace before colon", G + b"X-A\t: 1\r\n\r\n"),
    H1Case("header-name-paren", "hardening: non-token header name", G + b"X(a): b\r\n\r\n"),
    H1Case("header-name-space", "hardening: non-token header name", G + b"X a: b\r\n\r\n"),
    H1Case("header-name-high-byte", "hardening: non-token header name", G + b"X\xe9: b\r\n\r\n"),
    H1Case("header-no-colon", "RFC 9112 §5", G + b"Xab\r\n\r\n"),
    H1Case("header-empty-name", "RFC 9112 §5", G + b": b\r\n\r\n"),
    H1Case("header-nul-value", "RFC 9110 §5.5", G + b"X-A: a\x00b\r\n\r\n"),
    H1Case("header-vt-value", "RFC 9110 §5.5", G + b"X-A: a\x0bb\r\n\r\n"),
    H1Case("header-del-value", "RFC 9110 §5.5", G + b"X-A: a\x7fb\r\n\r\n"),
    H1Case("version-1-2", "RFC 9112 §2.3", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", expect=STRICTER,
           why=("HAProxy forwards any HTTP/1.x as HTTP/1.1; lbkit answers 505 to a version it does "
                "not speak")),
    H1Case("version-2-0", "RFC 9112 §2.3", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", expect=STRICTER,
           why='the same for HTTP/2.0 in an HTTP/1 request line'),
    H1Case("version-lowercase", "RFC 9112 §2.3", b"GET / http/1.1\r\nHost: a\r\n\r\n"),
    H1Case("version-0-9", "RFC 9112 §2.3", b"GET /\r\n\r\n"),
    H1Case("version-trailing-space", "RFC 9112 §3", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n"),
    H1Case("method-nontoken", "RFC 9112 §3", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
    H1Case("method-leading-space", "RFC 9112 §3", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    H1Case("double-space-target", "RFC 9112 §3", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", expect=STRICTER,
           why=("two spaces in the request line: HAProxy takes it, lbkit wants single spaces (RFC "
                "9112 §3)")),
    H1Case("leading-lf", "RFC 9112 §2.2", b"\n" + G + b"\r\n", expect=STRICTER,
           why='an LF alone before the request line: lbkit ignores CRLFs only'),
    H1Case("upgrade-custom", f"{_PU} c1",
           G + b"connection: upgrade\r\nupgrade: custom_protocol\r\n\r\n",
           "the server answers 200, not 101: no tunnel, the connection goes on"),
    H1Case("upgrade-h2c", f"{_PU} c8_h2c", G + b"connection: upgrade\r\nupgrade: h2c\r\n\r\n"),
    H1Case("upgrade-websocket-no-key", "websocket.vtc c2_1", G + b"connection: upgrade\r\nupgrade: websocket\r\n\r\n", expect=LENIENT,
           why=("HAProxy checks the WebSocket handshake and wants Sec-WebSocket-Key (RFC 6455 §4.1);"
                " lbkit leaves that to the server and tunnels only after its 101, and the request "
                "has no framing ambiguity")),
    H1Case("upgrade-websocket-lists", "websocket.vtc c2_2",
           G + b"connection: upgrade\r\nupgrade: proto1, websocket, proto2\r\nupgrade: proto3\r\n\r\n"),
    H1Case("upgrade-post-body", f"{_PU} c10_h1_post",
           P + b"connection: upgrade\r\nupgrade: custom_protocol\r\ncontent-length: 50\r\n\r\n" + b"0123456789" * 5),
    H1Case("head-cut", "RFC 9112 §2.2", G, "the blank line never comes", incomplete=True),
]

CASES = BASELINE + CONTENT_LENGTH + TRANSFER_ENCODING + CHUNKS + LIMITS + TARGETS + HOSTS + SYNTAX
