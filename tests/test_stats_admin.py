"""
The admin API of the stats page: basic authentication in constant time,
CSRF defences, the actions, and the log line each change leaves.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from typing import Any, cast

from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase

from lbkit import ServerState, stats
from lbkit.health import HealthMonitor
from lbkit.testing import FakeCheck
from tests.test_stats import Client, makeSite

ADMIN = {"X-LBKit-Admin": "1"}


class AdminTestsMixin:
    def setUp(self) -> None:
        self.admin = stats.Admin(users={"admin": "secret", "ops": "hunter2"})
        self.page, self.web, self.frontend, self.clock = makeSite(self.admin)
        self.client = Client(self, self.page, self.clock)  # type: ignore[arg-type]
        self.events: list[dict[str, Any]] = []
        self.page.collector.log = Logger(namespace="lbkit.admin", observer=cast(ILogObserver, self.events.append))

    def post(self, query: str, auth: tuple[str, str] | None = ("admin", "secret"),
             headers: dict[str, str] | None = None, data: dict[str, str] | None = None) -> tuple[Any, bytes]:
        return self.client.request(  # type: ignore[no-any-return]
            "POST", "/admin/server" + query, auth=auth,
            headers=ADMIN if headers is None else headers, data=data, allow_redirects=False,
        )


class AuthTests(AdminTestsMixin, SynchronousTestCase):
    def test_noCredentials(self) -> None:
        """Without credentials the admin page and API answer 401 with a basic challenge."""
        for method, path in (("GET", "/admin/"), ("POST", "/admin/server?backend=web&server=web1&action=drain")):
            response, _ = self.client.request(method, path, headers=ADMIN)
            self.assertEqual(response.code, 401)
            self.assertEqual(
                response.headers.getRawHeaders("www-authenticate"), ['Basic realm="lbkit", charset="UTF-8"']
            )
        self.assertIs(self.web.servers[0].state, ServerState.UP)

    def test_wrongPassword(self) -> None:
        """A wrong password or unknown user is 401 and changes nothing."""
        for auth in (("admin", "wrong"), ("nobody", "secret"), ("ops", "secret")):
            response, _ = self.post("?backend=web&server=web1&action=drain", auth=auth)
            self.assertEqual(response.code, 401)
        self.assertIs(self.web.servers[0].state, ServerState.UP)
        self.assertEqual(self.events, [])

    def test_malformedAuthorization(self) -> None:
        """Garbage Authorization headers are rejected, not crashed on."""
        for value in (b"Basic !!!", b"Bearer x", b"Basic " + base64.b64encode(b"nocolon"), b""):
            self.assertIsNone(self.admin.authenticate(value))
        self.assertEqual(self.admin.authenticate(b"Basic " + base64.b64encode(b"ops:hunter2")), "ops")

    def test_constantTimeCompare(self) -> None:
        """Passwords are compared with hmac.compare_digest, also for unknown users."""
        calls: list[tuple[bytes, bytes]] = []
        real = hmac.compare_digest

        def spy(a: Any, b: Any) -> bool:
            calls.append((a, b))
            return bool(real(a, b))

        self.patch(hmac, "compare_digest", spy)
        self.assertTrue(self.admin.checkPassword(b"admin", b"secret"))
        self.assertFalse(self.admin.checkPassword(b"admin", b"secreT"))
        self.assertFalse(self.admin.checkPassword(b"ghost", b"secret"))
        self.assertEqual(len(calls), 3)


class ActionTests(AdminTestsMixin, SynchronousTestCase):
    def test_drainIsLoggedWithUser(self) -> None:
        """POST action=drain puts the server in DRAIN and logs who did it."""
        response, body = self.post("?backend=web&server=web1&action=drain")
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body)["server"]["state"], "DRAIN")
        self.assertIs(self.web.servers[0].state, ServerState.DRAIN)
        [event] = self.events
        self.assertEqual(event["user"], "admin")
        self.assertEqual(event["server"], "web/web1")
        self.assertEqual(event["action"], "drain")
        self.assertIn("admin", event["log_format"].format(**event))

    def test_maintAndReady(self) -> None:
        """maint sets MAINT, ready sets UP again."""
        self.post("?backend=web&server=web2&action=maint")
        self.assertIs(self.web.servers[1].state, ServerState.MAINT)
        self.post("?backend=web&server=web2&action=ready")
        self.assertIs(self.web.servers[1].state, ServerState.UP)
        self.assertEqual([e["action"] for e in self.events], ["maint", "ready"])

    def test_readyRestoresCheckedState(self) -> None:
        """ready on a checked server that failed its checks while in MAINT makes it DOWN, not UP."""
        server = self.web.servers[1]
        check = FakeCheck(interval=1.0, fall=1, initState="fully-up")
        monitor = HealthMonitor(server, check, self.clock)
        monitor.start()
        self.addCleanup(monitor.stop)
        self.clock.advance(0)
        self.post("?backend=web&server=web2&action=maint")
        check.failLast()
        self.assertIs(server.state, ServerState.MAINT)
        self.post("?backend=web&server=web2&action=ready")
        self.assertIs(server.state, ServerState.DOWN)

    def test_weight(self) -> None:
        """action=weight sets the weight; a bad one is 400 and changes nothing."""
        response, _ = self.post("?backend=web&server=web1&action=weight&weight=7")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.web.servers[0].weight, 7)
        for bad in ("300", "x", ""):
            response, body = self.post(f"?backend=web&server=web1&action=weight&weight={bad}")
            self.assertEqual(response.code, 400, body)
        self.assertEqual(self.web.servers[0].weight, 7)

    def test_health(self) -> None:
        """disable-health / enable-health set server.checkEnabled."""
        self.post("?backend=web&server=web1&action=disable-health")
        self.assertIs(self.web.servers[0].checkEnabled, False)  # type: ignore[attr-defined]
        self.assertIs(self.client.json()["backends"][0]["servers"][0]["check"]["enabled"], False)
        self.post("?backend=web&server=web1&action=enable-health")
        self.assertIs(self.web.servers[0].checkEnabled, True)  # type: ignore[attr-defined]

    def test_unknown(self) -> None:
        """An unknown server is 404, an unknown action 400."""
        self.assertEqual(self.post("?backend=web&server=nope&action=drain")[0].code, 404)
        self.assertEqual(self.post("?backend=nope&server=web1&action=drain")[0].code, 404)
        self.assertEqual(self.post("?backend=web&server=web1&action=explode")[0].code, 400)
        self.assertEqual(self.events, [])

    def test_getIsRefused(self) -> None:
        """GET on the action route is 405 and changes nothing."""
        response, _ = self.client.get("/admin/server?backend=web&server=web1&action=drain",
                                      auth=("admin", "secret"), headers=ADMIN)
        self.assertEqual(response.code, 405)
        self.assertIs(self.web.servers[0].state, ServerState.UP)


class CSRFTests(AdminTestsMixin, SynchronousTestCase):
    def adminPage(self) -> str:
        response, body = self.client.get("/admin/", auth=("admin", "secret"))
        self.assertEqual(response.code, 200)
        return body.decode()

    def test_needsTokenOrHeader(self) -> None:
        """Credentials alone (what a browser resends cross-site) are not enough."""
        response, _ = self.post("?backend=web&server=web1&action=drain", headers={})
        self.assertEqual(response.code, 403)
        response, _ = self.post("?backend=web&server=web1&action=drain", headers={},
                                data={"token": "0" * 64})
        self.assertEqual(response.code, 403)
        self.assertIs(self.web.servers[0].state, ServerState.UP)

    def test_pageFormWorks(self) -> None:
        """The admin page's form (token, from=page) changes the server and redirects back."""
        html = self.adminPage()
        self.assertIn('<form method="post" action="server">', html)
        token = re.search(r'name="token" value="([0-9a-f]+)"', html)
        assert token is not None
        response, _ = self.post("", headers={"Origin": "http://stats.example"}, data={
            "backend": "web", "server": "web2", "action": "maint", "token": token.group(1), "from": "page",
        })
        self.assertEqual(response.code, 303)
        self.assertEqual(response.headers.getRawHeaders("location"), ["./"])
        self.assertIs(self.web.servers[1].state, ServerState.MAINT)

    def test_tokenIsPerUser(self) -> None:
        """One user's token does not work for another."""
        self.assertTrue(self.admin.checkToken("admin", self.admin.token("admin")))
        self.assertFalse(self.admin.checkToken("ops", self.admin.token("admin")))

    def test_crossOriginRefused(self) -> None:
        """A foreign Origin (or Referer) is refused even with a valid token."""
        token = self.admin.token("admin")
        for header in ({"Origin": "http://evil.example"}, {"Referer": "http://evil.example/x"},
                       {"Origin": "null"}):
            response, _ = self.post("", headers=header, data={
                "backend": "web", "server": "web1", "action": "drain", "token": token,
            })
            self.assertEqual(response.code, 403, header)
        self.assertIs(self.web.servers[0].state, ServerState.UP)

    def test_adminPageHasButtons(self) -> None:
        """The admin page shows each server's buttons; /admin redirects to /admin/."""
        html = self.adminPage()
        for action in ("ready", "drain", "maint", "weight", "disable-health"):
            self.assertIn(f'value="{action}"', html)
        self.assertIn("Logged in as admin", html)
        response, _ = self.client.get("/admin", auth=("admin", "secret"), allow_redirects=False)
        self.assertEqual(response.code, 302)


