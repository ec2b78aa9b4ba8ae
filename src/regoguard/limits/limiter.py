"""From a decision's charges to buckets: key them by scope, take them all or none, refund them.

Bucket keys are ``<scope>/<scope id>/<server>/<counter>``: ``global//payments/create_charge.daily_spend``,
``principal/alice/payments/...``, ``session/<uuid>/payments/...``. The server name keeps two servers
with the same tool names apart when they share a store.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from regoguard.decision import Charge
from regoguard.limits.clock import Clock, SystemClock
from regoguard.limits.store import Store, StoreError
from regoguard.limits.token_bucket import Spec, same_window

if TYPE_CHECKING:
    from regoguard.metrics import Metrics


@dataclass(frozen=True)
class Taken:
    """Charges taken for one call, kept so the call can be refunded."""

    items: tuple[tuple[str, Spec], ...]
    at: float = 0.0
    """When they were taken: a calendar window's token goes back only within the window it came from."""


@dataclass(frozen=True)
class LimitDenial:
    rule: str
    message: str
    retry_after: float | None


DEFAULT_REDIS_PREFIX = "regoguard:"


def bucket_key(charge: Charge, server: str, principal: str, session: str) -> str:
    scope_id = {"global": "", "principal": principal, "session": session}[charge.scope]
    return f"{charge.scope}/{scope_id}/{server}/{charge.counter}"


def _retry_text(seconds: float | None) -> str:
    if seconds is None:
        return "this call alone exceeds the limit, so it can never fit"
    return f"retry after {max(1, math.ceil(seconds))}s"


class Limiter:
    """Takes charges from a store. ``fail_open``: a store failure allows the call instead of denying it."""

    def __init__(self, store: Store, clock: Clock | None = None, fail_open: bool = False) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.fail_open = fail_open
        self.metrics: Metrics | None = None

    def take(
        self, charges: tuple[Charge, ...], server: str, principal: str, session: str
    ) -> Taken | LimitDenial:
        """Take every charge, all or none. Returns what was taken, or why the call is denied."""
        items = tuple(
            (bucket_key(c, server, principal, session), Spec(c.capacity, c.window, c.cost, c.strict, c.calendar))
            for c in charges
        )
        if not items:
            return Taken(())
        now = self.clock.now()
        try:
            result = self.store.take_all(list(items), now)
        except StoreError as exc:
            if self.metrics is not None:
                self.metrics.store_errors.inc()
                if self.fail_open:
                    self.metrics.fail_open_allows.inc()
            if self.fail_open:
                return Taken(())
            return LimitDenial("limits/store-error", f"rate-limit state is unavailable, so the call is denied: "
                               f"{exc}", None)
        if result.ok:
            return Taken(items, now)
        assert result.failed_index is not None
        charge = charges[result.failed_index]
        return LimitDenial(charge.rule, f"{charge.message} ({charge.counter}: {_retry_text(result.retry_after)})",
                           result.retry_after)

    def refund(self, taken: Taken) -> None:
        """Give back what a call took (the server answered with an error). Store errors are swallowed:
        a lost refund only makes the limit stricter."""
        now = self.clock.now()
        items = [(key, spec) for key, spec in taken.items if same_window(spec, taken.at, now)]
        if items:
            with contextlib.suppress(StoreError):
                self.store.give_back_all(items, now)

    def forget_session(self, session: str) -> None:
        with contextlib.suppress(StoreError):
            self.store.reset(f"session/{session}/")


def open_store(spec: str | None, prefix: str | None = None, create: bool = True) -> Store:
    """``None`` or a path → SQLite; ``memory`` → in-process; ``redis://…`` / ``rediss://…`` → Redis.

    ``prefix`` goes before every key: ``regoguard:`` in Redis unless given, nothing in SQLite unless given
    (so files written before prefixes existed keep their counters). ``create=False``: a SQLite file that
    does not exist is a StoreError rather than a new, empty store.
    """
    from regoguard.limits.sqlite_store import SQLiteStore, default_state_path
    from regoguard.limits.store import MemoryStore

    if spec == "memory":
        return MemoryStore()
    if spec and (spec.startswith("redis://") or spec.startswith("rediss://") or spec.startswith("unix://")):
        from regoguard.limits.redis_store import RedisStore

        return RedisStore(spec, DEFAULT_REDIS_PREFIX if prefix is None else prefix)
    return SQLiteStore(spec or default_state_path(), prefix=prefix or "", create=create)
