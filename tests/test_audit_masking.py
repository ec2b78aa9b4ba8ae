"""Unit tests of the decision log's argument masking (regoguard.audit.masking).

What may be logged of a call's arguments: default sensitive keys (any depth, any case) become ``"***"``;
``audit.erase`` / ``audit.mask`` entries are JSON pointers into the arguments (exactly that path, RFC 6901
escapes, list indexes) or bare key names (any depth); ``hash_arguments`` logs only a sha256. Every erased or
masked path is listed, sorted, prefixed ``/input/tool/arguments``; the caller's arguments are never changed.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regoguard.audit.masking import ARGS_POINTER, DEFAULT_SENSITIVE_KEYS, MASK, MaskingRules, mask_arguments

P = ARGS_POINTER  # "/input/tool/arguments"


def dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# -- default sensitive keys ------------------------------------------------------------------------------------------


def test_args_pointer_and_mask_constants() -> None:
    assert P == "/input/tool/arguments"
    assert MASK == "***"
    for key in ("password", "secret", "token", "api_key", "authorization", "cookie", "client_secret", "ssn"):
        assert key in DEFAULT_SENSITIVE_KEYS, key


def test_default_keys_masked_at_top_level() -> None:
    out, erased, masked = mask_arguments({"user": "ada", "password": "hunter2"}, MaskingRules())
    assert out == {"user": "ada", "password": "***"}
    assert erased == []
    assert masked == [f"{P}/password"]


def test_default_keys_masked_in_nested_dicts_and_lists_of_dicts() -> None:
    args = {
        "request": {"url": "https://x", "headers": {"Authorization": "Bearer abc", "Accept": "json"}},
        "accounts": [{"name": "a", "api_key": "k1"}, {"name": "b"}, {"name": "c", "nested": {"token": "t3"}}],
        "matrix": [[{"secret": "deep"}]],
    }
    out, erased, masked = mask_arguments(args, MaskingRules())
    assert out == {
        "request": {"url": "https://x", "headers": {"Authorization": "***", "Accept": "json"}},
        "accounts": [{"name": "a", "api_key": "***"}, {"name": "b"}, {"name": "c", "nested": {"token": "***"}}],
        "matrix": [[{"secret": "***"}]],
    }
    assert erased == []
    assert masked == sorted([
        f"{P}/request/headers/Authorization",
        f"{P}/accounts/0/api_key",
        f"{P}/accounts/2/nested/token",
        f"{P}/matrix/0/0/secret",
    ])


@pytest.mark.parametrize("key", ["PASSWORD", "Password", "pAsSwOrD", "API_KEY", "Api_Key", "AUTHORIZATION",
                                 "X-Api-Key", "Set-Cookie", "Client_Secret"])
def test_default_keys_case_insensitive(key: str) -> None:
    out, _, masked = mask_arguments({"outer": {key: "s3cr3t"}}, MaskingRules())
    assert out == {"outer": {key: "***"}}
    assert masked == [f"{P}/outer/{key}"]


def test_whole_value_under_a_sensitive_key_is_masked() -> None:
    """A sensitive key holding an object or list: the whole value goes, not just its leaves."""
    args = {"credentials": {"user": "u", "pass": "p"}, "token": ["a", "b"], "auth": 12345}
    out, _, masked = mask_arguments(args, MaskingRules())
    assert out == {"credentials": "***", "token": "***", "auth": "***"}
    assert masked == [f"{P}/auth", f"{P}/credentials", f"{P}/token"]
    assert "12345" not in dump(out)


def test_values_that_look_sensitive_are_not_keys() -> None:
    """Only key names are matched: a value "password" or a list of strings is left alone."""
    args = {"text": "password", "tags": ["token", "secret"], "count": 3}
    out, erased, masked = mask_arguments(args, MaskingRules())
    assert out == args and erased == [] and masked == []


def test_non_object_arguments_pass_through() -> None:
    for args in ({}, [], "text", 3, None, [{"password": "x"}]):
        out, erased, _ = mask_arguments(args, MaskingRules())
        if args == [{"password": "x"}]:
            assert out == [{"password": "***"}]
        else:
            assert out == args
        assert erased == []


# -- JSON pointers ---------------------------------------------------------------------------------------------------


def test_erase_pointer_removes_exactly_that_path() -> None:
    args = {"card": {"number": "4111111111111111", "brand": "visa"}, "other": {"number": "keep-me"}}
    out, erased, masked = mask_arguments(args, MaskingRules(erase=("/card/number",)))
    assert out == {"card": {"brand": "visa"}, "other": {"number": "keep-me"}}
    assert erased == [f"{P}/card/number"]
    assert masked == []


def test_pointers_are_case_sensitive_and_exact() -> None:
    args = {"Card": {"Number": "1"}, "card": {"number": "2", "numbers": "3"}}
    out, erased, _ = mask_arguments(args, MaskingRules(erase=("/card/number",)))
    assert out == {"Card": {"Number": "1"}, "card": {"numbers": "3"}}
    assert erased == [f"{P}/card/number"]


def test_mask_pointer_replaces_exactly_that_path() -> None:
    args = {"customer": {"email": "ada@example.com", "name": "Ada"}, "email": "top@example.com"}
    out, erased, masked = mask_arguments(args, MaskingRules(mask=("/customer/email",)))
    assert out == {"customer": {"email": "***", "name": "Ada"}, "email": "top@example.com"}
    assert erased == []
    assert masked == [f"{P}/customer/email"]


def test_mask_pointer_on_a_subtree() -> None:
    out, _, masked = mask_arguments({"a": {"b": {"c": 1, "d": [1, 2]}}, "z": 0}, MaskingRules(mask=("/a/b",)))
    assert out == {"a": {"b": "***"}, "z": 0}
    assert masked == [f"{P}/a/b"]


def test_pointer_escapes_tilde_and_slash() -> None:
    """RFC 6901: ``~1`` is ``/`` and ``~0`` is ``~``; ``~01`` is the two characters ``~1``."""
    args = {"a/b": {"c~d": "s1", "keep": 1}, "~1": "s2", "a": {"b": "not me"}}
    rules = MaskingRules(erase=("/a~1b/c~0d",), mask=("/~01",))
    out, erased, masked = mask_arguments(args, rules)
    assert out == {"a/b": {"keep": 1}, "~1": "***", "a": {"b": "not me"}}
    assert erased == [f"{P}/a~1b/c~0d"]
    assert masked == [f"{P}/~01"]


def test_bare_key_paths_are_escaped_in_the_listing() -> None:
    """A key found by name is listed as a JSON pointer, so ``/`` and ``~`` in it are escaped."""
    out, erased, _ = mask_arguments({"x": {"pass/word": 1, "se~cret": 2}}, MaskingRules(erase=("pass/word", "se~cret")))
    assert out == {"x": {}}
    assert erased == [f"{P}/x/pass~1word", f"{P}/x/se~0cret"]


def test_mask_pointer_with_list_indexes() -> None:
    args = {"codes": ["s3cr3t-a", "public"], "items": [{"sku": "A", "pin": "1111"}, {"sku": "B", "pin": "2222"}]}
    out, erased, masked = mask_arguments(args, MaskingRules(mask=("/codes/0", "/items/1/pin")))
    assert out == {"codes": ["***", "public"], "items": [{"sku": "A", "pin": "1111"}, {"sku": "B", "pin": "***"}]}
    assert erased == []
    assert masked == [f"{P}/codes/0", f"{P}/items/1/pin"]


def test_erase_pointer_through_a_list_index() -> None:
    args = {"items": [{"sku": "A", "pin": "1111"}, {"sku": "B", "pin": "2222"}]}
    out, erased, _ = mask_arguments(args, MaskingRules(erase=("/items/1/pin",)))
    assert out == {"items": [{"sku": "A", "pin": "1111"}, {"sku": "B"}]}
    assert erased == [f"{P}/items/1/pin"]


def test_erase_pointer_ending_at_a_list_index_removes_the_secret() -> None:
    """BUG: an ``erase`` pointer whose last segment is a list index (``/tokens/0``) is silently ignored: the
    secret is logged as is and the path is not listed. ``mask`` handles the same pointer; ``erase`` only
    deletes keys of objects (masking._pop)."""
    args = {"codes": ["s3cr3t-a", "public"], "keep": 1}
    out, erased, _ = mask_arguments(args, MaskingRules(erase=("/codes/0",)))
    assert "s3cr3t-a" not in dump(out), out
    assert "public" in dump(out) and out["keep"] == 1
    assert erased == [f"{P}/codes/0"]


def test_key_names_holding_a_sensitive_word_are_masked() -> None:
    args = {"db_password": "p", "github_token": "t", "Proxy-Authorization": "Basic x", "X-Api-Key": "k",
            "tokens": ["a"], "author": "ada"}
    out, _, masked = mask_arguments(args, MaskingRules())
    assert out == {"db_password": "***", "github_token": "***", "Proxy-Authorization": "***", "X-Api-Key": "***",
                   "tokens": "***", "author": "ada"}
    assert len(masked) == 5
    out, _, masked = mask_arguments(args, MaskingRules(default_keys=()))
    assert out == args and masked == []


@pytest.mark.parametrize("pointer", ["/missing", "/card/missing", "/card/number/deeper", "/list/9", "/list/x",
                                     "/list/-1", "/n/0"])
def test_pointer_to_nothing_is_ignored(pointer: str) -> None:
    args = {"card": {"number": "1"}, "list": [1, 2], "n": 5}
    for rules in (MaskingRules(erase=(pointer,), default_keys=()), MaskingRules(mask=(pointer,), default_keys=())):
        out, erased, masked = mask_arguments(args, rules)
        assert out == args
        assert erased == [] and masked == []


# -- bare key names --------------------------------------------------------------------------------------------------


def test_bare_key_in_erase_erases_at_any_depth_any_case() -> None:
    args = {"ssn": "1", "person": {"SSN": "2", "name": "x"}, "people": [{"Ssn": "3"}, {"ssn": "4", "age": 9}]}
    out, erased, masked = mask_arguments(args, MaskingRules(erase=("ssn",), default_keys=()))
    assert out == {"person": {"name": "x"}, "people": [{}, {"age": 9}]}
    assert erased == sorted([f"{P}/ssn", f"{P}/person/SSN", f"{P}/people/0/Ssn", f"{P}/people/1/ssn"])
    assert masked == []
    for secret in ('"1"', '"2"', '"3"', '"4"'):
        assert secret not in dump(out)


def test_bare_key_in_erase_takes_a_default_key_entirely() -> None:
    """A default-masked key that is also erased by name is erased (gone), not masked."""
    out, erased, masked = mask_arguments({"a": {"password": "p"}, "password": "q"}, MaskingRules(erase=("password",)))
    assert out == {"a": {}}
    assert erased == [f"{P}/a/password", f"{P}/password"]
    assert masked == []


def test_bare_key_in_mask_masks_at_any_depth_any_case() -> None:
    args = {"email": "a@x", "customer": {"Email": "b@x"}, "list": [{"EMAIL": "c@x"}]}
    out, erased, masked = mask_arguments(args, MaskingRules(mask=("email",), default_keys=()))
    assert out == {"email": "***", "customer": {"Email": "***"}, "list": [{"EMAIL": "***"}]}
    assert erased == []
    assert masked == [f"{P}/customer/Email", f"{P}/email", f"{P}/list/0/EMAIL"]


def test_erase_and_mask_together() -> None:
    args = {"card": {"number": "4111", "cvv": "123", "holder": "Ada"}, "note": "hi", "api_key": "k"}
    rules = MaskingRules(erase=("/card/number",), mask=("/card/holder",))
    out, erased, masked = mask_arguments(args, rules)
    assert out == {"card": {"cvv": "***", "holder": "***"}, "note": "hi", "api_key": "***"}
    assert erased == [f"{P}/card/number"]
    assert masked == [f"{P}/api_key", f"{P}/card/cvv", f"{P}/card/holder"]


# -- default_masking: false ------------------------------------------------------------------------------------------


def test_default_masking_off() -> None:
    args = {"password": "p", "nested": {"token": "t"}, "email": "e"}
    out, erased, masked = mask_arguments(args, MaskingRules(default_keys=()))
    assert out == args and erased == [] and masked == []
    # the policy's own entries still apply
    out, _, masked = mask_arguments(args, MaskingRules(mask=("email",), default_keys=()))
    assert out == {"password": "p", "nested": {"token": "t"}, "email": "***"}
    assert masked == [f"{P}/email"]


def test_policy_audit_block_reaches_the_masking_rules(tmp_path: Path) -> None:
    """``audit:`` in a policy file → AuditSettings → the MaskingRules the CLI gives the decision log."""
    import argparse

    from regoguard.cli.run import _decision_log
    from regoguard.policy import load_policy

    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(
        "audit:\n"
        "  erase: [/card/number, ssn]\n"
        "  mask: [/customer/email]\n"
        "  default_masking: false\n"
        "tools:\n  echo:\n    rules:\n      - action: deny\n"
    )
    policy = load_policy(str(policy_file))
    assert policy.audit.erase == ("/card/number", "ssn")
    assert policy.audit.mask == ("/customer/email",)
    assert policy.audit.default_masking is False and policy.audit.hash_arguments is False
    args = argparse.Namespace(decision_log=str(tmp_path / "d.jsonl"), decision_log_max_bytes=1 << 20,
                              decision_log_backups=1)
    log = _decision_log(args, policy, "rev", "srv")
    assert log is not None
    out, erased, masked = mask_arguments(
        {"card": {"number": "4111"}, "x": {"SSN": "9"}, "customer": {"email": "e"}, "password": "p"}, log.masking)
    assert out == {"card": {}, "x": {}, "customer": {"email": "***"}, "password": "p"}
    assert erased == [f"{P}/card/number", f"{P}/x/SSN"]
    assert masked == [f"{P}/customer/email"]

    policy_file.write_text("audit:\n  hash_arguments: true\ntools:\n  echo:\n    rules:\n      - action: deny\n")
    policy = load_policy(str(policy_file))
    log = _decision_log(args, policy, "rev", "srv")
    assert log is not None and log.masking.hash_arguments is True
    assert mask_arguments({"password": "p"}, log.masking)[0].keys() == {"sha256"}


# -- hash_arguments --------------------------------------------------------------------------------------------------


def test_hash_arguments_logs_only_a_sha256() -> None:
    args = {"password": "hunter2", "note": "plain text", "n": [1, {"x": "y"}]}
    out, erased, masked = mask_arguments(args, MaskingRules(hash_arguments=True))
    assert set(out) == {"sha256"}
    assert re.fullmatch(r"[0-9a-f]{64}", out["sha256"])
    assert erased == []
    assert masked == [P]
    assert "hunter2" not in dump(out) and "plain text" not in dump(out)


def test_hash_is_stable_across_key_order_and_differs_for_other_arguments() -> None:
    rules = MaskingRules(hash_arguments=True)
    a = mask_arguments({"a": 1, "b": {"c": 2, "d": 3}}, rules)[0]
    b = mask_arguments({"b": {"d": 3, "c": 2}, "a": 1}, rules)[0]
    c = mask_arguments({"a": 1, "b": {"c": 2, "d": 4}}, rules)[0]
    assert a == b
    assert a != c


def test_hash_arguments_wins_over_erase_and_mask() -> None:
    rules = MaskingRules(hash_arguments=True, erase=("/a",), mask=("b",))
    out, erased, masked = mask_arguments({"a": 1, "b": 2}, rules)
    assert set(out) == {"sha256"} and erased == [] and masked == [P]


# -- the caller's arguments are never changed; listings are sorted -----------------------------------------------


@pytest.mark.parametrize("rules", [
    MaskingRules(),
    MaskingRules(erase=("/card/number", "ssn", "/items/0"), mask=("/customer", "email", "/items/1/pin")),
    MaskingRules(hash_arguments=True),
    MaskingRules(default_keys=()),
], ids=["default", "erase+mask", "hash", "off"])
def test_input_is_not_mutated(rules: MaskingRules) -> None:
    args = {
        "password": "p", "card": {"number": "4111", "cvv": "1"}, "ssn": "9", "customer": {"email": "e"},
        "items": [{"pin": "0"}, {"pin": "1", "token": "t"}], "headers": {"Authorization": "B"},
    }
    before = copy.deepcopy(args)
    out, _, _ = mask_arguments(args, rules)
    assert args == before
    assert out is not args


def test_listings_are_sorted_unique_and_prefixed() -> None:
    args = {"z": {"password": "1"}, "a": {"token": "2"}, "m": [{"secret": "3"}], "card": {"number": "4"}, "ssn": 5,
            "k": {"ssn": 6}}
    rules = MaskingRules(erase=("ssn", "/card/number", "/card/number"), mask=("/z", "/z"))
    out, erased, masked = mask_arguments(args, rules)
    for listing in (erased, masked):
        assert listing == sorted(listing)
        assert len(listing) == len(set(listing))
        assert all(p.startswith(P + "/") for p in listing)
    assert erased == [f"{P}/card/number", f"{P}/k/ssn", f"{P}/ssn"]
    assert masked == [f"{P}/a/token", f"{P}/m/0/secret", f"{P}/z"]
    assert out == {"z": "***", "a": {"token": "***"}, "m": [{"secret": "***"}], "card": {}, "k": {}}


# -- the one-walk copy (no erase/mask entries) against the general path ----------------------------------------------

_KEYS = st.sampled_from(["user", "Password", "db_password", "X-Api-Key", "note", "items", "a/b", "~t", "token",
                         "nested", "GitHub-Token", "id", "ssn", ""])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(args=_JSON, default_keys=st.booleans())
def test_masking_in_one_walk_matches_the_general_path(args: Any, default_keys: bool) -> None:
    """Without erase or mask entries the arguments are copied and masked in one walk; a mask entry that
    matches nothing takes the general path (deep copy, then the passes). Both log the same, and neither
    output shares a container with the caller's arguments."""
    keys = DEFAULT_SENSITIVE_KEYS if default_keys else ()
    before = copy.deepcopy(args)
    fast = mask_arguments(args, MaskingRules(default_keys=keys))
    general = mask_arguments(args, MaskingRules(mask=("/no-such-key",), default_keys=keys))
    assert dump(fast) == dump(general)
    assert dump(args) == dump(before)

    def containers(node: Any) -> list[int]:
        if isinstance(node, dict):
            return [id(node), *(i for v in node.values() for i in containers(v))]
        if isinstance(node, list):
            return [id(node), *(i for v in node for i in containers(v))]
        return []

    assert not set(containers(fast[0])) & set(containers(args))


def test_a_pointer_index_of_non_ascii_digits_names_nothing() -> None:
    # "²" is a digit to str.isdigit, not to int(): it raised ValueError; it names no list element
    out, _, masked = mask_arguments({"items": [1, 2]}, MaskingRules(mask=("/items/\u00b2",), default_keys=()))
    assert out == {"items": [1, 2]} and masked == []
