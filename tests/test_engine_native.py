"""The engine's own calls into regopy's library hand the rules exactly what regopy's ``set_input`` would,
and read the result as regopy's ``Output`` does, for every input the engine lets through."""

from __future__ import annotations

import json
import re
import threading

import pytest
import regopy
from hypothesis import given, settings
from hypothesis import strategies as st
from regopy import rego_shared

from regoguard import engine_native as native
from regoguard.engine_io import value_problem

ECHO = "package echo\n\nimport rego.v1\n\nresult := input\n"


def _on_large_stack(fn):  # regopy wants a large stack; the engine's threads have one
    box: list = []
    threading.stack_size(64 * 1024 * 1024)
    try:
        t = threading.Thread(target=lambda: box.append(fn()))
        t.start()
        t.join()
    finally:
        threading.stack_size(0)
    return box[0]


def _bundle():
    b = regopy.Interpreter()
    b.add_module("echo.rego", ECHO)
    return b.build(None, ["echo/result"])


BUNDLE = _on_large_stack(_bundle)

def _regopy_text(interp):
    """regopy's own text for the echo query (its Output wrapper fails to parse strings rego-cpp does not
    escape, so the text is read through its lower-level functions)."""
    out = rego_shared.rego_bundle_query_entrypoint(interp._impl, BUNDLE._impl, "echo/result")
    try:
        return rego_shared.rego_output_string(out)
    finally:
        rego_shared.rego_free_output(out)


scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
           | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: float(format(f, ".6f")) == f)
           | st.text(max_size=20))
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                                                          max_size=4), max_leaves=20)


def _has_float(v) -> bool:
    if isinstance(v, dict):
        return any(_has_float(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_float(x) for x in v)
    return isinstance(v, float)


def _has_quoted_text(v) -> bool:
    """Text (a value or a key) that starts and ends with a double quote, which regopy's own set_input
    hands over without those quotes (see test_text_in_double_quotes_reaches_the_rules_whole)."""
    if isinstance(v, str):
        return len(v) > 1 and v[0] == v[-1] == '"'
    if isinstance(v, dict):
        return any(_has_quoted_text(k) or _has_quoted_text(x) for k, x in v.items())
    if isinstance(v, list):
        return any(_has_quoted_text(x) for x in v)
    return False


def _has_big_float(v) -> bool:
    if isinstance(v, dict):
        return any(_has_big_float(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_big_float(x) for x in v)
    return isinstance(v, float) and abs(v) >= 2**53


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=8), values, max_size=4))
def test_the_rules_see_what_regopy_set_input_gives_them(doc):
    if value_problem(doc) or _has_quoted_text(doc) or _has_big_float(doc):
        return  # the engine denies the first; the others it hands over corrected (tests below)

    def both():
        ours, theirs = regopy.Interpreter(), regopy.Interpreter()
        native.set_input(ours, doc)
        theirs.set_input(doc)
        return native.query(ours, BUNDLE, b"echo/result"), _regopy_text(theirs)

    mine, reference = _on_large_stack(both)
    assert mine == reference
    # rego-cpp writes input strings back unescaped and numbers with 16 significant digits: the text is
    # JSON equal to the input when neither happens
    if doc and "\\" not in json.dumps(doc, ensure_ascii=False) and not _has_float(doc):
        assert json.loads(mine)["expressions"][0] == doc


def test_what_is_not_json_is_refused_before_the_library_sees_it():
    def attempt(value):
        try:
            native.set_input(regopy.Interpreter(), value)
        except TypeError as exc:
            return str(exc)
        return None

    assert "not a string" in _on_large_stack(lambda: attempt({1: "x"}))
    assert "set" in _on_large_stack(lambda: attempt({"a": {1, 2}}))


def test_an_engine_error_comes_back_as_text_not_an_exception():
    def run():
        b = regopy.Interpreter()
        b.add_module("boom.rego", "package boom\n\nimport rego.v1\n\nresult := 1 / input.zero\n")
        bundle = b.build(None, ["boom/result"])
        it = regopy.Interpreter()
        native.set_input(it, {"zero": 0})
        return native.query(it, bundle, b"boom/result")

    out = _on_large_stack(run)
    assert out.startswith("\x00error:") or out.strip() == "undefined"


