#!/usr/bin/env bash
# Instructions per request of a real `twistd lbkit` process (bench/sites/),
# under callgrind, while wrk drives it over real sockets: what
# bench/instructions.sh leaves out (the reactor, the transports, the
# syscalls' Python side).  Two nginx servers (started here) are the
# backends; counting starts after a 3 s warm-up (callgrind_control -z) and
# stops after a 10 s run (callgrind_control -d).  How many events each
# epoll_wait returns depends on timing, so expect a few per cent between
# runs; compare trees in the same session.
#
#     bench/liveinstructions.sh [--mode tcp|http] [TREE...]     # default: http, this tree
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$PWD/.venv/bin/python}
TWISTD=$(dirname "$PY")/twistd
mode=http; trees=()
while [ $# -gt 0 ]; do
    case "$1" in --mode) mode=$2; shift 2;; *) trees+=("$(cd "$1" && pwd)"); shift;; esac
done
[ ${#trees[@]} -gt 0 ] || trees=("$PWD")
for tool in nginx wrk valgrind callgrind_control curl; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "liveinstructions: needs $tool" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
tmp=$(mktemp -d)
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
b1=$(port); b2=$(port); lb=$(port)
mkdir -p "$tmp/logs"
cat > "$tmp/nginx.conf" <<CONF
worker_processes 1; daemon off; master_process off; pid $tmp/nginx.pid; error_log $tmp/nginx.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $tmp;
  server { listen 127.0.0.1:$b1; location = /small { return 200 "hello, world\n"; } }
  server { listen 127.0.0.1:$b2; location = /small { return 200 "hello, world\n"; } } }
CONF
"$NGINX" -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/nginx.err" & ng=$!
trap 'kill $ng 2>/dev/null; [ -n "${lbpid:-}" ] && kill $lbpid 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
for tree in "${trees[@]}"; do
    PYTHONHASHSEED=0 LBKIT_BENCH_LISTEN=$lb LBKIT_BENCH_SERVERS=127.0.0.1:$b1,127.0.0.1:$b2 PYTHONPATH="$tree" \
        valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.%p" "$PY" "$TWISTD" -n --pidfile= lbkit \
        --config "$tree/bench/sites/$mode.py" >"$tmp/lbkit.log" 2>&1 & lbpid=$!
    for _ in $(seq 600); do curl -s -m 5 -o /dev/null "http://127.0.0.1:$lb/small" && break; sleep 0.2; done
    wrk -t1 -c10 -d3s "http://127.0.0.1:$lb/small" >/dev/null
    callgrind_control -z $lbpid >/dev/null
    n=$(wrk -t1 -c10 -d10s "http://127.0.0.1:$lb/small" | awk '/requests in/ {print $1}')
    callgrind_control -d $lbpid >/dev/null
    total=0
    for _ in $(seq 50); do
        f=$(ls -t "$tmp"/cg.$lbpid.* 2>/dev/null | head -1 || true)
        [ -n "$f" ] && total=$(awk '/^(summary|totals):/ {print $2; exit}' "$f") && [ -n "$total" ] && break
        sleep 0.2
    done
    kill $lbpid; wait $lbpid 2>/dev/null || true; lbpid=
    rm -f "$tmp"/cg.*
    echo "$tree: $mode: $(( total / n )) instructions per request ($n requests)"
done
