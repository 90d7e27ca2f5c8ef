"""
Response compression: what each algorithm and level costs in CPU per MiB
and what it saves, and compressed responses per second through lbkit and
HAProxy, in one run, as ratios (issue 13's benchmark).

    .venv/bin/python bench/compression.py                # both parts
    .venv/bin/python bench/compression.py --levels       # the encoders only
    .venv/bin/python bench/compression.py --wrk --rounds 1 --duration 3

C{--levels}: lbkit's own encoders (L{lbkit.http._compression.Encoder}, fed
256 KiB pieces and flushed after each, as a response flows) on this
repository's text (docs and sources, about 1.3 MB): CPU milliseconds per
MiB of input, and the compressed size in percent.

C{--wrk}: one nginx server sends a 100 KiB text/html page; wrk (C{-c10},
one thread, C{Accept-Encoding} as given) fetches it through HAProxy
without and with C{compression algo gzip}, and through lbkit without and
with C{http.Compression} of each algorithm at its default level, and gzip
at level 1 (HAProxy's default C{tune.comp.maxlevel}; Debian's HAProxy
compresses with libslz, comparable to zlib's level 1).  Prints the median requests
per second, the bytes per response, and the ratio to HAProxy with gzip.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lbkit.http._compression import Encoder, available  # noqa: E402

LEVELS = {"gzip": [1, 4, 6, 9], "br": [0, 1, 3, 4, 5, 6, 9, 11], "zstd": [1, 3, 6, 9, 12, 19]}
PIECE = 2**18


def corpus() -> bytes:
    """This repository's docs and Python sources, concatenated."""
    paths = sorted(REPO.glob("docs/*.md")) + sorted(REPO.glob("lbkit/**/*.py"))
    return b"".join(p.read_bytes() for p in paths)


def levels() -> None:
    data = corpus()
    mib = len(data) / 2**20
    print(f"encoders on {len(data):,} bytes of text, {PIECE // 1024} KiB pieces flushed after each")
    print(f"{'algorithm':<10} {'level':>5} {'CPU ms/MiB':>11} {'MiB/s':>7} {'size %':>7}")
    for algorithm, chosen in LEVELS.items():
        if not available(algorithm):
            print(f"{algorithm:<10} (not installed)")
            continue
        for level in chosen:
            best = float("inf")
            size = 0
            for _ in range(3):
                start = time.process_time()
                encoder = Encoder(algorithm, level)
                size = sum(len(encoder.compress(data[i : i + PIECE])) for i in range(0, len(data), PIECE))
                size += len(encoder.finish())
                best = min(best, time.process_time() - start)
            print(f"{algorithm:<10} {level:>5} {best * 1000 / mib:>11.1f} {mib / best:>7.1f} {100 * size / len(data):>7.1f}",
                  flush=True)


def freePort() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def waitHTTP(port: int, what: str) -> None:
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/page.html", timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} does not answer on {port}")


class Run:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="lbkit-bench-compress-"))
        self.tmp.chmod(0o755)  # nginx's worker (nobody, when run as root) reads the page

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        for p in self.procs:
            self.stop(p)
        shutil.rmtree(self.tmp, ignore_errors=True)


def nginx(run: Run, port: int) -> None:
    root = run.tmp / "www"
    root.mkdir()
    (root / "page.html").write_bytes(corpus()[: 100 * 1024])
    conf = run.tmp / "nginx.conf"
    conf.write_text(
        f"worker_processes 1;\ndaemon off;\npid {run.tmp}/nginx.pid;\nerror_log {run.tmp}/nginx.err;\n"
        f"events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  keepalive_requests 1000000;\n"
        f"  client_body_temp_path {run.tmp}/b; proxy_temp_path {run.tmp}/p; fastcgi_temp_path {run.tmp}/f;\n"
        f"  uwsgi_temp_path {run.tmp}/u; scgi_temp_path {run.tmp}/s;\n"
        f"  types {{ text/html html; }}\n  server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n"
    )
    run.start(["nginx", "-c", str(conf), "-p", str(run.tmp)])
    waitHTTP(port, "nginx")


