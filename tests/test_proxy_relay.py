"""The proxy relays bytes, not re-serialised models.

Client → server: anything that is not a denied ``tools/call`` reaches the server as the very line the
client wrote (tests/servers/raw_echo.py records every line it receives). Server → client: notifications,
server-initiated requests (sampling, elicitation, roots) and responses reach the client unchanged, both as
bytes (raw_echo's ``emit``) and as the SDK sees them (tests/servers/exotic.py with the SDK's client
callbacks, in both protocol eras). Only the answer to a ``tools/list`` that lost a hidden tool is rewritten.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client, ClientRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_REQUEST,
    CallToolResult,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    ListRootsResult,
    LoggingMessageNotificationParams,
    Root,
    TextContent,
    ToolListChangedNotification,
)

from proxy_harness import (
    MODES,
    SERVERS,
    TIMEOUT,
    RawProxy,
    proxied_client,
    python_server,
    request,
    strict_loads,
    write_policy,
)

ALLOW_ALL = """\
default: allow
tools:
  never_called:
    rules:
      - action: deny
        reason: This tool is not used by these tests.
"""

HIDE_DELETE = """\
hide: [delete_customer]
"""

EXOTIC_POLICY = """\
default: allow
tools:
  sleepy:
    rules:
      - name: no naps
        action: deny
        on_deny: No naps through the proxy.
  confirm_action:
    rules:
      - name: nothing destructive
        conditions:
          - path: args.action
            op: not_regex
            value: "^rm "
        on_deny: Destructive actions are refused.
"""


def raw_echo_module() -> Any:
    spec = importlib.util.spec_from_file_location("raw_echo", SERVERS / "raw_echo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Lines a client might write that no SDK model would reproduce byte for byte.
CLIENT_LINES = [
    b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2099-01-01",'
    b'"capabilities":{"x-future":{"deep":[1,2,3]}},"clientInfo":{"name":"odd-client","version":"0.0.0-\xc3\xa9"}}}\n',
    b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n',
    b'{"jsonrpc":"2.0","id":1,"method":"x-vendor/unknown","params":{"a":1.0e2,"b":1E+2,"c":-0,"d":0.1000,'
    b'"e":123456789012345678901234567890,"f":1e-7,"g":"\\u00e9\xc3\xa9\\ud83d\\ude00","h":[ ],"i":{ }},'
    b'"x-extra":{"k":true,"n":null}}\n',
    b'{ "jsonrpc" : "2.0" , "id" : "spaced" , "method" : "tools/call" , "params" : { "name" : "echo" ,'
    b' "arguments" : { "n" : 1.50 , "big" : 9223372036854775807 , "s" : "\\/slash\\tand\\u0041" } } }\n',
    b'{\t"jsonrpc":"2.0",\t"id":7,"method":"ping"}\n',
    b'{"method":"ping","id":8,"jsonrpc":"2.0"}\n',
    b'{"jsonrpc":"2.0","id":-9007199254740993,"method":"resources/list","params":{"cursor":null}}\n',
    b'{"jsonrpc":"2.0","method":"notifications/x-custom","params":{"z":2.500,"w":[1.0,2.00]}}\n',
    b'{"jsonrpc":"2.0","id":"srv-1","result":{"v":1e2,"x-unknown":"kept"}}\n',  # a client *response*
    b'{"jsonrpc":"2.0","id":"srv-2","error":{"code":-1,"message":"no","data":{"d":0.0}}}\n',
    b'{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"delete_customer",'
    b'"arguments":{"customer_id":"cus_1"},"_meta":{"progressToken":1.0,"x-vendor":{"a":[]}}}}\n',
    b'{"jsonrpc":"2.0","id":11,"method":"tools/list","params":{"x-extra":1}}\n',
    b'{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"echo","arguments":null}}\r\n',
]


# The id of each CLIENT_LINES request as written (None: a notification or a response, forwarded untouched).
CLIENT_LINE_IDS = [b"0", None, b"1", b'"spaced"', b"7", b"8", b"-9007199254740993", None, None, None, b"10",
                   b"11", b"12"]


@pytest.mark.parametrize("loop", ["default", "asyncio"])  # uvloop when installed; asyncio's own on request
async def test_client_lines_reach_the_server_identical_but_for_the_id(tmp_path: Path, loop: str) -> None:
    """Every byte of a client line reaches the server as written, except a request's id, which the proxy
    assigns (it owns the upstream id space); the answer comes back under the client's own id."""
    log = tmp_path / "raw.log"
    policy = write_policy(tmp_path, ALLOW_ALL)
    env = {"RAW_ECHO_LOG": str(log), "REGOGUARD_EVENT_LOOP": loop}
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), env=env) as proxy:
            for line in CLIENT_LINES:
                await proxy.send_raw(line)
            for id_ in (0, 1, "spaced", 7, 8, -9007199254740993, 10, 11, 12):
                answer = await proxy.response(id_)
                assert "result" in answer, answer
            proxy.assert_all_json()
    received = log.read_bytes().splitlines(keepends=True)
    assert len(received) == len(CLIENT_LINES)
    upstream_ids = []
    for written, got, raw_id in zip(CLIENT_LINES, received, CLIENT_LINE_IDS, strict=True):
        sent = written.replace(b"\r\n", b"\n")  # framing, not message: the proxy ends lines with \n
        if raw_id is None:
            assert got == sent
            continue
        at = sent.index(raw_id, sent.index(b'"id"') + 4)  # where the id's value begins
        tail = sent[at + len(raw_id):]
        assert got.startswith(sent[:at]) and got.endswith(tail), (sent, got)
        new_id = got[at:len(got) - len(tail)]
        assert new_id.isdigit(), (sent, got)
        upstream_ids.append(int(new_id))
    assert len(set(upstream_ids)) == len(upstream_ids)


