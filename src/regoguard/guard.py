"""The one door every tool call goes through: engine decision, then limits, then the decision log.

Transports call :meth:`Guard.decide`, act on the :class:`Verdict`, and call :meth:`Guard.finish` once
the call's fate is known (denied at once, or answered by the server); they never look at policy
themselves. The guard fails closed: whatever goes wrong while deciding is a deny. Its log fails open.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from regoguard.audit.decision_log import DecisionLog
from regoguard.decision import Decision, Reason
from regoguard.engine import Engine
from regoguard.limits.limiter import LimitDenial, Limiter, Taken
from regoguard.metrics import Metrics


@dataclass
class Verdict:
    """A decision with the id that names it in denials and in the decision log.

    ``decision`` is what the policy and the limits decided; ``allow`` is what the transport does with the
    call, which in dry run is always to forward it.
    """

    decision_id: str
    decision: Decision
    taken: Taken | None = None
    revision: str | None = None
    """The policy revision that decided the call (hot reload may swap policies between calls)."""
    dry_run: bool = False
    doc: dict[str, Any] = field(default_factory=dict, repr=False)
    finished: bool = False
    trace: dict[str, str] | None = None
    """W3C trace context from the call's ``_meta`` (``traceparent``, ``tracestate``), for the decision event."""
    started: float = field(default_factory=time.perf_counter)

    @property
    def allow(self) -> bool:
        return self.decision.allow or self.dry_run

    @property
    def would_deny(self) -> bool:
        return self.dry_run and not self.decision.allow

    def meta(self) -> dict[str, Any]:
        """What a denial carries in ``_meta["regoguard/decision"]``."""
        return {
            "decision_id": self.decision_id,
            "action": self.decision.action,
            "rule": self.decision.rule,
            "reason": self.decision.message,
        }


