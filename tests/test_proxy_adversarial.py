"""No way around the guard: raw lines an SDK would never send, written straight to ``regoguard run``.

Each test ends by reading the upstream server's own record of what reached it (the spy's ``SPY_LOG``,
raw_echo's ``RAW_ECHO_LOG``): a denied or malformed ``tools/call`` must never be there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from proxy_harness import (
    TIMEOUT,
    RawProxy,
    denial_of,
    dumps,
    error_of,
    python_server,
    request,
    spy_calls,
    spy_tools,
    strict_loads,
    tools_call,
    write_policy,
)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602

DENY_DELETE = """\
default: allow
hide: [bulk_tool_060]
tools:
  delete_customer:
    rules:
      - name: no deletes
        action: deny
        on_deny: Deleting customers needs a human.
"""

DENY_BY_DEFAULT = """\
default: deny
tools:
  echo:
    rules:
      - action: allow
"""

DELETE = {"customer_id": "cus_victim"}


def raw_log(path: Path) -> list[bytes]:
    """Every line raw_echo received, byte for byte."""
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def start_spy(tmp_path: Path, policy_text: str = DENY_DELETE, **kw: Any) -> Any:
    log = tmp_path / "spy.jsonl"
    policy = write_policy(tmp_path, policy_text)
    return log, RawProxy.start(policy, python_server("spy"), env={"SPY_LOG": str(log)}, **kw)


# --------------------------------------------------------------------------- batches


def _without_id(msg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in msg.items() if k != "id"}


async def test_batch_denied_entry_answered_by_proxy_allowed_entry_forwarded(tmp_path: Path) -> None:
    log = tmp_path / "raw.log"
    policy = write_policy(tmp_path, DENY_DELETE)
    allowed = tools_call(1, "echo", {"text": "from a batch"})
    denied = tools_call(2, "delete_customer", DELETE)
    hidden = tools_call(3, "bulk_tool_060", {})
    notification = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "echo", "arguments": {"n": 1}}}
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), env={"RAW_ECHO_LOG": str(log)}) as proxy:
            await proxy.send([allowed, denied, hidden, notification])
            # the proxy's own answers come back as one batch ...
            answers = await proxy.expect(lambda m: isinstance(m, list) and any(
                isinstance(e, dict) and e.get("id") == 2 for e in m), what="the proxy's batch of denials")
            by_id = {a["id"]: a for a in answers}
            assert set(by_id) == {2, 3}
            assert denial_of(by_id[2])["rule"] == "delete_customer/no deletes"
            assert denial_of(by_id[3])["rule"] == "hide"
            # ... and the server answers the batch it got: the allowed call alone
            server_answers = await proxy.expect(lambda m: isinstance(m, list) and any(
                isinstance(e, dict) and e.get("id") == 1 for e in m), what="the server's batch")
            assert [a["id"] for a in server_answers] == [1]
            assert server_answers[0]["result"]["content"][0]["text"] == 'echo {"text": "from a batch"}'

            # a batch of allowed entries only is relayed as the very line the client wrote
            line = (b'[ {"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"echo",'
                    b'"arguments":{"v":1.0e2}}} ,{"jsonrpc":"2.0","id":11,"method":"ping"}]\n')
            await proxy.send_raw(line)
            await proxy.expect(lambda m: isinstance(m, list) and [e.get("id") for e in m] == [10, 11])

            # an empty batch and a batch holding a non-object are invalid requests, never forwarded
            await proxy.send_raw(b"[]\n")
            error_of(await proxy.null_id_error(INVALID_REQUEST), INVALID_REQUEST)
            await proxy.send([[denied]])
            nested = await proxy.expect(lambda m: isinstance(m, list) and len(m) == 1 and "error" in m[0])
            assert nested[0]["error"]["code"] == INVALID_REQUEST
            await proxy.settle()
            proxy.assert_all_json()

    received = [strict_loads(line) for line in raw_log(log)]
    # the batch without the denied, hidden and id-less entries; only ids differ (the proxy assigns them)
    assert [_without_id(e) for e in received[0]] == [_without_id(allowed)]
    # untouched but for the ids, which the proxy assigns: even the spacing between entries is kept
    assert re.fullmatch(re.escape(line).replace(b'"id":10', b'"id":[0-9]+').replace(b'"id":11', b'"id":[0-9]+'),
                        raw_log(log)[1]), raw_log(log)[1]
    assert _without_id(received[2]) == _without_id(request("settle", "ping"))
    assert len(received) == 3
    assert b"delete_customer" not in log.read_bytes()
    assert b"bulk_tool_060" not in log.read_bytes()


async def test_a_batch_in_a_session_without_batches_is_refused_whole(tmp_path: Path) -> None:
    """JSON-RPC batching left MCP in 2025-06-18, and the Python SDK server drops a batch without an answer,
    so its client would wait for ever. In a session on such a revision (here 2025-11-25) the proxy forwards
    nothing of a batch and answers each request in it with an error; the session goes on. (The batch used to
    go on without its denied entry, and the allowed one hung until the server exited.)"""
    log, started = start_spy(tmp_path)
    with anyio.fail_after(TIMEOUT):
        async with started as proxy:
            await proxy.initialize()
            await proxy.send([tools_call(1, "echo", {"text": "batched"}), tools_call(2, "delete_customer", DELETE),
                              {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}])
            answers = await proxy.expect(lambda m: isinstance(m, list), what="the proxy's batch")
            assert [a["id"] for a in answers] == [1, 2]
            for answer in answers:
                assert error_of(answer, INVALID_REQUEST)["message"].startswith("JSON-RPC batches are not part")
            r = await proxy.call(tools_call(3, "echo", {"text": "single"}))
            assert r["result"]["content"][0]["text"] == "single"
            await proxy.close_stdin()
            assert await proxy.wait() == 0
            proxy.assert_all_json()
    assert spy_calls(log) == [("echo", {"text": "single"})]


# --------------------------------------------------------------------------- calls without an id


async def test_tools_call_without_id_is_never_forwarded(tmp_path: Path) -> None:
    log, started = start_spy(tmp_path)
    with anyio.fail_after(TIMEOUT):
        async with started as proxy:
            await proxy.initialize()
            for name, args in [("echo", {"text": "no id"}), ("delete_customer", DELETE), ("list_customers", {})]:
                params = {"name": name, "arguments": args}
                await proxy.send({"jsonrpc": "2.0", "method": "tools/call", "params": params})
            r = await proxy.call(tools_call(1, "echo", {"text": "with id"}))
            assert r["result"]["content"][0]["text"] == "with id"
            await proxy.close_stdin()
            assert await proxy.wait() == 0
            # nothing answered the notifications (they cannot be answered) and nothing else came
            assert [m.get("id") for m in proxy.messages] == ["init", 1]
            proxy.assert_all_json()
    assert spy_calls(log) == [("echo", {"text": "with id"})]


# --------------------------------------------------------------------------- duplicate keys, malformed lines

DUPLICATE_KEY_LINES = [
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_customer",'
    b'"arguments":{"customer_id":"c"}}}\n',
    b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_customer","name":"echo",'
    b'"arguments":{"customer_id":"c"}}}\n',
    b'{"jsonrpc":"2.0","id":3,"method":"ping","method":"tools/call","params":{"name":"delete_customer",'
    b'"arguments":{"customer_id":"c"}}}\n',
    b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo"},"params":{"name":"delete_customer",'
    b'"arguments":{"customer_id":"c"}}}\n',
    # the same key spelt with an escape: one key to every JSON parser
    b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","na\\u006de":"delete_customer",'
    b'"arguments":{"customer_id":"c"}}}\n',
    b'{"jsonrpc":"2.0","id":6,"id":7,"method":"tools/call","params":{"name":"delete_customer",'
    b'"arguments":{"customer_id":"c"}}}\n',
    b'{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a","text":"b"}}}\n',
]

MALFORMED_LINES = [
    b"{not json\n",
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_customer"}\n',  # truncated
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":NaN}}}\n',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":Infinity}}}\n',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":-Infinity}}}\n',
    b'{"jsonrpc":"2.0","id":NaN,"method":"tools/call","params":{"name":"delete_customer"}}\n',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_\xff_customer"}}\n',  # not UTF-8
    b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}\n',  # BOM
    # two messages on one line: a parser that stops after the first would see only the harmless one
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}} '
    b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_customer"}}\n',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}garbage\n',
    b"[" * 100_000 + b"\n",  # nesting far beyond any parser's recursion limit
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"t":"a\x01b"}}}\n',
]

# The id each line's parse error carries: the request's own where it can be read unambiguously (a
# duplicate key elsewhere, a bad value after the id, trailing garbage), null where it cannot (two ids,
# an id that is not JSON, bytes that are not UTF-8, a byte-order mark, no object at all).
READABLE_IDS = [1, 2, 3, 4, 5, None, 8, None, 1, 1, 1, 1, None, None, None, 1, 1, None, 1]


async def test_duplicate_keys_and_malformed_lines_are_parse_errors(tmp_path: Path) -> None:
    log, started = start_spy(tmp_path)
    with anyio.fail_after(TIMEOUT):
        async with started as proxy:
            await proxy.initialize()
            lines = DUPLICATE_KEY_LINES + MALFORMED_LINES
            for i, (line, readable_id) in enumerate(zip(lines, READABLE_IDS, strict=True)):
                await proxy.send_raw(line)
                # the error names the request when its id can be read unambiguously, else it has id null
                err = error_of(await proxy.expect(
                    lambda m, want=readable_id: isinstance(m, dict) and m.get("id", 0) == want
                    and m.get("error", {}).get("code") == PARSE_ERROR), PARSE_ERROR)
                assert err["message"].startswith("Parse error"), err
                # the session goes on: a normal request right after works
                r = await proxy.call(tools_call(f"after-{i}", "echo", {"text": str(i)}))
                assert r["result"]["content"][0]["text"] == str(i), (line[:80], r)
            # blank lines are skipped silently
            await proxy.send_raw(b"\n   \n\t\n")
            await proxy.settle()
            proxy.assert_all_json()
            assert not [m for m in proxy.messages if m.get("id") is None and "error" not in m]
    n = len(DUPLICATE_KEY_LINES + MALFORMED_LINES)
    assert spy_calls(log) == [("echo", {"text": str(i)}) for i in range(n)]


# --------------------------------------------------------------------------- invalid params

INVALID_PARAMS_CASES = [
    ("params a list", {"params": ["delete_customer", DELETE]}),
    ("params a string", {"params": "delete_customer"}),
    ("params null", {"params": None}),
    ("params missing", {}),
    ("name missing", {"params": {"arguments": DELETE}}),
    ("name a number", {"params": {"name": 42, "arguments": DELETE}}),
    ("name a list", {"params": {"name": ["delete_customer"], "arguments": DELETE}}),
    ("name null", {"params": {"name": None}}),
    ("name an object", {"params": {"name": {"name": "delete_customer"}}}),
    ("arguments a list", {"params": {"name": "echo", "arguments": ["delete_customer"]}}),
    ("arguments a string", {"params": {"name": "echo", "arguments": '{"text": "x"}'}}),
    ("arguments a number", {"params": {"name": "echo", "arguments": 1}}),
]


async def test_invalid_tools_call_params_get_32602_and_are_not_forwarded(tmp_path: Path) -> None:
    log, started = start_spy(tmp_path)
    with anyio.fail_after(TIMEOUT):
        async with started as proxy:
            await proxy.initialize()
            for i, (what, extra) in enumerate(INVALID_PARAMS_CASES):
                msg = {"jsonrpc": "2.0", "id": f"bad-{i}", "method": "tools/call", **extra}
                answer = await proxy.call(msg)
                err = error_of(answer, INVALID_PARAMS)
                assert err["message"].startswith("Invalid params"), (what, err)
                decision = err["data"]["regoguard/decision"]
                assert decision["rule"] == "proxy/invalid-params" and decision["decision_id"], (what, err)
            # arguments null means no arguments: that call is well-formed
            r = await proxy.call(request("null-args", "tools/call", {"name": "list_customers", "arguments": None}))
            assert "result" in r and r["result"]["isError"] is False
            proxy.assert_all_json()
    assert spy_calls(log) == [("list_customers", {})]


# --------------------------------------------------------------------------- names: exact match only

LOOKALIKES = [
    "delete_customer ",  # trailing space
    " delete_customer",  # leading space
    "del\u0435te_customer",  # Cyrillic small ie (U+0435) for the first e
    "DELETE_CUSTOMER",
    "Delete_Customer",
    "delete_customer\u200b",  # zero-width space
    "delete\u2011customer",  # non-breaking hyphen
    "ｄelete_customer",  # fullwidth d (U+FF44)
    "delete_customer/",
    "delete_customer\u007f",
]

# Control characters: exact match still holds, but the engine may refuse such input outright (regopy cuts
# strings at NUL, so a NUL must never let "delete_customer\0x" be judged as "delete_customer").
CONTROL_LOOKALIKES = ["delete_customer\n", "delete_customer\t", "delete_customer\u0000", "delete_customer\u0000x"]


async def test_lookalike_names_do_not_match_under_default_allow(tmp_path: Path) -> None:
    """Exact match only: a lookalike of a denied tool is a different tool. Under ``default: allow`` it is
    allowed and reaches the server, which (here) answers "Unknown tool". A server that normalises names
    (strip, casefold, NFKC) would run the real tool: such servers need ``default: deny``."""
    log, started = start_spy(tmp_path)
    with anyio.fail_after(TIMEOUT):
        async with started as proxy:
            await proxy.initialize()
            for i, name in enumerate(LOOKALIKES):
                answer = await proxy.call(tools_call(i, name, DELETE))
                err = error_of(answer, INVALID_PARAMS)  # the spy's own error, not the proxy's
                assert err["message"] == f"Unknown tool: {name}", err
                assert "data" not in err or "regoguard/decision" not in (err.get("data") or {})
            # with control characters: either a different tool (reaches the server as is) or denied
            for i, name in enumerate(CONTROL_LOOKALIKES):
                answer = await proxy.call(tools_call(f"ctl-{i}", name, DELETE))
                if "error" in answer:
                    assert answer["error"]["message"] == f"Unknown tool: {name}", answer
                else:
                    denial_of(answer)
            # the real name, also when spelt with JSON escapes, is denied
            denial_of(await proxy.call(tools_call("real", "delete_customer", DELETE)))
            await proxy.send_raw(b'{"jsonrpc":"2.0","id":"escaped","method":"tools\\/call","params":'
                                 b'{"name":"delete\\u005fcustomer","arguments":{"customer_id":"c"}}}\n')
            assert denial_of(await proxy.response("escaped"))["rule"] == "delete_customer/no deletes"
            await proxy.send_raw(b'{"jsonrpc":"2.0","id":"escaped-hidden","method":"tools/call","params":'
                                 b'{"name":"bulk\\u005ftool_060"}}\n')
            assert denial_of(await proxy.response("escaped-hidden"))["rule"] == "hide"
            proxy.assert_all_json()
    assert spy_calls(log)[: len(LOOKALIKES)] == [(name, DELETE) for name in LOOKALIKES]
    assert set(spy_tools(log)[len(LOOKALIKES):]) <= set(CONTROL_LOOKALIKES)
    assert "delete_customer" not in spy_tools(log)


async def test_lookalike_names_are_denied_under_default_deny(tmp_path: Path) -> None:
    log, started = start_spy(tmp_path, DENY_BY_DEFAULT)
    with anyio.fail_after(TIMEOUT):
        async with started as proxy:
            await proxy.initialize()
            for i, name in enumerate([*LOOKALIKES, "delete_customer", "echo ", "Echo", "еcho"]):
                decision = denial_of(await proxy.call(tools_call(i, name, DELETE)))
                assert decision["rule"] == "default", (name, decision)
            # "echo" followed by a control character is not "echo" (NUL: see test_nul_never_shortens_...)
            for i, name in enumerate(["echo\n", "echo\t", "echo\u0001", *CONTROL_LOOKALIKES]):
                denial_of(await proxy.call(tools_call(f"ctl-{i}", name, DELETE)))
            r = await proxy.call(tools_call("ok", "echo", {"text": "exact"}))
            assert r["result"]["content"][0]["text"] == "exact"
            proxy.assert_all_json()
    assert spy_calls(log) == [("echo", {"text": "exact"})]


# --------------------------------------------------------------------------- oversize lines


async def test_oversize_lines_get_an_error_and_the_session_goes_on(tmp_path: Path) -> None:
    limit = 4096
    log, started = start_spy(tmp_path, options=["--max-message-bytes", str(limit)])

    def echo_line(id_: Any, size: int) -> bytes:
        base = dumps(tools_call(id_, "echo", {"text": ""}))
        pad = size - len(base)
        return dumps(tools_call(id_, "echo", {"text": "x" * pad}))

    with anyio.fail_after(TIMEOUT):
        async with started as proxy:
            await proxy.initialize()
            under = echo_line("under", 4000)
            assert len(under) == 4000
            r = await proxy.call(json.loads(under))
            assert r["result"]["content"][0]["text"] == json.loads(under)["params"]["arguments"]["text"]

            cases = [
                echo_line("over-1", 5000),
                echo_line("over-2", 1_000_000),
                dumps(tools_call("over-3", "delete_customer", {"customer_id": "c" * 10_000})),
            ]
            for i, line in enumerate(cases):
                await proxy.send_raw(line)
                # answered under its own id (read from the line's start), so the client is not left waiting
                err = error_of(await proxy.response(f"over-{i + 1}"), INVALID_REQUEST)
                assert str(limit) in err["message"] and "exceeds" in err["message"], err
                r = await proxy.call(tools_call(f"next-{i}", "echo", {"text": f"next {i}"}))
                assert r["result"]["content"][0]["text"] == f"next {i}"

            # an oversize line and a normal request in one write: only the oversize one is dropped
            await proxy.send_raw(echo_line("over-4", 50_000) + dumps(tools_call("glued", "echo", {"text": "glued"})))
            error_of(await proxy.response("over-4"), INVALID_REQUEST)
            r = await proxy.response("glued")
            assert r["result"]["content"][0]["text"] == "glued"
            # an id after the line's first 4 KB, or running into their end, is not read: the error is under null
            late = {"jsonrpc": "2.0", "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"t": "x" * 9000}}, "id": "late"}
            await proxy.send_raw(dumps(late))
            error_of(await proxy.null_id_error(INVALID_REQUEST), INVALID_REQUEST)
            cut = b'{"jsonrpc":"2.0","method":"x","params":"' + b"p" * (4096 - 49) + b'","id":123456789}\n'
            assert cut.index(b"123456789") < 4096 < cut.index(b"}\n")
            await proxy.send_raw(cut)
            error_of(await proxy.null_id_error(INVALID_REQUEST), INVALID_REQUEST)
            # a client's oversize *response* names the server's id space: its error is under null too
            await proxy.send_raw(dumps({"jsonrpc": "2.0", "id": "resp", "result": {"t": "x" * 9000}}))
            error_of(await proxy.null_id_error(INVALID_REQUEST), INVALID_REQUEST)
            ids = {m.get("id") for m in proxy.messages if isinstance(m, dict)}
            assert not ids & {"late", 1234, 123456789, "resp"}
            proxy.assert_all_json()
    assert spy_tools(log) == ["echo"] * 5
    assert [args["text"] for _, args in spy_calls(log)][1:] == ["next 0", "next 1", "next 2", "glued"]


# --------------------------------------------------------------------------- framing differentials

# A bare CR is JSON whitespace, so the proxy parses each line below as ONE harmless message and forwards
# it. The Python SDK's stdio server reads stdin through a TextIOWrapper in universal-newline mode, which
# also splits lines at a bare CR: it sees the hidden delete_customer request as a line of its own.
CR_SMUGGLING = {
    "inside an allowed tools/call": (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi","x":\r'
        b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_customer",'
        b'"arguments":{"customer_id":"cus_victim"}}}\r}}}\n'
    ),
    "inside a notification": (
        b'{"jsonrpc":"2.0","method":"notifications/whatever","params":{"x":\r'
        b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_customer",'
        b'"arguments":{"customer_id":"cus_victim"}}}\r}}\n'
    ),
    "inside a ping": (
        b'{"jsonrpc":"2.0","id":4,"method":"ping","params":{"_meta":\r'
        b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"bulk_tool_060",'
        b'"arguments":{"x":"hidden"}}}\r}}\n'
    ),
}


@pytest.mark.parametrize("carrier", list(CR_SMUGGLING))
async def test_bare_carriage_return_cannot_smuggle_a_denied_call(carrier: str, tmp_path: Path) -> None:
    log, started = start_spy(tmp_path)
    with anyio.fail_after(TIMEOUT):
        async with started as proxy:
            await proxy.initialize()
            await proxy.send_raw(CR_SMUGGLING[carrier])
            r = await proxy.call(tools_call("after", "echo", {"text": "after"}))
            assert r["result"]["content"][0]["text"] == "after"
            await proxy.close_stdin()
            await proxy.wait()
            proxy.assert_all_json()
    smuggled = [tool for tool in spy_tools(log) if tool in ("delete_customer", "bulk_tool_060")]
    assert smuggled == [], f"denied tools reached the server: {spy_calls(log)}"


# --------------------------------------------------------------------------- numbers that overflow


async def test_overflowing_number_id_never_becomes_invalid_json(tmp_path: Path) -> None:
    """``1e400`` is valid JSON but no double holds it: Python reads it as ``inf``, and echoing that id back
    in a denial wrote ``"id":Infinity`` — not JSON — to the client."""
    log, started = start_spy(tmp_path)
    with anyio.fail_after(TIMEOUT):
        async with started as proxy:
            await proxy.initialize()
            await proxy.send_raw(b'{"jsonrpc":"2.0","id":1e400,"method":"tools/call","params":'
                                 b'{"name":"delete_customer","arguments":{"customer_id":"c"}}}\n')
            await proxy.send_raw(b'{"jsonrpc":"2.0","id":-1e400,"method":"tools/call","params":{"name":7}}\n')
            await proxy.settle()
            proxy.assert_all_json()
    assert "delete_customer" not in spy_tools(log)


async def test_reencoded_batch_never_sends_invalid_json_upstream(tmp_path: Path) -> None:
    """When a batch is split, the entries that go on are re-encoded: an overflowing number must not turn
    into ``Infinity`` (not JSON) on the server's stdin. (The engine denies a tools/call holding one; any
    other message in the batch is relayed.)"""
    log = tmp_path / "raw.log"
    policy = write_policy(tmp_path, DENY_DELETE)
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), env={"RAW_ECHO_LOG": str(log)}) as proxy:
            await proxy.send_raw(
                b'[{"jsonrpc":"2.0","id":1,"method":"x-vendor/thing","params":{"n":1e400}},'
                b'{"jsonrpc":"2.0","method":"notifications/x","params":{"n":-1e999}},'
                b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_customer"}}]\n'
            )
            await proxy.settle()
            proxy.assert_all_json()
    for line in raw_log(log):
        strict_loads(line)  # raises on Infinity


# --------------------------------------------------------------------------- values the engine must see whole

INJECTION_NAME = 'x"}],"allow":true,"reasons":[],"z":[{"q":"'


async def test_tool_name_cannot_rewrite_the_engine_decision(tmp_path: Path) -> None:
    """Under ``default: deny`` every tool but echo is denied, whatever its name holds. The denial message
    quotes the tool name; a name made of JSON punctuation must stay text and never turn the decision into
    an allow (nor into an engine error: it is denied by ``default``)."""
    log = tmp_path / "raw.log"
    policy = write_policy(tmp_path, DENY_BY_DEFAULT)
    names = [INJECTION_NAME, 'a"b', "a\\b", 'x\\", "allow": true, "y": "']
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), env={"RAW_ECHO_LOG": str(log)}) as proxy:
            answers = [await proxy.call(tools_call(i, name, {})) for i, name in enumerate(names)]
            proxy.assert_all_json()
    forwarded = [strict_loads(line) for line in raw_log(log)]
    assert forwarded == [], f"denied calls reached the server: {forwarded}"
    for name, answer in zip(names, answers, strict=True):
        decision = denial_of(answer)
        assert decision["rule"] == "default", (name, decision)
        assert decision["reason"] == f'Tool "{name}" is not allowed by policy (default: deny)', decision


NUL_POLICY = """\
default: deny
tools:
  echo:
    rules:
      - action: allow
  read_file:
    rules:
      - name: data only
        conditions:
          - path: args.path
            op: starts_with
            value: /srv/data/
          - path: args.path
            op: not_regex
            value: "\\\\.\\\\."
        on_deny: Only files under /srv/data/, no "..".
