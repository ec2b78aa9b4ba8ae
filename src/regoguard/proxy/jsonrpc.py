"""Just enough JSON-RPC 2.0 for a relay that looks at messages without rewriting them.

Parsing is strict where a lenient parser would open a bypass: duplicate keys (two parsers could pick
different values), NaN/Infinity, and anything not valid UTF-8 JSON are parse errors.
"""

from __future__ import annotations

import json
import math
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
STATELESS_PROTOCOL = "2026-07-28"


class ParseError(ValueError):
    """The line is not one JSON-RPC message we are willing to read."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ParseError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ParseError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ParseError(f"number {text[:40]} does not fit a double")
    return value


def loads(line: bytes) -> Any:
    """Parse one message strictly.

    Raises:
        ParseError: invalid UTF-8 or JSON, a duplicate key, NaN/Infinity or a number that overflows a
            double, or a carriage return anywhere but before the final newline. (JSON counts a bare CR as
            whitespace, but the SDK's stdio servers read in universal-newline mode and split lines at it:
            a call hidden behind a CR would reach the server unseen by us.)
    """
    body = line[:-2] if line.endswith(b"\r\n") else line
    if b"\r" in body:
        raise ParseError("a carriage return inside a message (only a final CRLF is allowed)")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"message is not UTF-8: {exc}") from exc
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants,
                          parse_float=_finite)
    except ParseError:
        raise
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ParseError(f"invalid JSON: {exc}") from exc


def dumps(message: Any) -> bytes:
    """One message as one line, newline-terminated (the stdio framing)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


def error(id_: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": id_, "error": err}


def is_request(msg: Any) -> bool:
    return isinstance(msg, dict) and isinstance(msg.get("method"), str) and "id" in msg


def is_notification(msg: Any) -> bool:
    return isinstance(msg, dict) and isinstance(msg.get("method"), str) and "id" not in msg


def is_response(msg: Any) -> bool:
    return isinstance(msg, dict) and "method" not in msg and "id" in msg and ("result" in msg or "error" in msg)


def id_key(id_: Any) -> str:
    """A hashable, type-exact key for a JSON-RPC id (1 and "1" are different ids)."""
    return json.dumps(id_)


def request_meta(msg: dict[str, Any]) -> dict[str, Any]:
    params = msg.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return meta if isinstance(meta, dict) else {}


def is_stateless(msg: dict[str, Any]) -> bool:
    """A 2026-07-28 request carries its protocol version in ``params._meta``."""
    return request_meta(msg).get(META_PROTOCOL_VERSION) == STATELESS_PROTOCOL
