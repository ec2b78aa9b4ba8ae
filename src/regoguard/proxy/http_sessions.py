"""The HTTP front's sessions: one :class:`RelayCore` and one upstream per MCP session, and the streams
(POST answers, the GET stream) each message of the core goes out on.

An :class:`Exchange` is one client HTTP request waiting for messages: a POST waiting for the answers to the
requests it carried, or a session's GET stream. The core says which client request each outgoing message
answers; messages that answer nothing (server requests, notifications) go on the stream of the exchange
that caused them when the upstream can tell (HTTP upstreams can), else on the GET stream, else on the
newest open POST stream of the session, else nowhere (logged).

All of this runs on one event loop; the core is synchronous, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import structlog

from regoguard.guard import Guard
from regoguard.metrics import Metrics
from regoguard.pinning import Pinning
from regoguard.proxy import ids
from regoguard.proxy.auth import Principal
from regoguard.proxy.core import CoreOptions, Outbox, RelayCore, ToClient
from regoguard.proxy.jsonrpc import META_SUBSCRIPTION_ID
from regoguard.proxy.session import Session
from regoguard.proxy.upstream import Deliver, Upstream, UpstreamError

log = structlog.get_logger("regoguard.proxy")

MAX_QUEUED = 10_000  # messages waiting on one stream before the stream is given up
REPLAY_EVENTS = 256  # events of one stream kept for a client that resumes it
MAX_ORPHANS = 64  # abandoned streams a session keeps for resumption


class Exchange:
    """One client HTTP request that messages go out on: a POST awaiting answers, or a GET stream."""

    _serial = itertools.count(1)

    def __init__(self, waiting: set[Hashable], sse: bool, restore: dict[Hashable, str] | None = None,
                 progress: list[Hashable] | None = None) -> None:
        self.serial = next(self._serial)
        self.waiting = waiting
        self.sse = sse
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.open = True
        self.restore = restore or {}  # front-assigned id key -> the client's raw id (stateless requests)
        self.progress = progress or []  # the progressTokens its requests set: their notifications go here
        self.orphaned = False  # its client went away; kept for a resumption
        self.batch = False  # answered as one JSON array: no room for the server's own messages
        self.progress_raw: str | None = None  # the client's own progressToken, when the front replaced it
        self._sent: deque[tuple[int, bytes]] = deque(maxlen=REPLAY_EVENTS)
        self._events = 0

    @property
    def sent_any(self) -> bool:
        return self._events > 0

    def event(self, data: bytes) -> bytes:
        """``data`` as the next SSE event of this exchange, remembered for a replay."""
        self._events += 1
        self._sent.append((self._events, data))
        return sse_event(data, f"{self.serial}-{self._events}")

    def replay_after(self, seen: int) -> None:
        """Put the events after ``seen`` back at the head of the queue (a resumed stream sends them again)."""
        again = [data for n, data in self._sent if n > seen]
        rest: list[bytes | None] = []
        while not self.queue.empty():
            rest.append(self.queue.get_nowait())
        self._events = seen
        self._sent = deque(((n, d) for n, d in self._sent if n <= seen), maxlen=REPLAY_EVENTS)
        for item in [*again, *rest]:
            self.queue.put_nowait(item)

    def push(self, data: bytes, answers: tuple[Hashable, ...] = (), related: Hashable | None = None) -> None:
        if not self.open:
            return
        tag = answers[0] if answers else related
        if self.restore and tag is not None:
            raw = self.restore.get(tag)
            if raw is not None and answers:
                data = ids.with_id(data.decode("utf-8", "surrogatepass"), raw).encode("utf-8", "surrogatepass")
            elif raw is not None:
                data = _with_subscription_id(data, raw)
        if self.progress_raw is not None and not answers and b'"notifications/progress"' in data:
            text, _ = replace_progress_token(data.decode("utf-8", "surrogatepass"), self.progress_raw, "params")
            data = text.encode("utf-8", "surrogatepass")
        if self.queue.qsize() >= MAX_QUEUED:
            log.warning("a client stream fell too far behind; closing it")
            self.finish()
            return
        self.queue.put_nowait(data)
        for key in answers:
            self.waiting.discard(key)
        if not self.waiting and not self.is_stream:
            self.finish()

    @property
    def is_stream(self) -> bool:
        return False

    def finish(self) -> None:
        if self.open:
            self.open = False
            self.queue.put_nowait(None)


class StreamExchange(Exchange):
    """A session's GET stream: stays open until the client leaves or the session ends."""

    @property
    def is_stream(self) -> bool:
        return True


