"""The stdio transport: regoguard between an MCP client (our stdin/stdout) and a server (our child).

A thin adapter around :class:`regoguard.proxy.core.RelayCore`: it reads newline-framed lines from both
sides, hands each to the core, and writes what the core returns. Policy, correlation and filtering are the
core's; the child process, its pipes, signals and shutdown are this module's.

Only this module writes to the client's stdout, and only what the core gives it (JSON-RPC, by the core's
contract). If either pump fails unexpectedly, the session ends the way a client EOF ends it: the server's
stdin is closed, the server is given time to exit, then ended — never half-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from regoguard.guard import Guard
from regoguard.pinning import Pinning
from regoguard.proxy.batched import Batched
from regoguard.proxy.child import ChildUpstream
from regoguard.proxy.client_io import open_line_reader, open_reader, open_writer
from regoguard.proxy.core import CoreOptions, Outbox, RelayCore
from regoguard.proxy.lines import OVERSIZE, Item, LineProtocol, framed, read_line
from regoguard.proxy.session import Session
from regoguard.proxy.upstream import Deliver, Upstream, UpstreamError

log = structlog.get_logger("regoguard.proxy")

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
TICK_SECONDS = 0.5


@dataclass(frozen=True)
class ProxyOptions:
    server_name: str
    principal: str
    principal_claims: dict[str, Any] = field(default_factory=dict)
    pinning: Pinning | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    shutdown_grace: float = 5.0
    refund_on_tool_error: bool = False


class SignalRelay:
    """Carries SIGINT/SIGTERM from the main thread (where Python runs handlers) to the proxy's loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proxy: StdioProxy | None = None
        self.pending: list[int] = []

    def install(self) -> None:
        """Call on the main thread, before the proxy starts."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        if self._loop is not None and self._proxy is not None:
            self._loop.call_soon_threadsafe(self._proxy.forward_signal, signum)
        else:
            self.pending.append(signum)

    def attach(self, loop: asyncio.AbstractEventLoop, proxy: StdioProxy) -> None:
        self._loop, self._proxy = loop, proxy
        for signum in self.pending:
            loop.call_soon_threadsafe(proxy.forward_signal, signum)
        self.pending.clear()


class StdioProxy:
    """One client connection (our stdin/stdout) relayed to one server.

    Args:
        guard: decides every ``tools/call``.
        make_upstream: builds the server side around the callback that takes its messages (a child
            process, :class:`regoguard.proxy.child.ChildUpstream`, or a remote server over HTTP).
        options: names for the input document and bounds.
        client_in: where client messages arrive (our stdin).
        client_out: the only writer that reaches the client (see :func:`regoguard.stdout_guard.claim_stdout`).
    """

    def __init__(
        self,
        guard: Guard,
        make_upstream: Callable[[Deliver], Upstream],
        options: ProxyOptions,
        client_in: BinaryIO,
        client_out: BinaryIO,
        signals: SignalRelay | None = None,
    ) -> None:
        self.guard = guard
        self.options = options
        self.session = Session(options.server_name, options.principal, claims=options.principal_claims)
        self.core = RelayCore(guard, self.session, CoreOptions(refund_on_tool_error=options.refund_on_tool_error,
                                                               pinning=options.pinning))
        self.upstream = make_upstream(self._from_server)
        self._client_in = client_in
        self._client_out = client_out
        self._signals = signals
        self._writer: Batched | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._held: set[str] = set()  # the sides whose reading waits for a slow reader to catch up
        self._client: LineProtocol | None = None  # the client's lines, when relayed directly

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Relay until the server side ends; return its exit status (128 + signal if it was killed)."""
        loop = asyncio.get_running_loop()
        self._writer = await open_writer(loop, self._client_out)
        # A local server is relayed directly: each read's lines are decided and written from the read's
        # own callback (no task, future or extra turn of the loop per message). A remote one is awaited.
        child = self.upstream if isinstance(self.upstream, ChildUpstream) else None
        if child is not None:
            child.direct(self._server_lines)
        try:
            await self.upstream.open()
        except UpstreamError as exc:
            print(f"regoguard: {exc}", file=sys.stderr)
            return 127
        if self._signals is not None:
            self._signals.attach(loop, self)
        if child is not None:
            self._client = await open_line_reader(loop, self._client_in, self.options.max_message_bytes,
                                                  self._client_lines)
            client_task = asyncio.create_task(self._guarded(self._client_done(self._client), "client"))
        else:
            client_reader = await open_reader(loop, self._client_in, self.options.max_message_bytes)
            client_task = asyncio.create_task(self._guarded(self._pump_client(client_reader), "client"))
        ticker = asyncio.create_task(self._tick())
        returncode = await self.upstream.wait_closed()
        await self._deliver(self.core.server_closed())
        self.guard.end_session(self.session.id)
        for task in (client_task, ticker):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._writer.flush()
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()
        return returncode

    async def _guarded(self, pump: Any, side: str) -> None:
        """Run a pump; if it fails, end the session as a client EOF would (never half-alive)."""
        try:
            await pump
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(f"the {side} relay failed; ending the session")
            await self.upstream.close()

    def forward_signal(self, signum: int) -> None:
        self.upstream.forward_signal(signum)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            await self._deliver(self.core.tick())

    # -- moving bytes ------------------------------------------------------------------------------------

    async def _deliver(self, out: Outbox) -> None:
        assert self._writer is not None
        for item in out.to_client:
            self._writer.write(framed(item.data))  # a remote server's pretty-printed JSON stays one line
        for data in out.to_server:
            await self.upstream.send(data)
        if out.to_client:
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    async def _from_server(self, line: bytes, context: object) -> None:
        await self._deliver(self.core.server_line(line))

    # -- the direct relay (a local server) --------------------------------------------------------------

    def _client_lines(self, items: list[Item]) -> None:
        """Every complete client line of one read, decided and relayed in order; out in one write per side."""
        wrote = (False, False)
        try:
            for item in items:
                if isinstance(item, OVERSIZE):
                    wrote = self._emit(self.core.client_oversize(item.size, self.options.max_message_bytes, item.head),
                                       wrote)
                else:
                    wrote = self._emit(self.core.client_line(item), wrote)
            self._flush_direct()
        except Exception:  # as the awaited pump's failure does: the session ends, never half-alive
            log.exception("the client relay failed; ending the session")
            if self._client is not None:
                self._client.pause()
            self._spawn(self.upstream.close())
            return
        if self._client is not None:
            self._hold("client", self._client.pause, self._client.resume, *wrote)

    def _server_lines(self, items: list[Item]) -> None:
        """Every complete line of one read from the server (its failures end the server: see ChildUpstream)."""
        wrote = (False, False)
        for item in items:
            if isinstance(item, OVERSIZE):
                log.error("dropped an oversize message from the server", size=item.size)
                continue
            wrote = self._emit(self.core.server_line(item), wrote)
        self._flush_direct()
        child = self.upstream
        assert isinstance(child, ChildUpstream)
        # Only the client's stdout can hold the server up. What a server's read sends the server itself (the
        # calls its tools/list released, the next page's request) must never stop its answers being read: it
        # may be writing them before it reads its stdin again. That writer still holds the client up.
        self._hold("server", child.pause_reading, child.resume_reading, wrote[0], False)

    def _emit(self, out: Outbox, wrote: tuple[bool, bool]) -> tuple[bool, bool]:
        """Gather ``out``; whether anything so far went to the client, and to the server."""
        assert self._writer is not None and isinstance(self.upstream, ChildUpstream)
        for item in out.to_client:
            self._writer.add(framed(item.data))
        for data in out.to_server:
            self.upstream.send_now(data)
        return wrote[0] or bool(out.to_client), wrote[1] or bool(out.to_server)

    def _flush_direct(self) -> None:
        assert self._writer is not None and isinstance(self.upstream, ChildUpstream)
        self._writer.flush()
        self.upstream.flush()

    def _hold(self, side: str, pause: Callable[[], None], resume: Callable[[], None], to_client: bool,
              to_server: bool) -> None:
        """Stop reading ``side`` while a reader it just wrote to (the client, the server) is behind, until
        that reader catches up: the awaited relay's drains, for the direct one. Only the writers this read
        fed count: a server slow to read its stdin must still have its answers read, or it would block
        writing them and never read again."""
        assert self._writer is not None and isinstance(self.upstream, ChildUpstream)
        waits = [w.drain for w, wrote in ((self._writer, to_client), (self.upstream, to_server))
                 if wrote and w.backed_up()]
        if not waits or side in self._held:
            return
        self._held.add(side)
        pause()

        async def caught_up() -> None:
            try:
                for wait in waits:
                    with contextlib.suppress(ConnectionError):
                        await wait()
            finally:
                self._held.discard(side)
                resume()

        self._spawn(caught_up())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _client_done(self, client: LineProtocol) -> None:
        await client.done
        await self._parked_sent()
        await self.upstream.close()

    async def _parked_sent(self) -> None:
        """At the client's EOF: the lines waiting for the proxy's tools/list are sent (or refused) first."""
        while self.core.waiting_for_tools:
            await asyncio.sleep(0.01)

    # -- the awaited relay (a remote server) -------------------------------------------------------------

    async def _pump_client(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = await read_line(reader)
            if line is None:
                break
            if isinstance(line, OVERSIZE):
                await self._deliver(self.core.client_oversize(line.size, self.options.max_message_bytes, line.head))
                continue
            await self._deliver(self.core.client_line(line))
        await self._parked_sent()
        await self.upstream.close()


_LAUNCHERS = {"python", "python3", "node", "npx", "uvx", "uv", "pipx", "bunx", "bun", "deno", "bash", "sh", "env"}
_SCRIPT_SUFFIXES = (".py", ".js", ".mjs", ".cjs", ".ts")
_GENERIC_SCRIPTS = {"index", "main", "server", "cli", "__main__", "run", "start"}
_BUILD_DIRS = {"dist", "build", "lib", "src", "bin", "out", "esm", "cjs"}


def default_server_name(command: list[str]) -> str:
    """A readable server name from its command: ``npx -y @scope/server-x`` → ``server-x``;
    ``node …/server-filesystem/dist/index.js`` → ``server-filesystem`` (a generic script name says nothing,
    so the package directory above the build folders names the server)."""
    for part in command:
        base = os.path.basename(part)
        if base.startswith("-") or base in _LAUNCHERS or base.startswith("python3."):
            continue
        name = base
        for suffix in _SCRIPT_SUFFIXES:
            name = name.removesuffix(suffix)
        if name in _GENERIC_SCRIPTS and name != base:
            parents = [p for p in Path(part).parent.parts if p not in ("/", ".", "..")]
            while parents and parents[-1] in _BUILD_DIRS:
                parents.pop()
            if parents:
                name = parents[-1]
        return name.split("@")[0] or name
    return os.path.basename(command[0]) if command else "mcp-server"
