#!/usr/bin/env bash
# Run every atheris target in fuzz/ for a bounded time; fail if any crashes.
#
#   fuzz/run_all.sh [SECONDS]     (default 10 seconds per target)
#
# PYTHON picks the interpreter (default: the repository's .venv/bin/python,
# else python3).  Corpora grow in fuzz/corpus/<target>/ (not in git; an
# empty one gets each target's seeds first); a crashing input is saved as
# fuzz/corpus/crash-<target>-<sha1> and printed in the target's log.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
"$PYTHON" -c 'import atheris' || { echo "fuzz: atheris is not installed (pip install -e '.[test]')"; exit 1; }
corpus="${FUZZ_CORPUS:-fuzz/corpus}"
failed=()
for target in fuzz/fuzz_*.py; do
    name="$(basename "$target" .py)"
    name="${name#fuzz_}"
    mkdir -p "$corpus/$name"
    log="$corpus/$name.log"
    # -timeout: one input taking over 10 s is a hang; the outer timeout
    # bounds a target that never stops.
    if timeout "$((seconds + 60))" "$PYTHON" "$target" -max_total_time="$seconds" -timeout=10 \
            -artifact_prefix="$corpus/crash-$name-" "$corpus/$name" >"$log" 2>&1; then
        echo "fuzz: $name: $(grep -E '^Done [0-9]+ runs' "$log" | tail -1)"
    else
        echo "fuzz: $name: FAILED (log: $log)"
        grep -E -A25 'Uncaught Python exception|ERROR: libFuzzer|Test unit written' "$log" | head -60
        failed+=("$name")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: ${#failed[@]} of the targets crashed: ${failed[*]}"
    exit 1
fi
echo "fuzz: every target ran ${seconds} s without a crash"
