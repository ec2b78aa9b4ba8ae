"""``regoguard log``: what the agent tried, what was blocked and why, from a decision log."""

from __future__ import annotations

import glob
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCKED = ("denied", "would_deny", "held")
SAYS = {"held": "held for approval"}
"""How an outcome reads to a person (a held call waits for approval: it was not denied)."""


def log_files(path: str | Path) -> list[Path]:
    """``path`` and its rotated files (``path.1`` … ``path.N``), oldest first."""
    base = Path(path)
    rotated = sorted(
        (p for p in base.parent.glob(glob.escape(base.name) + ".*") if p.name[len(base.name) + 1:].isdigit()),
        key=lambda p: int(p.name[len(base.name) + 1:]),
        reverse=True,
    )
    return [*rotated, base] if base.exists() else rotated


def read_events(path: str | Path) -> Iterator[dict[str, Any]]:
    for file in log_files(path):
        with open(file, encoding="utf-8", errors="replace") as f:
            for raw in f:
                text = raw.strip()
                if not text:
                    continue
                try:
                    event = json.loads(text)
                except json.JSONDecodeError:
                    continue
                if isinstance(event, dict) and "decision_id" in event:
                    yield event


@dataclass
class Summary:
    files: list[str] = field(default_factory=list)
    calls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    blocked_by_rule: Counter[str] = field(default_factory=Counter)
    blocked_by_tool: Counter[str] = field(default_factory=Counter)
    recent: list[dict[str, Any]] = field(default_factory=list)
    approvals: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "calls": self.calls,
            "outcomes": dict(self.outcomes.most_common()),
            "denials_by_rule": dict(self.blocked_by_rule.most_common()),
            "denials_by_tool": dict(self.blocked_by_tool.most_common()),
            "recent_denials": self.recent,
            "approvals": dict(self.approvals.most_common()),
        }

    def render(self) -> str:
        lines = [f"{self.calls} calls in {len(self.files)} file(s)"]
        for outcome, n in self.outcomes.most_common():
            lines.append(f"  {SAYS.get(outcome, outcome):17s} {n}")
        for title, counter in (("denials by rule", self.blocked_by_rule), ("denials by tool", self.blocked_by_tool)):
            if counter:
                lines.append(title + ":")
                lines.extend(f"  {n:6d}  {key}" for key, n in counter.most_common(20))
        if self.recent:
            lines.append("recent denials:")
            for e in self.recent:
                says = SAYS.get(e["outcome"], e["outcome"])
                lines.append(f"  {e['timestamp']}  {says:10s}  {e['tool']}  {e['rule']}: {e['reason']}")
        if self.approvals:
            lines.append("approvals:")
            lines.extend(f"  {n:6d}  {kind}" for kind, n in self.approvals.most_common())
        return "\n".join(lines)


def summarise(path: str | Path, recent: int = 10) -> Summary:
    summary = Summary(files=[str(p) for p in log_files(path)])
    last: list[dict[str, Any]] = []
    for event in read_events(path):
        if event.get("path") == "regoguard/lifecycle":
            continue  # a proxy starting, reloading, beating or stopping: not a call
        if event.get("path") == "regoguard/approval":
            summary.approvals[str(event.get("outcome", "")).removeprefix("approval_")] += 1
            continue
        summary.calls += 1
        outcome = str(event.get("outcome"))
        summary.outcomes[outcome] += 1
        if outcome in BLOCKED:
            if outcome != "held":  # waiting for a person is not a denial
                summary.blocked_by_rule[str(event.get("rule"))] += 1
                summary.blocked_by_tool[str(event.get("tool"))] += 1
            last.append({k: event.get(k) for k in ("timestamp", "decision_id", "outcome", "tool", "rule", "reason")})
            if len(last) > recent:
                last.pop(0)
    summary.recent = list(reversed(last))
    return summary
