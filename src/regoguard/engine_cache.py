"""What a decision depends on: the decision cache's key, and the input a bundle is given.

Decisions are pure, so a call whose read values match an earlier one's gets its decision. The compiler
knows what each decider reads (top-level argument names, and whether the schema), so a tool with only a
rate limit caches on its name alone. Values are keyed as canonical JSON, bounded in size: a call whose
read values are larger than the budget is not cached.
"""

from __future__ import annotations

import json
from typing import Any

from regoguard.compiler import CompiledPolicy, Reads

_MISSING = "\x00missing"


def cache_key(compiled: CompiledPolicy, unit: str, doc: dict[str, Any], budget: int) -> tuple[Any, ...] | None:
    """The key of ``doc`` decided by ``unit``, or None when it should not be cached."""
    tool = doc["tool"]
    args = tool.get("arguments") or {}
    if not isinstance(args, dict):
        return None
    reads = compiled.unit_reads(unit)
    parts: list[Any] = [tool["name"], _granted(doc)]
    for key in sorted(reads.args):
        if key not in args:
            parts.append(_MISSING)
            continue
        text = json.dumps(args[key], sort_keys=True)
        budget -= len(text)
        if budget < 0:
            return None
        parts.append(text)
    if reads.schema:
        # validate: {required_args: true} reads the schema's required list and which arguments are present
        schema = doc.get("schema")
        if isinstance(schema, dict):
            text = json.dumps(schema["required"], sort_keys=True) if "required" in schema else "\x00no-required"
        else:
            text = "\x00no-schema"  # not an object: decided as if absent
        budget -= len(text)
        if budget < 0:
            return None
        parts.append(text)
        parts.append(tuple(sorted(args)))
    if reads.schema_check:  # validate: {schema: true} decides on the validator's result
        check = doc.get("schema_check") or {}
        parts.append(("schema_check", check.get("valid") is True, str(check.get("error"))))
    for root, path in sorted(reads.context):  # who is calling: exactly the fields conditions read
        value: Any = doc.get(root)
        depth = 0
        for seg in path:  # as deep as plain object keys go; below that (a list, say), the whole value decides
            if isinstance(value, dict) and seg not in value:
                value = _MISSING  # absent: nothing else of the object matters
                break
            if not isinstance(value, dict):
                break
            value = value[seg]
            depth += 1
        text = f"{depth}:" + json.dumps(value, sort_keys=True)
        budget -= len(text)
        if budget < 0:
            return None
        parts.append((root, path, text))
    return tuple(parts)


def policy_input(reads: Reads, doc: dict[str, Any]) -> dict[str, Any]:
    """The input of a decider's vector bundle: the part of ``doc`` its compiled rules read, the arguments
    at ``args`` (not ``tool.arguments``: one object fewer to build and to walk). That is the arguments
    they name (and, when they validate required arguments, every argument's presence and the schema).
    Handing regopy only this makes ``set_input`` cost the same for a 1 MB argument the rules never read as
    for none; without the team's Rego, nothing else of the input can change the decision. The parts of the
    call's context (principal, session, server) that conditions read go whole."""
    args = doc["tool"].get("arguments") or {}
    out: dict[str, Any]
    if reads.schema:
        picked = {k: (v if k in reads.args else None) for k, v in args.items()}
        out = {"args": picked}
        if "schema" in doc:
            schema = doc["schema"]
            # the rules read whether it is an object and its `required` list, nothing else of it
            out["schema"] = {k: schema[k] for k in ("required",) if k in schema} if isinstance(schema, dict) \
                else schema
    else:
        out = {"args": {k: args[k] for k in reads.args if k in args}}
    for root in {root for root, _ in reads.context}:
        if root in doc:
            out[root] = doc[root]
    if reads.schema_check and "schema_check" in doc:
        out["schema_check"] = doc["schema_check"]
    if _granted(doc):
        out["approval"] = {"granted": True}
    return out


def _granted(doc: dict[str, Any]) -> bool:
    """Whether the call comes with a person's approval (``input.approval.granted``)."""
    approval = doc.get("approval")
    return isinstance(approval, dict) and approval.get("granted") is True
