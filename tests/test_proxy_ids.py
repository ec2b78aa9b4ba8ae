"""End to end through ``regoguard run``: the classes of relay bugs the proxy's own id space closes, and
lines from either side that once stopped a session or reached the client.

Each test starts the real CLI in front of a real server (tests/servers/raw_echo.py, or the npm reference
server for a JavaScript peer) and talks raw JSON-RPC lines, as an attacker would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from proxy_harness import (
    EVERYTHING_JS,
    TIMEOUT,
    RawProxy,
    error_of,
    python_server,
    read_jsonl,
    request,
    write_policy,
)

INVALID_REQUEST = -32600
MEMORY = ["--state", "memory"]

RATE_LIMITED = """\
version: "1"
hide: [delete_customer]
tools:
  echo:
    rules:
      - name: three a minute
        rate_limit: 3/minute
"""


def tools_call(id_: Any, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return request(id_, "tools/call", {"name": name, "arguments": arguments or {}})


def raw_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def calls_received(path: Path) -> list[dict[str, Any]]:
    return [m for m in raw_log(path) if isinstance(m, dict) and m.get("method") == "tools/call"]


async def test_reusing_an_id_in_flight_lifts_no_limit_and_loses_no_decision(tmp_path: Path) -> None:
    """A request left in flight (the server never answers ``hang``) and a ``tools/call`` under the same
    id: the call is refused, never forwarded, and still logged; the limit then holds to the call."""
    server_log, decisions = tmp_path / "raw.log", tmp_path / "decisions.jsonl"
    policy = write_policy(tmp_path, RATE_LIMITED)
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), env={"RAW_ECHO_LOG": str(server_log)},
                                  options=["--state", "memory", "--decision-log", str(decisions)]) as proxy:
            for k in range(6):
                await proxy.send(request(k, "hang"))
                answer = await proxy.call(tools_call(k, "echo", {"n": k}))
                assert "already in flight" in error_of(answer, INVALID_REQUEST)["message"]
            outcomes = []
            for k in range(6, 12):
                answer = await proxy.call(tools_call(k, "echo", {"n": k}))
                outcomes.append(answer["result"]["isError"])
            proxy.assert_all_json()
    assert outcomes == [False, False, False, True, True, True]
    assert [c["params"]["arguments"]["n"] for c in calls_received(server_log)] == [6, 7, 8]
    events = read_jsonl(decisions)
    assert len(events) == 12 and len({e["decision_id"] for e in events}) == 12
    assert [e["result"]["reasons"][0]["rule"] for e in events[:6]] == ["proxy/duplicate-id"] * 6


async def test_lists_under_one_id_are_all_filtered(tmp_path: Path) -> None:
    """Two ``tools/list`` (or a ping and a list) under one id: each answer the client gets is filtered."""
    policy = write_policy(tmp_path, RATE_LIMITED)
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), options=MEMORY) as proxy:
            await proxy.send_raw(b"".join(json.dumps(m).encode() + b"\n" for m in (
                request(5, "tools/list"), request(5, "tools/list"), request(6, "ping"), request(6, "tools/list"),
                request(7, "hang"), request(7, "tools/list"))))
            await proxy.settle()
            proxy.assert_all_json()
            lists = [m for m in proxy.messages if isinstance(m.get("result"), dict) and "tools" in m["result"]]
            assert lists, proxy.messages
            for answer in lists:
                assert [t["name"] for t in answer["result"]["tools"]] == ["echo"]
            refused = [m for m in proxy.messages if "error" in m]
            assert {m["id"] for m in refused} <= {5, 6, 7} and 7 in {m["id"] for m in refused}


async def test_client_ids_shaped_like_the_proxys_cannot_hijack_its_own_requests(tmp_path: Path) -> None:
    """The proxy lists the server's tools itself to validate a call; client requests under ids it might
    use (``1``, ``2``, ``regoguard-internal-1``) are the client's, answered to the client."""
    policy = write_policy(tmp_path, """\
tools:
  delete_customer:
    rules:
      - action: allow
        validate: {required_args: true}
""")
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), options=MEMORY) as proxy:
            await proxy.send_raw(b"".join(json.dumps(m).encode() + b"\n" for m in (
                tools_call("call", "delete_customer", {"customer_id": "c1"}),
                request(1, "x-one"), request(2, "x-two"), request("regoguard-internal-1", "x-three"))))
            allowed = await proxy.response("call")
            assert allowed["result"]["isError"] is False, allowed
            for id_, method in ((1, "x-one"), (2, "x-two"), ("regoguard-internal-1", "x-three")):
                assert (await proxy.response(id_))["result"]["method"] == method
            denied = await proxy.call(tools_call("no-id", "delete_customer", {}))
            assert "customer_id" in denied["result"]["content"][0]["text"]
            proxy.assert_all_json()


