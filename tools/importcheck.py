#!/usr/bin/env python3
"""
Check lbkit's import structure with C{ast}, without importing anything.

Fails (exit status 1, one line per problem) on:

  - an import cycle among lbkit's modules, counting imports at module level
    and inside functions (what runs), but not those under
    C{if TYPE_CHECKING:} (annotations only);
  - C{from lbkit.x import _name} across modules: a private name of another
    module (private *modules* such as C{lbkit.http._parse} are fine; the
    private base classes shared inside C{lbkit.balance} are its internals);
  - a lazy (function-level) import of an lbkit module: the only lazy imports
    left are of optional third-party packages;
  - an import (module level or inside a function, not under
    C{TYPE_CHECKING}) that points up: to a module of a higher layer than
    the importing one's, in the L{LAYERS} table below;
  - a module the table does not place in a layer.

Usage: python tools/importcheck.py [--picture] [ROOT]   (ROOT defaults to ./lbkit)

With C{--picture} it prints who imports whom, layer by layer, instead
(the picture in docs/architecture.md).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

#: The layers of lbkit, lowest first (docs/architecture.md).  A module may
#: import (at run time) only modules of its own layer or a lower one; a C{TYPE_CHECKING} import may point up, to annotate.
#: Each entry is a module or package prefix: the longest prefix that
#: matches a module gives its layer, and a prefix covers the package's
#: submodules ("lbkit.balance" covers "lbkit.balance._roundrobin").  The
#: facade "lbkit" (the package's __init__) matches only itself.
LAYER_NAMES = ("foundation", "model", "policy", "backend", "mechanism", "modes", "application")
LAYERS: dict[str, int] = {
    # 0 foundation: errors, contracts, sans-I/O parsers, small helpers
    "lbkit.error": 0,
    "lbkit.interfaces": 0,
    "lbkit._sitecontracts": 0,
    "lbkit._livecontracts": 0,
    "lbkit._origin": 0,
    "lbkit._address": 0,
    "lbkit._settings": 0,
    "lbkit.proxyproto": 0,
    "lbkit._logline": 0,
    "lbkit._replay": 0,
    "lbkit._latency": 0,
    "lbkit._heap": 0,
    "lbkit.http._parse": 0,
    "lbkit.http._body": 0,
    "lbkit.http._cachepolicy": 0,
    "lbkit.http._cachestore": 0,
    "lbkit.http._compression": 0,
    # 1 model: Server, Context, ServerState
    "lbkit._model": 1,
    # 2 policy: decisions that read the model, never a transport
    "lbkit.balance": 2,
    "lbkit.persistence": 2,
    "lbkit.http._rules": 2,
    "lbkit.http._answers": 2,
    "lbkit.traffic": 2,
    # 3 Backend, and what must check that a value is one (routes)
    "lbkit._backend": 3,
    "lbkit._breakers": 3,
    "lbkit._live": 3,
    "lbkit._explain": 3,
    "lbkit._preview": 3,
    "lbkit.http._routing": 3,
    # 4 mechanism: connecting, TLS, listening, draining, pumping, parsing glue
    "lbkit._pump": 4,
    "lbkit._accesslog": 4,
    "lbkit._syslog": 4,
    "lbkit._drain": 4,
    "lbkit._resources": 4,
    "lbkit._connect": 4,
    "lbkit.tls": 4,
    "lbkit._listening": 4,
    "lbkit._dispatch": 4,
    "lbkit._workerproc": 4,
    "lbkit.store": 4,
    "lbkit.discovery": 4,
    "lbkit.http._pool": 4,
    "lbkit.http._server": 4,
    "lbkit.http._headers": 4,
    "lbkit.http._accessline": 4,
    "lbkit.http._tracing": 4,
    "lbkit.http._sides": 4,
    "lbkit.http._explain": 4,
    "lbkit.http._states": 0,
    "lbkit.http._h2head": 0,
    "lbkit.http._trailers": 0,
    # 5 modes: frontends and their protocols, health checks, stats pages
    "lbkit.tcp": 5,
    "lbkit.udp": 5,
    "lbkit.http": 5,  # the facade, _exchange, _endings, _h1, _h2, _h2stream, _alpn, _acceptproxy, _frontend
    "lbkit.health": 5,
    "lbkit.stats": 5,
    # 6 application: site files, the service tree, reload, twistd, tools
    "lbkit": 6,
    "lbkit.config": 6,
    "lbkit.logs": 6,
    "lbkit.service": 6,
    "lbkit.reload": 6,
    "lbkit.tap": 6,
    "lbkit._children": 6,
    "lbkit.fromhaproxy": 6,
    "lbkit._haproxycfg": 6,
    "lbkit._haproxyemit": 6,
    "lbkit.simulate": 6,
    "lbkit.demo": 6,
    "lbkit.testing": 6,
    "lbkit.reactor": 6,
    "lbkit.workers": 6,
    "lbkit._worker": 6,
}

#: Packages whose private modules may share underscore names among themselves.
PRIVATE_SHARING = ("lbkit.balance",)


def layerOf(module: str) -> int | None:
    """The layer of C{module} in L{LAYERS}, or L{None} when it has none."""
    best: tuple[int, int] | None = None
    for prefix, layer in LAYERS.items():
        covers = module == prefix or (prefix.count(".") > 0 and module.startswith(prefix + "."))
        if covers and (best is None or len(prefix) > best[0]):
            best = (len(prefix), layer)
    return None if best is None else best[1]


def describe(layer: int) -> str:
    return f"layer {layer}, {LAYER_NAMES[layer]}"


def moduleName(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def isPackage(path: Path) -> bool:
    return path.name == "__init__.py"


class Imports(ast.NodeVisitor):
    """Collect (target module, imported names, line, lazy) for one module."""

    def __init__(self, name: str, package: bool) -> None:
        self.name = name
        self.package = package
        self.found: list[tuple[str, list[str], int, bool]] = []
        self._depth = 0

    def _resolve(self, module: str | None, level: int) -> str:
        if not level:
            return module or ""
        base = self.name.split(".")
        if not self.package:
            base = base[:-1]
        base = base[: len(base) - (level - 1)]
        return ".".join(base + ([module] if module else []))

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        typing = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        if typing:
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, [], node.lineno, self._depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        target = self._resolve(node.module, node.level)
        self.found.append((target, [a.name for a in node.names], node.lineno, self._depth > 0))


def scan(root: Path, graph: dict[str, set[str]] | None = None) -> list[str]:
    """
    The problems of the tree at C{root}, one line each; when C{graph} is
    given, it is filled with each module's run-time lbkit imports.
    """
    files = {moduleName(root, p): p for p in sorted(root.rglob("*.py"))}
    if graph is None:
        graph = {}
    graph.update({m: set() for m in files})
    where: dict[tuple[str, str], str] = {}
    problems: list[str] = []
    top = root.name
    for name, path in files.items():
        if top == "lbkit" and layerOf(name) is None:
            problems.append(f"{path}:1: {name} has no layer: add it to LAYERS in tools/importcheck.py")
        visitor = Imports(name, isPackage(path))
        visitor.visit(ast.parse(path.read_text(), str(path)))
        for target, names, line, lazy in visitor.found:
            if target != top and not target.startswith(top + "."):
                continue
            location = f"{path}:{line}"
            edges = []
            for imported in names:
                sub = f"{target}.{imported}"
                if sub in files:
                    edges.append(sub)
                    if imported.startswith("_") and sub.rpartition(".")[0] != name.rpartition(".")[0] and name != target:
                        problems.append(f"{location}: imports private module {sub} from outside its package")
                else:
                    edges.append(target)
                    if imported.startswith("_") and not imported.startswith("__"):
                        shared = any(
                            name.startswith(p + ".") and target.startswith(p + ".") for p in PRIVATE_SHARING
                        )
                        if not shared:
                            problems.append(f"{location}: imports private name {imported} from {target}")
            if not names:
                edges.append(target)
            for edge in edges:
                if edge not in files or edge == name:
                    continue
                if lazy:
                    problems.append(f"{location}: lazy import of {edge} (import lbkit modules at module level)")
                mine, theirs = layerOf(name), layerOf(edge)
                if top == "lbkit" and mine is not None and theirs is not None and theirs > mine:
                    problems.append(
                        f"{location}: {name} ({describe(mine)}) imports {edge} ({describe(theirs)}):"
                        " an import goes only to the same or a lower layer"
                    )
                graph[name].add(edge)
                where.setdefault((name, edge), location)
    for size, cycle in cycles(graph):
        chain = " -> ".join(cycle + [cycle[0]])
        first = where[(cycle[0], cycle[1 % len(cycle)])]
        problems.append(f"{first}: import cycle ({size} modules in one circle), e.g. {chain}")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[tuple[int, list[str]]]:
    """One cycle from each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    onStack: set[str] = set()
    result: list[tuple[int, list[str]]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        onStack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in onStack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                onStack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append((len(component), _path(graph, set(component))))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return result


def _path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return list(reversed(path))
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(component)


def room(module: str, graph: dict[str, set[str]]) -> str:
    """Where a module is drawn: its subpackage (C{http/}), or itself (C{_model})."""
    parts = module.split(".")
    if len(parts) > 2 or any(m.startswith(module + ".") for m in graph) and len(parts) == 2:
        return parts[1] + "/"
    return parts[-1] if len(parts) == 2 else "lbkit (facade)"


def picture(graph: dict[str, set[str]]) -> str:
    """
    Who imports whom, layer by layer (top first): each room (a module, or
    a subpackage) and the rooms below or beside it that it imports.
    """
    rooms: dict[str, set[str]] = {}
    layers: dict[str, int] = {}
    for module, targets in graph.items():
        r = room(module, graph)
        rooms.setdefault(r, set()).update(room(t, graph) for t in targets if room(t, graph) != r)
        layer = layerOf(module)
        if layer is not None:
            layers[r] = max(layers.get(r, 0), layer)
    lines = []
    for layer in reversed(range(len(LAYER_NAMES))):
        here = sorted(r for r in rooms if layers.get(r) == layer)
        if not here:
            continue
        lines.append(f"{layer} {LAYER_NAMES[layer]}")
        for r in here:
            uses = ", ".join(sorted(rooms[r], key=lambda t: (-layers.get(t, 0), t))) or "-"
            lines.append(f"    {r:<16} -> {uses}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = [a for a in argv[1:] if not a.startswith("--")]
    root = Path(args[0] if args else "lbkit").resolve()
    graph: dict[str, set[str]] = {}
    problems = scan(root, graph)
    if "--picture" in argv:
        print(picture(graph))
        return 0
    for line in problems:
        print(line)
    if problems:
        print(f"importcheck: {len(problems)} problem(s)")
        return 1
    print(f"importcheck: {root.name}: no import cycles, no private names across modules, no import up a layer")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
