"""The OPA test harness (tests/opa_engine.py) really runs OPA: decisions, undefined, and OPA's errors."""

from __future__ import annotations

import pytest

from opa_engine import OpaCompileError, OpaEvalError, opa_available, opa_eval

pytestmark = pytest.mark.skipif(
    not opa_available(), reason="opa-golib-python-bindings not installed (scripts/setup.sh)"
)

POLICY = {
    "tiny.rego": """package tiny

default allow := false

allow if input.user == "alice"

deny contains msg if {
	input.user == "mallory"
	msg := sprintf("%s is blocked", [input.user])
}

only_when_admin := true if input.admin == true

limit := data.settings.limit
""",
}
DATA = {"settings": {"limit": 7}}


def test_allow_and_deny_follow_the_input() -> None:
    assert opa_eval(POLICY, DATA, {"user": "alice"}, "data.tiny.allow") is True
    assert opa_eval(POLICY, DATA, {"user": "bob"}, "data.tiny.allow") is False
    assert opa_eval(POLICY, DATA, {"user": "mallory"}, "data.tiny.deny") == ["mallory is blocked"]
    assert opa_eval(POLICY, DATA, {"user": "alice"}, "data.tiny.deny") == []


def test_undefined_is_none_not_false() -> None:
    assert opa_eval(POLICY, DATA, {}, "data.tiny.only_when_admin") is None
    assert opa_eval(POLICY, DATA, {"admin": True}, "data.tiny.only_when_admin") is True
    assert opa_eval(POLICY, DATA, {}, "data.tiny.no_such_rule") is None


def test_data_document_is_visible_and_whole_packages_evaluate() -> None:
    assert opa_eval(POLICY, DATA, {}, "data.tiny.limit") == 7
    assert opa_eval(POLICY, {"settings": {"limit": 3}}, {}, "data.tiny.limit") == 3
    whole = opa_eval(POLICY, DATA, {"user": "alice"}, "data.tiny")
    assert whole["allow"] is True
    assert whole["limit"] == 7


def test_many_evaluations_reuse_one_compilation() -> None:
    # Hundreds of inputs against one policy must be practical in a test; each answer still tracks its input.
    results = [opa_eval(POLICY, DATA, {"user": f"u{i}" if i % 50 else "alice"}, "data.tiny.allow") for i in range(300)]
    assert results.count(True) == 6


def test_parse_error_carries_opas_file_and_line() -> None:
    broken = {"broken.rego": "package broken\n\nallow if { input.x == }\n"}
    with pytest.raises(OpaCompileError) as info:
        opa_eval(broken, {}, {}, "data.broken.allow")
    assert "broken.rego:3" in str(info.value)
    assert "rego_parse_error" in str(info.value)


def test_compile_error_is_reported_even_for_an_unrelated_query() -> None:
    unsafe = {"unsafe.rego": "package unsafe\n\nallow if { y == 1 }\n", "ok.rego": "package ok\n\nx := 1\n"}
    with pytest.raises(OpaCompileError) as info:
        opa_eval(unsafe, {}, {}, "data.ok.x")
    assert "unsafe.rego:3" in info.value.message
    assert "var y is unsafe" in info.value.message


def test_builtin_error_is_an_eval_error() -> None:
    mod = {"rx.rego": "package rx\n\nm := regex.match(input.p, input.s)\n"}
    assert opa_eval(mod, {}, {"p": "^a", "s": "abc"}, "data.rx.m") is True
    with pytest.raises(OpaEvalError) as info:
        opa_eval(mod, {}, {"p": "(", "s": "abc"}, "data.rx.m")
    assert "missing closing )" in info.value.message


def test_query_must_be_a_data_path() -> None:
    with pytest.raises(ValueError, match="data path"):
        opa_eval(POLICY, DATA, {}, "x := data.tiny.allow")
