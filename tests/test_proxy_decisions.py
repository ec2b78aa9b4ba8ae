"""End to end: the SDK's real client → ``regoguard run`` → the spy server (tests/servers/spy.py).

Allowed calls reach the server and return its result; denied calls get the proxy's tool result
(isError, the rule in the text, ``_meta["regoguard/decision"]``); hidden tools vanish from every page of
``tools/list``; ``validate: {required_args: true}`` reads the server's own inputSchema, fetched by the proxy
when the client never listed tools. The spy's log proves what reached upstream: exactly the allowed calls.

"legacy" is the initialize handshake (2025-11-25); "auto" is the SDK default, which the spy answers with
the stateless 2026-07-28 protocol.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolResult, TextContent, Tool

from proxy_harness import (
    MODES,
    SPY_ALL,
    TIMEOUT,
    RawProxy,
    denial_of,
    proxied_client,
    python_server,
    request,
    spy_calls,
    tools_call,
    write_policy,
)

POLICY = """\
description: proxy end-to-end tests against the spy server
default: allow
hide:
  - bulk_tool_010   # page 1
  - bulk_tool_060   # page 2
  - bulk_tool_110   # page 3
tools:
  delete_customer:
    rules:
      - name: no deletes
        action: deny
        on_deny: Deleting customers needs a human.
  create_charge:
    rules:
      - name: small charges
        conditions:
          - path: args.amount
            op: lte
            value: 100
        on_deny: Charges above 100 need a human.
  create_refund:
    rules:
      - validate:
          required_args: true
  bulk_tool_119:             # last page: allowed only if the proxy walked every page for the schema
    rules:
      - validate:
          required_args: true
"""

DEFAULT_DENY_POLICY = """\
default: deny
tools:
  echo:
    rules:
      - action: allow
  create_charge:
    rules:
      - name: small charges
        conditions:
          - path: args.amount
            op: lte
            value: 100
        on_deny: Charges above 100 need a human.
