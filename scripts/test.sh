#!/usr/bin/env bash
# The test command: set up (idempotent), then lint, type-check and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
command -v redis-server >/dev/null 2>&1 ||
  echo "note: redis-server is not on PATH, so the Redis store's tests are skipped (apt-get install redis-server)" >&2
command -v npm >/dev/null 2>&1 ||
  echo "note: npm is not on PATH, so the tests against npm MCP servers are skipped (install Node.js and npm)" >&2
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
