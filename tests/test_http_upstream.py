"""Remote MCP servers behind regoguard: ``run --upstream URL`` (a client on stdio) and ``serve --upstream
URL`` (clients over HTTP), in front of real HTTP servers:

- npm ``@modelcontextprotocol/server-everything`` in its ``streamableHttp`` and ``sse`` modes (TypeScript SDK);
- ``tests/servers/spy.py --http`` (the Python SDK's Streamable HTTP server, SSE or JSON answers), which logs
  every call it receives, so a denied call is shown never to arrive.

The client is always the SDK's own, in both protocol modes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest
from mcp import StdioServerParameters
from mcp.client import Client
from mcp.types import CallToolResult, TextContent

from http_harness import everything_available, everything_http, serving, spy_http
from proxy_harness import MODES, READ_TIMEOUT, TIMEOUT, spy_tools, write_policy

EVERYTHING_POLICY = """\
version: "1"
default: allow
hide: [toggle-simulated-logging]
tools:
  get-sum:
    rules:
      - name: no sums
        action: deny
        on_deny: sums are not allowed
"""

SPY_POLICY = """\
version: "1"
default: allow
hide: [list_customers]
tools:
  delete_customer:
    rules:
      - name: never delete
        action: deny
        on_deny: deleting customers is not allowed
  echo:
    rules:
      - name: three echoes
        rate_limit: 3/minute
"""


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


def run_upstream(policy: Path, url: str, mode: str, *options: str) -> Client:
    argv = [sys.executable, "-m", "regoguard", "run", "-c", str(policy), "--state", "memory", *options,
            "--upstream", url]
    return Client(StdioServerParameters(command=argv[0], args=argv[1:]), mode=mode, read_timeout_seconds=READ_TIMEOUT)


async def check_everything(client: Client) -> None:
    names = {t.name for t in (await client.list_tools()).tools}
    assert "echo" in names and "get-sum" in names
    assert "toggle-simulated-logging" not in names  # hidden: gone from the list
    result = await client.call_tool("echo", {"message": "through the proxy"})
    assert not result.is_error and text_of(result) == "Echo: through the proxy"
    denied = await client.call_tool("get-sum", {"a": 1, "b": 2})
    assert denied.is_error and "no sums" in text_of(denied)
    hidden = await client.call_tool("toggle-simulated-logging", {})
    assert hidden.is_error and "toggle-simulated-logging" in text_of(hidden)


@pytest.fixture
def everything() -> None:
    reason = everything_available()
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("server_mode, transport", [("streamableHttp", "auto"), ("streamableHttp", "streamable-http"),
                                                    ("sse", "auto"), ("sse", "sse")])
async def test_run_upstream_everything(everything: None, server_mode: str, transport: str, mode: str,
                                       tmp_path: Path) -> None:
    policy = write_policy(tmp_path, EVERYTHING_POLICY)
    with everything_http(server_mode, tmp_path) as url, anyio.fail_after(TIMEOUT):
        async with run_upstream(policy, url, mode, "--upstream-transport", transport) as client:
            assert client.server_info is not None and client.server_info.name == "mcp-servers/everything"
            await check_everything(client)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("server_mode", ["streamableHttp", "sse"])
async def test_serve_upstream_everything(everything: None, server_mode: str, mode: str, tmp_path: Path) -> None:
    policy = write_policy(tmp_path, EVERYTHING_POLICY)
    with everything_http(server_mode, tmp_path) as url, serving(policy, upstream=url) as gateway:
        with anyio.fail_after(TIMEOUT):
            async with Client(gateway.url, mode=mode, read_timeout_seconds=READ_TIMEOUT) as client:
                await check_everything(client)


@pytest.mark.parametrize("json_response", [False, True], ids=["sse-answers", "json-answers"])
@pytest.mark.parametrize("front", ["run", "serve"])
@pytest.mark.parametrize("mode", MODES)
async def test_sdk_http_server(front: str, json_response: bool, mode: str, tmp_path: Path) -> None:
    """The Python SDK's HTTP server: a denied or hidden call never reaches it; limits hold per session."""
    policy = write_policy(tmp_path, SPY_POLICY)
    log = tmp_path / "spy.jsonl"
    with spy_http(log, json_response=json_response) as url, anyio.fail_after(TIMEOUT):
        if front == "run":
            client = run_upstream(policy, url, mode)
            async with client:
                await _check_spy(client)
        else:
            with serving(policy, upstream=url) as gateway:
                async with Client(gateway.url, mode=mode, read_timeout_seconds=READ_TIMEOUT) as client:
                    await _check_spy(client)
    assert spy_tools(log) == ["echo"] * 3 + ["create_charge"]


