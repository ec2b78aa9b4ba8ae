"""Rego source for one condition: literals written so both engines read them, and each operator as
direct expressions over one argument value.

Every condition reads a *value rule* that is always defined (``null`` when the argument is absent), so no
expression here ever applies ``not`` to a path that may be missing: in OPA such an expression is
undefined rather than true, which would silently drop a denial. A missing or null argument fails every
operator but ``exists: false``, as the policy language says.
"""

from __future__ import annotations

import json
import re
from typing import Any

from regoguard.compiler.regex_lowering import counted_run

REGEX_SUBJECT_LIMIT = 65536
"""Strings longer than this never reach a regex: rego-cpp's std::regex recurses per character."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = frozenset({"as", "default", "else", "false", "import", "package", "not", "null", "true", "with",
                       "some", "in", "every", "if", "contains"})


def string(s: str) -> str:
    """A Rego string literal: a raw string when that reads better and is exact, else JSON text (which
    Rego accepts), keeping non-ASCII as UTF-8 (rego-cpp reads ``\\u`` escapes in data literally)."""
    if ("\\" in s or '"' in s) and "`" not in s and not _CONTROL.search(s):
        return f"`{s}`"
    return json.dumps(s, ensure_ascii=False)


def number(n: float) -> str:
    """A number literal: exponents get a decimal point (rego-cpp rejects ``1e-07``); a float from 2**53 up to
    2**63 is written as the integer it is."""
    if isinstance(n, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(n, float) and 2.0**53 <= abs(n) < 2.0**63:
        # a whole number: written as one, since rego-cpp compares an integer with a float through a double
        # (a call's 10000000000000001 would pass `lte: 1.0e+16` there); the engine hands such floats of a
        # call over as integers too
        return str(int(n))
    text = repr(n) if isinstance(n, float) else str(n)
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def value(v: Any) -> str:
    """Any JSON value as a Rego term (objects with sorted keys, so output is deterministic)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return number(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{string(k)}: {value(v[k])}" for k in sorted(v)) + "}"
    raise TypeError(f"not a JSON value: {type(v).__name__}")


def refs(segs: list[str], base: str = "args") -> list[str]:
    """The Rego references reaching ``<base>.<segs>``: a digit segment indexes a list or names an object
    key, whichever the value holds, so it yields one reference per reading (at most one is defined)."""
    out = [base]
    for seg in segs:
        step: list[str] = []
        if _IDENT.fullmatch(seg) and seg not in _KEYWORDS:
            step.append(f".{seg}")
        else:
            step.append(f"[{string(seg)}]")
        if seg.isascii() and seg.isdigit() and len(seg) < 16:  # "²", U+0661 are keys, not indexes
            step.append(f"[{int(seg)}]")
        out = [r + s for r in out for s in step]
    return out


def _eq_clauses(v: str, m: dict[str, Any]) -> list[list[str]]:
    """``v eq <the matcher's value>``: numbers as numbers, a number or boolean and a string as text."""
    clauses: list[list[str]] = []
    if "num" in m:
        clauses.append([f"is_number({v})", f"{v} == {number(m['num'])}"])
    if "text" in m:
        clauses.append([f"is_string({v})", f"{v} == {string(m['text'])}"])
    if "bool" in m:
        clauses.append([f"is_boolean({v})", f"{v} == {value(m['bool'])}"])
    if "value" in m and m["value"] is not None:
        clauses.append([f"{v} == {value(m['value'])}"])
    return clauses


def _in_clauses(v: str, matchers: list[dict[str, Any]], tag: str = "") -> list[list[str]]:
    """``v`` equals one of the values: strings and booleans by set membership, numbers one by one."""
    texts = sorted({m["text"] for m in matchers if "text" in m})
    bools = sorted({m["bool"] for m in matchers if "bool" in m})
    nums = sorted({m["num"] for m in matchers if "num" in m})
    others = [m["value"] for m in matchers if "value" in m and m["value"] is not None]
    clauses: list[list[str]] = []
    if texts:
        clauses.append([f"is_string({v})", f"{v} in {{{', '.join(string(t) for t in texts)}}}"])
    if nums:
        clauses.append([f"is_number({v})", f"some n{tag} in [{', '.join(number(n) for n in nums)}]", f"{v} == n{tag}"])
    if bools:
        clauses.append([f"is_boolean({v})", f"{v} in {{{', '.join(value(b) for b in bools)}}}"])
    clauses.extend([f"{v} == {value(o)}"] for o in others)
    return clauses


