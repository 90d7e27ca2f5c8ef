#!/usr/bin/env bash
# Instructions per proxied request (bench/hotpath.py under callgrind), for
# one or more source trees: repeatable on a busy machine, where wall-clock
# figures are not.  Counted as (6000 requests - 2000 requests) / 4000, so
# start-up and imports cancel out; PYTHONHASHSEED=0, so that dict and set
# layouts (and the instructions they cost) are the same each run.
#
#     git worktree add /tmp/before <rev>
#     bench/instructions.sh /tmp/before .          # [--log] [--stats] [--trace] after the trees
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$PWD/.venv/bin/python}
trees=(); flags=()
for a in "$@"; do case "$a" in --*) flags+=("$a");; *) trees+=("$(cd "$a" && pwd)");; esac; done
[ ${#trees[@]} -gt 0 ] || trees=("$PWD")
out=$(mktemp -d)
for tree in "${trees[@]}"; do
    for n in 2000 6000; do
        PYTHONHASHSEED=0 PYTHONPATH="$tree" valgrind --tool=callgrind --callgrind-out-file="$out/$n" \
            "$PY" "$tree/bench/hotpath.py" --count "$n" --repeat 1 "${flags[@]}" >/dev/null 2>"$out/err"
    done
    a=$(awk '/^(summary|totals):/ {print $2; exit}' "$out/2000")
    b=$(awk '/^(summary|totals):/ {print $2; exit}' "$out/6000")
    echo "$tree: $(( (b - a) / 4000 )) instructions per request ${flags[*]}"
done
rm -rf "$out"