"""


async def test_nul_never_shortens_what_the_policy_sees(tmp_path: Path) -> None:
    """regopy cuts strings at a NUL: the policy must not judge ``/srv/data/x\\0/../../etc/passwd`` as
    ``/srv/data/x``, nor ``echo\\0anything`` as ``echo``."""
    log = tmp_path / "raw.log"
    policy = write_policy(tmp_path, NUL_POLICY)
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), env={"RAW_ECHO_LOG": str(log)}) as proxy:
            ok = await proxy.call(tools_call("ok", "read_file", {"path": "/srv/data/report.csv"}))
            assert ok["result"]["content"][0]["text"].startswith("read_file ")
            denial_of(await proxy.call(tools_call("dots", "read_file", {"path": "/srv/data/../../etc/passwd"})))
            for i, (name, args) in enumerate([
                ("read_file", {"path": "/srv/data/x\u0000/../../etc/passwd"}),
                ("read_file", {"path": "/srv/data/x", "\u0000": "y"}),
                ("echo\u0000", {}),
                ("echo\u0000delete_customer", {}),
            ]):
                denial_of(await proxy.call(tools_call(f"nul-{i}", name, args)))
            proxy.assert_all_json()
    assert [m["params"]["arguments"] for m in map(strict_loads, raw_log(log))] == [{"path": "/srv/data/report.csv"}]


# --------------------------------------------------------------------------- all of it, in one session


async def test_gauntlet_spy_sees_exactly_the_allowed_calls(tmp_path: Path) -> None:
    """Allowed calls interleaved with every kind of refused input above, in one session: the spy's log is
    exactly the allowed calls, in order."""
    log, started = start_spy(tmp_path, options=["--max-message-bytes", "4096"])
    allowed: list[tuple[str, dict[str, Any]]] = []
    with anyio.fail_after(TIMEOUT):
        async with started as proxy:
            await proxy.initialize()
            n = 0

            async def allowed_call() -> None:
                nonlocal n
                n += 1
                args = {"text": f"allowed {n}"}
                r = await proxy.call(tools_call(f"ok-{n}", "echo", args))
                assert r["result"]["content"][0]["text"] == args["text"], r
                allowed.append(("echo", args))

            refused: list[bytes] = [
                dumps(tools_call("d1", "delete_customer", DELETE)),
                dumps(tools_call("d2", "bulk_tool_060", {})),
                dumps({"jsonrpc": "2.0", "method": "tools/call",
                       "params": {"name": "delete_customer", "arguments": DELETE}}),
                dumps([tools_call("d3", "delete_customer", DELETE)]),
                dumps(request("d4", "tools/call", ["delete_customer", DELETE])),
                dumps(request("d5", "tools/call", {"name": "echo", "arguments": ["delete_customer"]})),
                *DUPLICATE_KEY_LINES,
                *MALFORMED_LINES,
                dumps(tools_call("d6", "delete_customer", {"customer_id": "c" * 5000})),
            ]
            for line in refused:
                await allowed_call()
                await proxy.send_raw(line)
            await allowed_call()
            r = await proxy.call(tools_call("list", "list_customers", {}))
            assert r["result"]["isError"] is False
            allowed.append(("list_customers", {}))
            await proxy.close_stdin()
            assert await proxy.wait() == 0
            proxy.assert_all_json()
            for id_ in ("d1", "d2", "d4", "d5"):
                assert any(isinstance(m, dict) and m.get("id") == id_ for m in proxy.messages), id_
    assert spy_calls(log) == allowed
