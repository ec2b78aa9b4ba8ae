"""What a transport front needs from the server side, whatever carries it (a child's stdio, HTTP, SSE).

An :class:`Upstream` takes the core's outgoing messages (``send``) and hands every message the server
produces to the ``deliver`` callback it was built with, tagged with the ``context`` of the send that caused
it (the HTTP front passes the client exchange, so an answer's related messages go back on its stream;
``None`` for messages the server sent unprompted). It never raises out of ``send``: a message the server
cannot be reached for comes back through ``deliver`` as a JSON-RPC error for its id, so the core answers
the client and settles the call like any other error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

Deliver = Callable[[bytes, object], Awaitable[None]]


class UpstreamError(Exception):
    """The server cannot be started or reached at all (the session cannot begin)."""


class Upstream(Protocol):
    async def open(self) -> None:
        """Start the server or check it can be reached; raise :class:`UpstreamError` if not."""

    async def send(self, data: bytes, context: object = None) -> None:
        """One message (or batch) for the server."""

    async def wait_closed(self) -> int:
        """Wait until the server side is gone; its exit status (0 for a remote server closed politely)."""

    async def close(self) -> None:
        """The client is gone: end the server side politely, then for good."""

    def forward_signal(self, signum: int) -> None:
        """Pass a signal on, where that means anything (a child process)."""
