"""
Tests for L{lbkit.fromhaproxy}: HAProxy configurations translated into site
files that load, lines it cannot translate reported with their numbers, and
the same traffic through HAProxy on the original and lbkit on the
translation giving clients the same answers.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from lbkit import balance, http
from lbkit.config import loadSite
from lbkit.fromhaproxy import translate
from lbkit.health import HTTPCheck, TCPCheck
from lbkit.persistence import Cookie, StickySource
from lbkit.service import LoadBalancerService
from tests.helpers import freePort, startHAProxy

FULL = """\
global
    daemon
    nbthread 4
    log 127.0.0.1:5140 local1

defaults
    mode http
    log global
    option httplog
    timeout connect 4s
    timeout client 20s
    timeout server 25s
    timeout queue 3s
    retries 2

frontend www
    bind 127.0.0.1:18501
    bind [::1]:18502
    option forwardfor
    acl api path_beg /api /v2
    acl static path_end .css .js
    acl admin hdr(host) -i admin.example
    acl office src 10.0.0.0/8
    http-request set-header X-Front www
    http-request del-header X-Debug
    http-response set-header X-Served-By lbkit
    use_backend api if api
    use_backend static if static || { path_reg ^/img/ }
    use_backend adm if admin office
    use_backend adm if admin !office
    default_backend web
    monitor-uri /up

backend web
    balance leastconn
    option httpchk GET /health
    http-check expect status 200
    cookie SRV insert indirect nocache httponly
    default-server inter 3s rise 3 fall 2
    server w1 127.0.0.1:9101 check cookie a weight 10 maxconn 50
    server w2 127.0.0.1:9102 check cookie b backup slowstart 10s send-proxy

backend api
    balance uri depth 2
    hash-type consistent
    stick-table type ip size 200k expire 30m
    stick on src
    server a1 127.0.0.1:9103 check
    server a2 127.0.0.1:9104

backend static
    balance url_param id
    server s1 127.0.0.1:9105 check inter 500ms
    option prefer-last-server

backend adm
    server m1 127.0.0.1:9106

listen db
    mode tcp
    bind 127.0.0.1:18503
    balance source
    server d1 127.0.0.1:9107 check port 9999
    server d2 localhost

listen statistics
    bind 127.0.0.1:18504
    stats enable
    stats uri /
    stats refresh 5s

peers mypeers
    peer one 127.0.0.1:10000
