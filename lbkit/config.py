# -*- test-case-name: tests.test_config -*-
"""
Loading a site file: plain Python that builds frontends, backends and
servers and lists what to start in C{listen}.

Every problem becomes one L{ConfigError} whose message names the file, the
line where Python can tell, and what is wrong.
"""

from __future__ import annotations

import os
import traceback
from typing import Any, Sequence

import attrs
from twisted.internet.endpoints import serverFromString

from lbkit.error import ConfigError
from lbkit.interfaces import IListener

__all__ = ["Site", "loadSite", "checkListen"]


@attrs.frozen
class Site:
    """
    A loaded site file.

    @ivar path: The file it came from.
    @ivar listen: Its C{listen} list, checked.
    @ivar namespace: Every name the file defined.
    """

    path: str
    listen: Sequence[Any]
    namespace: dict[str, Any]


def _where(path: str, tb: Any) -> int | None:
    """The last line of C{path} in traceback C{tb}, if any."""
    line = None
    target = os.path.abspath(path)
    for frame, lineno in traceback.walk_tb(tb):
        if os.path.abspath(frame.f_code.co_filename) == target:
            line = lineno
    return line


def loadSite(path: str) -> Site:
    """
    Run the site file at C{path} and check what it declares.

    Nothing listens yet: this only builds objects.

    @raise ConfigError: naming the file, line and problem.
    """
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the site file: {e.strerror}") from None
    try:
        code = compile(source, path, "exec")
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
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
        raise ConfigError(f"{where}: {type(e).__name__}: {e}") from None
    if "listen" not in namespace:
        raise ConfigError(
            f"{path}: no frontends: the site file must define `listen`, a list of frontends"
        )
    listen = namespace["listen"]
    checkListen(listen, path)
    return Site(path=path, listen=list(listen), namespace=namespace)


def _line(obj: Any, path: str) -> str:
    filename, line = getattr(obj, "definedAt", (path, 0))
    if line and os.path.abspath(filename) == os.path.abspath(path):
        return f"{path}:{line}"
    if line:
        return f"{path} ({filename}:{line})"
    return path


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


def checkListen(listen: Any, path: str = "<site>") -> None:
    """
    Check a C{listen} list: a non-empty list of L{IListener}s, at least one
    of them a frontend, every endpoint parseable, no two on one address.

    @raise ConfigError: on the first problem found.
    """
    if not isinstance(listen, (list, tuple)):
        raise ConfigError(f"{path}: `listen` must be a list of frontends, not {type(listen).__name__}")
    if not listen:
        raise ConfigError(f"{path}: no frontends: `listen` is empty")
    bound: list[tuple[tuple[Any, ...], Any]] = []
    for i, item in enumerate(listen):
        if not IListener.providedBy(item):
            raise ConfigError(f"{path}: listen[{i}] is {item!r}, not a frontend or stats page")
        where = _line(item, path)
        try:
            endpoint = serverFromString(None, item.endpoint)
        except Exception as e:
            raise ConfigError(f"{where}: cannot parse endpoint {item.endpoint!r}: {e}") from None
        key = _bindKey(endpoint)
        if key is None:
            continue
        for otherKey, other in bound:
            if _clash(key, otherKey):
                raise ConfigError(
                    f"{where}: {item.endpoint!r} listens on the same address as "
                    f"{other.endpoint!r} ({_line(other, path)})"
                )
        bound.append((key, item))
    if not any(item.backends() for item in listen):
        raise ConfigError(f"{path}: no frontends: `listen` has no frontend (tcp.Frontend or http.Frontend)")
