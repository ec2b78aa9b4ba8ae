"""Stand-in for the Looking Glass browser-automation MCP server (stdio).

Exposes the same tool names/argument shapes as the real server, but does nothing:
every tool answers with deterministic text "<tool> called with {<sorted JSON args>}"
plus a small ``structuredContent`` object. Run: ``python tests/servers/looking_glass.py``.

Built on the high-level ``MCPServer`` API (mcp 2.x's renamed FastMCP).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations

mcp = MCPServer("looking-glass", version="0.0.1-test", log_level="WARNING")

# Sessions started in this process, in start order (deterministic for a given call sequence).
_sessions: dict[str, dict[str, Any]] = {}


def _session_id(url: str) -> str:
    return "lg-" + hashlib.sha256(url.encode()).hexdigest()[:12]


def _called(tool: str, args: dict[str, Any], structured: dict[str, Any] | None = None) -> CallToolResult:
    shown = {k: v for k, v in args.items() if v is not None}
    text = f"{tool} called with {json.dumps(shown, sort_keys=True)}"
    return CallToolResult(
        content=[TextContent(text=text)],
        structured_content={"tool": tool, "arguments": shown, **(structured or {})},
    )


@mcp.tool(
    description="Start a browser session and navigate to url.",
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True),
)
def session_start(url: str, viewport: dict[str, int] | None = None) -> CallToolResult:
    sid = _session_id(url)
    _sessions[sid] = {"session_id": sid, "url": url}
    return _called("session_start", {"url": url, "viewport": viewport}, {"session_id": sid})


@mcp.tool(description="Stop a browser session.", annotations=ToolAnnotations(destructive_hint=True))
def session_stop(session_id: str) -> CallToolResult:
    existed = _sessions.pop(session_id, None) is not None
    return _called("session_stop", {"session_id": session_id}, {"stopped": existed})


@mcp.tool(
    description="Take a screenshot of the current page.", annotations=ToolAnnotations(read_only_hint=True)
)
def page_screenshot(session_id: str) -> CallToolResult:
    return _called("page_screenshot", {"session_id": session_id}, {"bytes": 0})


@mcp.tool(description="Click the element matching a CSS selector.")
def page_click(session_id: str, selector: str) -> CallToolResult:
    return _called("page_click", {"session_id": session_id, "selector": selector})


@mcp.tool(
    description="Evaluate JavaScript in the page.",
    annotations=ToolAnnotations(destructive_hint=True, open_world_hint=True),
)
def page_eval_js(session_id: str, script: str) -> CallToolResult:
    return _called("page_eval_js", {"session_id": session_id, "script": script}, {"value": None})


@mcp.tool(description="List active browser sessions.", annotations=ToolAnnotations(read_only_hint=True))
def session_list() -> CallToolResult:
    return _called("session_list", {}, {"sessions": list(_sessions.values())})


@mcp.tool(
    description="Clear cookies, local storage and caches of every site in the browser profile.",
    annotations=ToolAnnotations(destructive_hint=True),
)
def browser_clear_storage() -> CallToolResult:
    return _called("browser_clear_storage", {}, {"cleared": True})


if __name__ == "__main__":
    mcp.run("stdio")