class Guard:
    """Decides tool calls for one loaded policy.

    Args:
        engine: the compiled policy's engine.
        limiter: takes the charges of allowed calls (None: limits are not enforced).
        log: the decision log (None: no events).
        dry_run: decide, count and log every call, but block none.
    """

    def __init__(
        self,
        engine: Engine,
        limiter: Limiter | None = None,
        log: DecisionLog | None = None,
        dry_run: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.limiter = limiter
        self.log = log
        self.dry_run = dry_run
        self.metrics = metrics
        if limiter is not None and metrics is not None:
            limiter.metrics = metrics
        self._finish_lock = threading.Lock()

    def swap(self, engine: Engine, dry_run: bool | None = None) -> Engine:
        """Decide every later call with ``engine`` (hot reload); return the engine it replaces.

        A call reads ``self.engine`` once, so it is decided wholly by the old policy or wholly by the new
        one. The caller closes the old engine once calls already inside it have had time to finish.
        """
        old, self.engine = self.engine, engine
        if dry_run is not None:
            self.dry_run = dry_run
        return old

    def is_hidden(self, name: str) -> bool:
        """True when the policy hides ``name`` from ``tools/list``: ``hide``, or a name no key matches
        under ``default: deny`` with ``hide_unlisted: true``."""
        entry = self.engine.compiled.entry_for(name)
        return bool(entry.get("hidden")) or entry.get("listed") is False

    def has_visibility(self, name: str) -> bool:
        """True when whether ``name`` exists depends on who asks (its key has ``visible_to``)."""
        return bool(self.engine.compiled.entry_for(name).get("visible_to"))

    def visible(self, doc: dict[str, Any]) -> bool:
        """Whether the tool ``doc`` names exists for the caller ``doc`` describes: the engine decides a call
        to it with no arguments, and only its ``visible_to`` rule is looked at (no limit is taken). Anything
        but a clean answer (the input refused, an engine error) counts as not visible."""
        try:
            decision = self.engine.evaluate(doc)
        except Exception:
            return False
        rules = {r.rule for r in decision.reasons}
        if any(rule.startswith(("engine/", "guard/", "rego/")) for rule in rules):
            return False
        return f"{self.engine.compiled.key_for(doc['tool']['name'])}/visible_to" not in rules

    def needs_schema(self, name: str) -> bool:
        """True when deciding a call to ``name`` reads the tool's ``inputSchema``."""
        rules = self.engine.compiled.entry_for(name).get("rules", ())
        return any(r.get("validate_required") or r.get("validate_schema") for r in rules)

    def reject(self, rule: str, message: str, doc: dict[str, Any] | None = None) -> Verdict:
        """A denial the transport makes before the policy can look (e.g. params that do not parse).
        Enforced in dry run too: such a call cannot be decided, so it is not forwarded."""
        return Verdict(str(uuid.uuid4()), Decision.deny(rule, message), doc=doc or {})

    def decide(self, doc: dict[str, Any], size_hint: int | None = None) -> Verdict:
        """Decide one call. Never raises: an unexpected failure is a deny."""
        decision_id = str(uuid.uuid4())
        engine = self.engine  # once: a reload between here and the end must not mix two policies
        try:
            decision = engine.evaluate(doc, size_hint)
        except Exception as exc:  # the engine does not raise by contract; if it ever does, deny
            decision = Decision.deny("guard/error", f"the guard could not decide: {exc}")
        verdict = Verdict(decision_id, decision, dry_run=self.dry_run, doc=doc, revision=engine.revision)
        if self.metrics is not None:
            self.metrics.decision_seconds.observe(decision.eval_ns / 1e9)
        if not decision.allow or not decision.charges or self.limiter is None:
            return verdict
        started = time.perf_counter()
        outcome = self.limiter.take(decision.charges, *_who(doc))
        if self.metrics is not None:
            self.metrics.limit_seconds.observe(time.perf_counter() - started)
        if isinstance(outcome, LimitDenial):
            verdict.decision = Decision(False, "deny", (Reason(outcome.rule, outcome.message),), (),
                                        decision.cached, decision.eval_ns, {"retry_after": outcome.retry_after})
        else:
            verdict.taken = outcome
        return verdict

    def refund(self, verdict: Verdict) -> None:
        """Give back what an allowed call took (the server answered it with an error)."""
        if self.limiter is not None and verdict.taken is not None:
            self.limiter.refund(verdict.taken)

    def finish(self, verdict: Verdict, upstream_error: Any = None, refund: bool = False) -> None:
        """The call's fate is known: refund it if asked, and write its one decision event.

        ``upstream_error`` is the server's error (or a note that it never answered); ``refund`` is whether
        its tokens come back (a JSON-RPC error: yes; a server that died mid-call may have done the work:
        no). Calling this twice for one verdict does nothing the second time.
        """
        with self._finish_lock:
            if verdict.finished:
                return
            verdict.finished = True
        if refund:
            self.refund(verdict)
        if not verdict.decision.allow:
            outcome = "would_deny" if verdict.dry_run else "denied"
        else:
            outcome = "upstream_error" if upstream_error is not None else "allowed"
        if self.metrics is not None:
            self._count(verdict, outcome)
        if self.log is None:
            return
        self.log.record(verdict.decision_id, verdict.doc, verdict.decision, outcome,
                        "dry_run" if verdict.dry_run else "enforce", upstream_error, verdict.revision, verdict.trace)

    def _rule_label(self, rule: str) -> str:
        """A rule id of the policy or of regoguard itself; a team Rego rule id (which Rego may build from
        the input) is counted as ``rego/team``, so the label stays bounded."""
        if not rule or rule in _OWN_RULES:
            return rule
        known = self.__dict__.get("_known_rules")
        if known is None or known[0] is not self.engine:
            ids = {r["id"] for u in self.engine.compiled.units.values() for r in u.entry.get("rules", ())}
            known = (self.engine, ids)
            self.__dict__["_known_rules"] = known
        return rule if rule in known[1] else "rego/team"

    def _count(self, verdict: Verdict, outcome: str) -> None:
        assert self.metrics is not None
        tool = verdict.doc.get("tool")
        name = tool.get("name") if isinstance(tool, dict) else None
        key = self.engine.compiled.key_for(name) if isinstance(name, str) else None
        rule = verdict.decision.rule if not verdict.decision.allow else ""
        self.metrics.decisions.labels(outcome, key or "*", self._rule_label(rule or "")).inc()
        if verdict.decision.allow and outcome in ("allowed", "upstream_error"):
            self.metrics.upstream_seconds.observe(time.perf_counter() - verdict.started)

    def tool_changed(self, tool: str, reason: str, fields: list[str], action: str, session: str | None,
                     server: str | None) -> None:
        """A pinned server's tool is new or changed: the decision log says so (and what changed)."""
        if self.log is not None:
            self.log.tool_changed(tool, reason, fields, action, session, server)

    def end_session(self, session_id: str) -> None:
        """Session-scoped buckets go with their session."""
        if self.limiter is not None:
            self.limiter.forget_session(session_id)


_OWN_RULES = frozenset({
    "proxy/duplicate-id", "proxy/no-id", "proxy/invalid-params", "engine/input", "engine/input-too-large",
    "engine/error", "engine/timeout", "engine/malformed", "engine/undefined", "guard/error", "limits/store-error",
    "pin/changed", "rego/malformed", "rego/invalid-charge", "rego", "hide", "default",
})


def _who(doc: dict[str, Any]) -> tuple[str, str, str]:
    def get(section: str, key: str) -> str:
        value = doc.get(section)
        value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, str) else ""

    return get("server", "name"), get("principal", "id"), get("session", "id")
