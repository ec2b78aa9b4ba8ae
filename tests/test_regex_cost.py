"""The worst-case bound on a regex search in rego-cpp's backtracking std::regex, which decides whether a
call may be evaluated inline (no timeout) or must go to the pool."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regoguard import compile_policy, load_policy_text
from regoguard.engine_inline import bounded_call, regex_subjects
from regoguard.policy.regex_check import RegexProblem, portable_regex
from regoguard.policy.regex_cost import INLINE_BUDGET, may_backtrack_exponentially, search_cost


@pytest.mark.parametrize(("pattern", "degree"), [
    ("^/workspace/", 0),       # anchored literal: one try, plus the pass over the subject
    (r"\.\.", 1),              # unanchored literal: a try per starting point
    ("^[a-z]+$", 1),
    ("x+y", 2),                # measured quadratic: 8,000 x take 1.3 s
    ("a*a*b", 3),              # measured cubic: 1,000 a take 6.3 s
    ("(ab){3}c", 1),
    ("a{2,5}b", 1),
])
def test_the_degree_follows_the_variable_repetitions_and_the_search(pattern, degree):
    cost = search_cost(pattern)
    assert cost is not None and cost.degree == degree


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=a)b", "(?!a)b", "(a*b){1,4}", "(?<=a)b"])
def test_what_the_walk_cannot_bound_has_no_bound(pattern):
    assert search_cost(pattern) is None


def test_a_quadratic_pattern_is_inline_for_short_subjects_only():
    entry = {"rules": [{"conditions": [{"op": "regex", "path": ["s"], "regex": "x+y"}]}]}
    subjects = regex_subjects(entry)
    assert bounded_call(subjects, {"args": {"s": "x" * 50}})
    assert not bounded_call(subjects, {"args": {"s": "x" * 5000}})
    # no string there, or one longer than the rules let reach a regex: no regex runs at all
    assert bounded_call(subjects, {"args": {"s": 5}})
    assert bounded_call(subjects, {"args": {"s": "x" * 70000}})


def test_the_budget_is_for_all_of_a_calls_regexes_together():
    cond = {"op": "regex", "path": ["s"], "regex": r"\.\."}
    one = regex_subjects({"rules": [{"conditions": [cond]}]})
    many = regex_subjects({"rules": [{"conditions": [cond] * 20}]})
    doc = {"args": {"s": "a" * 2000}}
    assert bounded_call(one, doc) and not bounded_call(many, doc)


def test_an_unboundable_pattern_goes_to_the_pool_whenever_it_would_run():
    subjects = regex_subjects({"rules": [{"conditions": [{"op": "regex", "path": ["s"], "regex": r"(a)\1"}]}]})
    assert not bounded_call(subjects, {"args": {"s": "aa"}})
    assert bounded_call(subjects, {"args": {}})


@given(st.text(alphabet="ab.*+?()|[]^$\\{},0123", max_size=12), st.integers(0, 70000))
def test_any_pattern_the_loader_accepts_has_a_bound_that_grows_with_the_subject(raw, n):
    try:
        pattern = portable_regex(raw)
    except RegexProblem:
        return
    cost = search_cost(pattern)
    if cost is not None:
        assert n <= cost.steps(n) <= cost.steps(n + 1)
        assert cost.steps(0) >= 1


def test_the_budget_admits_the_linear_patterns_policies_are_made_of():
    for pattern in ("^/workspace/", r"\.py$", "^https://", r"\.\."):
        subjects = regex_subjects({"rules": [{"conditions": [{"op": "regex", "path": ["s"], "regex": pattern}]}]})
        assert bounded_call(subjects, {"args": {"s": "/workspace/" + "a" * 4096}}), pattern
    assert search_cost("^/workspace/").steps(65536) < INLINE_BUDGET  # anchored: any subject that reaches it


@pytest.mark.parametrize(("pattern", "subject"), [
    ("(a|a)*b", "a" * 40),               # overlapping branches under a star: exponential
    ("(a|aa)*b", "a" * 40),
    (r"(\w|\d)+$", "1" * 40 + "!"),      # the parser merges \w|\d into one set; std::regex tries both
    (r"^(\w|\d){40}$", "1" * 39 + "!"),  # the same under a fixed count: 2**40 ways to fail
    ("^(a?)*$", "a" * 40 + "!"),         # an optional item under a star
    ("(a{0,2})*b", "a" * 30),            # a varying count under a star
    ("(?:a|a){0,30}b", "a" * 30),        # a bounded repetition of an alternation
    (r"^(.|\s)*END$", " " * 40),         # an everyday idiom, exponential on a miss
    ("(?:(?:ab|cd))+x", "ab" * 20),      # an alternation one group further in
])
def test_patterns_that_backtrack_exponentially_are_never_inline(pattern, subject):
    """Each of these is accepted by the loader and takes seconds in std::regex at a few dozen characters
    (``(a|a)*b``: 0.33 s at 22, 10.8 s at 27): the call must go to the pool, behind the timeout."""
    compiled = compile_policy(load_policy_text(
        f"tools:\n  t:\n    rules:\n      - name: r\n        conditions:\n"
        f"          - {{path: args.s, op: regex, value: '{pattern}'}}\n", "<p>"))
    subjects = regex_subjects(compiled.units[compiled.unit_for("t")].entry)
    assert not bounded_call(subjects, {"args": {"s": subject}})


def test_a_top_level_alternation_a_class_or_an_escaped_bar_is_bounded_and_a_bar_in_a_group_is_not():
    for pattern in ("^foo|^bar", "[a|b]+x", r"\(a|b\)*"):
        assert search_cost(pattern) is not None, pattern
    # the parser may hide a group's branches (merged into a set, prefixes factored out): not claimed
    for pattern in ("^(foo|bar)/", "^(?:get|list)_[a-z]+$", "(a|b)c"):
        assert search_cost(pattern) is None, pattern


@pytest.mark.parametrize(("pattern", "subject"), [
    ("^" + r"(a|\w)" * 26 + "x", "a" * 26),   # branches the parser merges into a set: 2**26 paths (1.3 s)
    ("^" + r"(ab|a\w)" * 22 + "x", "ab" * 22),
    ("^" + "(a|[ab])" * 24 + "x", "a" * 24),
    ("a{1000}b", "a" * 4999),                  # a count expands into that many states (37 ms)
    ("(){1000}b", "a" * 4544),
    (r"(\b){1000}x", "a " * 1900),            # word boundaries: dear per state (0.17 s)
    (r"\bword\b", "word " * 10),
    ("^" + "a{1000}" * 99, "a"),              # a pattern of ~100,000 states takes 11 ms to build
])
def test_patterns_whose_cost_hides_from_the_tree_are_never_inline(pattern, subject):
    """Found by an adversarial review: each is accepted by the loader and took 20 ms to hours inline."""
    subjects = regex_subjects({"rules": [{"conditions": [{"op": "regex", "path": ["s"], "regex": pattern}]}]})
    assert not bounded_call(subjects, {"args": {"s": subject}})


@pytest.mark.parametrize("pattern", [r"^\d{3}-\d{4}$", "^https://", r"^[\s\S]*\.py$", "^/workspace/[a-z0-9_/.-]+$",
                                     "^[A-Z][a-z]+ [A-Z][a-z]+$", r"\.\."])
def test_the_plain_shapes_policies_are_made_of_are_inline_for_ordinary_arguments(pattern):
    subjects = regex_subjects({"rules": [{"conditions": [{"op": "regex", "path": ["s"], "regex": pattern}]}]})
    assert bounded_call(subjects, {"args": {"s": "/workspace/src/app/main.py"}})
    if search_cost(pattern).degree <= 1:  # linear ones for kilobytes of subject too
        assert bounded_call(subjects, {"args": {"s": "/workspace/src/app/main.py" * 100}})


_QUANTIFIERS = ["*", "+", "?", "{2}", "{0,3}", "{17}", "{1,}"]
_SHAPES = st.recursive(
    st.sampled_from(["a", "b", "ab", "[ab]", ".", r"\b", "a?", "a*"]),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map("".join),                                     # one after the other
        st.tuples(inner, inner).map(lambda t: f"({t[0]}|{t[1]})"),                # an alternation
        st.tuples(inner, st.sampled_from(_QUANTIFIERS)).map(lambda t: f"(?:{t[0]}){t[1]}"),  # repeated
    ),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None)
@given(st.tuples(st.sampled_from(["", "^"]), _SHAPES, st.sampled_from(["", "x", "$"])).map("".join),
       st.text(alphabet="ab ", max_size=200))
def test_a_pattern_that_can_backtrack_exponentially_is_never_decided_inline(raw, subject):
    """Whatever shape the pattern takes, if check would warn that it can backtrack exponentially, no call
    against it is decided on the proxy's thread (where nothing can stop it)."""
    try:
        pattern = portable_regex(raw)
    except RegexProblem:
        return
    if not may_backtrack_exponentially(pattern):
        return
    subjects = regex_subjects({"rules": [{"conditions": [{"op": "regex", "path": ["s"], "regex": pattern}]}]})
    assert not bounded_call(subjects, {"args": {"s": subject}}), pattern