"""


def _number(text: str) -> int:
    """The line number of C{text} in L{FULL}."""
    return [line.strip() for line in FULL.splitlines()].index(text) + 1


def _write(testCase: SynchronousTestCase, source: str) -> str:
    path = os.path.abspath(testCase.mktemp()) + ".py"
    with open(path, "w") as f:
        f.write(source)
    return path


class TranslateTests(SynchronousTestCase):
    """A configuration using most of what is translated becomes a site file that loads."""

    def setUp(self) -> None:
        self.source, self.problems = translate(FULL, "full.cfg")
        self.site = loadSite(_write(self, self.source))
        self.backends = {b.name: b for item in self.site.listen for b in getattr(item, "backends", list)()}

    def test_backends(self) -> None:
        """Balancers, servers, checks, persistence and timeouts carry over."""
        web, api, static = self.backends["web"], self.backends["api"], self.backends["static"]
        self.assertIsInstance(web.balance, balance.LeastConn)
        self.assertEqual((web.retries, web.timeoutConnect, web.timeoutServer, web.timeoutQueue), (2, 4.0, 25.0, 3.0))
        w1, w2 = web.servers
        self.assertEqual((w1.name, w1.address, w1.weight, w1.maxconn, w1.cookie), ("w1", "127.0.0.1:9101", 10, 50, "a"))
        self.assertEqual((w2.backup, w2.slowstart, w2.sendProxy), (True, 10.0, 1))
        self.assertIsInstance(web.health, HTTPCheck)
        self.assertEqual((web.health.path, web.health.status, web.health.interval, web.health.rise, web.health.fall),
                         ("/health", 200, 3.0, 3, 2))
        self.assertIsInstance(web.persistence, Cookie)
        self.assertEqual((web.persistence.name, web.persistence.indirect, web.persistence.nocache), ("SRV", True, True))
        self.assertIsInstance(api.balance, balance.URI)
        self.assertEqual(api.balance.depth, 2)
        self.assertIsInstance(api.persistence, StickySource)
        self.assertEqual((api.persistence.expire, api.persistence.size), (1800.0, 200 * 1024))
        self.assertIsInstance(static.balance, balance.URLParam)
        self.assertIsInstance(static.health, TCPCheck)
        self.assertEqual(static.health.interval, 0.5)
        db = self.backends["db"]
        self.assertIsInstance(db.balance, balance.Source)
        self.assertIsInstance(db.health, TCPCheck)
        self.assertEqual(db.health.port, 9999)
        self.assertEqual([s.name for s in db.servers], ["d1"])

    def test_frontends(self) -> None:
        """Binds, routes, header rules, forwardfor and logging carry over; stats become a page."""
        www, www6, db, page = self.site.listen
        self.assertIsInstance(www, http.Frontend)
        self.assertEqual((www.endpoint, www.name), ("tcp:18501:interface=127.0.0.1", "www"))
        self.assertEqual((www6.endpoint, www6.name), ("tcp6:18502:interface=\\:\\:1", "www-2"))
        self.assertEqual([r.backend.name for r in www.routes], ["api", "static", "adm", "adm"])
        self.assertEqual(www.default.name, "web")
        self.assertTrue(www.forwardedFor)
        self.assertTrue(www.log)
        self.assertEqual(www.timeoutClient, 20.0)
        self.assertEqual(len(www.requestRules), 2)
        self.assertEqual(len(www.responseRules), 1)
        self.assertEqual((db.endpoint, db.backend.name, db.log), ("tcp:18503:interface=127.0.0.1", "db", True))
        self.assertEqual((type(page).__name__, page.endpoint, page.refresh), ("Page", "tcp:18504:interface=127.0.0.1", 5.0))
        self.assertEqual(self.site.accessLog[0].syslog, ("127.0.0.1", 5140))

    def test_conditions(self) -> None:
        """ACLs and conditions become matchers that match what HAProxy's do."""
        www = self.site.listen[0]
        self.assertIn("http.anyOf(http.pathEnds('.css', '.js'), http.pathMatches('(?:^/img/)'))", self.source)
        self.assertIn("http.allOf(http.hostIs('admin.example'), http.sourceIn('10.0.0.0/8'))", self.source)
        self.assertIn("http.notMatching(http.sourceIn('10.0.0.0/8'))", self.source)
        self.assertEqual(len(www.routes), 4)

    def test_problems(self) -> None:
        """Each line left out is reported with its number and why, and listed in the site file."""
        numbers = {number: why for number, _, why in self.problems}
        self.assertIn("twistd without -n", numbers[_number("daemon")])
        self.assertIn("--workers N", numbers[_number("nbthread 4")])
        self.assertEqual(numbers[_number("monitor-uri /up")], "no lbkit equivalent")
        self.assertIn("checked too", numbers[_number("server a2 127.0.0.1:9104")])
        self.assertEqual(numbers[_number("option prefer-last-server")], "no lbkit equivalent")
        self.assertIn("has no port", numbers[_number("server d2 localhost")])
        self.assertIn("no peers section", numbers[_number("peers mypeers")])
        self.assertEqual(len(self.problems), 7)
        self.assertIn(f"full.cfg:{_number('monitor-uri /up')}: monitor-uri /up", self.source)
        self.assertIn("run twistd lbkit --workers 4", self.source)

    def test_debianExamples(self) -> None:
        """
        Every example configuration of Debian's haproxy package translates;
        the site files load, except where they name certificate files that
        are not here or use rules of the traffic-control issue.
        """
        paths = sorted(glob.glob("/usr/share/doc/haproxy/examples/*.cfg"))
        if not paths:
            self.skipTest("Debian's haproxy examples are not installed")
        loaded = 0
        for path in paths:
            with open(path) as f:
                source, problems = translate(f.read(), os.path.basename(path))
            compile(source, path, "exec")
            try:
                loadSite(_write(self, source))
            except Exception as e:
                self.assertRegex(str(e), "cannot read TLS certificate|has no attribute 'deny'|`listen` is empty")
            else:
                loaded += 1
        self.assertGreaterEqual(loaded, 4)

    def test_projectConfigurations(self) -> None:
        """The configurations bench/run.py gives HAProxy translate without a problem and load."""
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
        self.addCleanup(sys.path.pop, 0)
        import run as bench  # type: ignore[import-not-found]

        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        env = bench.Env({"haproxy": "haproxy"}, bench.Path(tmp), None, [9201, 9202], syslog=5140)
        for mode in ("tcp", "http"):
            for log in ("", "syslog"):
                argv, _ = bench.haproxyCommand(mode, log)(env, 18510)
                with open(argv[-1]) as f:
                    source, problems = translate(f.read())
                # HAProxy's global maxconn and its separate keep-alive timeout
                # have no lbkit equivalent
                expected = ["maxconn 4096"] + (["timeout http-keep-alive 30s"] if mode == "http" else [])
                self.assertEqual([line for _, line, _ in problems], expected)
                site = loadSite(_write(self, source))
                self.assertEqual(site.listen[0].endpoint, "tcp:18510:interface=127.0.0.1")


