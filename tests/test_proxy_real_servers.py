"""Real MCP servers behind the proxy: ``mcp-server-time`` from PyPI (Python SDK) and the reference
``@modelcontextprotocol/server-everything`` from npm (TypeScript SDK).

Install them with ``pip install mcp-server-time`` and ``npm install --prefix tests/node``; a test skips,
saying so, only when its server (or node) is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import ClientRequestContext
from mcp.types import (
    CallToolResult,
    CreateMessageRequestParams,
    CreateMessageResult,
    TextContent,
)

from proxy_harness import EVERYTHING_JS, MODES, TIMEOUT, proxied_client, write_policy

# --------------------------------------------------------------------------- mcp-server-time

TIME_POLICY = """\
default: deny
tools:
  get_current_time:
    rules:
      - name: utc or europe
        conditions:
          - path: args.timezone
            op: regex
            value: "^(UTC|Etc/UTC|Europe/[A-Za-z_]+)$"
        on_deny: Only UTC and European time zones.
      - validate:
          required_args: true
  convert_time:
    rules:
      - name: no conversions
        action: deny
        on_deny: Time conversion is disabled here.
"""


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


def decision_of(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error is True, result
    assert result.meta is not None, result
    decision = result.meta["regoguard/decision"]
    assert decision["rule"] in text_of(result)
    return decision  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", MODES)
async def test_mcp_server_time(mode: str, tmp_path: Path) -> None:
    if importlib.util.find_spec("mcp_server_time") is None:
        pytest.skip("mcp-server-time is not installed (pip install mcp-server-time)")
    policy = write_policy(tmp_path, TIME_POLICY)
    server = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, server, mode) as client:
            assert client.server_info is not None and client.server_info.name == "mcp-time"
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert {"get_current_time", "convert_time"} <= set(tools)
            assert tools["get_current_time"].input_schema["required"] == ["timezone"]

            r = await client.call_tool("get_current_time", {"timezone": "UTC"})
            assert not r.is_error, r
            now = json.loads(text_of(r))
            assert now["timezone"] == "UTC" and now["datetime"].endswith("+00:00")

            r = await client.call_tool("get_current_time", {"timezone": "Asia/Tokyo"})
            assert decision_of(r)["rule"] == "get_current_time/utc or europe"

            r = await client.call_tool("get_current_time", {})  # validate: the server's schema requires it
            assert decision_of(r)["rule"] in ("get_current_time/utc or europe", "get_current_time/rules[1]")

            r = await client.call_tool(
                "convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Europe/Paris"}
            )
            d = decision_of(r)
            assert d["rule"] == "convert_time/no conversions"
            assert d["reason"] == "Time conversion is disabled here."


# --------------------------------------------------------------------------- server-everything (npm)

EVERYTHING_POLICY = """\
default: allow
hide: [get-tiny-image]
tools:
  get-sum:
    rules:
      - name: small sums
        conditions:
          - path: args.a
            op: lte
            value: 10
        on_deny: Only small numbers.
  gzip-file-as-resource:
    rules:
      - name: no downloads
        action: deny
        on_deny: No fetching files through the proxy.
  echo:
    rules:
      - validate:
          required_args: true
"""


def everything_server() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not EVERYTHING_JS.exists():
        pytest.skip("@modelcontextprotocol/server-everything is not installed (npm install --prefix tests/node)")
    return [node, str(EVERYTHING_JS), "stdio"]


class Callbacks:
    def __init__(self) -> None:
        self.sampling: list[CreateMessageRequestParams] = []

    async def sampling_callback(
        self, ctx: ClientRequestContext, params: CreateMessageRequestParams
    ) -> CreateMessageResult:
        self.sampling.append(params)
        return CreateMessageResult(role="assistant", content=TextContent(text="sampled through regoguard"),
                                   model="fake-llm")


@pytest.mark.parametrize("mode", MODES)
async def test_server_everything(mode: str, tmp_path: Path) -> None:
    server = everything_server()
    policy = write_policy(tmp_path, EVERYTHING_POLICY)
    cb = Callbacks()
    env = {"REGOGUARD_TEST_X": "seen-by-node"}
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, server, mode, env=env, sampling_callback=cb.sampling_callback) as client:
            assert client.server_info is not None and "everything" in client.server_info.name
            # the TypeScript SDK speaks the handshake era: auto falls back to initialize
            assert client.protocol_version == "2025-11-25"

            # validate before any listing: the proxy fetches the TypeScript server's schemas itself
            r = await client.call_tool("echo", {})
            assert decision_of(r)["rule"] == "echo/rules[0]"
            assert '"message"' in decision_of(r)["reason"]

            listed = await client.list_tools()
            names = {t.name for t in listed.tools}
            assert {"echo", "get-sum", "get-env", "trigger-long-running-operation", "trigger-sampling-request"} <= names
            assert "get-tiny-image" not in names

            r = await client.call_tool("echo", {"message": "hello through the proxy"})
            assert not r.is_error and text_of(r) == "Echo: hello through the proxy"

            r = await client.call_tool("get-sum", {"a": 2, "b": 3})
            assert text_of(r) == "The sum of 2 and 3 is 5."
            r = await client.call_tool("get-sum", {"a": 200, "b": 3})
            assert decision_of(r)["rule"] == "get-sum/small sums"
            r = await client.call_tool("gzip-file-as-resource", {})
            assert decision_of(r)["reason"] == "No fetching files through the proxy."
            r = await client.call_tool("get-tiny-image", {})
            assert decision_of(r)["rule"] == "hide"

            # the server inherits the proxy's environment
            r = await client.call_tool("get-env", {})
            assert json.loads(text_of(r))["REGOGUARD_TEST_X"] == "seen-by-node"

            # sampling: a server -> client request in the middle of a call, relayed both ways
            r = await client.call_tool("trigger-sampling-request", {"prompt": "hi", "maxTokens": 7})
            assert "sampled through regoguard" in text_of(r)
            assert len(cb.sampling) == 1 and cb.sampling[0].max_tokens == 7

            # progress notifications
            seen: list[tuple[float, float | None]] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen.append((progress, total))

            r = await client.call_tool("trigger-long-running-operation", {"duration": 0.3, "steps": 3},
                                       progress_callback=on_progress)
            assert "Long running operation completed" in text_of(r)
            assert seen == [(1, 3), (2, 3), (3, 3)]

            resources = await client.list_resources()
            assert resources.resources, resources
            first = resources.resources[0]
            read = await client.read_resource(str(first.uri))
            assert read.contents
            templates = await client.list_resource_templates()
            assert templates.resource_templates

            prompts = await client.list_prompts()
            assert "simple-prompt" in {p.name for p in prompts.prompts}
            got = await client.get_prompt("simple-prompt")
            assert got.messages
