"""Tests of the oracle itself: reference_semantics on hand-picked policies, checked against docs/policy.md."""

from __future__ import annotations

import pytest
import yaml

from reference_semantics import MISSING, condition_holds, number_text, reference_decide, resolve, value_eq

CHARGE_POLICY = yaml.safe_load(
    """
version: "1"
default: allow
hide: [delete_repo]
tools:
  create_charge:
    rules:
      - name: max_amount
        conditions:
          - {path: args.amount, op: lte, value: 50000}
        on_deny: too much
      - name: daily_spend
        conditions:
          - {path: state.create_charge.daily_spend, op: lte, value: 1000000}
        state: {counter: daily_spend, window: day, increment_from: args.amount}
      - rate_limit: 5/minute
  "browser_*":
    rules:
      - action: deny
        on_deny: no browsing
  "*":
    rules:
      - rate_limit: {max: 10, window: 60}
"""
)


def test_hidden_tool_is_denied_by_hide():
    assert reference_decide(CHARGE_POLICY, "delete_repo", {}, None) == {
        "allow": False,
        "rules": ["hide"],
        "charges": [],
    }


def test_hide_star_hides_everything():
    policy = {"hide": ["*"], "tools": {"read_file": {"rules": [{"action": "allow"}]}}}
    assert reference_decide(policy, "read_file", {}, None)["rules"] == ["hide"]


def test_allowed_charge_lists_every_limit_in_run_order():
    d = reference_decide(CHARGE_POLICY, "create_charge", {"amount": 1200}, None)
    assert d["allow"] is True
    assert d["rules"] == []
    assert d["charges"] == [
        {
            "counter": "create_charge.daily_spend",
            "scope": "global",
            "cost": 1200,
            "capacity": 1000000,
            "window": 86400,
            "strict": False,
        },
        {
            "counter": "create_charge._rate_minute",
            "scope": "global",
            "cost": 1,
            "capacity": 5,
            "window": 60,
            "strict": False,
        },
        {
            "counter": "_global._rate_60s",
            "scope": "session",
            "cost": 1,
            "capacity": 10,
            "window": 60,
            "strict": False,
        },
    ]


@pytest.mark.parametrize("amount", [MISSING, None, "1200", True, -1])
def test_bad_amount_fails_both_the_condition_and_increment_from(amount):
    args = {} if amount is MISSING else {"amount": amount}
    d = reference_decide(CHARGE_POLICY, "create_charge", args, None)
    assert d["allow"] is False
    # -1 passes `lte 50000` but is a negative increment_from; the others fail both rules
    if amount == -1:
        expected = ["create_charge/daily_spend"]
    else:
        expected = ["create_charge/max_amount", "create_charge/daily_spend"]
    assert d["rules"] == expected
    assert d["charges"] == []


def test_glob_key_and_rule_index_ids():
    d = reference_decide(CHARGE_POLICY, "browser_open", {}, None)
    assert d == {"allow": False, "rules": ["browser_*/rules[0]"], "charges": []}


def test_exact_key_beats_glob_and_first_glob_wins():
    policy = {
        "tools": {
            "b*": {"rules": [{"action": "deny"}]},
            "browser_*": {"rules": [{"action": "deny"}]},
            "browser_open": {"rules": [{"action": "allow"}]},
        }
    }
    assert reference_decide(policy, "browser_open", {}, None)["allow"] is True
    assert reference_decide(policy, "browser_close", {}, None)["rules"] == ["b*/rules[0]"]
    assert reference_decide(policy, "xbrowser_close", {}, None)["allow"] is True


def test_default_deny_unlisted_tool_is_not_rescued_by_star():
    policy = {"default": "deny", "tools": {"*": {"rules": [{"action": "allow"}]}, "read_*": {"rules": []}}}
    assert reference_decide(policy, "write_file", {}, None) == {
        "allow": False,
        "rules": ["default"],
        "charges": [],
    }
    # a glob match counts as listed
    assert reference_decide(policy, "read_file", {}, None)["allow"] is True


def test_star_rules_run_after_tool_rules_and_all_failures_are_listed():
    policy = {
        "tools": {
            "*": {"rules": [{"name": "always", "action": "deny"}]},
            "read_file": {
                "rules": [
                    {"conditions": [{"path": "args.path", "op": "starts_with", "value": "/tmp"}]},
                    {"name": "ok", "conditions": [{"path": "args.path", "op": "exists", "value": True}]},
                ]
            },
        }
    }
    d = reference_decide(policy, "read_file", {"path": "/etc"}, None)
    assert d["rules"] == ["read_file/rules[0]", "*/always"]
    d = reference_decide(policy, "other", {}, None)
    assert d["rules"] == ["*/always"]


def test_validate_required_args():
    policy = {"tools": {"t": {"rules": [{"validate": {"required_args": True}}]}}}
    schema = {"type": "object", "required": ["a"]}
    assert reference_decide(policy, "t", {"a": 1}, schema)["allow"] is True
    assert reference_decide(policy, "t", {"a": None}, schema)["allow"] is True
    assert reference_decide(policy, "t", {}, schema)["rules"] == ["t/rules[0]"]
    assert reference_decide(policy, "t", {}, None)["rules"] == ["t/rules[0]"]
    assert reference_decide(policy, "t", {}, {"type": "object"})["allow"] is True