def _regex(v: str, pattern: str, negate: bool = False) -> list[list[str]]:
    """``not_regex`` is ``== false``, not ``not``: a pattern the engine cannot run makes ``regex.match``
    undefined (rego-cpp) or an error (OPA), and ``not`` of undefined would hold for every string. A
    counted run of one ASCII class is an uncounted run and a length (:mod:`.regex_lowering`)."""
    run = None if negate else counted_run(pattern)
    if run is not None:
        uncounted, low, high = run
        bound = REGEX_SUBJECT_LIMIT if high is None else min(high, REGEX_SUBJECT_LIMIT)
        return [[f"is_string({v})", f"count({v}) <= {bound}", *([f"count({v}) >= {low}"] if low > 1 else []),
                 f"regex.match({string(uncounted)}, {v})"]]
    match = f"regex.match({string(pattern)}, {v})"
    return [[f"is_string({v})", f"count({v}) <= {REGEX_SUBJECT_LIMIT}", f"{match} == false" if negate else match]]


POSITIVE = frozenset({"lte", "lt", "gte", "gt", "eq", "in", "regex", "glob", "not_regex", "contains",
                      "starts_with", "ends_with", "len_lte", "len_gte"})
"""Operators that fail on a missing argument by themselves: they may read it by a plain reference."""


def condition_clauses(c: dict[str, Any], v: str, helper: str,
                      tag: str = "") -> tuple[list[list[str]], list[tuple[str, list[list[str]]]]]:
    """The bodies (any one holding makes the condition hold) of one condition on the value ``v``, and
    the helper rules they need (named from ``helper``: an ``eq``/``in`` set that ``neq``/``not_in``
    negate). ``tag`` keeps local variable names apart when bodies are inlined side by side."""
    op = c["op"]
    if op in ("lte", "lt", "gte", "gt"):
        sym = {"lte": "<=", "lt": "<", "gte": ">=", "gt": ">"}[op]
        return [[f"is_number({v})", f"{v} {sym} {number(c['value'])}"]], []
    if op == "eq":
        return _eq_clauses(v, c["match"]), []
    if op == "in":
        return _in_clauses(v, c["matches"], tag), []
    if op == "neq":
        return [[f"{v} != null", f"not {helper}"]], [(helper, _eq_clauses(v, c["match"]))]
    if op == "not_in":
        return [[f"{v} != null", f"not {helper}"]], [(helper, _in_clauses(v, c["matches"]))]
    if op in ("regex", "glob"):
        return _regex(v, c["regex"]), []
    if op == "not_regex":
        return _regex(v, c["regex"], negate=True), []
    if op == "exists":
        return [[f"{v} != null" if c["value"] is True else f"{v} == null"]], []
    if op == "contains":
        clauses: list[list[str]] = []
        if isinstance(c["value"], str):
            clauses.append([f"is_string({v})", f"contains({v}, {string(c['value'])})"])
        clauses.extend([f"is_array({v})", f"some e{tag} in {v}", *body] for body in _eq_clauses(f"e{tag}", c["match"]))
        return clauses, []
    if op in ("starts_with", "ends_with"):
        fn = "startswith" if op == "starts_with" else "endswith"
        return [[f"is_string({v})", f"{fn}({v}, {string(c['value'])})"]], []
    if op in ("len_lte", "len_gte"):
        sym = "<=" if op == "len_lte" else ">="
        return [[f"{kind}({v})", f"count({v}) {sym} {number(c['value'])}"]
                for kind in ("is_string", "is_array", "is_object")], []
    raise ValueError(f"the compiler has no Rego for operator {op!r}")



_COMMENT_BREAKS = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")


def comment(text: str) -> str:
    """Text made safe for a ``#`` comment line: nothing in it can end the line (policy text is
    untrusted; a line break would let it write Rego)."""
    return _COMMENT_BREAKS.sub("?", text)
