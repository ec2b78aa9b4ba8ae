"""The deprecated HTTP+SSE transport (protocol 2024-11-05) on the HTTP front, for older clients.

``GET /sse`` opens a session and its one stream; the first event, ``endpoint``, names where to POST
(``/messages?session_id=…``). Each POST is answered 202 at once and everything for the client, answers
included, goes on the stream. Sessions, policy and relaying are the Streamable HTTP front's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import structlog
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from regoguard.proxy import jsonrpc
from regoguard.proxy.http_checks import Refusal, accepts, read_body
from regoguard.proxy.http_sessions import FrontSession, SessionTable, StreamExchange, request_keys, sse_event
from regoguard.proxy.upstream import UpstreamError

if TYPE_CHECKING:
    from regoguard.proxy.http_front import FrontOptions

log = structlog.get_logger("regoguard.proxy")


class LegacySse:
    def __init__(self, table: SessionTable, options: FrontOptions, sse_path: str = "/sse",
                 message_path: str = "/messages") -> None:
        self.table = table
        self.options = options
        self.sse_path = sse_path
        self.message_path = message_path
        self.paths = frozenset({sse_path, message_path})
        self._ending: set[asyncio.Future[None]] = set()

    async def handle(self, request: Request) -> Response:
        if request.url.path == self.sse_path:
            if request.method != "GET":
                raise Refusal(405, "Method Not Allowed")
            return await self._open(request)
        if request.method != "POST":
            raise Refusal(405, "Method Not Allowed")
        return await self._message(request)

    async def _open(self, request: Request) -> Response:
        if not accepts(request)[1]:
            raise Refusal(406, "Not Acceptable: Client must accept text/event-stream")
        try:
            session = await self.table.create(request.state.principal)
        except UpstreamError as exc:
            raise Refusal(502, str(exc), jsonrpc.INTERNAL_ERROR) from exc
        stream = StreamExchange(set(), sse=True)
        session.get_stream = stream
        session.exchanges[stream.serial] = stream
        return StreamingResponse(self._events(session, stream), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache, no-transform"})

    async def _events(self, session: FrontSession, stream: StreamExchange) -> AsyncIterator[bytes]:
        try:
            yield f"event: endpoint\ndata: {self.message_path}?session_id={session.id}\n\n".encode()
            while (item := await stream.queue.get()) is not None:
                session.touch()
                yield sse_event(item)
        finally:
            stream.open = False
            # The stream is the session: when the client leaves, the session ends. Not awaited here: this
            # task is being cancelled, and the server's shutdown must run to its end.
            ending = asyncio.ensure_future(self.table.remove(session, "the client closed its SSE stream"))
            self._ending.add(ending)
            ending.add_done_callback(self._ending.discard)

    async def _message(self, request: Request) -> Response:
        session_id = request.query_params.get("session_id")
        session = self.table.get(session_id) if session_id else None
        if session is not None and session.principal.id != request.state.principal.id:
            session = None  # bound to whoever opened it
        if session is None or session.get_stream is None or not session.get_stream.open:
            raise Refusal(404, "Not Found: unknown or ended session")
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != "application/json":
            raise Refusal(415, "Unsupported Media Type: Content-Type must be application/json")
        body = await read_body(request, self.options.max_body_bytes, self.options.body_timeout)
        session.refresh(request.state.principal)  # this POST's token decides (after the body: no await between)
        stream = session.get_stream
        try:
            msg = jsonrpc.loads(body)
        except jsonrpc.ParseError as exc:
            stream.push(jsonrpc.encode(jsonrpc.error(None, jsonrpc.PARSE_ERROR, f"Parse error: {exc}")))
            return Response("Accepted", status_code=202)
        stream.waiting.update(request_keys(msg))
        await session.submit(body, stream)
        return Response("Accepted", status_code=202)



