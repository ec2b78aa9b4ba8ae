"""The one door every tool call goes through: engine decision (+ limits, + decision log, later).

Transports call :meth:`Guard.decide` and act on the :class:`Verdict`; they never look at policy
themselves. The guard fails closed: whatever goes wrong while deciding is a deny.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from regoguard.decision import Decision, Reason
from regoguard.engine import Engine
from regoguard.limits.limiter import LimitDenial, Limiter, Taken


@dataclass(frozen=True)
class Verdict:
    """A decision with the id that names it in denials and in the decision log."""

    decision_id: str
    decision: Decision
    taken: Taken | None = None

    @property
    def allow(self) -> bool:
        return self.decision.allow

    def meta(self) -> dict[str, Any]:
        """What a denial carries in ``_meta["regoguard/decision"]``."""
        return {
            "decision_id": self.decision_id,
            "rule": self.decision.rule,
            "reason": self.decision.message,
        }


class Guard:
    """Decides tool calls for one loaded policy."""

    def __init__(self, engine: Engine, limiter: Limiter | None = None) -> None:
        self.engine = engine
        self.limiter = limiter

    def is_hidden(self, name: str) -> bool:
        """True when the policy hides ``name`` from ``tools/list``."""
        return bool(self.engine.compiled.entry_for(name).get("hidden"))

    def needs_schema(self, name: str) -> bool:
        """True when deciding a call to ``name`` reads the tool's ``inputSchema``."""
        rules = self.engine.compiled.entry_for(name).get("rules", ())
        return any(r.get("validate_required") for r in rules)

    def reject(self, rule: str, message: str) -> Verdict:
        """A denial the transport makes before the policy can look (e.g. params that do not parse)."""
        return Verdict(str(uuid.uuid4()), Decision.deny(rule, message))

    def decide(self, doc: dict[str, Any], size_hint: int | None = None) -> Verdict:
        """Decide one call. Never raises: an unexpected failure is a deny."""
        decision_id = str(uuid.uuid4())
        try:
            decision = self.engine.evaluate(doc, size_hint)
        except Exception as exc:  # the engine does not raise by contract; if it ever does, deny
            decision = Decision.deny("guard/error", f"the guard could not decide: {exc}")
        if not decision.allow or not decision.charges or self.limiter is None:
            return Verdict(decision_id, decision)
        outcome = self.limiter.take(decision.charges, *_who(doc))
        if isinstance(outcome, LimitDenial):
            denied = Decision(False, "deny", (Reason(outcome.rule, outcome.message),), (),
                              decision.cached, decision.eval_ns, {"retry_after": outcome.retry_after})
            return Verdict(decision_id, denied)
        return Verdict(decision_id, decision, outcome)

    def refund(self, verdict: Verdict) -> None:
        """Give back what an allowed call took: the server answered it with an error."""
        if self.limiter is not None and verdict.taken is not None:
            self.limiter.refund(verdict.taken)

    def end_session(self, session_id: str) -> None:
        """Session-scoped buckets go with their session."""
        if self.limiter is not None:
            self.limiter.forget_session(session_id)


def _who(doc: dict[str, Any]) -> tuple[str, str, str]:
    def get(section: str, key: str) -> str:
        value = doc.get(section)
        value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, str) else ""

    return get("server", "name"), get("principal", "id"), get("session", "id")
