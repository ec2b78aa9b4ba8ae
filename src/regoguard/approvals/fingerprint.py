"""The fingerprint an approval is bound to: who calls which tool of which server, with what, under which
policy. Key order and how a number is spelled (``1``, ``1.0``, ``1e0``) do not change it; anything else
(a string for a number, ``true`` for ``1``, one more key, another policy revision) does."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)  # 1.0 and 1e0 are the integer 1
        return value
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return repr(value)  # not JSON: still distinct, never equal to a JSON value's spelling


def canonical_arguments(arguments: Any) -> str:
    """The arguments as canonical JSON text (sorted keys, numbers by value, ASCII)."""
    return json.dumps(_canonical(arguments), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def fingerprint(principal: str, server: str, tool: str, arguments: Any, revision: str) -> str:
    """A SHA-256 over the five parts (hex)."""
    text = json.dumps([principal, server, tool, canonical_arguments(arguments), revision], ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()
