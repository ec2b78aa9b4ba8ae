"""The rules of an approval's life, written once over any store.

``pending`` → ``approved`` or ``denied`` (a person, while it is unexpired) → ``running`` (the identical
call, once, while the approval is unexpired) → ``consumed`` (it ran) or back to ``approved`` (it failed
upstream, or a limit refused it). A pending or approved approval past its ``expires_at`` is expired; the
next identical call asks anew. While an approved call runs, an identical one waits for it (it is neither
asked for again nor run twice).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from regoguard.approvals.record import APPROVED, CONSUMED, DENIED, EXPIRED, PENDING, RUNNING, ApprovalRecord
from regoguard.approvals.stores import RETENTION, ApprovalStore, View

EventSink = Callable[[str, ApprovalRecord, dict[str, Any]], None]
"""Told of every change: (``requested`` | ``approved`` | ``denied`` | ``expired`` | ``consumed`` |
``restored``, the record after it, extra fields)."""

PRUNE_EVERY = 600.0
"""Seconds between sweeps of approvals long expired (kept a day for ``approvals list`` and the audit)."""


class ApprovalError(Exception):
    """An approval that cannot be answered: unknown, no longer pending, or expired."""


def new_id() -> str:
    return "apr-" + secrets.token_hex(6)


class ApprovalBook:
    def __init__(self, store: ApprovalStore, clock: Callable[[], float] = time.time,
                 on_event: EventSink | None = None) -> None:
        self.store = store
        self.clock = clock
        self.on_event = on_event
        self._pruned = 0.0

    def _tell(self, kind: str, record: ApprovalRecord, **extra: Any) -> None:
        if self.on_event is not None:
            with contextlib.suppress(Exception):  # the audit fails open, as the decision log does
                self.on_event(kind, record, extra)

    def ask(self, fp: str, make: Callable[[str, float], ApprovalRecord]) -> tuple[ApprovalRecord, bool]:
        """The live approval for fingerprint ``fp``, or a new pending one (``make(id, now)``); True when new.
        One that has just run out is marked expired first."""
        now = self.clock()
        if now - self._pruned > PRUNE_EVERY:
            self._pruned = now
            self.store.prune(now - RETENTION)
        expired: list[ApprovalRecord] = []

        def run(view: View) -> tuple[ApprovalRecord, bool]:
            expired.clear()
            current_id = view.current(fp)
            current = view.load(current_id) if current_id is not None else None
            if current is not None and current.live(now):
                return current, False
            if current is not None and current.status in (PENDING, APPROVED):
                gone = current.but(status=EXPIRED)
                view.save(gone)
                expired.append(gone)
            record = make(new_id(), now)
            view.save(record, current=True)
            return record, True

        record, created = self.store.atomic(run)
        for gone in expired:
            self._tell("expired", gone)
        if created:
            self._tell("requested", record)
        return record, created

    def _answer(self, approval_id: str, status: str, by: str, reason: str | None) -> ApprovalRecord:
        now = self.clock()

        def run(view: View) -> tuple[ApprovalRecord, bool]:
            record = view.load(approval_id)
            if record is None:
                raise ApprovalError(f"no approval {approval_id!r}")
            state = record.state(now)
            revoking = status == DENIED and state == APPROVED
            if state != PENDING and not revoking:
                raise ApprovalError(f"approval {approval_id} is {state}, not pending: only a pending, unexpired "
                                    "approval can be approved, and only a pending or an approved one not yet "
                                    "used can be denied")
            # Approved: the retry has one more timeout to come. Denied: the call stays denied as long. An
            # approved approval denied before its call used it is revoked (atomically against its use:
            # of the two, whichever the store saw first wins).
            done = record.but(status=status, decided_by=by, reason=reason, decided_at=now,
                              expires_at=now + record.timeout)
            view.save(done)
            return done, revoking

        done, revoked = self.store.atomic(run)
        self._tell(status, done, approver=by, reason=reason, revoked=True if revoked else None)
        return done

    def approve(self, approval_id: str, by: str, reason: str | None = None) -> ApprovalRecord:
        return self._answer(approval_id, APPROVED, by, reason)

    def deny(self, approval_id: str, by: str, reason: str | None = None) -> ApprovalRecord:
        """Deny a pending approval, or revoke an approved one its call has not used yet."""
        return self._answer(approval_id, DENIED, by, reason)

    def _move(self, approval_id: str, allowed: Callable[[ApprovalRecord], bool],
              **changes: Any) -> ApprovalRecord | None:
        """Change the approval atomically when ``allowed`` holds for it as stored; None otherwise."""

        def run(view: View) -> ApprovalRecord | None:
            record = view.load(approval_id)
            if record is None or not allowed(record):
                return None
            moved = record.but(**changes)
            view.save(moved)
            return moved

        return self.store.atomic(run)

    def consume(self, approval_id: str) -> ApprovalRecord | None:
        """Use an approved, unexpired approval (once: of two proxies racing, one gets it); None if not.
        It is ``running`` until :meth:`settle` or :meth:`restore` says how the call ended."""
        now = self.clock()
        used = self._move(approval_id, lambda r: r.state(now) == APPROVED, status=RUNNING, consumed_at=now)
        if used is not None:
            self._tell("consumed", used)
        return used

    def settle(self, approval_id: str) -> ApprovalRecord | None:
        """The approved call ran (or may have: the server died, or the client cancelled it): consumed."""
        return self._move(approval_id, lambda r: r.status == RUNNING, status=CONSUMED)

    def restore(self, approval_id: str, why: str) -> ApprovalRecord | None:
        """The approved call did not run to success (the server failed it, or a limit refused it): it is
        approved again, until its expiry."""
        back = self._move(approval_id, lambda r: r.status == RUNNING, status=APPROVED, consumed_at=None)
        if back is not None:
            self._tell("restored", back, why=why)
        return back

    def live(self, fp: str) -> ApprovalRecord | None:
        """The approval that answers fingerprint ``fp`` now, if any (nothing is asked for or changed)."""
        now = self.clock()

        def run(view: View) -> ApprovalRecord | None:
            current_id = view.current(fp)
            record = view.load(current_id) if current_id is not None else None
            return record if record is not None and record.live(now) else None

        return self.store.atomic(run)

    def get(self, approval_id: str) -> ApprovalRecord | None:
        return self.store.atomic(lambda view: view.load(approval_id))

    def list(self) -> list[ApprovalRecord]:
        """Every approval kept, newest first."""
        return sorted(self.store.all(), key=lambda r: r.created_at, reverse=True)


__all__ = ["DENIED", "ApprovalBook", "ApprovalError", "EventSink", "new_id"]
