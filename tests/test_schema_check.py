"""``validate: {schema: true}``: the arguments against the tool's whole inputSchema.

The validator is the ``jsonschema`` library's; these tests hold regoguard's wrapper to it (the same verdict
on a corpus of schemas and generated arguments), to its bounds (patterns that could backtrack, overlong
subjects, schemas that cannot be compiled, references it must not fetch), and to the engine and the relay:
the Rego rule decides on the result, a cached decision never crosses arguments, OPA agrees, and a call
whose arguments do not fit never reaches the server.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import StdioServerParameters
from mcp.client import Client
from mcp.types import TextContent

import regoguard
from proxy_harness import READ_TIMEOUT, TIMEOUT, python_server, spy_tools, write_policy
from regoguard.schema_check import CHECKER, MAX_PATTERN_SUBJECT

CORPUS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"amount": {"type": "number", "minimum": 1, "maximum": 500}},
     "required": ["amount"]},
    {"type": "object", "properties": {"currency": {"enum": ["usd", "eur"]}, "mode": {"const": "live"}},
     "additionalProperties": False},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"},
                                               "maxItems": 3, "uniqueItems": True}}},
    {"type": "object", "properties": {"user": {"type": "object", "properties": {"id": {"type": "integer"}},
                                               "required": ["id"], "additionalProperties": False}}},
    {"type": "object", "$defs": {"path": {"type": "string", "minLength": 1, "maxLength": 8}},
     "properties": {"path": {"$ref": "#/$defs/path"}}, "required": ["path"]},
    {"type": "object", "properties": {"n": {"oneOf": [{"type": "integer", "multipleOf": 2}, {"type": "null"}]}}},
    {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
     "properties": {"items": {"type": "array", "items": [{"type": "string"}, {"type": "number"}],
                              "additionalItems": False}}},
    {"type": "object", "patternProperties": {"^x_": {"type": "boolean"}}, "additionalProperties": {"type": "string"}},
]

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 600) | st.floats(-10, 600, allow_nan=False)
    | st.sampled_from(["usd", "eur", "live", "abc", "ABC", "", "a/b", "toolongvalue"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["amount", "currency", "mode", "tags", "user", "id", "path", "n", "items", "x_flag", "other"]),
        inner, max_size=4),
    max_leaves=8,
)
ARGUMENTS = st.dictionaries(
    st.sampled_from(["amount", "currency", "mode", "tags", "user", "path", "n", "items", "x_flag", "other"]),
    VALUES, max_size=4)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(CORPUS) - 1), arguments=ARGUMENTS)
def test_the_verdict_is_the_validator_librarys(index: int, arguments: dict[str, Any]) -> None:
    schema = CORPUS[index]
    library = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(schema)
    got = CHECKER.check(schema, arguments)
    assert got["valid"] is library.is_valid(arguments), (schema, arguments, got)
    assert (got["error"] is None) is got["valid"]


@pytest.mark.parametrize("schema, arguments, error", [
    (None, {}, "inputSchema is unknown"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "(a+)+$"}}}, {"a": "x"},
     "backtrack exponentially"),
    ({"type": "object", "patternProperties": {"^(x*)*$": {}}}, {}, "backtrack exponentially"),
    ({"type": "wat"}, {}, "not a valid JSON Schema"),
    ({"type": "object", "properties": {"a": {"$ref": "https://127.0.0.1:9/never.json"}}}, {"a": 1},
     "cannot be applied"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "^a"}}},
     {"a": "a" * (MAX_PATTERN_SUBJECT + 1)}, "too long to match"),
    ({"type": "object", "properties": {"a": {"type": "integer"}}}, {"a": "1"}, '/a: does not satisfy type: "integer"'),
    ({"$schema": [], "type": "object"}, {}, "cannot be used"),
    ({"$schema": 5, "type": "object"}, {}, "cannot be used"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a|aa)+$"}}}, {"a": "a" * 60 + "b"},
     "could not be checked in time"),
    ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, {"x" * 2000: "v"},
     "property name longer than"),
])
def test_what_cannot_be_checked_is_not_valid(schema: Any, arguments: dict[str, Any], error: str) -> None:
    got = CHECKER.check(schema, arguments)
    assert got["valid"] is False and error in got["error"]


def test_patterns_read_as_json_schema_says() -> None:
    """ECMA-262: ``$`` is the end (not "before a final newline"), ``\\d`` is ASCII."""
    schema = {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[a-z0-9_]+$"},
                                               "n": {"type": "string", "pattern": "^\\d{1,6}$"}}}
    assert CHECKER.check(schema, {"id": "abc", "n": "123"})["valid"]
    assert not CHECKER.check(schema, {"id": "abc\n"})["valid"]
    assert not CHECKER.check(schema, {"n": "\u0661\u0662\u0663"})["valid"]


def test_the_error_never_holds_the_arguments_value() -> None:
    schema = {"type": "object", "properties": {"password": {"type": "string", "minLength": 20}},
              "additionalProperties": False}
    for arguments in ({"password": "hunter2-secret"}, {"password": "x" * 30, "hunter2-secret": 1}):
        got = CHECKER.check(schema, arguments)
        assert not got["valid"] and "hunter2" not in got["error"], got


def test_no_reference_is_ever_fetched() -> None:
    """A ``$ref`` to a URL (here a live server on 127.0.0.1 that would say "anything goes") is not
    fetched: the schema cannot be applied, so the call fails closed."""
    from http_harness import json_server

    with json_server({}) as server:
        got = CHECKER.check({"type": "object", "properties": {"a": {"$ref": server.base + "/schema.json"}}},
                            {"a": "anything"})
        hits = server.hits
    assert not got["valid"] and "cannot be applied" in got["error"]
    assert hits == []


POLICY = """\
version: "1"
default: allow
tools:
  create_charge:
    rules:
      - name: declared shape
        validate: {schema: true}