@dataclass
class FrontSession:
    """One MCP session of the HTTP front: its core, its upstream and its open exchanges."""

    id: str
    core: RelayCore
    upstream: Upstream
    principal: Principal
    stateless: bool = False
    last_active: float = field(default_factory=time.monotonic)
    waiters: dict[Hashable, Exchange] = field(default_factory=dict)
    # POSTs that reused the id of a request another exchange is still waiting on, oldest first: the core
    # refuses each (later, if it parked them behind a tools/list fetch), and the refusal is theirs
    duplicates: dict[Hashable, list[Exchange]] = field(default_factory=dict)
    progress: dict[Hashable, Exchange] = field(default_factory=dict)
    exchanges: dict[int, Exchange] = field(default_factory=dict)
    get_stream: StreamExchange | None = None
    orphans: dict[int, Exchange] = field(default_factory=dict)
    ended: bool = False
    watcher: asyncio.Future[None] | None = None
    on_end: Callable[[], None] | None = None
    _front_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_front_id(self) -> int:
        return next(self._front_ids)

    def refresh(self, principal: Principal) -> None:
        """The caller's latest verified token: its claims are what decisions read from now on (a session
        never keeps the claims of an older token); what was visible to the old ones is asked again."""
        relay = self.core.session
        if relay.claims != principal.claims:
            relay.claims = principal.claims
            relay.visibility.clear()
        self.principal = principal

    def touch(self) -> None:
        self.last_active = time.monotonic()

    async def submit(self, body: bytes, exchange: Exchange) -> None:
        """One client message (or batch) on ``exchange``. What the core answers at once for its requests
        goes to it before it waits for anything (a refused duplicate id must not take over the waiter of
        the request already in flight under that id)."""
        self.touch()
        out = self.core.client_line(body, can_ask=exchange.sse)  # a JSON answer cannot carry a question
        later: list[ToClient] = []
        for item in out.to_client:
            if item.answers and item.answers[0] in exchange.waiting:
                exchange.push(item.data, item.answers)
            else:
                later.append(item)
        out.to_client = later
        if not exchange.waiting and not exchange.is_stream:
            exchange.finish()  # nothing to wait for (notifications, responses, or all answered at once)
        elif exchange.open:
            self.exchanges[exchange.serial] = exchange  # a stream is there already: the same entry
            for key in exchange.waiting:
                if self.waiters.setdefault(key, exchange) is not exchange:
                    self.duplicates.setdefault(key, []).append(exchange)
            for token in exchange.progress:
                self.progress[token] = exchange
        await self.deliver(out, exchange)

    def orphan(self, exchange: Exchange) -> None:
        """The client of a POST stream went away (2025-11-25: that cancels nothing): its answers still
        come and are queued, to be sent on a GET that names one of its events in ``Last-Event-ID``."""
        if not exchange.sent_any:
            exchange.open = False  # the client never got an event id: nothing it could resume from
            self.detach(exchange)
            return
        exchange.orphaned = True
        self.orphans[exchange.serial] = exchange
        while len(self.orphans) > MAX_ORPHANS:
            oldest = next(iter(self.orphans.values()))
            del self.orphans[oldest.serial]
            oldest.finish()
            self.detach(oldest)

    def resume(self, last_event_id: str) -> Exchange | None:
        """The abandoned stream ``last_event_id`` belongs to, ready to send what followed it; None if it
        names no stream this session kept."""
        serial, sep, seen = last_event_id.partition("-")
        if not (sep and _digits(serial) and _digits(seen)):
            return None  # not one of ours: "²-¹" is digits to isdigit(), not to int()
        exchange = self.orphans.pop(int(serial), None)
        if exchange is None:
            return None
        exchange.orphaned = False
        exchange.replay_after(int(seen))
        return exchange

    def detach(self, exchange: Exchange) -> None:
        self.exchanges.pop(exchange.serial, None)
        for key in list(exchange.waiting):
            if self.waiters.get(key) is exchange:
                del self.waiters[key]
            queued = self.duplicates.get(key)
            if queued is not None and exchange in queued:
                queued.remove(exchange)
                if not queued:
                    del self.duplicates[key]
        for token in exchange.progress:
            if self.progress.get(token) is exchange:
                del self.progress[token]
        if self.get_stream is exchange:
            self.get_stream = None

    async def deliver(self, out: Outbox, context: object = None) -> None:
        """Send what the core produced: answers to their exchanges, the rest to the best open stream."""
        for item in out.to_client:
            if item.duplicate and item.answers and (queued := self.duplicates.get(item.answers[0])):
                # not the request in flight under that id: it is still waiting for its answer
                queued.pop(0).push(item.data, item.answers)
                if not queued:
                    del self.duplicates[item.answers[0]]
                continue
            if item.answers:
                target = self.waiters.get(item.answers[0])
                for key in item.answers:
                    self.waiters.pop(key, None)
                if target is None:
                    log.debug("dropped an answer whose client stream is gone")
                    continue
                target.push(item.data, item.answers)
                continue
            if item.related is not None and (owner := self.waiters.get(item.related)) is not None:
                owner.push(item.data, related=item.related)
                continue
            target = self._stream_for(context, item.data)
            if target is None:
                log.debug("dropped a server message: the client has no open stream to receive it")
                continue
            target.push(item.data)
        for data in out.to_server:
            await self.upstream.send(data, context)

    def _stream_for(self, context: object, data: bytes) -> Exchange | None:
        if isinstance(context, Exchange) and context.open and context.sse and not context.orphaned:
            return context
        token = _progress_token(data) if self.progress else None
        if token is not None and (owner := self.progress.get(token)) is not None and owner.open and owner.sse:
            return owner
        if self.stateless:
            return None  # clients share this relay: what cannot be tied to a request reaches nobody
        if self.get_stream is not None and self.get_stream.open:
            return self.get_stream
        for exchange in reversed(self.exchanges.values()):
            if exchange.open and exchange.sse and not exchange.is_stream and not exchange.orphaned \
                    and not exchange.batch:
                return exchange
        return None

    async def from_server(self, line: bytes, context: object) -> None:
        await self.deliver(self.core.server_line(line), context)

    async def end(self, reason: str = "the MCP session ended") -> None:
        """End the session: its upstream goes, what waits is answered, its streams close."""
        if self.ended:
            return
        self.ended = True
        if self.on_end is not None:
            self.on_end()
        with contextlib.suppress(Exception):
            # shielded: a client that went away cancels its request's task, never the server's shutdown
            await asyncio.shield(asyncio.ensure_future(self.upstream.close()))
        await self.deliver(self.core.server_closed(reason))
        self.core.guard.end_session(self.core.session.id)
        for exchange in list(self.exchanges.values()):
            exchange.finish()


