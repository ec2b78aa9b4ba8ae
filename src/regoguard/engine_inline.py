"""Which calls the engine may decide inline, on the caller's thread, with no timeout.

Inline saves the worker pool's thread hop (tens of microseconds, more on a busy machine) but cannot be
interrupted, so it is only for calls whose evaluation is bounded: no team Rego (it can loop for as long
as it likes), and every regex the call's rules would run bounded, by ``regex_cost``, for the strings
this call holds. A regex no one can bound, or a long subject for a quadratic one, sends the call to the
pool, behind the timeout.
"""

from __future__ import annotations

from typing import Any

from regoguard.compiler.rego_text import REGEX_SUBJECT_LIMIT
from regoguard.policy.regex_check import PATTERN_OPS, argument_at
from regoguard.policy.regex_cost import INLINE_BUDGET, Cost, search_cost, subject_bytes

_EVALUATIONS = 4
"""How often one condition's regex may run in a query: in its rule, again where a denial's reasons read
that rule (rego-cpp need not remember a rule's value), and in the detail that names the failing checks;
one more for margin."""

Subject = tuple[str, tuple[Any, ...], tuple[str, ...] | None, Cost | None]
"""(root, path, key_path, the pattern's bound) of one regex condition."""


def regex_subjects(entry: dict[str, Any]) -> tuple[Subject, ...]:
    """The regex conditions of a decider's compiled entry, each with its pattern's bound."""
    out = []
    for rule in entry.get("rules", ()):
        for cond in rule.get("conditions", ()):
            if cond.get("op") in PATTERN_OPS and "regex" in cond:
                key_path = cond.get("key_path")
                out.append((cond.get("root", "args"), tuple(cond.get("path", ())),
                            tuple(key_path) if key_path else None, search_cost(cond["regex"])))
    return tuple(out)


def bounded_call(subjects: tuple[Subject, ...], given: dict[str, Any], budget: int = INLINE_BUDGET) -> bool:
    """True when every regex the rules would run on this input (what the engine hands a vector bundle:
    :func:`~regoguard.engine_cache.policy_input`) stays within ``budget`` steps, worst case, all together."""
    if not subjects:
        return True
    arguments = given.get("args")
    total = 0
    for root, path, key_path, cost in subjects:
        value = argument_at(arguments if root == "args" else given.get(root), list(path),
                            list(key_path) if key_path else None)
        if not isinstance(value, str) or len(value) > REGEX_SUBJECT_LIMIT:
            continue  # no regex runs on it: the rules test is_string and the length first
        if cost is None:
            return False
        total += _EVALUATIONS * cost.steps(subject_bytes(value))
        if total > budget:
            return False
    return True
