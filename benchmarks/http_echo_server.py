"""An MCP server for benchmarks/bench_http.py, built on the SDK's lowlevel ``Server`` (as real servers are):
one tool, ``echo``, that answers at once with its ``text`` argument.

    python benchmarks/http_echo_server.py                         # stdio
    python benchmarks/http_echo_server.py --http [--port N] [--json]

With ``--http`` it serves the SDK's Streamable HTTP app (uvicorn, ``h11``) on 127.0.0.1 at ``/mcp``; the
port is 0 (a free one) unless given, bound before the app starts, and printed on stderr as
``http_echo_server listening on http://127.0.0.1:PORT/mcp``. Answers are SSE streams (the SDK's default)
or, with ``--json``, plain JSON. It stops on SIGTERM/SIGINT (HTTP) or at EOF on stdin (stdio).
"""

from __future__ import annotations

import argparse
import socket
import sys

import anyio
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.types import CallToolRequestParams, CallToolResult, ListToolsResult, PaginatedRequestParams, TextContent, Tool

TOOLS = [
    Tool(
        name="echo",
        description="Answer with the text given.",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    )
]


async def list_tools(ctx: ServerRequestContext, params: PaginatedRequestParams | None) -> ListToolsResult:
    return ListToolsResult(tools=TOOLS)


async def call_tool(ctx: ServerRequestContext, params: CallToolRequestParams) -> CallToolResult:
    if params.name != "echo":
        return CallToolResult(content=[TextContent(type="text", text=f"unknown tool {params.name}")], is_error=True)
    text = (params.arguments or {}).get("text", "")
    return CallToolResult(content=[TextContent(type="text", text=str(text))])


server = Server("http-echo", version="0", on_list_tools=list_tools, on_call_tool=call_tool)


async def run_stdio() -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def run_http(port: int, json_response: bool) -> None:
    import uvicorn

    # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it an answer written in two pieces (headers, body) waits ~40 ms for the client's delayed ACK.
    # TCP_NODELAY on the listener too (Linux copies it to every accepted socket).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(512)
    port = sock.getsockname()[1]
    app = server.streamable_http_app(json_response=json_response)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", ws="none", http="h11",
                            timeout_graceful_shutdown=2)
    print(f"http_echo_server listening on http://127.0.0.1:{port}/mcp", file=sys.stderr, flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--http", action="store_true", help="serve Streamable HTTP on 127.0.0.1 instead of stdio")
    ap.add_argument("--port", type=int, default=0, help="the HTTP port (default 0: a free one, printed on stderr)")
    ap.add_argument("--json", action="store_true", help="answer POSTs with JSON instead of an SSE stream")
    args = ap.parse_args()
    if args.http:
        run_http(args.port, args.json)
    else:
        anyio.run(run_stdio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
