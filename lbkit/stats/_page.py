# -*- test-case-name: tests.test_stats -*-
"""
L{Page}: the stats page a site file puts in its C{listen} list.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from twisted.application.service import IService, MultiService
from twisted.web.resource import IResource
from zope.interface import implementer

from lbkit._listening import ListeningService
from lbkit._origin import definedAt
from lbkit.error import ConfigError
from lbkit.interfaces import IListener
from lbkit.stats._admin import Admin
from lbkit.stats._collect import Collector
from lbkit.stats._site import StatsSite
from lbkit.stats._socket import CommandFactory
from lbkit.stats._web import buildResource

__all__ = ["Page"]


def _escape(text: str) -> str:
    """Escape C{text} for one field of an endpoint string."""
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


class _PageService(MultiService):
    """
    Runs a page's listeners.  On start, a page that was never given its
    site (L{Page.bindSite}) reads the C{listen} list of its parent service.
    """

    def __init__(self, page: Page, reactor: Any) -> None:
        super().__init__()
        self.page = page
        self.reactor = reactor

    def _bind(self) -> None:
        page = self.page
        if not page.collector.bound:
            listen = getattr(self.parent, "listen", None)
            if listen is not None:
                page.bindSite(listen)
        page.collector.start(self.reactor)

    def privilegedStartService(self) -> None:
        self._bind()
        super().privilegedStartService()

    def startService(self) -> None:
        self._bind()
        super().startService()


@implementer(IListener)
class Page:
    """
    A stats page: HTML at C{/}, JSON at C{/stats.json}, Prometheus metrics
    at C{/metrics}, and with C{admin}, the admin page and API under
    C{/admin/} (see docs/stats.md).

    @param endpoint: Where the page listens, e.g.
        C{"tcp:8404:interface=127.0.0.1"}.
    @param admin: An L{Admin} to turn the admin API on; C{None} (the
        default) serves a read-only page and no C{/admin/} routes.
    @param socket: The path of a UNIX command socket (HAProxy-style runtime
        API), or C{None} for none.
    @param socketMode: The socket file's permission bits: whoever may
        connect may change servers.
    @param refresh: Seconds between the HTML page's automatic reloads.
    """

    def __init__(
        self,
        endpoint: str,
        admin: Admin | None = None,
        *,
        socket: str | None = None,
        socketMode: int = 0o600,
        refresh: float = 3.0,
    ) -> None:
        self.definedAt = definedAt()
        if not isinstance(endpoint, str):
            raise ConfigError(f"stats.Page endpoint must be a Twisted endpoint string, not {endpoint!r}")
        if admin is not None and not isinstance(admin, Admin):
            raise ConfigError(f"stats.Page admin must be a stats.Admin or None, not {admin!r}")
        if socket is not None and (not isinstance(socket, str) or not socket):
            raise ConfigError(f"stats.Page socket must be a file path, not {socket!r}")
        if not isinstance(socketMode, int) or not 0 <= socketMode <= 0o777:
            raise ConfigError(f"stats.Page socketMode must be file permission bits like 0o600, not {socketMode!r}")
        if not isinstance(refresh, (int, float)) or not 1 <= refresh <= 3600:
            raise ConfigError(f"stats.Page refresh must be 1 to 3600 seconds, not {refresh!r}")
        self.endpoint = endpoint
        self.admin = admin
        self.socket = socket
        self.socketMode = socketMode
        self.refresh = float(refresh)
        self.collector = Collector()

    def __repr__(self) -> str:
        return f"<stats.Page {self.endpoint}{' admin' if self.admin else ''}>"

    def backends(self) -> Sequence[Any]:
        return []

    def bindSite(self, listen: Sequence[Any]) -> None:
        """
        Show the frontends and backends of C{listen} (the whole C{listen}
        list; L{lbkit.service.LoadBalancerService} calls this).
        """
        self.collector.bind(listen)

    def bindReloader(self, reloader: Any) -> None:
        """
        Let the admin API reload the site: C{reloader()} returns a
        L{Deferred<twisted.internet.defer.Deferred>} firing with the list of changes (the service calls this).
        """
        self.collector.reloader = reloader

    def bindWorkers(self, view: Any) -> None:
        """
        Show the worker processes: C{view()} returns one row per worker
        (L{lbkit.workers.WorkerSupervisor.workersView}; the supervisor
        calls this).
        """
        self.collector.workers = view

    def bindRestarter(self, restarter: Any) -> None:
        """
        Let the admin API and the command socket restart the worker
        processes: C{restarter()} returns a L{Deferred<twisted.internet.defer.Deferred>} firing with lines
        saying what happened (the supervisor calls this).
        """
        self.collector.restarter = restarter

    def bindPurger(self, purger: Any) -> None:
        """
        Let the admin API and the command socket purge the response caches
        of the worker processes: C{purger(name, key, prefix)} returns a
        L{Deferred<twisted.internet.defer.Deferred>} firing with how many entries went (the supervisor
        calls this; docs/cache.md).
        """
        self.collector.purger = purger

    def bindAccessLog(self, sink: Any) -> None:
        """
        Show the drops of the site's access-log destinations, and let the
        admin API reopen their files: C{sink} is the service's
        L{lbkit.logs.AccessLogSink} (the service calls this).
        """
        self.collector.accessLog = sink

    def resource(self, reactor: Any) -> IResource:
        """
        The page as a resource tree, to mount in a site of your own.  The
        admin routes still check credentials and throttle failed logins
        (timed by C{reactor}), but the body limits need the page's own site:
        yours reads each body before any resource sees the request.
        """
        self.collector.start(reactor)
        return buildResource(self.collector, self.refresh, self.admin, reactor)

    def makeService(self, reactor: Any) -> IService:
        service = _PageService(self, reactor)
        site = StatsSite(buildResource(self.collector, self.refresh, self.admin, reactor), reactor)
        ListeningService(self.endpoint, site, reactor, "stats page").setServiceParent(service)  # type: ignore[arg-type]
        if self.socket is not None:
            path = os.path.abspath(self.socket)
            description = f"unix:{_escape(path)}:mode={self.socketMode:o}:lockfile=1"
            ListeningService(
                description, CommandFactory(self.collector), reactor, "stats command socket"
            ).setServiceParent(service)
        return service
