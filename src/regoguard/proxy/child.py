"""A local MCP server as an :class:`~regoguard.proxy.upstream.Upstream`: a child process spoken to over
newline-framed stdio. It inherits the environment, its stderr passes through, and it is ended politely
(stdin closed, a grace period), then for good."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from regoguard.proxy.batched import Batched
from regoguard.proxy.lines import OVERSIZE, read_line
from regoguard.proxy.upstream import Deliver, UpstreamError

log = structlog.get_logger("regoguard.proxy")

SERVER_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class ChildUpstream:
    def __init__(self, command: list[str], deliver: Deliver, shutdown_grace: float = 5.0) -> None:
        self.command = command
        self._deliver = deliver
        self._grace = shutdown_grace
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._stdin: Batched | None = None  # the server's stdin: the messages of one turn in one write

    async def open(self) -> None:
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
                limit=SERVER_MAX_MESSAGE_BYTES, start_new_session=False)
        except OSError as exc:
            raise UpstreamError(f"cannot start MCP server {self.command[0]!r}: {exc}") from exc
        assert self._proc.stdin is not None
        self._stdin = Batched(self._proc.stdin, asyncio.get_running_loop())
        self._pump = asyncio.create_task(self._read())

    async def send(self, data: bytes, context: object = None) -> None:
        assert self._proc is not None and self._proc.stdin is not None and self._stdin is not None
        if self._proc.stdin.is_closing():
            return
        # Line-framed: a message that came over HTTP may hold line breaks (JSON whitespace; strict parsing
        # refuses them inside strings), and each would end a message here: they become spaces.
        self._stdin.write(data.replace(b"\n", b" ") + b"\n")
        with contextlib.suppress(ConnectionError):
            await self._stdin.drain()

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        reader = self._proc.stdout
        try:
            while True:
                line = await read_line(reader)
                if line is None:
                    return
                if isinstance(line, OVERSIZE):
                    log.error("dropped an oversize message from the server", size=line.size)
                    continue
                await self._deliver(line, None)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reading the server's output failed; ending the server")
            await self.close()

    async def wait_closed(self) -> int:
        """Wait until the child's stdout closed (it is exiting) and it exited; 128 + signal if killed."""
        assert self._proc is not None and self._pump is not None
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._pump)
        returncode = await self._proc.wait()
        return returncode if returncode >= 0 else 128 - returncode

    async def close(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        with contextlib.suppress(ConnectionError, OSError):
            if self._stdin is not None and not proc.stdin.is_closing():
                self._stdin.flush()  # what was sent before the end reaches the server
            proc.stdin.close()
        for action, wait in ((None, self._grace), (proc.terminate, 3.0), (proc.kill, None)):
            if action is not None:
                with contextlib.suppress(ProcessLookupError):
                    action()
            try:
                await asyncio.wait_for(proc.wait(), wait)
                return
            except TimeoutError:
                continue

    def forward_signal(self, signum: int) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signum)
