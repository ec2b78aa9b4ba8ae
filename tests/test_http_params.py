"""``Mcp-Param-*`` headers (SEP-2243) against a 2026-07-28 ``tools/call`` body: regoguard.proxy.http_params.

The schema is the one tests/servers/conformance_server.py advertises for ``test_custom_headers`` (what the
SDK derives from its signature), and the requests are the ones the conformance scenario
``http-custom-header-server-validation`` sends. With the schema known the verdict must be the SDK server's.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS, validate_mcp_param_headers
from mcp_types.jsonrpc import HEADER_MISMATCH
from starlette.datastructures import Headers

from regoguard.proxy.http_params import param_header_rejection

SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "test_custom_headersArguments",
    "properties": {
        "region": {"description": "Routing region", "title": "Region", "type": "string", "x-mcp-header": "Region"},
        "priority": {"default": 0, "description": "Priority", "title": "Priority", "type": "integer",
                     "x-mcp-header": "Priority"},
    },
    "required": ["region"],
}

ROUTING = [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "test_custom_headers")]


def call(arguments: Any = None, name: str = "test_custom_headers", method: str = "tools/call") -> dict[str, Any]:
    params: dict[str, Any] = {
        "name": name,
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}},
    }
    if arguments is not None:
        params["arguments"] = arguments
    return {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}


def lines(*params: tuple[str, str]) -> list[tuple[str, str]]:
    """Header lines as Starlette hands them over: routing headers, then the given ones."""
    return [*ROUTING, *params]


def b64(text: str) -> str:
    return f"=?base64?{base64.b64encode(text.encode()).decode()}?="


def assert_mismatch(verdict: tuple[int, str, Any] | None, *words: str) -> None:
    assert verdict is not None, "expected the request to be refused"
    code, message, data = verdict
    assert code == HEADER_MISMATCH == -32020
    assert ERROR_CODE_HTTP_STATUS[code] == 400
    assert data is None
    for word in words:
        assert word in message, message


# ---- the schema is known: the SDK server's verdict ------------------------------------------------------


def test_matching_header_passes() -> None:
    assert param_header_rejection(call({"region": "us-west1"}), lines(("mcp-param-region", "us-west1")), SCHEMA) is None


def test_mismatching_header_is_refused() -> None:
    verdict = param_header_rejection(call({"region": "us-west1"}), lines(("mcp-param-region", "eu-north1")), SCHEMA)
    assert_mismatch(verdict, "Mcp-Param-Region", "does not match", "'region'")


def test_header_values_are_case_sensitive_names_are_not() -> None:
    headers = lines(("MCP-PARAM-REGION", "us-west1"))
    assert param_header_rejection(call({"region": "us-west1"}), headers, SCHEMA) is None
    assert_mismatch(param_header_rejection(call({"region": "us-west1"}), lines(("Mcp-Param-Region", "US-WEST1")),
                                           SCHEMA))


def test_base64_value_is_decoded_before_comparing() -> None:
    hello = call({"region": "Hello"})
    assert param_header_rejection(hello, lines(("mcp-param-region", "=?base64?SGVsbG8=?=")), SCHEMA) is None
    zurich = call({"region": "Zürich\n"})  # non-ASCII and a control character: clients must wrap it
    assert param_header_rejection(zurich, lines(("mcp-param-region", b64("Zürich\n"))), SCHEMA) is None
    assert_mismatch(param_header_rejection(zurich, lines(("mcp-param-region", b64("Zurich"))), SCHEMA),
                    "does not match")


@pytest.mark.parametrize("value", ["=?base64?SGVsbG8?=", "=?base64?SGVs!!!bG8=?=", "=?base64?SGVsbG9=?=",
                                   b64("x")[:-2] + "\xff?="])
def test_malformed_base64_is_refused(value: str) -> None:
    """Bad padding, characters outside the alphabet, non-canonical trailing bits: never a match."""
    verdict = param_header_rejection(call({"region": "Hello"}), lines(("mcp-param-region", value)), SCHEMA)
    assert_mismatch(verdict, "Mcp-Param-Region", "malformed base64")


@pytest.mark.parametrize("value", ["SGVsbG8=", "=?base64?SGVsbG8=", "base64?SGVsbG8=?="])
def test_value_without_the_whole_sentinel_is_literal(value: str) -> None:
    assert param_header_rejection(call({"region": value}), lines(("mcp-param-region", value)), SCHEMA) is None
    assert_mismatch(param_header_rejection(call({"region": "Hello"}), lines(("mcp-param-region", value)), SCHEMA))


def test_missing_header_for_a_present_argument_is_refused() -> None:
    verdict = param_header_rejection(call({"region": "test-value"}), lines(), SCHEMA)
    assert_mismatch(verdict, "Mcp-Param-Region", "missing", "'region'")


def test_header_for_an_absent_argument_is_refused() -> None:
    verdict = param_header_rejection(call({"region": "eu"}), lines(("mcp-param-region", "eu"),
                                                                   ("mcp-param-priority", "5")), SCHEMA)
    assert_mismatch(verdict, "Mcp-Param-Priority", "absent", "'priority'")
    null = call({"region": "eu", "priority": None})  # null counts as absent: no header is right
    assert param_header_rejection(null, lines(("mcp-param-region", "eu")), SCHEMA) is None


def test_integer_compares_numerically() -> None:
    body = call({"region": "eu", "priority": 42})
    for value in ("42", "42.0", "42.00"):
        assert param_header_rejection(body, lines(("mcp-param-region", "eu"), ("mcp-param-priority", value)),
                                      SCHEMA) is None
    for value in ("43", "42.5", "4.2e1", "forty-two"):
        verdict = param_header_rejection(body, lines(("mcp-param-region", "eu"), ("mcp-param-priority", value)),
                                         SCHEMA)
        assert_mismatch(verdict, "Mcp-Param-Priority")


def test_repeated_header_is_refused_even_when_both_copies_match() -> None:
    headers = lines(("mcp-param-region", "eu"), ("Mcp-Param-Region", "eu"))
    assert_mismatch(param_header_rejection(call({"region": "eu"}), headers, SCHEMA), "more than once")


def test_starlette_header_items_keep_repeats() -> None:
    """What the front passes: ``request.headers.items()``."""
    raw = [(k.encode(), v.encode()) for k, v in lines(("mcp-param-region", "eu"), ("mcp-param-region", "us"))]
    verdict = param_header_rejection(call({"region": "eu"}), Headers(raw=raw).items(), SCHEMA)
    assert_mismatch(verdict, "more than once")


def test_optional_whitespace_around_a_value_is_not_part_of_it() -> None:
    assert param_header_rejection(call({"region": "eu"}), lines(("mcp-param-region", " \teu ")), SCHEMA) is None


def test_headers_the_schema_does_not_declare_are_ignored() -> None:
    headers = lines(("mcp-param-region", "eu"), ("mcp-param-tenant", "acme"), ("mcp-param-x", "=?base64?!!?="))
    assert param_header_rejection(call({"region": "eu"}), headers, SCHEMA) is None


def test_unannotated_schema_checks_nothing() -> None:
    plain = {"type": "object", "properties": {"region": {"type": "string"}}}
    assert param_header_rejection(call({"region": "eu"}), lines(("mcp-param-region", "us")), plain) is None
    assert param_header_rejection(call({"region": "eu"}), lines(("mcp-param-region", "us")), {}) is None


def test_invalid_annotations_check_nothing() -> None:
    """x-mcp-header on a number is invalid: conforming clients drop the tool, and the SDK validates nothing."""
    bad = {"type": "object", "properties": {"score": {"type": "number", "x-mcp-header": "Score"}}}
    assert param_header_rejection(call({"score": 1.5}), lines(), bad) is None


def test_nested_annotation_is_checked() -> None:
    nested = {"type": "object", "properties": {
        "target": {"type": "object", "properties": {"zone": {"type": "string", "x-mcp-header": "Zone"}}}}}
    body = call({"target": {"zone": "z1"}})
    assert param_header_rejection(body, lines(("mcp-param-zone", "z1")), nested) is None
    assert_mismatch(param_header_rejection(body, lines(), nested), "Mcp-Param-Zone", "'target.zone'")


def test_only_tools_call_is_checked() -> None:
    listing = call(method="tools/list")
    assert param_header_rejection(listing, lines(("mcp-param-region", "=?base64?!!?=")), SCHEMA) is None
    prompt = call({"region": "eu"}, method="prompts/get")
    assert param_header_rejection(prompt, lines(), SCHEMA) is None


@pytest.mark.parametrize("params", [{"name": 3, "arguments": {"region": "eu"}},
                                    {"name": "test_custom_headers", "arguments": ["eu"]}, "not-an-object"])
def test_malformed_call_is_left_to_dispatch(params: Any) -> None:
    msg = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    assert param_header_rejection(msg, lines(), SCHEMA) is None


def test_no_arguments_and_no_headers_passes() -> None:
    assert param_header_rejection(call(), lines(), SCHEMA) is None
    assert param_header_rejection(call({}), lines(), SCHEMA) is None


# The conformance scenario's requests, and what it expects: the SDK's verdict, and ours, must agree with it.
SCENARIO = [
    ("Hello", "=?base64?SGVsbG8=?=", True),
    ("Hello", "=?base64?SGVsbG8?=", False),
    ("Hello", "=?base64?SGVs!!!bG8=?=", False),
    ("SGVsbG8=", "SGVsbG8=", True),
    ("=?base64?SGVsbG8=", "=?base64?SGVsbG8=", True),
    ("test-value", None, False),
]


@pytest.mark.parametrize(("body_value", "header", "accepted"), SCENARIO)
def test_conformance_cases_agree_with_the_sdk_server(body_value: str, header: str | None, accepted: bool) -> None:
    body = call({"region": body_value})
    extra = [] if header is None else [("mcp-param-region", header)]
    ours = param_header_rejection(body, lines(*extra), SCHEMA)
    raw = [(k.encode(), v.encode()) for k, v in lines(*extra)]
    sdk = validate_mcp_param_headers(SCHEMA, body["params"]["arguments"], Headers(raw=raw))
    assert (ours is None) is accepted
    assert ours == (None if sdk is None else (sdk.code, sdk.message, sdk.data))


# ---- the schema is unknown: only headers wrong on their own ---------------------------------------------


def test_unknown_schema_passes_well_formed_headers_without_comparing() -> None:
    body = call({"region": "us-west1"})
    assert param_header_rejection(body, lines(("mcp-param-region", "eu-north1")), None) is None
    assert param_header_rejection(body, lines(("mcp-param-region", "=?base64?SGVsbG8=?=")), None) is None
    assert param_header_rejection(body, lines(("mcp-param-anything", "=?base64?SGVsbG8=")), None) is None


def test_unknown_schema_passes_a_missing_header() -> None:
    """The one conformance case only a known schema can catch."""
    assert param_header_rejection(call({"region": "test-value"}), lines(), None) is None


@pytest.mark.parametrize("value", ["=?base64?SGVsbG8?=", "=?base64?SGVs!!!bG8=?="])
def test_unknown_schema_refuses_malformed_base64(value: str) -> None:
    verdict = param_header_rejection(call({"region": "Hello"}), lines(("mcp-param-region", value)), None)
    assert_mismatch(verdict, "Mcp-Param-region", "malformed base64")


def test_sentinel_with_non_ascii_payload_is_malformed_not_a_crash() -> None:
    """Latin-1 obs-text inside a sentinel makes the SDK's decoder raise; it is refused as malformed instead."""
    value = "=?base64?SGVs\xe9bG8=?="
    for schema in (SCHEMA, None):
        verdict = param_header_rejection(call({"region": "Hello"}), lines(("mcp-param-region", value)), schema)
        assert_mismatch(verdict, "malformed base64")
    undeclared = lines(("mcp-param-region", "Hello"), ("mcp-param-tenant", value))
    assert param_header_rejection(call({"region": "Hello"}), undeclared, SCHEMA) is None


def test_unknown_schema_refuses_a_repeated_header() -> None:
    headers = lines(("mcp-param-region", "eu"), ("MCP-Param-Region", "us"))
    assert_mismatch(param_header_rejection(call({"region": "eu"}), headers, None), "more than once")


@pytest.mark.parametrize("value", ["Zürich", "caf\xc3\xa9", "a\tb", "a\x7fb"])
def test_unknown_schema_refuses_characters_a_client_must_encode(value: str) -> None:
    verdict = param_header_rejection(call({"region": value}), lines(("mcp-param-region", value)), None)
    assert_mismatch(verdict, "Mcp-Param-region", "base64-encoded")


def test_unknown_schema_refuses_a_name_no_annotation_can_declare() -> None:
    verdict = param_header_rejection(call({"region": "eu"}), lines(("mcp-param-", "eu")), None)
    assert_mismatch(verdict, "valid x-mcp-header token")


def test_unknown_schema_ignores_other_headers() -> None:
    headers = lines(("x-custom", "Zürich"), ("x-custom", "again"), ("mcp-paramregion", "=?base64?!?="))
    assert param_header_rejection(call({"region": "eu"}), headers, None) is None
