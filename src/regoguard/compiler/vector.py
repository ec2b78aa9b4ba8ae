"""A section as the engine's bundle holds it: ``verdict`` is a *vector*, one term per rule that can deny
or hold a call, which the engine reads with the section's :attr:`~Vector.spec` (``engine_vector``).

Measured on regopy 1.5.2 (benchmarks/bench_engine.py): rego-cpp spends more evaluating the rules that
combine a decision (``allow``, the reasons, their concatenation, the verdict object) and writing reason
text out than deciding the conditions. A vector asks only for the conditions' outcomes — ``true`` or
``false`` per rule — and the engine, which has the rules' constant reasons, combines them: an allow is a
third cheaper than asking for the verdict object, and a denial costs what an allow costs.

The committed module (what OPA runs, what people review) keeps the combining rules; the OPA agreement test
compares the engine's reading of the vector with OPA's decision on that module.

Every term is ``true`` only when its rule's ``ok`` rule holds (not by default): a term whose other value
were undefined would leave the whole vector undefined, a denial, never a rule taken to hold. Each term,
and its entry in the spec (``at``: the rule's index in the decider's rules, the order of the
reasons):

- ``{"kind": "ok", "reason": {...}}``: the rule's outcome, a boolean; false denies with that constant
  reason (a rule with one check, or ``deny``, whose term is the literal ``false``);
- ``{"kind": "checks", "rule", "custom", "cost", "texts"}``: a rule of several checks, ``true`` when it
  holds, else one count per check (how often its body holds: 0 when it fails, more than 1 when it holds
  for several elements of a list); the detail lists the texts of the failing ones;
- ``{"kind": "detail", "rule", "custom", "cost"}``: a rule whose detail depends on the call (the
  required arguments missing): ``true`` or the detail, a list of text. These terms come last: their text
  can hold strings from the input, which rego-cpp does not escape, so nothing they could inject sits after
  them but the vector's end;
- ``{"kind": "held", "reason"}``: a ``require_approval`` rule's conditions hold (the literal ``false``
  when it has none): false asks a person, with that reason, unless a rule denies;
- ``{"kind": "granted"}``: a person approved this exact call (``input.approval.granted``);
- ``{"kind": "costs", "n"}``: the argument-derived costs, in charge order (``[]`` when any is missing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Spec = tuple[dict[str, Any], ...]


@dataclass
class Vector:
    """The vector's terms, their spec and the rules they need beyond the section's shared ones."""

    prefix: str
    terms: list[str] = field(default_factory=list)
    spec: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    _last: list[tuple[str, dict[str, Any], list[str]]] = field(default_factory=list)

    def ok(self, k: int, term: str, reason: dict[str, Any], lines: list[str] | None = None) -> None:
        """Rule ``k``'s outcome, which denies with the constant ``reason`` when false."""
        self._add(term, {"kind": "ok", "at": k, "reason": reason}, lines or [])

    def held(self, k: int, term: str, reason: dict[str, Any], lines: list[str] | None = None) -> None:
        """require_approval rule ``k``: false asks a person, with ``reason``."""
        self._add(term, {"kind": "held", "at": k, "reason": reason}, lines or [])

    def checks(self, k: int, rule: dict[str, Any], ok_lines: list[str], counts: list[str],
               texts: list[list[str]]) -> None:
        """A rule of several checks with constant texts: ``true``, or one count per check."""
        term, ok = f"{self.prefix}e{k}", f"{self.prefix}ok{k}"
        lines = [*ok_lines, f"{term} := true if {ok}", "", f"{term} := [{', '.join(counts)}] if {ok} == false", ""]
        self._add(term, {"kind": "checks", "at": k, **_who(rule), "texts": texts}, lines)

    def detail(self, k: int, rule: dict[str, Any], ok_lines: list[str], detail: str) -> None:
        """A rule whose detail depends on the call: ``true``, or the detail (a term placed last)."""
        term, ok = f"{self.prefix}e{k}", f"{self.prefix}ok{k}"
        lines = [*ok_lines, f"{term} := true if {ok}", "", f"{term} := d if {{", f"\t{ok} == false", f"\td := {detail}",
                 "}", ""]
        self._last.append((term, {"kind": "detail", "at": k, **_who(rule)}, lines))

    def granted(self) -> None:
        term = f"{self.prefix}granted"
        self._add(term, {"kind": "granted"},
                  [f"default {term} := false", "", f"{term} if input.approval.granted == true", ""])

    def costs(self, dynamic: list[str]) -> None:
        if dynamic:
            term = f"{self.prefix}costs"
            self._add(term, {"kind": "costs", "n": len(dynamic)},
                      [f"default {term} := []", "", f"{term} := [{', '.join(dynamic)}]", ""])

    def _add(self, term: str, spec: dict[str, Any], lines: list[str]) -> None:
        self.terms.append(term)
        self.spec.append(spec)
        self.lines.extend(lines)

    def text(self, before: list[str]) -> tuple[str, Spec]:
        """The bundle's core (``before``: the notes, value rules and helpers it shares with the full
        section) and the spec of its vector."""
        terms, spec, lines = list(self.terms), list(self.spec), list(self.lines)
        for term, s, more in self._last:
            terms.append(term)
            spec.append(s)
            lines.extend(more)
        body = [*before, *lines, f"verdict := [{', '.join(terms)}]", ""]
        return "\n".join(body), tuple(spec)


def _who(rule: dict[str, Any]) -> dict[str, Any]:
    """What a denial's message is made of: the rule, its own message (when it has one) and whether a cost
    argument's failure speaks instead of it."""
    custom = bool(rule.get("custom_message") or rule.get("deny"))
    return {"rule": rule["id"], "custom": rule["message"] if custom else None, "cost": "cost_from" in rule}
