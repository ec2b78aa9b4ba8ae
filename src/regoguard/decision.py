"""What the engine answers for one tool call: allow or deny, why, and what it would cost.

These types cross every layer (engine → guard → proxy, CLI), so they live alone and import nothing
of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Reason:
    """Why a call is denied: the rule's stable id and the message shown to the agent."""

    rule: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


@dataclass(frozen=True)
class Charge:
    """Tokens a call would take from one bucket if allowed.

    ``counter`` names the bucket within its ``scope`` (``global``, ``principal`` or ``session``); the
    guard adds the principal or session id. A call fits while ``level + cost <= capacity`` (``< capacity``
    when ``strict``); the bucket refills ``capacity`` tokens per ``window`` seconds.
    """

    counter: str
    scope: str
    cost: float
    capacity: float
    window: int
    strict: bool
    rule: str
    message: str
    calendar: bool = False
    """Counted per calendar window (reset at each UTC boundary of ``window``) instead of refilled smoothly."""

    def to_json(self) -> dict[str, Any]:
        out = {
            "counter": self.counter,
            "scope": self.scope,
            "cost": self.cost,
            "capacity": self.capacity,
            "window": self.window,
            "strict": self.strict,
            "rule": self.rule,
            "message": self.message,
        }
        if self.calendar:
            out["calendar"] = True
        return out


@dataclass(frozen=True)
class Decision:
    """The engine's answer. ``reasons`` is ordered: the first is the one shown to the agent."""

    allow: bool
    action: str
    reasons: tuple[Reason, ...] = ()
    charges: tuple[Charge, ...] = ()
    cached: bool = False
    eval_ns: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def rule(self) -> str | None:
        """The id of the rule that decided a denial (None when allowed)."""
        return self.reasons[0].rule if self.reasons else None

    @property
    def message(self) -> str | None:
        return self.reasons[0].message if self.reasons else None

    def to_json(self) -> dict[str, Any]:
        return {
            "allow": self.allow,
            "action": self.action,
            "reasons": [r.to_json() for r in self.reasons],
            "charges": [c.to_json() for c in self.charges],
        }

    @classmethod
    def deny(cls, rule: str, message: str) -> Decision:
        """A denial made outside the policy (engine failure, over-large input, ...)."""
        return cls(allow=False, action="deny", reasons=(Reason(rule, message),))
