"""Smoke tests for the test MCP servers in tests/servers/, driven DIRECTLY (no proxy).

Each test spawns one server over stdio with the SDK's real client. "legacy" mode is
the initialize handshake (protocol 2025-11-25, which is what stdio MCP hosts
speak); "auto" mode is the SDK client's default: it probes `server/discover` and
these SDK servers answer with the stateless 2026-07-28 protocol.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client import Client, ClientRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    REQUEST_TIMEOUT,
    CallToolResult,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    ListRootsResult,
    LoggingMessageNotificationParams,
    Root,
    TextContent,
    Tool,
    ToolListChangedNotification,
)

SERVERS = Path(__file__).parent / "servers"
TIMEOUT = 20
MODES = ["legacy", "auto"]

LOOKING_GLASS_REQUIRED = {
    "session_start": ["url"],
    "session_stop": ["session_id"],
    "page_screenshot": ["session_id"],
    "page_click": ["session_id", "selector"],
    "page_eval_js": ["session_id", "script"],
    "session_list": [],
    "browser_clear_storage": [],
}
SPY_CORE = ["create_charge", "create_refund", "delete_customer", "list_customers", "echo"]
SPY_BULK = [f"bulk_tool_{i:03d}" for i in range(120)]


def server_params(name: str, env: dict[str, str] | None = None) -> StdioServerParameters:
    # stdio_client passes only HOME/PATH/... plus `env` to the child, so SPY_LOG must go here.
    return StdioServerParameters(command=sys.executable, args=[str(SERVERS / f"{name}.py")], env=env)


@asynccontextmanager
async def connect(
    name: str, mode: str = "legacy", env: dict[str, str] | None = None, **kw: Any
) -> AsyncIterator[Client]:
    async with Client(server_params(name, env), mode=mode, **kw) as client:
        yield client


def text_of(result: CallToolResult) -> str:
    assert result.content, result
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


async def list_all_tools(client: Client) -> tuple[list[Tool], list[int]]:
    tools: list[Tool] = []
    page_sizes: list[int] = []
    cursor: str | None = None
    for _ in range(20):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        page_sizes.append(len(page.tools))
        cursor = page.next_cursor
        if cursor is None:
            return tools, page_sizes
    raise AssertionError("tools/list pagination did not terminate")


def read_spy_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- looking_glass


@pytest.mark.parametrize("mode", MODES)
async def test_looking_glass_lists_tools(mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with connect("looking_glass", mode) as client:
            assert client.server_info is not None and client.server_info.name == "looking-glass"
            expected_version = "2025-11-25" if mode == "legacy" else "2026-07-28"
            assert client.protocol_version == expected_version
            result = await client.list_tools()
            assert result.next_cursor is None
            tools = {t.name: t for t in result.tools}
            assert set(tools) == set(LOOKING_GLASS_REQUIRED)
            for name, required in LOOKING_GLASS_REQUIRED.items():
                assert sorted(tools[name].input_schema.get("required", [])) == sorted(required), name
            assert "viewport" in tools["session_start"].input_schema["properties"]
            assert tools["page_screenshot"].annotations is not None
            assert tools["page_screenshot"].annotations.read_only_hint is True
            assert tools["page_eval_js"].annotations is not None
            assert tools["page_eval_js"].annotations.destructive_hint is True


@pytest.mark.parametrize("mode", MODES)
async def test_looking_glass_calls(mode: str) -> None:
    url = "https://example.com/"
    sid = "lg-" + hashlib.sha256(url.encode()).hexdigest()[:12]
    with anyio.fail_after(TIMEOUT):
        async with connect("looking_glass", mode) as client:
            r = await client.call_tool(
                "session_start", {"url": url, "viewport": {"width": 800, "height": 600}}
            )
            assert not r.is_error
            assert text_of(r) == (
                'session_start called with {"url": "https://example.com/", '
                '"viewport": {"height": 600, "width": 800}}'
            )
            assert r.structured_content["session_id"] == sid

            r = await client.call_tool("page_click", {"session_id": sid, "selector": "#go"})
            assert text_of(r) == f'page_click called with {{"selector": "#go", "session_id": "{sid}"}}'

            r = await client.call_tool("page_eval_js", {"session_id": sid, "script": "1+1"})
            assert text_of(r) == f'page_eval_js called with {{"script": "1+1", "session_id": "{sid}"}}'

            r = await client.call_tool("page_screenshot", {"session_id": sid})
            assert text_of(r).startswith("page_screenshot called with")

            r = await client.call_tool("session_list", {})
            assert text_of(r) == "session_list called with {}"
            assert r.structured_content["sessions"] == [{"session_id": sid, "url": url}]

            r = await client.call_tool("session_stop", {"session_id": sid})
            assert r.structured_content["stopped"] is True

            # MCPServer reports bad arguments and unknown tools as isError results, not JSON-RPC errors.
            r = await client.call_tool("page_click", {"session_id": sid})
            assert r.is_error and "selector" in text_of(r)
            r = await client.call_tool("no_such_tool", {})
            assert r.is_error and "Unknown tool" in text_of(r)


async def test_looking_glass_with_raw_client_session() -> None:
    """The lower-level path: stdio_client streams + ClientSession + explicit initialize()."""
    with anyio.fail_after(TIMEOUT):
        async with (
            stdio_client(server_params("looking_glass")) as (read, write),
            ClientSession(read, write) as session,
        ):
            init = await session.initialize()
            assert init.protocol_version == "2025-11-25"
            assert init.server_info.name == "looking-glass"
            tools = await session.list_tools()
            assert len(tools.tools) == len(LOOKING_GLASS_REQUIRED)
            r = await session.call_tool("session_list", {})
            assert text_of(r) == "session_list called with {}"


# --------------------------------------------------------------------------- spy


@pytest.mark.parametrize("mode", MODES)
async def test_spy_lists_all_pages(mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with connect("spy", mode) as client:
            tools, page_sizes = await list_all_tools(client)
            assert page_sizes == [50, 50, 25]
            names = [t.name for t in tools]
            assert names == SPY_CORE + SPY_BULK
            by_name = {t.name: t for t in tools}
            assert by_name["create_charge"].input_schema["required"] == ["amount", "currency"]
            assert by_name["create_refund"].input_schema["required"] == ["amount"]
            assert by_name["delete_customer"].input_schema["required"] == ["customer_id"]
            assert by_name["delete_customer"].annotations.destructive_hint is True
            assert by_name["list_customers"].annotations.read_only_hint is True

            with pytest.raises(MCPError) as excinfo:
                await client.list_tools(cursor="not-a-cursor")
            assert excinfo.value.code == INVALID_PARAMS


@pytest.mark.parametrize("mode", MODES)
async def test_spy_records_every_call(mode: str, tmp_path: Path) -> None:
    log = tmp_path / "spy.jsonl"
    with anyio.fail_after(TIMEOUT):
        async with connect("spy", mode, env={"SPY_LOG": str(log)}) as client:
            await list_all_tools(client)
            assert read_spy_log(log) == []  # listing is not a call

            r = await client.call_tool("create_charge", {"amount": 12.5, "currency": "eur"})
            assert not r.is_error
            assert r.structured_content == {"charge_id": "ch_0001", "amount": 12.5, "currency": "eur"}
            assert r.meta is not None and r.meta["spy/seq"] == 1

            r = await client.call_tool("echo", {"text": "hello"})
            assert text_of(r) == "hello"

            r = await client.call_tool("list_customers", {})
            assert r.structured_content["customers"][0]["id"] == "cus_001"

            r = await client.call_tool("delete_customer", {"customer_id": "cus_9"})
            assert text_of(r) == "deleted customer cus_9"

            r = await client.call_tool("bulk_tool_119", {"x": "last"})
            assert text_of(r) == 'bulk_tool_119 called with {"x": "last"}'

            r = await client.call_tool("create_refund", {})
            assert r.is_error and "amount" in text_of(r)

            with pytest.raises(MCPError) as excinfo:  # unknown tool: JSON-RPC error, but still recorded
                await client.call_tool("no_such_tool", {"a": 1})
            assert excinfo.value.code == INVALID_PARAMS

    assert read_spy_log(log) == [
        {"tool": "create_charge", "arguments": {"amount": 12.5, "currency": "eur"}},
        {"tool": "echo", "arguments": {"text": "hello"}},
        {"tool": "list_customers", "arguments": {}},
        {"tool": "delete_customer", "arguments": {"customer_id": "cus_9"}},
        {"tool": "bulk_tool_119", "arguments": {"x": "last"}},
        {"tool": "create_refund", "arguments": {}},
        {"tool": "no_such_tool", "arguments": {"a": 1}},
    ]
    assert log.read_text().startswith('{"tool": "create_charge", "arguments": ')


# --------------------------------------------------------------------------- exotic


class Recorder:
    """Client-side callbacks for server->client traffic, recording what they saw."""

    def __init__(self, elicit_action: str = "accept") -> None:
        self.elicit_action = elicit_action
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
        return CreateMessageResult(
            role="assistant", content=TextContent(text=f"echo:{prompt.text}"), model="fake-llm"
        )

    async def elicitation_callback(
        self, ctx: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult:
        self.elicitations.append(params)
        if self.elicit_action == "accept":
            return ElicitResult(action="accept", content={"confirm": True, "note": "ok"})
        return ElicitResult(action=self.elicit_action)  # type: ignore[arg-type]

    async def list_roots_callback(self, ctx: ClientRequestContext) -> ListRootsResult:
        self.roots_calls += 1
        return ListRootsResult(roots=[Root(uri="file:///work/project", name="project")])

    async def logging_callback(self, params: LoggingMessageNotificationParams) -> None:
        self.logs.append(params)

    async def message_handler(self, message: Any) -> None:
        self.notifications.append(message)

    def client_kwargs(self) -> dict[str, Any]:
        return {
            "sampling_callback": self.sampling_callback,
            "elicitation_callback": self.elicitation_callback,
            "list_roots_callback": self.list_roots_callback,
            "logging_callback": self.logging_callback,
            "message_handler": self.message_handler,
            "log_level": "debug",  # 2026-07-28 logging is per-request opt-in; ignored in legacy mode
        }


@pytest.mark.parametrize("mode", MODES)
async def test_exotic_progress(mode: str) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    with anyio.fail_after(TIMEOUT):
        async with connect("exotic", mode) as client:
            r = await client.call_tool("progress_task", {"steps": 3}, progress_callback=on_progress)
            assert text_of(r) == "progress_task finished 3 steps"
    assert seen == [(1, 3, "step 1/3"), (2, 3, "step 2/3"), (3, 3, "step 3/3")]


async def test_exotic_server_to_client_requests_legacy() -> None:
    rec = Recorder()
    with anyio.fail_after(TIMEOUT):
        async with connect("exotic", "legacy", **rec.client_kwargs()) as client:
            r = await client.call_tool("ask_llm", {"prompt": "what is 2+2?"})
            assert text_of(r) == "sampled (fake-llm): echo:what is 2+2?"
            assert rec.sampling[0].max_tokens == 64

            r = await client.call_tool("confirm_action", {"action": "deploy"})
            assert text_of(r) == 'elicitation accepted: {"confirm": true, "note": "ok"}'
            assert rec.elicitations[0].message == "Allow action 'deploy'?"
            assert rec.elicitations[0].requested_schema["required"] == ["confirm"]

            r = await client.call_tool("show_roots", {})
            assert text_of(r) == 'roots: ["file:///work/project"]'
            assert rec.roots_calls == 1


async def test_exotic_elicitation_decline_legacy() -> None:
    rec = Recorder(elicit_action="decline")
    with anyio.fail_after(TIMEOUT):
        async with connect("exotic", "legacy", **rec.client_kwargs()) as client:
            r = await client.call_tool("confirm_action", {"action": "rm -rf"})
            assert text_of(r) == "elicitation decline"


async def test_exotic_without_client_callbacks_legacy() -> None:
    """No sampling callback: the SDK client answers sampling/createMessage with a JSON-RPC error
    (-32600 "Sampling not supported"), which MCPServer re-raises as the tools/call error."""
    with anyio.fail_after(TIMEOUT):
        async with connect("exotic", "legacy") as client:
            with pytest.raises(MCPError) as excinfo:
                await client.call_tool("ask_llm", {"prompt": "hi"})
            assert excinfo.value.code == INVALID_REQUEST
            assert "Sampling not supported" in str(excinfo.value)
            r = await client.call_tool("always_fails", {})  # the connection is still usable
            assert r.is_error


@pytest.mark.parametrize("mode", MODES)
async def test_exotic_resolve_variants(mode: str) -> None:
    """Resolve(...) tools: JSON-RPC server->client request (legacy) or InputRequiredResult + retry (auto)."""
    rec = Recorder()
    with anyio.fail_after(TIMEOUT):
        async with connect("exotic", mode, **rec.client_kwargs()) as client:
            r = await client.call_tool("ask_llm_dual", {"prompt": "ping"})
            assert text_of(r) == "sampled (fake-llm): echo:ping"
            r = await client.call_tool("confirm_action_dual", {"action": "ship"})
            assert text_of(r) == 'elicitation accepted: {"confirm": true, "note": "ok"}'
            r = await client.call_tool("show_roots_dual", {})
            assert text_of(r) == 'roots: ["file:///work/project"]'
    assert len(rec.sampling) == 1 and len(rec.elicitations) == 1 and rec.roots_calls == 1


async def test_exotic_direct_requests_refused_on_modern_protocol() -> None:
    """At 2026-07-28 a server may not send JSON-RPC requests to the client: the call fails."""
    rec = Recorder()
    with anyio.fail_after(TIMEOUT):
        async with connect("exotic", "auto", **rec.client_kwargs()) as client:
            assert client.protocol_version == "2026-07-28"
            for name, args in [
                ("ask_llm", {"prompt": "x"}),
                ("confirm_action", {"action": "x"}),
                ("show_roots", {}),
            ]:
                with pytest.raises(MCPError) as excinfo:
                    await client.call_tool(name, args)
                assert excinfo.value.code == INVALID_REQUEST
    assert rec.sampling == [] and rec.elicitations == [] and rec.roots_calls == 0


@pytest.mark.parametrize("mode", MODES)
async def test_exotic_is_error_and_logging(mode: str) -> None:
    rec = Recorder()
    with anyio.fail_after(TIMEOUT):
        async with connect("exotic", mode, **rec.client_kwargs()) as client:
            r = await client.call_tool("always_fails", {})
            assert r.is_error is True
            assert text_of(r) == "always_fails: deliberate failure"

            r = await client.call_tool("chatty", {"count": 4})
            assert text_of(r) == "chatty sent 4 log messages"
    assert [(m.level, m.data, m.logger) for m in rec.logs] == [
        ("debug", "chatty message 0", "exotic"),
        ("info", "chatty message 1", "exotic"),
        ("warning", "chatty message 2", "exotic"),
        ("error", "chatty message 3", "exotic"),
    ]


async def test_exotic_tool_list_changed_legacy() -> None:
    rec = Recorder()
    with anyio.fail_after(TIMEOUT):
        async with connect("exotic", "legacy", **rec.client_kwargs()) as client:
            before = {t.name for t in (await client.list_tools()).tools}
            assert "dyn_tool" not in before
            r = await client.call_tool("add_dynamic_tool", {"name": "dyn_tool"})
            assert text_of(r) == "added tool dyn_tool"
            after = {t.name for t in (await client.list_tools(cache_mode="refresh")).tools}
            assert after == before | {"dyn_tool"}
            r = await client.call_tool("dyn_tool", {})
            assert text_of(r) == "dyn_tool (dynamic) called"
    assert any(isinstance(n, ToolListChangedNotification) for n in rec.notifications)


@pytest.mark.parametrize("mode", MODES)
async def test_exotic_resources_and_prompts(mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with connect("exotic", mode) as client:
            resources = await client.list_resources()
            assert [str(r.uri) for r in resources.resources] == ["exotic://readme"]
            templates = await client.list_resource_templates()
            assert [t.uri_template for t in templates.resource_templates] == ["exotic://items/{item_id}"]

            rr = await client.read_resource("exotic://readme")
            assert rr.contents[0].text == "exotic server readme"
            rr = await client.read_resource("exotic://items/42")
            assert json.loads(rr.contents[0].text) == {"item_id": "42"}

            prompts = await client.list_prompts()
            assert [p.name for p in prompts.prompts] == ["greeting"]
            prompt = await client.get_prompt("greeting", {"name": "Ada"})
            content = prompt.messages[0].content
            assert isinstance(content, TextContent) and content.text == "Please greet Ada warmly."


async def test_exotic_request_timeout_then_recovers() -> None:
    with anyio.fail_after(TIMEOUT):
        async with connect("exotic", "legacy") as client:
            # The client gives up with -32001 and sends notifications/cancelled; the server never answers id.
            with pytest.raises(MCPError) as excinfo:
                await client.call_tool("sleepy", {"seconds": 5}, read_timeout_seconds=0.3)
            assert excinfo.value.code == REQUEST_TIMEOUT
            r = await client.call_tool("sleepy", {"seconds": 0.01})
            assert text_of(r) == "slept 0.01"
