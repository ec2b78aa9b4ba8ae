"""A counted whole-string run of one ASCII class (``^[a-z]{1,64}$``) is compiled as an uncounted run and
a length bound, and decides exactly as the counted regex does in OPA (RE2, the reference), under both
real engines, on every subject."""

from __future__ import annotations

import json
from typing import Any

import pytest
import regopy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_policy import compiled_for, dedent
from opa_engine import opa_available, opa_eval
from regoguard import engine_native as native
from regoguard.compiler.regex_lowering import counted_run
from regoguard.compiler.rego_text import REGEX_SUBJECT_LIMIT, condition_clauses, string
from regoguard.engine import run_with_large_stack
from regoguard.policy.regex_check import portable_regex

pytestmark = pytest.mark.skipif(not opa_available(), reason="OPA bindings (opa-golib-python-bindings) not installed")

LOWERED = ["^[a-z ]{1,64}$", "(?i)^[a-z]{2,5}$", r"^[\w.-]{3,}$", r"^\d{4}$", "^a{3}$", "^[a-z]{1,5}?$",
           "^[A-Z_]{0,}$", "^[0-9a-f]{8}$", "^[-+.]{0,2}$", "^x{1}$", r"^[a-z\-]{2,3}$", "^[]a]{1,2}$",
           "^[%*]{2,}$", "^a{0}$", r"^[\d_]{2,4}$", r"^[ -~]{1,5}$", r"^[\s]{0,3}$", r"^[\t-]{1,2}$",
           r"^\.{3}$", "^[{]{2}$", "^[a-z]{1,1000}$"]
KEPT = ["^[^a]{1,3}$", "^[a-z]{2}", "[a-z]{2}$", "^[é]{2}$", "^[[:alpha:]]{2}$", "^[a-z]{2}|x$", "^([a-z]){2}$",
        "^[a-z]{2}[0-9]$", r"^[a-z]{2}\$", "^[a-z]+$", "^[a-z]*$", "^x$", "^[.]{1,3}x$", "^(?:é){2}$"]

SUBJECTS = ["", "a", "ab", "abc", "abcd", "abcde", "abcdef", "ABC", "aBc", "a b", " ", "x", "xx", "-", "+.", "..",
            "]", "]a", "%*%", "0", "007", "deadbeef", "deadbeeF", "deadbeef0", "a_1", "a.b-c", "abc\n", "\nabc",
            "a\tb", "a\rb", "é", "aé", "日本", "\u212a", "\u017f", "ａ", '"', '"ab"', '""', "a\\b", "\\", "a\x7fb",
            "\x01", "\u2028", "a" * 64, "a" * 65, " " * 64, "1" * (REGEX_SUBJECT_LIMIT + 1), "_" * 4, "__" * 3]


def _module(emitted: str) -> str:
    """The condition as the compiler writes it, over every subject, and the regex itself (the reference)."""
    (body,), _ = condition_clauses({"op": "regex", "regex": emitted}, "v", "helper")
    lines = "\n".join(f"\t{b}" for b in body)
    return dedent(f"""
        package lower

        import rego.v1

        held contains i if {{
        \tsome i
        \tv := input.subjects[i]
        {lines}
        }}

        reference contains i if {{
        \tsome i
        \tv := input.subjects[i]
        \tis_string(v)
        \tcount(v) <= {REGEX_SUBJECT_LIMIT}
        \tregex.match({json.dumps(emitted)}, v)
        }}

        verdict := [held, reference]
        """).replace("\n        ", "\n")


def _regopy_held(module: str, subjects: list[str]) -> list[int]:
    def run() -> Any:
        b = regopy.Interpreter()
        b.add_module("lower.rego", module)
        bundle = b.build(None, ["lower/verdict"])
        it = regopy.Interpreter()
        native.set_input(it, {"subjects": subjects})
        return json.loads(native.query(it, bundle, b"lower/verdict"))["expressions"][0][0]

    return sorted(run_with_large_stack(run))


def _check(pattern: str, subjects: list[str]) -> None:
    emitted = portable_regex(pattern)
    module = _module(emitted)
    assert "}$" not in module.split("reference contains")[0], module  # no counted repetition is left
    opa_held, reference = opa_eval({"lower.rego": module}, {}, {"subjects": subjects}, "data.lower.verdict")
    assert sorted(opa_held) == sorted(reference), [subjects[i] for i in set(opa_held) ^ set(reference)]
    regopy_held = _regopy_held(module, subjects)
    assert regopy_held == sorted(reference), [subjects[i] for i in set(regopy_held) ^ set(reference)]


@pytest.mark.parametrize("pattern", LOWERED)
def test_a_lowered_pattern_decides_as_its_regex_in_both_engines(pattern: str) -> None:
    assert counted_run(portable_regex(pattern)) is not None
    _check(pattern, SUBJECTS)


@pytest.mark.parametrize("pattern", KEPT)
def test_what_is_not_a_counted_run_of_one_ascii_class_keeps_its_pattern(pattern: str) -> None:
    emitted = portable_regex(pattern)
    assert counted_run(emitted) is None
    (body,), _ = condition_clauses({"op": "regex", "regex": emitted}, "v", "helper")
    assert body[-1] == f"regex.match({string(emitted)}, v)"


def test_not_regex_keeps_its_regex() -> None:
    (body,), _ = condition_clauses({"op": "not_regex", "regex": "^[a-z]{1,3}$"}, "v", "helper")
    assert body[-1] == 'regex.match("^[a-z]{1,3}$", v) == false'


def test_the_compiled_policy_holds_the_uncounted_run_and_the_bounds() -> None:
    compiled = compiled_for(dedent("""
        tools:
          t:
            rules:
              - name: note
                conditions:
                  - {path: args.note, op: regex, value: "^[a-z ]{1,64}$"}
        """))
    assert "{1,64}" not in compiled.module.split("# rules[0]")[1].split("does not hold")[0]
    assert 'regex.match("^[a-z ]+$", v0_0)' in compiled.module and "count(v0_0) <= 64" in compiled.module


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(LOWERED), st.lists(st.text(alphabet='abzAZ059_-.%*] é"\\\n\t\u212a', max_size=9), min_size=1,
                                          max_size=40))
def test_random_subjects_decide_as_the_regex(pattern: str, subjects: list[str]) -> None:
    _check(pattern, subjects)
