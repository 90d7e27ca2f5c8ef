"""
HTTP/3, HTTP/2 and HTTP/1.1 request rates through one lbkit TLS frontend
(C{http.Frontend(..., tls=..., http3=True)}), in one run (issue 14's
benchmark).

    .venv/bin/python bench/h3.py                  # 3 rounds of 5 s
    .venv/bin/python bench/h3.py --rounds 1 --duration 3

One nginx (the same two small-response servers as bench/run.py) behind a
round-robin backend; lbkit with no access log.  No C load generator this
machine can install speaks HTTP/3 (Debian's curl and h2load are built
without it), so each protocol is driven by a Python asyncio client of the
same shape, in its own process: HTTP/3 with aioquic (one QUIC connection,
C{--streams} requests in flight), HTTP/2 with the h2 library (one TLS
connection, the same number of streams), HTTP/1.1 over C{--streams} TLS
keep-alive connections.  Those clients cost about as much CPU per request
as lbkit does, so the request rate is the client's as much as lbkit's: the
figure to compare is lbkit's own CPU time per request (utime + stime of the
twistd process over the measured seconds), printed beside it.  When h2load
(Debian's C{nghttp2-client}; installed when run as root) is there, HTTP/2 and HTTP/1.1 are also
run with it, a C client, for the rate lbkit reaches when the client is not
the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as benchrun  # noqa: E402  (bench/run.py: nginx backends, process handling)

REPO = BENCH.parent
PATH = "/small"


# -- the clients (each runs in its own process: python bench/h3.py --client ...) --


async def clientH1(port: int, streams: int, duration: float) -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    request = f"GET {PATH} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    done = 0
    deadline = time.monotonic() + duration

    async def one() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            await reader.readexactly(int(match.group(1)) if match else 0)
            done += 1
        writer.close()

    await asyncio.gather(*(one() for _ in range(streams)))
    return done


async def clientH2(port: int, streams: int, duration: float) -> int:
    import h2.config
    import h2.connection
    import h2.events

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    conn.increment_flow_control_window(2**30)
    headers = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", PATH.encode())]
    deadline = time.monotonic() + duration
    done = 0
    inFlight = 0

    def send() -> None:
        nonlocal inFlight
        conn.send_headers(conn.get_next_available_stream_id(), headers, end_stream=True)
        inFlight += 1

    for _ in range(streams):
        send()
    writer.write(conn.data_to_send())
    while inFlight:
        data = await reader.read(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                done += 1
                inFlight -= 1
                if time.monotonic() < deadline:
                    send()
        writer.write(conn.data_to_send())
    writer.close()
    return done


async def clientH3(port: int, streams: int, duration: float) -> int:
    from aioquic.asyncio.client import connect
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import DataReceived, HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration

    deadline = time.monotonic() + duration
    finished = asyncio.get_running_loop().create_future()
    counts = {"done": 0, "inFlight": 0}
    headers = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", PATH.encode())]

    class Client(QuicConnectionProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.h3 = H3Connection(self._quic)

        def send(self) -> None:
            self.h3.send_headers(self._quic.get_next_available_stream_id(), headers, end_stream=True)
            counts["inFlight"] += 1

        def quic_event_received(self, event: Any) -> None:
            for h3event in self.h3.handle_event(event):
                if isinstance(h3event, (HeadersReceived, DataReceived)) and h3event.stream_ended:
                    counts["done"] += 1
                    counts["inFlight"] -= 1
                    if time.monotonic() < deadline:
                        self.send()
                    elif counts["inFlight"] == 0 and not finished.done():
                        finished.set_result(None)
            self.transmit()

    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost",
                               verify_mode=ssl.CERT_NONE, max_stream_data=2**24, max_data=2**26)
    async with connect("127.0.0.1", port, configuration=config, create_protocol=Client) as client:
        assert isinstance(client, Client)
        for _ in range(streams):
            client.send()
        client.transmit()
        await asyncio.wait_for(finished, duration + 10)
    return counts["done"]


CLIENTS = {"h1": clientH1, "h2": clientH2, "h3": clientH3}


def clientMain(args: argparse.Namespace) -> int:
    started = time.monotonic()
    done = asyncio.run(CLIENTS[args.client](args.port, args.streams, args.duration))
    print(json.dumps({"requests": done, "seconds": time.monotonic() - started}))
    return 0


# -- the run --------------------------------------------------------------------


def makeCertificate(tmp: Path) -> Path:
    key, crt = tmp / "localhost.key", tmp / "localhost.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    pem = tmp / "localhost.pem"
    pem.write_bytes(key.read_bytes() + crt.read_bytes())
    return pem


def runClient(kind: str, port: int, streams: int, duration: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", kind, "--port", str(port), "--streams", str(streams),
         "--duration", str(duration)],
        capture_output=True, text=True, timeout=duration + 60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} client failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def runH2load(h2load: str, kind: str, port: int, streams: int, duration: float) -> dict[str, Any]:
    argv = [h2load, "-D", str(int(duration)), "--warm-up-time=0"]
    argv += ["--h1", "-c", str(streams)] if kind == "h1" else ["-c", "1", "-m", str(streams)]
    out = subprocess.run([*argv, f"https://localhost:{port}{PATH}"], capture_output=True, text=True,
                         timeout=duration + 60)
    match = re.search(r"(\d+) succeeded", out.stdout)
    if not match:
        raise RuntimeError(f"h2load: {out.stdout[-400:]}{out.stderr[-400:]}")
    return {"requests": int(match.group(1)), "seconds": float(duration)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--streams", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--client", choices=sorted(CLIENTS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return clientMain(args)

    h2load = shutil.which("h2load")
    if h2load is None and os.geteuid() == 0:  # as root, install the C client too
        subprocess.run(["apt-get", "install", "-y", "-qq", "nghttp2-client"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        h2load = shutil.which("h2load")
    tools = {"nginx": shutil.which("nginx") or "/usr/sbin/nginx"}
    tmp = Path(tempfile.mkdtemp(prefix="lbkit-bench-h3-"))
    tmp.chmod(0o755)
    procs = benchrun.Processes(tmp)
    results: dict[str, list[dict[str, float]]] = {}
    try:
        ports, _ = benchrun.startBackends(tools, tmp, procs)
        pem = makeCertificate(tmp)
        port = benchrun.freePort()
        env = {
            "LBKIT_BENCH_LISTEN": str(port),
            "LBKIT_BENCH_SERVERS": ",".join(f"127.0.0.1:{p}" for p in ports),
            "LBKIT_BENCH_CERT": str(pem),
        }
        twistd = str(Path(sys.executable).with_name("twistd"))
        lbkit = procs.start("lbkit", [twistd, "-n", "--pidfile=", "lbkit", "--config",
                                      str(BENCH / "sites" / "h3.py")], env)
        benchrun.waitForPort(port, lbkit)
        kinds = [("HTTP/3 (aioquic client)", "h3", None), ("HTTP/2 (h2 client)", "h2", None),
                 ("HTTP/1.1 (asyncio client)", "h1", None)]
        if h2load:
            kinds += [("HTTP/2 (h2load)", "h2", h2load), ("HTTP/1.1 (h2load --h1)", "h1", h2load)]
        runClient("h3", port, args.streams, 1.0)  # warm up, and prove QUIC answers
        for rnd in range(args.rounds):
            for label, kind, tool in kinds:
                cpu0 = benchrun.cpuSeconds(lbkit.pid)
                got = (runH2load(tool, kind, port, args.streams, args.duration) if tool
                       else runClient(kind, port, args.streams, args.duration))
                cpu = benchrun.cpuSeconds(lbkit.pid) - cpu0
                rps = got["requests"] / got["seconds"]
                us = cpu / got["requests"] * 1e6 if got["requests"] else float("nan")
                results.setdefault(label, []).append({"rps": rps, "cpuUs": us})
                print(f"round {rnd + 1}: {label:28} {rps:9,.0f} req/s   lbkit {us:6.1f} CPU µs/req", flush=True)
    finally:
        procs.stopAll()
    print(f"\nmedians over {args.rounds} round(s) of {args.duration:g} s, {args.streams} in flight:")
    base = statistics.median(r["cpuUs"] for r in results["HTTP/2 (h2 client)"])
    print(f"{'protocol':28} {'req/s':>9} {'lbkit CPU µs/req':>17} {'× HTTP/2 cost':>14}")
    for label, rows in results.items():
        rps = statistics.median(r["rps"] for r in rows)
        us = statistics.median(r["cpuUs"] for r in rows)
        print(f"{label:28} {rps:9,.0f} {us:17.1f} {us / base:14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
