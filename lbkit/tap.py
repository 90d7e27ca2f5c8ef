# -*- test-case-name: tests.test_tap -*-
"""
C{twistd lbkit}: options and service maker.

The site file is loaded and checked while the options are parsed, before
twistd starts logging or anything listens, so a bad file ends the process
with one line on standard error::

    lbkit: site.py:12: cannot parse server address 'app1': expected 'host:port'
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from lbkit.config import loadSite
from lbkit.error import ConfigError
from lbkit.service import ListenFailed, LoadBalancerService

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    """
    The options of C{twistd lbkit}.
    """

    synopsis = "--config site.py"
    longdesc = (
        "Run the load balancer described by a site file.  The site file is "
        "ordinary Python: it builds servers (lbkit.Server), backends "
        "(lbkit.Backend) and frontends (lbkit.tcp.Frontend), and lists what "
        "to start in a module-level list named `listen`, for example:\n\n"
        "    twistd -n lbkit --config examples/demo.py\n\n"
        "The file is checked before anything listens: a mistake in it stops "
        "start-up with one line naming the file, the line and the problem.  "
        "Every name a site file may use is described in docs/config.md."
    )
    optParameters = [
        [
            "config",
            "c",
            None,
            "The site file to run: Python that defines `listen`, the list of frontends (required).",
        ],
    ]

    def postOptions(self) -> None:
        path = self["config"]
        if not path:
            raise usage.UsageError("--config is required: the site file to run")
        try:
            self["site"] = loadSite(path)
        except ConfigError as e:
            raise SystemExit(f"lbkit: {e}") from None


class _ForegroundService(LoadBalancerService):
    """
    Under C{twistd -n}, a port that cannot be listened on ends start-up
    with one line instead of a traceback.

    (Only in the foreground: a daemonizing twistd waits for its child to
    report start-up through a pipe, which only an L{Exception} fills; a
    L{SystemExit} there would leave the parent waiting for ever.  The
    daemon's parent prints the L{ListenFailed} message instead.)
    """

    def privilegedStartService(self) -> None:
        try:
            LoadBalancerService.privilegedStartService(self)
        except ListenFailed as e:
            raise SystemExit(f"lbkit: {e}") from None


def makeService(options: Any) -> IService:
    """Build the service for the loaded site file."""
    from twisted.internet import reactor

    parent = getattr(options, "parent", None)
    foreground = parent is None or bool(parent.get("nodaemon"))
    serviceClass = _ForegroundService if foreground else LoadBalancerService
    return serviceClass(options["site"].listen, reactor)
