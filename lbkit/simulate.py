# -*- test-case-name: tests.test_simulate -*-
"""
Replay a synthetic workload through any L{IBalancer}, on a simulated
clock, and report latency percentiles and per-server load: a way to choose
an algorithm for your traffic before putting it in production.

The model: requests arrive as a Poisson process; service times are
heavy-tailed (Pareto); each server has a speed (a server of speed 2 serves
a request in half the time) and a number of worker slots, beyond which
requests wait in the server's own FIFO queue; every server has a
C{maxconn}, beyond which requests wait in the backend queue, as in lbkit
itself.  The balancer sees what it sees in production: a real
L{lbkit.Backend} calls it with the eligible servers and their C{active}
counts.  Time is simulated (an event heap), so a run takes no wall-clock
time beyond the computation.

Run C{python -m lbkit.simulate} for the comparison table of the built-in
balancers; C{python -m lbkit.simulate --help} lists the options.

With C{--replay access.log} the workload is real traffic instead: the
arrivals and service times of lbkit's access log or HAProxy's C{httplog}
(L{lbkit._replay.readLog}) are replayed through each balancer
(L{replay}) over the servers the log names, and C{--plot tails.png}
draws their tail latencies (matplotlib, the C{lbkit[plot]} extra).
"""

from __future__ import annotations

import heapq
import random
import sys
from collections import deque
from typing import Any, Callable, Sequence

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.python import usage

from lbkit import balance
from lbkit._backend import Backend
from lbkit._model import Context, Server
from lbkit._replay import Arrival, ReplayLog, readLog
from lbkit.interfaces import IBalancer

__all__ = ["Workload", "Result", "simulate", "replay", "builtins", "compare", "formatTable", "formatReplay",
           "plotTails", "main"]


@attrs.frozen
class Workload:
    """
    A synthetic workload and server farm.

    @ivar requests: How many requests to replay.
    @ivar load: Offered load as a fraction of the farm's total capacity.
    @ivar meanService: Mean service time in seconds on a server of speed 1.
    @ivar tailIndex: The Pareto shape of service times (smaller is
        heavier-tailed; must be above 1).
    @ivar speeds: One speed per server.
    @ivar slots: Requests a server works on at once.
    @ivar maxconn: Each server's C{maxconn} (C{None}: unlimited).
    @ivar clients: Distinct client addresses (chosen with a Zipf-like
        skew, as are paths).
    @ivar paths: Distinct URL paths.
    @ivar seed: Seed of the random generator: the same seed gives the same
        workload for every balancer.
    """

    requests: int = 20000
    load: float = 0.8
    meanService: float = 0.020
    tailIndex: float = 1.6
    speeds: Sequence[float] = (0.5, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 4.0)
    slots: int = 4
    maxconn: int | None = 16
    clients: int = 2000
    paths: int = 5000
    seed: int = 1

    def weights(self) -> list[int]:
        """Server weights proportional to speeds, as an operator would set."""
        return [max(1, round(speed * 10)) for speed in self.speeds]


@attrs.frozen
class Result:
    """
    What one run measured.

    @ivar name: The balancer's label.
    @ivar p50: Median latency (queueing plus service) in seconds.
    @ivar p99: 99th percentile latency in seconds.
    @ivar p999: 99.9th percentile latency in seconds.
    @ivar shares: Fraction of requests served by each server.
    @ivar utilisation: Fraction of its worker-time each server was busy.
    """

    name: str
    p50: float
    p99: float
    p999: float
    shares: list[float]
    utilisation: list[float]


class _Request:
    """
    The request fields the hashing balancers read, as lbkit's http mode
    provides them.
    """

    method = b"GET"

    def __init__(self, path: bytes, user: bytes) -> None:
        self.path = path
        self.query = b"user=" + user
        self.uri = path + b"?" + self.query
        self._headers = {b"x-user": user}

    def header(self, name: bytes) -> bytes | None:
        return self._headers.get(name.lower())


class _Logged:
    """A request of a replayed log, with the fields the hashing balancers read."""

    def __init__(self, method: bytes, uri: bytes) -> None:
        self.method = method
        self.uri = uri
        self.path, _, self.query = uri.partition(b"?")

    def header(self, name: bytes) -> bytes | None:
        return None


