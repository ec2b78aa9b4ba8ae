"""How results read: one line per test (``PASS file::name`` / ``FAIL ...``), an expected/actual diff under
each failure, ``ERROR file`` with compiler-style errors for files that do not load, and the summary
line ``N passed, N failed`` (``, N errors`` when there are any). ``--json`` gives the same as one document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from regoguard.errors import PolicyError
from regoguard.policytest.rego_tests import RegoOutcome
from regoguard.policytest.runner import CaseResult, describe


@dataclass
class Tally:
    passed: int = 0
    failed: int = 0
    errors: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    error_records: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.passed} passed, {self.failed} failed"
        if self.errors:
            text += f", {self.errors} error{'s' if self.errors != 1 else ''}"
        return text


def _indent(text: str, prefix: str) -> list[str]:
    return [prefix + line for line in text.splitlines()] or [prefix]


def case_lines(r: CaseResult, verbose: bool) -> list[str]:
    name = f"{r.suite.display}::{r.case.name}"
    if r.failure is None:
        return [f"PASS {name}", *(f"    {t}" for t in r.trace if verbose)]
    f = r.failure
    where = (f"step {f.step} of {f.steps}: " if f.steps > 1 else "") + f.call.tool
    if f.call.repeat > 1:
        where += f", call {f.repetition} of {f.call.repeat}"
    lines = [f"FAIL {name}"]
    if verbose and r.trace:
        lines += ["    before it:", *(f"      {t}" for t in r.trace)]
    lines.append(f"    {r.suite.display}:{f.call.line}: {where}")
    width = max(len(m.field) for m in f.mismatches)
    for m in f.mismatches:
        lines.append(f"      - expected {m.field:<{width}}  {m.expected}")
        lines.append(f"      + actual   {m.field:<{width}}  {m.actual}")
    lines.append(f"      the call got: {describe(f.decision)}")
    if f.hint and any(m.field == "rule" for m in f.mismatches):
        lines.append(f"      hint: {f.hint}")
    return lines


def case_record(r: CaseResult) -> dict[str, Any]:
    rec: dict[str, Any] = {"kind": "yaml", "file": r.suite.display, "line": r.case.line, "name": r.case.name,
                           "status": "pass" if r.passed else "fail", "seconds": round(r.seconds, 4)}
    if r.failure is not None:
        f = r.failure
        rec["failure"] = {
            "line": f.call.line, "step": f.step, "repetition": f.repetition, "tool": f.call.tool,
            "mismatches": [{"field": m.field, "expected": m.expected, "actual": m.actual} for m in f.mismatches],
            "decision": f.decision.to_json(),
        }
    return rec


def rego_name(o: RegoOutcome, label: str | None) -> str:
    return f"{o.test.module}::{o.test.query}" + (f" [{label}]" if label else "")


def rego_lines(o: RegoOutcome, label: str | None, verbose: bool) -> list[str]:
    name = rego_name(o, label)
    if o.passed:
        return [f"PASS {name}", *(_indent(o.output.rstrip(), "    | ") if verbose and o.output.strip() else [])]
    first, *rest = o.message.splitlines() or [""]
    lines = [f"FAIL {name}", f"    {o.test.module}:{o.test.line}: {first}", *(f"      {ln}" for ln in rest)]
    if o.output.strip():
        lines += ["    output:", *_indent(o.output.rstrip(), "    | ")]
    return lines


def rego_record(o: RegoOutcome, label: str | None) -> dict[str, Any]:
    rec: dict[str, Any] = {"kind": "rego", "file": o.test.module, "line": o.test.line, "name": o.test.query,
                           "status": "pass" if o.passed else "fail", "seconds": round(o.seconds, 4)}
    if label:
        rec["policy"] = label
    if not o.passed:
        rec["failure"] = {"message": o.message}
    if o.output:
        rec["output"] = o.output
    return rec


def error_lines(title: str, errors: list[PolicyError], shown: set[str]) -> list[str]:
    """``ERROR title`` and each error not printed before (several test files may share a broken policy)."""
    lines = [f"ERROR {title}"]
    fresh = [e for e in errors if str(e) not in shown]
    for e in fresh:
        shown.add(str(e))
        lines.append(str(e))
    if errors and not fresh:
        lines.append("    (the same errors as above)")
    return lines


def error_record(title: str, errors: list[PolicyError]) -> dict[str, Any]:
    return {"file": title, "errors": [{"file": e.file, "line": e.line, "column": e.column, "path": e.key_path,
                                       "message": e.message, "hint": e.hint} for e in errors]}
