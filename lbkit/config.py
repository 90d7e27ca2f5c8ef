# -*- test-case-name: tests.test_config -*-
"""
Loading a site file: plain Python that builds frontends, backends and
servers and lists what to start in C{listen}.

Every problem becomes one L{ConfigError} whose message names the file, the
line where Python can tell, and what is wrong::

    site.py:12: cannot parse server address '10.0.0.1': expected 'host:port'
"""

from __future__ import annotations

import ast
import builtins
import difflib
import importlib
import os
import traceback
from typing import Any, Sequence

import attrs
from twisted.internet.endpoints import serverFromString

from lbkit._backend import Backend, backendsOf
from lbkit._connect import checkServerTLS
from lbkit.error import ConfigError
from lbkit.interfaces import IListener
from lbkit.logs import checkAccessLog
from lbkit.traffic import tablesOf

__all__ = ["Site", "loadSite", "checkListen", "checkGrace"]


@attrs.frozen
class Site:
    """
    A loaded site file.

    @ivar path: The file it came from.
    @ivar listen: Its C{listen} list, checked.
    @ivar namespace: Every name the file defined.
    @ivar accessLog: Its C{accessLog}: L{lbkit.logs.AccessLog}
        destinations (empty: Twisted's log).
    @ivar grace: Its C{grace}: seconds a stopping balancer lets
        connections in flight finish, or C{None} when it does not say.
    """

    path: str
    listen: Sequence[Any]
    namespace: dict[str, Any]
    accessLog: Sequence[Any] = ()
    grace: float | None = None

    def backends(self) -> list[Backend]:
        """Every backend the C{listen} list sends traffic to, once each, in first-seen order."""
        return backendsOf(self.listen)


def _where(path: str, tb: Any) -> int | None:
    """The last line of C{path} in traceback C{tb}, if any."""
    line = None
    target = os.path.abspath(path)
    for frame, lineno in traceback.walk_tb(tb):
        if os.path.abspath(frame.f_code.co_filename) == target:
            line = lineno
    return line


#: Modules whose public names a site file commonly imports; a misspelt or
#: missing import of one of them gets a hint.
_HINT_MODULES = ("lbkit", "lbkit.balance", "lbkit.health", "lbkit.persistence", "lbkit.demo")


def _importHint(name: str) -> str | None:
    """The import that provides C{name}, if lbkit has it."""
    for moduleName in _HINT_MODULES:
        try:
            module = importlib.import_module(moduleName)
        except Exception:
            continue
        if name in getattr(module, "__all__", ()):
            return f"from {moduleName} import {name}"
        if moduleName == "lbkit" and name.isidentifier():
            try:
                importlib.import_module(f"lbkit.{name}")
            except Exception:
                continue
            return f"from lbkit import {name}"
    return None


def _nameErrorHint(e: NameError, namespace: dict[str, Any]) -> str:
    name = getattr(e, "name", None)
    if not name:
        return ""
    hint = _importHint(name)
    if hint is not None:
        return f" (missing import? add: {hint})"
    known = [n for n in list(namespace) + dir(builtins) if not n.startswith("__")]
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return ""


def _assignsListen(node: ast.AST) -> bool:
    if isinstance(node, ast.Assign):
        return any(
            isinstance(n, ast.Name) and n.id == "listen"
            for target in node.targets
            for n in ast.walk(target)
        )
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return isinstance(node.target, ast.Name) and node.target.id == "listen"
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        return (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "listen"
        )
    return False


