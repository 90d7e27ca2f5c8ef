# -*- test-case-name: tests.test_tap -*-
"""
C{twistd lbkit}: options and service maker.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from lbkit.config import loadSite
from lbkit.error import ConfigError

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    synopsis = "--config site.py"
    longdesc = (
        "Run the load balancer described by a site file.  The site file is "
        "ordinary Python: it builds lbkit.Server, lbkit.Backend and frontends "
        "(lbkit.tcp.Frontend) and lists what to start in a module-level list "
        "named `listen`.  See docs/config.md."
    )
    optParameters = [
        ["config", "c", None, "The site file (Python) that declares frontends, backends and servers."],
    ]

    def postOptions(self) -> None:
        path = self["config"]
        if not path:
            raise usage.UsageError("--config is required: the site file to run")
        try:
            self["site"] = loadSite(path)
        except ConfigError as e:
            raise SystemExit(f"lbkit: {e}") from None


def makeService(options: Any) -> IService:
    """Build the service for the loaded site file."""
    from twisted.internet import reactor

    from lbkit.service import LoadBalancerService

    return LoadBalancerService(options["site"].listen, reactor)
