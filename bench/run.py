#!/usr/bin/env python3
"""
lbkit's benchmark: lbkit side by side with HAProxy, nginx and Twisted's own
proxies, all in front of the same two nginx backends on 127.0.0.1.

    .venv/bin/python bench/run.py [--mode tcp|http|all] [--rounds 3] [--duration 8] [--quick]
    .venv/bin/python bench/run.py --mode udp|h3|l7 [--rounds 3] [--duration 8]

Loads (wrk, one thread): C{-c50} on C{/small} (a 13-byte body) and C{-c10}
on C{/big} (1 MiB).  Rounds are interleaved (round 1 runs every system, then
round 2 ...), and each figure printed is the median of the rounds.  See
bench/README.md for how to read the tables.

Standard library only (plus the venv this runs under, for lbkit and
twistd).  Installs nginx, haproxy and wrk from Debian's packages if they
are missing.  Everything it starts is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
PYTHON = sys.executable
TWISTD = str(Path(sys.executable).with_name("twistd"))

SMALL_BODY = b"hello, world\n"  # 13 bytes
BIG_SIZE = 1 << 20  # 1 MiB

#: load name -> (path, connections)
LOADS: dict[str, tuple[str, int]] = {"small": ("/small", 50), "big": ("/big", 10)}

#: wrk's -t (--wrk-threads)
WRK_THREADS = 1

# wrk prints its summary as text, rounded; this script makes it print exact
# figures as one JSON line instead.
WRK_DONE_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\": %d, \"duration_us\": %d, \"bytes\": %d, " ..
    "\"connect\": %d, \"read\": %d, \"write\": %d, \"status\": %d, \"timeout\": %d, " ..
    "\"p50_us\": %d, \"p90_us\": %d, \"p99_us\": %d, \"mean_us\": %f, \"max_us\": %d}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""

# Twisted's own layer-7 proxy: a Site whose root is a ReverseProxyResource.
REVPROXY_PY = r"""
import sys
from twisted.internet import reactor
from twisted.web import proxy, server

port, backendPort = int(sys.argv[1]), int(sys.argv[2])

class QuietSite(server.Site):
    noisy = False
    def log(self, request):
        pass  # no access log, like the other systems

site = QuietSite(proxy.ReverseProxyResource("127.0.0.1", backendPort, b""))
reactor.listenTCP(port, site, interface="127.0.0.1", backlog=1024)
reactor.run()
"""


# The syslog receiver every logging system sends to (UDP on 127.0.0.1): it
# counts datagrams and answers "?count" with the count so far.
SYSLOG_PY = r"""
import socket, sys

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", int(sys.argv[1])))
n = 0
recv, send = s.recvfrom, s.sendto
while True:
    data, peer = recv(65536)
    if data == b"?count":
        send(str(n).encode(), peer)
    else:
        n += 1
