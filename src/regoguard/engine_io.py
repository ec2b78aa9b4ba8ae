"""What crosses between Python and regopy: policy data in, the call checked on its way in, the
engine's output parsed strictly on its way out.

regopy facts this file works around (measured on regopy 1.5.2):

- ``add_data`` sends ``\\u`` escapes, which rego-cpp keeps as six literal characters, and rejects
  exponents without a decimal point (``1e-07``): :func:`data_json` writes what it reads.
- ``set_input`` cuts strings at the first NUL, wraps integers beyond 64 bits and rounds floats to six
  decimal places (``4e-07`` reaches the rules as ``0``), and rego-cpp keeps 16 significant digits of a
  float (``1.0000000000000002e16`` compares equal to ``1e16``): such calls are denied.
- Strings that came from the input are written into the output JSON without escaping: the library never
  copies them into a decision, and the output is parsed with duplicate keys refused.
"""

from __future__ import annotations

import json
import math
from typing import Any

from regoguard.decision import Charge, Decision, Reason
from regoguard.json_numbers import InexactFloat
from regoguard.policy.regex_check import argument_at

_INT64 = (-(2**63), 2**63 - 1)


def data_json(value: Any) -> str:
    """JSON text that rego-cpp reads as Python meant it: UTF-8 rather than ``\\u`` escapes (which it
    keeps as six literal characters), and exponents with a decimal point (``1e-07`` is rejected,
    ``1.0e-07`` accepted)."""
    floats: dict[str, str] = {}

    def walk(v: Any) -> Any:
        if isinstance(v, float) and "e" in repr(v) and "." not in repr(v).split("e")[0]:
            token = f"@regoguard-float-{len(floats)}-{id(floats)}@"
            mantissa, exponent = repr(v).split("e")
            floats[token] = f"{mantissa}.0e{exponent}"
            return token
        if isinstance(v, dict):
            return {k: walk(item) for k, item in v.items()}
        if isinstance(v, list):
            return [walk(item) for item in v]
        return v

    text = json.dumps(walk(value), ensure_ascii=False)
    for token, number in floats.items():
        text = text.replace(json.dumps(token), number)
    return text


def value_problem(value: Any) -> str | None:
    """What in an input the embedded engine would misread, if anything. regopy's ``set_input`` cuts
    strings at the first NUL (``"/workspace/\\x00/../etc"`` would reach the rules as ``"/workspace/"``)
    and wraps integers beyond 64 bits (2**64 + 100 would compare as 100). Such input is denied."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return "the call holds a NUL character (\\u0000), which the embedded engine cannot compare exactly"
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, int):
            if not _INT64[0] <= v <= _INT64[1]:
                return f"the call holds the integer {v}, beyond the 64 bits the embedded engine compares exactly"
        elif isinstance(v, float):
            if type(v) is InexactFloat:  # the server reads the text, the rules would read the double
                return (f"the call holds the number {v.text[:40]}, which no double holds "
                        f"(it would be decided as {float.__repr__(v)})")
            if not math.isfinite(v):
                return f"the call holds the number {v}, which is not a finite JSON number"
            if abs(v) >= 2**63:  # rego-cpp compares it with an integer through a double: 2**63 == 2**63 - 1
                return f"the call holds the number {v!r}, beyond the 64 bits the embedded engine compares exactly"
            if float(format(v, ".6f")) != v:  # regopy passes floats as text with 6 decimals: 4e-07 -> 0
                return (f"the call holds the number {v!r}, which the embedded engine would round to six "
                        "decimal places")
            if float(format(v, ".16g")) != v:  # and rego-cpp keeps 16 significant digits: 1.0000000000000002e16 -> 1e16
                return (f"the call holds the number {v!r}, which the embedded engine would round to 16 "
                        "significant digits")
        elif isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str) or "\x00" in k:
                    return "the call holds an object key that is not text without NUL characters"
                stack.append(item)
        elif isinstance(v, list):
            stack.extend(v)
        else:
            return f"the call holds a {type(v).__name__}, which is not JSON"
    return None


def shape_problem(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return "input must be an object"
    tool = doc.get("tool")
    if not isinstance(tool, dict):
        return "input.tool must be an object"
    if not isinstance(tool.get("name"), str):
        return "input.tool.name must be a string"
    if "arguments" in tool and not isinstance(tool["arguments"], dict | type(None)):
        return "input.tool.arguments must be an object"
    return None


# The library's hide/default messages name the tool here, in Python: the library keeps input strings out
# of its output, because rego-cpp would not escape them there.
NAMED_MESSAGES = {
    "hide": 'Tool "{}" is hidden by policy',
    "default": 'Tool "{}" is not allowed by policy (default: deny)',
}


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key in the engine's output")
    return out


def expression(raw: str) -> Any:
    """The value of regopy's output. Parsed strictly: rego-cpp does not escape strings that came from the
    input, so an injected ``"allow": true`` would otherwise win as the last duplicate key."""
    if raw.strip() == "undefined":
        raise ValueError("undefined")
    out = json.loads(raw, object_pairs_hook=_unique_keys)
    return out["expressions"][0] if isinstance(out, dict) else out[0]["expressions"][0]


def _exact_cost(cost: Any, template: dict[str, Any], args: Any) -> Any:
    """The argument a cost came from, as the call holds it: rego-cpp writes numbers back with 16
    significant digits (1.1659428615198634e16 comes back as 1.165942861519863e16), so the engine's copy
    is used only to confirm which number it was."""
    source = template["cost_from"]
    value = argument_at(args, source["path"], source.get("key_path"))
    if isinstance(value, bool) or not isinstance(value, int | float) or isinstance(cost, bool) \
            or not isinstance(cost, int | float):
        return cost
    return value if math.isclose(value, cost, rel_tol=1e-15, abs_tol=0.0) else cost


def charges_of(costs: list[Any], entry: dict[str, Any], args: Any = None) -> list[Charge]:
    """An allowed call's charges from a decider's ``entry``, ``costs`` the argument-derived ones in order."""
    return _charges(costs, list(entry.get("charges", ())), args)


def _charges(costs: list[Any], templates: list[dict[str, Any]], args: Any = None) -> list[Charge]:
    """An allowed call's charges: the compiled templates, argument-derived costs filled in, in order."""
    if len(costs) != sum(1 for t in templates if "cost_from" in t):
        raise ValueError("the verdict's costs and the tool's charges disagree")
    charges = []
    pending = list(costs)
    for t in templates:
        cost = _exact_cost(pending.pop(0), t, args) if "cost_from" in t else t["cost"]
        if isinstance(cost, bool) or not isinstance(cost, int | float) or cost < 0:
            raise ValueError("a cost is not a non-negative number")
        charges.append(Charge(t["counter"], t["scope"], cost, t["capacity"], t["window"], t["strict"], t["rule"],
                              t["message"], t.get("calendar") is True))
    return charges


