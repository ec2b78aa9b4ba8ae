"""Rate and spend limits: token buckets (pure math) over a store (memory, SQLite, Redis)."""

from regoguard.limits.clock import Clock, ManualClock, SystemClock
from regoguard.limits.limiter import LimitDenial, Limiter, Taken, bucket_key, open_store
from regoguard.limits.store import MemoryStore, Store, StoreError, TakeResult
from regoguard.limits.token_bucket import BucketState, Spec

__all__ = [
    "BucketState",
    "Clock",
    "LimitDenial",
    "Limiter",
    "ManualClock",
    "MemoryStore",
    "Spec",
    "Store",
    "StoreError",
    "SystemClock",
    "TakeResult",
    "Taken",
    "bucket_key",
    "open_store",
]
