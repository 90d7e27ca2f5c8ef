#!/usr/bin/env bash
# The API reference: pydoctor over lbkit's docstrings (epytext), into
# build/apidocs (or $1), failing on any warning (a docstring that does not
# parse, a link that goes nowhere).  Links into Twisted resolve through an
# objects.inv made here from the installed Twisted (no network needed),
# pointing at docs.twisted.org; it is kept in build/ for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=${1:-build/apidocs}
inv=build/twisted-objects.inv
mkdir -p build
if [ ! -s "$inv" ]; then
    twisted=$("$PY" -c 'import os, twisted; print(os.path.dirname(twisted.__file__))')
    # (Twisted's own docstrings have warnings of their own: not ours to fail on)
    "$PY" -m pydoctor --make-intersphinx --html-output=build/twisted-inv --project-name=Twisted \
        --project-base-dir="$(dirname "$twisted")" -q -q "$twisted" >/dev/null 2>&1 || true
    [ -s build/twisted-inv/objects.inv ] || { echo "apidocs: could not index Twisted" >&2; exit 1; }
    mv build/twisted-inv/objects.inv "$inv"
    rm -rf build/twisted-inv
fi
"$PY" -m pydoctor --html-output="$out" --docformat=epytext --project-name=lbkit \
    --project-url=https://github.com/lbkit/lbkit -W -q \
    --intersphinx-file="$inv::https://docs.twisted.org/en/stable/api/" lbkit
echo "apidocs: $out/index.html"