@pytest.mark.skipif(not EVERYTHING_JS.exists(), reason="npm install --prefix tests/node")
async def test_ids_beyond_2_53_round_trip_through_a_javascript_server(tmp_path: Path) -> None:
    """A JavaScript server reads numbers as doubles: an id beyond 2^53 would come back rounded. The proxy's
    own small ids reach the server; the client's come back exactly as written."""
    policy = write_policy(tmp_path, "hide: [echo]\n")
    big, bigger = b"9007199254740993", b"123456789012345678901234567890"
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, ["node", str(EVERYTHING_JS)], options=MEMORY) as proxy:
            await proxy.send_raw(b'{"jsonrpc":"2.0","id":' + big + b',"method":"initialize","params":'
                                 b'{"protocolVersion":"2025-11-25","capabilities":{},'
                                 b'"clientInfo":{"name":"t","version":"0"}}}\n')
            await proxy.expect(lambda m: "result" in m and "serverInfo" in m["result"], timeout=20)
            await proxy.send_raw(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
            await proxy.send_raw(b'{"jsonrpc":"2.0","id":' + bigger + b',"method":"tools/list"}\n')
            listed = await proxy.expect(lambda m: "tools" in m.get("result", {}), timeout=20)
            proxy.assert_all_json()
    initialized = [line for line in proxy.lines if b'"serverInfo"' in line]
    assert len(initialized) == 1 and initialized[0].rstrip().endswith(b'"id":' + big + b"}"), initialized
    assert listed["id"] == int(bigger)
    names = [t["name"] for t in listed["result"]["tools"]]
    assert names and "echo" not in names


SESSION_ENDERS = [
    # a number longer than Python converts
    b'{"jsonrpc":"2.0","id":"digits","method":"tools/call","params":{"name":"echo","arguments":{"n":'
    + b"1" * 5000 + b"}}}\n",
    # nesting just under the interpreter's recursion limit, in a batch the proxy must split
    b'[{"jsonrpc":"2.0","id":"deep","method":"tools/call","params":{"name":"echo","arguments":{"n":'
    + b"[" * 990 + b"]" * 990 + b'}}},{"jsonrpc":"2.0","id":"d2","method":"tools/call","params":'
    b'{"name":"delete_customer","arguments":{}}}]\n',
    # lone surrogates: valid JSON text, not encodable as UTF-8, in what the proxy itself must write
    b'{"jsonrpc":"2.0","id":"\\ud800","method":"tools/call","params":{"name":"delete_customer","arguments":{}}}\n',
    b'[{"jsonrpc":"2.0","id":"\\udc00","method":"tools/call","params":{"name":"delete_customer","arguments":{}}},'
    b'{"jsonrpc":"2.0","id":"b2","method":"ping"}]\n',
    b'{"jsonrpc":"2.0","id":"name","method":"tools/call","params":{"name":"echo\\ud800","arguments":{}}}\n',
]


@pytest.mark.parametrize("line", SESSION_ENDERS, ids=["digits", "deep", "surrogate-id", "surrogate-batch",
                                                      "surrogate-name"])
async def test_no_client_line_stops_the_session(line: bytes, tmp_path: Path) -> None:
    policy = write_policy(tmp_path, RATE_LIMITED)
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), options=MEMORY) as proxy:
            await proxy.send_raw(line)
            await proxy.expect(lambda m: True, what="an answer to the line")
            answer = await proxy.call(tools_call("after", "echo", {"text": "still here"}))
            assert answer["result"]["isError"] is False
            proxy.assert_all_json()
            await proxy.close_stdin()
            assert await proxy.wait() == 0  # client EOF still ends the session cleanly
        assert "Traceback" not in proxy.stderr_text()


SERVER_LINES = [
    "9" * 5000,
    '{"jsonrpc":"2.0","id":424242,"result":{"n":' + "9" * 5000 + "}}",
    "[" * 990 + "]" * 990,
    '{"jsonrpc":"2.0","id":"\\ud800","result":{}}',
    '[{"jsonrpc":"2.0","id":"\\udc00","result":{}}]',
    "42", '"ready"', "null", "[1,2]", "[]", "true",
]


async def test_no_server_line_crashes_the_proxy_or_reaches_the_client(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, RATE_LIMITED)
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), options=MEMORY) as proxy:
            emitted = await proxy.call(request("e", "emit", {"lines": SERVER_LINES}))
            assert emitted["result"] == {"emitted": len(SERVER_LINES)}
            answer = await proxy.call(tools_call("after", "echo", {"text": "still here"}))
            assert answer["result"]["isError"] is False
            proxy.assert_all_json()
            assert all(isinstance(m, dict) and m.get("jsonrpc") == "2.0" for m in proxy.messages)
            assert [m["id"] for m in proxy.messages] == ["e", "after"]
        assert "Traceback" not in proxy.stderr_text()


@pytest.mark.parametrize(("head", "expected"), [(b'{"id":12,"method":"x","params":"', "12"),
                                                (b'{"id":"abc" ,"method', '"abc"'),
                                                (b'{"id":12', None), (b'{"id":1.', None), (b'{"id":1e', None),
                                                (b'{"id":12.5E-', None), (b'{"method":"x","id":"a\xc3', None)])
def test_an_id_read_from_the_start_of_a_message_is_never_a_cut_one(head: bytes, expected: str | None) -> None:
    # an oversize line's first 4 KB: an id running into their end may be longer (12 of 123, 1 of 1.5)
    from regoguard.proxy import ids

    assert ids.salvage_id(head, head=True) == expected
