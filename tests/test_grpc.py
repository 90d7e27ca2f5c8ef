"""
gRPC through lbkit, with the real C{grpcio} package on both ends: a grpcio
server on 127.0.0.1 behind C{Server(proto="h2c")} (and C{proto="h2"},
TLS), and a grpcio client speaking HTTP/2 over TLS (ALPN h2) to an http
frontend.  No generated code: generic handlers with bytes messages.

grpcio's calls block, so each runs in a thread (C{deferToThread}) while
the reactor serves lbkit.
"""

from __future__ import annotations

import os
import threading
from concurrent import futures
from typing import Any, Iterator

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from lbkit import Backend, Server
from tests.helpers import startHAProxy
from tests.test_h2up import H2UpTestCase
from tests.test_http_integration import reactor

try:
    import grpc
except ImportError:  # pragma: no cover
    grpc = None

SERVICE = "lbkit.test.Echo"


class EchoService:
    """The handlers of the test service, and what they saw."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.metadata: list[Any] = []

    def unary(self, request: bytes, context: Any) -> bytes:
        self.metadata.append(dict(context.invocation_metadata()))
        return b"echo:" + request

    def bidi(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for message in requests:
            yield b"re:" + message

    def fail(self, request: bytes, context: Any) -> bytes:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "not for you: " + request.decode())
        return b""  # (abort raises)

    def slow(self, request: bytes, context: Any) -> bytes:
        done = threading.Event()
        context.add_callback(done.set)  # called when the RPC ends, cancelled included
        done.wait(10)
        if not context.is_active():
            self.cancelled.set()
        return b"late"

    def handler(self) -> Any:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
        })


class GRPCTestCase(H2UpTestCase):
    """Starts grpcio servers and channels, and stops them."""

    def setUp(self) -> None:
        if grpc is None:
            self.skipTest("grpcio is not installed")
        H2UpTestCase.setUp(self)

    def grpcServer(self, tls: bool = False) -> tuple[int, EchoService, Any]:
        service = EchoService()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((service.handler(),))
        if tls:
            cert = self.pki.issue("grpc.pem", "grpc.example", separateKey=True)
            with open(cert, "rb") as f, open(cert + ".key", "rb") as k:
                credentials = grpc.ssl_server_credentials([(k.read(), f.read())])
            port = server.add_secure_port("127.0.0.1:0", credentials)
        else:
            port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.addCleanup(lambda: deferToThread(lambda: server.stop(0).wait(5)))
        return port, service, server

    def channel(self, port: int) -> Any:
        """A grpcio channel to lbkit's TLS frontend on C{port} (HTTP/2, ALPN h2)."""
        with open(self.pki.caFile, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=[
            ("grpc.ssl_target_name_override", "a.example"),
            ("grpc.enable_http_proxy", 0),
            ("grpc.enable_retries", 0),
        ])
        self.addCleanup(channel.close)
        return channel

    def grpcFrontend(self, port: int, proto: str = "h2c", **kwargs: Any) -> int:
        server = Server("g1", f"127.0.0.1:{port}", proto=proto, **kwargs)
        return self.tlsFrontend(default=Backend("grpc", [server]))


