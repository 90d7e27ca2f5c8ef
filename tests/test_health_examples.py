"""
The health examples: examples/custom_check.py's RedisCheck against a real
redis-server, and examples/health.py as a site file.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from lbkit import Backend, Server, ServerState
from lbkit.config import loadSite
from lbkit.error import CheckFailed
from lbkit.health import BaseCheck, HealthMonitor, HTTPCheck
from lbkit.interfaces import IHealthCheck
from tests.test_health_checks import closedPort, listen, makeSite
from tests.test_health_integration import waitForState

reactor: Any = _reactor

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


def loadExample(name: str) -> Any:
    return loadSite(os.path.join(EXAMPLES, name))


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Redis(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if b"Ready to accept connections" in self.output and not self.ready.called:
            self.ready.callback(None)

    def processEnded(self, reason: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"redis-server exited: {self.output[-500:]!r}"))
        self.ended.callback(None)


class RedisProcess:
    """A redis-server on a free 127.0.0.1 port, with no persistence."""

    def __init__(self, testCase: TestCase) -> None:
        self.testCase = testCase
        self.port = freePort()
        self.protocol: _Redis | None = None

    def start(self) -> Deferred[None]:
        self.protocol = _Redis()
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--loglevel", "notice"]
        reactor.spawnProcess(self.protocol, REDIS, args, env={}, path="/tmp")
        return self.protocol.ready

    def stop(self) -> Deferred[None]:
        protocol, self.protocol = self.protocol, None
        if protocol is None or protocol.ended.called:
            return Deferred.fromCoroutine(_done())
        protocol.transport.signalProcess("TERM")  # type: ignore[union-attr]
        return protocol.ended


async def _done() -> None:
    return None


class CustomCheckSiteTests(SynchronousTestCase):
    def test_siteLoads(self) -> None:
        """examples/custom_check.py loads, and its backend uses the RedisCheck it defines."""
        site = loadExample("custom_check.py")
        check = site.namespace["redis"].health
        self.assertIsInstance(check, site.namespace["RedisCheck"])
        self.assertIsInstance(check, BaseCheck)
        self.assertTrue(verifyObject(IHealthCheck, check))
        self.assertEqual((check.interval, check.rise, check.fall, check.timeout), (1.0, 2, 2, 0.5))


class HealthSiteTests(SynchronousTestCase):
    def test_siteLoads(self) -> None:
        """examples/health.py loads: an HTTPCheck on a three-server backend, web1 in slow start."""
        site = loadExample("health.py")
        app = site.namespace["app"]
        self.assertIsInstance(app.health, HTTPCheck)
        self.assertEqual(app.health.path, "/")
        self.assertEqual(app.health.onMarkedDown, "shutdown-sessions")
        self.assertEqual([s.name for s in app.servers], ["web1", "web2", "web3"])
        self.assertEqual(app.servers[0].slowstart, 10.0)
        self.assertEqual(site.listen[0].backends(), [app])


class RedisCheckTests(TestCase):
    timeout = 20

    def setUp(self) -> Any:
        if not os.path.exists(REDIS):
            raise SkipTest("redis-server is not installed")
        self.RedisCheck = loadExample("custom_check.py").namespace["RedisCheck"]
        self.redis = RedisProcess(self)
        self.addCleanup(self.redis.stop)
        return self.redis.start()

    @inlineCallbacks
    def test_pongPasses(self) -> None:
        """A running redis answers PING with +PONG: the check passes."""
        server = Server("redis1", f"127.0.0.1:{self.redis.port}")
        result = yield self.RedisCheck().check(server, reactor)
        self.assertIsNone(result)

    @inlineCallbacks
    def test_wrongPasswordFails(self) -> None:
        """AUTH against a redis without a password fails with redis's answer as the reason."""
        server = Server("redis1", f"127.0.0.1:{self.redis.port}")
        d = self.RedisCheck(password="secret").check(server, reactor)
        e = yield self.assertFailure(d, CheckFailed)
        self.assertTrue(str(e).startswith('Layer7 wrong response, info: "-'), str(e))

    @inlineCallbacks
    def test_notRedisFails(self) -> None:
        """An HTTP server is not redis: the check fails at layer 7."""
        site, page = makeSite()
        port, tracking = yield listen(self, site)
        d = self.RedisCheck().check(Server("web", f"127.0.0.1:{port.getHost().port}"), reactor)
        e = yield self.assertFailure(d, CheckFailed)
        self.assertTrue(str(e).startswith("Layer7 "), str(e))

    @inlineCallbacks
    def test_closedPortFails(self) -> None:
        """Nothing listening: the check fails at layer 4."""
        number = yield closedPort(self)
        d = self.RedisCheck().check(Server("r", f"127.0.0.1:{number}"), reactor)
        e = yield self.assertFailure(d, CheckFailed)
        self.assertEqual(str(e), 'Layer4 connection problem, info: "Connection refused"')

    @inlineCallbacks
    def test_monitorFollowsRedis(self) -> None:
        """Used like a built-in: the monitor marks redis DOWN when it stops, UP when it is back."""
        server = Server("redis1", f"127.0.0.1:{self.redis.port}")
        Backend("redis", [server])
        monitor = HealthMonitor(server, self.RedisCheck(interval=0.1, rise=2, fall=2), reactor)
        monitor.start()
        self.addCleanup(monitor.stop)
        down = waitForState(server, ServerState.DOWN)
        yield self.redis.stop()
        at, reason = yield down
        # redis may close a check's connection as it shuts down, then refuse the next
        self.assertRegex(reason, r"^Layer(4 connection problem|7 invalid response)")
        up = waitForState(server, ServerState.UP)
        yield self.redis.start()
        at, reason = yield up
        self.assertTrue(reason.startswith('Layer7 check passed, info: "+PONG", check duration: '), reason)