@dataclass(frozen=True)
class SessionOptions:
    server_name: str
    principal: str
    idle_timeout: float = 1800.0
    max_sessions: int = 1000
    max_sessions_per_principal: int = 64
    refund_on_tool_error: bool = False
    pinning: Pinning | None = None


class SessionTable:
    """Every live session of the front, the shared one for stateless (2026-07-28) requests included."""

    def __init__(self, guard: Guard, make_upstream: Callable[[Deliver], Upstream], options: SessionOptions) -> None:
        self.guard = guard
        self.make_upstream = make_upstream
        self.options = options
        self.sessions: dict[str, FrontSession] = {}
        self._stateless: dict[str, FrontSession] = {}
        self._stateless_locks: dict[str, asyncio.Lock] = {}
        self._opening: dict[str, int] = {}  # sessions being opened, per principal (counted before they exist)
        self.default_principal = Principal(options.principal)
        self.metrics: Metrics | None = None

    def _count(self, principal: str | None = None) -> int:
        live = [*self.sessions.values(), *self._stateless.values()]
        if principal is None:
            return len(live) + sum(self._opening.values())
        return sum(1 for s in live if s.principal.id == principal) + self._opening.get(principal, 0)

    async def create(self, principal: Principal | None = None, stateless: bool = False) -> FrontSession:
        """A new session with its own upstream (raises :class:`UpstreamError` if it cannot start, or the
        proxy, or this principal, already has as many sessions as allowed)."""
        who = principal or self.default_principal
        if self._count() >= self.options.max_sessions:
            raise UpstreamError(f"the proxy already serves {self.options.max_sessions} sessions")
        if self._count(who.id) >= self.options.max_sessions_per_principal:
            raise UpstreamError(f"principal {who.id!r} already has {self.options.max_sessions_per_principal} "
                                "sessions; end one (DELETE) or let one idle out")
        self._opening[who.id] = self._opening.get(who.id, 0) + 1
        try:
            return await self._open(who, stateless)
        finally:
            self._opening[who.id] -= 1
            if not self._opening[who.id]:
                del self._opening[who.id]

    async def _open(self, who: Principal, stateless: bool) -> FrontSession:
        session_id = uuid.uuid4().hex
        relay_session = Session(self.options.server_name, who.id, claims=who.claims)
        core = RelayCore(self.guard, relay_session, CoreOptions(refund_on_tool_error=self.options.refund_on_tool_error,
                                                                pinning=self.options.pinning))
        holder: dict[str, FrontSession] = {}

        async def deliver(line: bytes, context: object) -> None:
            await holder["s"].from_server(line, context)

        upstream = self.make_upstream(deliver)
        session = FrontSession(session_id, core, upstream, who, stateless=stateless)
        holder["s"] = session
        await upstream.open()
        session.watcher = asyncio.ensure_future(self._watch(session))
        if self.metrics is not None:
            self.metrics.sessions.inc()
            session.on_end = self.metrics.sessions.dec
        if not stateless:
            self.sessions[session_id] = session
        return session

    async def stateless(self, principal: Principal | None = None) -> FrontSession:
        """The session a principal's 2026-07-28 requests share (there is no MCP session in that era; its
        `session` limits hold across the principal's requests to this proxy process)."""
        who = principal or self.default_principal
        session = self._stateless.get(who.id)
        if session is not None and not session.ended:
            session.refresh(who)
            return session
        lock = self._stateless_locks.setdefault(who.id, asyncio.Lock())  # one principal's start waits for itself
        async with lock:
            session = self._stateless.get(who.id)
            if session is None or session.ended:
                session = self._stateless[who.id] = await self.create(who, stateless=True)
            session.refresh(who)
            return session

    async def _watch(self, session: FrontSession) -> None:
        """The upstream went away on its own (the child exited, the remote ended the session)."""
        with contextlib.suppress(Exception):
            await session.upstream.wait_closed()
        if not session.ended:
            log.info("the MCP server side of a session ended", session=session.id[:8])
            await session.end("the MCP server exited before answering")
        self.sessions.pop(session.id, None)
        if self._stateless.get(session.principal.id) is session:
            del self._stateless[session.principal.id]

    def get(self, session_id: str) -> FrontSession | None:
        session = self.sessions.get(session_id)
        return None if session is None or session.ended else session

    async def remove(self, session: FrontSession, reason: str = "the client ended the session") -> None:
        self.sessions.pop(session.id, None)
        await session.end(reason)

    async def sweep(self) -> None:
        """End sessions (the stateless relays too) idle longer than the timeout, none with a request in
        flight."""
        now = time.monotonic()
        for session in [*self.sessions.values(), *self._stateless.values()]:
            busy = any(e.open and not e.is_stream and not e.orphaned for e in session.exchanges.values())
            if not busy and now - session.last_active > self.options.idle_timeout:
                log.info("ending an idle session", session=session.id[:8])
                if self._stateless.get(session.principal.id) is session:
                    del self._stateless[session.principal.id]
                await self.remove(session, "the session idled out")

    async def tick(self) -> None:
        """Let time pass in every session's relay (a schema fetch that takes too long is given up)."""
        for session in [*self.sessions.values(), *self._stateless.values()]:
            if not session.ended:
                with contextlib.suppress(Exception):
                    await session.deliver(session.core.tick())

    async def close_all(self) -> None:
        for session in list(self.sessions.values()):
            await self.remove(session, "the proxy is shutting down")
        for session in list(self._stateless.values()):
            await session.end("the proxy is shutting down")


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18