class GRPCTests(GRPCTestCase):
    """gRPC calls pass through lbkit to a grpcio server over h2c."""

    @inlineCallbacks
    def test_unary(self) -> None:
        """A unary call gets its answer, metadata passed on."""
        port, service, _ = self.grpcServer()
        channel = self.channel(self.grpcFrontend(port))
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        answer = yield deferToThread(call, b"hello", metadata=[("x-user", "ann")], timeout=10)
        self.assertEqual(answer, b"echo:hello")
        self.assertEqual(service.metadata[0]["x-user"], "ann")
        answers = yield deferToThread(lambda: [call(b"%d" % i, timeout=10) for i in range(20)])
        self.assertEqual(answers, [b"echo:%d" % i for i in range(20)])

    @inlineCallbacks
    def test_bidiStreaming(self) -> None:
        """A bidirectional stream carries every message both ways, in order."""
        port, _, _ = self.grpcServer()
        channel = self.channel(self.grpcFrontend(port))
        call = channel.stream_stream(f"/{SERVICE}/Bidi")
        messages = [b"m%d" % i * 1000 for i in range(50)]
        answers = yield deferToThread(lambda: list(call(iter(messages), timeout=10)))
        self.assertEqual(answers, [b"re:" + m for m in messages])

    @inlineCallbacks
    def test_statusInTrailers(self) -> None:
        """A handler's abort reaches the client as its status code and details."""
        port, _, _ = self.grpcServer()
        channel = self.channel(self.grpcFrontend(port))
        call = channel.unary_unary(f"/{SERVICE}/Fail")

        def run() -> Any:
            try:
                call(b"bob", timeout=10)
            except grpc.RpcError as e:
                return e.code(), e.details()
            return None

        code, details = yield deferToThread(run)
        self.assertEqual((code, details), (grpc.StatusCode.PERMISSION_DENIED, "not for you: bob"))

    @inlineCallbacks
    def test_deadline(self) -> None:
        """A deadline expiring on the client is DEADLINE_EXCEEDED there, and cancels the call on the server."""
        port, service, _ = self.grpcServer()
        channel = self.channel(self.grpcFrontend(port))
        call = channel.unary_unary(f"/{SERVICE}/Slow")

        def run() -> Any:
            try:
                call(b"", timeout=0.5)
            except grpc.RpcError as e:
                return e.code()
            return None

        code = yield deferToThread(run)
        self.assertEqual(code, grpc.StatusCode.DEADLINE_EXCEEDED)
        cancelled = yield deferToThread(service.cancelled.wait, 10)
        self.assertTrue(cancelled)

    @inlineCallbacks
    def test_serverDown(self) -> None:
        """With the gRPC server gone, the client gets UNAVAILABLE."""
        port, _, server = self.grpcServer()
        fe = self.grpcFrontend(port)
        yield deferToThread(lambda: server.stop(0).wait(5))
        call = self.channel(fe).unary_unary(f"/{SERVICE}/Unary")

        def run() -> Any:
            try:
                call(b"x", timeout=10)
            except grpc.RpcError as e:
                return e.code()
            return None

        code = yield deferToThread(run)
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)


class GRPCCleartextTests(GRPCTestCase):
    """h2c both ways: a grpcio client on a plaintext channel to a cleartext frontend, h2c to the server."""

    @inlineCallbacks
    def test_unaryAndStreaming(self) -> None:
        """Unary and streaming calls, and a status with its details, pass over h2c end to end."""
        port, _, _ = self.grpcServer()
        fe = self.frontend(default=Backend("grpc", [Server("g1", f"127.0.0.1:{port}", proto="h2c")]), http2=True)
        channel = grpc.insecure_channel(f"127.0.0.1:{fe}", options=[("grpc.enable_http_proxy", 0)])
        self.addCleanup(channel.close)
        answer = yield deferToThread(channel.unary_unary(f"/{SERVICE}/Unary"), b"plain", timeout=10)
        self.assertEqual(answer, b"echo:plain")
        call = channel.stream_stream(f"/{SERVICE}/Bidi")
        answers = yield deferToThread(lambda: list(call(iter([b"a", b"b"]), timeout=10)))
        self.assertEqual(answers, [b"re:a", b"re:b"])

        def fail() -> Any:
            try:
                channel.unary_unary(f"/{SERVICE}/Fail")(b"zed", timeout=10)
            except grpc.RpcError as e:
                return e.code(), e.details()
            return None

        self.assertEqual((yield deferToThread(fail)), (grpc.StatusCode.PERMISSION_DENIED, "not for you: zed"))


class GRPCOverTLSTests(GRPCTestCase):
    """C{proto="h2"}: gRPC to a grpcio server over TLS, its certificate checked."""

    @inlineCallbacks
    def test_unaryAndStreaming(self) -> None:
        """Unary and streaming calls pass over TLS to the server."""
        port, _, _ = self.grpcServer(tls=True)
        channel = self.channel(self.grpcFrontend(port, "h2", ca=self.pki.caFile, sni="grpc.example"))
        answer = yield deferToThread(channel.unary_unary(f"/{SERVICE}/Unary"), b"tls", timeout=10)
        self.assertEqual(answer, b"echo:tls")
        call = channel.stream_stream(f"/{SERVICE}/Bidi")
        answers = yield deferToThread(lambda: list(call(iter([b"a", b"b"]), timeout=10)))
        self.assertEqual(answers, [b"re:a", b"re:b"])


