"""
lbkit's tcp mode between real third-party programs: redis-server with
redis-cli and redis-benchmark, and nginx with curl.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Sequence

from twisted.internet import reactor as _globalReactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from lbkit import Backend, Server, tcp
from lbkit.service import ListeningService, LoadBalancerService
from tests.helpers import (
    ProcessRunner,
    TrackingProxyFactory,
    freePort,
    requireBinary,
    runProcess,
    spawn,
)

reactor: Any = _globalReactor

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
REDIS_BENCHMARK = "/usr/bin/redis-benchmark"
NGINX = "/usr/sbin/nginx"
CURL = "/usr/bin/curl"


class InteropMixin:
    """Starts lbkit in this process in front of given servers."""

    def startLBKit(self: Any, servers: Sequence[Server]) -> int:
        """
        Run a L{LoadBalancerService} with one tcp frontend on 127.0.0.1,
        port 0, in front of C{servers}; return the port it listens on.
        """
        backend = Backend("be", servers, timeoutConnect=5)
        frontend = tcp.Frontend("tcp:0:interface=127.0.0.1", backend, name="fe", factory=TrackingProxyFactory)
        service = LoadBalancerService([frontend], reactor)
        service.startService()
        self.addCleanup(service.stopService)
        listening = [s for s in service if isinstance(s, ListeningService)][0]
        assert listening.port is not None
        self.proxyFactory = listening.factory
        return int(listening.port.getHost().port)  # type: ignore[attr-defined]

    def settle(self: Any) -> Any:
        """Fire once every connection through lbkit is gone."""
        return gatherResults([p.allGone() for p in self.proxyFactory.built])


class RedisTests(InteropMixin, TestCase):
    """
    Two real redis-server processes behind lbkit's tcp mode.
    """

    timeout = 60

    def setUp(self) -> None:
        self.redisServer = requireBinary(REDIS_SERVER)
        self.redisCli = requireBinary(REDIS_CLI)
        self.redisBenchmark = requireBinary(REDIS_BENCHMARK)

    @inlineCallbacks
    def startRedis(self) -> Any:
        """Start one redis-server on a free port; fire with the port."""
        port = freePort()
        directory = self.mktemp()
        os.makedirs(directory)
        runner = spawn(self, reactor, [
            self.redisServer, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--dir", directory,
        ])
        yield runner.waitForOutput(b"Ready to accept connections", timeout=20)
        return port

    @inlineCallbacks
    def connectionsReceived(self, port: int) -> Any:
        """Ask a redis server directly how many connections it has accepted."""
        runner = yield runProcess(self, reactor, [self.redisCli, "-p", str(port), "INFO", "stats"])
        self.assertEqual(runner.exitCode, 0, runner.output)
        match = re.search(rb"total_connections_received:(\d+)", runner.stdout)
        assert match is not None, runner.output
        return int(match.group(1))

    @inlineCallbacks
    def test_redisCliAndBenchmark(self) -> Any:
        """redis-cli and redis-benchmark work through lbkit, which uses both servers."""
        ports = yield gatherResults([self.startRedis(), self.startRedis()])
        lbPort = self.startLBKit([Server(f"redis{i}", f"127.0.0.1:{p}") for i, p in enumerate(ports)])
        before = yield gatherResults([self.connectionsReceived(p) for p in ports])

        cli: ProcessRunner = yield runProcess(
            self, reactor, [self.redisCli, "-p", str(lbPort)], stdin=b"SET lbkit works\nGET lbkit\nPING\n",
        )
        self.assertEqual(cli.exitCode, 0, cli.output)
        self.assertEqual(cli.stdout.split(), [b"OK", b"works", b"PONG"])

        bench: ProcessRunner = yield runProcess(
            self, reactor,
            [self.redisBenchmark, "-p", str(lbPort), "-q", "-n", "2000", "-c", "10", "-t", "set,get"],
            timeout=40,
        )
        self.assertEqual(bench.exitCode, 0, bench.output)
        for command in (b"SET", b"GET"):
            self.assertTrue(
                re.search(command + rb": [\d.]+ requests per second", bench.stdout), bench.output
            )
        yield self.settle()
        after = yield gatherResults([self.connectionsReceived(p) for p in ports])
        through = [a - b - 1 for a, b in zip(after, before, strict=True)]  # minus our own INFO connection
        self.assertTrue(all(n >= 5 for n in through), f"connections per redis server via lbkit: {through}")
        self.assertGreaterEqual(sum(through), 21)


class NginxCurlTests(InteropMixin, TestCase):
    """
    A large file from a real nginx, fetched with curl through lbkit's tcp mode.
    """

    timeout = 60

    @inlineCallbacks
    def test_largeFileIntact(self) -> Any:
        """A 64 MB file arrives through lbkit with the right sha256."""
        nginx = requireBinary(NGINX)
        curl = requireBinary(CURL)
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        data = os.urandom(64 * 2**20)
        with open(os.path.join(root, "big.bin"), "wb") as f:
            f.write(data)
        expected = hashlib.sha256(data).hexdigest()
        del data
        port = freePort()
        conf = os.path.join(root, "nginx.conf")
        temps = " ".join(f"{kind}_temp_path {root}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        with open(conf, "w") as f:
            f.write(
                f"daemon off; master_process off; pid {root}/nginx.pid; error_log stderr notice;\n"
                "events {}\n"
                f"http {{ access_log off; {temps}\n"
                f"  server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n"
            )
        server = spawn(self, reactor, [nginx, "-p", root, "-c", conf])
        # nginx logs its rlimit once its listening sockets are open.
        yield server.waitForOutput(b"getrlimit(RLIMIT_NOFILE)", timeout=20)

        lbPort = self.startLBKit([Server("nginx", f"127.0.0.1:{port}")])
        out = os.path.join(root, "fetched.bin")
        fetch: ProcessRunner = yield runProcess(
            self, reactor, [curl, "-sS", "--fail", "-o", out, f"http://127.0.0.1:{lbPort}/big.bin"], timeout=40,
        )
        self.assertEqual(fetch.exitCode, 0, fetch.output)
        yield self.settle()
        digest = hashlib.sha256()
        with open(out, "rb") as f:
            for block in iter(lambda: f.read(2**20), b""):
                digest.update(block)
        self.assertEqual(digest.hexdigest(), expected)
        self.assertEqual(os.path.getsize(out), 64 * 2**20)