def test_state_rule_under_star_uses_global_and_lt_is_strict():
    policy = {
        "tools": {
            "*": {
                "rules": [
                    {
                        "scope": "principal",
                        "conditions": [{"path": "state._global.calls", "op": "lt", "value": 100}],
                        "state": {"counter": "calls", "window": "hour", "increment": 2},
                    }
                ]
            }
        }
    }
    assert reference_decide(policy, "anything", {}, None)["charges"] == [
        {
            "counter": "_global.calls",
            "scope": "principal",
            "cost": 2,
            "capacity": 100,
            "window": 3600,
            "strict": True,
        }
    ]


def test_number_text():
    assert number_text(5) == "5"
    assert number_text(5.0) == "5"
    assert number_text(-0.0) == "0"
    assert number_text(0.1) == "0.1"
    assert number_text(1.5e-7) == "1.5e-07"
    assert number_text(2**60) == repr(float(2**60))


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (5, 5.0, True),
        ("5", 5, True),
        (5.0, "5", True),
        ("5.0", 5, False),
        (0.5, "0.5", True),
        (True, "true", True),
        ("false", False, True),
        (True, 1, False),
        (1, True, False),
        (True, True, True),
        ([1, 2], [1.0, 2], True),
        ([1], ["1"], False),
        ([True], [1], False),
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ("a", "a", True),
        ("a", ["a"], False),
    ],
)
def test_value_eq(a, b, expected):
    assert value_eq(a, b) is expected
    assert value_eq(b, a) is expected


@pytest.mark.parametrize(
    ("arg", "op", "value", "expected"),
    [
        (MISSING, "neq", 1, False),
        (None, "neq", 1, False),
        (None, "not_in", [1], False),
        (MISSING, "exists", True, False),
        (None, "exists", False, True),
        (0, "exists", True, True),
        ("5", "lt", 10, False),
        (True, "lt", 10, False),
        (5, "lt", 10, True),
        (5.5, "gte", 5.5, True),
        ("5", "in", [5, 6], True),
        (5, "not_in", ["5"], False),
        ("abc", "regex", "^a", True),
        ("xab\n", "regex", "b$", False),
        ("\u0663", "regex", "\\d", False),
        (5, "regex", "\\d", False),
        (5, "not_regex", "^a", False),
        ("xyz", "not_regex", "^a", True),
        ("abc", "contains", "b", True),
        ("a5", "contains", 5, False),
        (["5", 6], "contains", 5, True),
        ([1, 2], "contains", 3, False),
        ({"b": 1}, "contains", "b", False),
        ("abc", "starts_with", "ab", True),
        ("abc", "ends_with", "bc", True),
        (5, "starts_with", "5", False),
        ("a/b.txt", "glob", "*.txt", True),
        ("abc", "glob", "a?c", True),
        ("abcd", "glob", "a?c", False),
        ("cat", "glob", "[ab]*", False),
        # `.` and `?` count UTF-8 bytes in the embedded engine (docs/policy.md)
        ("é", "glob", "?", False),
        ("é", "glob", "??", True),
        ("aéc", "regex", "a.c", False),
        ("é", "not_regex", "^.$", True),
        ("é", "regex", "^..$", True),
        ("éa", "starts_with", "é", True),
        ("é", "len_lte", 1, True),
        ("", "len_lte", 0, True),
        ([1, 2, 3], "len_gte", 3, True),
        ({"a": 1}, "len_lte", 0, False),
        (12, "len_lte", 5, False),
    ],
)
def test_condition_holds(arg, op, value, expected):
    assert condition_holds(arg, op, value) is expected


def test_resolve():
    args = {"items": [{"sku": "x"}, 7], "meta": {"tag": None}}
    assert resolve(args, "args.items.0.sku") == "x"
    assert resolve(args, "args.items.1") == 7
    assert resolve(args, "args.items.2") is MISSING
    assert resolve(args, "args.meta.tag") is None
    assert resolve(args, "args.meta.tag.x") is MISSING
    assert resolve(args, "args.items.x") is MISSING
    assert resolve(args, "args.nope") is MISSING


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, float("inf"), "a\x00b", {"k": [2**64]}, {"a\x00": 1}])
def test_arguments_the_engine_would_misread_are_denied_first(value):
    policy = {"tools": {"t": {"rules": [{"conditions": [{"path": "args.x", "op": "exists", "value": True}]}]}}}
    assert reference_decide(policy, "t", {"x": value}, None) == {
        "allow": False,
        "rules": ["engine/input"],
        "charges": [],
    }
    # the call's arguments reach the server: denied first, even where no rule reads them
    assert reference_decide({"hide": ["t"], "tools": {}}, "t", {"x": value}, None)["rules"] == ["engine/input"]


def test_int64_edges_are_read():
    assert reference_decide({}, "t", {"x": 2**63 - 1, "y": -(2**63)}, None)["allow"] is True
