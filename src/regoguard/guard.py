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
from dataclasses import dataclass, field
from typing import Any

from regoguard.approvals import ApprovalBook, ApprovalRecord, canonical_arguments, fingerprint
from regoguard.approvals.record import APPROVED, DENIED, iso
from regoguard.approvals.stores import MemoryApprovals
from regoguard.approvals.webhook import Webhook
from regoguard.audit.decision_log import DecisionLog
from regoguard.audit.lifecycle import Tally
from regoguard.audit.masking import MaskingRules, mask_arguments
from regoguard.decision import Decision, Reason
from regoguard.engine import Engine
from regoguard.limits.limiter import LimitDenial, Limiter, Taken
from regoguard.limits.store import StoreError
from regoguard.metrics import Metrics
from regoguard.policy.model import DEFAULT_APPROVAL_TIMEOUT

MAX_SHOWN_ARGUMENTS = 64 * 1024
"""How much of a held call's arguments an approval keeps to show the approver (canonical JSON, bytes)."""


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
        if self.decision.action == "require_approval" and self.approval is not None:
            out["approval_id"] = self.approval.id
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

    def decide(self, doc: dict[str, Any], size_hint: int | None = None, elicit: bool = False) -> Verdict:
        """Decide one call. Never raises: an unexpected failure is a deny.

        A call a rule holds for a person comes back with ``hold`` set. With ``elicit`` (the client can be
        asked) and the rule's approver the agent's user, the transport asks and then calls :meth:`granted`.
        Otherwise the approval store answers: an approved approval for this exact call is consumed and the
        call decided as approved (limits taken now); a denied one denies; else a pending one is asked for
        (or the one already pending named again).
        """
        verdict = self._decide(doc, size_hint)
        if verdict.decision.action != "require_approval" or self.dry_run:
            return verdict
        verdict.hold = self.hold_of(verdict.decision, doc["tool"]["name"])
        if elicit and verdict.hold.approver == "user":
            return verdict
        try:
            return self._out_of_band(verdict)
        except StoreError as exc:
            verdict.decision = Decision.deny("approvals/store-error", f"the approval store failed: {exc}")
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
        outcome = self.limiter.take(decision.charges, *_who(doc))
        if self.metrics is not None:
            self.metrics.limit_seconds.observe(time.perf_counter() - started)
        if isinstance(outcome, LimitDenial):
            verdict.decision = Decision(False, "deny", (Reason(outcome.rule, outcome.message),), (),
                                        decision.cached, decision.eval_ns, {"retry_after": outcome.retry_after})
        else:
            verdict.taken = outcome
        return verdict

    # -- approvals ---------------------------------------------------------------------------------------

    def hold_of(self, decision: Decision, tool: str) -> Hold:
        """The hold a require_approval decision on a call to ``tool`` asks for: its first reason's rule; the
        shortest timeout and an operator if any of its rules say so (team Rego's approvals: the defaults)."""
        rules = {r["id"]: r.get("approval", {}) for r in self.engine.compiled.entry_for(tool).get("rules", ())
                 if "approval" in r}
        asked = [rules.get(r.rule, {}) for r in decision.reasons]
        timeout = min((a.get("timeout", DEFAULT_APPROVAL_TIMEOUT) for a in asked), default=DEFAULT_APPROVAL_TIMEOUT)
        approver = "operator" if any(a.get("approver") == "operator" for a in asked) else "user"
        return Hold(decision.rule or "rego", decision.message or "", timeout, approver)

    def fingerprint_of(self, verdict: Verdict) -> str:
        server, principal, _ = _who(verdict.doc)
        return fingerprint(principal, server, verdict.doc["tool"]["name"], verdict.doc["tool"].get("arguments") or {},
                           verdict.revision or "")

    def new_record(self, verdict: Verdict, approval_id: str, now: float) -> ApprovalRecord:
        """A pending approval for the held call ``verdict`` (arguments masked as the decision log masks them)."""
        assert verdict.hold is not None
        hold = verdict.hold
        server, principal, _ = _who(verdict.doc)
        arguments: Any = verdict.doc["tool"].get("arguments") or {}
        if self.masking is not None:
            arguments = mask_arguments(arguments, self.masking)[0]
        shown = canonical_arguments(arguments)
        if len(shown) > MAX_SHOWN_ARGUMENTS:
            shown = shown[:MAX_SHOWN_ARGUMENTS] + " [cut short]"
        return ApprovalRecord(approval_id, self.fingerprint_of(verdict), "pending", now, now + hold.timeout,
                              hold.timeout, verdict.doc["tool"]["name"], server, principal, hold.rule, hold.message,
                              hold.approver, shown, verdict.revision or "")

    def _out_of_band(self, verdict: Verdict) -> Verdict:
        book = self.approvals
        if book is None:
            return verdict  # nobody can approve: answered as held, with no approval id
        fp = self.fingerprint_of(verdict)
        for _ in range(3):  # an approved approval another proxy consumed first: ask again
            record, _created = book.ask(fp, lambda i, now: self.new_record(verdict, i, now))
            if record.status == DENIED:
                why = f": {record.reason}" if record.reason else ""
                verdict.decision = Decision(False, "deny", (Reason(
                    "approval/denied", f"{record.decided_by or 'a person'} denied approval {record.id} for this "
                    f"call{why}"),), (), extra={"approval_id": record.id})
                verdict.approval = record
                return verdict
            if record.status != APPROVED:
                verdict.approval = record
                verdict.approval_local = isinstance(book.store, MemoryApprovals)
                return verdict
            used = book.consume(record.id)
            if used is not None:
                return self._run_approved(verdict, used)
        verdict.decision = Decision.deny("approvals/contended", "the approval for this call kept changing; retry")
        return verdict

    def _run_approved(self, held: Verdict, used: ApprovalRecord) -> Verdict:
        """Decide the held call again as approved; give the approval back if that does not allow it."""
        verdict = self.granted(held)
        verdict.approval = used
        if not verdict.decision.allow and self.approvals is not None:
            self.approvals.restore(used.id, f"the approved call was denied: {verdict.decision.message}")
            verdict.approval = None
        return verdict

    def granted(self, held: Verdict) -> Verdict:
        """The held call decided again with a person's approval (``input.approval.granted``), its limits
        taken now; a denial (a limit, a policy reloaded meanwhile) stands."""
        verdict = self._decide({**held.doc, "approval": {"granted": True}})
        verdict.trace = held.trace
        verdict.doc = held.doc
        if verdict.decision.action == "require_approval":  # never a second hold for one approved call
            verdict.decision = Decision.deny(held.decision.rule or "approval", "the call still needs approval")
        return verdict

    def approval_event(self, kind: str, record: ApprovalRecord, **extra: Any) -> None:
        """Write an approval's event (the transport's own: elicitation asked, answered, timed out). Never
        announced by the webhook: such an approval is the user's to answer, and is in no store."""
        if self.log is not None:
            self.log.approval(kind, record, extra)

    def _approval_event(self, kind: str, record: ApprovalRecord, extra: dict[str, Any]) -> None:
        """The store's approvals: logged, and a new pending one announced."""
        if self.log is not None:
            self.log.approval(kind, record, extra)
        if kind == "requested" and self.webhook is not None:
            self.webhook.announce(record.view(time.time()))

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
        used = verdict.approval
        if (answered and upstream_error is not None and used is not None and used.status == "consumed"
                and self.approvals is not None):
            try:
                self.approvals.restore(used.id, "the server answered the approved call with an error")
            except StoreError as exc:
                print(f"regoguard: could not give approval {used.id} back: {exc}", file=sys.stderr, flush=True)
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
    "pin/changed", "rego/malformed", "rego/invalid-charge", "rego", "hide", "default", "approval/denied",
    "approval/declined", "approval/timeout", "approvals/store-error", "approvals/contended", "approval",
})


def _who(doc: dict[str, Any]) -> tuple[str, str, str]:
    def get(section: str, key: str) -> str:
        value = doc.get(section)
        value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, str) else ""

    return get("server", "name"), get("principal", "id"), get("session", "id")
