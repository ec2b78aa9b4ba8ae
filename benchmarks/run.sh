#!/usr/bin/env bash
# Run every benchmark script in benchmarks/ (bench_*.py), in name order, with $PYTHON, else the
# project's .venv (scripts/setup.sh makes it), else python3. Arguments are passed to every script (e.g. --quick).
#   bash benchmarks/run.sh [--quick]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -x "$root/.venv/bin/python" ]]; then
    py="$root/.venv/bin/python"
else
    py=python3
fi

# Without an installed package, import regoguard from the checkout.
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"

status=0
shopt -s nullglob
for script in "$here"/bench_*.py; do
    echo "== $(basename "$script") ($py)"
    "$py" "$script" "$@" || status=$?
    echo
done
exit "$status"
