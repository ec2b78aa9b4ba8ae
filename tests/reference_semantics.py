"""A deliberately plain Python reading of the YAML policy language (docs/policy.md).

This is the oracle of ``test_property.py``: it takes the raw dict ``yaml.safe_load`` gives for a policy
file and decides one tool call the way the spec says, without importing regoguard. It is meant to be
read next to docs/policy.md, not to be fast or clever.

``reference_decide(policy, tool, args, schema)`` returns::

    {"allow": bool,
     "rules": [ids of the failing rules, in run order],
     "charges": [{"counter", "scope", "cost", "capacity", "window", "strict"}, ...]}

Rate limits never fail here: the pure decision only says what an allowed call would be charged.
"""

from __future__ import annotations

import fnmatch
import math
import re
from typing import Any

WILDCARD = "*"
GLOBAL_KEY = "_global"
WINDOWS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

# The regexes the property test draws, as RE2 reads them, written for Python's ``re``: RE2's ``$``
# (without multi-line mode) matches only at the very end of the text, Python's also before a final
# newline; RE2's ``\d`` is ASCII, Python's is any Unicode digit.
PYTHON_REGEX = {
    "^a": r"\Aa",
    "b$": r"b\Z",
    "^[a-z]+$": r"\A[a-z]+\Z",
    "\\d": r"[0-9]",
    "a.c": r"a.c",
    "^$": r"\A\Z",
}


# --- values ---------------------------------------------------------------------------------------


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def number_text(x: int | float) -> str:
    """A number as text: an integer when whole (and exactly representable), else shortest form."""
    if float(x).is_integer() and abs(x) < 2**53:
        return str(int(x))
    return repr(float(x))