async def test_unknown_method_answer_shows_the_line_the_server_got(tmp_path: Path) -> None:
    """The same property from the client's side: raw_echo answers an unknown method with the line it read."""
    policy = write_policy(tmp_path, ALLOW_ALL)
    line = CLIENT_LINES[2]
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo")) as proxy:
            await proxy.send_raw(line)
            answer = await proxy.response(1)
            assert answer["result"]["method"] == "x-vendor/unknown"
            assert answer["result"]["received"].encode("utf-8") == line


UNSOLICITED = b'{"jsonrpc":"2.0","id":"nobody","result":{}}'


def _emitted_lines() -> list[bytes]:
    return [
        # a notification with odd numbers and fields no spec names
        b'{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":{"n":1.0e2,'
        b'"big":123456789012345678901234567890},"x-unknown":[ ]}}',
        # a server -> client request (sampling) formatted like no SDK would
        b'{ "jsonrpc":"2.0", "id":"s-1", "method":"sampling/createMessage", "params":{"messages":[{"role":"user",'
        b'"content":{"type":"text","text":"\\u00e9\xc3\xa9"}}],"maxTokens":64.0}}',
        b'{"jsonrpc":"2.0","id":77,"method":"roots/list"}',
        b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":0.50,'
        b'"total":1E0}}',
        # a response to an id the proxy never sent: dropped (see UNSOLICITED below)
        UNSOLICITED,
        # a batch from the server: relayed as is
        b'[{"jsonrpc":"2.0","method":"notifications/a"},{"jsonrpc":"2.0","method":"notifications/b"}]',
    ]


async def test_server_lines_reach_the_client_byte_identical(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, HIDE_DELETE)
    emitted = _emitted_lines()
    raw_echo = raw_echo_module()
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo")) as proxy:
            await proxy.send(request("e", "emit", {"lines": [line.decode("utf-8") for line in emitted]}))
            await proxy.response("e")
            got = [line.rstrip(b"\n") for line in proxy.lines]
            relayed = [line for line in emitted if line != UNSOLICITED]
            assert got[: len(relayed)] == relayed
            assert UNSOLICITED not in got

            # nothing hidden on this page: the server's answer, byte for byte
            before = len(proxy.lines)
            await proxy.send(request("page-2", "tools/list", {"cursor": "raw-echo-page-2"}))
            await proxy.response("page-2")
            expected = {"jsonrpc": "2.0", "id": "page-2", "result": {"tools": [], "x-unknown": {"n": 2}}}
            assert proxy.lines[before] == json.dumps(expected).encode() + b"\n"

            # a hidden tool on this page: rewritten, but cursor and unknown fields kept
            listed = await proxy.call(request("page-1", "tools/list"))
            result = listed["result"]
            assert [t["name"] for t in result["tools"]] == ["echo"]
            assert result["tools"][0] == raw_echo.TOOLS[0]
            assert result["nextCursor"] == "raw-echo-page-2"
            assert result["x-unknown"] == {"n": 1.5}

            # a tools/list inside a batch (raw_echo answers batches with batches): filtered all the same
            await proxy.send([request("b-list", "tools/list"), request("b-ping", "ping")])
            batch = await proxy.expect(lambda m: isinstance(m, list) and m and m[0].get("id") == "b-list")
            assert [t["name"] for t in batch[0]["result"]["tools"]] == ["echo"]
            assert batch[1]["id"] == "b-ping"
            proxy.assert_all_json()


