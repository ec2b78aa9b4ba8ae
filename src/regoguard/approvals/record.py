"""One approval: what it is for, and where it stands."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

PENDING, APPROVED, DENIED, CONSUMED, EXPIRED = "pending", "approved", "denied", "consumed", "expired"
RUNNING = "running"
"""Consumed by a call that has not finished: it ends ``consumed`` (done), or ``approved`` again (it failed)."""
LIVE = (PENDING, APPROVED, DENIED, RUNNING)
"""States that answer an identical call until ``expires_at``: wait, run (once), stay denied, or wait for
the approved call already running."""


@dataclass(frozen=True)
class ApprovalRecord:
    id: str
    fingerprint: str
    status: str
    created_at: float
    expires_at: float
    """Pending: until when a person may answer. Approved: until when the retry may use it. Denied: until
    when the identical call stays denied (after that it may be asked for again)."""
    timeout: int
    tool: str
    server: str
    principal: str
    rule: str
    message: str
    approver: str
    arguments: str
    """The call's arguments as shown to the approver: canonical JSON, masked as the decision log masks them."""
    revision: str
    decided_by: str | None = None
    reason: str | None = None
    decided_at: float | None = None
    consumed_at: float | None = None

    def state(self, now: float) -> str:
        """The status as of ``now``: a pending or approved approval past its expiry is expired; one whose
        call never reported back (the proxy died during it) is consumed: the call may have run."""
        if self.status in (PENDING, APPROVED) and now >= self.expires_at:
            return EXPIRED
        if self.status == RUNNING and now >= self.expires_at:
            return CONSUMED
        return self.status

    def live(self, now: float) -> bool:
        return self.status in LIVE and now < self.expires_at

    def but(self, **changes: Any) -> ApprovalRecord:
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ApprovalRecord:
        return cls(**json.loads(text))

    def view(self, now: float) -> dict[str, Any]:
        """What ``approvals show`` and the webhook tell a person (times in UTC, ISO 8601). Never the
        fingerprint: it hashes the unmasked arguments, so a masked low-entropy value could be guessed."""
        out = {k: v for k, v in asdict(self).items() if v is not None and k != "fingerprint"}
        out["status"] = self.state(now)
        for k in ("created_at", "expires_at", "decided_at", "consumed_at"):
            if k in out:
                out[k] = iso(out[k])
        with contextlib.suppress(ValueError):  # cut short for size: shown as text
            out["arguments"] = json.loads(self.arguments)
        return out


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
