"""Limits through the whole decision path: YAML policy → compile → Engine → Guard → Limiter → a real store.

Guards run over MemoryStore, SQLiteStore and RedisStore; time is a ManualClock.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port
from regoguard import Engine, compile_policy, load_policy_text
from regoguard.guard import Guard, Verdict
from regoguard.limits import Limiter, ManualClock, MemoryStore, Spec, Store, StoreError, open_store
from regoguard.limits.sqlite_store import SQLiteStore
from regoguard.limits.store import TakeResult
from regoguard.limits.token_bucket import BucketState

POLICY = """
tools:
  echo:
    rules:
      - name: three_per_minute
        rate_limit: "3/minute"
        on_deny: "echo is rate limited"
  create_charge:
    rules:
      - name: daily_spend
        conditions:
          - {path: state.create_charge.daily_spend, op: lte, value: 100}
        state: {counter: daily_spend, window: day, increment_from: args.amount}
        on_deny: "daily spend cap reached"
  create_refund:
    rules:
      - name: refund_cap
        conditions:
          - {path: state.create_refund.refunded, op: lt, value: 50}
        state: {counter: refunded, window: day, increment_from: args.amount}
        on_deny: "refund cap reached"
  guarded:
    rules:
      - name: small_only
        conditions: [{path: args.n, op: lte, value: 10}]
        on_deny: "n too big"
      - name: limited
        rate_limit: "2/minute"
  per_principal:
    rules:
      - name: pp
        rate_limit: "2/minute"
        scope: principal
  per_session:
    rules:
      - name: ps
        rate_limit: {max: 2, window: 60}
  shared:
    rules:
      - name: g
        rate_limit: {max: 2, window: 60}
        scope: global
"""

STAR_POLICY = """
tools:
  echo:
    rules:
      - name: own
        rate_limit: "100/minute"
  "*":
    rules:
      - name: everything
        rate_limit: "5/minute"
        on_deny: "too many calls overall"
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    e = Engine(compile_policy(load_policy_text(POLICY, "limits.yaml")))
    yield e
    e.close()


