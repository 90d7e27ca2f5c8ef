#!/usr/bin/env python3
"""
Cache hits, lbkit against HAProxy: each with and without its response
cache, in front of bench/run.py's two nginx backends, wrk on C{/small}
(13 bytes, C{-c50}) and C{/big} (1 MiB, C{-c10}).  Every response is fresh
for an hour in both caches, so after the first request of each path every
request is a hit.

    .venv/bin/python bench/cache.py [--rounds 3] [--duration 5]

Rounds are interleaved; each figure is the median.  The last lines are the
ratios: lbkit's cache hits against HAProxy's, and each cache against the
same proxy without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("lbkit_bench_run", HERE / "run.py")
assert _spec is not None and _spec.loader is not None
run: Any = importlib.util.module_from_spec(_spec)
sys.modules["lbkit_bench_run"] = run
_spec.loader.exec_module(run)


def haproxyCacheCommand(cached: bool) -> Any:
    """HAProxy in http mode as bench/run.py runs it, with (or without) a 64 MB cache holding objects up to 2 MiB for an hour."""

    def command(env: Any, port: int) -> tuple[list[str], dict[str, str]]:
        servers = "".join(f"    server s{i} 127.0.0.1:{p}\n" for i, p in enumerate(env.backends, 1))
        cache = "cache c\n    total-max-size 64\n    max-object-size 2097152\n    max-age 3600\n\n" if cached else ""
        use = "    http-request cache-use c\n    http-response cache-store c\n" if cached else ""
        conf = env.tmp / f"haproxy-cache-{int(cached)}.cfg"
        conf.write_text(
            f"""global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

{cache}frontend fe
    bind 127.0.0.1:{port}
{use}    default_backend be

backend be
    balance roundrobin
{servers}"""
        )
        return [env.tools["haproxy"], "-db", "-f", str(conf)], {}

    return command


SYSTEMS = [
    run.System("lbkit", "lbkit http", ("http",), command=run.lbkitCommand("http.py")),
    run.System("lbkit-cache", "lbkit http + http.Cache", ("http",), command=run.lbkitCommand("http_cache.py")),
    run.System("haproxy", "HAProxy http", ("http",), command=haproxyCacheCommand(False)),
    run.System("haproxy-cache", "HAProxy http + cache", ("http",), command=haproxyCacheCommand(True)),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5)
    args = p.parse_args()
    tools = run.ensureTools()
    with tempfile.TemporaryDirectory(prefix="lbkit-cachebench-") as tmpName:
        tmp = Path(tmpName)
        tmp.chmod(0o755)  # nginx's workers run as nobody when we are root
        procs = run.Processes(tmp)
        try:
            backends, _ = run.startBackends(tools, tmp, procs)
            env = run.Env(tools=tools, tmp=tmp, procs=procs, backends=backends)
            script = tmp / "done.lua"
            script.write_text(run.WRK_DONE_LUA)
            rounds: dict[str, list[dict[str, Any]]] = {s.key: [] for s in SYSTEMS}
            for i in range(args.rounds):
                for system in SYSTEMS:
                    print(f"round {i + 1}: {system.label}", flush=True)
                    rounds[system.key].append(run.measureSystem(system, env, script, args.duration, 1.0))
        finally:
            procs.stopAll()
    figures = {key: {load: run.summarise([r[load] for r in rs]) for load in run.LOADS} for key, rs in rounds.items()}
    print(f"\n{'system':28} {'load':6} {'req/s':>10} {'MiB/s':>8} {'p99 ms':>7} {'CPU us/req':>10} {'errors':>6}")
    for system in SYSTEMS:
        for load in run.LOADS:
            f = figures[system.key][load]
            print(f"{system.label:28} {load:6} {run.fmt(f['rps'], '.0f'):>10} {run.fmt(f['mibps'], '.1f'):>8} "
                  f"{run.fmt(f['p99_ms'], '.2f'):>7} {run.fmt(f['cpu_us_per_req'], '.0f'):>10} "
                  f"{run.fmt(f['errors'], '.0f'):>6}")
    print()
    for load in run.LOADS:
        rps = {key: figures[key][load]["rps"] for key in figures}
        print(f"{load}: lbkit cache hits x HAProxy cache hits {run.ratio(rps['lbkit-cache'], rps['haproxy-cache'])}; "
              f"lbkit cache x lbkit without {run.ratio(rps['lbkit-cache'], rps['lbkit'])}; "
              f"HAProxy cache x HAProxy without {run.ratio(rps['haproxy-cache'], rps['haproxy'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