class GRPCExampleTests(GRPCTestCase):
    """examples/grpc.py, run by twistd, passes gRPC calls to its two grpcio servers."""

    timeout = 60

    @inlineCallbacks
    def test_example(self) -> Any:
        """Calls are balanced over both servers; a failing call's status and details arrive."""
        from tests.test_examples import EXAMPLES, startProcess, stopCleanly, twistd

        self.pki.issue("localhost.pem", "localhost", ("localhost",))
        env = dict(os.environ, LBKIT_TLS_DIR=self.pki.directory)
        watcher, process = startProcess(self, twistd("lbkit", "--config", os.path.join(EXAMPLES, "grpc.py")), env=env)
        yield watcher.waitFor("frontend grpc listening on")
        yield watcher.waitFor("demo gRPC server grpc2 listening on")
        with open(self.pki.caFile, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel("localhost:8110", credentials, options=[("grpc.enable_http_proxy", 0)])
        self.addCleanup(channel.close)
        say = channel.unary_unary("/demo.Echo/Say")
        answers = yield deferToThread(lambda: {say(b"hi", timeout=10) for _ in range(6)})
        self.assertEqual(answers, {b"grpc1: hi", b"grpc2: hi"})

        def fail() -> Any:
            try:
                channel.unary_unary("/demo.Echo/Fail")(b"x", timeout=10)
            except grpc.RpcError as e:
                return e.code(), e.details()
            return None

        self.assertEqual((yield deferToThread(fail)), (grpc.StatusCode.PERMISSION_DENIED, "denied: x"))
        yield stopCleanly(self, watcher, process)


HAPROXY_GRPC = """
defaults
  mode http
  timeout connect 1s
  timeout client 10s
  timeout server 10s
frontend fe
  bind {bind} ssl crt %s alpn h2
  default_backend be
backend be
  server g1 127.0.0.1:%d proto h2
"""


class GRPCDifferentialTests(GRPCTestCase):
    """The same gRPC calls through HAProxy (C{server ... proto h2}) and lbkit: the clients see the same."""

    timeout = 60

    @inlineCallbacks
    def test_sameAsHAProxy(self) -> None:
        """Answers, streamed answers, a status with its details and an expired deadline agree."""
        port, service, _ = self.grpcServer()
        pem = self.pki.issue("haproxy.pem", "a.example")
        haproxyPort, _ = startHAProxy(self, reactor, HAPROXY_GRPC % (pem, port))
        lbkitPort = self.grpcFrontend(port)

        def calls(channel: Any) -> list[Any]:
            seen: list[Any] = []
            for method, kind, payload, timeout in [
                ("Unary", "unary", b"x" * 100000, 10),
                ("Bidi", "stream", [b"a", b"bb" * 5000, b"ccc"], 10),
                ("Fail", "unary", b"eve", 10),
                ("Slow", "unary", b"", 0.3),
            ]:
                try:
                    if kind == "unary":
                        seen.append(channel.unary_unary(f"/{SERVICE}/{method}")(payload, timeout=timeout))
                    else:
                        seen.append(list(channel.stream_stream(f"/{SERVICE}/{method}")(iter(payload), timeout=timeout)))
                except grpc.RpcError as e:
                    seen.append((e.code(), e.details()))
            return seen

        viaHAProxy = yield deferToThread(calls, self.channel(haproxyPort))
        viaLbkit = yield deferToThread(calls, self.channel(lbkitPort))
        self.assertEqual(viaLbkit[:3], viaHAProxy[:3])
        # (the details of an expired deadline depend on whose timer fired first)
        self.assertEqual(viaLbkit[3][0], viaHAProxy[3][0])
        self.assertEqual(viaLbkit[2], (grpc.StatusCode.PERMISSION_DENIED, "not for you: eve"))
        self.assertEqual(viaLbkit[3][0], grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertEqual(viaLbkit[:2], [b"echo:" + b"x" * 100000, [b"re:a", b"re:" + b"bb" * 5000, b"re:ccc"]])
