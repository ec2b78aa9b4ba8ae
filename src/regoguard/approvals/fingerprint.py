"""The fingerprint an approval is bound to: who calls which tool of which server, with what, under which
policy. Key order and how a number is spelled (``1``, ``1.0``, ``1e0``) do not change it; anything else
(a string for a number, ``true`` for ``1``, one more key, another policy revision) does."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

from regoguard.canonical import canonical


def canonical_arguments(arguments: Any) -> str:
    """The arguments as canonical JSON text (sorted keys, numbers by value, ASCII)."""
    return json.dumps(canonical(arguments), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _exact(value: Any) -> str:
    """Canonical JSON of a value parsed with exact decimals: a number is its exact value (``12000`` and
    ``12000.0`` alike, ``12000.0000000000000001`` not), a string stays quoted, keys are sorted."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            return json.dumps(str(value))
        # digits without trailing zeros and an exponent: exact at any size (no rounding context, and
        # 1e999999999 never becomes a billion digits)
        sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        kept = list(digits)
        while len(kept) > 1 and kept[-1] == 0:
            kept.pop()
            exponent += 1
        if kept == [0]:
            return "0"
        return ("-" if sign else "") + "".join(map(str, kept)) + "e" + str(exponent)
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=True) + ":" + _exact(value[k]) for k in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_exact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=True)


def exact_arguments(text: str) -> str:
    """The arguments as the server will read them (``text``: their JSON as the client sent it), canonical:
    no two different numbers share a spelling, as they may once parsed into floats."""
    return _exact(json.loads(text, parse_float=Decimal, parse_int=Decimal))


def fingerprint(principal: str, server: str, tool: str, arguments: Any, revision: str,
                arguments_text: str | None = None) -> str:
    """A SHA-256 over the five parts (hex); the arguments' own text, when given, decides exactly."""
    args = exact_arguments(arguments_text) if arguments_text is not None else canonical_arguments(arguments)
    text = json.dumps([principal, server, tool, args, revision], ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()
