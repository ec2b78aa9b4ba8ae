"""The requests a session has sent upstream and not yet seen answered, under ids the proxy assigned.

Every request forwarded to the server goes out under a fresh integer from one counter, whether the client
sent it or the proxy made it itself; the client's own id never reaches the server. So an answer can only
ever be matched to the one request it was for: two client requests under one id, a client id that looks
like one of ours, or an id a JavaScript server rounds on the way back can no longer confuse the pairing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from regoguard.guard import Verdict

Kind = Literal["request", "call", "list", "internal", "initialize"]
LATE_IDS_KEPT = 4096
"""How many answered-elsewhere ids (cancelled, failed) are remembered, so a late answer is dropped quietly."""


@dataclass
class Pending:
    """One request upstream.

    ``client_id`` is the client's id as the client wrote it (JSON text), ``key`` the value it names (see
    :func:`regoguard.proxy.ids.id_key`); both are None for the proxy's own requests. ``verdict`` is the
    guard's verdict of an allowed ``tools/call``.
    """

    kind: Kind
    client_id: str | None = None
    key: Hashable | None = None
    verdict: Verdict | None = None


class InFlight:
    """Upstream id → pending request, and client id → upstream id for the client's requests."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._by_upstream: dict[int, Pending] = {}
        self._by_client: dict[Hashable, int] = {}
        self._late: OrderedDict[int, None] = OrderedDict()
        self._next = 0

    def __len__(self) -> int:
        return len(self._by_upstream)

    def client_busy(self, key: Hashable) -> bool:
        """True when a client request under this id is still waiting for its answer."""
        return key in self._by_client

    @property
    def full(self) -> bool:
        return len(self._by_upstream) >= self.max_pending

    def add(self, pending: Pending) -> int:
        """Register a request about to go upstream; return the id it goes out under."""
        self._next += 1
        upstream = self._next
        self._by_upstream[upstream] = pending
        if pending.key is not None:
            self._by_client[pending.key] = upstream
        return upstream

    def peek(self, upstream: int) -> Pending | None:
        """The request still waiting under this upstream id, left in place."""
        return self._by_upstream.get(upstream)

    def upstream_for(self, key: Hashable) -> int | None:
        return self._by_client.get(key)

    def pop(self, upstream: int) -> Pending | None:
        """The request this answer is for, removed; None for an id never sent or already answered."""
        pending = self._by_upstream.pop(upstream, None)
        if pending is not None and pending.key is not None:
            self._by_client.pop(pending.key, None)
        return pending

    def retire(self, upstream: int) -> Pending | None:
        """Remove a request whose answer will no longer be relayed (cancelled, or timed out): a late
        answer is then recognised as late rather than as an answer to nothing."""
        pending = self.pop(upstream)
        self._late[upstream] = None
        while len(self._late) > LATE_IDS_KEPT:
            self._late.popitem(last=False)
        return pending

    def is_late(self, upstream: int) -> bool:
        return upstream in self._late

    def drain(self) -> Iterator[tuple[int, Pending]]:
        """Every pending request, removed (the server is gone)."""
        while self._by_upstream:
            upstream = next(iter(self._by_upstream))
            pending = self.pop(upstream)
            assert pending is not None
            yield upstream, pending
