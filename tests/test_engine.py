"""The embedded engine fails closed: over-large or malformed input, huge strings, broken or noisy extra
modules and slow evaluations all end in a deny with a reason, never an exception or a crash. Also the
decision cache: hits only when nothing the rules read has changed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import regoguard
from helpers_policy import REGEX_POLICY, call_doc, compiled_for, decide, dedent, engine_for
from regoguard import Engine, EngineLimits
from regoguard.engine import library_modules, run_with_large_stack
from regoguard.errors import EngineError

TESTS = Path(__file__).parent

ONE_MB = 1_000_000
MIB = 1024 * 1024
REGEX_BOUND = 64 * 1024  # the longest string lib.rego lets reach a regex

ALLOW_ALL = '{"allow": true, "action": "allow", "reasons": [], "charges": []}'


def replacement_library(body: str, verdict: bool = True) -> str:
    """A module replacing the Rego library (same module name): ``body`` plus, if ``verdict``, the one
    query the engine asks of it with extra modules loaded (``verdict``: the decision in the shape the
    engine reads, with the policy's argument-derived ``costs`` and the team's ``charges``)."""
    head = "package regoguard.lib\n\nimport rego.v1\n\n"
    if verdict:
        head += ('verdict := {"allow": decision.allow, "action": decision.action, "reasons": decision.reasons, '
                 '"costs": [], "charges": []}\n\n')
    return head + body


@pytest.fixture(scope="module")
def regex_engine():
    engine = Engine(compiled_for(REGEX_POLICY))
    yield engine
    engine.close()


# --- input size and shape -----------------------------------------------------------------------------


def test_input_over_the_limit_is_denied():
    engine = Engine(compiled_for(REGEX_POLICY), EngineLimits(max_input_bytes=1000))
    try:
        d = engine.evaluate(call_doc("t", {"s": "a" * 2000}))
        assert not d.allow
        assert d.action == "deny"
        assert d.rule == "engine/input-too-large"
        assert "limit is 1000" in d.message
        # just under the limit is decided by the policy
        assert engine.evaluate(call_doc("t", {"s": "abc"})).allow
        # a size hint from the transport is trusted
        d = engine.evaluate(call_doc("t", {"s": "abc"}), size_hint=5000)
        assert d.rule == "engine/input-too-large"
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([], "input must be an object"),
        ("call", "input must be an object"),
        ({}, "input.tool must be an object"),
        ({"tool": "t"}, "input.tool must be an object"),
        ({"tool": ["t"]}, "input.tool must be an object"),
        ({"tool": {}}, "input.tool.name must be a string"),
        ({"tool": {"name": 5}}, "input.tool.name must be a string"),
        ({"tool": {"name": "t", "arguments": []}}, "input.tool.arguments must be an object"),
        ({"tool": {"name": "t", "arguments": "s=abc"}}, "input.tool.arguments must be an object"),
        ({"tool": {"name": "t", "arguments": {"s": b"abc"}}}, "input is not JSON"),
        ({"tool": {"name": "t", "arguments": {"s": {1, 2}}}}, "input is not JSON"),
    ],
)
def test_malformed_input_is_denied(regex_engine, doc, fragment):
    d = regex_engine.evaluate(doc)
    assert not d.allow
    assert d.rule == "engine/input"
    assert fragment in d.message


# --- huge strings and the regex bound -----------------------------------------------------------------


def test_one_megabyte_string_is_decided_on_the_worker(regex_engine):
    assert regex_engine.evaluate(call_doc("t", {"s": "a" * REGEX_BOUND})).allow
    d = regex_engine.evaluate(call_doc("t", {"s": "a" * (REGEX_BOUND - 2) + "Ax"}))
    assert [r.rule for r in d.reasons] == ["t/word", "t/no_x"]
    # a 1 MB argument is a decision (a deny: it is past the bound), not a dead process
    d = regex_engine.evaluate(call_doc("t", {"s": "a" * ONE_MB}))
    assert [r.rule for r in d.reasons] == ["t/word", "t/no_x"]


def test_one_megabyte_string_is_decided_inline_on_a_large_stack():
    def run():
        engine = Engine(compiled_for(REGEX_POLICY))
        try:
            return (
                engine.evaluate(call_doc("t", {"s": "b" * REGEX_BOUND})),
                engine.evaluate(call_doc("t", {"s": "B" * REGEX_BOUND})),
                engine.evaluate(call_doc("t", {"s": "b" * ONE_MB})),
            )
        finally:
            engine.close()

    ok, bad, huge = run_with_large_stack(run)
    assert ok.allow
    assert not bad.allow
    assert bad.rule == "t/word"
    assert not huge.allow


@pytest.mark.parametrize("size", [REGEX_BOUND + 1, MIB + 1, 2 * MIB])
def test_string_over_the_regex_bound_fails_regex_and_not_regex(regex_engine, size):
    d = regex_engine.evaluate(call_doc("t", {"s": "a" * size}))
    assert not d.allow
    assert [r.rule for r in d.reasons] == ["t/word", "t/no_x"]


def test_regex_bound_is_exactly_64_kibibytes(regex_engine):
    assert regex_engine.evaluate(call_doc("t", {"s": "a" * REGEX_BOUND})).allow
    assert not regex_engine.evaluate(call_doc("t", {"s": "a" * (REGEX_BOUND + 1)})).allow


def test_string_over_the_regex_bound_fails_glob_but_not_length_checks():
    yaml_text = dedent(
        """
        tools:
          t:
            rules:
              - name: g
                conditions:
                  - {path: args.s, op: glob, value: "*"}
              - name: long
                conditions:
                  - {path: args.s, op: len_gte, value: 1048577}
                  - {path: args.s, op: starts_with, value: a}
        """
    )
    engine = Engine(compiled_for(yaml_text))
    try:
        d = engine.evaluate(call_doc("t", {"s": "a" * (MIB + 1)}))
        assert [r.rule for r in d.reasons] == ["t/g"]
    finally:
        engine.close()


def _run_child(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=TESTS,
    )


def test_near_bound_string_against_an_alternation_regex_is_decided_not_a_crash():
    # Run in a child process: if the engine's regex recursion overflows the stack, the process dies.
    # At the 64 KiB bound the regex runs (and must not crash); 1,000,000 characters is past it (denied).
    child = _run_child(
        """
        import json, os
        import regoguard
        from helpers_policy import call_doc
        text = "tools:\\n  t:\\n    rules:\\n      - name: r\\n        conditions:\\n"
        text += "          - {path: args.s, op: regex, value: '^(a|b)*$'}\\n"
        engine = regoguard.Engine(regoguard.compile_policy(regoguard.load_policy_text(text)),
                                  regoguard.EngineLimits(timeout=10))
        near = engine.evaluate(call_doc("t", {"s": "ab" * 32_768}))
        far = engine.evaluate(call_doc("t", {"s": "ab" * 500_000}))
        print(json.dumps([near.to_json(), far.to_json()]), flush=True)
        os._exit(0)
        """
    )
    assert child.returncode == 0, f"child died with {child.returncode}: {child.stderr[-2000:]}"
    near, far = json.loads(child.stdout.strip().splitlines()[-1])
    assert near["allow"] is True, near
    assert far["allow"] is False, far


def test_unanchored_dot_star_regex_on_a_modest_argument_is_decided_in_time():
    # RE2 (OPA) is linear here; a 20 KB argument must not run into the evaluation timeout.
    child = _run_child(
        """
        import json, os
        import regoguard
        from helpers_policy import call_doc
        text = "tools:\\n  t:\\n    rules:\\n      - name: r\\n        conditions:\\n"
        text += "          - {path: args.s, op: not_regex, value: '.*password'}\\n"
        engine = regoguard.Engine(regoguard.compile_policy(regoguard.load_policy_text(text)),
                                  regoguard.EngineLimits(timeout=1))
        d = engine.evaluate(call_doc("t", {"s": "a" * 20_000}))
        print(json.dumps(d.to_json()), flush=True)
        os._exit(0)  # do not wait for a stuck worker
        """
    )
    assert child.returncode == 0, child.stderr[-2000:]
    decision = json.loads(child.stdout.strip().splitlines()[-1])
    assert decision["allow"] is True, decision


# --- extra modules ------------------------------------------------------------------------------------


def test_extra_module_that_leaves_the_decision_undefined_is_a_deny():
    # Replacing the library under its own name: `decision` exists but never has a value.
    lib = replacement_library("decision := " + ALLOW_ALL + " if input.never\n")
    engine = Engine(compiled_for(REGEX_POLICY), extra_modules={"regoguard/lib.rego": lib})
    try:
        d = engine.evaluate(call_doc("t", {"s": "abc"}))
        assert not d.allow
        assert d.rule == "engine/undefined"
        assert not d.cached
        assert not engine.evaluate(call_doc("t", {"s": "abc"})).cached  # extra modules turn the cache off
    finally:
        engine.close()


def test_extra_module_that_conflicts_with_the_library_is_a_deny():
    extra = 'package regoguard.lib\n\nimport rego.v1\n\nreasons := [] if input.tool.name == "t"\n'
    engine = Engine(compiled_for(REGEX_POLICY), extra_modules={"team.rego": extra})
    try:
        d = engine.evaluate(call_doc("t", {"s": "ABC"}))  # the library has reasons, the module says none
        assert not d.allow
        assert d.rule == "engine/error"
        # where the two agree there is no conflict
        assert engine.evaluate(call_doc("t", {"s": "abc"})).allow
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("decision", "rule"),
    [
        ("5", "engine/malformed"),
        ('{"allow": true}', "engine/malformed"),  # an allowing verdict without its costs
        ('{"allow": "yes", "reasons": [], "charges": []}', "engine/undefined"),
        ('{"allow": true, "reasons": [{"rule": "r", "message": "m"}], "charges": []}', "engine/malformed"),
    ],
)
def test_extra_module_with_a_malformed_decision_is_a_deny(decision, rule):
    lib = replacement_library(f"decision := {decision}\n\nverdict := decision\n", verdict=False)
    engine = Engine(compiled_for(REGEX_POLICY), extra_modules={"regoguard/lib.rego": lib})
    try:
        d = engine.evaluate(call_doc("t", {"s": "abc"}))
        assert not d.allow
        assert d.rule == rule
    finally:
        engine.close()


def test_extra_module_that_does_not_parse_fails_the_build():
    with pytest.raises(EngineError):
        Engine(compiled_for(REGEX_POLICY), extra_modules={"bad.rego": "package x\n\nthis is not rego\n"})


def test_extra_module_can_add_rules_beside_the_library():
    extra = "package team\n\nimport rego.v1\n\nanswer := 42\n"
    engine = Engine(compiled_for(REGEX_POLICY), extra_modules={"team.rego": extra})
    try:
        assert engine.evaluate(call_doc("t", {"s": "abc"})).allow
    finally:
        engine.close()
    assert set(library_modules()) == {"regoguard/lib.rego", "regoguard/custom.rego"}


def test_rego_print_in_an_extra_module_does_not_reach_stdout():
    child = _run_child(
        """
        import json
        from regoguard.stdout_guard import claim_stdout
        out = claim_stdout()
        import regoguard
        from helpers_policy import call_doc
        policy = "tools:\\n  t:\\n    rules:\\n      - {name: r, conditions: [{path: args.s, op: eq, value: a}]}\\n"
        extra = (
            "package regoguard.lib\\n\\nimport rego.v1\\n\\n"
            'allow if {\\n\\tprint("PRINTED-BY-REGO")\\n\\tfalse\\n}\\n'
        )
        compiled = regoguard.compile_policy(regoguard.load_policy_text(policy))
        engine = regoguard.Engine(compiled, extra_modules={"noisy.rego": extra})
        decision = engine.evaluate(call_doc("t", {"s": "a"}))
        out.write((json.dumps(decision.to_json()) + "\\n").encode())
        """
    )
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert len(lines) == 1, child.stdout
    assert json.loads(lines[0]) == {"allow": True, "action": "allow", "reasons": [], "charges": []}
    assert "PRINTED-BY-REGO" not in child.stdout
    assert "PRINTED-BY-REGO" in child.stderr  # it ran, and went to stderr


# --- timeouts -----------------------------------------------------------------------------------------

SLOW_LIB = replacement_library(
    f'decision := {ALLOW_ALL} if input.tool.name != "slow"\n\n'
    f"decision := {ALLOW_ALL} if {{\n"
    '\tinput.tool.name == "slow"\n'
    "\tcount([x | some x in numbers.range(1, 1000000)]) > 0\n"
    "}\n"
)


def test_slow_evaluation_times_out_as_a_deny_and_the_engine_recovers():
    engine = Engine(
        compiled_for(REGEX_POLICY),
        EngineLimits(timeout=0.1),
        extra_modules={"regoguard/lib.rego": SLOW_LIB},
    )
    try:
        d = engine.evaluate(call_doc("slow", {}))
        assert not d.allow
        assert d.rule == "engine/timeout"
        assert "0.1s" in d.message
        # the stuck worker was replaced: the next call is answered at once
        d = engine.evaluate(call_doc("fast", {}))
        assert d.allow
    finally:
        engine.close()


# --- the decision cache -------------------------------------------------------------------------------

CACHE_POLICY = dedent(
    """
    tools:
      create_charge:
        rules:
          - name: max_amount
            conditions:
              - {path: args.amount, op: lte, value: 100}
          - name: meta
            conditions:
              - {path: args.meta.env, op: neq, value: prod}
      "browse_*":
        rules:
          - name: https
            conditions:
              - {path: args.url, op: starts_with, value: "https://"}
      start:
        rules:
          - validate: {required_args: true}
      "*":
        rules:
          - name: owner
            conditions:
              - {path: args.owner, op: in, value: [acme, beta]}
    """
)


@pytest.fixture
def cache_engine():
    engine = Engine(compiled_for(CACHE_POLICY))
    yield engine
    engine.close()


def test_identical_call_is_a_cache_hit(cache_engine):
    doc = call_doc("create_charge", {"amount": 5, "meta": {"env": "dev"}, "owner": "acme"})
    first = cache_engine.evaluate(doc)
    second = cache_engine.evaluate(doc)
    assert first.allow and second.allow
    assert not first.cached
    assert second.cached
    assert second.to_json() == first.to_json()


def test_unread_argument_change_is_a_hit_and_read_argument_change_is_a_miss(cache_engine):
    base = {"amount": 5, "meta": {"env": "dev"}, "description": "coffee", "owner": "acme"}
    assert not cache_engine.evaluate(call_doc("create_charge", base)).cached
    hit = cache_engine.evaluate(call_doc("create_charge", {**base, "description": "tea", "extra": [1]}))
    assert hit.cached and hit.allow
    # principal and session are not read by any rule either
    doc = call_doc("create_charge", base)
    doc["principal"] = {"id": "someone-else"}
    assert cache_engine.evaluate(doc).cached
    miss = cache_engine.evaluate(call_doc("create_charge", {**base, "amount": 500}))
    assert not miss.cached
    assert not miss.allow
    assert miss.rule == "create_charge/max_amount"
    nested = cache_engine.evaluate(call_doc("create_charge", {**base, "meta": {"env": "prod"}}))
    assert not nested.cached
    assert nested.rule == "create_charge/meta"
    star = cache_engine.evaluate(call_doc("create_charge", {**base, "owner": "beta"}))
    assert not star.cached
    assert star.allow
    star = cache_engine.evaluate(call_doc("create_charge", {**base, "owner": "evil"}))
    assert not star.cached
    assert star.rule == "*/owner"


def test_missing_and_null_arguments_are_different_cache_keys(cache_engine):
    yaml_text = "tools:\n  t:\n    rules:\n      - conditions:\n          - {path: args.a, op: exists, value: false}\n"
    engine = Engine(compiled_for(yaml_text))
    try:
        assert engine.evaluate(call_doc("t", {})).allow
        assert engine.evaluate(call_doc("t", {"a": None})).allow
        d = engine.evaluate(call_doc("t", {"a": 0}))
        assert not d.allow
        assert not d.cached
    finally:
        engine.close()


def test_glob_and_unlisted_tools_cache_on_what_their_rules_read(cache_engine):
    a = cache_engine.evaluate(call_doc("browse_open", {"url": "https://a", "x": 1, "owner": "acme"}))
    b = cache_engine.evaluate(call_doc("browse_open", {"url": "https://a", "x": 2, "owner": "acme"}))
    c = cache_engine.evaluate(call_doc("browse_open", {"url": "http://a", "x": 2, "owner": "acme"}))
    assert (a.cached, b.cached, c.cached) == (False, True, False)
    assert c.rule == "browse_*/https"
    # another name under the same glob is another key
    assert not cache_engine.evaluate(call_doc("browse_close", {"url": "https://a", "owner": "acme"})).cached
    u1 = cache_engine.evaluate(call_doc("other", {"owner": "acme", "x": 1}))
    u2 = cache_engine.evaluate(call_doc("other", {"owner": "acme", "x": 2}))
    u3 = cache_engine.evaluate(call_doc("other", {"owner": "evil", "x": 2}))
    assert (u1.cached, u2.cached, u3.cached) == (False, True, False)
    assert u3.rule == "*/owner"


def test_cache_keys_on_the_schema_required_list(cache_engine):
    ok = cache_engine.evaluate(call_doc("start", {"url": "u", "owner": "acme"}, {"required": ["url"]}))
    assert ok.allow
    other = cache_engine.evaluate(call_doc("start", {"url": "u", "owner": "acme"}, {"required": ["url", "size"]}))
    assert not other.cached
    assert not other.allow


def test_cache_does_not_confuse_a_schema_without_required_with_no_schema(cache_engine):
    # With an inputSchema that requires nothing the call is allowed; without any schema it is denied.
    allowed = cache_engine.evaluate(call_doc("start", {"url": "u", "owner": "acme"}, {"type": "object"}))
    assert allowed.allow
    denied = cache_engine.evaluate(call_doc("start", {"url": "u", "owner": "acme"}))
    assert not denied.allow, denied
    assert denied.rule == "start/rules[0]"


def test_engine_denials_are_not_cached():
    engine = Engine(compiled_for(REGEX_POLICY), EngineLimits(max_input_bytes=200))
    try:
        big = call_doc("t", {"s": "a" * 300})
        assert engine.evaluate(big).rule == "engine/input-too-large"
        assert not engine.evaluate(big).cached
    finally:
        engine.close()


def test_huge_read_arguments_bypass_the_cache(regex_engine):
    doc = call_doc("t", {"s": "a" * 10_000})
    assert not regex_engine.evaluate(doc).cached
    assert not regex_engine.evaluate(doc).cached  # over max_cached_value_bytes


def test_cache_is_bounded():
    engine = Engine(compiled_for(CACHE_POLICY), EngineLimits(cache_size=2))
    try:
        for amount in (1, 2, 3):
            engine.evaluate(call_doc("create_charge", {"amount": amount, "meta": {}, "owner": "acme"}))
        assert engine.evaluate(call_doc("create_charge", {"amount": 3, "meta": {}, "owner": "acme"})).cached
        assert not engine.evaluate(call_doc("create_charge", {"amount": 1, "meta": {}, "owner": "acme"})).cached
    finally:
        engine.close()


def test_engine_revision_and_build_time():
    compiled = compiled_for(CACHE_POLICY)
    engine = Engine(compiled)
    try:
        assert engine.revision == compiled.revision
        assert engine.build_ns > 0
    finally:
        engine.close()


def test_engine_never_raises_for_an_evaluation():
    engine = Engine(regoguard.compile_policy(regoguard.load_policy_text(REGEX_POLICY)))
    try:
        for doc in (None, 5, {"tool": None}, {"tool": {"name": "t", "arguments": None}}):
            assert engine.evaluate(doc).action in ("allow", "deny")
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("yaml_text", "tool"),
    [
        # an exact non-ASCII key with a cost taken from an argument
        ("tools:\n  café:\n    rules:\n      - state: {counter: c, window: day, increment_from: args.n}\n"
         "        conditions:\n          - {path: state.café.c, op: lte, value: 100}\n", "café"),
        # a glob whose ? must match one non-ASCII character
        ("tools:\n  'file_*':\n    rules:\n      - state: {counter: c, window: day, increment_from: args.n}\n"
         "        conditions:\n          - {path: state.file_*.c, op: lte, value: 100}\n", "file_é"),
    ],
)
def test_allowed_call_with_a_dynamic_cost_is_charged_not_an_exception(yaml_text, tool):
    engine = Engine(compiled_for(yaml_text))
    try:
        d = engine.evaluate(call_doc(tool, {"n": 3}))  # must not raise
        assert d.allow, d
        assert [(c.cost, c.capacity, c.window) for c in d.charges] == [(3, 100, 86400)]
    finally:
        engine.close()


@pytest.mark.parametrize("value", [4e-07, 1.5e-06, 0.1234567, 0.30000000000000004])
def test_fractions_regopy_would_round_are_denied(value):
    # regopy passes floats to rego-cpp as text with six decimals: 4e-07 would compare as 0, so
    # `amount in [0]` would hold. Such input is denied before any rule runs.
    yaml_text = "tools:\n  t:\n    rules:\n      - conditions:\n          - {path: args.x, op: in, value: [0]}\n"
    d = engine_for(yaml_text).evaluate(call_doc("t", {"x": value}))
    assert not d.allow
    assert d.rule == "engine/input"
    assert "six decimal places" in (d.message or "")


@pytest.mark.parametrize("value", [1.0000000000000002e16, 1.2345678901234568e16, -1.1529215046068472e18])
def test_numbers_beyond_16_significant_digits_are_denied(value):
    # rego-cpp keeps 16 significant digits: 1.0000000000000002e16 compares equal to 1e16, so a cap of
    # `lte: 1e16` would let it through (found by the property test)
    yaml_text = "tools:\n  t:\n    rules:\n      - conditions:\n          - {path: args.x, op: lte, value: 1.0e+16}\n"
    d = engine_for(yaml_text).evaluate(call_doc("t", {"x": value}))
    assert not d.allow
    assert d.rule == "engine/input"
    assert "16 significant digits" in (d.message or "")


@pytest.mark.parametrize("value", [0.5, 0.25, 12.125, 9.2e18, -3.000001, 4503599627370497.0, 1e16])
def test_fractions_with_six_decimals_or_fewer_are_decided(value):
    yaml_text = "tools:\n  t:\n    rules:\n      - conditions:\n          - {path: args.x, op: lte, value: 100}\n"
    d = engine_for(yaml_text).evaluate(call_doc("t", {"x": value}))
    assert d.rule != "engine/input"
    assert d.allow is (value <= 100)


@pytest.mark.parametrize("value", [1e20, -9.223372036854776e18, 1.5e300])
def test_numbers_of_2_63_or_more_are_denied_like_integers_beyond_64_bits(value):
    # rego-cpp would compare them with an integer through a double: 2**63 equals 2**63 - 1 there
    yaml_text = "tools:\n  t:\n    rules:\n      - conditions:\n          - {path: args.x, op: lte, value: 100}\n"
    d = engine_for(yaml_text).evaluate(call_doc("t", {"x": value}))
    assert not d.allow and d.rule == "engine/input" and "64 bits" in (d.message or "")


def test_a_decision_that_reads_the_principal_is_cached_per_principal(tmp_path):
    """An admin's allowed call must not be answered from the cache for anyone else (the key holds what
    the conditions read of the caller)."""
    policy = tmp_path / "admins.yaml"
    policy.write_text('version: "1"\ndefault: allow\ntools:\n  delete_customer:\n    rules:\n'
                      '      - name: admins only\n        conditions:\n'
                      '          - {path: principal.claims.groups, op: contains, value: admins}\n')
    engine = regoguard.Engine(regoguard.compile_policy(regoguard.load_policy(policy)))
    try:
        def decide(claims):
            return engine.evaluate({"tool": {"name": "delete_customer", "arguments": {"customer_id": "c1"}},
                                    "principal": {"id": "someone", "claims": claims}})

        first = decide({"groups": ["admins"]})
        again = decide({"groups": ["admins"]})
        other = decide({"groups": ["eng"]})
        assert first.allow and again.allow and again.cached
        assert not other.allow and not other.cached
        assert [r.rule for r in other.reasons] == ["delete_customer/admins only"]
    finally:
        engine.close()


def test_a_missing_cost_argument_says_so_not_the_budget_message(tmp_path):
    """increment_from: a call without the amount is denied saying the amount is missing, not with the
    rule's own on_deny (which would tell the agent a budget is spent)."""
    policy = tmp_path / "spend.yaml"
    policy.write_text('version: "1"\ntools:\n  create_charge:\n    rules:\n      - name: daily spend\n'
                      '        conditions:\n          - {path: state.create_charge.spend, op: lte, value: 1000}\n'
                      '        state: {counter: spend, window: day, increment_from: args.amount}\n'
                      '        on_deny: the daily budget is spent\n')
    engine = regoguard.Engine(regoguard.compile_policy(regoguard.load_policy(policy)))
    try:
        missing = engine.evaluate({"tool": {"name": "create_charge", "arguments": {}}})
        text = engine.evaluate({"tool": {"name": "create_charge", "arguments": {"amount": "5"}}})
        ok = engine.evaluate({"tool": {"name": "create_charge", "arguments": {"amount": 5}}})
        for d in (missing, text):
            assert not d.allow and "args.amount must be a non-negative number" in d.reasons[0].message
            assert "budget" not in d.reasons[0].message
        assert ok.allow
    finally:
        engine.close()