"""
SCHEMA = {"type": "object", "properties": {"amount": {"type": "number", "exclusiveMinimum": 0},
                                           "currency": {"type": "string", "enum": ["usd", "eur"]}},
          "required": ["amount", "currency"], "additionalProperties": False}


def _engine(tmp_path: Path, **limits: Any) -> regoguard.Engine:
    path = write_policy(tmp_path, POLICY)
    return regoguard.Engine(regoguard.compile_policy(regoguard.load_policy(path)), regoguard.EngineLimits(**limits))


def test_the_rule_decides_on_the_result_and_the_cache_keeps_them_apart(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    try:
        def decide(arguments: dict[str, Any], schema: Any = SCHEMA) -> regoguard.Decision:
            doc: dict[str, Any] = {"tool": {"name": "create_charge", "arguments": arguments}}
            if schema is not None:
                doc["schema"] = schema
            return engine.evaluate(doc)

        ok = decide({"amount": 5, "currency": "usd"})
        assert ok.allow and decide({"amount": 5, "currency": "usd"}).cached
        bad = decide({"amount": 5, "currency": "jpy"})
        assert not bad.allow and not bad.cached
        assert bad.reasons[0].rule == "create_charge/declared shape"
        assert '/currency: does not satisfy enum: ["usd", "eur"]' in bad.reasons[0].message
        assert not decide({"amount": -1, "currency": "usd"}).allow
        assert not decide({"amount": 5, "currency": "usd", "memo": "x"}).allow
        unknown = decide({"amount": 5, "currency": "usd"}, schema=None)
        assert not unknown.allow and "inputSchema is unknown" in unknown.reasons[0].message
    finally:
        engine.close()


def test_opa_decides_the_same(tmp_path: Path) -> None:
    """The bundle and the committed module decide on ``schema_check`` under OPA as under regopy (the
    validator's account, which the engine appends in Python, left aside)."""
    from opa_engine import opa_available
    from regoguard.compiler.sections import SCHEMA_DETAIL
    from test_opa_agreement import engine_view, opa_bundle_view, opa_file_view

    if not opa_available():
        pytest.skip("OPA bindings (opa-golib-python-bindings) not installed")
    engine = _engine(tmp_path, cache_size=0)
    try:
        for arguments in ({"amount": 5, "currency": "usd"}, {"amount": "5", "currency": "usd"}, {}):
            check = CHECKER.check(SCHEMA, arguments)
            doc = {"tool": {"name": "create_charge", "arguments": arguments}, "schema": SCHEMA,
                   "schema_check": check}
            want = _without(engine_view(engine, doc), f"{SCHEMA_DETAIL}: {check['error']}", SCHEMA_DETAIL)
            assert opa_bundle_view(engine, doc) == want
            assert opa_file_view(engine.compiled, doc, {}) == want
    finally:
        engine.close()


def _without(value: Any, full: str, short: str) -> Any:
    if isinstance(value, str):
        return value.replace(full, short)
    if isinstance(value, dict):
        return {k: _without(v, full, short) for k, v in value.items()}
    if isinstance(value, list):
        return [_without(v, full, short) for v in value]
    return value


async def test_arguments_that_do_not_fit_never_reach_the_server(tmp_path: Path) -> None:
    """Through ``regoguard run`` in front of the spy server, whose create_charge declares amount (number)
    and currency (string): the proxy lists the schema itself when the client has not."""
    policy = write_policy(tmp_path, POLICY)
    log = tmp_path / "spy.jsonl"
    argv = [sys.executable, "-m", "regoguard", "run", "-c", str(policy), "--state", "memory", "--",
            *python_server("spy")]
    params = StdioServerParameters(command=argv[0], args=argv[1:], env={"SPY_LOG": str(log)})
    with anyio.fail_after(TIMEOUT):
        async with Client(params, mode="legacy", read_timeout_seconds=READ_TIMEOUT) as client:
            bad = await client.call_tool("create_charge", {"amount": "5", "currency": "usd"})
            assert bad.is_error
            block = bad.content[0]
            assert isinstance(block, TextContent) and '/amount: does not satisfy type: "number"' in block.text
            good = await client.call_tool("create_charge", {"amount": 5, "currency": "usd"})
            assert not good.is_error
    assert spy_tools(log) == ["create_charge"]