def structural_eq(a: Any, b: Any) -> bool:
    """Equality of JSON values without text coercion: numbers by value, a bool never equals a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a) and is_number(b):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(structural_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(structural_eq(a[k], b[k]) for k in a)
    return False


def value_eq(a: Any, b: Any) -> bool:
    """The ``eq`` of the operator table."""
    if is_number(a) and is_number(b):
        return a == b
    if is_number(a) and isinstance(b, str):
        return number_text(a) == b
    if isinstance(a, str) and is_number(b):
        return a == number_text(b)
    if isinstance(a, bool) and isinstance(b, str):
        return ("true" if a else "false") == b
    if isinstance(a, str) and isinstance(b, bool):
        return a == ("true" if b else "false")
    return structural_eq(a, b)


def resolve(args: Any, path: str) -> Any:
    """The value at ``args.<key>[.<key>...]`` (a digit segment indexes a list), or MISSING."""
    segments = path.split(".")
    assert segments[0] == "args", path
    cur = args
    for seg in segments[1:]:
        if isinstance(cur, dict):
            if seg not in cur:
                return MISSING
            cur = cur[seg]
        elif isinstance(cur, list) and seg.isdigit():
            i = int(seg)
            if i >= len(cur):
                return MISSING
            cur = cur[i]
        else:
            return MISSING
    return cur


def utf8_bytes(text: str) -> str:
    """The text as its UTF-8 bytes, one character per byte.

    docs/policy.md: against non-ASCII text, `.`, `?` and negated classes count bytes in the embedded
    engine. Matching regexes and globs over this view reads them that way (ASCII text is unchanged).
    """
    return text.encode("utf-8").decode("latin-1")


def _regex_search(pattern: str, text: str) -> bool:
    return re.search(utf8_bytes(PYTHON_REGEX.get(pattern, pattern)), utf8_bytes(text)) is not None


def _glob_match(pattern: str, text: str) -> bool:
    return fnmatch.fnmatchcase(utf8_bytes(text), utf8_bytes(pattern))


def condition_holds(arg: Any, op: str, value: Any) -> bool:
    if op == "exists":
        present = arg is not MISSING and arg is not None
        return present if value else not present
    if arg is MISSING or arg is None:
        return False
    if op == "eq":
        return value_eq(arg, value)
    if op == "neq":
        return not value_eq(arg, value)
    if op == "in":
        return any(value_eq(arg, v) for v in value)
    if op == "not_in":
        return not any(value_eq(arg, v) for v in value)
    if op in ("lt", "lte", "gt", "gte"):
        if not is_number(arg):
            return False
        return {
            "lt": arg < value,
            "lte": arg <= value,
            "gt": arg > value,
            "gte": arg >= value,
        }[op]
    if op == "regex":
        return isinstance(arg, str) and _regex_search(value, arg)
    if op == "not_regex":
        return isinstance(arg, str) and not _regex_search(value, arg)
    if op == "contains":
        if isinstance(arg, str):
            return isinstance(value, str) and value in arg
        if isinstance(arg, list):
            return any(value_eq(x, value) for x in arg)
        return False
    if op == "starts_with":
        return isinstance(arg, str) and arg.startswith(value)
    if op == "ends_with":
        return isinstance(arg, str) and arg.endswith(value)
    if op == "glob":
        return isinstance(arg, str) and _glob_match(value, arg)
    if op in ("len_lte", "len_gte"):
        if not isinstance(arg, str | list | dict):
            return False
        return len(arg) <= value if op == "len_lte" else len(arg) >= value
    raise ValueError(f"unknown op {op!r}")


# --- tools and rules -------------------------------------------------------------------------------


def is_glob_key(key: str) -> bool:
    return key != WILDCARD and any(c in key for c in "*?[")


def find_tool_key(tools: dict[str, Any], tool: str) -> str | None:
    """The key whose rules the tool takes: its exact key, else the first matching glob, else None."""
    if tool != WILDCARD and tool in tools:
        return tool
    for key in tools:
        if is_glob_key(key) and fnmatch.fnmatchcase(tool, key):
            return key
    return None


def _rules_of(tools: dict[str, Any], key: str) -> list[dict[str, Any]]:
    entry = tools.get(key) or {}
    return list(entry.get("rules") or [])


def rule_id(key: str, index: int, rule: dict[str, Any]) -> str:
    if rule.get("name") is not None:
        return f"{key}/{rule['name']}"
    return f"{key}/rules[{index}]"


def counter_owner(key: str) -> str:
    return GLOBAL_KEY if key == WILDCARD else key


def rule_fails(rule: dict[str, Any], args: dict[str, Any], schema: dict[str, Any] | None) -> bool:
    if rule.get("action", "evaluate") == "deny":
        return True
    for cond in rule.get("conditions") or []:
        path = cond["path"]
        if path.startswith("args.") and not condition_holds(resolve(args, path), cond["op"], cond["value"]):
            return True
    validate = rule.get("validate") or {}
    if validate.get("required_args"):
        if schema is None:
            return True
        if any(name not in args for name in schema.get("required", [])):
            return True
    state = rule.get("state")
    if state and state.get("increment_from") is not None:
        amount = resolve(args, state["increment_from"])
        if amount is MISSING or not is_number(amount) or amount < 0:
            return True
    return False


def rule_charge(key: str, rule: dict[str, Any], args: dict[str, Any]) -> dict[str, Any] | None:
    owner = counter_owner(key)
    rate = rule.get("rate_limit")
    if isinstance(rate, str):
        n, window = rate.split("/")
        return {
            "counter": f"{owner}._rate_{window}",
            "scope": rule.get("scope", "global"),
            "cost": 1,
            "capacity": int(n),
            "window": WINDOWS[window],
            "strict": False,
        }
    if isinstance(rate, dict):
        return {
            "counter": f"{owner}._rate_{rate['window']}s",
            "scope": rule.get("scope", "session"),
            "cost": 1,
            "capacity": rate["max"],
            "window": rate["window"],
            "strict": False,
        }
    state = rule.get("state")
    if state:
        counter = state["counter"]
        state_path = f"state.{owner}.{counter}"
        cond = next(c for c in rule.get("conditions") or [] if c["path"] == state_path)
        if state.get("increment_from") is not None:
            cost = resolve(args, state["increment_from"])
        else:
            cost = state.get("increment", 1)
        return {
            "counter": f"{owner}.{counter}",
            "scope": rule.get("scope", "global"),
            "cost": cost,
            "capacity": cond["value"],
            "window": WINDOWS[state["window"]],
            "strict": cond["op"] == "lt",
        }
    return None


def _misread(value: Any) -> bool:
    """Strings with NUL, integers beyond 64 bits, floats of 2**63 or more, non-finite numbers."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int):
        return not -(2**63) <= value <= 2**63 - 1
    if isinstance(value, float):  # regopy rounds floats to six decimal places, rego-cpp to 16 significant digits
        return (not math.isfinite(value) or abs(value) >= 2**63 or float(format(value, ".6f")) != value
                or float(format(value, ".16g")) != value)
    if isinstance(value, dict):
        return any(_misread(k) or _misread(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_misread(v) for v in value)
    return False


def _read_by(run: list[tuple[str, int, dict[str, Any]]], args: dict[str, Any],
             schema: dict[str, Any] | None) -> Any:
    """What of a call the rules that run read: the top-level arguments their conditions and costs name,
    and, when one validates required arguments, the schema's ``required`` list."""
    names: set[str] = set()
    validates = False
    for _, _, r in run:
        for c in r.get("conditions") or ():
            path = c.get("path")
            if isinstance(path, str) and path.startswith("args."):
                names.add(path[len("args."):].split(".")[0])
        state = r.get("state")
        if isinstance(state, dict) and isinstance(state.get("increment_from"), str):
            names.add(state["increment_from"][len("args."):].split(".")[0])
        validates = validates or bool((r.get("validate") or {}).get("required_args"))
    read: list[Any] = [args[k] for k in names if k in args]
    if validates and isinstance(schema, dict) and "required" in schema:
        read.append(schema["required"])
    return read


def reference_decide(
    policy: dict[str, Any], tool: str, args: dict[str, Any], schema: dict[str, Any] | None
) -> dict[str, Any]:
    if _misread(args):  # the call itself reaches the server: denied whatever the rules read (policy.md)
        return {"allow": False, "rules": ["engine/input"], "charges": []}
    hide = policy.get("hide") or []
    if tool in hide or WILDCARD in hide:
        return {"allow": False, "rules": ["hide"], "charges": []}

    tools = policy.get("tools") or {}
    key = find_tool_key(tools, tool)
    if key is None and policy.get("default", "allow") == "deny":
        return {"allow": False, "rules": ["default"], "charges": []}

    run: list[tuple[str, int, dict[str, Any]]] = []
    if key is not None:
        run += [(key, i, r) for i, r in enumerate(_rules_of(tools, key))]
    if WILDCARD in tools:
        run += [(WILDCARD, i, r) for i, r in enumerate(_rules_of(tools, WILDCARD))]

    if _misread(_read_by(run, args, schema)):
        # and in what else the rules read (the schema's required list)
        return {"allow": False, "rules": ["engine/input"], "charges": []}

    failing = [rule_id(k, i, r) for k, i, r in run if rule_fails(r, args, schema)]
    if failing:
        return {"allow": False, "rules": failing, "charges": []}

    charges = [c for k, _, r in run if (c := rule_charge(k, r, args)) is not None]
    return {"allow": True, "rules": [], "charges": charges}
