"""Writes gathered for one turn of the event loop and sent as one: when a read brings in several
messages (as it does with many calls in flight), the relay answers them with one write system call, not
one each. Each write costs a system call and, often, waking the reader on the other end of the pipe.

The bytes and their order are exactly those written; only their grouping into system calls changes.
A batch goes out when the running callbacks are done (``call_soon``), when it reaches ``FLUSH_AT`` bytes
(so a burst never holds more than that), or on :meth:`Batched.flush` (the owner calls it before closing,
and at the end of each burst it gathered with :meth:`Batched.add`).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

FLUSH_AT = 64 * 1024


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


class Batched:
    """``writer``'s writes of one turn of the loop joined into one; ``drain`` waits for ``writer``."""

    def __init__(self, writer: Writer, loop: asyncio.AbstractEventLoop) -> None:
        self._writer = writer
        self._loop = loop
        self._parts: list[bytes] = []
        self._size = 0
        self._error: Exception | None = None

    def write(self, data: bytes) -> None:
        self._raise()
        if not self._parts:
            self._loop.call_soon(self._flush_soon)
        self.add(data)

    def add(self, data: bytes) -> None:
        """Like :meth:`write`, for an owner that calls :meth:`flush` itself when its burst is done (no
        callback scheduled, no extra turn of the loop)."""
        self._raise()
        self._parts.append(data)
        self._size += len(data)
        if self._size >= FLUSH_AT:
            self.flush()

    def backed_up(self) -> bool:
        """Whether the writer underneath holds more than its high-water mark (its reader is slow): the
        owner should stop reading what feeds it until :meth:`drain` returns."""
        transport = getattr(self._writer, "transport", None)
        if transport is None:
            return False
        return bool(transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1])

    def flush(self) -> None:
        """Send what is gathered now (nothing when nothing is, or when the writer is closing: the pipe's
        reader is gone)."""
        parts = self._parts
        if not parts:
            return
        self._parts, self._size = [], 0
        closing = getattr(self._writer, "is_closing", None)
        if closing is not None and closing():
            return
        self._writer.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def _flush_soon(self) -> None:
        # a failure here would only reach the loop's handler: keep it for the writer's next use instead
        try:
            self.flush()
        except Exception as exc:
            self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def drain(self) -> None:
        """Wait while the underlying writer is over its high-water mark (what is gathered is bounded by
        ``FLUSH_AT`` and goes out at the end of this turn); a failure of an earlier batch is raised here."""
        self._raise()
        await self._writer.drain()
