# -*- test-case-name: tests.test_stats_admin -*-
"""
The admin API's policy: who may change things (L{Admin}), and the changes
themselves (L{runAction}), shared by the HTTP routes and the command socket.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Any, Mapping

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from lbkit._model import Server, ServerState
from lbkit.error import ConfigError
from lbkit.health import monitorFor

__all__ = ["Admin"]

#: Actions accepted by L{runAction}, and the state each one sets.
STATE_ACTIONS = {
    "ready": ServerState.UP,
    "drain": ServerState.DRAIN,
    "maint": ServerState.MAINT,
}
ACTIONS = (*STATE_ACTIONS, "weight", "enable-health", "disable-health")


def runReload(collector: Any, user: str, via: str) -> Deferred[tuple[bool, str]]:
    """
    Reload the site file, logging who asked, on the C{lbkit.admin} logger.

    @return: Fires with C{(True, changes)} or C{(False, why)}: a site file
        that fails to load leaves the running configuration unchanged.
    @raise AdminError: when the page runs outside a reloadable service.
    """
    return _runLogged(
        collector, "reloader", "reload is not available: this page is not part of a site started from a file",
        "admin: {user} ({via}) reloads the site file", "reload", user, via,
        lambda changes: "\n".join([f"reloaded: {len(changes)} changes", *changes]),
        "reload failed, configuration unchanged",
    )


def _runLogged(
    collector: Any, attribute: str, missing: str, message: str, action: str, user: str, via: str,
    describe: Any, failedPrefix: str,
) -> Deferred[tuple[bool, str]]:
    """
    Call the collector's C{attribute} (set by the service; L{AdminError}
    404 with C{missing} when absent), logging who asked; fires with
    C{(True, describe(result))} or C{(False, "failedPrefix: why")}.
    """
    run = getattr(collector, attribute, None)
    if run is None:
        raise AdminError(404, missing)
    collector.log.info(message, user=user, via=via, action=action)
    d: Deferred[Any] = run()

    def failed(reason: Failure) -> tuple[bool, str]:
        return False, f"{failedPrefix}: {reason.getErrorMessage()}"

    return d.addCallbacks(lambda result: (True, describe(result)), failed)


def runRestart(collector: Any, user: str, via: str) -> Deferred[tuple[bool, str]]:
    """
    Replace every worker process with a new one on the code installed now
    (L{lbkit.workers.WorkerSupervisor.restartWorkers}), logging who asked.

    @return: Fires with C{(True, what happened)} or C{(False, why)}: when
        the new workers do not start, the old ones go on.
    @raise AdminError: when the page is not part of a supervisor.
    """
    return _runLogged(
        collector, "restarter", "restart is not available: this balancer runs no worker processes (--workers)",
        "admin: {user} ({via}) restarts the workers", "restart", user, via,
        lambda lines: "\n".join(["restarted", *lines]), "restart failed",
    )


def runReopen(collector: Any, user: str, via: str) -> list[str]:
    """
    Reopen the access-log files (after log rotation), logging who asked, on
    the C{lbkit.admin} logger.

    @return: One line per file destination, saying how it went.
    @raise AdminError: when the page runs outside a service.
    """
    sink = getattr(collector, "accessLog", None)
    if sink is None:
        raise AdminError(404, "reopen is not available: this page is not part of a balancer service")
    collector.log.info("admin: {user} ({via}) reopens the access logs", user=user, via=via, action="reopen")
    results: list[str] = sink.reopen()
    return results


class AdminError(Exception):
    """
    An admin request that cannot be carried out.

    @ivar code: The HTTP status that says why (400 or 404).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Admin:
    """
    Turns on the admin API of a L{lbkit.stats.Page}: the C{/admin/} page
    with buttons and the C{POST /admin/server} route, both behind HTTP basic
    authentication.

    @param users: User name to password.  Passwords are compared in
        constant time (C{hmac.compare_digest}), and so is a user name that
        does not exist.
    @param realm: The basic-auth realm browsers show.
    @param loginFailures: Failed logins from one client address, within
        C{loginWindow} seconds, after which that address gets 429 answers
        (no password checked) for C{loginLockout} seconds.
    @param loginRate: Failed logins per second checked over all addresses
        (bursts of four seconds' worth); beyond that every login waits.
    """

    def __init__(
        self,
        users: Mapping[str, str],
        realm: str = "lbkit",
        *,
        loginFailures: int = 10,
        loginWindow: float = 60.0,
        loginLockout: float = 60.0,
        loginRate: float = 5.0,
    ) -> None:
        if not isinstance(users, Mapping) or not users:
            raise ConfigError("stats.Admin: users must be a non-empty dict of name to password")
        for name, password in users.items():
            if not isinstance(name, str) or not name or ":" in name:
                raise ConfigError(f"stats.Admin: bad user name {name!r} (non-empty, no ':')")
            if not isinstance(password, str) or not password:
                raise ConfigError(f"stats.Admin: user {name!r} needs a non-empty password")
        if not isinstance(realm, str) or '"' in realm:
            raise ConfigError(f"stats.Admin: bad realm {realm!r}")
        if not isinstance(loginFailures, int) or isinstance(loginFailures, bool) or loginFailures < 1:
            raise ConfigError(f"stats.Admin: loginFailures must be a whole number of at least 1, not {loginFailures!r}")
        for name, value in (("loginWindow", loginWindow), ("loginLockout", loginLockout), ("loginRate", loginRate)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
                raise ConfigError(f"stats.Admin: {name} must be a positive number, not {value!r}")
        self.loginFailures = loginFailures
        self.loginWindow = float(loginWindow)
        self.loginLockout = float(loginLockout)
        self.loginRate = float(loginRate)
        self._users = {name.encode("utf-8"): password.encode("utf-8") for name, password in users.items()}
        self.realm = realm
        self._key = os.urandom(32)

    def __repr__(self) -> str:
        return f"<stats.Admin users={sorted(n.decode() for n in self._users)}>"

    def sameAs(self, other: object) -> bool:
        """
        Whether C{other} is an L{Admin} with the same users, passwords,
        realm and login throttling (a reload keeps a stats page listening
        only then).
        """
        return isinstance(other, Admin) and self._settings() == other._settings()

    def _settings(self) -> tuple[object, ...]:
        return (self._users, self.realm, self.loginFailures, self.loginWindow, self.loginLockout, self.loginRate)

    def checkPassword(self, user: bytes, password: bytes) -> bool:
        """
        Whether C{user} and C{password} match, in time that depends on
        neither.
        """
        expected = self._users.get(user)
        known = expected is not None
        if expected is None:
            expected = self._key  # compare against something all the same
        ok = hmac.compare_digest(hashlib.sha256(password).digest(), hashlib.sha256(expected).digest())
        return ok and known

    def authenticate(self, authorization: bytes | None) -> str | None:
        """
        The user an C{Authorization} header proves, or C{None}.
        """
        if not authorization:
            return None
        scheme, _, encoded = authorization.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user, sep, password = decoded.partition(b":")
        if not sep or not self.checkPassword(user, password):
            return None
        return user.decode("utf-8", "replace")

    def challenge(self) -> bytes:
        """The C{WWW-Authenticate} header value of a 401 answer."""
        return f'Basic realm="{self.realm}", charset="UTF-8"'.encode()

    def token(self, user: str) -> str:
        """
        The anti-CSRF token the admin page puts in its forms for C{user}
        (valid until the process restarts).
        """
        return hmac.new(self._key, b"csrf:" + user.encode("utf-8"), hashlib.sha256).hexdigest()

    def checkToken(self, user: str, token: str) -> bool:
        """Whether C{token} is L{token}C{(user)}, compared in constant time."""
        return hmac.compare_digest(self.token(user).encode(), token.encode("utf-8", "replace"))


def runAction(
    collector: Any, user: str, via: str, backendName: str, serverName: str, action: str, weight: str | None = None
) -> Server:
    """
    Change one server at run time and log it, with C{user}, on the
    C{lbkit.admin} logger.

    @param collector: The page's L{lbkit.stats._collect.Collector}.
    @param via: How the request came (C{"http 127.0.0.1"}, C{"socket uid 0"}).
    @param action: One of L{ACTIONS}.
    @param weight: With C{"weight"}: the new weight, 0-256, as text.
    @raise AdminError: on an unknown server, action or bad weight.
    """
    server = collector.findServer(backendName, serverName)
    if server is None:
        raise AdminError(404, f"no server {serverName!r} in backend {backendName!r}")
    detail = ""
    if action in STATE_ACTIONS:
        new = STATE_ACTIONS[action]
        detail = f"state {server.state.value} -> {new.value}"
        monitor = monitorFor(server)
        reason = f"set by {user} ({via})"
        if monitor is not None:
            # the monitor keeps the health state and restores it on "ready"
            monitor.setAdmin(None if new is ServerState.UP else new, reason)
        else:
            server.setState(new, reason, collector.now())
    elif action == "weight":
        try:
            value = int(weight if weight is not None else "")
        except ValueError:
            raise AdminError(400, f"weight must be an integer from 0 to 256, not {weight!r}") from None
        if not 0 <= value <= 256:
            raise AdminError(400, f"weight must be an integer from 0 to 256, not {value}")
        detail = f"weight {server.weight} -> {value}"
        server.setWeight(value)
    elif action in ("enable-health", "disable-health"):
        enabled = action == "enable-health"
        detail = f"health check {'enabled' if enabled else 'disabled'}"
        server.checkEnabled = enabled  # type: ignore[attr-defined]
    else:
        raise AdminError(400, f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    collector.log.info(
        "admin: {user} ({via}) changed {server}: {detail}",
        user=user, via=via, server=server.fullName, detail=detail, action=action,
    )
    return server  # type: ignore[no-any-return]