def request_keys(msg: Any) -> list[Hashable]:
    """The id keys of the requests in one message or batch (what a POST waits for)."""
    entries = msg if isinstance(msg, list) else [msg]
    return [ids.id_key(e["id"]) for e in entries if isinstance(e, dict) and "method" in e and "id" in e]


def progress_tokens(msg: Any) -> list[Hashable]:
    """The ``_meta.progressToken`` of each request in one message or batch."""
    tokens: list[Hashable] = []
    for entry in msg if isinstance(msg, list) else [msg]:
        params = entry.get("params") if isinstance(entry, dict) else None
        meta = params.get("_meta") if isinstance(params, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("progressToken"), str | int):
            tokens.append(ids.id_key(meta["progressToken"]))
    return tokens


def replace_progress_token(text: str, new: str, holder: str = "params._meta") -> tuple[str, str | None]:
    """``text`` with the ``progressToken`` in ``params._meta`` (a request) or ``params`` (a progress
    notification) replaced by the JSON text ``new``; and the token's own text (None: it has none)."""
    try:
        span = ids.member_span(text, "params")
        if span is not None and holder == "params._meta":
            span = ids.member_span(text, "_meta", span[0])
        found = ids.member_span(text, "progressToken", span[0]) if span is not None else None
    except ids.NoSpan:
        return text, None
    if found is None:
        return text, None
    return text[:found[0]] + new + text[found[1]:], text[found[0]:found[1]]