async def _check_spy(client: Client) -> None:
    names = {t.name for t in (await client.list_tools()).tools}
    assert "echo" in names and "list_customers" not in names
    for n in range(3):
        assert text_of(await client.call_tool("echo", {"text": f"hello {n}"})) == f"hello {n}"
    limited = await client.call_tool("echo", {"text": "one too many"})
    assert limited.is_error and "three echoes" in text_of(limited)
    denied = await client.call_tool("delete_customer", {"customer_id": "cus_001"})
    assert denied.is_error and "never delete" in text_of(denied)
    hidden = await client.call_tool("list_customers", {})
    assert hidden.is_error
    charged = await client.call_tool("create_charge", {"amount": 5, "currency": "usd"})
    assert not charged.is_error and "charged 5 usd" in text_of(charged)


async def test_unreachable_upstream_answers_with_an_error(tmp_path: Path) -> None:
    """Nothing listens at the URL: the client's first request gets a JSON-RPC error, not a hang."""
    from conftest import free_port

    policy = write_policy(tmp_path, SPY_POLICY)
    url = f"http://127.0.0.1:{free_port()}/mcp"
    with anyio.fail_after(TIMEOUT):
        with pytest.raises(BaseException) as raised:
            async with run_upstream(policy, url, "legacy"):
                pass
    assert any("cannot reach the MCP server" in str(exc) for exc in _leaves(raised.value))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def test_header_values_come_from_the_environment(tmp_path: Path) -> None:
    """``${VAR}`` in --header is read from the environment; an unset one stops the proxy before it starts."""
    policy = write_policy(tmp_path, SPY_POLICY)
    argv = [sys.executable, "-m", "regoguard", "run", "-c", str(policy), "--state", "memory",
            "--upstream", "http://127.0.0.1:9/mcp", "--header", "Authorization: Bearer ${REGOGUARD_TEST_UNSET_TOKEN}"]
    result = await anyio.run_process(argv, check=False)
    assert result.returncode == 2
    assert b"REGOGUARD_TEST_UNSET_TOKEN" in result.stderr and b"not set" in result.stderr


@pytest.mark.parametrize("server", ["sdk-streamable-http", "everything-sse"])
async def test_scan_upstream(server: str, tmp_path: Path) -> None:
    """``scan --upstream URL`` lists a remote server's tools into a starter policy that passes ``check``."""
    out = tmp_path / "starter.yaml"
    if server == "everything-sse":
        if (reason := everything_available()) is not None:
            pytest.skip(reason)
        context = everything_http("sse", tmp_path)
        expected = "get-sum"
    else:
        context = spy_http(tmp_path / "spy.jsonl")
        expected = "delete_customer"
    with context as url, anyio.fail_after(TIMEOUT):
        scan = await anyio.run_process([sys.executable, "-m", "regoguard", "scan", "--upstream", url, "-o", str(out)],
                                       check=False)
        assert scan.returncode == 0, scan.stderr.decode()
    assert expected in out.read_text()
    check = await anyio.run_process([sys.executable, "-m", "regoguard", "check", str(out)], check=False)
    assert check.returncode == 0, check.stderr.decode()