@pytest.fixture(scope="module")
def star_engine() -> Iterator[Engine]:
    e = Engine(compile_policy(load_policy_text(STAR_POLICY, "star.yaml")))
    yield e
    e.close()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        s: Store = MemoryStore()
    elif request.param == "sqlite":
        s = SQLiteStore(tmp_path / "state.db")
    else:
        s = open_store(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
    yield s
    s.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def guard(engine: Engine, store: Store, clock: ManualClock) -> Guard:
    return Guard(engine, Limiter(store, clock=clock))


def doc(tool: str, args: dict[str, Any] | None = None, principal: str = "alice", session: str = "s1",
        server: str = "srv") -> dict[str, Any]:
    return {
        "tool": {"name": tool, "arguments": args or {}},
        "server": {"name": server},
        "session": {"id": session, "client": {"name": "test", "version": "1"}},
        "principal": {"id": principal, "claims": {}},
    }


def call(g: Guard, tool: str, args: dict[str, Any] | None = None, **who: str) -> Verdict:
    return g.decide(doc(tool, args, **who))


def tokens(store: Store, key: str) -> float | None:
    state = store.snapshot(key).get(key)
    return None if state is None else state.tokens


# -- rate_limit "3/minute" ------------------------------------------------------------------------------------


def test_rate_limit_allows_three_then_denies(guard: Guard, store: Store, clock: ManualClock) -> None:
    for i in range(3):
        v = call(guard, "echo")
        assert v.allow, f"call {i + 1}"
        assert v.taken is not None and v.taken.items
    v = call(guard, "echo")
    assert not v.allow
    assert v.decision.rule == "echo/three_per_minute"
    assert v.decision.message is not None
    assert v.decision.message.startswith("echo is rate limited")
    assert "retry after 20s" in v.decision.message
    assert v.decision.extra["retry_after"] == pytest.approx(20.0)
    assert v.meta()["rule"] == "echo/three_per_minute"
    assert v.taken is None
    clock.advance(20)
    assert call(guard, "echo").allow
    assert not call(guard, "echo").allow
    assert tokens(store, "global//srv/echo._rate_minute") == pytest.approx(0.0, abs=1e-9)


def test_limits_are_per_server(guard: Guard) -> None:
    for _ in range(3):
        assert call(guard, "echo", server="a").allow
    assert not call(guard, "echo", server="a").allow
    assert call(guard, "echo", server="b").allow


# -- daily spend with increment_from ----------------------------------------------------------------------------


@pytest.mark.parametrize("amounts", [[100], [60, 40], [25.5, 24.5, 50], [33.33, 33.33, 33.34], [0.1] * 1000])
def test_spend_cap_allows_amounts_summing_to_exactly_the_cap(
    guard: Guard, store: Store, clock: ManualClock, amounts: list[float]
) -> None:
    for i, amount in enumerate(amounts):
        v = call(guard, "create_charge", {"amount": amount, "currency": "usd"})
        assert v.allow, f"amount #{i} = {amount}: {v.decision.message}"
    v = call(guard, "create_charge", {"amount": 0.01, "currency": "usd"})  # one more cent
    assert not v.allow
    assert v.decision.rule == "create_charge/daily_spend"
    assert v.decision.message is not None and "daily spend cap reached" in v.decision.message
    assert "retry after" in v.decision.message
    # a cent refills in 0.01 / (100 / 86400) s = 8.64 s
    assert v.decision.extra["retry_after"] == pytest.approx(8.64, rel=1e-3)
    assert call(guard, "create_charge", {"amount": 0}).allow  # zero always fits
    clock.advance(86400)
    assert call(guard, "create_charge", {"amount": 100}).allow


def test_spend_one_cent_over_is_denied_from_the_start(guard: Guard, store: Store) -> None:
    v = call(guard, "create_charge", {"amount": 100.01})
    assert not v.allow
    assert v.decision.rule == "create_charge/daily_spend"
    assert v.decision.extra["retry_after"] is None
    assert "can never fit" in (v.decision.message or "")
    assert store.snapshot() == {}
    assert call(guard, "create_charge", {"amount": 100}).allow


def test_strict_spend_cap(guard: Guard) -> None:
    # lt 50: the counter after the call must stay below 50
    assert call(guard, "create_refund", {"amount": 49.99}).allow
    v = call(guard, "create_refund", {"amount": 0.01})
    assert not v.allow and v.decision.rule == "create_refund/refund_cap"
    assert not call(guard, "create_refund", {"amount": 50}).allow


@pytest.mark.parametrize("args", [
    {"amount": -1},
    {"amount": -0.01},
    {},
    {"amount": None},
    {"amount": "5"},
    {"amount": "five"},
    {"amount": True},
    {"amount": [5]},
    {"amount": {"value": 5}},
])
def test_bad_amount_is_denied_and_takes_nothing(guard: Guard, store: Store, args: dict[str, Any]) -> None:
    assert call(guard, "create_charge", {"amount": 30}).allow
    before = store.snapshot()
    v = call(guard, "create_charge", args)
    assert not v.allow
    assert v.decision.rule == "create_charge/daily_spend"
    assert v.taken is None
    assert store.snapshot() == before
    assert call(guard, "create_charge", {"amount": 70}).allow  # still exactly 70 left


def test_negative_amount_cannot_raise_the_budget(guard: Guard) -> None:
    assert call(guard, "create_charge", {"amount": 100}).allow
    assert not call(guard, "create_charge", {"amount": -50}).allow
    assert not call(guard, "create_charge", {"amount": 1}).allow


# -- a denied call takes nothing ---------------------------------------------------------------------------------


def test_policy_denied_call_takes_nothing(guard: Guard, store: Store) -> None:
    for _ in range(5):
        v = call(guard, "guarded", {"n": 11})
        assert not v.allow and v.decision.rule == "guarded/small_only"
    assert store.snapshot() == {}
    assert call(guard, "guarded", {"n": 1}).allow
    assert call(guard, "guarded", {"n": 1}).allow
    v = call(guard, "guarded", {"n": 1})
    assert not v.allow and v.decision.rule == "guarded/limited"


def test_limit_denied_call_takes_from_no_other_bucket(star_engine: Engine, store: Store, clock: ManualClock) -> None:
    g = Guard(star_engine, Limiter(store, clock=clock))
    for _ in range(5):
        assert call(g, "echo").allow
    before = store.snapshot()
    assert tokens(store, "global//srv/echo._rate_minute") == pytest.approx(95)
    v = call(g, "echo")
    assert not v.allow and v.decision.rule == "*/everything"
    assert store.snapshot() == before  # echo's own bucket was not touched by the denied call


# -- "*" counts every tool ---------------------------------------------------------------------------------------


def test_star_limit_counts_every_tool(star_engine: Engine, store: Store, clock: ManualClock) -> None:
    g = Guard(star_engine, Limiter(store, clock=clock))
    tools = ["echo", "create_charge", "list_customers", "anything_at_all", "echo"]
    for t in tools:
        assert call(g, t, {"x": 1}).allow, t
    for t in ["echo", "never_called_before", "create_charge"]:
        v = call(g, t)
        assert not v.allow, t
        assert v.decision.rule == "*/everything"
        assert "too many calls overall" in (v.decision.message or "")
        assert "retry after 12s" in (v.decision.message or "")
    assert tokens(store, "global//srv/_global._rate_minute") == pytest.approx(0.0, abs=1e-9)
    # other principals and sessions share a global limit
    assert not call(g, "echo", principal="bob", session="s2").allow


# -- scopes ------------------------------------------------------------------------------------------------------


def test_principal_scope_is_per_principal(guard: Guard, store: Store) -> None:
    for who in ("alice", "bob"):
        assert call(guard, "per_principal", principal=who, session="s-a").allow
        assert call(guard, "per_principal", principal=who, session="s-b").allow  # sessions do not matter
        v = call(guard, "per_principal", principal=who, session="s-c")
        assert not v.allow and v.decision.rule == "per_principal/pp"
    assert call(guard, "per_principal", principal="carol").allow
    assert set(store.snapshot("principal/")) == {
        "principal/alice/srv/per_principal._rate_minute",
        "principal/bob/srv/per_principal._rate_minute",
        "principal/carol/srv/per_principal._rate_minute",
    }


def test_session_scope_is_per_session(guard: Guard, store: Store) -> None:
    for session in ("s1", "s2"):
        assert call(guard, "per_session", session=session, principal="alice").allow
        assert call(guard, "per_session", session=session, principal="bob").allow  # principals do not matter
        v = call(guard, "per_session", session=session)
        assert not v.allow and v.decision.rule == "per_session/ps"
    assert set(store.snapshot("session/")) == {
        "session/s1/srv/per_session._rate_60s",
        "session/s2/srv/per_session._rate_60s",
    }


def test_global_scope_is_shared(guard: Guard) -> None:
    assert call(guard, "shared", principal="alice", session="s1").allow
    assert call(guard, "shared", principal="bob", session="s2").allow
    v = call(guard, "shared", principal="carol", session="s3")
    assert not v.allow and v.decision.rule == "shared/g"


# -- refunds ------------------------------------------------------------------------------------------------------


def test_refund_gives_the_tokens_back(guard: Guard, store: Store) -> None:
    verdicts = [call(guard, "echo") for _ in range(3)]
    assert all(v.allow for v in verdicts)
    assert not call(guard, "echo").allow
    guard.refund(verdicts[1])
    assert tokens(store, "global//srv/echo._rate_minute") == pytest.approx(1.0)
    assert call(guard, "echo").allow
    assert not call(guard, "echo").allow


def test_refund_of_a_spend_returns_the_amount(guard: Guard, store: Store) -> None:
    v = call(guard, "create_charge", {"amount": 60})
    assert v.allow
    assert not call(guard, "create_charge", {"amount": 60}).allow
    guard.refund(v)
    assert call(guard, "create_charge", {"amount": 100}).allow


def test_refund_of_a_denied_or_unlimited_call_does_nothing(guard: Guard, store: Store) -> None:
    for _ in range(3):
        assert call(guard, "echo").allow
    denied = call(guard, "echo")
    guard.refund(denied)
    guard.refund(guard.reject("proxy/invalid-params", "bad"))
    guard.refund(call(guard, "unlisted_tool"))  # allowed, no charges
    assert tokens(store, "global//srv/echo._rate_minute") == pytest.approx(0.0, abs=1e-9)


def test_refund_goes_to_the_callers_own_buckets(guard: Guard, store: Store) -> None:
    a = call(guard, "per_principal", principal="alice")
    b = call(guard, "per_principal", principal="bob")
    assert a.allow and b.allow
    guard.refund(a)
    assert tokens(store, "principal/alice/srv/per_principal._rate_minute") == pytest.approx(2.0)
    assert tokens(store, "principal/bob/srv/per_principal._rate_minute") == pytest.approx(1.0)


# -- end of session ---------------------------------------------------------------------------------------------


def test_end_session_forgets_only_that_sessions_buckets(guard: Guard, store: Store) -> None:
    for session in ("s1", "s10"):
        assert call(guard, "per_session", session=session).allow
        assert call(guard, "per_session", session=session).allow
        assert not call(guard, "per_session", session=session).allow
    assert call(guard, "shared", session="s1").allow
    assert call(guard, "per_principal", session="s1").allow
    guard.end_session("s1")
    assert set(store.snapshot("session/")) == {"session/s10/srv/per_session._rate_60s"}  # "s1" is not a prefix
    assert tokens(store, "global//srv/shared._rate_60s") == pytest.approx(1.0)
    assert tokens(store, "principal/alice/srv/per_principal._rate_minute") == pytest.approx(1.0)
    assert call(guard, "per_session", session="s1").allow
    assert not call(guard, "per_session", session="s10").allow


# -- store failures ------------------------------------------------------------------------------------------------


class Switchable:
    """A real store behind a switch: while ``down``, every operation raises StoreError (a store outage)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreError("state database is unavailable (switched off by the test)")

    def take_all(self, items: list[tuple[str, Spec]], now: float) -> TakeResult:
        self._check()
        return self.inner.take_all(items, now)

    def give_back_all(self, items: list[tuple[str, Spec]], now: float) -> None:
        self._check()
        self.inner.give_back_all(items, now)

    def snapshot(self, prefix: str = "") -> dict[str, BucketState]:
        self._check()
        return self.inner.snapshot(prefix)

    def reset(self, prefix: str = "") -> int:
        self._check()
        return self.inner.reset(prefix)

    def close(self) -> None:
        self.inner.close()


def test_store_failure_fails_closed_and_recovers(engine: Engine, store: Store, clock: ManualClock) -> None:
    sw = Switchable(store)
    g = Guard(engine, Limiter(sw, clock=clock))
    assert call(g, "echo").allow
    sw.down = True
    v = call(g, "echo")
    assert not v.allow
    assert v.decision.rule == "limits/store-error"
    assert "unavailable" in (v.decision.message or "")
    assert call(g, "list_customers").allow  # no charges: the store is not needed
    sw.down = False
    assert call(g, "echo").allow
    assert call(g, "echo").allow
    assert not call(g, "echo").allow  # the outage took nothing and gave nothing


def test_store_failure_fail_open_allows_and_counts_again_after(
    engine: Engine, store: Store, clock: ManualClock
) -> None:
    sw = Switchable(store)
    g = Guard(engine, Limiter(sw, clock=clock, fail_open=True))
    assert call(g, "echo").allow
    sw.down = True
    for _ in range(10):
        v = call(g, "echo")
        assert v.allow
        g.refund(v)  # nothing was taken, so nothing is given back (and no error)
    g.end_session("s1")  # swallowed
    sw.down = False
    assert call(g, "echo").allow
    assert call(g, "echo").allow
    assert not call(g, "echo").allow


def test_refund_and_end_session_swallow_store_errors(engine: Engine, clock: ManualClock) -> None:
    sw = Switchable(MemoryStore())
    g = Guard(engine, Limiter(sw, clock=clock))
    v = call(g, "echo")
    sw.down = True
    g.refund(v)  # lost refund: only stricter
    g.end_session("s1")
    sw.down = False
    assert call(g, "echo").allow
    assert call(g, "echo").allow
    assert not call(g, "echo").allow


def test_redis_down_then_up(engine: Engine, redis_servers: Any, redis_prefix: str, clock: ManualClock) -> None:
    """A real RedisStore whose server is not running yet, then starts, then stops."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    s = open_store(url, redis_prefix)
    g = Guard(engine, Limiter(s, clock=clock))
    g_open = Guard(engine, Limiter(s, clock=clock, fail_open=True))
    try:
        v = call(g, "echo")
        assert not v.allow and v.decision.rule == "limits/store-error"
        assert call(g_open, "echo").allow
        redis_servers.start(port)
        try:
            assert call(g, "echo").allow
            assert call(g, "echo").allow
            assert call(g_open, "echo").allow
            assert not call(g, "echo").allow  # 3 taken while up
        finally:
            redis_servers.stop(port)
        v = call(g, "echo")
        assert not v.allow and v.decision.rule == "limits/store-error"
        assert call(g_open, "echo").allow
    finally:
        s.close()


def test_sqlite_unreachable_path_denies_through_open_store(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreError):
        open_store(str(tmp_path / "afile" / "state.db"))


def test_no_limiter_means_no_limits(engine: Engine) -> None:
    g = Guard(engine)
    for _ in range(10):
        v = call(g, "echo")
        assert v.allow and v.taken is None
    g.refund(v)
    g.end_session("s1")


