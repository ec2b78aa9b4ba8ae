"""Which policy rules no test has seen deny a call, and which tools no test calls.

"Exercised" is defined for security review: a rule is exercised when some passing step expected a
denial and saw that rule among its reasons. A rule that can deny two ways (its conditions or
validation, and its limit) must be seen both ways: a limit nobody has seen trip has no test proving it
trips. Rules that cannot deny (a bare ``action: allow``) are not counted. ``hide`` and ``default: deny``
count as rules too, under the ids decisions give them (``hide``, ``default``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regoguard.compiler import CompiledPolicy
from regoguard.policy._yaml import Node, YamlProblem, parse
from regoguard.policy.model import Policy, Rule
from regoguard.policytest.model import display_path
from regoguard.policytest.runner import LIMIT, POLICY, CaseResult


@dataclass(frozen=True)
class RuleGap:
    file: str
    line: int
    rule: str
    missing: tuple[str, ...]  # POLICY and/or LIMIT

    def reason(self, facets: tuple[str, ...]) -> str:
        if set(self.missing) == set(facets):
            return "never seen denying a call"
        if self.missing == (LIMIT,):
            return "its limit never seen denying a call (its argument checks were)"
        return "its argument checks never seen denying a call (its limit was)"


@dataclass
class Coverage:
    rules: int = 0
    exercised: int = 0
    gaps: list[tuple[RuleGap, str]] = field(default_factory=list)
    untested_tools: list[tuple[str, int, str]] = field(default_factory=list)  # file, line, tool (note)

    @property
    def percent(self) -> float:
        return 100.0 if self.rules == 0 else 100.0 * self.exercised / self.rules

    def sorted_gaps(self) -> list[tuple[RuleGap, str]]:
        return sorted(self.gaps, key=lambda g: (g[0].file, g[0].line))

    def to_json(self) -> dict[str, Any]:
        return {
            "rules": self.rules,
            "exercised": self.exercised,
            "percent": round(self.percent, 1),
            "uncovered": [{"file": g.file, "line": g.line, "rule": g.rule, "missing": list(g.missing),
                           "reason": why} for g, why in self.sorted_gaps()],
            "untested_tools": [{"file": f, "line": line, "tool": t} for f, line, t in sorted(self.untested_tools)],
        }


def facets(rule: Rule) -> tuple[str, ...]:
    """The ways a rule can deny a call: its conditions / validation / ``deny`` action, and its limit."""
    out: list[str] = []
    if rule.action == "deny" or rule.conditions or rule.validate_required:
        out.append(POLICY)
    if rule.limit is not None:
        out.append(LIMIT)
    return tuple(out)


def _top_lines(policy: Policy) -> tuple[dict[str, int], dict[str, int]]:
    """Lines of the policy's top-level keys, and of each ``hide`` entry (the model does not keep them)."""
    try:
        root = parse(Path(policy.source).read_text(encoding="utf-8"))
    except (OSError, YamlProblem):
        return {}, {}
    if root is None or not isinstance(root.value, dict) or root.key_pos is None:
        return {}, {}
    keys = {k: p.line for k, p in root.key_pos.items()}
    hide: Node | None = root.value.get("hide")
    items = hide.value if hide is not None and isinstance(hide.value, list) else []
    return keys, {n.value: n.pos.line for n in items if isinstance(n.value, str)}


def add_policy(cov: Coverage, policy: Policy, compiled: CompiledPolicy, results: Iterable[CaseResult]) -> None:
    """Add one policy's rules and tools, judged by the results of every case that tested it."""
    results = list(results)
    seen = {b for r in results if r.passed for b in r.bitten}
    called = {t for r in results for t in r.tools}
    shown = display_path(Path(policy.source))
    keys, hide_lines = _top_lines(policy)
    items: list[tuple[str, int, tuple[str, ...]]] = [
        (rule.id, rule.line, facets(rule)) for tool in policy.tools for rule in tool.rules if facets(rule)]
    if policy.hide:
        items.append(("hide", keys.get("hide", 1), (POLICY,)))
    if policy.default == "deny" and not policy.hide_all:
        items.append(("default", keys.get("default", 1), (POLICY,)))
    for rule_id, line, ways in items:
        cov.rules += 1
        missing = tuple(f for f in ways if (rule_id, f) not in seen)
        if missing:
            gap = RuleGap(shown, line, rule_id, missing)
            cov.gaps.append((gap, gap.reason(ways)))
        else:
            cov.exercised += 1
    keys_called = {compiled.key_for(name) for name in called}
    for tool in policy.tools:
        if not tool.is_wildcard and tool.key not in keys_called and tool.key not in policy.hide:
            cov.untested_tools.append((shown, tool.line, tool.key))
    for name in policy.hide:
        if name != "*" and name not in called:
            cov.untested_tools.append((shown, hide_lines.get(name, keys.get("hide", 1)), f"{name} (hidden)"))


def render(cov: Coverage) -> list[str]:
    lines = [f"coverage: {cov.exercised} of {cov.rules} rules exercised ({cov.percent:.0f}%)"]
    for gap, why in cov.sorted_gaps():
        lines.append(f"  {gap.file}:{gap.line}: {gap.rule}: {why}")
    if cov.untested_tools:
        lines.append("tools no test case calls:")
        lines.extend(f"  {f}:{line}: {tool}" for f, line, tool in sorted(cov.untested_tools))
    return lines