def test_the_cache_keys_on_exactly_the_caller_fields_read(tmp_path):
    """Two callers alike in what the conditions read share a cached decision; a different value anywhere
    under a read path (a list index included) never does."""
    policy = tmp_path / "p.yaml"
    policy.write_text('version: "1"\ndefault: allow\ntools:\n  t:\n    rules:\n      - name: first group\n'
                      '        conditions:\n          - {path: principal.claims.groups.0, op: eq, value: admins}\n')
    engine = regoguard.Engine(regoguard.compile_policy(regoguard.load_policy(policy)))
    try:
        def decide(groups, **claims):
            return engine.evaluate({"tool": {"name": "t", "arguments": {}},
                                    "principal": {"id": "p", "claims": {"groups": groups, **claims}}})

        assert decide(["admins", "eng"]).allow
        again = decide(["admins", "eng"], jti="another token")
        assert again.allow and again.cached
        other = decide(["eng", "admins"])
        assert not other.allow and not other.cached
    finally:
        engine.close()


_CONTEXT_COMPILED = regoguard.compile_policy(regoguard.load_policy_text(
    'version: "1"\ndefault: allow\ntools:\n  t:\n    rules:\n      - name: r\n        conditions:\n'
    '          - {path: principal.claims.groups, op: contains, value: admins}\n'
    '          - {path: principal.claims.level, op: gte, value: 2}\n', "p.yaml"))


