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
if command -v npm >/dev/null 2>&1 && [ -f tests/node/package.json ]; then
  npm install --silent --no-audit --no-fund --prefix tests/node >/dev/null
fi