def _listenLines(statements: Sequence[ast.stmt]) -> tuple[int | None, list[int]]:
    """
    Where module-level code last sets or changes C{listen}, and, when that
    is a plain list or tuple literal, the line of each of its items.
    """
    line: int | None = None
    items: list[int] = []
    for node in statements:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if _assignsListen(node):
            line, items = node.lineno, []
            value = getattr(node, "value", None)
            plain = isinstance(node, ast.AnnAssign) or (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            )
            if (
                plain
                and isinstance(value, (ast.List, ast.Tuple))
                and not any(isinstance(e, ast.Starred) for e in value.elts)
            ):
                items = [e.lineno for e in value.elts]
            continue
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, field, None)
            if isinstance(inner, list) and inner:
                flat: list[ast.stmt] = []
                for child in inner:
                    flat.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
                innerLine, innerItems = _listenLines(flat)
                if innerLine is not None:
                    line, items = innerLine, innerItems
    return line, items


def loadSite(path: str) -> Site:
    """
    Run the site file at C{path} and check what it declares.

    Nothing listens yet: this only builds objects.

    @raise ConfigError: naming the file, line and problem, e.g.
        C{"site.py:7: NameError: name 'tcp' is not defined ..."}.
    """
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the site file: {e.strerror}") from None
    try:
        tree = ast.parse(source, path)
        code = compile(tree, path, "exec")
    except SyntaxError as e:
        kind = "indentation error" if isinstance(e, IndentationError) else "syntax error"
        where = f"{path}:{e.lineno}" if e.lineno else path
        raise ConfigError(f"{where}: {kind}: {e.msg}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: cannot compile: {e}") from None
    namespace: dict[str, Any] = {"__file__": path, "__name__": "__lbkit_site__"}
    try:
        exec(code, namespace)
    except Exception as e:
        line = _where(path, e.__traceback__)
        where = f"{path}:{line}" if line is not None else path
        if isinstance(e, ConfigError):
            raise ConfigError(f"{where}: {e}") from None
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if isinstance(e, NameError):
            detail += _nameErrorHint(e, namespace)
        raise ConfigError(f"{where}: {detail}") from None
    listenLine, itemLines = _listenLines(tree.body)
    if "listen" not in namespace:
        last = max(1, len(source.splitlines()))
        raise ConfigError(
            f"{path}:{last}: no frontends: the site file never defines `listen`, "
            f"the list of frontends to start"
        )
    listen = namespace["listen"]
    checkListen(listen, path, listenLine, itemLines=itemLines)
    accessLog: tuple[Any, ...] = ()
    if namespace.get("accessLog") is not None:
        accessLog = checkAccessLog(namespace["accessLog"], f"{path}:{_assignedAt(tree.body, 'accessLog')}")
    grace = namespace.get("grace")
    if grace is not None:
        grace = checkGrace(grace, f"{path}:{_assignedAt(tree.body, 'grace')}: `grace`")
    return Site(path=path, listen=list(listen), namespace=namespace, accessLog=accessLog, grace=grace)


def _assignedAt(statements: Sequence[ast.stmt], name: str) -> int:
    """The line of the last module-level assignment to C{name}, or 1."""
    line = 1
    for node in statements:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                line = node.lineno
    return line


