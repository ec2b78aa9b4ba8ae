"""Exactness under contention: many processes (spawn) hammer one limit through one SQLite file and through
one Redis server. Whatever the interleaving, exactly ``capacity`` calls are allowed, and a call that takes
two buckets takes both or neither.

Every process uses a ManualClock at the same instant, so nothing refills while the test runs and the
expected totals are exact. The processes wait on a barrier and open their store after it, so they also
race to create the SQLite file and its schema.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import pytest

from regoguard.decision import Charge
from regoguard.limits import LimitDenial, Limiter, ManualClock, open_store

PROCESSES = 8
TAKES_PER_PROCESS = 60
CAPACITY = 200
WIDE_CAPACITY = 10_000
WINDOW = 3600
START = 1_000_000.0
TIME_BUDGET = 20.0

NARROW = Charge("tool._rate_hour", "global", 1, CAPACITY, WINDOW, False, "tool/limit", "too many")
WIDE = Charge("_global._rate_hour", "global", 1, WIDE_CAPACITY, WINDOW, False, "*/limit", "too many overall")


def _worker(spec: str, prefix: str, barrier: Any, results: Any) -> None:
    try:
        barrier.wait(30)
        store = open_store(spec, prefix)
        limiter = Limiter(store, clock=ManualClock(START))
        allowed = denied = 0
        for _ in range(TAKES_PER_PROCESS):
            outcome = limiter.take((NARROW, WIDE), "srv", "p", "s")
            if isinstance(outcome, LimitDenial):
                assert outcome.rule == "tool/limit", outcome  # never the store failing, never the wide bucket
                denied += 1
            else:
                allowed += 1
        store.close()
        results.put(("ok", allowed, denied))
    except BaseException as exc:  # report everything: a silent worker would only show up as a timeout
        results.put(("error", repr(exc), 0))


def hammer(spec: str, prefix: str = "regoguard:") -> list[tuple[int, int]]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(spec, prefix, barrier, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    out: list[tuple[int, int]] = []
    errors: list[str] = []
    try:
        for _ in procs:
            kind, a, b = results.get(timeout=TIME_BUDGET)
            if kind == "ok":
                out.append((a, b))
            else:
                errors.append(a)
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
    assert not errors, errors
    return out


def check_totals(counts: list[tuple[int, int]], spec: str, prefix: str) -> None:
    assert len(counts) == PROCESSES
    assert sum(a + d for a, d in counts) == PROCESSES * TAKES_PER_PROCESS
    assert sum(a for a, _ in counts) == CAPACITY, counts
    store = open_store(spec, prefix)
    try:
        snap = store.snapshot()
    finally:
        store.close()
    narrow = snap["global//srv/tool._rate_hour"].tokens
    wide = snap["global//srv/_global._rate_hour"].tokens
    assert narrow == pytest.approx(0.0, abs=1e-9)
    # all-or-none under contention: the wide bucket lost exactly one token per allowed call
    assert wide == pytest.approx(WIDE_CAPACITY - CAPACITY, abs=1e-9)


def test_sqlite_contention_is_exact(tmp_path: Path) -> None:
    spec = str(tmp_path / "shared" / "state.db")  # does not exist yet: the workers race to create it
    t0 = time.monotonic()
    counts = hammer(spec)
    elapsed = time.monotonic() - t0
    check_totals(counts, spec, "regoguard:")
    assert elapsed < TIME_BUDGET


def test_redis_contention_is_exact(redis_url: str, redis_prefix: str) -> None:
    t0 = time.monotonic()
    counts = hammer(redis_url, redis_prefix)
    elapsed = time.monotonic() - t0
    check_totals(counts, redis_url, redis_prefix)
    assert elapsed < TIME_BUDGET