class ReopenTests(AdminTestsMixin, SynchronousTestCase):
    def test_reopen(self) -> None:
        """POST /admin/reopen opens the access-log files again and answers one line per file, logged with the user."""
        import os

        from lbkit._accesslog import AccessLogSink, FileWriter

        path = self.mktemp()
        sink = AccessLogSink()
        self.addCleanup(sink.close)
        sink.replace([FileWriter(path)], True)
        self.page.bindAccessLog(sink)
        os.rename(path, path + ".1")
        response, body = self.client.request("POST", "/admin/reopen", auth=("admin", "secret"), headers=ADMIN)
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body), {"ok": True, "files": [f"file:{path}: reopened"]})
        self.assertTrue(os.path.exists(path))
        self.assertEqual([(e["user"], e["action"]) for e in self.events], [("admin", "reopen")])

    def test_refused(self) -> None:
        """Without credentials, without the forgery header, by GET, or outside a service, nothing is reopened."""
        self.assertEqual(self.client.request("POST", "/admin/reopen", headers=ADMIN)[0].code, 401)
        self.assertEqual(self.client.request("POST", "/admin/reopen", auth=("admin", "secret"))[0].code, 403)
        self.assertEqual(self.client.request("GET", "/admin/reopen", auth=("admin", "secret"))[0].code, 405)
        response, body = self.client.request("POST", "/admin/reopen", auth=("admin", "secret"), headers=ADMIN)
        self.assertEqual(response.code, 404)
        self.assertIn("not available", json.loads(body)["error"])
        self.assertEqual(self.events, [])


