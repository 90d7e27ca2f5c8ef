"""
HTTP/2 to servers against HTTP/1.1 to servers, in one run (issue 13):
one nginx (1 worker) serves the same /small and /big on two ports, one
HTTP/1.1 and one cleartext HTTP/2 (prior knowledge); lbkit runs
bench/sites/http_h2up.py in front of each in turn (C{proto=None}, then
C{proto="h2c"}), and wrk drives it with HTTP/1.1 as bench/run.py does
(-c50 on /small, -c10 on /big).  Rounds are interleaved; the table shows
medians and the h2c / HTTP/1.1 ratio.

    .venv/bin/python bench/h2up.py [--rounds 3] [--duration 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    LOADS,
    TWISTD,
    WRK_DONE_LUA,
    Processes,
    checkGet,
    ensureTools,
    freePort,
    median,
    nginxCommon,
    nginxHttpCommon,
    runWrk,
    waitForPort,
)

HERE = Path(__file__).resolve().parent


def startNginx(tools: dict[str, str], tmp: Path, procs: Processes) -> tuple[int, int]:
    """One nginx, two server blocks with the same content: HTTP/1.1 and h2c."""
    www = tmp / "www"
    www.mkdir()
    (www / "big").write_bytes(b"x" * (1 << 20))
    h1, h2c = freePort(), freePort()
    servers = "".join(
        f"""
    server {{
        listen 127.0.0.1:{port}{flag} backlog=4096;
        http2_max_concurrent_streams 128;
        root {www};
        location = /small {{ return 200 "hello, world\\n"; }}
        location = /big {{ default_type application/octet-stream; }}
    }}"""
        for port, flag in ((h1, ""), (h2c, " http2"))
    )
    conf = tmp / "nginx.conf"
    conf.write_text(nginxCommon(tmp, "nginx") + "http {\n    default_type text/plain;\n"
                    + nginxHttpCommon(tmp, "nginx") + servers + "\n}\n")
    proc = procs.start("nginx", [tools["nginx"], "-p", str(tmp), "-e", str(tmp / "nginx.error.log"), "-c", str(conf)])
    waitForPort(h1, proc)
    waitForPort(h2c, proc)
    checkGet(h1, "/small", b"hello, world\n")
    return h1, h2c


def measure(tools: dict[str, str], procs: Processes, script: Path, backend: int, proto: str,
            duration: int) -> dict[str, Any]:
    port = freePort()
    env = {"LBKIT_BENCH_LISTEN": str(port), "LBKIT_BENCH_SERVERS": f"127.0.0.1:{backend}",
           "LBKIT_BENCH_PROTO": proto, "PYTHONPATH": str(HERE.parent)}  # this checkout's lbkit
    name = f"lbkit-{proto or 'h1'}"
    proc = procs.start(name, [TWISTD, "-n", "--pidfile=", "lbkit", "--config",
                              str(HERE / "sites" / "http_h2up.py")], env)
    try:
        waitForPort(port, proc)
        checkGet(port, "/small", b"hello, world\n")
        checkGet(port, "/big", 1 << 20)
        out = {}
        for load, (path, connections) in LOADS.items():
            out[load] = runWrk(tools["wrk"], script, port, path, connections, duration)
        return out
    finally:
        procs.stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8)
    args = parser.parse_args()
    tools = ensureTools()
    with tempfile.TemporaryDirectory(prefix="lbkit-h2up-") as name:
        tmp = Path(name)
        tmp.chmod(0o755)  # nginx's workers run as nobody when we are root
        procs = Processes(tmp)
        try:
            h1, h2c = startNginx(tools, tmp, procs)
            script = tmp / "done.lua"
            script.write_text(WRK_DONE_LUA)
            results: dict[str, list[dict[str, Any]]] = {"h1": [], "h2c": []}
            for n in range(1, args.rounds + 1):
                for key, backend, proto in (("h1", h1, ""), ("h2c", h2c, "h2c")):
                    print(f"round {n}/{args.rounds}: lbkit to servers over {key} ...", flush=True)
                    results[key].append(measure(tools, procs, script, backend, proto, args.duration))
        finally:
            procs.stopAll()
    print()
    print("| load | HTTP/1.1 to servers | h2c to servers | h2c / HTTP/1.1 | errors (h1, h2c) |")
    print("|---|---:|---:|---:|---|")
    for load, (path, connections) in LOADS.items():
        unit = "mibps" if load == "big" else "rps"
        a = median([r[load][unit] for r in results["h1"]])
        b = median([r[load][unit] for r in results["h2c"]])
        errors = (sum(r[load]["errors"] for r in results["h1"]), sum(r[load]["errors"] for r in results["h2c"]))
        label = "MiB/s" if unit == "mibps" else "req/s"
        ratio = f"{b / a:.2f}" if a and b else "-"
        print(f"| {load} (wrk -c{connections} {path}) | {a:,.0f} {label} | {b:,.0f} {label} | {ratio} | {errors} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
