"""The store protocol, and the in-memory store (tests, single process).

A store applies a list of bucket operations atomically: every take fits and all are applied, or none
is. Stores differ only in where buckets live and how atomicity is had (a lock, a SQLite write
transaction, a Redis script).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from regoguard.limits.token_bucket import BucketState, Spec, give_back, take


class StoreError(Exception):
    """The store could not be read or written (disk full, database locked, Redis down, ...)."""


@dataclass(frozen=True)
class TakeResult:
    ok: bool
    failed_index: int | None = None  # which charge did not fit
    retry_after: float | None = None


class Store(Protocol):
    def take_all(self, items: list[tuple[str, Spec]], now: float) -> TakeResult:
        """Take every item's cost from its bucket, all or none.

        Raises:
            StoreError: the store failed; nothing was taken.
        """
        ...

    def give_back_all(self, items: list[tuple[str, Spec]], now: float) -> None:
        """Return tokens previously taken (a refund). Raises StoreError."""
        ...

    def snapshot(self, prefix: str = "") -> dict[str, BucketState]:
        """Every stored bucket whose key starts with ``prefix``."""
        ...

    def reset(self, prefix: str = "") -> int:
        """Delete buckets whose key starts with ``prefix``; return how many."""
        ...

    def pin_first_use(self, digests: dict[str, str]) -> dict[str, str]:
        """For each key, the digest it was first recorded with, recording those new (first writer wins,
        atomically: every proxy sharing the store holds a tool to the first definition any of them saw)."""
        ...

    def close(self) -> None: ...


def apply_all(
    states: dict[str, BucketState | None], items: list[tuple[str, Spec]], now: float
) -> tuple[TakeResult, dict[str, BucketState]]:
    """Shared all-or-none logic: compute new states for ``items`` (keys may repeat) or the first failure."""
    current = dict(states)
    for index, (key, spec) in enumerate(items):
        fitted, new_state, retry = take(current.get(key), spec, now)
        if not fitted:
            return TakeResult(False, index, retry), {}
        current[key] = new_state
    return TakeResult(True), {k: v for k, v in current.items() if v is not None}


def refund_all(
    states: dict[str, BucketState | None], items: list[tuple[str, Spec]], now: float
) -> dict[str, BucketState]:
    current = dict(states)
    for key, spec in items:
        current[key] = give_back(current.get(key), spec, now)
    return {k: v for k, v in current.items() if v is not None}


class MemoryStore:
    """Buckets in a dict, guarded by a lock. Gone when the process ends."""

    def __init__(self) -> None:
        self._buckets: dict[str, BucketState] = {}
        self._pins: dict[str, str] = {}
        self._lock = threading.Lock()

    def pin_first_use(self, digests: dict[str, str]) -> dict[str, str]:
        with self._lock:
            return {k: self._pins.setdefault(k, v) for k, v in digests.items()}

    def take_all(self, items: list[tuple[str, Spec]], now: float) -> TakeResult:
        with self._lock:
            result, new = apply_all({k: self._buckets.get(k) for k, _ in items}, items, now)
            if result.ok:
                self._buckets.update(new)
            return result

    def give_back_all(self, items: list[tuple[str, Spec]], now: float) -> None:
        with self._lock:
            self._buckets.update(refund_all({k: self._buckets.get(k) for k, _ in items}, items, now))

    def snapshot(self, prefix: str = "") -> dict[str, BucketState]:
        with self._lock:
            return {k: v for k, v in sorted(self._buckets.items()) if k.startswith(prefix)}

    def reset(self, prefix: str = "") -> int:
        with self._lock:
            doomed = [k for k in self._buckets if k.startswith(prefix)]
            for k in doomed:
                del self._buckets[k]
            return len(doomed)

    def close(self) -> None:
        pass
