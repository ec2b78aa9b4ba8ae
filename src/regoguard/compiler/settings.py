"""Stage 1 of the compiler: the policy as plain data (``settings``) and what each tool's rules read.

``settings`` is the descriptive form of a policy: per tool key its rules (its own, then the ``"*"``
rules) with conditions precompiled (``eq`` matchers, portable regexes, globs as anchored regexes) and
the limits they charge. The Rego emitter (:mod:`regoguard.compiler.emit`) writes code from it; the
engine fills an allowed call's charges from it; ``regoguard test`` names rule ids from it; team Rego
may read it as ``data.regoguard.settings``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regoguard.policy.model import Condition, Policy, Rule
from regoguard.policy.regex_check import glob_to_regex, portable_regex

SETTINGS_FORMAT = 3
"""The shape of ``settings``; bumped when the compiled Rego changes shape (format 3: specialised Rego)."""


@dataclass(frozen=True)
class Reads:
    """What a tool key's rules (with the ``"*"`` rules) read: top-level argument names and the schema."""

    args: frozenset[str] = frozenset()
    schema: bool = False
    context: frozenset[tuple[str, tuple[str, ...]]] = frozenset()
    """The fields of the call's context conditions read: ``(root, path)``, e.g. ``("principal", ("claims",
    "groups"))``."""
    schema_check: bool = False
    """A rule validates the arguments against the whole inputSchema (the input's ``schema_check``)."""


def settings_of(policy: Policy) -> dict[str, Any]:
    """The policy as the library reads it: one entry per tool name, looked up in O(1).

    An entry is ``{"hidden": true}``, ``{"unlisted": true}`` (denied under ``default: deny``) or
    ``{"rules": [...], "charges": [...]}`` where ``rules`` are the tool's own rules followed by the
    ``"*"`` rules (merged here, once, rather than on every call) and ``charges`` the limits they take.
    ``unlisted`` is the entry of every name no key matches.
    """
    hidden = {"hidden": True}
    calendar = policy.windows == "calendar"
    wildcard = next((t.rules for t in policy.tools if t.is_wildcard), ())
    tools: dict[str, Any] = {}
    globs: list[dict[str, Any]] = []
    for t in policy.tools:
        if t.is_wildcard or policy.hide_all:
            continue
        if t.is_glob:
            entry = _entry((*t.rules, *wildcard), calendar)
            globs.append({"key": t.key, "regex": glob_to_regex(t.key), "entry": entry})
        else:
            tools[t.key] = hidden if t.key in policy.hide else _entry((*t.rules, *wildcard), calendar)
    if not policy.hide_all:
        for name in policy.hide:
            tools.setdefault(name, hidden)
    if policy.hide_all:
        unlisted: dict[str, Any] = hidden
    elif policy.default == "deny":
        unlisted = {"unlisted": True, **({"listed": False} if policy.hide_unlisted else {})}
    else:
        unlisted = _entry(wildcard, calendar)
    return {
        "format": SETTINGS_FORMAT,
        "source": Path(policy.source).name,
        "default": policy.default,
        "tools": tools,
        "globs": globs,
        "unlisted": unlisted,
    }


def _entry(rules: tuple[Rule, ...], calendar: bool = False) -> dict[str, Any]:
    charges = [_charge(r, calendar) for r in rules if r.limit is not None]
    entry: dict[str, Any] = {"rules": [_rule(r) for r in rules], "charges": charges}
    if any(r.visibility for r in rules):
        entry["visible_to"] = True
    if any("cost_from" in c for c in charges):
        entry["dynamic_costs"] = True
    return entry


def _charge(r: Rule, calendar: bool = False) -> dict[str, Any]:
    lim = r.limit
    assert lim is not None
    charge: dict[str, Any] = {
        "counter": lim.counter,
        "scope": lim.scope,
        "capacity": lim.capacity,
        "window": lim.window,
        "strict": lim.strict,
        "rule": r.id,
        "message": r.message,
    }
    if lim.cost_path:
        charge["cost_from"] = _cost_from(lim.cost_path)
    else:
        charge["cost"] = lim.cost
    if calendar:
        charge["calendar"] = True  # counted per UTC window, reset at its boundary (windows: calendar)
    return charge


