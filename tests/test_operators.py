"""Every condition operator of docs/policy.md, decided by the compiled Rego, with its edge cases.

Each case is one rule ``t/check`` holding one condition; a call is allowed exactly when the condition
holds, and a denial names ``t/check`` as the deciding rule.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from helpers_policy import decide, dedent

MISSING: Any = object()


def policy(op: str, value: Any, path: str = "args.x") -> str:
    # JSON is YAML flow syntax; ensure_ascii=False keeps non-ASCII text as it would be typed.
    return dedent(
        f"""
        tools:
          t:
            rules:
              - name: check
                conditions:
                  - {{path: {path}, op: {op}, value: {json.dumps(value, ensure_ascii=False)}}}
        """
    )


def check(op: str, value: Any, arg: Any, expected: bool, path: str = "args.x", args: Any = None) -> None:
    if args is None:
        args = {} if arg is MISSING else {"x": arg}
    d = decide(policy(op, value, path), "t", args)
    assert d.allow is expected, (op, value, arg, d)
    if expected:
        assert d.rule is None
        assert d.action == "allow"
        assert d.reasons == ()
    else:
        assert d.rule == "t/check", d
        assert d.action == "deny"


# --- eq / neq ------------------------------------------------------------------------------------------

EQ_CASES = [
    # same type
    (5, 5, True),
    (5, 6, False),
    ("a", "a", True),
    ("a", "A", False),
    (True, True, True),
    (True, False, False),
    # two numbers compare as numbers
    (5, 5.0, True),
    (5.0, 5, True),
    (0.5, 0.5, True),
    (-0.0, 0, True),
    (2.5, 2, False),
    # a number and a string compare as text
    (5, "5", True),
    ("5", 5, True),
    ("5", 5.0, True),  # 5.0 prints as "5"
    (5, "5.0", False),
    ("5.0", 5, False),
    (5.0, "5", True),
    (0.5, "0.5", True),
    ("0.5", 0.5, True),
    (1.5, "1.5", True),
    ("05", 5, False),
    (5, " 5", False),
    # a boolean and a string compare as text
    (True, "true", True),
    ("true", True, True),
    ("false", False, True),
    (False, "false", True),
    (True, "True", False),
    ("yes", True, False),
    # a boolean never equals a number
    (True, 1, False),
    (1, True, False),
    (0, False, False),
    # lists and objects compare structurally
    ([1, 2], [1, 2], True),
    ([1, 2], [2, 1], False),
    ([1, 2], [1.0, 2], True),
    (["5"], [5], False),
    ({"a": 1}, {"a": 1}, True),
    ({"a": 1}, {"a": 1, "b": 2}, False),
    ({"a": [1, {"b": "c"}]}, {"a": [1, {"b": "c"}]}, True),
    ("x", {"x": 1}, False),
    ("[1, 2]", [1, 2], False),
]


@pytest.mark.parametrize(("value", "arg", "expected"), EQ_CASES)
def test_eq(value, arg, expected):
    check("eq", value, arg, expected)


@pytest.mark.parametrize(("value", "arg", "expected"), EQ_CASES)
def test_neq_is_the_negation_of_eq_for_present_arguments(value, arg, expected):
    check("neq", value, arg, not expected)


@pytest.mark.parametrize("op", ["eq", "neq"])
@pytest.mark.parametrize("arg", [MISSING, None])
def test_eq_and_neq_deny_a_missing_or_null_argument(op, arg):
    check(op, "anything", arg, False)
    check(op, 5, arg, False)


def test_eq_non_ascii_text():
    check("eq", "café", "café", True)
    check("neq", "café", "café", False)
    check("eq", "café", "cafe", False)


# --- in / not_in --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "arg", "expected"),
    [
        (["usd", "eur"], "usd", True),
        (["usd", "eur"], "gbp", False),
        (["usd", "eur"], "USD", False),
        ([5, "a"], 5, True),
        ([5, "a"], 5.0, True),
        ([5, "a"], "5", True),  # eq: a number and a string compare as text
        (["5"], 5, True),
        ([True], "true", True),
        ([[1, 2]], [1, 2], True),
        ([{"k": "v"}], {"k": "v"}, True),
        ([], "x", False),
        ([1, 2], [1, 2], False),  # the whole list is not an element
    ],
)
def test_in_and_not_in(value, arg, expected):
    check("in", value, arg, expected)
    check("not_in", value, arg, not expected)


@pytest.mark.parametrize("op", ["in", "not_in"])
@pytest.mark.parametrize("arg", [MISSING, None])
def test_in_and_not_in_deny_a_missing_or_null_argument(op, arg):
    check(op, ["a", "b"], arg, False)
    check(op, [None], arg, False)


# --- lt / lte / gt / gte ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "arg", "expected"),
    [
        ("lt", 5, 4, True),
        ("lt", 5, 5, False),
        ("lt", 5, 4.999, True),
        ("lt", 5, 5.0, False),
        ("lte", 5, 5, True),
        ("lte", 5, 5.0, True),
        ("lte", 5.0, 5, True),
        ("lte", 5, 5.5, False),
        ("lte", 5, -100, True),
        ("lte", 0.5, 0.25, True),
        ("gt", 5, 6, True),
        ("gt", 5, 5, False),
        ("gt", -1, -0.5, True),
        ("gte", 5, 5, True),
        ("gte", 5, 4, False),
        ("gte", -1, -1.0, True),
        # a string is not a number, whatever it says
        ("lte", 5, "5", False),
        ("lte", 5, "4", False),
        ("gte", 5, "6", False),
        ("lt", 5, "1", False),
        ("gt", 5, "10", False),
        # nor is a boolean, a list or an object
        ("lte", 5, True, False),
        ("gte", 0, False, False),
        ("lte", 5, [1], False),
        ("lte", 5, {"a": 1}, False),
    ],
)
def test_number_comparisons(op, value, arg, expected):
    check(op, value, arg, expected)


@pytest.mark.parametrize("op", ["lt", "lte", "gt", "gte"])
@pytest.mark.parametrize("arg", [MISSING, None])
def test_number_comparisons_deny_a_missing_or_null_argument(op, arg):
    check(op, 0, arg, False)


@pytest.mark.parametrize("amount", [2**63, 2**64 + 100, 2**65 + 1])
def test_lte_denies_an_integer_too_big_for_int64(amount):
    # Python's json reads any integer, but regopy wraps integers beyond 64 bits (2**64 + 100 would
    # compare as 100): the engine denies such input before the rules see it.
    d = decide(policy("lte", 50000, "args.x"), "t", {"x": amount})
    assert d.allow is False
    assert d.rule == "engine/input", d
    assert "64 bits" in (d.message or "")


# --- regex / not_regex --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "arg", "expected"),
    [
        ("abc", "xxabcxx", True),  # unanchored: matches somewhere
        ("^abc", "xxabc", False),
        ("^abc$", "abc", True),
        ("^abc$", "abcd", False),
        ("^[a-z]+$", "hello", True),
        ("^[a-z]+$", "Hello", False),
        ("\\d{3}", "ab123", True),
        ("\\d", "\u0663", False),  # RE2's \d is ASCII
        ("a.c", "abc", True),
        ("a.c", "a\nc", False),  # . does not match a newline (RE2 default)
        ("^a$", "a\n", False),  # $ is the very end (RE2 default)
        ("(?i)^abc$", "ABC", True),
        ("(?i)^abc$", "aBc", True),
        ("(?i)^abc$", "abc", True),
        ("(?i)^abc$", "abd", False),
        ("(?i)^[a-c]+$", "CAB", True),
        ("(?i)^x{2}$", "XX", True),
        ("(?i)^[^a]$", "A", False),  # RE2 folds a negated class too: [^aA]
        ("(?i)^[^a]$", "b", True),
        ("^(foo|bar)$", "bar", True),
        ("^https://", "https://example.com", True),
    ],
)
def test_regex_and_not_regex(pattern, arg, expected):
    check("regex", pattern, arg, expected)
    check("not_regex", pattern, arg, not expected)


@pytest.mark.parametrize("op", ["regex", "not_regex"])
@pytest.mark.parametrize("arg", [MISSING, None, 5, True, ["abc"], {"a": "abc"}])
def test_regex_and_not_regex_deny_non_strings(op, arg):
    # not_regex "holds when the argument is a string and the pattern does not match"
    check(op, "zzz", arg, False)


# --- contains -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "arg", "expected"),
    [
        ("ell", "hello", True),
        ("xyz", "hello", False),
        ("", "hello", True),
        ("HELLO", "hello", False),
        # a list argument: an element eq the value
        ("b", ["a", "b"], True),
        ("c", ["a", "b"], False),
        (1, ["1"], True),
        ("1", [1], True),
        (5, [5.0], True),
        (True, ["true"], True),
        ([1], [[1], [2]], True),
        ({"k": 1}, [{"k": 1}], True),
        ("b", [["b"]], False),  # elements, not nested elements
        # a non-string value against a string argument does not hold
        (5, "a5b", False),
        # an object argument is neither a string nor a list
        ("a", {"a": 1}, False),
        ("a", 5, False),
        (True, True, False),
    ],
)
def test_contains(value, arg, expected):
    check("contains", value, arg, expected)


@pytest.mark.parametrize("arg", [MISSING, None])
def test_contains_denies_a_missing_or_null_argument(arg):
    check("contains", "a", arg, False)


# --- starts_with / ends_with --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "arg", "expected"),
    [
        ("starts_with", "/tmp/", "/tmp/x", True),
        ("starts_with", "/tmp/", "/etc/x", False),
        ("starts_with", "/tmp/", "/tmp", False),
        ("starts_with", "", "x", True),
        ("starts_with", "5", 55, False),  # not a string
        ("starts_with", "a", ["a"], False),
        ("ends_with", ".txt", "a.txt", True),
        ("ends_with", ".txt", "a.txt.exe", False),
        ("ends_with", ".txt", ".TXT", False),
        ("ends_with", "5", 55, False),
        ("starts_with", "é", "école", True),
        ("ends_with", "é", "café", True),
        ("starts_with", "日", "日本", True),
    ],
)
def test_starts_with_and_ends_with(op, value, arg, expected):
    check(op, value, arg, expected)


@pytest.mark.parametrize("op", ["starts_with", "ends_with"])
@pytest.mark.parametrize("arg", [MISSING, None])
def test_starts_with_and_ends_with_deny_a_missing_or_null_argument(op, arg):
    check(op, "a", arg, False)


# --- glob ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "arg", "expected"),
    [
        ("*.txt", "a.txt", True),
        ("*.txt", "dir/a.txt", True),  # * is any run, / included
        ("*.txt", "a.txt.bak", False),  # the whole string must match
        ("*.txt", "xa.txtx", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("a?c", "abbc", False),
        ("a?c", "a\nc", True),  # ? is any one character, newline included
        ("a*", "a\n", True),
        ("[ab]*", "bcd", True),
        ("[ab]*", "cab", False),
        ("a[0-9]c", "a5c", True),
        ("a[0-9]c", "axc", False),
        ("[!a]", "b", True),
        ("[!a]", "a", False),
        ("a.c", "abc", False),  # . is literal in a glob
        ("a+c", "a+c", True),
        ("*", "", True),
        # Against non-ASCII text, ? and [...] count bytes in the embedded engine's std::regex (one
        # character in OPA); docs/policy.md says so. `*` means the same in both.
        ("caf*", "café", True),
        ("*é", "café", True),
        ("caf?", "cafe", True),
    ],
)
def test_glob(pattern, arg, expected):
    check("glob", pattern, arg, expected)


@pytest.mark.parametrize("arg", [MISSING, None, 5, ["a.txt"]])
def test_glob_denies_non_strings(arg):
    check("glob", "*", arg, False)


# --- len_lte / len_gte --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "arg", "expected"),
    [
        ("len_lte", 3, "abc", True),
        ("len_lte", 3, "abcd", False),
        ("len_lte", 0, "", True),
        ("len_lte", 1, "é", True),  # characters, not bytes
        ("len_gte", 2, "é", False),
        ("len_lte", 1, "😀", True),
        ("len_lte", 2, [1, 2], True),
        ("len_lte", 2, [1, 2, 3], False),
        ("len_gte", 2, [1, 2], True),
        ("len_gte", 3, [1, 2], False),
        ("len_lte", 1, {"a": 1}, True),
        ("len_lte", 1, {"a": 1, "b": 2}, False),
        ("len_gte", 1, {}, False),
        ("len_gte", 0, {}, True),
        ("len_lte", 10, 5, False),  # a number has no length
        ("len_lte", 10, True, False),
        ("len_gte", 0, 0, False),
    ],
)
def test_len_lte_and_len_gte(op, value, arg, expected):
    check(op, value, arg, expected)


@pytest.mark.parametrize("op", ["len_lte", "len_gte"])
@pytest.mark.parametrize("arg", [MISSING, None])
def test_len_ops_deny_a_missing_or_null_argument(op, arg):
    check(op, 100, arg, False)
    check(op, 0, arg, False)


# --- exists -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "arg", "expected"),
    [
        (True, "x", True),
        (True, "", True),
        (True, 0, True),
        (True, False, True),  # false is present
        (True, [], True),
        (True, {}, True),
        (True, None, False),
        (True, MISSING, False),
        (False, None, True),
        (False, MISSING, True),
        (False, "x", False),
        (False, False, False),
        (False, 0, False),
    ],
)
def test_exists(value, arg, expected):
    check("exists", value, arg, expected)


# --- paths --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"meta": {"tag": "prod"}}, True),
        ({"meta": {"tag": "dev"}}, False),
        ({"meta": {}}, False),
        ({"meta": None}, False),
        ({"meta": "prod"}, False),
        ({"meta": ["prod"]}, False),
        ({"tag": "prod"}, False),
        ({}, False),
    ],
)
def test_nested_path(args, expected):
    d = decide(policy("eq", "prod", "args.meta.tag"), "t", args)
    assert d.allow is expected
    assert d.rule == (None if expected else "t/check")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"items": [{"sku": "A1"}]}, True),
        ({"items": [{"sku": "A1"}, {"sku": "B2"}]}, True),
        ({"items": [{"sku": "B2"}, {"sku": "A1"}]}, False),  # index 0 only
        ({"items": []}, False),
        ({"items": [{}]}, False),
        ({"items": [None]}, False),
        # a digit segment also names an object key
        ({"items": {"0": {"sku": "A1"}}}, True),
        ({"items": {"0": {"sku": "B2"}}}, False),
        ({"items": {"1": {"sku": "A1"}}}, False),
        ({"items": "A1"}, False),
    ],
)
def test_list_index_path_and_digit_object_key(args, expected):
    d = decide(policy("eq", "A1", "args.items.0.sku"), "t", args)
    assert d.allow is expected, (args, d)
    assert d.rule == (None if expected else "t/check")


def test_second_list_index():
    yaml_text = policy("eq", "B2", "args.items.1.sku")
    assert decide(yaml_text, "t", {"items": [{"sku": "A1"}, {"sku": "B2"}]}).allow
    assert not decide(yaml_text, "t", {"items": [{"sku": "A1"}]}).allow
    assert decide(yaml_text, "t", {"items": {"1": {"sku": "B2"}}}).allow


def test_list_index_into_list_of_scalars():
    yaml_text = policy("lte", 10, "args.items.2")
    assert decide(yaml_text, "t", {"items": [99, 99, 10]}).allow
    assert not decide(yaml_text, "t", {"items": [99, 99, 11]}).allow
    assert not decide(yaml_text, "t", {"items": [1, 2]}).allow


def test_exists_on_nested_and_indexed_paths():
    assert decide(policy("exists", True, "args.meta.tag"), "t", {"meta": {"tag": 0}}).allow
    assert not decide(policy("exists", True, "args.meta.tag"), "t", {"meta": {"tag": None}}).allow
    assert not decide(policy("exists", False, "args.items.1"), "t", {"items": [1, 2]}).allow
    assert decide(policy("exists", False, "args.items.1"), "t", {"items": {"0": 1}}).allow


def test_out_of_range_list_index_is_a_missing_argument():
    # An index past the end of the list is absent: exists false holds, other operators fail their rule.
    d = decide(policy("exists", False, "args.items.3"), "t", {"items": [1, 2]})
    assert d.allow, d
    d = decide(policy("exists", True, "args.items.3"), "t", {"items": [1, 2]})
    assert not d.allow
    assert d.rule == "t/check", d


def test_neq_on_a_missing_nested_argument_denies():
    d = decide(policy("neq", "prod", "args.meta.tag"), "t", {"meta": {}})
    assert not d.allow
    assert d.rule == "t/check"


def test_null_or_absent_arguments_object_is_no_arguments():
    yaml_text = policy("exists", False)
    d = decide(yaml_text, "t", {})
    assert d.allow
    engine_doc = {"tool": {"name": "t", "arguments": None}}
    from helpers_policy import engine_for

    assert engine_for(yaml_text).evaluate(engine_doc).allow
    assert engine_for(yaml_text).evaluate({"tool": {"name": "t"}}).allow
    assert not engine_for(policy("exists", True)).evaluate({"tool": {"name": "t"}}).allow


# --- several conditions and rules ---------------------------------------------------------------------

TWO_RULES = dedent(
    """
    tools:
      t:
        rules:
          - name: first
            conditions:
              - {path: args.a, op: eq, value: 1}
              - {path: args.b, op: eq, value: 2}
          - name: second
            conditions:
              - {path: args.c, op: exists, value: true}
            on_deny: c is required
    """
)


@pytest.mark.parametrize(
    ("args", "rules"),
    [
        ({"a": 1, "b": 2, "c": 0}, []),
        ({"a": 1, "b": 3, "c": 0}, ["t/first"]),  # all conditions of a rule must hold
        ({"a": 0, "b": 2, "c": 0}, ["t/first"]),
        ({"a": 1, "b": 2}, ["t/second"]),
        ({}, ["t/first", "t/second"]),  # every failing rule is listed, in order
    ],
)
def test_all_conditions_must_hold_and_first_failing_rule_decides(args, rules):
    d = decide(TWO_RULES, "t", args)
    assert d.allow is (not rules)
    assert [r.rule for r in d.reasons] == rules
    if rules:
        assert d.rule == rules[0]


def test_default_message_names_the_failing_condition_and_custom_message_is_kept():
    d = decide(TWO_RULES, "t", {"a": 1, "b": 3})
    assert d.reasons[0].message == 'Policy rule "t/first" denied the call: args.b eq 2 does not hold'
    assert d.reasons[1].message == "c is required"
