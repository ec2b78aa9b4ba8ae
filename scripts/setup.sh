#!/usr/bin/env bash
# Set up a development environment in .venv (idempotent): the package, its test and dev tools, and the
# npm reference MCP server the end-to-end tests run behind the proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e '.[test,dev]'
# The real OPA engine (v1.20.2 in-process) for the tests that check the Rego decides alike under OPA. Its
# wheel claims Python >= 3.14 but is py3-none and runs on 3.11, hence --ignore-requires-python.
OPA_BINDINGS_VERSION=0.4.4
OPA_BINDINGS_SHOWN=$(.venv/bin/python -m pip show opa-golib-python-bindings 2>/dev/null || true)
if ! grep -qx "Version: $OPA_BINDINGS_VERSION" <<<"$OPA_BINDINGS_SHOWN"; then
  .venv/bin/python -m pip install --quiet --ignore-requires-python --no-deps \
    "opa-golib-python-bindings==$OPA_BINDINGS_VERSION"
fi
if command -v npm >/dev/null 2>&1 && [ -f tests/node/package.json ]; then
  npm install --silent --no-audit --no-fund --prefix tests/node >/dev/null
fi