@pytest.mark.parametrize("value", [True, False, 0, -1, 2**63 - 1, 1.5, "é\u2028", None, [], {}, [[{"a": [1]}]]])
def test_single_values_round_trip(value):
    def run():
        it = regopy.Interpreter()
        native.set_input(it, {"v": value})
        return native.query(it, BUNDLE, b"echo/result")

    assert json.loads(_on_large_stack(run))["expressions"][0] == {"v": value}



def test_subclasses_reach_the_rules_as_their_base_values_as_regopy_sends_them():
    import enum

    class Role(str, enum.Enum):  # noqa: UP042 (not StrEnum: its str() is "Role.ADMIN", the point here)
        ADMIN = "admin"

    class Level(enum.IntEnum):
        HIGH = 3

    class Tag(str):
        def __str__(self) -> str:  # what the checks before the engine never look at
            return "something else"

    def run():
        ours, theirs = regopy.Interpreter(), regopy.Interpreter()
        doc = {"r": Role.ADMIN, "l": Level.HIGH, "t": Tag("x"), "p": (1, "y")}
        native.set_input(ours, doc)
        theirs.set_input(doc)
        return native.query(ours, BUNDLE, b"echo/result"), _regopy_text(theirs)

    mine, reference = _on_large_stack(run)
    assert mine == reference
    assert json.loads(mine)["expressions"][0] == {"r": "admin", "l": 3, "t": "x", "p": [1, "y"]}


QUOTES = """package q

import rego.v1

keys := [count(k) | some k; input.o[k]]

result := {"count": count(input.s), "word": regex.match(`^[a-z]+$`, input.s),
  "letter_first": regex.match(`^[a-z]`, input.s), "keys": keys, "bare_key": object.get(input.o, "abc", "absent"),
  "same": input.s == input.t}
"""


def _seen_by_quotes_rules(text: str) -> dict:
    def run():
        b = regopy.Interpreter()
        b.add_module("q.rego", QUOTES)
        bundle = b.build(None, ["q/result"])
        it = regopy.Interpreter()
        native.set_input(it, {"s": text, "t": text, "o": {text: 1}})
        return native.query(it, bundle, b"q/result")

    return json.loads(_on_large_stack(run))["expressions"][0]


def _whole(text: str) -> dict:
    """What the QUOTES rules see of ``text`` when it reaches them as it is (as under OPA)."""
    return {"count": len(text), "word": bool(re.fullmatch(r"[a-z]+", text)),
            "letter_first": bool(re.match(r"[a-z]", text)), "keys": [len(text)],
            "bare_key": 1 if text == "abc" else "absent", "same": True}


@pytest.mark.parametrize("text", ['"abc"', '""', '"', '"a"b"', '"""', '" "', 'abc"', '"abc'])
def test_text_in_double_quotes_reaches_the_rules_whole(text):
    # regoInputString reads '"abc"' as the quoted JSON string abc: it would count 3 and pass ^[a-z]+$, and
    # a key '"abc"' would be read as abc
    assert _seen_by_quotes_rules(text) == _whole(text)


@settings(max_examples=120, deadline=None)
@given(st.text(alphabet='abc"\\ {}:,u0', max_size=10))
def test_any_text_of_quotes_and_backslashes_reaches_the_rules_whole(text):
    # the invariant behind the case above, over the characters JSON quoting is made of
    assert _seen_by_quotes_rules(text) == _whole(text)


@pytest.mark.parametrize("value", [2.0**53, -(2.0**53), 1e16, 9.2233720368547748e18, 4e18])
def test_a_float_from_2_53_reaches_the_rules_as_the_integer_it_is(value):
    # rego-cpp compares an integer with a float through a double; as integers, they compare exactly
    def run():
        it = regopy.Interpreter()
        native.set_input(it, {"v": value})
        return native.query(it, BUNDLE, b"echo/result")

    seen = json.loads(_on_large_stack(run))["expressions"][0]["v"]
    assert type(seen) is int and seen == value
