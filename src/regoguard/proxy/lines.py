"""Newline-framed reading with a size bound: an oversize line is skipped whole, never split."""

from __future__ import annotations

import asyncio
from typing import Final


class _Oversize:
    def __init__(self, size: int) -> None:
        self.size = size


OVERSIZE: Final = _Oversize


async def read_line(reader: asyncio.StreamReader) -> bytes | _Oversize | None:
    """The next line (with its newline, if any), an :class:`_Oversize` marker, or None at EOF."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None
    except asyncio.LimitOverrunError as exc:
        skipped = 0
        consumed = exc.consumed
        while True:
            skipped += len(await reader.readexactly(consumed)) if consumed else 0
            try:
                skipped += len(await reader.readuntil(b"\n"))
                return _Oversize(skipped)
            except asyncio.IncompleteReadError as inner:
                return _Oversize(skipped + len(inner.partial))
            except asyncio.LimitOverrunError as again:
                consumed = again.consumed
