"""What the guard does with a call a rule holds for a person (``action: require_approval``).

The approval store answers the call when it can: an approved approval for this exact call is consumed
and the call decided again as approved (limits taken then); a denied one denies; one being used by the
identical call now running makes this one wait. Otherwise a pending approval is asked for (or the one
already pending named again), or the transport asks the agent's user (elicitation), when it can and the
arguments fit on the form. Every answer is bound to the policy revision that asked.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from regoguard.approvals import ApprovalRecord, canonical_arguments, fingerprint
from regoguard.approvals.record import APPROVED, DENIED, PENDING, RUNNING
from regoguard.approvals.stores import MemoryApprovals
from regoguard.audit.masking import mask_arguments
from regoguard.decision import Decision, Reason
from regoguard.policy.model import DEFAULT_APPROVAL_TIMEOUT

if TYPE_CHECKING:
    from regoguard.guard import Guard, Hold, Verdict

MAX_SHOWN_ARGUMENTS = 64 * 1024
"""The largest arguments (masked canonical JSON, bytes) a person is asked to approve out of band: what is
approved is always shown whole, so a larger call is denied rather than approved unseen."""
MAX_ASKED_ARGUMENTS = 2000
"""The largest arguments an elicitation form shows; a larger call is held out of band instead."""


def hold_of(guard: Guard, decision: Decision, tool: str) -> Hold:
    """The hold a require_approval decision on a call to ``tool`` asks for: its first reason's rule; the
    shortest timeout and an operator if any of its rules say so (team Rego's approvals: the defaults)."""
    from regoguard.guard import Hold

    rules = {r["id"]: r.get("approval", {}) for r in guard.engine.compiled.entry_for(tool).get("rules", ())
             if "approval" in r}
    asked = [rules.get(r.rule, {}) for r in decision.reasons]
    timeout = min((a.get("timeout", DEFAULT_APPROVAL_TIMEOUT) for a in asked), default=DEFAULT_APPROVAL_TIMEOUT)
    approver = "operator" if any(a.get("approver") == "operator" for a in asked) else "user"
    return Hold(decision.rule or "rego", decision.message or "", timeout, approver)


def shown_arguments(guard: Guard, verdict: Verdict) -> str:
    """The held call's arguments as a person sees them: canonical JSON, erased and masked as the decision
    log does it, but never replaced by a hash (``hash_arguments``): nobody approves what they cannot read."""
    arguments: Any = verdict.doc["tool"].get("arguments") or {}
    if guard.masking is not None:
        arguments = mask_arguments(arguments, dataclasses.replace(guard.masking, hash_arguments=False))[0]
    return canonical_arguments(arguments)


def fingerprint_of(verdict: Verdict) -> str:
    from regoguard.guard import who

    server, principal, _ = who(verdict.doc)
    text = verdict.arguments_text() if verdict.arguments_text is not None else None
    return fingerprint(principal, server, verdict.doc["tool"]["name"], verdict.doc["tool"].get("arguments") or {},
                       verdict.revision or "", text)


def new_record(guard: Guard, verdict: Verdict, approval_id: str, now: float, fp: str | None = None,
               shown: str | None = None) -> ApprovalRecord:
    """A pending approval for the held call ``verdict`` (``fp``, ``shown``: its fingerprint and shown
    arguments, when the caller has them already)."""
    from regoguard.guard import who

    assert verdict.hold is not None
    hold = verdict.hold
    server, principal, _ = who(verdict.doc)
    return ApprovalRecord(approval_id, fp or fingerprint_of(verdict), PENDING, now, now + hold.timeout, hold.timeout,
                          verdict.doc["tool"]["name"], server, principal, hold.rule, hold.message, hold.approver,
                          shown if shown is not None else shown_arguments(guard, verdict), verdict.revision or "")


def _deny(verdict: Verdict, rule: str, message: str, record: ApprovalRecord | None = None) -> Verdict:
    verdict.decision = Decision(False, "deny", (Reason(rule, message),), (),
                                extra={"approval_id": record.id} if record is not None else {})
    verdict.approval = record
    return verdict


def settle_hold(guard: Guard, verdict: Verdict, elicit: bool) -> Verdict:
    """Decide what becomes of a held call (see the module's docstring)."""
    assert verdict.hold is not None
    shown = shown_arguments(guard, verdict)
    if len(shown) > MAX_SHOWN_ARGUMENTS:
        return _deny(verdict, "approval/too-large", f"the call needs approval, but its arguments ({len(shown)} bytes) "
                     f"are more than a person can be shown in full ({MAX_SHOWN_ARGUMENTS}), so it is not run")
    book = guard.approvals
    if book is None:  # nobody can approve out of band: the user is asked if possible, else it is held
        return verdict
    fp = fingerprint_of(verdict)
    if elicit and verdict.hold.approver == "user" and len(shown) <= MAX_ASKED_ARGUMENTS:
        answered = book.live(fp)
        if answered is None or answered.status == PENDING:
            return verdict  # the transport asks the user; only an answer given out of band stands first
    for _ in range(3):  # an approved approval another proxy consumed first: look again
        record, _created = book.ask(fp, lambda i, now: new_record(guard, verdict, i, now, fp, shown))
        if record.status == DENIED:
            why = f": {record.reason}" if record.reason else ""
            return _deny(verdict, "approval/denied", f"{record.decided_by or 'a person'} denied approval "
                         f"{record.id} for this call{why}", record)
        if record.status == RUNNING:
            return _deny(verdict, "approval/in-use", f"approval {record.id} is being used by the identical call "
                         "running now; make the call again once that one has finished", record)
        if record.status != APPROVED:
            verdict.approval = record
            verdict.approval_local = isinstance(book.store, MemoryApprovals)
            return verdict
        used = book.consume(record.id)
        if used is not None:
            ran = granted(guard, verdict)
            ran.approval = used
            if not ran.decision.allow:  # a limit, or a reload since: the approval stays for the retry
                book.restore(used.id, f"the approved call was denied: {ran.decision.message}")
                ran.approval = None
            return ran
    return _deny(verdict, "approvals/contended", "the approval for this call kept changing; make the call again")


def granted(guard: Guard, held: Verdict) -> Verdict:
    """The held call decided again with a person's approval (``input.approval.granted``), its limits taken
    now. The approval was for the policy that asked: if another has been loaded since, the call is denied
    and its next retry is decided (and asked for) afresh."""
    if guard.engine.revision != held.revision:  # before any limit is taken for it
        return _deny(held, "approval/policy-changed", "the policy changed while the call waited for approval; "
                     "make the call again to have it decided under the new one")
    verdict = guard.plain_decide({**held.doc, "approval": {"granted": True}})
    verdict.trace = held.trace
    verdict.doc = held.doc
    if verdict.revision != held.revision:
        guard.refund(verdict)
        verdict.taken = None
        return _deny(verdict, "approval/policy-changed", "the policy changed while the call waited for approval; "
                     "make the call again to have it decided under the new one")
    if verdict.decision.action == "require_approval":  # never a second hold for one approved call
        return _deny(verdict, held.decision.rule or "approval", "the call still needs approval")
    return verdict


def end_use(guard: Guard, verdict: Verdict, upstream_error: Any, answered: bool) -> None:
    """An approved call finished: its approval is consumed, or approved again if the server failed it."""
    used = verdict.approval
    book = guard.approvals
    if used is None or used.status != RUNNING or book is None:
        return
    if answered and upstream_error is not None:
        book.restore(used.id, "the server answered the approved call with an error")
    else:
        book.settle(used.id)


def announce(guard: Guard, kind: str, record: ApprovalRecord, extra: dict[str, Any],
             clock: Callable[[], float] = time.time) -> None:
    """The store's approvals: logged, and a new pending one announced by the webhook."""
    if guard.log is not None:
        guard.log.approval(kind, record, extra)
    if kind == "requested" and guard.webhook is not None:
        guard.webhook.announce(record.view(clock()))
