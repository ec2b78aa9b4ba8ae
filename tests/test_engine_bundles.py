"""Each call is decided by its own tool's bundle, on a pool of workers: a bundle holds only its tool's
rules, bundles built ahead or on demand (and evicted) decide alike, many threads at once each get their
own decision, and only what the rules read is handed to the engine.
"""

from __future__ import annotations

import threading

from helpers_policy import REGEX_POLICY, call_doc, compiled_for
from regoguard import Engine, EngineLimits

MIB = 1024 * 1024


MANY_TOOLS = "tools:\n" + "".join(
    f"  t{i}:\n    rules:\n      - name: cap\n        conditions:\n          - {{path: args.n, op: lte, value: {i}}}\n"
    for i in range(6)
) + "hide: [secret]\n"


def test_a_calls_bundle_holds_only_its_tools_rules():
    engine = Engine(compiled_for(MANY_TOOLS))
    try:
        unit = engine.rego_for("t3")
        (text,) = unit.modules.values()
        assert "\nt3_ok0 if {" in text and "<= 3\n" in text
        assert not any(f"t{i}_" in text for i in (0, 1, 2, 4, 5))
        assert unit.query == "data.regoguard.policy.verdict"
        assert "t3_" not in next(iter(engine.rego_for("secret").modules.values()))
        assert "t3_" not in next(iter(engine.rego_for("unknown").modules.values()))
        # the bundle asks for the rule's outcome; the engine holds the reason's text
        assert "\nverdict := [t3_ok0]\n" in text and "t3_reason" not in text
        # and reads the arguments where the engine puts them, one level up from the documented input
        assert "v0_0 := input.args.n\n" in text and "input.tool" not in text
        assert engine.bundle_input(call_doc("t3", {"n": 1, "other": 2})) == {"args": {"n": 1}}
        assert "v0_0 := input.tool.arguments.n\n" in engine.compiled.module
        (spec,) = engine.compiled.units[engine.compiled.unit_for("t3")].section.spec
        assert spec["kind"] == "ok" and spec["reason"]["rule"] == "t3/cap"
    finally:
        engine.close()


def test_bundles_evicted_and_built_on_demand_decide_the_same():
    engine = Engine(compiled_for(MANY_TOOLS), EngineLimits(cache_size=0, max_bundles=2, prebuild=False))
    try:
        for _ in range(2):
            for i in range(6):
                assert engine.evaluate(call_doc(f"t{i}", {"n": i})).allow
                d = engine.evaluate(call_doc(f"t{i}", {"n": i + 1}))
                assert d.rule == f"t{i}/cap"
                assert d.extra["details"] == {f"t{i}/cap": [f"args.n lte {i} does not hold"]}
        assert engine.evaluate(call_doc("secret", {})).rule == "hide"
        assert engine.bundles_built <= 2
        assert engine.cold_builds > 6  # evicted bundles were built again when needed
    finally:
        engine.close()


def test_bundles_are_built_ahead_in_the_background():
    engine = Engine(compiled_for(MANY_TOOLS), EngineLimits(cache_size=0))
    try:
        assert engine.wait_ready(30)
        assert engine.bundles_built == len(engine.compiled.units)
        assert engine.evaluate(call_doc("t5", {"n": 1})).allow
        assert engine.cold_builds == 0
    finally:
        engine.close()


def test_many_threads_at_once_get_each_their_own_decision():
    engine = Engine(compiled_for(REGEX_POLICY), EngineLimits(cache_size=0, workers=2))
    calls = [("abc", True), ("abx", False), ("ABC", False), ("zzz", True)] * 25
    results: list[tuple[bool, bool]] = []
    lock = threading.Lock()

    def run(offset: int) -> None:
        for k in range(len(calls)):
            s, want = calls[(k + offset) % len(calls)]
            got = engine.evaluate(call_doc("t", {"s": s})).allow
            with lock:
                results.append((got, want))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        engine.close()
    assert len(results) == 8 * len(calls)
    assert all(got is want for got, want in results)


def test_a_large_argument_the_rules_do_not_read_is_decided():
    # only what the tool's rules read is handed to the engine: a 4 MB blob beside it changes nothing
    engine = Engine(compiled_for(REGEX_POLICY), EngineLimits(cache_size=0))
    try:
        assert engine.evaluate(call_doc("t", {"s": "abc", "blob": "x" * 4 * MIB})).allow
        assert engine.evaluate(call_doc("t", {"s": "abx", "blob": "x" * 4 * MIB})).rule == "t/no_x"
    finally:
        engine.close()


def test_names_matched_against_globs_are_remembered_within_a_bound():
    globs = "tools:\n" + "".join(
        f'  "svc{i}_*":\n    rules:\n      - name: cap\n        conditions:\n'
        f"          - {{path: args.n, op: lte, value: {i}}}\n" for i in range(30))
    compiled = compiled_for(globs)
    engine = Engine(compiled, EngineLimits(cache_size=0))
    try:
        for k in range(5000):  # names an agent makes up: the memo of glob lookups stays bounded
            assert compiled.key_for(f"other_{k}") is None
        assert len(compiled.__dict__["_glob_keys"]) <= 4096
        assert compiled.key_for("svc7_x") == "svc7_*" and compiled.key_for("svc7_x") == "svc7_*"
        assert engine.evaluate(call_doc("svc7_x", {"n": 7})).allow
        assert not engine.evaluate(call_doc("svc7_x", {"n": 8})).allow
        assert engine.evaluate(call_doc("other_1", {})).allow  # unlisted, default allow
    finally:
        engine.close()