class RestartTests(AdminTestsMixin, SynchronousTestCase):
    def test_restart(self) -> None:
        """POST /admin/restart runs the supervisor's restart and answers its lines, logged with the user."""
        from twisted.internet.defer import succeed

        asked: list[bool] = []

        def restarter() -> Any:
            asked.append(True)
            return succeed(["workers restarted: generation 2"])

        self.page.bindRestarter(restarter)
        response, body = self.client.request("POST", "/admin/restart", auth=("admin", "secret"), headers=ADMIN)
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body), {"ok": True, "changes": ["workers restarted: generation 2"]})
        self.assertEqual(asked, [True])
        self.assertEqual([(e["user"], e["action"]) for e in self.events], [("admin", "restart")])

    def test_failed(self) -> None:
        """New workers that do not start: 409 with why."""
        from twisted.internet.defer import fail

        self.page.bindRestarter(lambda: fail(ValueError("worker 0 ended before it was ready")))
        response, body = self.client.request("POST", "/admin/restart", auth=("admin", "secret"), headers=ADMIN)
        self.assertEqual(response.code, 409)
        self.assertIn("worker 0 ended before it was ready", json.loads(body)["error"])

    def test_refused(self) -> None:
        """Without credentials, without the forgery header, by GET, or without workers, nothing restarts."""
        self.assertEqual(self.client.request("POST", "/admin/restart", headers=ADMIN)[0].code, 401)
        self.assertEqual(self.client.request("POST", "/admin/restart", auth=("admin", "secret"))[0].code, 403)
        self.assertEqual(self.client.request("GET", "/admin/restart", auth=("admin", "secret"))[0].code, 405)
        response, body = self.client.request("POST", "/admin/restart", auth=("admin", "secret"), headers=ADMIN)
        self.assertEqual(response.code, 404)
        self.assertIn("--workers", json.loads(body)["error"])
        self.assertEqual(self.events, [])