def haproxy(run: Run, port: int, server: int, gzip: bool) -> subprocess.Popen[bytes]:
    conf = run.tmp / f"haproxy-{port}.cfg"
    compression = "    compression algo gzip\n    compression type text/html\n" if gzip else ""
    conf.write_text(
        "global\n    maxconn 1000\n    nbthread 1\ndefaults\n    mode http\n    timeout connect 5s\n"
        f"    timeout client 30s\n    timeout server 30s\nfrontend fe\n    bind 127.0.0.1:{port}\n{compression}"
        f"    default_backend be\nbackend be\n    server s1 127.0.0.1:{server}\n"
    )
    return run.start(["haproxy", "-db", "-f", str(conf)])


def lbkit(run: Run, port: int, server: int, algorithm: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, LBKIT_BENCH_LISTEN=str(port), LBKIT_BENCH_SERVERS=f"127.0.0.1:{server}",
               LBKIT_BENCH_COMPRESS=algorithm, PYTHONPATH=str(REPO))
    twistd = [sys.executable, "-c", "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]
    return run.start([*twistd, "-n", "--pidfile=", "lbkit", "--config", "bench/sites/compression.py"], env=env)


def wrk(run: Run, port: int, duration: float, accept: str) -> tuple[float, float]:
    script = run.tmp / "bytes.lua"
    script.write_text(
        'done = function(summary, latency, requests)\n'
        '  io.write(string.format("BYTES %d %d\\n", summary.bytes, summary.requests))\nend\n'
    )
    out = subprocess.run(["wrk", "-t1", "-c10", f"-d{duration:g}s", "-H", f"Accept-Encoding: {accept}",
                          "-s", str(script), f"http://127.0.0.1:{port}/page.html"],
                         capture_output=True, text=True).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out), re.search(r"BYTES (\d+) (\d+)", out)
    if found[0] is None or found[1] is None:
        sys.exit(f"wrk gave no result: {out}")
    rps = float(found[0].group(1))
    total, requests = map(int, found[1].groups())
    return rps, total / max(requests, 1)


def wrkPart(rounds: int, duration: float) -> None:
    for tool in ("nginx", "haproxy", "wrk"):
        if shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])) is None:
            sys.exit(f"bench/compression.py --wrk needs {tool}")
    run = Run()
    try:
        server = freePort()
        nginx(run, server)
        systems = [("haproxy", "off"), ("haproxy", "gzip"), ("lbkit", "off"), ("lbkit", "gzip:1"),
                   ("lbkit", "gzip"), ("lbkit", "br"), ("lbkit", "zstd")]
        results: dict[tuple[str, str], list[tuple[float, float]]] = {s: [] for s in systems}
        for r in range(rounds):
            for name, algorithm in systems:
                coding = algorithm.partition(":")[0]
                if not available(coding) and coding != "off":
                    continue
                port = freePort()
                proc = (haproxy(run, port, server, algorithm == "gzip") if name == "haproxy"
                        else lbkit(run, port, server, algorithm))
                waitHTTP(port, name)
                accept = "gzip" if coding == "off" else coding
                rps, size = wrk(run, port, duration, accept)
                results[(name, algorithm)].append((rps, size))
                print(f"round {r + 1}/{rounds}: {name} {algorithm}: {rps:,.0f} req/s, {size:,.0f} bytes/response",
                      flush=True)
                run.stop(proc)
        print(f"\n100 KiB text/html through the proxy (wrk -t1 -c10, {duration:g} s, median of {rounds})")
        reference = statistics.median(r for r, _ in results[("haproxy", "gzip")])
        print(f"{'system':<10} {'coding':<7} {'req/s':>9} {'bytes/resp':>11} {'x HAProxy gzip':>15}")
        for (name, algorithm), rows in results.items():
            if rows:
                rps = statistics.median(r for r, _ in rows)
                size = statistics.median(s for _, s in rows)
                print(f"{name:<10} {algorithm:<7} {rps:>9,.0f} {size:>11,.0f} {rps / reference:>15.2f}")
    finally:
        run.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--levels", action="store_true", help="only the encoders' CPU cost and ratio")
    parser.add_argument("--wrk", action="store_true", help="only the wrk runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    both = not (args.levels or args.wrk)
    if args.levels or both:
        levels()
    if args.wrk or both:
        wrkPart(args.rounds, args.duration)


if __name__ == "__main__":
    main()
