"""
Traffic tables in site files: bad arguments are C{ConfigError}s naming the
line, two tables may not share a name, and a reload keeps a table's keys
and counts (in memory, then a real reload of a running site file).
"""

from __future__ import annotations

import os
import textwrap
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from lbkit import Backend, Server
from lbkit.config import loadSite
from lbkit.error import ConfigError
from lbkit.http import Frontend
from lbkit.service import fromSiteFile
from lbkit.store import Local
from lbkit.testing import FakeEndpoint
from lbkit.traffic import Table, carryOver, track
from tests.test_reload import frontendPort
from tests.test_traffic_live import TrafficTestCase


def write(testCase: Any, text: str) -> str:
    path = testCase.mktemp() + "-site.py"
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


HEAD = """\
from lbkit import Backend, Server, http, traffic
web = Backend("web", [Server("w1", "127.0.0.1:9")])
"""


class SiteTests(SynchronousTestCase):
    """What a site file gets told."""

    def test_badArgumentNamesTheLine(self) -> None:
        """A bad RateLimit is a ConfigError that starts with the file and line."""
        path = write(self, HEAD + "limit = traffic.RateLimit(0, 10)\nlisten = []\n")
        e = self.assertRaises(ConfigError, loadSite, path)
        self.assertEqual(str(e), f"{path}:3: traffic.RateLimit: rate must be a whole number over 0, not 0")

    def test_twoTablesOneName(self) -> None:
        """Two tables named alike are refused, naming the frontend's line."""
        path = write(self, HEAD + textwrap.dedent("""\
            a = traffic.Table("t")
            b = traffic.Table("t")
            listen = [
                http.Frontend("tcp:0", default=web, requestRules=[traffic.track(a)]),
                http.Frontend("tcp:0:interface=127.0.0.2", default=web, requestRules=[traffic.track(b)]),
            ]
            """))
        e = self.assertRaises(ConfigError, loadSite, path)
        self.assertIn(":7: two traffic tables are named 't'", str(e))  # the second frontend

    def test_oneTableTwoFrontends(self) -> None:
        """One Table object in two frontends is fine: they count together."""
        path = write(self, HEAD + textwrap.dedent("""\
            a = traffic.Table("t")
            listen = [
                http.Frontend("tcp:0", default=web, requestRules=[traffic.track(a)]),
                http.Frontend("tcp:0:interface=127.0.0.2", default=web, requestRules=[traffic.track(a)]),
            ]
            """))
        self.assertEqual(len(loadSite(path).listen), 2)


def frontend(table: Table) -> Frontend:
    return Frontend("tcp:0", [], default=Backend("be", [Server("s", FakeEndpoint())]), requestRules=[track(table)])


class CarryOverTests(SynchronousTestCase):
    """What a reload does to tables."""

    def test_sameTableKeepsCounts(self) -> None:
        """Same name, key and counters: the new table has the old one's keys; other tables start again."""
        old, new = Table("t", counters=["http_req_rate(10s)"]), Table("t", counters=["http_req_rate(10s)"])
        old.entry("1.2.3.4", 1000.0)[3] = 7
        changed = Table("u", counters=["conn_cur"])
        self.assertEqual(carryOver([frontend(old), frontend(Table("u"))], [frontend(new), frontend(changed)]),
                         ["table u: key or counters changed, its counts start again"])
        self.assertEqual(new.get("1.2.3.4")[3], 7)  # type: ignore[index]
        self.assertEqual(len(old), 0)

    def test_sharedKeepsItsName(self) -> None:
        """With a store, the new table publishes as the same process (no double count by the others)."""
        store = Local()
        old, new = Table("t", store=store), Table("t", store=store)
        assert old.shared is not None and new.shared is not None
        carryOver([frontend(old)], [frontend(new)])
        self.assertEqual(new.shared.process, old.shared.process)


class ReloadTests(TrafficTestCase):
    """A running site, reloaded: the rate limit's counts go on."""

    @inlineCallbacks
    def test_reloadKeepsCounts(self) -> Any:
        """3 requests, a reload (same table), then the limit of 4 is reached on the next one."""
        serverPort = self.site("app1")[0]
        path = self.mktemp() + "-site.py"
        site = """\
            from lbkit import Backend, Server, http, traffic
            web = Backend("web", [Server("w1", "127.0.0.1:%d")])
            clients = traffic.Table("clients", counters=["conn_cur", "http_req_rate(3600s)"])
            listen = [http.Frontend("tcp:0:interface=127.0.0.1", default=web, log=False, name="%s",
                                    requestRules=[traffic.RateLimit(4, 3600.0, table=clients)])]
            """
        with open(path, "w") as f:
            f.write(textwrap.dedent(site % (serverPort, "fe")))
        service = fromSiteFile(os.path.abspath(path), self.reactor())
        service.startService()
        self.addCleanup(service.stopService)
        port = frontendPort(service)
        seen = yield self.statuses(port, 3, "127.0.0.11")
        with open(path, "w") as f:
            f.write(textwrap.dedent(site % (serverPort, "renamed")))
        yield service.reload()
        self.assertEqual(service.listen[0].name, "renamed")  # the new site is running
        seen += yield self.statuses(port, 2, "127.0.0.11")
        self.assertEqual(seen, [200, 200, 200, 200, 429])

    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor
