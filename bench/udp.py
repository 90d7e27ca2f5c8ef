"""
DNS queries per second through lbkit's UDP frontend and through nginx's
C{stream} UDP proxy, in one run, as ratios (issue 14's benchmark).

    .venv/bin/python bench/udp.py                 # 3 rounds of 5 s
    .venv/bin/python bench/udp.py --rounds 1 --duration 3

Two dnsmasq servers on 127.0.0.1 answer an A record; dnsperf (Debian's
C{dnsperf}) sends the same query file at each system with 20 queries in
flight from 4 client sockets (so there are sessions to balance), for the
duration; each system balances round robin over both dnsmasq servers, one
session per query (lbkit C{responses=1}, nginx C{proxy_responses 1}).
C{direct} is dnsperf straight to dnsmasq 1: the limit. It prints the median
queries per second of each system, its ratio to nginx, and the share of
queries lost. Needs dnsmasq, dnsperf and nginx's stream module (Debian's
C{libnginx-mod-stream}); as root it installs what is missing.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
NAME = "bench.example.test"


def need() -> None:
    missing = []
    if shutil.which("dnsmasq", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])) is None:
        missing.append("dnsmasq")
    if shutil.which("dnsperf") is None:
        missing.append("dnsperf")
    if shutil.which("nginx") is None:
        missing.append("nginx-light")
    if not os.path.exists(STREAM_MODULE):
        missing.append("libnginx-mod-stream")
    if missing:
        if os.geteuid() != 0:
            sys.exit(f"bench/udp.py needs: apt-get install {' '.join(missing)}")
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), stdout=subprocess.DEVNULL)


def freeUDP() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def dnsAnswers(port: int) -> bool:
    query = bytes.fromhex("abcd01000001000000000000") + b"".join(
        bytes([len(p)]) + p.encode() for p in NAME.split(".")) + b"\x00\x00\x01\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    try:
        s.sendto(query, ("127.0.0.1", port))
        return s.recv(512)[:2] == b"\xab\xcd"
    except OSError:
        return False
    finally:
        s.close()


def waitAnswers(port: int, what: str) -> None:
    for _ in range(100):
        if dnsAnswers(port):
            return
        time.sleep(0.05)
    sys.exit(f"{what} does not answer DNS on udp {port}")


class Run:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tmp = tempfile.mkdtemp(prefix="lbkit-bench-udp-")

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


def dnsmasq(run: Run, port: int) -> None:
    binary = shutil.which("dnsmasq", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    assert binary is not None
    run.start([binary, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
               "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={port}", "--pid-file=",
               "--user=root" if os.geteuid() == 0 else f"--user={os.environ.get('USER', 'nobody')}",
               "--local=/example.test/", "--cache-size=0", f"--host-record={NAME},127.0.0.7"])
    waitAnswers(port, f"dnsmasq on {port}")


def nginx(run: Run, port: int, servers: list[int]) -> subprocess.Popen[bytes]:
    conf = Path(run.tmp) / "nginx.conf"
    upstream = "".join(f"    server 127.0.0.1:{s};\n" for s in servers)
    conf.write_text(
        f"load_module {STREAM_MODULE};\nworker_processes 1;\ndaemon off;\npid {run.tmp}/nginx.pid;\n"
        f"error_log {run.tmp}/nginx.err;\nevents {{ worker_connections 4096; }}\n"
        f"stream {{\n  upstream dns {{\n{upstream}  }}\n"
        f"  server {{ listen 127.0.0.1:{port} udp; proxy_pass dns; proxy_responses 1; proxy_timeout 5s; }}\n}}\n"
    )
    return run.start(["nginx", "-c", str(conf), "-p", run.tmp])


def lbkit(run: Run, port: int, servers: list[int]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, LBKIT_BENCH_LISTEN=str(port),
               LBKIT_BENCH_SERVERS=",".join(f"127.0.0.1:{s}" for s in servers))
    twistd = [sys.executable, "-c", "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]
    return run.start([*twistd, "-n", "--pidfile=", "lbkit", "--config", "bench/sites/udp.py"], env=env)


def dnsperf(port: int, duration: float, queries: Path) -> tuple[float, float]:
    out = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(duration),
         "-c", "4", "-q", "20", "-t", "2"],
        capture_output=True, text=True,
    ).stdout
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lost = float(re.search(r"Queries lost:\s+\d+ \(([\d.]+)%\)", out).group(1))  # type: ignore[union-attr]
    return qps, lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    need()
    run = Run()
    try:
        queries = Path(run.tmp) / "queries"
        queries.write_text(f"{NAME} A\n" * 100)
        servers = [freeUDP(), freeUDP()]
        for s in servers:
            dnsmasq(run, s)
        results: dict[str, list[tuple[float, float]]] = {"direct": [], "nginx": [], "lbkit": []}
        for r in range(args.rounds):
            for name in ("direct", "nginx", "lbkit"):
                proc = None
                if name == "direct":
                    port = servers[0]
                else:
                    port = freeUDP()
                    proc = (nginx if name == "nginx" else lbkit)(run, port, servers)
                    waitAnswers(port, name)
                qps, lost = dnsperf(port, args.duration, queries)
                results[name].append((qps, lost))
                print(f"round {r + 1}/{args.rounds}: {name}: {qps:,.0f} queries/s, {lost:.2f} % lost", flush=True)
                if proc is not None:
                    run.stop(proc)
        print(f"\nudp, DNS through the proxy (dnsperf -c4 -q20, {args.duration:g} s, median of {args.rounds})")
        nginxQps = statistics.median(q for q, _ in results["nginx"])
        print(f"{'system':<8} {'queries/s':>11} {'lost %':>7} {'× nginx':>8}")
        for name, rows in results.items():
            qps = statistics.median(q for q, _ in rows)
            lost = statistics.median(lo for _, lo in rows)
            print(f"{name:<8} {qps:>11,.0f} {lost:>7.2f} {qps / nginxQps:>8.2f}")
    finally:
        run.close()


if __name__ == "__main__":
    main()