class CommandTests(TestCase):
    """C{python -m lbkit.fromhaproxy} as a user runs it."""

    def run_(self, *args: str) -> Any:
        return getProcessOutputAndValue(sys.executable, ["-m", "lbkit.fromhaproxy", *args], env=os.environ.copy())

    @inlineCallbacks
    def test_command(self) -> Any:
        """The site file on stdout, one line per problem on stderr; --strict exits 1 then; no file exits 2."""
        path = os.path.abspath(self.mktemp()) + ".cfg"
        with open(path, "w") as f:
            f.write(FULL)
        out, err, code = yield self.run_(path)
        self.assertEqual(code, 0)
        self.assertIn(b"listen = [", out)
        lines = err.decode().splitlines()
        self.assertIn(f"{path}:{_number('monitor-uri /up')}: not translated: monitor-uri /up: no lbkit equivalent", lines)
        self.assertEqual(len(lines), len(translate(FULL)[1]))
        _, _, code = yield self.run_("--strict", path)
        self.assertEqual(code, 1)
        out, err, code = yield self.run_(path + ".missing")
        self.assertEqual((code, out), (2, b""))
        self.assertIn(b"cannot read it", err)


ORACLE = """\
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s

frontend fe
    bind {bind}
    option forwardfor
    acl api path_beg /api
    acl admin hdr(host) -i admin.example
    acl css path_end .css
    http-request set-header X-Front fe
    http-request del-header X-Secret
    http-request deny if { path_beg /private }
    http-request redirect prefix /new code 301 if { path_beg /old }
    use_backend api if api
    use_backend adm if admin !api || css
    default_backend web

backend web
    balance roundrobin
    server w1 127.0.0.1:{w1}
    server w2 127.0.0.1:{w2}

backend api
    server a1 127.0.0.1:{a1}

backend adm
    http-response set-header X-Adm yes
    server m1 127.0.0.1:{m1}
"""