def fixed_charges(entry: dict[str, Any]) -> tuple[Charge, ...] | None:
    """An allowed call's charges when none of the decider's costs comes from an argument, else None."""
    templates = list(entry.get("charges", ()))
    if any("cost_from" in t for t in templates):
        return None
    return tuple(_charges([], templates))


def _team_charge(c: dict[str, Any]) -> Charge:
    return Charge(c["counter"], c["scope"], c["cost"], c["capacity"], c["window"], c["strict"], c["rule"],
                  c["message"])


def engine_failure(raw: str) -> Decision | None:
    """The denial for an answer that is no verdict (a timeout, an engine error, undefined), else None."""
    if raw.startswith("\x00timeout:"):
        return Decision.deny("engine/timeout", raw[len("\x00timeout:"):])
    if raw.startswith("\x00error:"):
        return Decision.deny("engine/error", f"policy evaluation failed: {raw[7:].strip()[:500]}")
    if raw.strip() == "undefined":
        return Decision.deny("engine/undefined", "the policy gave no decision for this call")
    return None


def parse_verdict(raw: str, entry: dict[str, Any], name: str, team: bool = False, args: Any = None) -> Decision:
    """Turn one verdict object (regopy output text) into a Decision; anything unexpected is a deny. The
    engine's own bundles answer with a vector instead (:mod:`regoguard.engine_vector`); this reads the
    verdict of a section in full, and the library's, with the team's Rego.

    ``entry`` is the compiled settings entry of the decider that answered (its charge templates);
    ``team``: the verdict is the library's, which also carries the team's charges and an action.
    ``args``: the call's arguments, whose exact numbers argument-derived costs are taken from.
    """
    failed = engine_failure(raw)
    if failed is not None:
        return failed
    try:
        value = expression(raw)
        if not isinstance(value, dict):
            raise ValueError("the verdict is not an object")
        if value.get("allow") is True:
            if value.get("reasons", []) != []:
                raise ValueError("an allowing verdict with reasons")
            charges = _charges(list(value["costs"]), list(entry.get("charges", ())), args)
            if team:
                charges += [_team_charge(c) for c in value["charges"]]
            return Decision(True, "allow", (), tuple(charges), extra={"from_policy": True})
        given = list(value.get("reasons", ()))
        reasons = tuple(Reason(r["rule"], NAMED_MESSAGES[r["rule"]].format(name) if r["rule"] in NAMED_MESSAGES
                               else r["message"]) for r in given)
        details = {r["rule"]: list(r.get("detail", [])) for r in given}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return Decision.deny("engine/malformed", f"the policy gave a malformed verdict: {exc}")
    if not reasons:
        return Decision.deny("engine/undefined", "the policy denied the call without a reason")
    action = "require_approval" if value.get("action") == "require_approval" else "deny"
    return Decision(False, action, reasons, (), extra={"details": details, "from_policy": True})
