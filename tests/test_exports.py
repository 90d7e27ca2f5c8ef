"""
Each public module of lbkit is a facade that means what it says, as
klein's C{test_exports} checks for klein: every name in C{__all__} exists,
is public, is documented and is declared public where it is defined, and
the names users rely on stay.

The tests find the modules by walking the package, so a module that
becomes a package (C{lbkit.tcp}, say) or a new public module is checked
the same way without editing this file.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.interface import InterfaceClass, Method

import lbkit

#: Names users rely on, per facade: each must stay exported (new ones may
#: be added).  The twistd plumbing (C{lbkit.tap}, C{lbkit.reactor},
#: C{lbkit.demo}) is checked by the other tests only.
PROMISED: dict[str, set[str]] = {
    "lbkit": {"Server", "Backend", "Context", "ServerState", "ServerListenerMixin"},
    "lbkit.http": {
        "Frontend", "Route", "HTTPFrontendProtocol", "HTTPProxyFactory", "HTTPServerProtocol",
        "Request", "Response", "BadMessage", "addHeader", "setHeader", "deleteHeader",
        "pathBegins", "pathIs", "pathEnds", "pathMatches", "hostIs", "hostMatches",
        "headerExists", "headerIs", "headerMatches", "methodIs", "sourceIn",
        "allOf", "anyOf", "notMatching",
    },
    "lbkit.tcp": {
        "Frontend", "TCPProxyFactory", "TCPFrontendProtocol", "TCPServerProtocol",
        "Route", "sniIs", "sniEnds", "sniAbsent", "ClientHello",
    },
    "lbkit.balance": {
        "RoundRobin", "StaticRR", "LeastConn", "First", "Source", "URI", "Header",
        "URLParam", "Random", "ShortestExpectedDelay", "NeverQueue",
    },
    "lbkit.health": {
        "BaseCheck", "connectFailure", "TCPCheck", "HTTPCheck", "AgentCheck", "AgentReply",
        "parseAgentReply", "HealthMonitor", "HealthService", "monitorFor",
    },
    "lbkit.persistence": {"StickySource", "Cookie"},
    "lbkit.traffic": {
        "Table", "bySource", "byHeader", "byCookie", "byParam", "byPath", "above", "below",
        "RateLimit", "ConnLimit", "track",
    },
    "lbkit.stats": {"Page", "Admin"},
    "lbkit.testing": {
        "FakeEndpoint", "HalfCloseableStringTransport", "ConnectAttempt", "FakeCheck",
        "RecordingListener", "FakeSession", "assertProvides", "HTTPHarness", "ClientSide", "ServerSide",
    },
    "lbkit.interfaces": {
        "IBalancer", "IActiveBalancer", "IHealthCheck", "IHealthCheckOptions", "IPersistence",
        "IHTTPPersistence", "IServerListener", "IListener", "IRequestMatcher", "IRequestRule", "ISession",
        "IServerSource",
    },
    "lbkit.discovery": {"SRV", "A", "Answer", "DiscoveryService", "NoRecords", "srvWeight", "parseNameserver"},
    "lbkit.error": {"LBKitError", "ConfigError", "NoServerAvailable", "QueueTimeout", "CheckFailed"},
    "lbkit.proxyproto": {"ProxyHeaderParser", "ProxyInfo", "InvalidProxyHeader", "formatV1", "formatV2"},
    "lbkit.tls": {
        "Certificates", "KeyPair", "loadKeyPair", "serverFactory", "clientCreator",
        "wrapClientEndpoint", "fromSSLEndpoint",
    },
    "lbkit.service": {"LoadBalancerService", "ListeningService", "ListenFailed", "fromSiteFile"},
    "lbkit.config": {"Site", "loadSite", "checkListen", "checkGrace"},
    "lbkit.logs": {"AccessLog", "AccessLogDispatcher", "checkAccessLog", "parseDestination", "jsonRecord", "FACILITIES"},
    "lbkit.reload": {"applySite", "matchListeners"},
    "lbkit.simulate": {"simulate", "Workload", "Result", "compare", "builtins", "formatTable", "main"},
}


def publicModules() -> list[ModuleType]:
    """lbkit and each of its modules whose dotted name has no C{_} part."""
    found = [lbkit]
    for info in pkgutil.walk_packages(lbkit.__path__, "lbkit."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        found.append(importlib.import_module(info.name))
    return found


def exported(module: ModuleType) -> list[tuple[str, object]]:
    return [(name, getattr(module, name, None)) for name in module.__all__]


class FacadeTests(SynchronousTestCase):
    def test_everyPublicModuleHasAll(self) -> None:
        """Every public module says what it exports, in an __all__ with no name twice."""
        for module in publicModules():
            names = getattr(module, "__all__", None)
            self.assertIsInstance(names, list, f"{module.__name__} has no __all__ list")
            assert names is not None
            self.assertEqual(len(names), len(set(names)), f"{module.__name__}.__all__ repeats a name")

    def test_everyNameExists(self) -> None:
        """Every name in a public module's __all__ can be imported from it."""
        for module in publicModules():
            missing = [name for name in module.__all__ if not hasattr(module, name)]
            self.assertEqual(missing, [], f"{module.__name__}.__all__ names what it lacks")

    def test_nothingPrivate(self) -> None:
        """No public module exports an underscore name."""
        for module in publicModules():
            private = [name for name in module.__all__ if name.startswith("_")]
            self.assertEqual(private, [], f"{module.__name__}.__all__")

    def test_documented(self) -> None:
        """Every exported class and function has a docstring."""
        for module in publicModules():
            undocumented = [
                name
                for name, obj in exported(module)
                if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (obj.__doc__ or "").strip()
            ]
            self.assertEqual(undocumented, [], f"{module.__name__}: undocumented exports")

    def test_publicWhereDefined(self) -> None:
        """A name a facade re-exports from a private module is in that module's __all__ too."""
        for module in publicModules():
            for name, obj in exported(module):
                home = getattr(obj, "__module__", None)
                if not (inspect.isclass(obj) or inspect.isfunction(obj)) or home == module.__name__:
                    continue
                if home is None or not home.startswith("lbkit"):
                    continue
                self.assertIn(name, getattr(sys.modules[home], "__all__", ()), f"{module.__name__}.{name} from {home}")

    def test_promisedNamesStay(self) -> None:
        """The names users rely on are still exported by each facade."""
        for moduleName, names in PROMISED.items():
            module = importlib.import_module(moduleName)
            self.assertEqual(names - set(module.__all__), set(), f"{moduleName} lost public names")

    def test_topLevelIsTheModel(self) -> None:
        """lbkit's names are the model's own objects, not copies."""
        from lbkit import _backend, _model

        self.assertIs(lbkit.Server, _model.Server)
        self.assertIs(lbkit.Backend, _backend.Backend)
        self.assertIs(lbkit.ServerListenerMixin, _model.ServerListenerMixin)


class InterfaceDocsTests(SynchronousTestCase):
    def test_everyMemberDocumented(self) -> None:
        """Every interface, and each of its methods and attributes, says what it is for."""
        from lbkit import interfaces

        for name, obj in exported(interfaces):
            self.assertIsInstance(obj, InterfaceClass, name)
            assert isinstance(obj, InterfaceClass)
            self.assertTrue((obj.__doc__ or "").strip(), name)
            for member, description in obj.namesAndDescriptions():
                doc = description.getDoc() if isinstance(description, Method) else description.__doc__
                self.assertTrue((doc or "").strip(), f"{name}.{member}")

    def test_docsOnly(self) -> None:
        """lbkit.interfaces defines interfaces and nothing else."""
        from lbkit import interfaces

        for name, obj in vars(interfaces).items():
            if inspect.isclass(obj) or inspect.isfunction(obj):
                self.assertTrue(
                    obj.__module__ != interfaces.__name__ or isinstance(obj, InterfaceClass),
                    f"lbkit.interfaces.{name} is code",
                )
