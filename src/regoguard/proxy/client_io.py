"""The client's end of stdio as asyncio streams, whether stdin/stdout are pipes, sockets or files.

asyncio's pipe transports refuse regular files (``regoguard run ... < calls.jsonl > out.jsonl``) and accept
but cannot watch other character devices (``< /dev/null`` fails inside the loop and EOF is never seen); for
anything but a pipe, a socket or a terminal, a thread feeds the reader and writes go straight to the file.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import Callable
from typing import BinaryIO

from regoguard.proxy.batched import Batched
from regoguard.proxy.lines import Item, LineProtocol


class _FileWriter:
    def __init__(self, file: BinaryIO) -> None:
        self._fd = file.fileno()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    async def drain(self) -> None:
        return None


def _watchable(fd: int) -> bool:
    """True for what the event loop can watch: a pipe, a socket or a terminal."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode) and os.isatty(fd))


async def open_reader(loop: asyncio.AbstractEventLoop, file: BinaryIO, limit: int) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=limit)
    await _attach(loop, file, asyncio.StreamReaderProtocol(reader))
    return reader


async def open_line_reader(loop: asyncio.AbstractEventLoop, file: BinaryIO, limit: int,
                           on_lines: Callable[[list[Item]], None]) -> LineProtocol:
    """``file``'s lines handed to ``on_lines`` as they arrive (see :class:`LineProtocol`); its ``done`` is set
    at end of input. A file the loop cannot watch is read by a thread (and cannot be paused)."""
    protocol = LineProtocol(limit, on_lines)
    await _attach(loop, file, protocol)
    return protocol


async def _attach(loop: asyncio.AbstractEventLoop, file: BinaryIO, protocol: asyncio.Protocol) -> None:
    """``protocol`` fed from ``file``: by the loop where it can watch it, else by a thread of its own."""
    fd = file.fileno()
    if _watchable(fd):
        try:
            await loop.connect_read_pipe(lambda: protocol, file)
            return
        except ValueError:
            pass

    def pump() -> None:
        while chunk := os.read(fd, 1 << 16):
            loop.call_soon_threadsafe(protocol.data_received, chunk)
        loop.call_soon_threadsafe(protocol.eof_received)

    threading.Thread(target=pump, name="regoguard-stdin", daemon=True).start()


async def open_writer(loop: asyncio.AbstractEventLoop, file: BinaryIO) -> Batched:
    """The client's writer: the messages of one turn of the loop go out in one write (see ``batched``);
    :meth:`~regoguard.proxy.batched.Batched.flush` before the end."""
    if not _watchable(file.fileno()):
        return Batched(_FileWriter(file), loop)
    try:
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, file)
    except ValueError:
        return Batched(_FileWriter(file), loop)
    return Batched(asyncio.StreamWriter(transport, protocol, None, loop), loop)