@settings(max_examples=200, deadline=None)
@given(a=st.dictionaries(st.sampled_from(["groups", "level", "jti"]),
                         st.lists(st.sampled_from(["admins", "eng", 1]), max_size=3) | st.integers(0, 3), max_size=3),
       b=st.dictionaries(st.sampled_from(["groups", "level", "jti"]),
                         st.lists(st.sampled_from(["admins", "eng", 1]), max_size=3) | st.integers(0, 3), max_size=3))
def test_callers_share_a_cache_key_only_when_what_is_read_is_the_same(a, b):
    """The decision cache key differs whenever a read caller field differs (so one caller's decision is
    never served to another), and may match when only unread fields do."""
    from regoguard.engine_cache import cache_key

    compiled = _CONTEXT_COMPILED
    unit = compiled.unit_for("t")

    def key(claims):
        return cache_key(compiled, unit, {"tool": {"name": "t", "arguments": {}},
                                          "principal": {"id": "p", "claims": claims}}, 10_000)

    read = ("groups", "level")
    if any(a.get(f, "\x00") != b.get(f, "\x00") for f in read):
        assert key(a) != key(b)
    else:
        assert key(a) == key(b)


def test_an_argument_derived_cost_is_the_exact_number_the_call_holds():
    """rego-cpp writes numbers back with 16 significant digits; the cost taken is the argument itself
    (found by the property test: 1.1659428615198634e16 came back as 1.165942861519863e16)."""
    policy = dedent("""
        tools:
          charge:
            rules:
              - conditions: [{path: state.charge.spend, op: lte, value: 1000000}]
                state: {counter: spend, window: second, increment_from: args.count}
        """)
    for count in (1.165942861519863e16, 4503599627370497.0, 12345.678901, 9007199254740993, 0):
        d = decide(policy, "charge", {"count": count}, fresh=True)
        assert d.allow and [c.cost for c in d.charges] == [count], (count, d)
    # 17 significant digits: rego-cpp would compare a rounded number, so the call is refused outright
    d = decide(policy, "charge", {"count": 1.1659428615198634e16}, fresh=True)
    assert not d.allow and d.rule == "engine/input"