def checkGrace(value: Any, what: str = "grace") -> float:
    """
    A grace period: a number of seconds, 0 or more.

    @raise ConfigError: otherwise, starting with C{what}.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ConfigError(f"{what} must be a number of seconds, 0 or more, not {value!r}")
    return float(value)


def _itemWhere(item: Any, i: int, path: str, where: str, itemLines: Sequence[int]) -> str:
    """
    Where C{listen[i]} comes from: where it was made if that was in C{path},
    else its line in the list, else C{where} and where it was made.
    """
    filename, line = getattr(item, "definedAt", (path, 0))
    if line and os.path.abspath(filename) == os.path.abspath(path):
        return f"{path}:{line}"
    if itemLines:
        return f"{path}:{itemLines[i]}"
    if line:
        return f"{where} ({filename}:{line})"
    return where


def _bindKey(endpoint: Any) -> tuple[Any, ...] | None:
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int):
        return ("inet", port, getattr(endpoint, "_interface", "") or "")
    address = getattr(endpoint, "_address", None)
    if isinstance(address, str):
        return ("unix", address)
    return None


def _clash(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "unix":
        return bool(a[1] == b[1])
    if a[1] != b[1] or a[1] == 0:
        return False
    wild = ("", "0.0.0.0", "::")
    return bool(a[2] == b[2] or a[2] in wild or b[2] in wild)


def _describe(key: tuple[Any, ...]) -> str:
    return f"UNIX socket {key[1]}" if key[0] == "unix" else f"port {key[1]}"


def checkListen(
    listen: Any,
    path: str = "<listen>",
    line: int | None = None,
    *,
    itemLines: Sequence[int] = (),
) -> None:
    """
    Check a C{listen} list: a non-empty list of L{IListener}s, at least one
    of them a frontend, every endpoint parseable, no two on one address,
    and the TLS files of every server readable (their connection creators
    are built now, so a bad C{ca} file is named with the line that created
    the server).

    @param listen: The list to check.
    @param path: The file it comes from, for messages.
    @param line: The line in C{path} that sets it, if known.
    @param itemLines: The line of each item in C{path}, if known (used for
        items that do not say where they were made, or were made elsewhere).
    @raise ConfigError: on the first problem found, with a message that
        starts C{"path:line: "}.
    """
    where = f"{path}:{line}" if line else path
    if not isinstance(listen, (list, tuple)):
        hint = " (write `listen = [frontend]`)" if IListener.providedBy(listen) else ""
        raise ConfigError(
            f"{where}: `listen` must be a list of frontends, not {type(listen).__name__}{hint}"
        )
    if not listen:
        raise ConfigError(f"{where}: no frontends: `listen` is empty")
    if len(itemLines) != len(listen):
        itemLines = ()
    bound: list[tuple[tuple[Any, ...], Any, str]] = []
    for i, item in enumerate(listen):
        if not IListener.providedBy(item):
            itemWhere = f"{path}:{itemLines[i]}" if itemLines else where
            hint = ""
            if type(item).__name__ in ("Backend", "Server"):
                hint = f" (a {type(item).__name__} is reached through a frontend's backend=)"
            raise ConfigError(
                f"{itemWhere}: listen[{i}] is {item!r}, not a frontend: `listen` takes "
                f"frontends (tcp.Frontend, http.Frontend), stats pages and demo servers{hint}"
            )
        itemWhere = _itemWhere(item, i, path, where, itemLines)
        bindKey = getattr(item, "bindKey", None)
        if bindKey is not None:  # a listener that is not a stream endpoint (udp.Frontend)
            key = bindKey()
        else:
            try:
                endpoint = serverFromString(None, item.endpoint)
            except Exception as e:
                raise ConfigError(
                    f"{itemWhere}: cannot parse endpoint {item.endpoint!r}: {e}"
                ) from None
            key = _bindKey(endpoint)
        if key is None:
            continue
        for otherKey, other, otherWhere in bound:
            if _clash(key, otherKey):
                raise ConfigError(
                    f"{itemWhere}: two listeners on {_describe(key)}: {item.endpoint!r} "
                    f"and {other.endpoint!r} ({otherWhere})"
                )
        bound.append((key, item, itemWhere))
    tables: dict[str, Any] = {}
    for i, item in enumerate(listen):  # traffic tables are found by name (stats, socket, store, reload)
        for table in tablesOf(item):
            if tables.setdefault(table.name, table) is not table:
                raise ConfigError(f"{_itemWhere(item, i, path, where, itemLines)}: two traffic tables are named "
                                  f"{table.name!r}; give each its own name, or use the same Table object")
    backends = backendsOf(listen)
    if not backends:
        raise ConfigError(
            f"{where}: no frontends: `listen` has no frontend, only "
            f"{', '.join(repr(item) for item in listen)}; add a tcp.Frontend or http.Frontend"
        )
    for backend in backends:
        for server in backend.servers:
            checkServerTLS(server)
