"""``regoguard scan -- COMMAND ...``: ask an MCP server for its tools and write a starter policy.

Writing a policy for a server with forty tools starts with copying forty names out of its
``tools/list``; scan does that part. It starts the server over stdio (the SDK's client, the
``initialize`` handshake every stdio server speaks), lists every page of tools, sorts them into risk
groups (:mod:`regoguard.scan.classify`), and writes a policy (:mod:`regoguard.scan.render`) in which
destructive and financial tools are denied and the rest are rate-limited, under ``default: deny``.

The file is only ever written after it has loaded and compiled as ``regoguard check`` would load it:
a starter policy that does not load would be worse than none.

Exit codes: 0 written; 1 the server could not be scanned (it did not start, exited, timed out, or
answered with an error) or the output file exists or cannot be written; 2 usage, or an internal error
(the generated policy failed its own check; nothing is written). Only the policy reaches stdout;
progress, errors and the server's own stderr go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from regoguard.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, upstream_options, upstream_target
from regoguard.errors import RegoguardError
from regoguard.scan.classify import GROUPS, ToolInfo
from regoguard.scan.render import (
    PolicyTooLarge,
    Rendered,
    ScanInternalError,
    comment_text,
    quoted_name,
    render_policy,
    verify,
)

if TYPE_CHECKING:  # the SDK loads in a few hundred ms; every other command would pay for it at start-up
    from mcp import ClientSession
    from mcp.types import Tool


DEFAULT_TIMEOUT = 30.0
MAX_PAGES = 1000
"""A server whose ``nextCursor`` never ends would otherwise keep scan listing until the timeout."""


class ScanError(RegoguardError):
    """The server could not be scanned; the message says why in one line."""


@dataclass
class Listing:
    """What the server said: who it is, its tools (first of each name), and how the listing went."""

    server: str = "the server"
    tools: list[ToolInfo] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)  # each tool as the server's JSON (for `pin`)
    pages: int = 0
    duplicates: list[str] = field(default_factory=list)
    stage: str = "starting the server"
    started: bool = False


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``regoguard scan``."""
    p = sub.add_parser("scan", help="list an MCP server's tools and write a starter policy: "
                                    "regoguard scan -- COMMAND ...")
    p.add_argument("-o", "--output", metavar="FILE", help="write the policy to FILE (default stdout)")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.add_argument("--server-name", help="the server's name in the policy's comments (default: what it reports)")
    p.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"give up if starting the server and listing its tools takes longer "
                        f"(default {DEFAULT_TIMEOUT:g})")
    upstream_options(p)
    p.add_argument("server_command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]",
                   help="the MCP server's own command line, after --")
    p.set_defaults(func=cmd_scan)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def cmd_scan(args: argparse.Namespace, out: BinaryIO) -> int:
    target_server = upstream_target(args, "regoguard scan -- npx -y @scope/server")
    if target_server is None:
        return EXIT_USAGE
    command, headers = target_server
    target = Path(args.output) if args.output else None
    if target is not None and (problem := _unwritable_target(target, args.force)):
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_FAIL
    listing = list_or_report(args, command, headers)
    if listing is None:
        return EXIT_FAIL
    for name in listing.duplicates:
        print(f"warning: the server listed tool {quoted_name(name)} more than once; the first listing is used",
              file=sys.stderr)
    rendered = render_policy(args.server_name or listing.server, listing.tools)
    try:
        verify(rendered)
    except PolicyTooLarge as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except ScanInternalError as exc:
        print(f"internal error: {exc}; nothing was written (please report this with the server's tools/list)",
              file=sys.stderr)
        return EXIT_USAGE
    if target is None:
        out.write(rendered.text.encode("utf-8"))
    else:
        try:
            _write(target, rendered.text, args.force)
        except OSError as exc:
            print(f"error: cannot write {target}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAIL
    print(_summary(listing, rendered, target), file=sys.stderr)
    return EXIT_OK


def _unwritable_target(target: Path, force: bool) -> str | None:
    """Checked before the server starts, so a scan is not wasted on a file that will not be written."""
    if target.is_dir():
        return f"{target} is a directory"
    if (target.exists() or target.is_symlink()) and not force:
        return f"{target} exists; use --force to overwrite it"
    if not target.parent.is_dir():
        return f"cannot write {target}: directory {target.parent} does not exist"
    return None


def _write(target: Path, text: str, force: bool) -> None:
    """Create ``target`` (never replacing a file that appeared meanwhile), or with ``force`` replace it whole."""
    data = text.encode("utf-8")
    if not force:
        with target.open("xb") as f:
            f.write(data)
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def _summary(listing: Listing, rendered: Rendered, target: Path | None) -> str:
    counts = dict.fromkeys(GROUPS, 0)
    for group in rendered.groups.values():
        counts[group] += 1
    groups = ", ".join(f"{n} {g}" for g, n in counts.items() if n) or "no tools written"
    skipped = f"; {len(rendered.skipped)} not written (denied by default)" if rendered.skipped else ""
    pages = f"{listing.pages} page{'s' if listing.pages != 1 else ''}"
    where = f"wrote {target}" if target is not None else "policy on stdout"
    return f"regoguard scan: {listing.server}: {len(listing.tools)} tools in {pages}: {groups}{skipped}; {where}"


def list_or_report(args: argparse.Namespace, command: list[str] | None, headers: dict[str, str]) -> Listing | None:
    """Every tool of the server ``args`` name (a command, or ``--upstream``), or None with the problem
    printed."""
    import asyncio

    try:
        if command is not None:
            return asyncio.run(list_tools(command, args.timeout))
        return asyncio.run(list_remote_tools(args.upstream, headers, args.upstream_transport, args.timeout))
    except ScanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


async def list_tools(command: Sequence[str], timeout: float) -> Listing:
    """Start ``command``, list all its tools within ``timeout`` seconds, and stop it.

    Raises:
        ScanError: the server did not start, exited, timed out, or answered with an error.
    """
    import anyio
    from mcp import ClientSession, StdioServerParameters, stdio_client

    listing = Listing()
    params = StdioServerParameters(command=command[0], args=list(command[1:]), env=dict(os.environ))
    try:
        with _sdk_log_lines(), anyio.fail_after(timeout):
            async with stdio_client(params, errlog=sys.stderr) as (read, write):
                listing.started = True
                async with ClientSession(read, write) as session:
                    await _list_into(session, listing)
    except Exception as exc:
        raise ScanError(_explain(exc, command, timeout, listing)) from exc
    return listing


async def list_remote_tools(url: str, headers: dict[str, str], transport: str, timeout: float) -> Listing:
    """List all tools of the MCP server at ``url`` (Streamable HTTP, or the legacy SSE transport; ``auto``
    tries the first and falls back to the second when it fails) within ``timeout`` seconds.

    Raises:
        ScanError: the server cannot be reached, timed out, or answered with an error.
    """
    import anyio
    import httpx2
    from mcp import ClientSession
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamable_http_client

    errors: list[str] = []
    for kind in (("streamable-http", "sse") if transport == "auto" else (transport,)):
        listing = Listing()
        listing.server = url
        try:
            with _sdk_log_lines(), anyio.fail_after(timeout):
                if kind == "sse":
                    async with sse_client(url, headers=headers) as (read, write):
                        listing.started = True
                        async with ClientSession(read, write) as session:
                            await _list_into(session, listing)
                else:
                    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http, \
                            streamable_http_client(url, http_client=http) as streams:
                        listing.started = True
                        async with ClientSession(streams[0], streams[1]) as session:
                            await _list_into(session, listing)
            return listing
        except Exception as exc:
            errors.append(f"{kind}: {_explain(exc, [url], timeout, listing)}")
    raise ScanError("; ".join(errors))


async def _list_into(session: ClientSession, listing: Listing) -> None:
    from mcp.types import PaginatedRequestParams

    listing.stage = "initialize"
    init = await session.initialize()
    info = init.server_info
    if info is not None:  # shown on the terminal: no escape sequences from the server
        listing.server = comment_text(" ".join(x for x in (info.name, info.version) if x), 80) or listing.server
    if init.capabilities.tools is None:
        raise ScanError(f"{listing.server} offers no tools (its capabilities have no `tools`)")
    seen: set[str] = set()
    cursors: set[str] = set()
    cursor: str | None = None
    for page in range(1, MAX_PAGES + 1):
        listing.stage = f"tools/list (page {page})"
        result = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        listing.pages = page
        for tool in result.tools:
            if tool.name in seen:
                listing.duplicates.append(tool.name)
                continue
            seen.add(tool.name)
            listing.tools.append(tool_info(tool))
            listing.raw.append(tool.model_dump(mode="json", by_alias=True, exclude_none=True))
        cursor = result.next_cursor
        if not cursor:
            return
        if cursor in cursors:
            raise ScanError(f"{listing.server} sent the same tools/list cursor twice: its pagination loops")
        cursors.add(cursor)
    raise ScanError(f"{listing.server} was still paginating tools/list after {MAX_PAGES} pages")


def tool_info(tool: Tool) -> ToolInfo:
    """The parts of an SDK ``Tool`` the classifier and the comments use, read defensively."""
    schema: dict[str, Any] = tool.input_schema if isinstance(tool.input_schema, dict) else {}
    properties = schema.get("properties")
    required = schema.get("required")
    hints = tool.annotations
    return ToolInfo(
        name=tool.name,
        description=tool.description or tool.title or (hints.title if hints is not None else None),
        required=tuple(r for r in required if isinstance(r, str)) if isinstance(required, list) else (),
        arguments=tuple(str(k) for k in properties) if isinstance(properties, dict) else (),
        read_only=hints.read_only_hint if hints is not None else None,
        destructive=hints.destructive_hint if hints is not None else None,
        idempotent=hints.idempotent_hint if hints is not None else None,
        open_world=hints.open_world_hint if hints is not None else None,
    )


class _OneLine(logging.Formatter):
    """The SDK logs a full traceback for every line a server prints to stdout that is not JSON-RPC."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"warning: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            text += ": " + " ".join(str(record.exc_info[1]).split())
        return text[:400]


@contextmanager
def _sdk_log_lines() -> Iterator[None]:
    """While scanning, the SDK's warnings reach stderr as one line each (the server's stderr is the story)."""
    logger = logging.getLogger("mcp")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    handler.setLevel(logging.WARNING)
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _explain(exc: Exception, command: Sequence[str], timeout: float, listing: Listing) -> str:
    """One line saying what went wrong, from whatever the SDK's task groups wrapped it in."""
    from mcp.shared.exceptions import MCPError
    from mcp.types import CONNECTION_CLOSED

    leaves = _leaves(exc)
    if found := next((e for e in leaves if isinstance(e, ScanError)), None):
        return str(found)
    if any(isinstance(e, TimeoutError) for e in leaves):
        return (f"{listing.server} did not list its tools within {timeout:g} s (stuck at {listing.stage}; "
                "--timeout waits longer)")
    if not listing.started and (oserror := next((e for e in leaves if isinstance(e, OSError)), None)):
        return f"cannot start the server {command[0]!r}: {oserror.strerror or oserror}"
    mcp_error = next((e for e in leaves if isinstance(e, MCPError)), None)
    # the SDK's own error when the server's stdout ends (a server's -32000 has a message of its own)
    if mcp_error is not None and mcp_error.code == CONNECTION_CLOSED and mcp_error.message == "Connection closed":
        return (f"{listing.server} closed the connection during {listing.stage}: it exited or crashed "
                "(its stderr, if it wrote any, is above)")
    first = mcp_error or leaves[0]
    text = comment_text(str(first), 300) or type(first).__name__
    return f"{listing.server} failed during {listing.stage}: {text}"
