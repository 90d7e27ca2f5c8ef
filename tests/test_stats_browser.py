"""
The stats page in a real browser: headless Chromium (Debian's C{chromium})
loads the page served by an in-process balancer, lists both servers, and
shows a server stopped during the test as DOWN.  A screenshot is kept as an
artifact (the trial temp dir, and C{artifacts/} at the top of the checkout).
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any, Iterator

from twisted.application.service import IService, IServiceCollection
from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from lbkit import Backend, Server, ServerState, stats, tcp
from lbkit.demo import HelloServer
from lbkit.service import ListeningService, LoadBalancerService

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "artifacts")


class _Run(ProcessProtocol):
    """Collects a child's stdout and stderr; L{ended} fires with (code, out, err)."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred[tuple[int, bytes, bytes]] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        code = 0 if reason.check(ProcessDone) else -1
        value: Any = reason.value
        if reason.check(ProcessTerminated):
            code = value.exitCode if value.exitCode is not None else -1
        self.ended.callback((code, self.out, self.err))


def _listeningPorts(service: Any) -> Iterator[ListeningService]:
    if isinstance(service, ListeningService):
        yield service
    if IServiceCollection.providedBy(service):
        for child in service:
            yield from _listeningPorts(child)


def _port(service: IService, label: str) -> int:
    for listening in _listeningPorts(service):
        if listening.label == label and listening.port is not None:
            return int(listening.port.getHost().port)  # type: ignore[attr-defined]
    raise AssertionError(f"nothing labelled {label!r} is listening")


def _row(dom: str, backend: str, server: str) -> str:
    found = re.search(rf'<tr class="server" id="server-{backend}-{server}">(.*?)</tr>', dom, re.S)
    assert found is not None, f"no row for {backend}/{server} in the page: {dom[:2000]}"
    return found.group(1)


class BrowserTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        if not os.access(CHROMIUM, os.X_OK):
            raise SkipTest(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)

    def chromium(self, url: str, *flags: str, quic: bool = False) -> defer.Deferred[tuple[int, bytes, bytes]]:
        """Run headless Chromium on C{url} (with QUIC only if C{quic}); it is killed after 40 seconds."""
        run = _Run()
        argv = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", *([] if quic else ["--disable-quic"]), "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={os.path.join(self.tmp, 'profile')}",
            *flags, url,
        ]
        env = {"HOME": self.tmp, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        transport = self.reactor.spawnProcess(run, CHROMIUM, argv, env=env)
        killer = self.reactor.callLater(40, transport.signalProcess, "KILL")

        def ended(result: tuple[int, bytes, bytes]) -> tuple[int, bytes, bytes]:
            if killer.active():
                killer.cancel()
            return result

        return run.ended.addCallback(ended)

    @defer.inlineCallbacks
    def dumpDOM(self, url: str) -> Any:
        code, out, err = yield self.chromium(url, "--dump-dom")
        self.assertEqual(code, 0, err.decode("utf-8", "replace")[-2000:])
        return out.decode("utf-8")

    @defer.inlineCallbacks
    def test_serversListedAndStoppedServerTurnsDown(self) -> Any:
        """
        Both servers are listed; after one is stopped and marked DOWN (as
        its health check would), the page in the browser shows it DOWN.
        """
        import treq

        hello1 = HelloServer("web1", "tcp:0:interface=127.0.0.1").makeService(self.reactor)
        hello2 = HelloServer("web2", "tcp:0:interface=127.0.0.1").makeService(self.reactor)
        for hello in (hello1, hello2):
            hello.startService()
            self.addCleanup(hello.stopService)
        port1 = _port(hello1, "demo server web1")
        port2 = _port(hello2, "demo server web2")
        web = Backend("web", [Server("web1", f"127.0.0.1:{port1}"), Server("web2", f"127.0.0.1:{port2}")])
        frontend = tcp.Frontend("tcp:0:interface=127.0.0.1", backend=web, name="web-in")
        page = stats.Page("tcp:0:interface=127.0.0.1", refresh=2)
        balancer = LoadBalancerService([frontend, page], reactor=self.reactor)
        balancer.startService()
        self.addCleanup(balancer.stopService)
        frontPort = _port(balancer, "frontend web-in")
        url = f"http://127.0.0.1:{_port(balancer, 'stats page')}/"

        for expected in (b"web1\n", b"web2\n"):
            response = yield treq.get(f"http://127.0.0.1:{frontPort}/", persistent=False)
            body = yield treq.content(response)
            self.assertEqual(body, expected)

        dom = yield self.dumpDOM(url)
        self.assertIn("lbkit statistics", dom)
        self.assertIn('class="state UP"', _row(dom, "web", "web1"))
        self.assertIn('class="state UP"', _row(dom, "web", "web2"))

        yield hello2.stopService()
        web.servers[1].setState(ServerState.DOWN, "test: server stopped", self.reactor.seconds())

        dom = yield self.dumpDOM(url)
        self.assertIn('class="state DOWN"', _row(dom, "web", "web2"))
        self.assertIn(">DOWN ", _row(dom, "web", "web2"))
        self.assertIn('class="state UP"', _row(dom, "web", "web1"))

        shot = os.path.join(self.tmp, "stats_page.png")
        code, out, err = yield self.chromium(url, f"--screenshot={shot}", "--window-size=1200,800",
                                             "--hide-scrollbars")
        self.assertEqual(code, 0, err.decode("utf-8", "replace")[-2000:])
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        os.makedirs(ARTIFACTS, exist_ok=True)
        shutil.copy(shot, os.path.join(ARTIFACTS, "stats_page.png"))
