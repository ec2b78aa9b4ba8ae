"""One contract suite for every Store: MemoryStore, SQLiteStore (a file under tmp_path), RedisStore (a real
redis-server from conftest, a unique key prefix per test). Time comes from a ManualClock; nothing sleeps."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import free_port
from regoguard.limits import ManualClock, MemoryStore, Spec, Store, StoreError, open_store
from regoguard.limits.sqlite_store import SQLiteStore
from regoguard.limits.store import TakeResult

KEY = "global//srv/tool._rate_minute"
OTHER = "principal/alice/srv/tool._rate_minute"


@dataclass
class Backend:
    name: str
    opener: Callable[[], Store]
    persistent: bool
    opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        store = self.opener()
        self.opened.append(store)
        return store


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        shared = MemoryStore()
        b = Backend("memory", lambda: shared, persistent=False)
    elif request.param == "sqlite":
        path = tmp_path / "state" / "state.db"
        b = Backend("sqlite", lambda: SQLiteStore(path), persistent=True)
    else:
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        b = Backend("redis", lambda: open_store(url, prefix), persistent=True)
    yield b
    for store in b.opened:
        with contextlib.suppress(Exception):
            store.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def take(store: Store, clock: ManualClock, *items: tuple[str, Spec]) -> TakeResult:
    return store.take_all(list(items), clock.now())


def level(store: Store, key: str) -> float | None:
    state = store.snapshot(key).get(key)
    return None if state is None else state.tokens


# -- take until the capacity, exactly ------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [1, 3, 10])
def test_takes_exactly_capacity_then_denies_with_retry_after(store: Store, clock: ManualClock, capacity: int) -> None:
    spec = Spec(capacity=capacity, window=60, cost=1)
    for i in range(capacity):
        assert take(store, clock, (KEY, spec)).ok, f"take {i + 1} of {capacity}"
    denied = take(store, clock, (KEY, spec))
    assert not denied.ok
    assert denied.failed_index == 0
    assert denied.retry_after == pytest.approx(60 / capacity)
    assert level(store, KEY) == pytest.approx(0.0, abs=1e-9)


def test_denials_do_not_drain(store: Store, clock: ManualClock) -> None:
    spec = Spec(capacity=2, window=60, cost=1)
    assert take(store, clock, (KEY, spec)).ok
    assert take(store, clock, (KEY, spec)).ok
    for _ in range(5):
        assert not take(store, clock, (KEY, spec)).ok
    clock.advance(30)  # exactly one token back
    assert take(store, clock, (KEY, spec)).ok
    assert not take(store, clock, (KEY, spec)).ok


def test_cost_beyond_capacity_never_fits(store: Store, clock: ManualClock) -> None:
    r = take(store, clock, (KEY, Spec(capacity=5, window=60, cost=6)))
    assert not r.ok and r.failed_index == 0 and r.retry_after is None
    assert level(store, KEY) in (None, 5.0)  # the full bucket is not drained


def test_strict_allows_one_fewer(store: Store, clock: ManualClock) -> None:
    spec = Spec(capacity=3, window=60, cost=1, strict=True)
    assert take(store, clock, (KEY, spec)).ok
    assert take(store, clock, (KEY, spec)).ok
    r = take(store, clock, (KEY, spec))
    assert not r.ok  # the counter would reach 3, and the limit is < 3
    # one token is left; a hair more than one is needed, and that hair refills in well under a second
    assert r.retry_after is not None and 0 < r.retry_after < 1e-3
    assert level(store, KEY) == pytest.approx(1.0)


def test_fractional_costs_sum_to_the_cap(store: Store, clock: ManualClock) -> None:
    key = "global//pay/create_charge.daily_spend"
    for cost in (0.1,) * 50 + (2.5, 0.25, 2.24, 0.01):  # 5 + 5.0 = 10.00
        assert take(store, clock, (key, Spec(10, 86400, cost))).ok, cost
    r = take(store, clock, (key, Spec(10, 86400, 0.01)))
    assert not r.ok
    assert r.retry_after == pytest.approx(0.01 / (10 / 86400), rel=1e-3)


def test_large_cap_amounts_summing_to_the_cap(
    store: Store, backend: Backend, clock: ManualClock, request: pytest.FixtureRequest
) -> None:
    """A 10,000,000 cap; 0.123456789 then 9999999.876543211 (float sum: exactly 1e7) must both fit."""
    key = "global//pay/create_charge.daily_spend"
    a, b = 0.123456789, 9999999.876543211
    assert a + b == 10_000_000.0
    assert take(store, clock, (key, Spec(1e7, 86400, a))).ok
    assert take(store, clock, (key, Spec(1e7, 86400, b))).ok
    assert not take(store, clock, (key, Spec(1e7, 86400, 0.01))).ok


# -- all or none ----------------------------------------------------------------------------------------------


def test_all_or_none_second_does_not_fit(store: Store, clock: ManualClock) -> None:
    wide, narrow = Spec(10, 60, 1), Spec(1, 60, 1)
    assert take(store, clock, (OTHER, narrow)).ok  # narrow bucket now empty
    before = level(store, KEY)
    r = take(store, clock, (KEY, wide), (OTHER, narrow))
    assert not r.ok and r.failed_index == 1
    assert r.retry_after == pytest.approx(60.0)
    assert level(store, KEY) == before  # the first bucket is unchanged (None: never written)
    assert level(store, OTHER) == pytest.approx(0.0, abs=1e-9)


def test_all_or_none_first_does_not_fit(store: Store, clock: ManualClock) -> None:
    r = take(store, clock, (KEY, Spec(1, 60, 2)), (OTHER, Spec(10, 60, 1)))
    assert not r.ok and r.failed_index == 0 and r.retry_after is None
    assert level(store, OTHER) is None


def test_all_or_none_with_a_partly_used_first_bucket(store: Store, clock: ManualClock) -> None:
    a, b = Spec(10, 60, 3), Spec(5, 60, 5)
    assert take(store, clock, (KEY, a)).ok  # KEY 7
    assert take(store, clock, (KEY, a), (OTHER, b)).ok  # KEY 4, OTHER 0
    r = take(store, clock, (KEY, a), (OTHER, b))
    assert not r.ok and r.failed_index == 1
    assert level(store, KEY) == pytest.approx(4.0)
    assert level(store, OTHER) == pytest.approx(0.0, abs=1e-9)


def test_all_fit_all_taken(store: Store, clock: ManualClock) -> None:
    assert take(store, clock, (KEY, Spec(10, 60, 2)), (OTHER, Spec(5, 60, 1.5))).ok
    assert level(store, KEY) == pytest.approx(8.0)
    assert level(store, OTHER) == pytest.approx(3.5)


def test_same_key_twice_counts_both(store: Store, clock: ManualClock) -> None:
    spec = Spec(3, 60, 2)
    r = take(store, clock, (KEY, spec), (KEY, spec))  # 4 > 3: the second one does not fit
    assert not r.ok and r.failed_index == 1
    assert level(store, KEY) is None  # nothing written
    assert take(store, clock, (KEY, Spec(3, 60, 1)), (KEY, Spec(3, 60, 2))).ok  # 1 + 2 = 3 fits
    assert level(store, KEY) == pytest.approx(0.0, abs=1e-9)
    assert not take(store, clock, (KEY, Spec(3, 60, 1))).ok


def test_empty_take_is_ok(store: Store, clock: ManualClock) -> None:
    # the limiter never sends an empty list, but a store should not fail on one
    try:
        r = store.take_all([], clock.now())
    except StoreError:
        pytest.skip("empty take refused with StoreError")
    assert r.ok


# -- refill (ManualClock, no sleeps) --------------------------------------------------------------------------


def test_half_a_window_gives_half_the_tokens(store: Store, clock: ManualClock) -> None:
    spec = Spec(capacity=10, window=60, cost=1)
    for _ in range(10):
        assert take(store, clock, (KEY, spec)).ok
    assert not take(store, clock, (KEY, spec)).ok
    clock.advance(30)
    for i in range(5):
        assert take(store, clock, (KEY, spec)).ok, f"refilled take {i + 1} of 5"
    r = take(store, clock, (KEY, spec))
    assert not r.ok
    assert r.retry_after == pytest.approx(6.0)


def test_refill_caps_at_capacity(store: Store, clock: ManualClock) -> None:
    spec = Spec(capacity=4, window=60, cost=1)
    for _ in range(4):
        assert take(store, clock, (KEY, spec)).ok
    clock.advance(3600)  # many windows
    for _ in range(4):
        assert take(store, clock, (KEY, spec)).ok
    assert not take(store, clock, (KEY, spec)).ok


def test_refill_with_wall_clock_sized_timestamps(
    store: Store, backend: Backend, request: pytest.FixtureRequest
) -> None:
    """Like the half-window test, but with a clock reading like time.time() (1.78e9 s with a fraction).

    Every store must give back exactly half a bucket after half a window, whatever the magnitude of "now".
    """
    clock = ManualClock(start=1_780_000_000.123456)
    spec = Spec(capacity=1000, window=86400, cost=1)
    assert take(store, clock, (KEY, Spec(1000, 86400, 1000))).ok  # drain in one go
    clock.advance(43200)  # half a day: 500 tokens back
    r = take(store, clock, (KEY, Spec(1000, 86400, 500)))
    assert r.ok, f"500 should fit after half a window; retry_after={r.retry_after}"
    assert not take(store, clock, (KEY, spec)).ok


# -- give back -------------------------------------------------------------------------------------------------


def test_give_back_returns_tokens(store: Store, clock: ManualClock) -> None:
    spec = Spec(capacity=3, window=60, cost=1)
    for _ in range(3):
        assert take(store, clock, (KEY, spec)).ok
    store.give_back_all([(KEY, spec)], clock.now())
    assert level(store, KEY) == pytest.approx(1.0)
    assert take(store, clock, (KEY, spec)).ok
    assert not take(store, clock, (KEY, spec)).ok


def test_give_back_several_and_capped(store: Store, clock: ManualClock) -> None:
    a, b = Spec(10, 60, 4), Spec(5, 60, 1)
    assert take(store, clock, (KEY, a), (OTHER, b)).ok  # KEY 6, OTHER 4
    store.give_back_all([(KEY, a), (OTHER, b)], clock.now())
    assert level(store, KEY) == pytest.approx(10.0)
    assert level(store, OTHER) == pytest.approx(5.0)
    store.give_back_all([(KEY, a), (OTHER, b)], clock.now())  # a second refund does not overfill
    assert level(store, KEY) == pytest.approx(10.0)
    assert level(store, OTHER) == pytest.approx(5.0)
    store.give_back_all([("global//srv/never_taken", a)], clock.now())
    assert level(store, "global//srv/never_taken") in (None, 10.0)


# -- snapshot / reset ---------------------------------------------------------------------------------------------

KEYS = [
    "global//srv/a._rate_minute",
    "global//other/a._rate_minute",
    "principal/alice/srv/a._rate_minute",
    "principal/alice2/srv/a._rate_minute",
    "principal/bob/srv/a._rate_minute",
    "session/1234/srv/a._rate_minute",
]


def fill(store: Store, clock: ManualClock, keys: list[str]) -> None:
    for i, k in enumerate(keys):
        assert take(store, clock, (k, Spec(10, 60, i + 1))).ok


def test_snapshot_lists_everything_sorted(store: Store, clock: ManualClock) -> None:
    assert store.snapshot() == {}
    fill(store, clock, KEYS)
    snap = store.snapshot()
    assert list(snap) == sorted(KEYS)
    for i, k in enumerate(KEYS):
        assert snap[k].tokens == pytest.approx(10 - (i + 1))
        assert snap[k].updated == pytest.approx(clock.now())


def test_snapshot_and_reset_by_prefix(store: Store, clock: ManualClock) -> None:
    fill(store, clock, KEYS)
    assert set(store.snapshot("principal/")) == {k for k in KEYS if k.startswith("principal/")}
    assert set(store.snapshot("principal/alice")) == {KEYS[2], KEYS[3]}
    assert set(store.snapshot("principal/alice/")) == {KEYS[2]}
    assert store.snapshot("nothing/") == {}
    assert store.reset("principal/alice/") == 1
    assert set(store.snapshot()) == set(KEYS) - {KEYS[2]}
    assert store.reset("global//") == 2
    assert store.reset("global//") == 0
    assert store.reset() == 3
    assert store.snapshot() == {}


def test_reset_bucket_starts_full(store: Store, clock: ManualClock) -> None:
    spec = Spec(2, 3600, 1)
    assert take(store, clock, (KEY, spec)).ok
    assert take(store, clock, (KEY, spec)).ok
    assert not take(store, clock, (KEY, spec)).ok
    assert store.reset(KEY) == 1
    assert take(store, clock, (KEY, spec)).ok


@pytest.mark.parametrize("special", ["*", "?", "[x]", "%", "_", "\\"])
def test_prefixes_are_literal(store: Store, clock: ManualClock, special: str) -> None:
    """Glob (Redis SCAN MATCH) and LIKE (SQL) metacharacters in a prefix match only themselves."""
    literal = f"principal/a{special}b/srv/t.c"
    decoys = ["principal/axb/srv/t.c", "principal/ab/srv/t.c", "principal/a/b/srv/t.c", "principal/a\\b/srv/t.c"]
    decoys = [d for d in decoys if d != literal]
    fill(store, clock, [literal, *decoys])
    assert set(store.snapshot(f"principal/a{special}")) == {literal}
    assert store.reset(f"principal/a{special}") == 1
    assert set(store.snapshot()) == set(decoys)


# -- persistence --------------------------------------------------------------------------------------------------


def test_counters_survive_a_restart_mid_window(backend: Backend, clock: ManualClock) -> None:
    if not backend.persistent:
        pytest.skip("the memory store lives and dies with its process")
    spec = Spec(capacity=5, window=3600, cost=1)
    first = backend.open()
    for _ in range(3):
        assert take(first, clock, (KEY, spec)).ok
    first.close()
    clock.advance(1)  # mid-window: 5/3600 of a token back
    second = backend.open()
    assert level(second, KEY) == pytest.approx(2.0)
    assert take(second, clock, (KEY, spec)).ok
    assert take(second, clock, (KEY, spec)).ok
    r = take(second, clock, (KEY, spec))
    assert not r.ok
    assert r.retry_after == pytest.approx((1 - 5 / 3600) * 720, rel=1e-6)


def test_two_open_stores_share_counters(backend: Backend, clock: ManualClock) -> None:
    a, b = backend.open(), backend.open()
    spec = Spec(capacity=3, window=3600, cost=1)
    assert take(a, clock, (KEY, spec)).ok
    assert take(b, clock, (KEY, spec)).ok
    assert take(a, clock, (KEY, spec)).ok
    assert not take(b, clock, (KEY, spec)).ok
    assert not take(a, clock, (KEY, spec)).ok


# -- failures -------------------------------------------------------------------------------------------------------


def test_sqlite_path_under_a_regular_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path / "afile" / "state.db")
    with pytest.raises(StoreError):
        open_store(str(tmp_path / "afile" / "state.db"))


def test_sqlite_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a sqlite database, just some bytes" * 100)
    with pytest.raises(StoreError):
        store = SQLiteStore(path)
        store.take_all([(KEY, Spec(1, 60, 1))], 0.0)


def test_sqlite_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.close()
    with pytest.raises(StoreError):
        store.take_all([(KEY, Spec(1, 60, 1))], 0.0)


def test_redis_on_a_closed_port_is_a_store_error(redis_prefix: str) -> None:
    store = open_store(f"redis://127.0.0.1:{free_port()}/0", redis_prefix)
    try:
        with pytest.raises(StoreError):
            store.take_all([(KEY, Spec(1, 60, 1))], 0.0)
        with pytest.raises(StoreError):
            store.give_back_all([(KEY, Spec(1, 60, 1))], 0.0)
        with pytest.raises(StoreError):
            store.snapshot()
        with pytest.raises(StoreError):
            store.reset()
    finally:
        store.close()


def test_redis_bad_url_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        open_store("redis://127.0.0.1:notaport/0")


# -- Redis specifics ----------------------------------------------------------------------------------------------


def test_redis_prefix_isolates_stores(redis_url: str, redis_prefix: str, clock: ManualClock) -> None:
    a = open_store(redis_url, redis_prefix + "a:")
    b = open_store(redis_url, redis_prefix + "b:")
    try:
        spec = Spec(1, 3600, 1)
        assert take(a, clock, (KEY, spec)).ok
        assert take(b, clock, (KEY, spec)).ok  # a different prefix is a different bucket
        assert not take(a, clock, (KEY, spec)).ok
        assert b.reset() == 1
        assert set(a.snapshot()) == {KEY}
    finally:
        a.close()
        b.close()


def test_sqlite_prefix_isolates_stores_in_one_file(tmp_path: Path, clock: ManualClock) -> None:
    """``--state-prefix`` with SQLite, as Intercept has it: two teams share one file, not their buckets;
    no prefix (the default) reads the keys of a file written before prefixes existed."""
    path = tmp_path / "shared.db"
    plain = SQLiteStore(path)
    a, b = open_store(str(path), "team-a:"), open_store(str(path), "team-b:")
    try:
        spec = Spec(1, 3600, 1)
        assert take(plain, clock, (KEY, spec)).ok
        assert take(a, clock, (KEY, spec)).ok  # a different prefix is a different bucket
        assert take(b, clock, (KEY, spec)).ok
        assert not take(a, clock, (KEY, spec)).ok
        assert set(a.snapshot()) == {KEY}  # keys come back without the store's own prefix
        assert b.reset() == 1
        assert not take(a, clock, (KEY, spec)).ok and take(b, clock, (KEY, spec)).ok
        assert set(plain.snapshot()) == {KEY, f"team-a:{KEY}", f"team-b:{KEY}"}
    finally:
        for store in (plain, a, b):
            store.close()


def test_reading_a_missing_sqlite_store_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "state.db"
    with pytest.raises(StoreError, match="no state database"):
        open_store(str(missing), create=False)
    assert not (tmp_path / "no").exists()


def test_redis_keys_expire_after_their_window(redis_url: str, redis_prefix: str, clock: ManualClock) -> None:
    import redis

    store = open_store(redis_url, redis_prefix)
    raw = redis.Redis.from_url(redis_url)
    try:
        assert take(store, clock, (KEY, Spec(5, 60, 1))).ok
        ttl = raw.pttl(redis_prefix + KEY)
        assert 60_000 < ttl <= 61_000
        assert raw.hgetall(redis_prefix + KEY).keys() == {b"tokens", b"updated"}
    finally:
        raw.close()
        store.close()


# --- first-use pins (tool pinning's `pin: first-use`) ------------------------------------------------


def test_the_first_digest_recorded_wins_across_connections(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    assert a.pin_first_use({"srv/transfer": "d1", "srv/echo": "e1"}) == {"srv/transfer": "d1", "srv/echo": "e1"}
    assert b.pin_first_use({"srv/transfer": "d2", "srv/new": "n1"}) == {"srv/transfer": "d1", "srv/new": "n1"}
    assert a.pin_first_use({}) == {}
    assert b.snapshot() == a.snapshot()  # pins are not buckets: `state show` never lists them
    assert "srv/transfer" not in a.snapshot()


def test_pins_are_kept_across_restarts(backend: Backend) -> None:
    if not backend.persistent:
        pytest.skip("the memory store lives and dies with its process")
    first = backend.open()
    first.pin_first_use({"srv/transfer": "d1"})
    first.close()
    assert backend.open().pin_first_use({"srv/transfer": "d2"}) == {"srv/transfer": "d1"}
