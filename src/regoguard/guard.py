"""The one door every tool call goes through: engine decision, then limits, then the decision log.

Transports call :meth:`Guard.decide`, act on the :class:`Verdict`, and call :meth:`Guard.finish` once
the call's fate is known (denied at once, or answered by the server); they never look at policy
themselves. The guard fails closed: whatever goes wrong while deciding is a deny. Its log fails open.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from regoguard import guard_holds
from regoguard.approvals import ApprovalBook, ApprovalRecord
from regoguard.approvals.record import iso
from regoguard.approvals.webhook import Webhook
from regoguard.audit.decision_log import DecisionLog
from regoguard.audit.lifecycle import Tally
from regoguard.audit.masking import MaskingRules
from regoguard.decision import Decision, Reason
from regoguard.engine import Engine
from regoguard.limits.limiter import LimitDenial, Limiter, Taken
from regoguard.limits.store import StoreError
from regoguard.metrics import Metrics


@dataclass(frozen=True)
class Hold:
    """Why a call waits for a person: the rule that asked, its message, how long, and who answers."""

    rule: str
    message: str
    timeout: int
    approver: str


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
    hold: Hold | None = None
    """Set when the call waits for a person (``action: require_approval``)."""
    approval: ApprovalRecord | None = None
    """The approval that holds the call (pending) or that it runs under (consumed)."""
    approval_local: bool = False
    """The approval is in this process's memory (``--state memory``): no ``regoguard approvals`` reaches it."""
    arguments_text: Callable[[], str] | None = field(default=None, repr=False)
    """The arguments' JSON as the client sent it (for the approval's fingerprint), when the transport has it."""

    @property
    def allow(self) -> bool:
        return self.decision.allow or self.dry_run

    @property
    def would_deny(self) -> bool:
        return self.dry_run and not self.decision.allow

    def meta(self) -> dict[str, Any]:
        """What a denial carries in ``_meta["regoguard/decision"]``."""
        out = {
            "decision_id": self.decision_id,
            "action": self.decision.action,
            "rule": self.decision.rule,
            "reason": self.decision.message,
        }
        if self.approval is not None:
            out["approval_id"] = self.approval.id
            if self.decision.action == "require_approval":
                out["expires_at"] = iso(self.approval.expires_at)
                out["approver"] = self.approval.approver
        return out


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
        approvals: ApprovalBook | None = None,
        webhook: Webhook | None = None,
        masking: MaskingRules | None = None,
    ) -> None:
        self.engine = engine
        self.limiter = limiter
        self.log = log
        self.dry_run = dry_run
        self.metrics = metrics
        self.approvals = approvals
        self.webhook = webhook
        self.tally: Tally | None = None
        """Counts of finished calls for ``regoguard status`` (None: not kept)."""
        self.masking = masking if masking is not None else (log.masking if log is not None else None)
        """How a held call's arguments are shown to its approver (the decision log's masking)."""
        if approvals is not None:
            approvals.on_event = self._approval_event
        if limiter is not None and metrics is not None:
            limiter.metrics = metrics
        self._finish_lock = threading.Lock()
        self._counters: dict[tuple[str, str, str], Any] = {}

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

    def decide(self, doc: dict[str, Any], size_hint: int | None = None, elicit: bool = False,
               arguments_text: Callable[[], str] | None = None) -> Verdict:
        """Decide one call. Never raises: an unexpected failure is a deny.

        A call a rule holds for a person comes back with ``hold`` set. With ``elicit`` (the client can be
        asked) and the rule's approver the agent's user, the transport asks and then calls :meth:`granted`.
        Otherwise the approval store answers: an approved approval for this exact call is consumed and the
        call decided as approved (limits taken now); a denied one denies; else a pending one is asked for
        (or the one already pending named again). ``arguments_text`` gives the arguments' JSON as the
        client sent it, so an approval is bound to the exact numbers the server will read.
        """
        verdict = self._decide(doc, size_hint)
        if verdict.decision.action != "require_approval" or self.dry_run:
            return verdict
        verdict.arguments_text = arguments_text
        try:
            verdict.hold = guard_holds.hold_of(self, verdict.decision, doc["tool"]["name"])
            return guard_holds.settle_hold(self, verdict, elicit)
        except StoreError as exc:
            verdict.decision = Decision.deny("approvals/store-error", f"the approval store failed: {exc}")
        except Exception as exc:  # a corrupt record, a masking failure: never an allow, never a raise
            verdict.decision = Decision.deny("approvals/error", f"the approval could not be looked up: {exc}")
        verdict.approval = None
        return verdict

    def _decide(self, doc: dict[str, Any], size_hint: int | None = None) -> Verdict:
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
        outcome = self.limiter.take(decision.charges, *who(doc))
        if self.metrics is not None:
            self.metrics.limit_seconds.observe(time.perf_counter() - started)
        if isinstance(outcome, LimitDenial):
            verdict.decision = Decision(False, "deny", (Reason(outcome.rule, outcome.message),), (),
                                        decision.cached, decision.eval_ns, {"retry_after": outcome.retry_after})
        else:
            verdict.taken = outcome
        return verdict

    # -- approvals ---------------------------------------------------------------------------------------

    def plain_decide(self, doc: dict[str, Any]) -> Verdict:
        """The policy's and the limits' decision alone, no approval flow (for an approved retry)."""
        return self._decide(doc)

    def new_record(self, verdict: Verdict, approval_id: str, now: float) -> ApprovalRecord:
        """A pending approval for the held call ``verdict`` (the transport's, for elicitation)."""
        return guard_holds.new_record(self, verdict, approval_id, now)

    def granted(self, held: Verdict) -> Verdict:
        """The held call decided again with a person's approval, its limits taken now (see guard_holds)."""
        try:
            return guard_holds.granted(self, held)
        except Exception as exc:
            held.decision = Decision.deny("approvals/error", f"the approval could not be applied: {exc}")
            return held

    def approval_event(self, kind: str, record: ApprovalRecord, **extra: Any) -> None:
        """Write an approval's event (the transport's own: elicitation asked, answered, timed out). Never
        announced by the webhook: such an approval is the user's to answer, and is in no store."""
        if self.log is not None:
            self.log.approval(kind, record, extra)

    def _approval_event(self, kind: str, record: ApprovalRecord, extra: dict[str, Any]) -> None:
        guard_holds.announce(self, kind, record, extra)

    def refund(self, verdict: Verdict) -> None:
        """Give back what an allowed call took (the server answered it with an error)."""
        if self.limiter is not None and verdict.taken is not None:
            self.limiter.refund(verdict.taken)

    def finish(self, verdict: Verdict, upstream_error: Any = None, refund: bool = False,
               answered: bool = False) -> None:
        """The call's fate is known: refund it if asked, and write its one decision event.

        ``upstream_error`` is the server's error (or a note that it never answered); ``refund`` is whether
        its tokens come back (a JSON-RPC error: yes; a server that died mid-call may have done the work:
        no); ``answered``: the server answered (with that error, if any), so a consumed approval whose call
        failed goes back to approved. Calling this twice for one verdict does nothing the second time.
        """
        with self._finish_lock:
            if verdict.finished:
                return
            verdict.finished = True
        if refund:
            self.refund(verdict)
        try:
            guard_holds.end_use(self, verdict, upstream_error, answered)
        except Exception as exc:  # the answer still goes to the client; the approval stays as it was
            print(f"regoguard: could not settle approval {verdict.approval.id if verdict.approval else '?'}: {exc}",
                  file=sys.stderr, flush=True)
        if not verdict.decision.allow:
            if verdict.dry_run:
                outcome = "would_deny"
            else:
                outcome = "held" if verdict.decision.action == "require_approval" else "denied"
        else:
            outcome = "upstream_error" if upstream_error is not None else "allowed"
        if self.metrics is not None:
            self._count(verdict, outcome)
        if self.tally is not None:
            tool = verdict.doc.get("tool")
            self.tally.record(outcome, tool.get("name") if isinstance(tool, dict) else None, verdict.decision.rule,
                              verdict.decision.message)
        if self.log is None:
            return
        self.log.record(verdict.decision_id, verdict.doc, verdict.decision, outcome,
                        "dry_run" if verdict.dry_run else "enforce", upstream_error, verdict.revision, verdict.trace,
                        verdict.approval.id if verdict.approval is not None else None)

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
        labels = (outcome, key or "*", self._rule_label(rule or ""))
        counter = self._counters.get(labels)
        if counter is None:  # prometheus_client's labels() costs more than the count; its children are kept
            counter = self.metrics.decisions.labels(*labels)
            if len(self._counters) < 10_000:
                self._counters[labels] = counter
        counter.inc()
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
    "proxy/duplicate-id", "proxy/no-id", "proxy/batch", "proxy/invalid-params", "engine/input",
    "engine/input-too-large", "engine/error", "engine/timeout", "engine/malformed", "engine/undefined", "guard/error",
    "limits/store-error",
    "pin/changed", "rego/malformed", "rego/invalid-charge", "rego", "hide", "default", "approval/denied",
    "approval/declined", "approval/timeout", "approvals/store-error", "approvals/contended", "approval",
    "approval/in-use", "approval/too-large", "approval/policy-changed", "approval/cancelled", "approval/server-gone",
    "approvals/error",
})


def who(doc: dict[str, Any]) -> tuple[str, str, str]:
    """(server name, principal id, session id) of a call's input document (empty strings when absent)."""
    def get(section: str, key: str) -> str:
        value = doc.get(section)
        value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, str) else ""

    return get("server", "name"), get("principal", "id"), get("session", "id")
