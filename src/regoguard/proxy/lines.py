"""Newline-framed reading with a size bound: an oversize line is skipped whole, never split.

:func:`read_line` reads from a stream reader (a task awaits each line); :class:`LineProtocol` hands a
protocol's every complete line to a callback as it arrives (no task per message), the same lines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

HEAD_BYTES = 4096
"""How much of an oversize line is kept (``_Oversize.head``): enough to read the id of its request."""


class _Oversize:
    def __init__(self, size: int, head: bytes = b"") -> None:
        self.size = size
        self.head = head  # its first HEAD_BYTES bytes, at most


def _head_of(parts: list[bytes]) -> bytes:
    out: list[bytes] = []
    size = 0
    for part in parts:
        out.append(part[:HEAD_BYTES - size])
        size += len(out[-1])
        if size >= HEAD_BYTES:
            break
    return b"".join(out)


OVERSIZE: Final = _Oversize


async def read_line(reader: asyncio.StreamReader) -> bytes | _Oversize | None:
    """The next line (with its newline, if any), an :class:`_Oversize` marker, or None at EOF."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None
    except asyncio.LimitOverrunError as exc:
        skipped = 0
        head: list[bytes] = []
        consumed = exc.consumed
        while True:
            chunk = await reader.readexactly(consumed) if consumed else b""
            skipped += len(chunk)
            if skipped - len(chunk) < HEAD_BYTES:  # keep the start only: the line may be any size
                head.append(chunk[:HEAD_BYTES])
            try:
                rest = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as inner:
                rest = inner.partial
            except asyncio.LimitOverrunError as again:
                consumed = again.consumed
                continue
            return _Oversize(skipped + len(rest), _head_of([*head, rest[:HEAD_BYTES]]))


def framed(data: bytes) -> bytes:
    """One message as one line: a line break inside it (JSON whitespace that came over HTTP, a remote
    server's pretty-printing; strict parsing refuses them inside strings) becomes a space."""
    return data.replace(b"\n", b" ") + b"\n"


Item = bytes | _Oversize


class LineSplitter:
    """The complete lines of a byte stream as it arrives, each at most ``limit`` bytes before its newline;
    a longer one is skipped whole and reported by its size with the newline (as :func:`read_line` does).
    Pieces of a line still arriving are kept as a list and joined once: a large message costs one copy, not
    one per read."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: list[bytes] = []  # the start of the line still arriving
        self._size = 0  # its length so far
        self._skipping = False  # it is already over the limit: dropped as it comes
        self._head = b""  # the start of the line being skipped

    def feed(self, data: bytes) -> list[Item]:
        items: list[Item] = []
        start = 0
        end = data.find(b"\n")
        while end >= 0:
            size = self._size + end + 1 - start
            if self._skipping or size - 1 > self.limit:
                piece = data[start:min(end + 1, start + HEAD_BYTES)]
                items.append(_Oversize(size, _head_of([self._head, *self._parts, piece])))
            elif self._parts:
                self._parts.append(data[start:end + 1])
                items.append(b"".join(self._parts))
            else:
                items.append(data[start:end + 1])
            self._parts, self._size, self._skipping, self._head = [], 0, False, b""
            start = end + 1
            end = data.find(b"\n", start)
        if start < len(data):
            self._size += len(data) - start
            if self._skipping or self._size > self.limit:
                if len(self._head) < HEAD_BYTES:  # _head or _parts is empty
                    self._head = _head_of([self._head, *self._parts, data[start:start + HEAD_BYTES]])
                self._parts, self._skipping = [], True
            else:
                self._parts.append(data[start:] if start else data)
        return items

    def end(self) -> list[Item]:
        """What is left at end of input: the last line without its newline, or its oversize marker."""
        if not self._size:
            return []
        item: Item = _Oversize(self._size, self._head) if self._skipping else b"".join(self._parts)
        self._parts, self._size, self._skipping, self._head = [], 0, False, b""
        return [item]


class LineProtocol(asyncio.Protocol):
    """A read pipe's lines handed to ``on_lines`` as they arrive, every complete line of a read in one call,
    synchronously: no task, future or buffer copy per message, as a stream reader's ``readuntil`` has.
    ``on_lines`` gets the rest at end of input, then ``done`` is set (also when the pipe fails)."""

    def __init__(self, limit: int, on_lines: Callable[[list[Item]], None]) -> None:
        self._lines = LineSplitter(limit)
        self._on_lines = on_lines
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        items = self._lines.feed(data)
        if items:
            self._on_lines(items)

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def _finish(self) -> None:
        if self.done.done():
            return
        try:
            items = self._lines.end()
            if items:
                self._on_lines(items)
        finally:
            self.done.set_result(None)

    def pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
