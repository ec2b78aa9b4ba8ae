"""Spy MCP server (stdio): records every tools/call it receives.

Each tools/call that reaches this process is appended, before anything else
happens, as one JSON line ``{"tool": <name>, "arguments": <object>}`` to the file
named by the ``SPY_LOG`` environment variable (nothing is recorded when it is
unset). Tests use it to prove that a call the proxy denied never reached upstream.

Tools: create_charge, create_refund, delete_customer (destructiveHint),
list_customers (readOnlyHint), echo, and bulk_tool_000..bulk_tool_119.
tools/list is paginated, PAGE_SIZE tools per page, with an opaque ``nextCursor``.

Built on the lowlevel ``mcp.server.Server`` API (``MCPServer`` has no pagination).
Run: ``python tests/servers/spy.py`` (stdio), or ``python tests/servers/spy.py --http PORT [--json]`` for the
SDK's Streamable HTTP server on 127.0.0.1:PORT/mcp (SSE answers, or JSON ones with ``--json``).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from typing import Any

import anyio
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
    ToolAnnotations,
)

PAGE_SIZE = 50
BULK_COUNT = 120

CORE_TOOLS: list[Tool] = [
    Tool(
        name="create_charge",
        description="Charge a customer.",
        input_schema={
            "type": "object",
            "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}},
            "required": ["amount", "currency"],
        },
        output_schema={
            "type": "object",
            "properties": {
                "charge_id": {"type": "string"},
                "amount": {"type": "number"},
                "currency": {"type": "string"},
            },
            "required": ["charge_id", "amount", "currency"],
        },
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False),
    ),
    Tool(
        name="create_refund",
        description="Refund an amount.",
        input_schema={
            "type": "object",
            "properties": {"amount": {"type": "number"}, "charge_id": {"type": "string"}},
            "required": ["amount"],
        },
    ),
    Tool(
        name="delete_customer",
        description="Delete a customer permanently.",
        input_schema={
            "type": "object",
            "properties": {"customer_id": {"type": "string"}},
            "required": ["customer_id"],
        },
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True),
    ),
    Tool(
        name="list_customers",
        description="List customers.",
        input_schema={"type": "object", "properties": {"limit": {"type": "integer"}}},
        annotations=ToolAnnotations(read_only_hint=True),
    ),
    Tool(
        name="echo",
        description="Echo text back.",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
    ),
]

BULK_TOOLS: list[Tool] = [
    Tool(
        name=f"bulk_tool_{i:03d}",
        description=f"Bulk tool number {i}.",
        input_schema={"type": "object", "properties": {"x": {"type": "string"}}},
    )
    for i in range(BULK_COUNT)
]

ALL_TOOLS: list[Tool] = CORE_TOOLS + BULK_TOOLS
TOOLS_BY_NAME: dict[str, Tool] = {t.name: t for t in ALL_TOOLS}

_call_counter = itertools.count(1)  # per-process call sequence, surfaced in result _meta


def _record(name: str, arguments: dict[str, Any]) -> None:
    path = os.environ.get("SPY_LOG")
    if not path:
        return
    line = json.dumps({"tool": name, "arguments": arguments}) + "\n"
    # One O_APPEND write per call, so concurrent writers never interleave a line.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_cursor(cursor: str) -> int:
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["offset"]
    except Exception:
        offset = None
    if not isinstance(offset, int) or not 0 <= offset < len(ALL_TOOLS):
        raise MCPError(code=INVALID_PARAMS, message="Invalid cursor", data=cursor)
    return offset


def _text(s: str) -> list[TextContent]:
    return [TextContent(text=s)]


async def list_tools(ctx: ServerRequestContext, params: PaginatedRequestParams | None) -> ListToolsResult:
    cursor = params.cursor if params is not None else None
    start = 0 if cursor is None else _decode_cursor(cursor)
    end = start + PAGE_SIZE
    next_cursor = _encode_cursor(end) if end < len(ALL_TOOLS) else None
    return ListToolsResult(tools=ALL_TOOLS[start:end], next_cursor=next_cursor)


async def call_tool(ctx: ServerRequestContext, params: CallToolRequestParams) -> CallToolResult:
    name = params.name
    args = dict(params.arguments or {})
    _record(name, args)  # first: anything that arrives is recorded, valid or not
    seq = next(_call_counter)
    meta = {"spy/seq": seq}

    tool = TOOLS_BY_NAME.get(name)
    if tool is None:
        # A protocol-level error (JSON-RPC error), unlike MCPServer's isError result.
        raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {name}")
    missing = [k for k in tool.input_schema.get("required", []) if k not in args]
    if missing:
        return CallToolResult(
            content=_text(f"{name}: missing required argument(s): {', '.join(missing)}"),
            is_error=True,
            _meta=meta,
        )

    if name == "create_charge":
        charge = {"charge_id": f"ch_{seq:04d}", "amount": args["amount"], "currency": args["currency"]}
        return CallToolResult(
            content=_text(f"charged {args['amount']} {args['currency']} as {charge['charge_id']}"),
            structured_content=charge,
            _meta=meta,
        )
    if name == "create_refund":
        return CallToolResult(content=_text(f"refunded {args['amount']}"), _meta=meta)
    if name == "delete_customer":
        return CallToolResult(content=_text(f"deleted customer {args['customer_id']}"), _meta=meta)
    if name == "list_customers":
        customers = [{"id": "cus_001", "name": "Ada"}, {"id": "cus_002", "name": "Grace"}]
        return CallToolResult(
            content=_text(json.dumps(customers)), structured_content={"customers": customers}, _meta=meta
        )
    if name == "echo":
        return CallToolResult(content=_text(str(args.get("text", ""))), _meta=meta)
    return CallToolResult(content=_text(f"{name} called with {json.dumps(args, sort_keys=True)}"), _meta=meta)


server = Server("spy", version="0.0.1-test", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve_http(port: int, json_response: bool) -> None:
    """Streamable HTTP; with SPY_HEADERS_LOG set, the ``authorization`` header of every request (or null)
    is appended to that file as one JSON line, so a test sees which credentials reached the server."""
    import uvicorn

    app = server.streamable_http_app(json_response=json_response)
    headers_log = os.environ.get("SPY_HEADERS_LOG")

    async def logged(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and headers_log:
            auth = next((v.decode() for k, v in scope["headers"] if k == b"authorization"), None)
            with open(headers_log, "a", encoding="utf-8") as f:
                f.write(json.dumps({"method": scope["method"], "authorization": auth}) + "\n")
        await app(scope, receive, send)

    uvicorn.run(logged, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    import sys

    if "--http" in sys.argv:
        serve_http(int(sys.argv[sys.argv.index("--http") + 1]), "--json" in sys.argv)
    else:
        anyio.run(main)