# --------------------------------------------------------------------------- exotic, through the proxy


class Recorder:
    """Client-side callbacks for server -> client traffic, recording what they saw."""

    def __init__(self) -> None:
        self.sampling: list[CreateMessageRequestParams] = []
        self.elicitations: list[ElicitRequestParams] = []
        self.roots_calls = 0
        self.logs: list[LoggingMessageNotificationParams] = []
        self.notifications: list[Any] = []

    async def sampling_callback(
        self, ctx: ClientRequestContext, params: CreateMessageRequestParams
    ) -> CreateMessageResult:
        self.sampling.append(params)
        prompt = params.messages[0].content
        assert isinstance(prompt, TextContent)
        return CreateMessageResult(role="assistant", content=TextContent(text=f"echo:{prompt.text}"), model="fake-llm")

    async def elicitation_callback(self, ctx: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        self.elicitations.append(params)
        return ElicitResult(action="accept", content={"confirm": True, "note": "ok"})

    async def list_roots_callback(self, ctx: ClientRequestContext) -> ListRootsResult:
        self.roots_calls += 1
        return ListRootsResult(roots=[Root(uri="file:///work/project", name="project")])

    async def logging_callback(self, params: LoggingMessageNotificationParams) -> None:
        self.logs.append(params)

    async def message_handler(self, message: Any) -> None:
        self.notifications.append(message)

    def kwargs(self) -> dict[str, Any]:
        return {
            "sampling_callback": self.sampling_callback,
            "elicitation_callback": self.elicitation_callback,
            "list_roots_callback": self.list_roots_callback,
            "logging_callback": self.logging_callback,
            "message_handler": self.message_handler,
            "log_level": "debug",
        }


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


def assert_denied(result: CallToolResult, rule: str) -> None:
    assert result.is_error is True, result
    assert result.meta is not None and result.meta["regoguard/decision"]["rule"] == rule, result
    assert repr(rule) in text_of(result)


async def _common_exotic_checks(client: Client, rec: Recorder) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    r = await client.call_tool("progress_task", {"steps": 3}, progress_callback=on_progress)
    assert text_of(r) == "progress_task finished 3 steps"
    assert seen == [(1, 3, "step 1/3"), (2, 3, "step 2/3"), (3, 3, "step 3/3")]

    r = await client.call_tool("always_fails", {})
    assert r.is_error is True and text_of(r) == "always_fails: deliberate failure"
    assert r.meta is None or "regoguard/decision" not in r.meta  # the server's own error, not a denial

    r = await client.call_tool("chatty", {"count": 4})
    assert text_of(r) == "chatty sent 4 log messages"
    assert [(m.level, m.data, m.logger) for m in rec.logs] == [
        ("debug", "chatty message 0", "exotic"),
        ("info", "chatty message 1", "exotic"),
        ("warning", "chatty message 2", "exotic"),
        ("error", "chatty message 3", "exotic"),
    ]

    # Resolve(...) tools: a mid-call request (legacy) or InputRequiredResult + a retried tools/call,
    # which the proxy decides again (auto)
    r = await client.call_tool("ask_llm_dual", {"prompt": "ping"})
    assert text_of(r) == "sampled (fake-llm): echo:ping"
    r = await client.call_tool("confirm_action_dual", {"action": "ship"})
    assert text_of(r) == 'elicitation accepted: {"confirm": true, "note": "ok"}'
    r = await client.call_tool("show_roots_dual", {})
    assert text_of(r) == 'roots: ["file:///work/project"]'

    assert_denied(await client.call_tool("sleepy", {"seconds": 0.01}), "sleepy/no naps")
    r = await client.call_tool("confirm_action", {"action": "rm -rf /"})
    assert_denied(r, "confirm_action/nothing destructive")

    resources = await client.list_resources()
    assert [str(r.uri) for r in resources.resources] == ["exotic://readme"]
    templates = await client.list_resource_templates()
    assert [t.uri_template for t in templates.resource_templates] == ["exotic://items/{item_id}"]
    rr = await client.read_resource("exotic://items/42")
    assert json.loads(rr.contents[0].text) == {"item_id": "42"}  # type: ignore[union-attr]
    prompt = await client.get_prompt("greeting", {"name": "Ada"})
    content = prompt.messages[0].content
    assert isinstance(content, TextContent) and content.text == "Please greet Ada warmly."


async def test_exotic_through_the_proxy_legacy(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, EXOTIC_POLICY)
    rec = Recorder()
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("exotic"), "legacy", **rec.kwargs()) as client:
            assert client.protocol_version == "2025-11-25"
            await _common_exotic_checks(client, rec)

            # direct server -> client requests in the middle of a call
            r = await client.call_tool("ask_llm", {"prompt": "what is 2+2?"})
            assert text_of(r) == "sampled (fake-llm): echo:what is 2+2?"
            assert rec.sampling[-1].max_tokens == 64
            r = await client.call_tool("confirm_action", {"action": "deploy"})
            assert text_of(r) == 'elicitation accepted: {"confirm": true, "note": "ok"}'
            assert rec.elicitations[-1].message == "Allow action 'deploy'?"
            assert rec.elicitations[-1].requested_schema["required"] == ["confirm"]
            r = await client.call_tool("show_roots", {})
            assert text_of(r) == 'roots: ["file:///work/project"]'

            # notifications/tools/list_changed reaches the client; the new tool is listed and callable
            before = {t.name for t in (await client.list_tools()).tools}
            r = await client.call_tool("add_dynamic_tool", {"name": "dyn_tool"})
            assert text_of(r) == "added tool dyn_tool"
            after = {t.name for t in (await client.list_tools(cache_mode="refresh")).tools}
            assert after == before | {"dyn_tool"}
            assert text_of(await client.call_tool("dyn_tool", {})) == "dyn_tool (dynamic) called"
    assert any(isinstance(n, ToolListChangedNotification) for n in rec.notifications)
    assert len(rec.sampling) == 2 and len(rec.elicitations) == 2 and rec.roots_calls == 2