CUBIC_POLICY = dedent(
    """
    tools:
      t:
        rules:
          - name: shape
            conditions:
              - {path: args.s, op: regex, value: "a*a*b"}
    """
)


def test_a_regex_runs_inline_only_where_the_calls_own_strings_bound_it():
    """``a*a*b`` is cubic in std::regex (1,000 ``a`` take seconds): a short subject is decided on the
    caller's thread, a long one on the pool behind the timeout, and the engine goes on."""
    engine = Engine(compiled_for(CUBIC_POLICY), EngineLimits(timeout=0.3, cache_size=0))
    outcome: list = []

    def calls() -> None:
        short = engine.evaluate(call_doc("t", {"s": "aaab"}))
        inline_after_short = engine.inline_calls
        long = engine.evaluate(call_doc("t", {"s": "a" * 3000}))
        after = engine.evaluate(call_doc("t", {"s": "zz"}))
        outcome.append((short, inline_after_short, long, after, engine.inline_calls))

    try:
        worker = threading.Thread(target=lambda: run_with_large_stack(calls), daemon=True)
        worker.start()
        worker.join(60)  # inline, the long call would hold this thread for minutes
        assert outcome, "the long subject was evaluated inline, with no timeout"
        short, inline_after_short, long, after, inline_total = outcome[0]
        assert short.allow and inline_after_short == 1
        assert not long.allow and long.rule == "engine/timeout"
        assert not after.allow and after.rule == "t/shape" and inline_total == 2
    finally:
        engine.close()


QUOTED = dedent(
    """
    tools:
      t:
        rules:
          - name: word
            conditions:
              - {path: args.s, op: regex, value: "^[a-z]+$"}
              - {path: args.s, op: len_lte, value: 3}
          - name: branch
            conditions:
              - {path: args.b, op: in, value: [main, dev]}
    """
)


@pytest.mark.parametrize("fresh", [True, False])
def test_an_argument_in_double_quotes_is_not_read_as_the_text_inside_them(fresh):
    # the embedded library took '"abc"' for the quoted JSON string abc: it passed ^[a-z]+$ and len_lte 3,
    # and '"main"' passed the branch list, though the server receives the quotes
    assert decide(QUOTED, "t", {"s": "abc", "b": "main"}, fresh=fresh).allow
    word = decide(QUOTED, "t", {"s": '"abc"', "b": "main"}, fresh=fresh)
    assert [r.rule for r in word.reasons] == ["t/word"]
    branch = decide(QUOTED, "t", {"s": "abc", "b": '"main"'}, fresh=fresh)
    assert [r.rule for r in branch.reasons] == ["t/branch"]