def _address(client: str) -> Any:
    host, _, digits = client.rpartition(":")
    port = int(digits) if digits.isdigit() else 0
    if host.startswith("["):
        return IPv6Address("TCP", host.strip("[]"), port)
    return IPv4Address("TCP", host or client, port)


class _Farm:
    """
    The servers' side: worker slots, local queues and the event heap.
    """

    def __init__(self, workload: Workload, backend: Backend) -> None:
        self.backend = backend
        self.slots = workload.slots
        self.speeds = {s: speed for s, speed in zip(backend.servers, workload.speeds, strict=True)}
        self.busy = {s: 0 for s in backend.servers}
        self.busyTime = {s: 0.0 for s in backend.servers}
        self.queues: dict[Server, deque[tuple[float, float]]] = {s: deque() for s in backend.servers}
        self.served = {s: 0 for s in backend.servers}
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.sequence = 0
        self.now = 0.0
        self.latencies: list[float] = []
        self.waiting: deque[tuple[float, float, Context]] = deque()

    def at(self, when: float, call: Callable[[], None]) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (when, self.sequence, call))

    def run(self) -> None:
        events = self.events
        while events:
            self.now, _, call = heapq.heappop(events)
            call()

    def arrive(self, work: float, context: Context) -> None:
        if self.waiting:
            self.waiting.append((self.now, work, context))
            return
        server = self.backend.tryAcquire(context)
        if server is None:
            self.waiting.append((self.now, work, context))
        else:
            self.assign(server, self.now, work)

    def assign(self, server: Server, arrived: float, work: float) -> None:
        self.served[server] += 1
        if self.busy[server] < self.slots:
            self.start(server, arrived, work)
        else:
            self.queues[server].append((arrived, work))

    def start(self, server: Server, arrived: float, work: float) -> None:
        self.busy[server] += 1
        duration = work / self.speeds[server]
        self.busyTime[server] += duration
        self.at(self.now + duration, lambda: self.finish(server, arrived))

    def finish(self, server: Server, arrived: float) -> None:
        self.latencies.append(self.now - arrived)
        self.busy[server] -= 1
        self.backend.release(server)
        queue = self.queues[server]
        if queue:
            self.start(server, *queue.popleft())
        while self.waiting:
            waitArrived, work, context = self.waiting[0]
            chosen = self.backend.tryAcquire(context)
            if chosen is None:
                break
            self.waiting.popleft()
            self.assign(chosen, waitArrived, work)


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def simulate(balancer: IBalancer, workload: Workload = Workload(), name: str = "") -> Result:
    """
    Replay C{workload} through C{balancer}.

    @param balancer: A fresh balancer (it is put in a new backend).
    @param name: The label of the result; the class name by default.
    """
    rng = random.Random(workload.seed)
    weights = workload.weights()
    servers = [
        Server(f"s{i + 1}", f"127.0.0.1:{9000 + i}", weight=w, maxconn=workload.maxconn)
        for i, w in enumerate(weights)
    ]
    backend = Backend("sim", servers, balance=balancer, retries=0)
    farm = _Farm(workload, backend)
    alpha = workload.tailIndex
    scale = workload.meanService * (alpha - 1) / alpha
    capacity = workload.slots * sum(workload.speeds) / workload.meanService
    rate = workload.load * capacity
    clients = [IPv4Address("TCP", f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", 40000) for i in range(workload.clients)]
    users = [b"u%d" % i for i in range(workload.clients)]
    paths = [b"/static/%d/item%d.png" % (i % 50, i) for i in range(workload.paths)]

    def zipf(n: int) -> int:
        # a cheap Zipf-like skew: index = n ** u - 1 for uniform u
        return min(n - 1, int(n ** rng.random()) - 1)

    now = 0.0
    for _ in range(workload.requests):
        now += rng.expovariate(rate)
        work = scale / (1.0 - rng.random()) ** (1.0 / alpha)
        c = zipf(workload.clients)
        context = Context(client=clients[c], request=_Request(paths[zipf(workload.paths)], users[c]))
        farm.at(now, lambda w=work, ctx=context: farm.arrive(w, ctx))  # type: ignore[misc]
    return _run(farm, name or type(balancer).__name__, servers, workload.slots)


def replay(
    balancer: IBalancer,
    arrivals: Sequence[Arrival],
    servers: Sequence[str],
    slots: int = 4,
    maxconn: int | None = None,
    name: str = "",
) -> Result:
    """
    Replay logged requests through C{balancer}: each arrives at its
    C{at} and takes its C{service} seconds on whichever server the
    balancer picks (all servers alike, weight 1, C{slots} requests at
    once each, then their own queue; beyond C{maxconn} the backend's
    queue).  Latency is queueing plus service.

    @param servers: The servers' names (a log's L{ReplayLog.servers}).
    """
    backend = Backend("replay", [Server(n, f"127.0.0.1:{9000 + i}", maxconn=maxconn) for i, n in
                                 enumerate(servers)], balance=balancer, retries=0)
    farm = _Farm(Workload(speeds=[1.0] * len(servers), slots=slots, maxconn=maxconn), backend)
    for a in arrivals:
        context = Context(client=_address(a.client), request=_Logged(a.method, a.uri))
        farm.at(a.at, lambda w=a.service, ctx=context: farm.arrive(w, ctx))  # type: ignore[misc]
    return _run(farm, name or type(balancer).__name__, backend.servers, slots)


def _run(farm: Any, name: str, servers: Sequence[Any], slots: int) -> Result:
    """Run C{farm} to the end: its latencies' percentiles, and each server's share and utilisation."""
    farm.run()
    ordered = sorted(farm.latencies)
    total = sum(farm.served.values()) or 1
    elapsed = farm.now or 1.0
    return Result(
        name=name,
        p50=_percentile(ordered, 0.5),
        p99=_percentile(ordered, 0.99),
        p999=_percentile(ordered, 0.999),
        shares=[farm.served[s] / total for s in servers],
        utilisation=[farm.busyTime[s] / (elapsed * slots) for s in servers],
    )


def formatReplay(results: Sequence[Result], log: ReplayLog, source: str, slots: int,
                 maxconn: int | None) -> str:
    """The results of a replay as a Markdown table, under a line saying what was replayed."""
    span = log.arrivals[-1].at if log.arrivals else 0.0
    head = (f"{len(log.arrivals)} requests replayed from {source} over {span:.1f} s ({log.skipped} lines skipped), "
            f"servers {' '.join(log.servers)}, {slots} slots and maxconn {maxconn or 'unlimited'} per server")
    return head + "\n\n" + formatTable(results)


def plotTails(results: Sequence[Result], path: str) -> None:
    """Draw p50, p99 and p99.9 of each balancer as grouped bars (log scale) into the PNG C{path}."""
    import matplotlib  # the optional lbkit[plot] extra

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(max(6.0, len(results) * 0.7), 4.5))
    width = 0.27
    for k, (label, attr) in enumerate([("p50", "p50"), ("p99", "p99"), ("p99.9", "p999")]):
        axes.bar([i + (k - 1) * width for i in range(len(results))],
                 [getattr(r, attr) * 1000 for r in results], width, label=label)
    axes.set_xticks(range(len(results)))
    axes.set_xticklabels([r.name for r in results], rotation=45, ha="right", fontsize=8)
    axes.set_yscale("log")
    axes.set_ylabel("latency, ms")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
    pyplot.close(figure)


def builtins() -> list[tuple[str, Callable[[], IBalancer]]]:
    """
    The built-in balancers, labelled, with the options worth comparing.
    """

    def seeded(draws: int) -> Callable[[], IBalancer]:
        return lambda: balance.Random(draws, random=random.Random(7))

    return [
        ("RoundRobin", balance.RoundRobin),
        ("StaticRR", balance.StaticRR),
        ("LeastConn", balance.LeastConn),
        ("ShortestExpectedDelay", balance.ShortestExpectedDelay),
        ("NeverQueue", balance.NeverQueue),
        ("First", balance.First),
        ("Random(draws=1)", seeded(1)),
        ("Random(draws=2)", seeded(2)),
        ("Source", balance.Source),
        ("Source(consistent)", lambda: balance.Source(hashType="consistent")),
        ("Source(consistent, 125%)", lambda: balance.Source(hashType="consistent", hashBalanceFactor=125)),
        ("Source(maglev)", lambda: balance.Source(hashType="maglev")),
        ("URI", balance.URI),
        ("URI(consistent, 150%)", lambda: balance.URI(hashType="consistent", hashBalanceFactor=150)),
        ("Header(x-user)", lambda: balance.Header(b"X-User")),
        ("URLParam(user)", lambda: balance.URLParam(b"user")),
    ]


def compare(
    workload: Workload = Workload(),
    balancers: Sequence[tuple[str, Callable[[], IBalancer]]] | None = None,
) -> list[Result]:
    """
    Run C{workload} through each balancer (the built-ins by default).
    """
    return [simulate(make(), workload, name) for name, make in (balancers or builtins())]


def formatTable(results: Sequence[Result], workload: Workload | None = None) -> str:
    """
    The results as a Markdown table: latencies in milliseconds, then each
    server's share of requests and busy fraction, in percent.
    """
    lines = []
    if workload is not None:
        lines.append(
            f"{workload.requests} requests, load {workload.load:.0%}, Pareto({workload.tailIndex}) "
            f"service times of mean {workload.meanService * 1000:g} ms, speeds "
            f"{' '.join(f'{s:g}' for s in workload.speeds)} (weights {' '.join(map(str, workload.weights()))}), "
            f"{workload.slots} slots and maxconn {workload.maxconn} per server"
        )
        lines.append("")
    lines.append("| balancer | p50 ms | p99 ms | p99.9 ms | requests per server % | busy per server % |")
    lines.append("|---|---:|---:|---:|---|---|")
    for r in results:
        shares = " ".join(f"{s * 100:.0f}" for s in r.shares)
        busy = " ".join(f"{u * 100:.0f}" for u in r.utilisation)
        lines.append(
            f"| {r.name} | {r.p50 * 1000:.1f} | {r.p99 * 1000:.1f} | {r.p999 * 1000:.1f} | {shares} | {busy} |"
        )
    return "\n".join(lines)


class Options(usage.Options):
    """
    C{python -m lbkit.simulate} options.
    """

    optParameters: list[list[Any]] = [
        ["requests", "n", 20000, "Requests per balancer.", int],
        ["load", "l", 0.8, "Offered load, as a fraction of total capacity.", float],
        ["tail", "t", 1.6, "Pareto shape of service times (> 1; smaller is heavier).", float],
        ["maxconn", "m", 16, "maxconn of every server (0: unlimited).", int],
        ["seed", "s", 1, "Random seed.", int],
        ["replay", "r", None, "Replay this access log (lbkit's, text or JSON, or HAProxy's httplog)."],
        ["slots", None, 4, "With --replay: requests each server works on at once.", int],
        ["plot", "p", None, "Also draw the tail latencies into this PNG file (needs matplotlib)."],
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """
    Print the comparison table of the built-in balancers.
    """
    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        print(f"{options}\nlbkit.simulate: {e}", file=sys.stderr)
        return 2
    if options["replay"] is not None:
        return _replayMain(options)
    workload = Workload(
        requests=options["requests"],
        load=options["load"],
        tailIndex=options["tail"],
        maxconn=options["maxconn"] or None,
        seed=options["seed"],
    )
    results = compare(workload)
    print(formatTable(results, workload))
    if options["plot"]:
        plotTails(results, options["plot"])
    return 0


def _replayMain(options: Options) -> int:
    try:
        with open(options["replay"], encoding="utf-8", errors="replace") as f:
            log = readLog(f)
    except OSError as e:
        print(f"lbkit.simulate: {options['replay']}: {e.strerror}", file=sys.stderr)
        return 1
    if not log.arrivals:
        print(f"lbkit.simulate: {options['replay']}: no request with a server time (Tr) in it "
              f"({log.skipped} lines skipped)", file=sys.stderr)
        return 1
    maxconn = options["maxconn"] or None
    results = [replay(make(), log.arrivals, log.servers, options["slots"], maxconn, label)
               for label, make in builtins()]
    print(formatReplay(results, log, options["replay"], options["slots"], maxconn))
    if options["plot"]:
        plotTails(results, options["plot"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