async def test_exotic_through_the_proxy_auto(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, EXOTIC_POLICY)
    rec = Recorder()
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("exotic"), "auto", **rec.kwargs()) as client:
            assert client.protocol_version == "2026-07-28"
            await _common_exotic_checks(client, rec)
            # the modern protocol forbids server -> client JSON-RPC requests: the server's own refusal
            with pytest.raises(MCPError) as excinfo:
                await client.call_tool("ask_llm", {"prompt": "x"})
            assert excinfo.value.code == INVALID_REQUEST
    assert len(rec.sampling) == 1 and len(rec.elicitations) == 1 and rec.roots_calls == 1


@pytest.mark.parametrize("mode", MODES)
async def test_cancelled_call_then_recovers(mode: str, tmp_path: Path) -> None:
    """A client-side timeout sends notifications/cancelled through the proxy; the session stays usable."""
    policy = write_policy(tmp_path, ALLOW_ALL)
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("exotic"), mode) as client:
            with pytest.raises(MCPError):
                await client.call_tool("sleepy", {"seconds": 5}, read_timeout_seconds=0.3)
            r = await client.call_tool("sleepy", {"seconds": 0.01})
            assert text_of(r) == "slept 0.01"


def test_strict_loads_rejects_what_it_should() -> None:
    """The harness's own JSON check (used on every line the client reads)."""
    for bad in (b'{"a":NaN}', b'{"a":1e400}', b'{"a":1,"a":2}', b'{"a":Infinity}', b"\xff"):
        with pytest.raises(ValueError):
            strict_loads(bad)
    assert strict_loads(b'{"a":1.0e2}') == {"a": 100.0}
