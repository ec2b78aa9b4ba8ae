"""The HTTP transports' small rules, without a network: ``--header`` parsing and the Host/Origin checks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regoguard.cli.common import HeaderError, parse_headers
from regoguard.proxy.http_checks import HostRules
from regoguard.proxy.http_upstream import same_origin


def test_headers_read_variables_from_the_environment() -> None:
    env = {"TOKEN": "s3cret", "ORG": "acme"}
    headers = parse_headers(["Authorization: Bearer ${TOKEN}", "X-Org:${ORG}-${ORG}", "X-Plain: $TOKEN"], env)
    assert headers == {"authorization": "Bearer s3cret", "x-org": "acme-acme", "x-plain": "$TOKEN"}


@pytest.mark.parametrize("raw, problem", [
    ("Authorization: Bearer ${MISSING}", "${MISSING}, which is not set"),
    ("no colon here", 'expected "Name: value"'),
    ("Bad Name: x", 'expected "Name: value"'),
    ("X-Injected: ${CRLF}", "line break"),
])
def test_bad_headers_are_refused(raw: str, problem: str) -> None:
    with pytest.raises(HeaderError, match=problem.replace("$", r"\$").replace("{", r"\{").replace("}", r"\}")):
        parse_headers([raw], {"CRLF": "a\r\nX-Evil: 1"})


RULES = HostRules(port=8080, bind_host="127.0.0.1")


@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1:8080", True), ("localhost:8080", True), ("[::1]:8080", True), ("localhost", True),
    ("evil.example:8080", False), ("127.0.0.1:9090", False), ("127.0.0.1.evil.example:8080", False),
    ("localhost:notaport", False), (None, False),
])
def test_host_header(host: str | None, ok: bool) -> None:
    assert RULES.host_ok(host) is ok


@pytest.mark.parametrize("origin, ok", [
    (None, True), ("http://localhost:8080", True), ("http://127.0.0.1:8080", True),
    ("http://evil.example", False), ("http://localhost:3000", False), ("null", False),
    ("http://localhost.evil.example:8080", False), ("file://", False),
])
def test_origin_header(origin: str | None, ok: bool) -> None:
    assert RULES.origin_ok(origin) is ok


def test_allowed_origins_and_hosts_extend_the_loopback_ones() -> None:
    rules = HostRules(port=443, bind_host="0.0.0.0", allowed_hosts=frozenset({"mcp.example.com"}),
                      allowed_origins=frozenset({"https://app.example.com"}))
    assert rules.host_ok("mcp.example.com") and not rules.host_ok("other.example.com")
    assert rules.origin_ok("https://app.example.com") and not rules.origin_ok("https://evil.example.com")
    assert not rules.host_ok("0.0.0.0:443")  # a wildcard bind names no host of its own


def test_sse_endpoints_must_stay_on_the_origin() -> None:
    assert same_origin("http://127.0.0.1:3001/messages?x=1", "http://127.0.0.1:3001/sse")
    assert not same_origin("http://evil.example:3001/messages", "http://127.0.0.1:3001/sse")
    assert not same_origin("https://127.0.0.1:3001/m", "http://127.0.0.1:3001/sse")


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(value=JSON, indent=st.sampled_from([None, 0, 1, 2, "\t"]))
def test_a_message_is_one_line_on_a_stdio_framing_whatever_its_whitespace(value: object, indent: object) -> None:
    """The framing the stdio transports apply (line breaks become spaces) keeps any strictly parsed JSON
    message one line with the same value: a body's whitespace cannot split it into two messages."""
    from regoguard.proxy import jsonrpc

    message = {"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"v": value}}
    text = json.dumps(message, indent=indent)  # type: ignore[arg-type]
    framed = text.encode().replace(b"\n", b" ")
    assert b"\n" not in framed
    assert jsonrpc.loads(framed) == json.loads(text)
