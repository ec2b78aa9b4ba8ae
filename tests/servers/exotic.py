"""Protocol-exercising MCP server (stdio) for proxy tests.

Tools
  progress_task(steps)       notifications/progress per step (only if the caller sent a progressToken)
  ask_llm(prompt)            server->client sampling/createMessage request mid-call (handshake era only)
  confirm_action(action)     server->client elicitation/create request mid-call (handshake era only)
  show_roots()               server->client roots/list request mid-call (handshake era only)
  ask_llm_dual / confirm_action_dual / show_roots_dual
                             same questions via MCPServer's Resolve(...) markers: a mid-call
                             JSON-RPC request on a handshake-era (<=2025-11-25) connection, an
                             InputRequiredResult + retried tools/call on a 2026-07-28 connection
  always_fails()             result with isError: true
  chatty(count)              notifications/message (logging) before returning
  sleepy(seconds)            sleeps (for cancellation tests)
  add_dynamic_tool(name)     registers a tool and sends notifications/tools/list_changed
Resource  exotic://readme, template exotic://items/{item_id}
Prompt    greeting(name)

The direct variants raise NoBackChannelError on a 2026-07-28 connection (the
modern protocol forbids server->client JSON-RPC requests); that surfaces as an
isError result. Run: ``python tests/servers/exotic.py``.
"""

from __future__ import annotations

import json
import warnings
from typing import Annotated

import anyio
from mcp.server.mcpserver import (
    Context,
    Elicit,
    ElicitationResult,
    ListRoots,
    MCPServer,
    Resolve,
    Sample,
)
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import (
    CallToolResult,
    CreateMessageResult,
    ListRootsResult,
    SamplingMessage,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel

# Sampling, roots and logging are deprecated in the 2026-07-28 spec; keep stderr quiet.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

mcp = MCPServer("exotic", version="0.0.1-test", log_level="WARNING")


class Confirm(BaseModel):
    confirm: bool
    note: str = ""


def _reply_text(result: CreateMessageResult) -> str:
    content = result.content
    return content.text if isinstance(content, TextContent) else f"<{content.type}>"


def _describe_elicitation(result: object) -> str:
    action = getattr(result, "action", "?")
    data = getattr(result, "data", None)
    if action == "accept" and data is not None:
        return f"accepted: {json.dumps(data.model_dump(), sort_keys=True)}"
    return str(action)


# ---- progress -------------------------------------------------------------------


@mcp.tool(description="Report progress once per step, then finish.")
async def progress_task(ctx: Context, steps: int = 3) -> str:
    for i in range(1, steps + 1):
        await ctx.report_progress(i, steps, f"step {i}/{steps}")
        await anyio.sleep(0.01)
    return f"progress_task finished {steps} steps"


# ---- direct server->client requests (handshake era) ------------------------------


@mcp.tool(description="Ask the client's LLM (sampling/createMessage) and return its reply.")
async def ask_llm(ctx: Context, prompt: str) -> str:
    result = await ctx.session.create_message(
        [SamplingMessage(role="user", content=TextContent(text=prompt))],
        max_tokens=64,
    )
    return f"sampled ({result.model}): {_reply_text(result)}"


@mcp.tool(description="Ask the user to confirm an action (elicitation/create).")
async def confirm_action(ctx: Context, action: str) -> str:
    result = await ctx.elicit(f"Allow action {action!r}?", Confirm)
    return f"elicitation {_describe_elicitation(result)}"


@mcp.tool(
    description="Return the client's roots (roots/list).", annotations=ToolAnnotations(read_only_hint=True)
)
async def show_roots(ctx: Context) -> str:
    result = await ctx.session.list_roots()
    return "roots: " + json.dumps([str(r.uri) for r in result.roots])


# ---- the same questions through Resolve(...) (works in both protocol eras) ------


def _sample_request(prompt: str) -> Sample:
    return Sample([SamplingMessage(role="user", content=TextContent(text=prompt))], max_tokens=64)


def _confirm_request(action: str) -> Elicit[Confirm]:
    return Elicit(f"Allow action {action!r}?", Confirm)


def _roots_request() -> ListRoots:
    return ListRoots()


@mcp.tool(description="Sampling via Resolve(Sample(...)).")
async def ask_llm_dual(prompt: str, reply: Annotated[CreateMessageResult, Resolve(_sample_request)]) -> str:
    return f"sampled ({reply.model}): {_reply_text(reply)}"


@mcp.tool(description="Elicitation via Resolve(Elicit(...)).")
async def confirm_action_dual(
    action: str, answer: Annotated[ElicitationResult[Confirm], Resolve(_confirm_request)]
) -> str:
    return f"elicitation {_describe_elicitation(answer)}"


@mcp.tool(description="Roots via Resolve(ListRoots()).", annotations=ToolAnnotations(read_only_hint=True))
async def show_roots_dual(roots: Annotated[ListRootsResult, Resolve(_roots_request)]) -> str:
    return "roots: " + json.dumps([str(r.uri) for r in roots.roots])


# ---- errors, logging, cancellation, list_changed -------------------------------


@mcp.tool(description="Always returns a tool-level error (isError: true).")
def always_fails() -> CallToolResult:
    return CallToolResult(content=[TextContent(text="always_fails: deliberate failure")], is_error=True)


@mcp.tool(description="Emit logging notifications, then return.")
async def chatty(ctx: Context, count: int = 3) -> str:
    levels = ["debug", "info", "warning", "error"]
    for i in range(count):
        await ctx.log(levels[i % len(levels)], f"chatty message {i}", logger_name="exotic")
    return f"chatty sent {count} log messages"


@mcp.tool(description="Sleep for the given number of seconds.")
async def sleepy(seconds: float = 5.0) -> str:
    await anyio.sleep(seconds)
    return f"slept {seconds}"


@mcp.tool(description="Register a new tool at runtime and announce notifications/tools/list_changed.")
async def add_dynamic_tool(ctx: Context, name: str) -> str:
    def dynamic() -> str:
        return f"{name} (dynamic) called"

    mcp.add_tool(dynamic, name=name, description="Added at runtime.")
    await ctx.session.send_tool_list_changed()
    return f"added tool {name}"


# ---- resources and prompts -------------------------------------------------------


@mcp.resource("exotic://readme", name="readme", mime_type="text/plain")
def readme() -> str:
    return "exotic server readme"


@mcp.resource("exotic://items/{item_id}", name="item", mime_type="application/json")
def item(item_id: str) -> str:
    return json.dumps({"item_id": item_id})


@mcp.prompt(description="Greet someone.")
def greeting(name: str) -> str:
    return f"Please greet {name} warmly."


if __name__ == "__main__":
    mcp.run("stdio")
