"""A number's JSON text decides, not its double: the server reads the text the client wrote (the proxy
forwards it as written), so a call whose number no double holds is denied rather than decided on the
nearest double (``100.00000000000000001`` passed ``lte: 100`` as ``100.0``)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_harness import TIMEOUT, RawProxy, denial_of, python_server, write_policy
from regoguard.engine_io import value_problem
from regoguard.json_numbers import InexactFloat
from regoguard.proxy import jsonrpc


def parsed(text: str) -> object:
    return jsonrpc.loads(b'{"n":' + text.encode() + b"}", exact_floats=True)["n"]


@pytest.mark.parametrize("text", ["100.00000000000000001", "-1e-400", "9007199254740993.0", "9007199254740993e0",
                                  "9.223372036854775e18", "4.611686018427388e18", "1.00000000000000001"])
def test_a_number_no_double_holds_is_kept_with_its_text_and_denied(text: str) -> None:
    value = parsed(text)
    assert type(value) is InexactFloat and value.text == text
    problem = value_problem({"n": value})
    assert problem is not None and "which no double holds" in problem and text in problem


@pytest.mark.parametrize("text", ["100.0", "0.1", "1e16", "9007199254740992.0", "9223372036854774784.0",
                                  "12345678.5", "0.30000000000000004", "2.5e+2", "-0.0", "1E5"])
def test_a_number_its_double_holds_is_a_plain_float(text: str) -> None:
    value = parsed(text)
    assert type(value) is float and value == float(text)


def test_only_a_clients_floats_are_marked() -> None:
    # a server's answer is relayed as its text: its numbers decide nothing (a schema's 1e100 must not deny
    # every call with team Rego), whichever decoder reads the line
    for line in (b'{"n":100.00000000000000001}', b'{"n":100.00000000000000001,"m":1e100}'):
        assert {type(v) for v in jsonrpc.loads(line).values()} == {float}
    assert {type(v) for v in jsonrpc.loads(b'{"n":100.00000000000000001,"m":1e100}', True).values()} == {InexactFloat}


@pytest.mark.parametrize(("text", "marked"), [("0e99999999999999999999999", False),
                                              ("-0.0e-99999999999999999999", False),
                                              ("1e-9999999999999999999999", True)])
def test_an_exponent_beyond_decimals_reach_is_read_not_raised(text: str, marked: bool) -> None:
    # Decimal refuses such exponents (InvalidOperation, not a ValueError): it ended the stdio session
    assert (type(parsed(text)) is InexactFloat) is marked
    assert type(jsonrpc.loads(b'{"n":' + text.encode() + b"}")["n"]) is float


def test_a_marked_number_copies_with_its_text() -> None:
    # the decision log deep-copies a call's arguments to mask them
    import copy
    import pickle

    value = parsed("100.00000000000000001")
    for twin in (copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
        assert type(twin) is InexactFloat and twin.text == value.text and twin == 100.0


_DIGITS = st.text("0123456789", min_size=1, max_size=21)


@settings(max_examples=400, deadline=None)
@given(whole=_DIGITS, fraction=st.none() | _DIGITS, exponent=st.none() | st.integers(-25, 25))
def test_every_float_text_is_read_as_the_number_it_names_or_marked(whole: str, fraction: str | None,
                                                                  exponent: int | None) -> None:
    """Whatever its digits: a float below 2**53 is plain when its shortest spelling has the text's value,
    one from 2**53 on when it is exactly the text's integer; else it is marked (by whichever decoder
    jsonrpc picks for the text)."""
    text = whole.lstrip("0").rjust(1, "0") + (f".{fraction}" if fraction is not None else "") \
        + (f"e{exponent}" if exponent is not None else "")
    if fraction is None and exponent is None:
        return  # an integer: read exactly by Python
    value = float(text)
    if abs(value) >= 2**63:
        return  # denied by value_problem whatever its text (beyond 64 bits)
    names_it = Decimal(text) == (Decimal(value) if abs(value) >= 2**53 else Decimal(repr(value)))
    assert (type(parsed(text)) is InexactFloat) is not names_it, text


POLICY = """\
default: allow
tools:
  pay:
    rules:
      - name: at most 100
        conditions:
          - {path: args.amount, op: lte, value: 100}
"""


async def test_a_call_whose_amount_no_double_holds_never_reaches_the_server(tmp_path: Path) -> None:
    log = tmp_path / "raw.log"
    decisions = tmp_path / "decisions.jsonl"
    policy = write_policy(tmp_path, POLICY)
    call = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"pay","arguments":{"amount":%s}}}\n'
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), env={"RAW_ECHO_LOG": str(log)},
                                  options=["--decision-log", str(decisions)]) as proxy:
            await proxy.send_raw(call % (1, b"100.00000000000000001"))
            assert denial_of(await proxy.response(1))["rule"] == "engine/input"
            await proxy.send_raw(call % (2, b"100.0"))
            assert "result" in await proxy.response(2)
            # a number beyond Decimal's exponents, as an id: answered, and the session goes on
            await proxy.send_raw(b'{"jsonrpc":"2.0","id":0e99999999999999999999999,"method":"ping"}\n')
            await proxy.expect(lambda m: isinstance(m, dict) and m.get("result", {}).get("method") == "ping")
            await proxy.send_raw(call % (3, b"1"))
            assert "result" in await proxy.response(3)
    assert b"100.00000000000000001" not in log.read_bytes() and b'"amount":100.0' in log.read_bytes()
    events = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert [(e["outcome"], e.get("rule")) for e in events] == [("denied", "engine/input"), ("allowed", None),
                                                               ("allowed", None)]


_SEGMENTS = st.lists(st.one_of(st.integers(150, 250).map(lambda n: b"7" * n),
                               st.binary(max_size=6).map(lambda b: bytes(b"0123456789eE+-x. "[x % 17] for x in b))),
                     max_size=8).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(_SEGMENTS)
def test_the_number_risk_check_finds_what_its_regex_would(line: bytes) -> None:
    """A run of 200 digits or a 3-digit exponent sends a line to the checked decoder; the check is made on a
    translated copy (faster than a regex); it must find exactly what the regex finds."""
    import re

    assert jsonrpc._number_risk(line) == bool(re.search(rb"[0-9]{200}|[eE][+-]?[0-9]{3}", line))
