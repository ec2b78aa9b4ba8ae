"""A local MCP server as an :class:`~regoguard.proxy.upstream.Upstream`: a child process spoken to over
newline-framed stdio. It inherits the environment, its stderr passes through, and it is ended politely
(stdin closed, a grace period), then for good."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

import structlog

from regoguard.proxy.batched import Batched
from regoguard.proxy.lines import OVERSIZE, Item, LineProtocol, framed, read_line
from regoguard.proxy.upstream import Deliver, UpstreamError

log = structlog.get_logger("regoguard.proxy")

SERVER_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class ChildUpstream:
    def __init__(self, command: list[str], deliver: Deliver, shutdown_grace: float = 5.0) -> None:
        self.command = command
        self._deliver = deliver
        self._grace = shutdown_grace
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Future[None] | None = None  # ends when the server's stdout does
        self._ending: asyncio.Future[None] | None = None
        self._stdin: Batched | None = None  # the server's stdin: the messages of one turn in one write
        self._on_lines: Callable[[list[Item]], None] | None = None
        self._lines: LineProtocol | None = None

    def direct(self, on_lines: Callable[[list[Item]], None]) -> None:
        """Before :meth:`open`: hand the server's lines to ``on_lines`` as they arrive, every complete line
        of a read in one synchronous call, instead of awaiting ``deliver`` per line (see :meth:`send_now`)."""
        self._on_lines = on_lines

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        stdout: int = asyncio.subprocess.PIPE
        read_end = -1
        if self._on_lines is not None:  # our own pipe, read by a LineProtocol
            read_end, stdout = os.pipe()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=stdout, stderr=None,
                limit=SERVER_MAX_MESSAGE_BYTES, start_new_session=False)
        except OSError as exc:
            if read_end >= 0:
                os.close(read_end)
            raise UpstreamError(f"cannot start MCP server {self.command[0]!r}: {exc}") from exc
        finally:
            if read_end >= 0:
                os.close(stdout)  # the child holds the write end now
        assert self._proc.stdin is not None
        self._stdin = Batched(self._proc.stdin, loop)
        if self._on_lines is None:
            self._pump = asyncio.create_task(self._read())
            return
        on_lines = self._on_lines
        lines = self._lines = LineProtocol(SERVER_MAX_MESSAGE_BYTES, lambda items: self._guarded(on_lines, items))
        pipe = open(read_end, "rb", buffering=0)  # noqa: SIM115 - the transport owns and closes it
        await loop.connect_read_pipe(lambda: lines, pipe)
        self._pump = asyncio.ensure_future(lines.done)

    def _guarded(self, on_lines: Callable[[list[Item]], None], items: list[Item]) -> None:
        try:
            on_lines(items)
        except Exception:
            log.exception("relaying the server's output failed; ending the server")
            self.pause_reading()
            self._ending = asyncio.ensure_future(self.close())

    def send_now(self, data: bytes) -> None:
        """One message for the server, gathered until :meth:`flush` (the direct mode's :meth:`send`)."""
        assert self._proc is not None and self._proc.stdin is not None and self._stdin is not None
        if not self._proc.stdin.is_closing():
            self._stdin.add(framed(data))

    def flush(self) -> None:
        if self._stdin is not None:
            self._stdin.flush()  # nothing, once the server's stdin is closing

    def backed_up(self) -> bool:
        """Whether the server is slow to read what it was sent (see :meth:`Batched.backed_up`)."""
        return self._stdin is not None and self._stdin.backed_up()

    async def drain(self) -> None:
        if self._stdin is not None:
            with contextlib.suppress(ConnectionError):
                await self._stdin.drain()

    def pause_reading(self) -> None:
        if self._lines is not None:
            self._lines.pause()

    def resume_reading(self) -> None:
        if self._lines is not None:
            self._lines.resume()

    async def send(self, data: bytes, context: object = None) -> None:
        assert self._proc is not None and self._proc.stdin is not None and self._stdin is not None
        if self._proc.stdin.is_closing():
            return
        self._stdin.write(framed(data))  # a message that came over HTTP may hold line breaks
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