class _Echo(Resource):
    """Answers with its name, the path and the headers the test looks at."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render_GET(self, request: Any) -> bytes:
        seen = [request.getHeader(h) or "-" for h in ("x-front", "x-secret")]
        forwarded = "xff" if request.getHeader("x-forwarded-for") else "no-xff"
        return f"{self.name} {request.uri.decode()} {' '.join(seen)} {forwarded}".encode()


class OracleTests(TestCase):
    """HAProxy on a configuration, lbkit on its translation: the same answers."""

    timeout = 60

    @inlineCallbacks
    def test_sameAnswers(self) -> Any:
        """Routing, header rules and forwardfor give clients the same bodies and headers through both."""
        ports = {}
        for name in ("w1", "w2", "a1", "m1"):
            port = reactor.listenTCP(0, Site(_Echo(name)), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            ports[name] = port.getHost().port
        config = ORACLE.replace("{w1}", str(ports["w1"])).replace("{w2}", str(ports["w2"]))
        config = config.replace("{a1}", str(ports["a1"])).replace("{m1}", str(ports["m1"]))
        haproxyPort, _ = startHAProxy(self, reactor, config)
        lbkitPort = freePort()
        source, problems = translate(config.replace("{bind}", f"127.0.0.1:{lbkitPort}"))
        self.assertEqual(problems, [])
        site = loadSite(_write(self, source))
        service = LoadBalancerService(site.listen, reactor, site=site)
        service.startService()
        self.addCleanup(service.stopService)

        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        requests = [
            ("/", "www.example"), ("/", "www.example"), ("/api/x", "www.example"), ("/api/x", "admin.example"),
            ("/page", "ADMIN.example"), ("/a.css", "www.example"), ("/?q=1", "www.example"),
            ("/private/x", "www.example"), ("/old/a?b=1", "www.example"),
        ]

        def fetch(port: int) -> Any:
            results = []

            @inlineCallbacks
            def go() -> Any:
                for path, host in requests:
                    response = yield agent.request(
                        b"GET", f"http://127.0.0.1:{port}{path}".encode(),
                        Headers({b"host": [host.encode()], b"x-secret": [b"s"]}),
                    )
                    body = yield readBody(response)
                    if response.code != 200:  # the balancer answered: its own page, compare status and Location
                        results.append((response.code, response.headers.getRawHeaders(b"location"), None))
                    else:
                        results.append((response.code, body.decode(), response.headers.getRawHeaders(b"x-adm")))
                return results

            return go()

        viaHAProxy = yield fetch(haproxyPort)
        viaLbkit = yield fetch(lbkitPort)
        # round robin may start on either server: compare the web answers as a set
        self.assertEqual(sorted(viaLbkit[:2]), sorted(viaHAProxy[:2]))
        self.assertEqual(viaLbkit[2:], viaHAProxy[2:])
        self.assertEqual(viaHAProxy[2], (200, "a1 /api/x fe - xff", None))
        self.assertEqual(viaHAProxy[4], (200, "m1 /page fe - xff", [b"yes"]))
        self.assertEqual(viaHAProxy[7:], [(403, None, None), (301, [b"/new/old/a?b=1"], None)])


class ExampleTests(TestCase):
    """examples/haproxy.cfg, translated, runs and serves as HAProxy would."""

    timeout = 60

    @inlineCallbacks
    def test_example(self) -> Any:
        """
        The translation of examples/haproxy.cfg loads and serves: / round
        robin over web1 and web2 with the SRV cookie, /api by URI hash, and
        the servers see X-Via and X-Forwarded-For.
        """
        example = os.path.join(os.path.dirname(__file__), "..", "examples", "haproxy.cfg")
        with open(example) as f:
            source, problems = translate(f.read(), "haproxy.cfg")
        self.assertEqual(problems, [])

        class Named(Resource):
            isLeaf = True

            def __init__(self, name: str) -> None:
                super().__init__()
                self.name = name

            def render_GET(self, request: Any) -> bytes:
                via, xff = request.getHeader("x-via"), request.getHeader("x-forwarded-for")
                return f"{self.name} {via} {xff}".encode()

        for name, port in (("s1", 9111), ("s2", 9112)):
            listening = reactor.listenTCP(port, Site(Named(name)), interface="127.0.0.1")
            self.addCleanup(listening.stopListening)
        site = loadSite(_write(self, source))
        service = LoadBalancerService(site.listen, reactor, site=site)
        service.startService()
        self.addCleanup(service.stopService)
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        bodies, cookies = set(), set()
        for _ in range(4):
            response = yield agent.request(b"GET", b"http://127.0.0.1:8093/")
            bodies.add((yield readBody(response)))
            cookies.update(response.headers.getRawHeaders(b"set-cookie", []))
        self.assertEqual(bodies, {b"s1 lbkit 127.0.0.1", b"s2 lbkit 127.0.0.1"})
        self.assertEqual({c.split(b";")[0] for c in cookies}, {b"SRV=w1", b"SRV=w2"})
        answers = set()
        for _ in range(3):
            response = yield agent.request(b"GET", b"http://127.0.0.1:8093/api/items")
            answers.add((yield readBody(response)))
        self.assertEqual(len(answers), 1)  # one URI, one server
