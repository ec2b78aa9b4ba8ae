"""``windows: calendar``: Intercept's fixed-window counters, reset at each UTC boundary, beside the default
token buckets. The arithmetic, the three stores (a real redis-server), the policy key, and the guard."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers_policy import call_doc, load_errors
from regoguard.compiler import compile_policy
from regoguard.engine import Engine
from regoguard.guard import Guard
from regoguard.limits import Limiter, ManualClock, MemoryStore, Spec, Store, open_store
from regoguard.limits.token_bucket import take
from regoguard.policy import load_policy

T0 = 20_833.0 * 86400  # a whole number of days since the epoch: a UTC midnight, and a minute boundary
assert T0 % 86400 == 0


def test_a_calendar_window_is_full_at_each_boundary_and_never_refills_in_between() -> None:
    cal = Spec(3, 60, 1, calendar=True)
    roll = Spec(3, 60, 1)
    state_c = state_r = None
    for _ in range(3):
        ok, state_c, _ = take(state_c, cal, T0 + 1)
        assert ok
        ok, state_r, _ = take(state_r, roll, T0 + 1)
        assert ok
    ok, _, retry = take(state_c, cal, T0 + 40)
    assert not ok and retry == pytest.approx(20)  # the next minute starts in 20 s
    ok, _, _ = take(state_r, roll, T0 + 40)
    assert ok  # the token bucket has refilled two tokens by now
    ok, state_c, _ = take(state_c, cal, T0 + 60)  # a new minute: all three again
    assert ok and state_c.tokens == pytest.approx(2)


def test_the_day_window_resets_at_utc_midnight_not_24_hours_after_the_first_call() -> None:
    day = Spec(2, 86400, 2, calendar=True)
    ok, state, _ = take(None, day, T0 + 86400 - 10)  # ten seconds before midnight
    assert ok
    ok, _, retry = take(state, day, T0 + 86400 - 5)
    assert not ok and retry == pytest.approx(5)
    ok, _, _ = take(state, day, T0 + 86400 + 1)
    assert ok


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        s: Store = MemoryStore()
    elif request.param == "sqlite":
        s = open_store(str(tmp_path / "state.db"))
    else:
        s = open_store(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
    yield s
    s.close()


def test_every_store_counts_calendar_windows_alike(store: Store) -> None:
    spec = Spec(2, 60, 1, calendar=True)
    assert store.take_all([("k", spec)], T0 + 5).ok
    assert store.take_all([("k", spec)], T0 + 30).ok
    failed = store.take_all([("k", spec)], T0 + 59)
    assert not failed.ok and failed.retry_after == pytest.approx(1)
    store.give_back_all([("k", spec)], T0 + 59)  # a refund within the window gives one back
    assert store.take_all([("k", spec)], T0 + 59.5).ok
    assert store.take_all([("k", spec)], T0 + 60).ok and store.take_all([("k", spec)], T0 + 61).ok
    assert not store.take_all([("k", spec)], T0 + 119).ok


POLICY = """\
version: "1"
windows: calendar
tools:
  search:
    rules:
      - name: per minute
        rate_limit: 2/minute
"""


def test_the_policy_key_makes_every_limit_a_calendar_window(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY, encoding="utf-8")
    clock = ManualClock(T0 + 50)
    engine = Engine(compile_policy(load_policy(path)))
    guard = Guard(engine, Limiter(MemoryStore(), clock=clock))
    try:
        doc = call_doc("search", {})
        first = guard.decide(doc)
        assert first.decision.charges[0].calendar and first.allow
        assert guard.decide(doc).allow
        denied = guard.decide(doc)
        assert not denied.allow and "retry after 10s" in (denied.decision.message or "")
        clock.advance(10)  # the minute turns: a token bucket would still be short of a whole token
        assert guard.decide(doc).allow
    finally:
        engine.close()
    rolling = tmp_path / "r.yaml"
    rolling.write_text(POLICY.replace("windows: calendar\n", ""), encoding="utf-8")
    compiled = compile_policy(load_policy(rolling))
    assert "calendar" not in compiled.module and "calendar" in compile_policy(load_policy(path)).module


def test_a_misspelt_windows_value_fails_with_its_position() -> None:
    errors = load_errors('version: "1"\nwindows: calender\ntools:\n  t:\n    rules:\n      - rate_limit: 1/minute\n')
    assert len(errors) == 1 and errors[0].line == 2 and "windows must be one of rolling, calendar" in errors[0].message
    assert errors[0].hint and "calendar" in errors[0].hint


def test_clocks_out_of_step_never_reopen_a_window(store: Store) -> None:
    """Two proxies sharing a store, one clock 2 s behind the other, calling around a minute boundary:
    what one writes in the next minute must not look like "another window" to the other."""
    spec = Spec(3, 60, 1, calendar=True)
    allowed = 0
    for i in range(40):
        ahead = T0 + 59 + i * 0.05 + 2  # already past the boundary
        behind = T0 + 59 + i * 0.05  # still in the minute before
        allowed += store.take_all([("k", spec)], ahead if i % 2 else behind).ok
    assert allowed <= 6, allowed  # at most the two windows' worth


def test_a_refund_never_adds_to_a_window_it_was_not_taken_from() -> None:
    clock = ManualClock(T0 + 59.9)
    limiter = Limiter(MemoryStore(), clock=clock)
    from regoguard.decision import Charge

    charge = Charge("t.c", "global", 1, 3, 60, False, "t/c", "limit", calendar=True)
    early = limiter.take((charge,), "s", "p", "x")
    clock.advance(0.2)  # the next minute
    admitted = [not hasattr(limiter.take((charge,), "s", "p", "x"), "rule") for _ in range(3)]
    limiter.refund(early)  # type: ignore[arg-type]
    assert admitted == [True, True, True]
    assert hasattr(limiter.take((charge,), "s", "p", "x"), "rule")  # still full: no fourth


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 20), st.booleans()), min_size=1, max_size=60), st.floats(0, 5))
def test_no_interleaving_of_skewed_clocks_admits_more_than_the_windows_it_spans(calls, skew) -> None:
    """Calls from two clocks ``skew`` seconds apart, at any times within 20 s around a minute boundary:
    never more than capacity per window they fall in (here at most two windows: 6)."""
    store = MemoryStore()
    spec = Spec(3, 60, 1, calendar=True)
    allowed = sum(store.take_all([("k", spec)], T0 + 50 + t + (skew if ahead else 0)).ok for t, ahead in calls)
    assert allowed <= 6
