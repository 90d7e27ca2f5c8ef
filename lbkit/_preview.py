# -*- test-case-name: tests.test_preview -*-
"""
What a change to a backend's servers would do, before it is made
(L{preview}, as L{lbkit.Backend.preview}; docs/beyond.md): the share of
hash keys that would move (for a hashing balancer), the sticky clients of
the servers that would leave, and the traffic shares before and after.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import attrs

from lbkit._model import Server, ServerState
from lbkit.error import ConfigError
from lbkit.interfaces import IHashingBalancer, IStickyCount

if TYPE_CHECKING:
    from lbkit._backend import Backend

__all__ = ["Preview", "preview"]

#: How many keys a preview hashes to measure what moves.
SAMPLES = 10_000


@attrs.frozen
class _Stand:
    """A server as it would be after the change: what tables read."""

    name: str
    weight: int
    backup: bool
    state: ServerState


@attrs.frozen
class Preview:
    """
    What a change would do (L{lbkit.Backend.preview}).

    @ivar backend: The backend's name.
    @ivar change: The change, in words.
    @ivar sharesBefore: Server name to its expected share of new traffic
        now (0.0-1.0): by weight over the servers taking traffic, or, for
        a hashing balancer, the share of sampled keys it owns.
    @ivar sharesAfter: The same, after the change.
    @ivar moved: The share of all hash keys that would go to another
        server (C{None} unless the balancer hashes).
    @ivar movedFrom: Server name to the share of all keys that would leave
        it (hashing balancers only; empty otherwise).
    @ivar stickyMoving: C{(client, server)}: the sticky clients of the
        servers that would leave, who would be sent elsewhere (a removal
        drains first: they stay until their entries expire; a server at
        weight 0 keeps its sticky clients); or C{None} when the
        persistence cannot list its clients (cookies).
    """

    backend: str
    change: str
    sharesBefore: dict[str, float]
    sharesAfter: dict[str, float]
    moved: float | None
    movedFrom: dict[str, float]
    stickyMoving: list[tuple[str, str]] | None

    def lines(self) -> list[str]:
        """The preview as text, one line each (the command socket's answer)."""
        out = [f"preview of backend {self.backend}: {self.change}", "# server share_now share_after keys_leaving"]
        for name in sorted(set(self.sharesBefore) | set(self.sharesAfter)):
            leaving = self.movedFrom.get(name)
            out.append(
                f"{name} {self.sharesBefore.get(name, 0.0):.1%} {self.sharesAfter.get(name, 0.0):.1%} "
                + (f"{leaving:.1%}" if leaving is not None else "-")
            )
        if self.moved is not None:
            out.append(f"keys moving: {self.moved:.1%} (of {SAMPLES} sampled)")
        if self.stickyMoving is None:
            out.append("sticky clients moving: unknown (the persistence cannot list its clients)")
        else:
            shown = ", ".join(f"{c}->{s}" for c, s in self.stickyMoving[:10])
            out.append(f"sticky clients moving: {len(self.stickyMoving)}" + (f" ({shown})" if shown else ""))
        return out


def _taking(servers: Sequence[Any], allBackups: bool) -> list[Any]:
    """The servers that take new traffic, as L{Backend.eligible} picks them."""
    up = [s for s in servers if s.state is ServerState.UP and s.weight > 0]
    primary = [s for s in up if not s.backup]
    if primary:
        return primary
    backups = [s for s in up if s.backup]
    return backups if allBackups else backups[:1]


def _byWeight(servers: Sequence[Any]) -> dict[str, float]:
    total = sum(s.weight for s in servers)
    return {s.name: s.weight / total for s in servers} if total else {}


def _byKeys(owners: list[Any]) -> dict[str, float]:
    shares: dict[str, float] = {}
    for owner in owners:
        if owner is not None:
            shares[owner.name] = shares.get(owner.name, 0.0) + 1.0 / len(owners)
    return shares


def preview(
    backend: Backend,
    weights: Mapping[str, int] | None = None,
    remove: Iterable[str | Server] = (),
    add: Iterable[Server] = (),
) -> Preview:
    """
    What changing C{backend}'s servers this way would do; nothing changes.

    @param weights: Server name to its new weight (0-256).
    @param remove: Servers (or their names) that would leave.
    @param add: New L{Server}s that would join (UP).
    @raise ConfigError: on an unknown server name, a bad weight, or an
        added server whose name is taken.
    """
    weights = dict(weights or {})
    names = {s.name for s in backend.servers}
    gone = {r.name if isinstance(r, Server) else str(r) for r in remove}
    added = list(add)
    for name in [*gone, *[n for n in weights if n not in {a.name for a in added}]]:
        if name not in names:
            raise ConfigError(f"backend {backend.name!r} has no server {name!r}")
    for server in added:
        if not isinstance(server, Server) or server.name in names:
            raise ConfigError(f"backend {backend.name!r}: cannot add {server!r} (not a new server, or its name is taken)")
    for name, weight in weights.items():
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 256:
            raise ConfigError(f"server {name!r}: weight must be an integer from 0 to 256, not {weight!r}")
    after = [
        _Stand(s.name, weights.get(s.name, s.weight), s.backup, s.state)
        for s in [*backend.servers, *added] if s.name not in gone
    ]
    before = _taking(backend.servers, backend.allBackups)
    afterTaking = _taking(after, backend.allBackups)
    change = ", ".join(
        [f"weight {n} -> {w}" for n, w in weights.items()] + [f"remove {n}" for n in sorted(gone)]
        + [f"add {s.name} ({s.address})" for s in added]
    ) or "no change"
    moved: float | None = None
    movedFrom: dict[str, float] = {}
    balancer: Any = backend.balance
    if IHashingBalancer.providedBy(balancer):
        draw = random.Random(SAMPLES).getrandbits  # the same keys each time: key hashes are uniform
        keys = [draw(64) for _ in range(SAMPLES)]
        lookBefore: Callable[[int], Any] = balancer.keyTable(before)
        lookAfter: Callable[[int], Any] = balancer.keyTable(afterTaking)
        owned = [lookBefore(h) for h in keys]
        owners = [lookAfter(h) for h in keys]
        moving = 0
        for was, now in zip(owned, owners, strict=True):
            if was is not None and (now is None or now.name != was.name):
                moving += 1
                movedFrom[was.name] = movedFrom.get(was.name, 0.0) + 1.0 / SAMPLES
        moved = moving / SAMPLES
        sharesBefore, sharesAfter = _byKeys(owned), _byKeys(owners)
    else:
        sharesBefore, sharesAfter = _byWeight(before), _byWeight(afterTaking)
    return Preview(backend.name, change, sharesBefore, sharesAfter, moved, movedFrom, _sticky(backend, gone))


def _sticky(backend: Backend, gone: set[str]) -> list[tuple[str, str]] | None:
    persistence: Any = backend.persistence
    if not IStickyCount.providedBy(persistence):
        return None
    moving: list[tuple[str, str]] = []
    for server in backend.servers:
        # a sticky client stays on a server that stays, even at weight 0 (as in DRAIN)
        if server.name in gone:
            moving.extend((client, server.name) for client in persistence.stickyClients(backend, server))
    return moving
