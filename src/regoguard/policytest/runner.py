"""Run YAML test cases: each case's calls through a real :class:`Guard` (engine + limits) with fresh state.

A case gets its own ``MemoryStore`` and ``ManualClock``, so counters never leak between cases and
``advance:`` moves time without sleeping. The engine is shared by every case of a (policy, Rego) pair.
The input document is built as the proxy builds it (``proxy/session.py``); in particular the tool's
``inputSchema`` is sent only when the policy reads it, as the proxy does.
"""

from __future__ import annotations

import copy
import difflib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from regoguard import __version__
from regoguard.decision import Decision
from regoguard.engine import Engine
from regoguard.guard import Guard
from regoguard.limits import Limiter, MemoryStore
from regoguard.limits.clock import ManualClock
from regoguard.policytest.model import Advance, Call, Case, Context, Expect, SuiteFile

DEFAULT_PRINCIPAL = "tester"
DEFAULT_SESSION = "test-session"
PROTOCOL_VERSION = "2025-11-25"

LIMIT = "limit"
POLICY = "policy"


@dataclass(frozen=True)
class Mismatch:
    field: str
    expected: str
    actual: str


@dataclass(frozen=True)
class StepFailure:
    step: int  # 1-based, among the case's steps
    steps: int
    call: Call
    repetition: int  # 1-based
    decision: Decision
    mismatches: tuple[Mismatch, ...]
    hint: str | None = None


@dataclass
class CaseResult:
    suite: SuiteFile
    case: Case
    failure: StepFailure | None = None
    trace: list[str] = field(default_factory=list)
    bitten: set[tuple[str, str]] = field(default_factory=set)
    """(rule id, ``policy`` | ``limit``) of every denial the case expected and saw."""
    tools: set[str] = field(default_factory=set)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.failure is None


def actual_decision(d: Decision) -> str:
    """``allow``, ``deny`` or ``require_approval``: what the call got."""
    return "allow" if d.allow else d.action


def compare(expect: Expect, d: Decision) -> tuple[Mismatch, ...]:
    got = actual_decision(d)
    out: list[Mismatch] = []
    if expect.decision != got:
        out.append(Mismatch("decision", expect.decision, got))
    if expect.rule is not None and d.rule != expect.rule:
        out.append(Mismatch("rule", expect.rule, d.rule or "(none)"))
    if expect.message is not None and d.message != expect.message:
        out.append(Mismatch("message", expect.message, d.message or "(none)"))
    if expect.message_contains is not None and expect.message_contains not in (d.message or ""):
        out.append(Mismatch("message contains", expect.message_contains, d.message or "(none)"))
    return tuple(out)


def input_document(suite: SuiteFile, case: Case, call: Call, guard: Guard) -> dict[str, Any]:
    ctx = call.context.over(case.context).over(suite.context).over(
        Context(server=suite.policy.stem, principal=DEFAULT_PRINCIPAL, session=DEFAULT_SESSION, claims={},
                client={"name": "regoguard-test", "version": __version__}))
    doc: dict[str, Any] = {
        "tool": {"name": call.tool, "arguments": copy.deepcopy(call.args)},
        "server": {"name": ctx.server},
        "session": {"id": ctx.session, "client": copy.deepcopy(ctx.client), "protocol_version": PROTOCOL_VERSION},
        "principal": {"id": ctx.principal, "claims": copy.deepcopy(ctx.claims)},
    }
    schema = call.schema_for(suite.schemas)
    if schema is not None and guard.needs_schema(call.tool):
        doc["schema"] = copy.deepcopy(schema)
    if call.approved:
        doc["approval"] = {"granted": True}
    return doc


def describe(d: Decision) -> str:
    """One line: what a call got and why."""
    text = actual_decision(d)
    if d.reasons:
        text += f" by {d.rule}: {json.dumps(d.message, ensure_ascii=False)}"
        if len(d.reasons) > 1:
            text += " (also " + ", ".join(r.rule for r in d.reasons[1:]) + ")"
    return text


def rule_hint(engine: Engine, rule: str | None) -> str | None:
    """When an expected rule id is no rule of the policy: what the ids look like, and the closest one."""
    settings = engine.compiled.settings
    entries = [*settings["tools"].values(), *(g["entry"] for g in settings["globs"]), settings["unlisted"]]
    known = {"hide", "default"} | {r["id"] for e in entries for r in e.get("rules", ())}
    if rule is None or rule in known:
        return None
    close = difflib.get_close_matches(rule, sorted(known), n=1, cutoff=0.5)
    text = f"no rule of {settings['source']} has the id {rule!r}"
    text += f"; did you mean {close[0]!r}?" if close else ""
    return text + " (ids are <tool>/<name>, or <tool>/rules[<index>] for a rule without a name)"


def run_case(engine: Engine, suite: SuiteFile, case: Case) -> CaseResult:
    """Run one case against fresh limit state; stop at the first call that misses its expectation."""
    t0 = time.perf_counter()
    result = CaseResult(suite, case)
    clock = ManualClock()
    guard = Guard(engine, Limiter(MemoryStore(), clock=clock))
    for index, step in enumerate(case.steps, 1):
        if isinstance(step, Advance):
            clock.advance(step.seconds)
            result.trace.append(f"line {step.line}: advance {step.seconds:g}s")
            continue
        result.tools.add(step.tool)
        for rep in range(1, step.repeat + 1):
            decision = guard.decide(input_document(suite, case, step, guard)).decision
            mismatches = compare(step.expect, decision)
            if mismatches:
                result.failure = StepFailure(index, len(case.steps), step, rep, decision, mismatches,
                                             rule_hint(engine, step.expect.rule))
                result.seconds = time.perf_counter() - t0
                return result
            if not decision.allow:
                kind = LIMIT if "retry_after" in decision.extra else POLICY
                result.bitten.update((r.rule, kind) for r in decision.reasons)
        times = f" x{step.repeat}" if step.repeat > 1 else ""
        result.trace.append(f"line {step.line}: {step.tool}{times} -> {describe(decision)}")
    result.seconds = time.perf_counter() - t0
    return result
