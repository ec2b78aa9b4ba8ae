"""A minimal stdio MCP server for benchmarks: plain Python, no SDK, so its own cost is tiny and stable.

Reads newline-delimited JSON-RPC on stdin, writes one line per answer on stdout (flushed each time):

- ``initialize``: a fixed result (echoes the client's protocolVersion);
- notifications (no ``id``): ignored;
- ``tools/list``: a few tools;
- ``tools/call``: answered at once with ``{"content":[{"type":"text","text":"ok"}],"isError":false}``,
  whatever the tool and arguments;
- ``ping``: ``{}``; any other request: a JSON-RPC "method not found" error.

Exits at EOF on stdin. Usage: python benchmarks/fast_server.py
"""

from __future__ import annotations

import json
import sys

TOOLS = [
    {
        "name": f"tool_{i:04d}",
        "description": f"benchmark tool {i}",
        "inputSchema": {
            "type": "object",
            "properties": {"amount": {"type": "integer"}, "region": {"type": "string"},
                           "note": {"type": "string"}},
        },
    }
    for i in range(40, 45)
]

CALL_RESULT = b',"result":{"content":[{"type":"text","text":"ok"}],"isError":false}}\n'


def main() -> int:
    read = sys.stdin.buffer.readline
    out = sys.stdout.buffer
    loads, dumps = json.loads, json.dumps
    while True:
        line = read()
        if not line:
            return 0
        try:
            msg = loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict) or "id" not in msg or "method" not in msg:
            continue  # notifications and stray responses
        id_ = dumps(msg["id"]).encode()
        method = msg["method"]
        if method == "tools/call":
            out.write(b'{"jsonrpc":"2.0","id":' + id_ + CALL_RESULT)
        else:
            if method == "initialize":
                params = msg.get("params") or {}
                result = {
                    "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                    "capabilities": {"tools": {"listChanged": False}},
                    "serverInfo": {"name": "fast-server", "version": "0"},
                }
                body = {"jsonrpc": "2.0", "id": msg["id"], "result": result}
            elif method == "tools/list":
                body = {"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": TOOLS}}
            elif method == "ping":
                body = {"jsonrpc": "2.0", "id": msg["id"], "result": {}}
            else:
                body = {"jsonrpc": "2.0", "id": msg["id"],
                        "error": {"code": -32601, "message": f"method not found: {method}"}}
            out.write(dumps(body, separators=(",", ":")).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
