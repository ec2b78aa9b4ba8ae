"""Just enough JSON-RPC 2.0 for a relay that looks at messages without rewriting them.

Parsing is strict where a lenient parser would open a bypass: duplicate keys (two parsers could pick
different values), NaN/Infinity, and anything not valid UTF-8 JSON are parse errors.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from regoguard.json_numbers import read_float

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
STATELESS_PROTOCOL = "2026-07-28"
BATCHLESS_PROTOCOL = "2025-06-18"
"""The first MCP revision without JSON-RPC batches (dates compare as text)."""


MAX_DEPTH = 100
"""Deepest nesting of arrays and objects accepted in a message (refused up front: code that walks a
message recursively, ours or the engine's, must never meet a depth near the interpreter's limit)."""
MAX_NUMBER_DIGITS = 1000
"""Longest number accepted, in characters (Python refuses to convert integers of more than 4,300 digits;
no JSON number a tool needs is near either)."""


class ParseError(ValueError):
    """The line is not one JSON-RPC message we are willing to read."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # in C; a duplicate shows as a shorter dict
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ParseError(f"duplicate key {key!r}")
            seen.add(key)
    return out


def _no_constants(name: str) -> Any:
    raise ParseError(f"{name} is not valid JSON")


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_DIGITS:
        raise ParseError(f"a number of {len(text)} digits exceeds the limit of {MAX_NUMBER_DIGITS}")
    return int(text)


def _finite(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise ParseError(f"a number of {len(text)} characters exceeds the limit of {MAX_NUMBER_DIGITS}")
    value = float(text)
    if not math.isfinite(value):
        raise ParseError(f"number {text[:40]} does not fit a double")
    return value


def _finite_exact(text: str) -> float:
    """A client's float: an InexactFloat when the text says more than the double holds."""
    return read_float(text, _finite(text))


# Numbers are converted by Python hooks only when one could be a problem: a run of 200+ digits (too long,
# or a mantissa that a 2-digit exponent could overflow: 10^199 * 10^99 < 1.8e308) or a 3-digit exponent.
# Digits inside strings can trigger the checked path too; it reaches the same answer, just slower. The
# search runs on a copy mapping digits to "0", e/E to "e", +/- to "+" and the rest to " " (bytes.translate,
# then substring searches in C: ~10x faster than the equivalent regex, which cost 0.3 ms on a 10 KB answer).
_RISK_TABLE = bytes(ord("0") if chr(c).isdigit() and c < 128 else ord("e") if c in b"eE" else
                    ord("+") if c in b"+-" else ord(" ") for c in range(256))
_LONG_RUN = b"0" * 200


def _number_risk(line: bytes) -> bool:
    shape = line.translate(_RISK_TABLE)
    return _LONG_RUN in shape or b"e000" in shape or b"e+000" in shape


_FAST = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
# A client's floats are read by a hook (json_numbers.read_float): the rules must decide on the number its
# text names, which the server reads, and a double may not hold it.
_FLOATS = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants,
                           parse_float=_finite_exact)
_CHECKED = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_finite,
                            parse_int=_bounded_int)
_CHECKED_EXACT = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants,
                                  parse_float=_finite_exact, parse_int=_bounded_int)


def loads(line: bytes, exact_floats: bool = False) -> Any:
    """Parse one message strictly. ``exact_floats``: a float whose text no double holds is an
    :class:`~regoguard.json_numbers.InexactFloat` (a client's message: see ``_FLOATS``).

    Raises:
        ParseError: invalid UTF-8 or JSON, a duplicate key, NaN/Infinity or a number that overflows a
            double, a number longer than MAX_NUMBER_DIGITS, nesting deeper than MAX_DEPTH, or a carriage
            return anywhere but before the final newline. (JSON counts a bare CR as whitespace, but the
            SDK's stdio servers read in universal-newline mode and split lines at it: a call hidden behind
            a CR would reach the server unseen by us.)
    """
    body = line[:-2] if line.endswith(b"\r\n") else line
    if b"\r" in body:
        raise ParseError("a carriage return inside a message (only a final CRLF is allowed)")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"message is not UTF-8: {exc}") from exc
    try:
        # a 200-digit run or a 3-digit exponent goes through the Python number hooks; else only floats (a client's)
        if _number_risk(line):
            decoder = _CHECKED_EXACT if exact_floats else _CHECKED
        else:
            decoder = _FLOATS if exact_floats else _FAST
        value = decoder.decode(text)
    except ParseError:
        raise
    except RecursionError as exc:
        raise ParseError(f"nesting deeper than {MAX_DEPTH}") from exc
    except (ValueError, ArithmeticError) as exc:  # JSONDecodeError, and whatever a number conversion raises
        raise ParseError(f"invalid JSON: {exc}") from exc
    # Fast path: fewer brackets in all than the limit cannot nest deeper than it.
    if line.count(b"[") + line.count(b"{") > MAX_DEPTH and depth_exceeds(value, MAX_DEPTH):
        raise ParseError(f"nesting deeper than {MAX_DEPTH}")
    return value


def depth_exceeds(value: Any, limit: int) -> bool:
    """True when arrays/objects in ``value`` nest more than ``limit`` deep (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def dumps(message: Any) -> bytes:
    """One message as one line, newline-terminated (the stdio framing)."""
    return encode(message) + b"\n"


def encode(message: Any) -> bytes:
    """One message as UTF-8 JSON text. A string holding a lone surrogate (which UTF-8 cannot carry) is
    written as its ``\\u`` escape rather than failing."""
    try:
        return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(message, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")


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


def request_meta(msg: dict[str, Any]) -> dict[str, Any]:
    params = msg.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return meta if isinstance(meta, dict) else {}


def is_stateless(msg: dict[str, Any]) -> bool:
    """A 2026-07-28 request carries its protocol version in ``params._meta``."""
    return request_meta(msg).get(META_PROTOCOL_VERSION) == STATELESS_PROTOCOL


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_context(msg: dict[str, Any]) -> dict[str, str] | None:
    """The W3C trace context a request carries in ``_meta`` (``traceparent``, ``tracestate``), when
    well-formed; it passes upstream untouched either way."""
    meta = request_meta(msg)
    parent = meta.get("traceparent")
    if not isinstance(parent, str) or not _TRACEPARENT.match(parent):
        return None
    out = {"traceparent": parent}
    state = meta.get("tracestate")
    if isinstance(state, str) and len(state) <= 512:
        out["tracestate"] = state
    return out
