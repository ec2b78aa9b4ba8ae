"""A tiny line-level "MCP server" for byte-exact relay tests: no SDK, no parsing beyond what answering needs.

Every line that arrives on stdin is appended, byte for byte (newline included), to the file named by
``RAW_ECHO_LOG`` before anything else happens. Each JSON-RPC request (an object with ``method`` and ``id``,
alone or inside a batch) is answered with a result; notifications and responses are only logged.
Lines that are not JSON are logged and otherwise ignored.

Methods with special behaviour:

  initialize           an InitializeResult (so the SDK client can connect in legacy mode)
  tools/list           two tools, ``echo`` (no required args) and ``delete_customer`` (requires customer_id),
                       with ``nextCursor`` "raw-echo-page-2" (an empty last page) and an ``x-unknown`` field;
                       never answered when ``RAW_ECHO_HANG_TOOLS_LIST=1``, answered after
                       ``RAW_ECHO_SLOW_TOOLS_LIST`` seconds when that is set (nothing else is read meanwhile)
  tools/call           ``{"content": [{"type": "text", "text": "<name> <arguments as JSON>"}]}``; tool names
                       ``hang`` (never answered) and ``die`` (exit status ``arguments.code``, default 3)
                       behave like the methods below; ``env`` answers ``os.environ.get(arguments.name)`` as
                       JSON text
  env                  ``{"value": os.environ.get(params.name)}``
  emit                 writes each string of ``params.lines`` to stdout as a raw line, then answers; the text
                       ``"$LAST_HANG_ID"`` in a line becomes the id (as received) of the last ``hang`` request
                       or call, so a test can make the server answer a request whose id only the server knows
  hang                 never answered (stays in flight)
  die                  exits at once with status ``params.code`` (default 3), without answering
  anything else        ``{"method": <method>, "received": <the request line as a string>}``

On start it writes ``raw_echo: started <RAW_ECHO_MARKER>`` to stderr. At stdin EOF it writes
``raw_echo: stdin closed`` to stderr and exits 0, unless ``RAW_ECHO_IGNORE_EOF=1`` (then it sleeps until
killed). On SIGTERM it writes ``raw_echo: got SIGTERM`` to stderr and dies of the signal.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

LOG = os.environ.get("RAW_ECHO_LOG")
OUT = sys.stdout.buffer

TOOLS = [
    {
        "name": "echo",
        "description": "Echo.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
    {
        "name": "delete_customer",
        "description": "Delete a customer.",
        "inputSchema": {
            "type": "object",
            "properties": {"customer_id": {"type": "string"}},
            "required": ["customer_id"],
        },
    },
]


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _on_sigterm(signum: int, frame: Any) -> None:
    _err("raw_echo: got SIGTERM")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _log(line: bytes) -> None:
    if not LOG:
        return
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _write(line: bytes) -> None:
    OUT.write(line if line.endswith(b"\n") else line + b"\n")
    OUT.flush()


def _result(id_: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "result": result}


def _die(code: Any) -> None:
    _err(f"raw_echo: dying with status {code}")
    sys.stderr.flush()
    os._exit(int(code) if isinstance(code, int) else 3)


_last_hang = ["null"]  # the JSON text of the last hang request's id


def _answer(msg: Any, line: bytes) -> dict[str, Any] | None:
    """The response to one message, or None (notification, response, hang)."""
    if not (isinstance(msg, dict) and isinstance(msg.get("method"), str) and "id" in msg):
        return None
    method, id_ = msg["method"], msg["id"]
    params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
    if method == "hang" or (method == "tools/call" and params.get("name") == "hang"):
        _last_hang[0] = json.dumps(id_)
    if method == "initialize":
        return _result(id_, {
            "protocolVersion": params.get("protocolVersion", "2025-11-25"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "raw-echo", "version": "0.0.1-test"},
        })
    if method == "tools/list" and os.environ.get("RAW_ECHO_HANG_TOOLS_LIST") == "1":
        return None  # never answered (a server that does not list its tools)
    if method == "tools/list":
        time.sleep(float(os.environ.get("RAW_ECHO_SLOW_TOOLS_LIST", "0")))
        # one page and a cursor that leads to an empty last page; fields no spec names, to see them kept
        if params.get("cursor") is None:
            return _result(id_, {"tools": TOOLS, "nextCursor": "raw-echo-page-2", "x-unknown": {"n": 1.5}})
        return _result(id_, {"tools": [], "x-unknown": {"n": 2}})
    if method == "tools/call":
        name = params.get("name")
        arguments = params.get("arguments") or {}
        if name == "hang":
            return None
        if name == "die":
            _die(arguments.get("code", 3))
        if name == "env":
            text = json.dumps(os.environ.get(str(arguments.get("name"))))
        else:
            text = f"{name} {json.dumps(arguments, sort_keys=True)}"
        return _result(id_, {"content": [{"type": "text", "text": text}], "isError": False})
    if method == "env":
        return _result(id_, {"value": os.environ.get(str(params.get("name")))})
    if method == "emit":
        for raw in params.get("lines", []):
            _write(raw.replace('"$LAST_HANG_ID"', _last_hang[0]).encode("utf-8", "surrogatepass"))
        return _result(id_, {"emitted": len(params.get("lines", []))})
    if method == "hang":
        return None
    if method == "die":
        _die(params.get("code", 3))
    return _result(id_, {"method": method, "received": line.decode("utf-8", "replace")})


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    _err(f"raw_echo: started {os.environ.get('RAW_ECHO_MARKER', '')}".rstrip())
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            break
        _log(line)
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, list):
            answers = [a for a in (_answer(m, line) for m in msg) if a is not None]
            if answers:
                _write(json.dumps(answers).encode())
            continue
        answer = _answer(msg, line)
        if answer is not None:
            _write(json.dumps(answer).encode())
    _err("raw_echo: stdin closed")
    if os.environ.get("RAW_ECHO_IGNORE_EOF") == "1":
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
