"""Numbers beyond 2**53 are compared exactly, as OPA compares them: rego-cpp compares an integer with a
float through a double, so the engine hands a call's large floats over as the integers they are and the
compiler writes large whole-number policy floats as integers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import regoguard
from helpers_policy import call_doc, compiled_for, decide, dedent, load_errors
from opa_engine import opa_available, opa_eval


def _policy(op: str, value: str) -> str:
    return dedent(f"""
        tools:
          t:
            rules:
              - name: r
                conditions:
                  - {{path: args.n, op: {op}, value: {value}}}
        """)


# (operator, the policy's YAML value, the call's value): Python compares int and float exactly, as OPA does
CASES = [
    ("lte", "1.0e+16", 10000000000000001),
    ("lte", "1.0e+16", 10000000000000000),
    ("lte", "9007199254740992.0", 9007199254740993),
    ("gte", "9007199254740993", 9007199254740992.0),
    ("lt", "9007199254740993", 9007199254740992.0),
    ("eq", "9007199254740993", 9007199254740992.0),
    ("eq", "9007199254740992", 9007199254740992.0),
    ("in", "[9007199254740993, 1]", 9007199254740992.0),
    ("gt", "9223372036854775806", 9.2233720368547748e18),
    ("eq", "9223372036854775807", 9223372036854775807),
    ("lte", "-1.0e+16", -10000000000000001),
    ("gte", "-1.0e+16", -10000000000000001),
]


def _expected(op: str, value: str, n: float) -> bool:
    import yaml

    v = yaml.safe_load(value)
    return {"lte": lambda: n <= v, "lt": lambda: n < v, "gte": lambda: n >= v, "gt": lambda: n > v,
            "eq": lambda: n == v, "in": lambda: n in v}[op]()


@pytest.mark.parametrize(("op", "value", "n"), CASES)
@pytest.mark.parametrize("fresh", [True, False])
def test_large_numbers_compare_exactly(op: str, value: str, n: float, fresh: bool) -> None:
    d = decide(_policy(op, value), "t", {"n": n}, fresh=fresh)
    assert d.allow == _expected(op, value, n), d


@pytest.mark.skipif(not opa_available(), reason="OPA bindings (opa-golib-python-bindings) not installed")
@pytest.mark.parametrize(("op", "value", "n"), CASES)
def test_opa_decides_the_committed_module_the_same(op: str, value: str, n: float) -> None:
    compiled = compiled_for(_policy(op, value))
    got = opa_eval({compiled.filename: compiled.module}, {}, call_doc("t", {"n": n}),
                   "data.regoguard.policy.decision")
    assert got["allow"] == _expected(op, value, n), got


def test_a_whole_number_float_from_2_53_is_written_as_an_integer() -> None:
    module = compiled_for(_policy("lte", "1.0e+16")).module
    assert "<= 10000000000000000" in module and "1.0e+16" not in module.split("# rules[0]")[1]


def test_a_call_number_of_2_63_or_more_is_denied_before_the_rules() -> None:
    d = decide(_policy("lte", "9223372036854775807"), "t", {"n": 9.223372036854776e18})
    assert [r.rule for r in d.reasons] == ["engine/input"] and "64 bits" in d.reasons[0].message


def test_a_policy_float_of_2_63_or_more_is_refused_at_its_line() -> None:
    text = _policy("gte", "9.3e+18")
    (e,) = load_errors(text)
    assert e.line == 6 and "64 bits" in e.message
    assert regoguard.load_policy_text(_policy("lte", "9223372036854775807")).warnings == ()


# The invariant, over random large numbers: a policy number (an integer, or a float of up to 16 significant
# digits) and a call's number near it, either kind, compare exactly, as in Python and in OPA.
_OPS = {"lte": lambda n, v: n <= v, "lt": lambda n, v: n < v, "gte": lambda n, v: n >= v,
        "gt": lambda n, v: n > v, "eq": lambda n, v: n == v}


@st.composite
def _near_pairs(draw: st.DrawFn) -> tuple[str, str, float]:
    """(operator, the policy's YAML value from 1e14 to 1e18, the call's number within 3 of it)."""
    mantissa = draw(st.integers(10**14, 10**16 - 1)) * draw(st.sampled_from([1, -1]))
    exponent = draw(st.integers(0, 2))
    text = f"{mantissa}.0e+{exponent}" if draw(st.booleans()) else str(mantissa * 10**exponent)
    n: float = mantissa * 10**exponent + draw(st.integers(-3, 3))
    if draw(st.booleans()):
        n = float(n)
    return draw(st.sampled_from(sorted(_OPS))), text, n


@settings(max_examples=60, deadline=None)
@given(_near_pairs())
def test_large_numbers_near_a_policy_number_compare_exactly(pair: tuple[str, str, float]) -> None:
    op, value, n = pair
    policy_value = float(value) if "e" in value else int(value)
    d = decide(_policy(op, value), "t", {"n": n})
    if d.rule == "engine/input":  # beyond what the engine compares (a float with more than 16 digits)
        assert "digits" in (d.message or "") or "64 bits" in (d.message or ""), d
        return
    assert d.allow == _OPS[op](n, policy_value), (op, value, n, d)
