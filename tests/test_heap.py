"""The loaded policy is kept out of the cyclic collector's way: no collection while a policy loads (one
as it ends), and once settled, a full collection no longer walks the policy (whose full passes stalled
calls for 70-210 ms at 1,000 tools); a later full settle gives back what an earlier one kept."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import regoguard
from regoguard import heap


def _policy(n: int) -> str:
    lines = ['version: "1"', "default: deny", "tools:"]
    for i in range(n):
        lines += [f"  tool_{i}:", "    rules:", "      - name: cap",
                  "        conditions:", f"          - {{path: args.amount, op: lte, value: {i}}}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def thawed() -> Iterator[None]:
    """Whatever a test freezes is given back to the collector afterwards (the rest of the suite collects)."""
    assert gc.isenabled()
    yield
    gc.unfreeze()
    assert gc.isenabled()


class _Node:
    def __init__(self) -> None:
        self.other: Any = self  # a reference cycle: only the cyclic collector frees it


def _collections_during(fn: Any) -> list[int]:
    seen: list[int] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(callback)
    try:
        fn()
    finally:
        gc.callbacks.remove(callback)
    return seen


def test_loading_and_compiling_a_policy_sets_off_no_collection() -> None:
    text = _policy(300)
    policy: list[Any] = []
    # at most the one that catches up as the block ends (its young objects were counted meanwhile)
    assert len(_collections_during(lambda: policy.append(regoguard.load_policy_text(text, "p.yaml")))) <= 1
    assert len(_collections_during(lambda: regoguard.compile_policy(policy[0]))) <= 1
    assert gc.isenabled()
    # the same work outside a pause does set them off (what the pause saves)
    assert _collections_during(lambda: [[{"k": [i]} for i in range(200)] for _ in range(100)])


def test_after_settling_a_full_collection_no_longer_walks_the_loaded_policy(thawed: None) -> None:
    policy = regoguard.compile_policy(regoguard.load_policy_text(_policy(20), "p.yaml"))
    tracked = [o for o in (policy, policy.settings, policy.units) if gc.is_tracked(o)]
    assert tracked and all(any(o is t for o in gc.get_objects()) for t in tracked)
    heap.settle()
    assert gc.get_freeze_count() > 0
    walked = gc.get_objects()  # every generation the collector walks
    assert not any(o is t for o in walked for t in tracked)


def test_a_full_settle_frees_the_cycles_an_earlier_settle_kept(thawed: None) -> None:
    node = _Node()
    gone = weakref.ref(node)
    heap.settle()
    del node
    gc.collect()
    assert gone() is not None  # frozen: a collection does not look at it
    heap.settle(full=True)
    assert gone() is None


def test_pauses_nest_and_overlap_across_threads_and_restore_the_collector() -> None:
    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with heap.paused():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=other)
    with heap.paused():
        assert not gc.isenabled()
        t.start()
        assert entered.wait(10)
        with heap.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other thread's block is still running
    release.set()
    t.join(10)
    assert gc.isenabled()


def test_a_collector_switched_off_before_stays_off() -> None:
    gc.disable()
    try:
        with heap.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_failing_block_restores_the_collector() -> None:
    with pytest.raises(regoguard.PolicyLoadError):
        regoguard.load_policy_text("tools: [", "bad.yaml")
    assert gc.isenabled()
