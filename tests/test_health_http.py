"""
Health checks with http mode and a keep-alive client: a server is killed
while a client keeps sending requests over one kept-alive connection; the
server is marked DOWN within fall x inter (+ one interval), and no request
fails, before or after detection; it restarts and comes back within rise x
inter (+ one interval).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody

from lbkit import Backend, Server, ServerState, http
from lbkit.health import HTTPCheck
from lbkit.service import ListeningService, LoadBalancerService
from tests.test_health_integration import FALL, INTER, RISE, SLACK, Web, waitForState

reactor: Any = _reactor


class KeepAliveFailoverTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        self.webs = [Web("web1"), Web("web2")]
        for web in self.webs:
            yield web.start()
            self.addCleanup(web.stop)
        self.servers = [Server(w.name, f"127.0.0.1:{w.port}") for w in self.webs]
        self.backend = Backend(
            "app", self.servers, health=HTTPCheck("/", interval=INTER, rise=RISE, fall=FALL)
        )
        frontend = http.Frontend("tcp:0:interface=127.0.0.1", default=self.backend, log=False)
        self.service = LoadBalancerService([frontend], reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        listening = [s for s in self.service if isinstance(s, ListeningService)][0]
        assert listening.port is not None
        self.url = f"http://127.0.0.1:{listening.port.getHost().port}/".encode()  # type: ignore[attr-defined]
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 1
        self.addCleanup(self.pool.closeCachedConnections)
        self.agent = Agent(reactor, pool=self.pool)
        self.failures: list[str] = []

    @inlineCallbacks
    def get(self) -> Any:
        try:
            response = yield self.agent.request(b"GET", self.url)
            body = yield readBody(response)
        except Exception as e:  # a failed request is what this test counts
            self.failures.append(repr(e))
            return None
        if response.code != 200:
            self.failures.append(f"status {response.code}")
            return None
        return body.strip().decode()

    @inlineCallbacks
    def test_noRequestFails(self) -> Any:
        """A keep-alive client sees no failed request while a server dies and comes back."""
        answers = []
        for _ in range(6):
            answers.append((yield self.get()))
        self.assertEqual(sorted(set(answers)), ["web1", "web2"])

        down = waitForState(self.servers[0], ServerState.DOWN)
        killedAt = reactor.seconds()
        yield self.webs[0].stop()
        while not down.called:
            yield self.get()
        downAt, _ = yield down
        self.assertLessEqual(downAt - killedAt, FALL * INTER + INTER + SLACK)
        after = []
        for _ in range(20):
            after.append((yield self.get()))
        self.assertEqual(after, ["web2"] * 20)

        up = waitForState(self.servers[0], ServerState.UP)
        restartedAt = reactor.seconds()
        yield self.webs[0].start()
        while not up.called:
            yield self.get()
        upAt, _ = yield up
        self.assertLessEqual(upAt - restartedAt, RISE * INTER + INTER + SLACK)
        back = []
        for _ in range(6):
            back.append((yield self.get()))
        self.assertEqual(sorted(set(back)), ["web1", "web2"])
        self.assertEqual(self.failures, [])
