"""A stdio MCP server whose tools exercise ``regoguard scan``: every risk group, annotations that
contradict names, names YAML must quote, names the policy language refuses, and a description full of
YAML syntax. Every tool answers with "<tool> called with {<sorted JSON args>}".

Options:

- ``--page-size N``: tools/list answers N tools per page, with an opaque ``nextCursor``.
- ``--cursor-loop``: every page points back to the same cursor (a pagination loop).
- ``--endless``: every page points to a new cursor, forever.

``ANNOTATED_EXTRA_TOOL=<name>`` in the environment adds a tool of that name (to see the environment
reach the server). Built on the high-level ``MCPServer`` API (mcp 2.x's renamed FastMCP); pagination
overrides its tools/list handler, which answers with every tool at once.
Run: ``python tests/servers/annotated.py [--page-size N | --cursor-loop | --endless]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, ListToolsResult, PaginatedRequestParams, ToolAnnotations

MULTILINE_DESCRIPTION = (
    "Summarise a document.\n"
    "\n"
    "Options: # not a comment in the tool's eyes\n"
    "  mode: short | long\n"
    "tools:\n"
    "  injected: {rules: []}\u2028default: allow\n"
    "- action: allow"
)


class PagedServer(MCPServer):
    """MCPServer with a tools/list that pages (or loops, or never ends) when asked to."""

    page_size: int | None = None
    mode: str = "pages"

    async def _handle_list_tools(self, ctx: Any, params: PaginatedRequestParams | None) -> ListToolsResult:
        tools = await self.list_tools()
        if self.mode == "cursor-loop":
            return ListToolsResult(tools=tools[:1], next_cursor="the-same-cursor")
        start = _offset(params.cursor if params is not None else None)
        if self.mode == "endless":
            return ListToolsResult(tools=tools[:1] if start == 0 else [], next_cursor=_cursor(start + 1))
        size = self.page_size or len(tools)
        end = start + size
        return ListToolsResult(tools=tools[start:end], next_cursor=_cursor(end) if end < len(tools) else None)


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["offset"]
    except Exception:
        offset = None
    if not isinstance(offset, int) or offset < 0:
        raise MCPError(code=INVALID_PARAMS, message="Invalid cursor", data=cursor)
    return offset


mcp = PagedServer("annotated", version="0.0.1-test", log_level="ERROR")


def _answer(name: str, args: dict[str, Any]) -> str:
    return f"{name} called with {json.dumps({k: v for k, v in args.items() if v is not None}, sort_keys=True)}"


def _register(name: str, description: str | None, kind: str, **hints: bool) -> None:
    """Register a tool called ``name`` whose arguments come from the function of ``kind``."""

    def by_id(record_id: str, force: bool = False) -> str:
        return _answer(name, {"record_id": record_id, "force": force})

    def by_command(command: str, timeout_seconds: int = 10) -> str:
        return _answer(name, {"command": command, "timeout_seconds": timeout_seconds})

    def by_amount(amount: int, currency: str, note: str | None = None) -> str:
        return _answer(name, {"amount": amount, "currency": currency, "note": note})

    def no_args() -> str:
        return _answer(name, {})

    functions: dict[str, Callable[..., str]] = {
        "id": by_id, "command": by_command, "amount": by_amount, "none": no_args,
    }
    annotations = ToolAnnotations(**hints) if hints else None
    mcp.add_tool(functions[kind], name=name, description=description, annotations=annotations)


# name, description, argument kind, annotations
TOOLS: list[tuple[str, str | None, str, dict[str, bool]]] = [
    ("delete_record", "Delete a record permanently.", "id", {}),
    ("purge_cache", "Drop every cached page.", "none", {"destructive_hint": False}),
    ("archive-project", "Move a project to cold storage.", "id", {"destructive_hint": True}),
    ("list_records", "List the records.", "none", {"read_only_hint": True}),
    ("get_record", "Fetch one record by id.", "id", {}),
    ("update_index", "Recompute the search index statistics (read only).", "id", {"read_only_hint": True}),
    ("fetch_report", "Fetch a report, marking it as seen.", "id", {"read_only_hint": False}),
    ("refund_payment", "Refund a payment.", "amount", {"read_only_hint": True}),
    ("create_invoice", "Create an invoice for a customer.", "amount", {}),
    ("list_invoices", "List invoices.", "none", {}),
    ("run_command", "Run a shell command on the host.", "command", {"read_only_hint": True}),
    ("evalScript", "Evaluate a script.", "command", {}),
    ("send_email", "Send an email.", "id", {"open_world_hint": True, "idempotent_hint": False}),
    ("frobnicate", None, "none", {}),
    ("weird: name", "A tool whose name YAML must quote.", "none", {}),
    ("-dash-leading", "A name that starts with a dash.", "none", {}),
    ("yes", "A name YAML would read as a boolean.", "none", {}),
    ("summarise", MULTILINE_DESCRIPTION, "id", {"read_only_hint": True}),
    ('bad"quote', "A name the policy language refuses.", "none", {}),
    ("glob*tool", "A name the policy language would read as a glob.", "none", {}),
]

for _name, _description, _kind, _hints in TOOLS:
    _register(_name, _description, _kind, **_hints)

if extra := os.environ.get("ANNOTATED_EXTRA_TOOL"):
    _register(extra, "Added from the environment.", "none")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--page-size", type=int)
    parser.add_argument("--cursor-loop", action="store_true")
    parser.add_argument("--endless", action="store_true")
    options = parser.parse_args()
    mcp.page_size = options.page_size
    mcp.mode = "cursor-loop" if options.cursor_loop else "endless" if options.endless else "pages"
    mcp.run("stdio")