"""


# -- tools -----------------------------------------------------------------


def which(name: str) -> str | None:
    return shutil.which(name) or next(
        (
            p
            for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}")
            if os.access(p, os.X_OK)
        ),
        None,
    )


def ensureTools() -> dict[str, str]:
    """Find nginx, haproxy and wrk; install Debian's packages for the missing."""
    wanted = {"nginx": "nginx-light", "haproxy": "haproxy", "wrk": "wrk"}
    missing = [pkg for tool, pkg in wanted.items() if which(tool) is None]
    if missing:
        if os.geteuid() != 0:
            sys.exit(
                f"bench: missing {', '.join(missing)}; install them (apt-get install -y {' '.join(missing)})"
            )
        print(f"bench: installing {' '.join(missing)} ...", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
        if subprocess.run(cmd, env=env).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=True)
            if subprocess.run(cmd, env=env).returncode != 0 and "nginx-light" in missing:
                cmd[cmd.index("nginx-light")] = "nginx"
                subprocess.run(cmd, env=env, check=True)
        # Debian starts the installed services; the benchmark runs its own.
        for service in ("nginx", "haproxy"):
            subprocess.run(
                ["service", service, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
    tools = {}
    for tool in wanted:
        path = which(tool)
        if path is None:
            sys.exit(f"bench: {tool} still missing after the install")
        tools[tool] = path
    return tools


def toolVersions(tools: dict[str, str]) -> dict[str, str]:
    def first(cmd: list[str]) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"? ({e})"
        text = (p.stdout + p.stderr).strip().splitlines()
        return text[0] if text else "?"

    import twisted

    return {
        "nginx": first([tools["nginx"], "-v"]),
        "haproxy": first([tools["haproxy"], "-v"]),
        "wrk": first([tools["wrk"], "-v"]),
        "twisted": twisted.__version__,
        "python": platform.python_version(),
    }


# -- processes -------------------------------------------------------------


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def waitForPort(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """Poll a connect every 50 ms until C{port} accepts or C{proc} dies."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listening on {port} after {timeout:.0f} s") from None
            time.sleep(0.05)


def checkGet(port: int, path: str, expect: bytes | int) -> None:
    """One GET through the system: prove it proxies before measuring it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: status {response.status}")
    if (isinstance(expect, int) and len(body) != expect) or (
        isinstance(expect, bytes) and body != expect
    ):
        raise RuntimeError(f"GET {path}: unexpected body ({len(body)} bytes)")


class Processes:
    """Everything the benchmark started, to stop at the end whatever happens."""

    def __init__(self, logDir: Path) -> None:
        self.logDir = logDir
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.logDir / f"{name}.log", "ab")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=dict(os.environ, **(env or {})),
            start_new_session=True,  # its own process group, stopped as one
        )
        log.close()
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # Workers left in the group (nginx's) go with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.running:
            self.running.remove(proc)

    def stopAll(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.logDir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join("    | " + line for line in text.splitlines()[-lines:])


# -- memory ----------------------------------------------------------------


def treePids(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return pids


def rssKiB(pid: int) -> int:
    """VmRSS of C{pid} and its descendants (nginx: master + worker)."""
    total = 0
    for p in treePids(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total


def cpuSeconds(pid: int) -> float:
    """User + system CPU time of C{pid} and its descendants, in seconds."""
    ticks = 0
    for p in treePids(pid):
        with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def rssSampler(pid: int | None, every: float = 0.5) -> Iterator[list[int]]:
    """Sample the RSS of C{pid}'s tree every C{every} s; yields [max KiB]."""
    peak = [0]
    if pid is None:
        yield peak
        return
    stop = threading.Event()

    def run() -> None:
        while True:
            peak[0] = max(peak[0], rssKiB(pid))
            if stop.wait(every):
                break

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], rssKiB(pid))


# -- wrk -------------------------------------------------------------------


def runWrk(
    wrk: str, script: Path, port: int, path: str, connections: int, duration: int
) -> dict[str, Any]:
    argv = [
        wrk,
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    for line in p.stdout.splitlines():
        if line.startswith("WRKJSON "):
            raw = json.loads(line[len("WRKJSON ") :])
            break
    else:
        raise RuntimeError(
            f"wrk gave no result (status {p.returncode}): {p.stdout[-500:]} {p.stderr[-500:]}"
        )
    seconds = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return {
        "rps": raw["requests"] / seconds,
        "mibps": raw["bytes"] / seconds / (1 << 20),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": errors,
        "raw": raw,
    }


# -- the systems -----------------------------------------------------------


@dataclass
class Env:
    """What every system is given: the tools, the scratch dir, the backends."""

    tools: dict[str, str]
    tmp: Path
    procs: Processes
    backends: list[int]
    #: the UDP syslog receiver's port (SYSLOG_PY)
    syslog: int = 0


@dataclass
class System:
    key: str
    label: str
    modes: tuple[str, ...]
    #: "direct", "haproxy", "python" (the Python peer) or "" (no reference role)
    role: str = ""
    #: builds (argv, env) to start the system listening on a port; None: direct
    command: Callable[[Env, int], tuple[list[str], dict[str, str]]] | None = None
    #: why the system cannot run here, if it cannot
    unavailable: str | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: the loads it runs (the logging systems: small only)
    loads: tuple[str, ...] = tuple(LOADS)
    #: the key of the HAProxy system its "× HAProxy" compares with, when
    #: not plain HAProxy (the one logging to the same kind of destination)
    against: str = ""
    #: the key of the same system with its access log off ("× log off")
    logOff: str = ""
    #: access-log lines written so far, for the "log lines/req" column
    logLines: Callable[[Env], int] | None = None


def nginxCommon(tmp: Path, name: str) -> str:
    temp = tmp / f"{name}-temp"
    temp.mkdir(exist_ok=True)
    return f"""
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.error.log warn;
events {{ worker_connections 4096; }}
"""


def nginxHttpCommon(tmp: Path, name: str) -> str:
    temp = tmp / f"{name}-temp"
    return f"""
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000;
    keepalive_timeout 65;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
"""


def startBackends(
    tools: dict[str, str], tmp: Path, procs: Processes
) -> tuple[list[int], subprocess.Popen[bytes]]:
    """One nginx (1 worker), two server blocks: the two backends."""
    www = tmp / "www"
    www.mkdir()
    (www / "big").write_bytes(os.urandom(BIG_SIZE))
    ports = [freePort(), freePort()]
    while ports[1] == ports[0]:
        ports[1] = freePort()
    servers = "".join(
        f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {www};
        location = /small {{ return 200 "hello, world\\n"; }}
        location = /big {{ default_type application/octet-stream; }}
    }}"""
        for port in ports
    )
    conf = tmp / "backends.conf"
    conf.write_text(
        nginxCommon(tmp, "backends")
        + "http {\n    default_type text/plain;\n"
        + nginxHttpCommon(tmp, "backends")
        + servers
        + "\n}\n"
    )
    proc = procs.start(
        "backends",
        [tools["nginx"], "-p", str(tmp), "-e", str(tmp / "backends.error.log"), "-c", str(conf)],
    )
    for port in ports:
        waitForPort(port, proc)
        checkGet(port, "/small", SMALL_BODY)
        checkGet(port, "/big", BIG_SIZE)
    return ports, proc


def syslogCount(env: Env) -> int:
    """Datagrams the syslog receiver has had so far."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"?count", ("127.0.0.1", env.syslog))
        return int(s.recv(64))


def fileLines(name: str) -> Callable[[Env], int]:
    """Lines in the scratch file C{name} so far."""

    def count(env: Env) -> int:
        try:
            with open(env.tmp / name, "rb") as f:
                return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except FileNotFoundError:
            return 0

    return count


def startSyslog(env: Env) -> None:
    env.syslog = freePort()
    proc = env.procs.start("syslog", [PYTHON, "-c", SYSLOG_PY, str(env.syslog)])
    for _ in range(100):
        try:
            syslogCount(env)
            return
        except (OSError, ValueError):
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    raise RuntimeError(f"the syslog receiver did not start:\n{env.procs.tail('syslog')}")


def lbkitCommand(
    site: str,
    reactor: str | None = None,
    extraEnv: dict[str, str] | None = None,
    accessLog: Callable[[Env], str] | None = None,
    workers: int = 0,
) -> Callable[[Env, int], tuple[list[str], dict[str, str]]]:
    """
    @param accessLog: Gives the C{--access-log} destination; the frontend
        then logs (LBKIT_BENCH_LOG=1).
    @param workers: C{--workers N} when positive (a supervisor and N
        worker processes); 0: one process, no supervisor.
    """

    def command(env: Env, port: int) -> tuple[list[str], dict[str, str]]:
        chosen = [f"--reactor={reactor}"] if reactor else []
        logs = ["--access-log", accessLog(env)] if accessLog is not None else []
        many = ["--workers", str(workers)] if workers else []
        argv = [
            TWISTD, *chosen, "-n", "--pidfile=", "lbkit", "--config", str(HERE / "sites" / site), *many, *logs,
        ]
        servers = ",".join(f"127.0.0.1:{p}" for p in env.backends)
        siteEnv = {"LBKIT_BENCH_LISTEN": str(port), "LBKIT_BENCH_SERVERS": servers}
        if accessLog is not None:
            siteEnv["LBKIT_BENCH_LOG"] = "1"
        return argv, {**siteEnv, **(extraEnv or {})}

    return command


def haproxyCommand(
    mode: str, log: str = "", nbthread: int = 1
) -> Callable[[Env, int], tuple[list[str], dict[str, str]]]:
    """
    @param log: C{"syslog"}: C{option httplog} (C{tcplog}) to the UDP
        receiver; C{"stdout"}: the same lines on standard output, which
        the benchmark writes to a file; C{""}: no log.
    @param nbthread: HAProxy's C{nbthread}.
    """

    def command(env: Env, port: int) -> tuple[list[str], dict[str, str]]:
        http = mode == "http"
        servers = "".join(f"    server s{i} 127.0.0.1:{p}\n" for i, p in enumerate(env.backends, 1))
        conf = env.tmp / f"haproxy-{mode}{'-' + log if log else ''}-t{nbthread}.cfg"
        target = {"syslog": f"127.0.0.1:{env.syslog}", "stdout": "stdout format raw"}.get(log)
        logging = (
            f"    log {target} local0 info\n    option {'httplog' if http else 'tcplog'}\n"
            if target
            else ""
        )
        conf.write_text(
            f"""global
    nbthread {nbthread}
    maxconn 4096

defaults
    mode {mode}
{"    option http-keep-alive" + chr(10) + "    http-reuse always" + chr(10) if http else ""}\
    timeout connect 5s
    timeout client 30s
    timeout server 30s
{"    timeout http-keep-alive 30s" + chr(10) if http else ""}{logging}
frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    balance roundrobin
{servers}"""
        )
        return [env.tools["haproxy"], "-db", "-f", str(conf)], {}

    return command


def portforwardCommand(env: Env, port: int) -> tuple[list[str], dict[str, str]]:
    return [
        TWISTD,
        "-n",
        "--pidfile=",
        "portforward",
        "-p",
        f"tcp:{port}:interface=127.0.0.1",
        "-h",
        "127.0.0.1",
        "-d",
        str(env.backends[0]),
    ], {}


def nginxProxyCommand(env: Env, port: int) -> tuple[list[str], dict[str, str]]:
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in env.backends)
    conf = env.tmp / "nginx-proxy.conf"
    conf.write_text(
        nginxCommon(env.tmp, "nginx-proxy")
        + "http {\n"
        + nginxHttpCommon(env.tmp, "nginx-proxy")
        + f"""
    upstream be {{
{servers}        keepalive 64;
        keepalive_requests 100000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    )
    log = env.tmp / "nginx-proxy.error.log"
    return [env.tools["nginx"], "-p", str(env.tmp), "-e", str(log), "-c", str(conf)], {}


def floorCommand(env: Env, port: int) -> tuple[list[str], dict[str, str]]:
    return [PYTHON, str(HERE / "floor.py"), str(port), ",".join(str(p) for p in env.backends)], {}


def revproxyCommand(env: Env, port: int) -> tuple[list[str], dict[str, str]]:
    return [PYTHON, "-c", REVPROXY_PY, str(port), str(env.backends[0])], {}


def lbkitHttpAvailable() -> str | None:
    """Why lbkit's http mode cannot be benchmarked yet, or None if it can."""
    try:
        if importlib.util.find_spec("lbkit.http") is None:
            return "lbkit.http does not exist yet"
        module = importlib.import_module("lbkit.http")
    except Exception as e:
        return f"lbkit.http cannot be imported: {e!r}"
    if not hasattr(module, "Frontend"):
        return "lbkit.http has no Frontend yet"
    return None


def workerSystems(counts: list[int]) -> list[System]:
    """
    The C{--workers} systems: lbkit with C{--workers N} and HAProxy with
    C{nbthread N}, for each N (N = 1 for lbkit: a supervisor and one
    worker, to set against the single process).
    """
    systems = []
    for mode in ("tcp", "http"):
        unavailable = lbkitHttpAvailable() if mode == "http" else None
        for n in counts:
            systems.append(
                System(
                    f"lbkit-{mode}-w{n}",
                    f"lbkit {mode} --workers {n}",
                    (mode,),
                    command=lbkitCommand(f"{mode}.py", workers=n),
                    unavailable=unavailable,
                    loads=("small",),
                    against=f"haproxy-{mode}-t{n}" if n > 1 else "",
                )
            )
        for n in counts:
            if n > 1:
                systems.append(
                    System(
                        f"haproxy-{mode}-t{n}",
                        f"HAProxy mode {mode} nbthread {n}",
                        (mode,),
                        command=haproxyCommand(mode, nbthread=n),
                        loads=("small",),
                    )
                )
    return systems


def allSystems() -> list[System]:
    return [
        System("direct", "direct (nginx backend 1)", ("tcp", "http"), "direct"),
        System("lbkit-tcp", "lbkit tcp", ("tcp",), command=lbkitCommand("tcp.py")),
        System(
            "lbkit-tcp-splice",
            "lbkit tcp splice=True",
            ("tcp",),
            command=lbkitCommand("tcp.py", extraEnv={"LBKIT_SPLICE": "1"}),
        ),
        System(
            "lbkit-tcp-epoll",
            "lbkit tcp, --reactor=epoll (Twisted's)",
            ("tcp",),
            command=lbkitCommand("tcp.py", "epoll"),
        ),
        System("haproxy-tcp", "HAProxy mode tcp", ("tcp",), "haproxy", haproxyCommand("tcp")),
        System(
            "lbkit-tcp-log-syslog",
            "lbkit tcp, log to UDP syslog",
            ("tcp",),
            command=lbkitCommand("tcp.py", accessLog=lambda env: f"syslog:127.0.0.1:{env.syslog}"),
            loads=("small",),
            against="haproxy-tcp-log-syslog",
            logOff="lbkit-tcp",
            logLines=syslogCount,
        ),
        System(
            "haproxy-tcp-log-syslog",
            "HAProxy tcp, tcplog to UDP syslog",
            ("tcp",),
            command=haproxyCommand("tcp", "syslog"),
            loads=("small",),
            against="haproxy-tcp-log-syslog",
            logOff="haproxy-tcp",
            logLines=syslogCount,
        ),
        System(
            "portforward", "twistd portforward (1 backend)", ("tcp",), "python", portforwardCommand
        ),
        System(
            "lbkit-http",
            "lbkit http",
            ("http",),
            command=lbkitCommand("http.py"),
            unavailable=lbkitHttpAvailable(),
        ),
        System(
            "lbkit-http-epoll",
            "lbkit http, --reactor=epoll (Twisted's)",
            ("http",),
            command=lbkitCommand("http.py", "epoll"),
            unavailable=lbkitHttpAvailable(),
        ),
        System("haproxy-http", "HAProxy mode http", ("http",), "haproxy", haproxyCommand("http")),
        # the floor of any Twisted proxy: reactor, transports and ~20 calls a request
        System("twisted-floor", "Twisted floor proxy (bench/floor.py)", ("http",), command=floorCommand),
        # with the access log on: lbkit to a file and to UDP syslog, HAProxy
        # option httplog to the same receiver and to stdout (into a file)
        System(
            "lbkit-http-log-file",
            "lbkit http, log to a file",
            ("http",),
            command=lbkitCommand("http.py", accessLog=lambda env: str(env.tmp / "lbkit-http-access.log")),
            unavailable=lbkitHttpAvailable(),
            loads=("small",),
            against="haproxy-http-log-file",
            logOff="lbkit-http",
            logLines=fileLines("lbkit-http-access.log"),
        ),
        System(
            "lbkit-http-log-syslog",
            "lbkit http, log to UDP syslog",
            ("http",),
            command=lbkitCommand("http.py", accessLog=lambda env: f"syslog:127.0.0.1:{env.syslog}"),
            unavailable=lbkitHttpAvailable(),
            loads=("small",),
            against="haproxy-http-log-syslog",
            logOff="lbkit-http",
            logLines=syslogCount,
        ),
        System(
            "haproxy-http-log-file",
            "HAProxy http, httplog to stdout (a file)",
            ("http",),
            command=haproxyCommand("http", "stdout"),
            loads=("small",),
            against="haproxy-http-log-file",
            logOff="haproxy-http",
            logLines=fileLines("haproxy-http-log-file.log"),
        ),
        System(
            "haproxy-http-log-syslog",
            "HAProxy http, httplog to UDP syslog",
            ("http",),
            command=haproxyCommand("http", "syslog"),
            loads=("small",),
            against="haproxy-http-log-syslog",
            logOff="haproxy-http",
            logLines=syslogCount,
        ),
        System("nginx-proxy", "nginx proxy_pass keepalive", ("http",), command=nginxProxyCommand),
        System(
            "revproxy", "ReverseProxyResource (1 backend)", ("http",), "python", revproxyCommand
        ),
    ]


# -- running ---------------------------------------------------------------


def measureSystem(
    system: System, env: Env, wrkScript: Path, duration: int, warmup: float
) -> dict[str, dict[str, Any]]:
    """Start C{system}, run every load against it, stop it."""
    proc = None
    if system.command is None:
        port = env.backends[0]
    else:
        port = freePort()
        argv, extraEnv = system.command(env, port)
        proc = env.procs.start(system.key, argv, extraEnv)
    try:
        if proc is not None:
            try:
                waitForPort(port, proc)
                checkGet(port, "/small", SMALL_BODY)
                checkGet(port, "/big", BIG_SIZE)
            except Exception as e:
                raise RuntimeError(
                    f"{system.label} did not start: {e}\n{env.procs.tail(system.key)}"
                ) from None
        if warmup:
            runWrk(env.tools["wrk"], wrkScript, port, "/small", 10, max(1, int(warmup)))
        results = {}
        for load in system.loads:
            path, connections = LOADS[load]
            lines0 = system.logLines(env) if system.logLines is not None else 0
            cpu0 = cpuSeconds(proc.pid) if proc is not None else 0.0
            with rssSampler(proc.pid if proc is not None else None) as peak:
                result = runWrk(env.tools["wrk"], wrkScript, port, path, connections, duration)
            if system.logLines is not None:
                time.sleep(0.5)  # lbkit flushes its buffers every 0.2 s
                logged = system.logLines(env) - lines0
                requests = result["raw"]["requests"]
                result["log_lines_per_req"] = logged / requests if requests else None
            if proc is not None:
                result["rss_mib"] = peak[0] / 1024
                cpu = cpuSeconds(proc.pid) - cpu0
                requests = result["raw"]["requests"]
                result["cpu_s"] = cpu
                result["cpu_us_per_req"] = cpu / requests * 1e6 if requests else None
            else:
                result["rss_mib"] = result["cpu_s"] = result["cpu_us_per_req"] = None
            if proc is not None and proc.poll() is not None:
                result["crashed"] = proc.returncode
            results[load] = result
        return results
    finally:
        if proc is not None:
            if proc.poll() is not None:
                print(
                    f"  ! {system.label} exited with status {proc.returncode}:\n{env.procs.tail(system.key)}"
                )
            env.procs.stop(proc)


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each figure over the rounds that produced one."""
    out: dict[str, Any] = {"rounds": len(rounds)}
    for key in ("rps", "mibps", "p50_ms", "p99_ms", "rss_mib", "cpu_us_per_req", "log_lines_per_req"):
        out[key] = median([r.get(key) for r in rounds])
    out["errors"] = sum(r.get("errors", 0) for r in rounds)
    return out


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "–"
    return f"{a / b:.2f}"


def fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def printTable(
    mode: str, load: str, systems: list[System], medians: dict[str, dict[str, Any]]
) -> list[str]:
    path, connections = LOADS[load]
    lines = [
        f"\n{mode} mode, {load}: wrk -t{WRK_THREADS} -c{connections} {path}  (median of rounds; ratios of req/s)"
    ]
    header = [
        "system",
        "req/s",
        "MiB/s",
        "p50 ms",
        "p99 ms",
        "RSS MiB",
        "CPU µs/req",
        "errors",
        "log lines/req",
        "× direct",
        "× HAProxy",
        "× log off",
        "× Python peer",
    ]
    refs = {s.role: medians.get(s.key, {}).get(load, {}).get("rps") for s in systems if s.role}

    def rpsOf(key: str) -> float | None:
        return medians.get(key, {}).get(load, {}).get("rps") if key else None

    rows = []
    for s in systems:
        if load not in s.loads:
            continue
        m = medians.get(s.key, {}).get(load)
        if m is None:
            rows.append([s.label, s.unavailable or "failed"] + [""] * (len(header) - 2))
            continue
        rps = m["rps"]
        rows.append(
            [
                s.label,
                fmt(rps, ",.0f"),
                fmt(m["mibps"], ",.1f"),
                fmt(m["p50_ms"], ".2f"),
                fmt(m["p99_ms"], ".2f"),
                fmt(m["rss_mib"], ".1f"),
                fmt(m["cpu_us_per_req"], ".1f"),
                str(m["errors"]),
                fmt(m.get("log_lines_per_req"), ".2f"),
                ratio(rps, refs.get("direct")),
                ratio(rps, rpsOf(s.against) if s.against else refs.get("haproxy")),
                ratio(rps, rpsOf(s.logOff)),
                ratio(rps, refs.get("python")),
            ]
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    lines.append(line(header))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(line(r) for r in rows)
    print("\n".join(lines), flush=True)
    return lines


#: What C{--mode l7} runs: (title, script, extra arguments).
L7_PARTS = (
    ("compressed responses: lbkit vs HAProxy compression algo gzip", "compression.py", ("--wrk",)),
    ("cache hits: lbkit vs HAProxy cache", "cache.py", ()),
    ("HTTP/2 (h2c) to servers vs HTTP/1.1 to servers", "h2up.py", ()),
)


def runL7(rounds: int, duration: int) -> int:
    """
    Issue 13's benchmark in one run: each part's script in turn, its
    ratio table printed as it ends.  Returns the first non-zero exit
    status, else 0 (a part that fails does not stop the others).
    """
    status = 0
    for title, name, extra in L7_PARTS:
        print(f"\n=== l7: {title} ({' '.join([f'bench/{name}', *extra])}) ===", flush=True)
        argv = [sys.executable, str(HERE / name), *extra, "--rounds", str(rounds), "--duration", str(duration)]
        code = subprocess.call(argv)
        if code:
            print(f"bench: bench/{name} exited with status {code}", flush=True)
            status = status or code
    return status


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mode",
        choices=["tcp", "http", "all", "udp", "h3", "l7"],
        default="all",
        help="udp runs bench/udp.py (DNS through lbkit and nginx stream); h3 runs bench/h3.py "
        "(HTTP/3, HTTP/2, HTTP/1.1 through one lbkit TLS frontend); l7 runs bench/compression.py "
        "--wrk, bench/cache.py and bench/h2up.py one after another (issue 13's ratios)",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--duration", type=int, default=None, help="seconds per wrk run (default 8; 3 with --quick)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="no warm-up or settle pauses; 1 round of 3 s unless told",
    )
    parser.add_argument(
        "--only", default="", help="comma-separated system keys to run (the references are kept)"
    )
    parser.add_argument(
        "--workers",
        default="",
        help="comma-separated worker counts (e.g. 1,2): adds lbkit --workers N and "
        "HAProxy nbthread N systems on the small load",
    )
    parser.add_argument(
        "--wrk-threads", type=int, default=1, help="wrk -t (default 1)"
    )
    parser.add_argument(
        "--out", default=None, help="JSON results file (default bench/out/results-<mode>.json)"
    )
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    duration = args.duration or (3 if args.quick else 8)
    if args.mode in ("udp", "h3"):
        script = HERE / f"{args.mode}.py"
        return subprocess.call([sys.executable, str(script), "--rounds", str(rounds), "--duration", str(duration)])
    if args.mode == "l7":
        return runL7(rounds, duration)
    warmup = 0.0 if args.quick else 1.0
    settle = 0.0 if args.quick else 1.0
    modes = ["tcp", "http"] if args.mode == "all" else [args.mode]

    counts = [int(n) for n in args.workers.split(",") if n]
    if any(n < 1 for n in counts):
        parser.error("--workers takes positive counts")
    global WRK_THREADS
    WRK_THREADS = args.wrk_threads
    systems = [s for s in allSystems() + workerSystems(counts) if any(m in modes for m in s.modes)]
    if args.only:
        wanted = set(args.only.split(","))
        # a logging system brings the systems its ratios compare with
        wanted |= {k for s in systems if s.key in wanted for k in (s.against, s.logOff) if k}
        systems = [s for s in systems if s.key in wanted or s.role]
    for s in systems:
        if s.unavailable:
            print(f"bench: skipping {s.label}: {s.unavailable}")
    runnable = [s for s in systems if not s.unavailable]

    # Ctrl-C and SIGTERM both end in the finally below.
    def onTerm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, onTerm)
    signal.signal(signal.SIGINT, onTerm)  # even where it was inherited ignored

    tools = ensureTools()
    versions = toolVersions(tools)
    tmp = Path(tempfile.mkdtemp(prefix="lbkit-bench-"))
    tmp.chmod(0o755)  # nginx's workers run as nobody when we are root
    procs = Processes(tmp)
    perRound: dict[str, dict[str, list[dict[str, Any]]]] = {
        s.key: {load: [] for load in s.loads} for s in runnable
    }
    failures: dict[str, str] = {}
    started = time.time()
    print(
        f"bench: modes {'+'.join(modes)}, {rounds} round(s) of {duration} s per load, "
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    print("bench: " + "; ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    interrupted = False
    try:
        backends, _ = startBackends(tools, tmp, procs)
        env = Env(tools, tmp, procs, backends)
        if any(s.logLines is syslogCount for s in runnable):
            startSyslog(env)
            print(f"bench: UDP syslog receiver on {env.syslog}", flush=True)
        wrkScript = tmp / "done.lua"
        wrkScript.write_text(WRK_DONE_LUA)
        print(
            f"bench: nginx backends on {backends[0]} and {backends[1]}; scratch {tmp}", flush=True
        )
        for n in range(1, rounds + 1):
            for s in runnable:
                print(f"round {n}/{rounds}: {s.label} ...", end=" ", flush=True)
                try:
                    results = measureSystem(s, env, wrkScript, duration, warmup)
                except KeyboardInterrupt:
                    raise
                except Exception as e:
                    failures[s.key] = str(e)
                    print(f"FAILED\n  ! {e}", flush=True)
                    continue
                for load, r in results.items():
                    perRound[s.key][load].append(r)
                print(
                    "  ".join(
                        f"{load} {r['rps']:,.0f} req/s {r['mibps']:,.1f} MiB/s"
                        + (f" {r['errors']} errors" if r["errors"] else "")
                        + (f" CRASHED({r['crashed']})" if "crashed" in r else "")
                        for load, r in results.items()
                    ),
                    flush=True,
                )
                if settle:
                    time.sleep(settle)
    except KeyboardInterrupt:
        interrupted = True
        print("\nbench: interrupted; stopping everything", flush=True)
    finally:
        procs.stopAll()
        shutil.rmtree(tmp, ignore_errors=True)

    medians = {
        key: {load: summarise(rs) for load, rs in loads.items() if rs}
        for key, loads in perRound.items()
    }
    tables = []
    for mode in modes:
        modeSystems = [s for s in systems if mode in s.modes]
        for load in LOADS:
            tables.extend(printTable(mode, load, modeSystems, medians))
    for key, why in failures.items():
        print(f"bench: {key} failed in at least one round: {why.splitlines()[0]}")

    OUT.mkdir(exist_ok=True)
    outPath = Path(args.out) if args.out else OUT / f"results-{args.mode}.json"
    outPath.write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                "seconds": round(time.time() - started, 1),
                "interrupted": interrupted,
                "machine": {
                    "cpus": os.cpu_count(),
                    "loadavg_end": os.getloadavg(),
                    "platform": platform.platform(),
                },
                "versions": versions,
                "rounds": rounds,
                "duration": duration,
                "loads": {k: {"path": p, "connections": c} for k, (p, c) in LOADS.items()},
                "systems": {
                    s.key: {
                        "label": s.label,
                        "modes": s.modes,
                        "role": s.role,
                        "unavailable": s.unavailable,
                    }
                    for s in systems
                },
                "median": medians,
                "perRound": perRound,
                "failures": failures,
                "tables": tables,
            },
            indent=1,
        )
    )
    print(
        f"\nbench: results in {outPath.relative_to(ROOT) if outPath.is_relative_to(ROOT) else outPath}"
    )
    return 130 if interrupted else (1 if failures else 0)


if __name__ == "__main__":
    sys.exit(main())
