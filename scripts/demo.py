"""A scripted MCP client talking to a Looking Glass-style MCP server through regoguard.

Runs ``regoguard run -c policies/looking-glass.yaml --state <tmp>/state.db -- python
tests/servers/looking_glass.py`` as a stdio MCP server (exactly what Claude Desktop, Claude Code or Cursor
would start), then makes the calls an agent might make and prints what the policy did with each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio
from mcp import StdioServerParameters
from mcp.client import Client
from mcp.types import CallToolResult, TextContent

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies" / "looking-glass.yaml"
SERVER = ROOT / "tests" / "servers" / "looking_glass.py"


def show(label: str, result: CallToolResult) -> None:
    text = " ".join(b.text for b in result.content if isinstance(b, TextContent))
    verdict = "DENIED " if result.is_error else "allowed"
    print(f"  {verdict}  {label}")
    print(f"           -> {text[:160]}")
    decision = (result.meta or {}).get("regoguard/decision")
    if decision:
        print(f"           rule={decision['rule']}  decision_id={decision['decision_id']}")


async def demo(state: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "regoguard", "run", "-c", str(POLICY), "--state", str(state), "--",
              sys.executable, str(SERVER)],
    )
    with anyio.fail_after(60):
        async with Client(params, mode="legacy") as agent:
            print(f"\nregoguard in front of {SERVER.name}, policy {POLICY.relative_to(ROOT)}\n")
            listed = await agent.list_tools()
            print("1. tools/list: the agent sees", ", ".join(t.name for t in listed.tools))
            print("   (browser_clear_storage exists on the server but the policy hides it)\n")

            print("2. calls")
            show("session_start url=https://example.com",
                 await agent.call_tool("session_start", {"url": "https://example.com"}))
            show("session_start without its required url (validate: required_args)",
                 await agent.call_tool("session_start", {}))
            show("page_eval_js (denied with a reason)",
                 await agent.call_tool("page_eval_js", {"session_id": "s1", "script": "document.cookie"}))
            show("browser_clear_storage (hidden, called anyway)",
                 await agent.call_tool("browser_clear_storage", {}))
            show("page_screenshot (read-only, allowed)",
                 await agent.call_tool("page_screenshot", {"session_id": "s1"}))

            print("\n3. an agent stuck in a loop: session_start again and again (limit: 10 per 60 s)")
            for i in range(2, 13):
                result = await agent.call_tool("session_start", {"url": f"https://example.com/{i}"})
                if result.is_error:
                    print(f"   call {i}: ", end="")
                    show("session_start", result)
                    break
                print(f"   call {i}: allowed")
    print("\nDone. Every denied call above was answered by regoguard; none reached the server.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state", help="SQLite state file (default: a temporary one)")
    args = parser.parse_args()
    if args.state:
        anyio.run(demo, Path(args.state))
        return
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(demo, Path(tmp) / "state.db")


if __name__ == "__main__":
    main()
