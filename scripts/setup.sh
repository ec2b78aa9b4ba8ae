#!/usr/bin/env bash
# Set up a development environment in .venv (idempotent): the package, its test and dev tools, the real OPA
# engine for the agreement tests, and the npm servers and tools the end-to-end tests run (tests/node).
# A step whose inputs have not changed since it last succeeded is skipped (stamps in .venv/), so running
# either README command again costs a second, not a reinstall. The package is installed editable: source
# changes need no new install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi

# fresh NAME FILE...: true when FILE... are unchanged since `mark NAME FILE...` last recorded them
fingerprint() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }
fresh() { local name=$1; shift; [ -f ".venv/.stamp-$name" ] && [ "$(cat ".venv/.stamp-$name")" = "$(fingerprint "$@")" ]; }
mark() { local name=$1; shift; fingerprint "$@" > ".venv/.stamp-$name"; }

if ! fresh python pyproject.toml; then
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
  .venv/bin/python -m pip install --quiet -e '.[test,dev]'
  mark python pyproject.toml
fi
# The real OPA engine (v1.20.2 in-process) for the tests that check the Rego decides alike under OPA. Its
# wheel claims Python >= 3.14 but is py3-none and runs on 3.11, hence --ignore-requires-python.
OPA_BINDINGS_VERSION=0.4.4
OPA_BINDINGS_SHOWN=$(.venv/bin/python -m pip show opa-golib-python-bindings 2>/dev/null || true)
if ! grep -qx "Version: $OPA_BINDINGS_VERSION" <<<"$OPA_BINDINGS_SHOWN"; then
  .venv/bin/python -m pip install --quiet --ignore-requires-python --no-deps \
    "opa-golib-python-bindings==$OPA_BINDINGS_VERSION"
fi
if command -v npm >/dev/null 2>&1 && [ -f tests/node/package.json ]; then
  if ! { fresh npm tests/node/package.json tests/node/package-lock.json && [ -d tests/node/node_modules ]; }; then
    npm install --silent --no-audit --no-fund --prefix tests/node >/dev/null
    mark npm tests/node/package.json tests/node/package-lock.json
  fi
fi
