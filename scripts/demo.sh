#!/usr/bin/env bash
# Set everything up and run the main job: regoguard in front of a real MCP server (stdio), under the
# shipped Looking Glass policy, with limits in an embedded SQLite file, driven by a scripted MCP client.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