def _with_subscription_id(data: bytes, raw_id: str) -> bytes:
    text = data.decode("utf-8", "surrogatepass")
    p_span = ids.member_span(text, "params")
    m_span = ids.member_span(text, "_meta", p_span[0]) if p_span is not None else None
    span = ids.member_span(text, META_SUBSCRIPTION_ID, m_span[0]) if m_span is not None else None
    if span is None:
        return data
    return (text[:span[0]] + raw_id + text[span[1]:]).encode("utf-8", "surrogatepass")


def _progress_token(data: bytes) -> Hashable | None:
    if b'"notifications/progress"' not in data:
        return None
    try:
        msg = json.loads(data)
        token = msg["params"]["progressToken"]
    except (ValueError, KeyError, TypeError):
        return None
    return ids.id_key(token) if isinstance(token, str | int) else None


def sse_event(data: bytes, event_id: str | None = None) -> bytes:
    """One message as an SSE ``message`` event (a line break inside becomes another ``data:`` line)."""
    text = data.decode("utf-8", "surrogatepass").replace("\r\n", "\n").replace("\r", "\n")
    lines = "".join(f"data: {line}\n" for line in text.split("\n"))
    head = f"id: {event_id}\n" if event_id is not None else ""
    return (head + "event: message\n" + lines + "\n").encode("utf-8", "surrogatepass")