"""

HIDDEN = {"bulk_tool_010", "bulk_tool_060", "bulk_tool_110"}
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def text_of(result: CallToolResult) -> str:
    assert result.content, result
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


def assert_denied(result: CallToolResult, tool: str, rule: str, reason: str | None = None) -> dict[str, Any]:
    """A proxy denial: isError, a text naming the tool and the rule, and the decision in ``_meta``."""
    assert result.is_error is True, result
    text = text_of(result)
    assert text.startswith("[regoguard] "), text
    assert repr(tool) in text and repr(rule) in text, text
    assert result.meta is not None, result
    decision = result.meta["regoguard/decision"]
    assert decision["rule"] == rule, decision
    assert UUID_RE.match(decision["decision_id"]), decision
    assert isinstance(decision["reason"], str) and decision["reason"], decision
    if reason is not None:
        assert reason in decision["reason"], decision
        assert reason in text, text
    assert "spy/seq" not in result.meta, "a denied call must be answered by the proxy, not the server"
    return decision  # type: ignore[no-any-return]


async def list_pages(client: Client) -> tuple[list[Tool], list[int], list[str | None]]:
    tools: list[Tool] = []
    sizes: list[int] = []
    cursors: list[str | None] = []
    cursor: str | None = None
    for _ in range(20):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        sizes.append(len(page.tools))
        cursors.append(page.next_cursor)
        cursor = page.next_cursor
        if cursor is None:
            return tools, sizes, cursors
    raise AssertionError("tools/list pagination did not terminate")


@pytest.mark.parametrize("mode", MODES)
async def test_allowed_denied_hidden_and_validated_calls(mode: str, tmp_path: Path) -> None:
    """The client never lists tools here: validate rules make the proxy fetch every page itself."""
    log = tmp_path / "spy.jsonl"
    policy = write_policy(tmp_path, POLICY)
    decision_ids: list[str] = []
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("spy"), mode, env={"SPY_LOG": str(log)}) as client:
            assert client.server_info is not None and client.server_info.name == "spy"
            assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")

            r = await client.call_tool("echo", {"text": "hello"})
            assert not r.is_error and text_of(r) == "hello"
            assert r.meta is not None and r.meta["spy/seq"] == 1  # the server's own answer, relayed

            r = await client.call_tool("create_charge", {"amount": 50, "currency": "eur"})
            assert not r.is_error
            assert r.structured_content == {"charge_id": "ch_0002", "amount": 50, "currency": "eur"}

            r = await client.call_tool("create_charge", {"amount": 500, "currency": "eur"})
            d = assert_denied(r, "create_charge", "create_charge/small charges", "Charges above 100 need a human.")
            assert d["reason"] == "Charges above 100 need a human."
            decision_ids.append(d["decision_id"])

            r = await client.call_tool("delete_customer", {"customer_id": "cus_001"})
            d = assert_denied(r, "delete_customer", "delete_customer/no deletes", "Deleting customers needs a human.")
            decision_ids.append(d["decision_id"])

            for hidden in sorted(HIDDEN):
                r = await client.call_tool(hidden, {"x": "1"})
                decision_ids.append(assert_denied(r, hidden, "hide", "hidden")["decision_id"])

            # validate: {required_args: true} with the schema the proxy fetched (client never listed)
            r = await client.call_tool("create_refund", {})
            d = assert_denied(r, "create_refund", "create_refund/rules[0]", 'missing required argument "amount"')
            decision_ids.append(d["decision_id"])
            r = await client.call_tool("create_refund", {"amount": 7})
            assert not r.is_error and text_of(r) == "refunded 7"
            r = await client.call_tool("bulk_tool_119", {"x": "last page"})
            assert not r.is_error and text_of(r) == 'bulk_tool_119 called with {"x": "last page"}'

            # the same denial twice gets two decision ids
            r = await client.call_tool("delete_customer", {"customer_id": "cus_001"})
            decision_ids.append(assert_denied(r, "delete_customer", "delete_customer/no deletes")["decision_id"])

            r = await client.call_tool("list_customers", {})
            assert r.structured_content is not None and r.structured_content["customers"][0]["id"] == "cus_001"

    assert len(set(decision_ids)) == len(decision_ids)
    assert spy_calls(log) == [
        ("echo", {"text": "hello"}),
        ("create_charge", {"amount": 50, "currency": "eur"}),
        ("create_refund", {"amount": 7}),
        ("bulk_tool_119", {"x": "last page"}),
        ("list_customers", {}),
    ]


@pytest.mark.parametrize("mode", MODES)
async def test_hidden_tools_absent_from_every_page(mode: str, tmp_path: Path) -> None:
    log = tmp_path / "spy.jsonl"
    policy = write_policy(tmp_path, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("spy"), mode, env={"SPY_LOG": str(log)}) as client:
            tools, sizes, cursors = await list_pages(client)
            # 50 per page upstream, one hidden tool on each page; the server's cursors are kept
            assert sizes == [49, 49, 24]
            assert cursors[0] is not None and cursors[1] is not None and cursors[2] is None
            assert cursors[0] != cursors[1]
            names = [t.name for t in tools]
            assert names == [n for n in SPY_ALL if n not in HIDDEN]
            by_name = {t.name: t for t in tools}
            # the rest of each tool is relayed as the server sent it
            assert by_name["create_charge"].input_schema["required"] == ["amount", "currency"]
            assert by_name["delete_customer"].annotations is not None
            assert by_name["delete_customer"].annotations.destructive_hint is True
            assert by_name["create_charge"].output_schema is not None

            # a bad cursor is the server's error, relayed
            with pytest.raises(MCPError) as excinfo:
                await client.list_tools(cursor="not-a-cursor")
            assert excinfo.value.code == INVALID_PARAMS

            # the schema the client's own listing carried is the one validate uses
            r = await client.call_tool("create_refund", {"charge_id": "ch_1"})
            assert_denied(r, "create_refund", "create_refund/rules[0]", '"amount"')
            r = await client.call_tool("bulk_tool_060", {})
            assert_denied(r, "bulk_tool_060", "hide")
            r = await client.call_tool("bulk_tool_061", {"x": "y"})
            assert text_of(r) == 'bulk_tool_061 called with {"x": "y"}'
    assert spy_calls(log) == [("bulk_tool_061", {"x": "y"})]


async def test_hide_star_hides_everything_but_keeps_cursors(tmp_path: Path) -> None:
    log = tmp_path / "spy.jsonl"
    policy = write_policy(tmp_path, 'hide: ["*"]\n')
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("spy"), "legacy", env={"SPY_LOG": str(log)}) as client:
            tools, sizes, cursors = await list_pages(client)
            assert tools == [] and sizes == [0, 0, 0]
            assert cursors[0] is not None and cursors[1] is not None and cursors[2] is None
            for name in ("echo", "list_customers", "bulk_tool_000"):
                assert_denied(await client.call_tool(name, {}), name, "hide")
    assert spy_calls(log) == []


@pytest.mark.parametrize("mode", MODES)
async def test_default_deny(mode: str, tmp_path: Path) -> None:
    log = tmp_path / "spy.jsonl"
    policy = write_policy(tmp_path, DEFAULT_DENY_POLICY)
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("spy"), mode, env={"SPY_LOG": str(log)}) as client:
            for name, args in [
                ("list_customers", {}),
                ("delete_customer", {"customer_id": "c"}),
                ("bulk_tool_000", {"x": "1"}),
                ("no_such_tool", {}),
            ]:
                r = await client.call_tool(name, args)
                assert_denied(r, name, "default", "default: deny")

            r = await client.call_tool("echo", {"text": "allowed"})
            assert not r.is_error and text_of(r) == "allowed"
            r = await client.call_tool("create_charge", {"amount": 100, "currency": "usd"})
            assert not r.is_error
            r = await client.call_tool("create_charge", {"amount": 101, "currency": "usd"})
            assert_denied(r, "create_charge", "create_charge/small charges")
    assert spy_calls(log) == [("echo", {"text": "allowed"}), ("create_charge", {"amount": 100, "currency": "usd"})]


async def test_stateless_denial_has_result_type_complete(tmp_path: Path) -> None:
    """On the wire: a 2026-07-28 request (``_meta`` carries the protocol version) gets ``resultType:
    "complete"`` on a denial; a handshake-era one does not (the field does not exist there)."""
    log = tmp_path / "spy.jsonl"
    policy = write_policy(tmp_path, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("spy"), env={"SPY_LOG": str(log)}) as proxy:
            answer = await proxy.call(tools_call(1, "delete_customer", {"customer_id": "c"}, stateless=True))
            assert answer["jsonrpc"] == "2.0" and answer["id"] == 1
            denial_of(answer)
            assert answer["result"]["resultType"] == "complete"

            answer = await proxy.call(tools_call(2, "echo", {"text": "stateless"}, stateless=True))
            assert answer["result"]["content"][0]["text"] == "stateless"

            # validate fetches the schema with the trigger's envelope, so a stateless server answers it
            answer = await proxy.call(tools_call(3, "create_refund", {}, stateless=True))
            assert denial_of(answer)["rule"] == "create_refund/rules[0]"
            assert answer["result"]["resultType"] == "complete"
            answer = await proxy.call(tools_call(4, "create_refund", {"amount": 1}, stateless=True))
            assert answer["result"]["content"][0]["text"] == "refunded 1"
            proxy.assert_all_json()

        async with RawProxy.start(policy, python_server("spy"), env={"SPY_LOG": str(log)}) as proxy:
            await proxy.initialize()
            answer = await proxy.call(tools_call("legacy-1", "delete_customer", {"customer_id": "c"}))
            assert answer["id"] == "legacy-1"
            denial_of(answer)
            assert "resultType" not in answer["result"]
            answer = await proxy.call(request("legacy-2", "tools/call", {"name": "bulk_tool_110"}))
            assert denial_of(answer)["rule"] == "hide"
            proxy.assert_all_json()
    assert spy_calls(log) == [("echo", {"text": "stateless"}), ("create_refund", {"amount": 1})]


async def test_decision_ids_are_fresh_per_session(tmp_path: Path) -> None:
    """Two proxies, same denial: different decision ids (they name one decision in the decision log)."""
    policy = write_policy(tmp_path, POLICY)
    ids = []
    with anyio.fail_after(TIMEOUT):
        for _ in range(2):
            async with RawProxy.start(policy, python_server("raw_echo")) as proxy:
                answer = await proxy.call(tools_call(1, "delete_customer", {"customer_id": "c"}))
                ids.append(denial_of(answer)["decision_id"])
    assert ids[0] != ids[1]
    assert all(uuid.UUID(i) for i in ids)


async def test_hide_unlisted_leaves_only_what_can_be_called(tmp_path: Path) -> None:
    """``hide_unlisted: true`` beside ``default: deny``: tools/list holds exactly the tools a call would not
    be denied for by default deny; a call to one left out is still denied."""
    policy = write_policy(tmp_path, 'version: "1"\ndefault: deny\nhide_unlisted: true\nhide: [list_customers]\n'
                                    'tools:\n  echo:\n    rules: []\n  "bulk_tool_00*":\n    rules: []\n'
                                    '  list_customers:\n    rules: []\n')
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("spy"), "legacy", options=("--state", "memory")) as client:
            names: list[str] = []
            cursor = None
            while True:
                page = await client.list_tools(cursor=cursor) if cursor else await client.list_tools()
                names += [t.name for t in page.tools]
                cursor = page.next_cursor
                if not cursor:
                    break
            assert sorted(names) == ["bulk_tool_000", "bulk_tool_001", "bulk_tool_002", "bulk_tool_003",
                                     "bulk_tool_004", "bulk_tool_005", "bulk_tool_006", "bulk_tool_007",
                                     "bulk_tool_008", "bulk_tool_009", "echo"]
            denied = await client.call_tool("create_charge", {"amount": 1, "currency": "usd"})
            assert denied.is_error