def _cost_from(segs: tuple[str, ...]) -> dict[str, Any]:
    return {"text": "args." + ".".join(segs), **_path(segs)}


def _rule(r: Rule) -> dict[str, Any]:
    """A rule as data. Keys that do not apply are left out, not set to false or null: an absent key
    is what makes the library's other clauses fail fast (and a null would count as true in a body)."""
    out: dict[str, Any] = {"id": r.id, "message": r.message}
    if r.custom_message:
        out["custom_message"] = True
    if r.action == "deny":
        out["deny"] = True
    if r.approval is not None:
        out["approval"] = {"timeout": r.approval.timeout, "approver": r.approval.approver}
    if r.conditions:
        out["conditions"] = [_condition(c) for c in r.conditions]
    if r.validate_required:
        out["validate_required"] = True
    if r.validate_schema:
        out["validate_schema"] = True
    if r.limit is not None and r.limit.cost_path:
        out["cost_from"] = _cost_from(r.limit.cost_path)
    return out


def _path(segs: tuple[str, ...]) -> dict[str, list[str | int]]:
    """``path`` for ``object.get``, digit segments as list indexes; ``key_path`` (all strings) when those
    digits may also be object keys."""
    path: list[str | int] = [int(s) if s.isascii() and s.isdigit() and len(s) < 16 else s for s in segs]
    if all(isinstance(p, str) for p in path):
        return {"path": path}
    return {"path": path, "key_path": list(segs)}


def _condition(c: Condition) -> dict[str, Any]:
    out: dict[str, Any] = {"text": _condition_text(c), **_path(c.path), "op": c.op}
    if c.root != "args":
        out["root"] = c.root
    if c.op in ("eq", "neq"):
        out["match"] = eq_matcher(c.value)
    elif c.op in ("in", "not_in"):
        out["matches"] = [eq_matcher(v) for v in c.value]
    elif c.op == "contains":
        out["value"] = c.value
        out["match"] = eq_matcher(c.value)
    elif c.op in ("regex", "not_regex"):
        out["regex"] = portable_regex(c.value)
    elif c.op == "glob":
        out["regex"] = glob_to_regex(c.value)
    else:
        out["value"] = c.value
    return out


def _condition_text(c: Condition) -> str:
    return f"{c.root}.{'.'.join(c.path)} {c.op} {json.dumps(c.value, ensure_ascii=False)}"


def number_text(n: float) -> str:
    """How a number reads when compared with a string: whole numbers without a decimal point."""
    if isinstance(n, int) or (math.isfinite(n) and n.is_integer() and abs(n) < 2**53):
        return str(int(n))
    return repr(float(n))


_NUMBER_RE = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")


def eq_matcher(value: Any) -> dict[str, Any]:
    """Precompute how ``value`` compares under ``eq`` with a number, a string, a boolean or anything else."""
    if isinstance(value, bool):
        return {"bool": value, "text": "true" if value else "false"}
    if isinstance(value, int | float):
        return {"num": value, "text": number_text(value)}
    if isinstance(value, str):
        m: dict[str, Any] = {"text": value}
        if _NUMBER_RE.fullmatch(value):
            n = float(value) if any(ch in value for ch in ".eE") else int(value)
            if math.isfinite(n) and number_text(n) == value:
                m["num"] = n
        if value in ("true", "false"):
            m["bool"] = value == "true"
        return m
    return {"value": value}


def reads_of(rules: tuple[Rule, ...], wildcard: tuple[Rule, ...]) -> Reads:
    """What ``rules`` and the ``"*"`` rules read (the wildcard rules found once by the caller: looking
    them up per tool made compiling 10,000 tools quadratic)."""
    names: set[str] = set()
    context: set[tuple[str, tuple[str, ...]]] = set()
    schema = False
    schema_check = False
    for r in (*rules, *wildcard):
        schema_check = schema_check or r.validate_schema
        names.update(c.path[0] for c in r.conditions if c.root == "args")
        context.update((c.root, c.path) for c in r.conditions if c.root != "args")
        if r.limit is not None and r.limit.cost_path:
            names.add(r.limit.cost_path[0])
        schema = schema or r.validate_required
    return Reads(frozenset(names), schema, frozenset(context), schema_check)
