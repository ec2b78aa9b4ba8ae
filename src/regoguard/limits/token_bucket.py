"""Token-bucket arithmetic, pure: no clock, no storage.

A bucket of ``capacity`` tokens refills at ``capacity / window`` tokens a second. A call of ``cost``
fits while ``cost <= available`` (``cost < available`` for a strict limit, Intercept's ``lt``), which is
Intercept's "the counter after this call stays within the limit", with a smooth refill instead of a
calendar reset. A new bucket starts full.

With ``calendar`` (a policy's ``windows: calendar``) a bucket is Intercept's fixed-window counter instead:
full at each UTC boundary of its window (the minute, the hour, midnight), no refill in between.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EPSILON = 1e-9


@dataclass(frozen=True)
class BucketState:
    """What a store keeps per bucket: tokens available at ``updated`` (seconds)."""

    tokens: float
    updated: float


@dataclass(frozen=True)
class Spec:
    capacity: float
    window: float
    cost: float
    strict: bool = False
    calendar: bool = False

    @property
    def rate(self) -> float:
        return self.capacity / self.window


def available(state: BucketState | None, spec: Spec, now: float) -> float:
    """Tokens available at ``now``: the stored amount plus the refill since, capped at capacity."""
    if state is None:
        return spec.capacity
    if spec.calendar:
        # A new window only when the stored one is strictly earlier: a proxy whose clock is behind
        # another's (or a clock stepped back) must not see the other's window as "another" and refill.
        newer = math.floor(now / spec.window) > math.floor(state.updated / spec.window)
        return spec.capacity if newer else min(spec.capacity, state.tokens)
    elapsed = max(0.0, now - state.updated)
    return min(spec.capacity, state.tokens + elapsed * spec.rate)


def fits(tokens: float, spec: Spec) -> bool:
    if spec.strict:
        return spec.cost < tokens - EPSILON
    return spec.cost <= tokens + EPSILON


def retry_after(tokens: float, spec: Spec, now: float | None = None) -> float | None:
    """Seconds until the call would fit, or None if it never can (cost beyond capacity). A calendar window
    fits again when the next one starts (``now`` is needed for it)."""
    if not fits(spec.capacity, spec):  # not even a full bucket holds it
        return None
    if spec.calendar and now is not None:
        return max(0.0, (math.floor(now / spec.window) + 1) * spec.window - now)
    need = spec.cost - tokens
    if spec.strict:
        need += EPSILON * 10
    return max(0.0, need / spec.rate)


def take(state: BucketState | None, spec: Spec, now: float) -> tuple[bool, BucketState, float | None]:
    """Try to take ``spec.cost`` tokens. Returns (fitted, new state, retry-after seconds if not)."""
    tokens = available(state, spec, now)
    stamp = _stamp(state, spec, now)
    if fits(tokens, spec):
        return True, BucketState(tokens - spec.cost, stamp), None
    return False, BucketState(tokens, stamp), retry_after(tokens, spec, now)


def _stamp(state: BucketState | None, spec: Spec, now: float) -> float:
    """When a bucket's state is as of: now, except that a calendar window never moves back in time."""
    if spec.calendar and state is not None:
        return max(now, state.updated)
    return now


def give_back(state: BucketState | None, spec: Spec, now: float) -> BucketState:
    """Return ``spec.cost`` tokens (a refunded call), never beyond capacity."""
    tokens = available(state, spec, now)
    return BucketState(min(spec.capacity, tokens + spec.cost), _stamp(state, spec, now))


def same_window(spec: Spec, then: float, now: float) -> bool:
    """Whether ``then`` and ``now`` fall in one window of a calendar limit (always true for a bucket)."""
    return not spec.calendar or math.floor(then / spec.window) == math.floor(now / spec.window)
