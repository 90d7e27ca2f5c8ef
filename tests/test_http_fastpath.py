"""
Tests for the shortcuts on http mode's hot path: the one-regex head
parser agrees with the line-by-line one, access-log fields are built only
when someone reads them, and a response head leaves with its body.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from lbkit.http import HTTPProxyFactory, _headers, _parse
from lbkit.http._parse import BadMessage, Request, parseRequestHead, parseResponseHead
from tests.test_http import OK, Harness

HEADS = [
    b"GET / HTTP/1.1",
    b"GET /a?b=c HTTP/1.0\r\nHost: x",
    b"POST /up HTTP/1.1\r\nHost:  a b \r\nX-Empty:\r\nX-Tab:\tv\t\r\nContent-Length: 3",
    b"GET / HTTP/1.1\r\n",  # an empty header line
    b"GET / HTTP/1.1\r\n folded: no",
    b"GET / HTTP/1.1\r\nBad Name: x",
    b"GET / HTTP/1.1\r\nX: a\rb",
    b"GET / HTTP/1.1\r\nX: a\nb",
    b"GET / HTTP/1.1\r\nX: a\x00b",
    b"GET / HTTP/2.0\r\nHost: x",
    b"GET  / HTTP/1.1",
    b"G@T / HTTP/1.1",
    b"GET /\x7f HTTP/1.1",
    b"GET / HTTP/1.1\nHost: x",
    b"GET /a#b HTTP/1.1\r\nHost: x",
    b"GET /\x80 HTTP/1.1\r\nHost: x",
    b"GET http://x/a?b HTTP/1.1\r\nX: 1",
    b"GET http://x/a HTTP/1.1\r\nHost: y",
    b"GET / HTTP/1.1\r\nHost: x\r\nHost: x",
    b"GET / HTTP/1.1\r\nHost: x\r\nHost: y",
    b"GET / HTTP/1.1" + b"\r\nX: 1" * 101,
]


class ParserAgreementTests(SynchronousTestCase):
    """
    The fast path gives the same answer as the careful parser, and leaves
    everything unusual to it.
    """

    def parseBoth(self, parse: Any, head: bytes) -> tuple[Any, Any]:
        """C{parse(head)} with the fast path, then with the careful parser alone."""

        def attempt() -> Any:
            try:
                m = parse(head)
            except BadMessage as e:
                return ("error", e.status, str(e))
            if isinstance(m, Request):
                return (m.method, m.uri, m.version, m.headers)
            return (m.version, m.code, m.reason, m.headers)

        fast = attempt()
        saved = _parse._REQUEST_LINE, _parse._FIELDS
        _parse._REQUEST_LINE = _parse._FIELDS = re.compile(b"(?!)")  # never matches
        try:
            slow = attempt()
        finally:
            _parse._REQUEST_LINE, _parse._FIELDS = saved
        return fast, slow

    def test_requestHeads(self) -> None:
        """Every request head gives the same fields, or the same error, either way."""
        for head in HEADS:
            fast, slow = self.parseBoth(parseRequestHead, head)
            self.assertEqual(fast, slow, head)
        self.assertIsNotNone(_parse._FIELDS.fullmatch(HEADS[2], HEADS[2].index(b"\r\n") + 2))

    def test_responseHeads(self) -> None:
        """Every response head gives the same fields, or the same error, either way."""
        for head in [
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length:  13 ",
            b"HTTP/1.0 204",
            b"HTTP/1.1 200 OK\r\n folded",
            b"HTTP/1.1 200 OK\r\nX: a\rb",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 2000 OK",
        ]:
            fast, slow = self.parseBoth(parseResponseHead, head)
            self.assertEqual(fast, slow, head)

    def test_valuesStripped(self) -> None:
        """Spaces and tabs around values go; inner ones stay; empty values stay empty."""
        r = parseRequestHead(b"GET / HTTP/1.1\r\nA:  x  y \t\r\nB:\r\nC:\t\t")
        self.assertEqual(r.headers, [[b"A", b"x  y"], [b"B", b""], [b"C", b""]])

    def test_headersMutable(self) -> None:
        """Header pairs are lists, which rules and persistence edit in place."""
        r = parseRequestHead(b"GET / HTTP/1.1\r\nA: 1")
        r.headers[0][1] = b"2"
        self.assertEqual(r.header(b"a"), b"2")


class QuietLogTests(SynchronousTestCase):
    """Access-log fields are skipped only when nothing could see them."""

    def exchange(self, h: Harness) -> None:
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(OK)

    def test_instanceHookStillCalled(self) -> None:
        """With log=False, a C{finished} set on the instance still gets the fields."""
        h = Harness(self, frontendArgs={"log": False})
        self.exchange(h)
        self.assertEqual([f["status"] for f in h.logged], [200])

    def test_subclassHookStillCalled(self) -> None:
        """With log=False, a factory overriding C{logAccess} still gets the fields."""
        seen: list[dict[str, Any]] = []

        class Factory(HTTPProxyFactory):
            def logAccess(self, fields: dict[str, Any]) -> None:
                seen.append(fields)

        h = Harness(self, frontendArgs={"log": False, "factory": Factory})
        proto, client = h.accept()
        del proto.finished  # the class's no-op hook
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(OK)
        self.assertEqual([f["status"] for f in seen], [200])

    def test_nobodyListening(self) -> None:
        """With log=False and no hook, the fields are never built; with log=True they are."""
        calls: list[Any] = []
        self.patch(_headers, "formatAddress", lambda address: calls.append(address) or "-")
        for log in (False, True):
            h = Harness(self, frontendArgs={"log": log})
            proto, client = h.accept()
            del proto.finished  # back to the class's no-op hook
            proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            server, serverSide = h.connect()
            server.dataReceived(OK)
            self.assertEqual((len(calls), client.value()[-2:]), (int(log), b"ok"))


class CoalescingTests(SynchronousTestCase):
    """A response head goes out in one write with the body bytes that came with it."""

    def test_headWithBody(self) -> None:
        """Head and body arriving together leave in one write."""
        h = Harness(self)
        proto, client = h.accept()
        writes: list[bytes] = []
        proto.writeResponse = lambda data: (writes.append(data), client.write(data))  # type: ignore[method-assign]
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(OK)
        self.assertEqual(len(writes), 1)
        self.assertTrue(writes[0].endswith(b"\r\n\r\nok"))

    def test_headAlone(self) -> None:
        """A head whose body has not arrived yet is not held back."""
        h = Harness(self)
        proto, client = h.accept()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server, serverSide = h.connect()
        server.dataReceived(OK[:-2])
        self.assertTrue(client.value().endswith(b"\r\n\r\n"))
        server.dataReceived(b"ok")
        self.assertTrue(client.value().endswith(b"\r\n\r\nok"))
