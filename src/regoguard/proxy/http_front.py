"""The HTTP front: Streamable HTTP for many clients at once (both protocol eras), each MCP session relayed
through its own :class:`~regoguard.proxy.core.RelayCore` to its own upstream.

Protocol eras, told apart as the MCP SDK's server does (the ``MCP-Protocol-Version`` header, then the body):

- 2025-11-25 and older handshake revisions: ``initialize`` opens a session and its answer carries the
  ``Mcp-Session-Id`` this proxy issued (never the server's own); every later POST, GET and DELETE must
  name a live session (400 without one, 404 for an unknown or ended one).
- 2026-07-28: no session. Each POST carries one request whose ``_meta`` holds the version and
  capabilities; the routing headers (``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name``) must agree with
  the body or the request is refused with the spec's ``HEADER_MISMATCH``. The policy reads the body only.
  GET and DELETE get 405. A principal's such requests share one relay (so its limits hold across them),
  and the front gives each request its own id and progress token on the way in, restoring the client's
  on the way out.

The rest is the same for both: Host and Origin are checked first (403/421), a POST must be JSON sent as
UTF-8 and accept JSON and SSE, bodies are bounded in size and time, notifications and responses get 202,
and answers go back as JSON when the proxy had them at once, else as an SSE stream that also carries
the server's messages for that request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp_types import HEADER_MISMATCH
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from regoguard.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from regoguard.metrics import Metrics
from regoguard.proxy import ids, jsonrpc
from regoguard.proxy.auth import AuthError, Verifier, challenge, resource_metadata
from regoguard.proxy.http_checks import (
    HostRules,
    Refusal,
    accepts,
    check_host_and_origin,
    check_post_headers,
    read_body,
)
from regoguard.proxy.http_params import param_header_rejection
from regoguard.proxy.http_sessions import (
    Exchange,
    FrontSession,
    SessionTable,
    StreamExchange,
    progress_tokens,
    replace_progress_token,
    request_keys,
)
from regoguard.proxy.upstream import UpstreamError

log = structlog.get_logger("regoguard.proxy")

METADATA_PATH = "/.well-known/oauth-protected-resource"
METRICS_PATH = "/metrics"
SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
LAST_EVENT_HEADER = "last-event-id"
KEEPALIVE_SECONDS = 15.0
TICK_SECONDS = 0.5
SSE_HEADERS = {"cache-control": "no-cache, no-transform", "x-accel-buffering": "no"}


@dataclass(frozen=True)
class FrontOptions:
    path: str = "/mcp"
    max_body_bytes: int = 16 * 1024 * 1024
    body_timeout: float = 30.0


def _error_body(code: int, message: str, raw_id: str | None = None, data: Any = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    rest = json.dumps({"error": err}, ensure_ascii=False)
    return ('{"jsonrpc":"2.0","id":' + (raw_id or "null") + "," + rest[1:]).encode("utf-8", "surrogatepass")


def _json(body: bytes, status: int = 200, session: FrontSession | None = None) -> Response:
    headers = {SESSION_HEADER: session.id} if session is not None and not session.stateless else None
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _refusal(exc: Refusal) -> Response:
    headers = {"allow": "GET, POST, DELETE"} if exc.status == 405 else None
    return Response(_error_body(exc.code, exc.message), status_code=exc.status, media_type="application/json",
                    headers=headers)


class HttpFront:
    """The ASGI application: ``path`` for Streamable HTTP, plus the legacy SSE endpoints when enabled."""

    def __init__(self, table: SessionTable, rules: HostRules, options: FrontOptions,
                 legacy: Any = None, verifier: Verifier | None = None, resource: str = "",
                 metrics: Metrics | None = None) -> None:
        self.table = table
        self.rules = rules
        self.options = options
        self.legacy = legacy
        self.verifier = verifier
        self.metrics = metrics
        self.resource = resource  # this gateway's canonical URL (the tokens' audience)
        base = resource.removesuffix(options.path) if resource.endswith(options.path) else resource.rstrip("/")
        self.metadata_paths = (METADATA_PATH, METADATA_PATH + options.path)
        self.metadata_url = base + METADATA_PATH + options.path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            check_host_and_origin(request, self.rules)
            response = await self._authenticated(request)
        except Refusal as exc:
            response = _refusal(exc)
        except Exception:  # never a traceback to the client, never the end of the server
            log.exception("internal error while handling an HTTP request")
            response = Response(_error_body(jsonrpc.INTERNAL_ERROR, "regoguard could not handle this request"),
                                status_code=500, media_type="application/json")
        await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        sweeper: asyncio.Task[None] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                sweeper = asyncio.ensure_future(self._sweep())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if sweeper is not None:
                    sweeper.cancel()
                await self.table.close_all()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _sweep(self) -> None:
        """Every TICK_SECONDS, time passes in every relay; now and then idle sessions are ended."""
        interval = max(0.5, min(30.0, self.table.options.idle_timeout / 4))
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            with contextlib.suppress(Exception):
                await self.table.tick()
            if time.monotonic() - last >= interval:
                last = time.monotonic()
                with contextlib.suppress(Exception):
                    await self.table.sweep()

    async def _authenticated(self, request: Request) -> Response:
        """Who is asking (a verified bearer token, when the gateway has keys), then the request itself."""
        if request.url.path in self.metadata_paths and self.verifier is not None:
            if request.method != "GET":
                raise Refusal(405, "Method Not Allowed")
            return Response(json.dumps(resource_metadata(self.resource, self.verifier.options)),
                            media_type="application/json")
        if request.url.path == METRICS_PATH and self.metrics is not None:
            if request.method != "GET":
                raise Refusal(405, "Method Not Allowed")
            return Response(self.metrics.render(), media_type=METRICS_CONTENT_TYPE)
        principal = self.table.default_principal
        if self.verifier is not None:
            try:
                principal = self.verifier.verify(request.headers.get("authorization"))
            except AuthError as exc:
                body = json.dumps({"error": exc.error, "error_description": exc.description})
                return Response(body, status_code=exc.status, media_type="application/json",
                                headers={"www-authenticate": challenge(exc, self.metadata_url)})
        request.state.principal = principal
        return await self._route(request)

    async def _route(self, request: Request) -> Response:
        path = request.url.path
        if self.legacy is not None and path in self.legacy.paths:
            response: Response = await self.legacy.handle(request)
            return response
        if path.rstrip("/") != self.options.path.rstrip("/"):
            return Response("Not Found", status_code=404, media_type="text/plain")
        versions = request.headers.getlist(VERSION_HEADER)
        modern = bool(versions) and versions[0] not in HANDSHAKE_PROTOCOL_VERSIONS
        if request.method == "POST":
            return await self._post(request, modern)
        if modern or request.method not in ("GET", "DELETE"):
            raise Refusal(405, "Method Not Allowed")
        session = self._session(request)
        if request.method == "DELETE":
            await self.table.remove(session)
            return Response(status_code=200)
        return self._get(request, session)

    def _session(self, request: Request) -> FrontSession:
        values = request.headers.getlist(SESSION_HEADER)
        if not values:
            raise Refusal(400, "Bad Request: Missing session ID")
        session = self.table.get(values[0]) if len(values) == 1 else None
        if session is None or session.principal.id != request.state.principal.id:
            # a session is bound to whoever opened it: another caller's token does not reach it
            raise Refusal(404, "Not Found: Invalid or expired session ID")
        session.refresh(request.state.principal)
        return session

    # -- POST ------------------------------------------------------------------------------------------

    async def _post(self, request: Request, modern: bool) -> Response:
        check_post_headers(request)
        body = await read_body(request, self.options.max_body_bytes, self.options.body_timeout)
        try:
            msg = jsonrpc.loads(body)
        except jsonrpc.ParseError as exc:
            return _json(_error_body(jsonrpc.PARSE_ERROR, f"Parse error: {exc}", ids.salvage_id(body)), 400)
        has_session = bool(request.headers.getlist(SESSION_HEADER))
        if not modern and not has_session and isinstance(msg, dict) and jsonrpc.is_stateless(msg):
            modern = True  # a 2026-07-28 body without its version header: the ladder says what is wrong
        if modern:
            return await self._post_modern(request, msg, body)
        if isinstance(msg, dict) and msg.get("method") == "initialize" and not has_session:
            try:
                session = await self.table.create(request.state.principal)
            except UpstreamError as exc:
                log.warning("could not open the server side of a new session", error=str(exc))
                return _json(_error_body(jsonrpc.INTERNAL_ERROR, str(exc), ids.raw_id(body.decode())), 502)
        else:
            session = self._session(request)
        return await self._relay(request, session, body, msg)

    async def _post_modern(self, request: Request, msg: Any, body: bytes) -> Response:
        if not isinstance(msg, dict) or "method" not in msg:
            return _json(_error_body(jsonrpc.INVALID_REQUEST, "Invalid Request: one JSON-RPC request per POST"), 400)
        if "id" not in msg:
            return Response(status_code=202)  # this era has no client notifications over HTTP
        raw_id = ids.raw_id(body.decode("utf-8"))
        verdict = _classify(request, msg)
        if isinstance(verdict, InboundLadderRejection):
            status = ERROR_CODE_HTTP_STATUS.get(verdict.code, 400)
            return _json(_error_body(verdict.code, verdict.message, raw_id, verdict.data), status)
        if msg.get("method") == "initialize":  # gone from this era: the front's own routing answers it
            return _json(_error_body(jsonrpc.METHOD_NOT_FOUND, "Method not found: initialize is not part of "
                                     f"protocol {jsonrpc.STATELESS_PROTOCOL}", raw_id), 404)
        try:
            session = await self.table.stateless(request.state.principal)
        except UpstreamError as exc:
            return _json(_error_body(jsonrpc.INTERNAL_ERROR, str(exc), raw_id), 502)
        params = msg.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        schema = session.core.session.schemas.get(name) if isinstance(name, str) else None
        rejection = param_header_rejection(msg, request.headers.items(), schema)
        if rejection is not None:
            code, message, data = rejection
            return _json(_error_body(code, message, raw_id, data), ERROR_CODE_HTTP_STATUS.get(code, 400))
        front_id = session.next_front_id()
        text = ids.with_id(body.decode("utf-8", "surrogatepass"), str(front_id))
        key = ids.id_key(front_id)
        assert raw_id is not None
        # Clients sharing this relay may use the same progressToken: each request gets the front's own
        # (its front id), and its progress goes back under the client's token.
        text, token_raw = replace_progress_token(text, str(front_id))
        exchange = Exchange({key}, sse=accepts(request)[1], restore={key: raw_id},
                            progress=[key] if token_raw is not None else [])
        exchange.progress_raw = token_raw
        return await self._answer(request, session, text.encode("utf-8", "surrogatepass"), exchange, modern=True)

    async def _relay(self, request: Request, session: FrontSession, body: bytes, msg: Any) -> Response:
        keys = request_keys(msg)
        if not keys:
            entries = msg if isinstance(msg, list) else [msg]
            if not entries or not all(jsonrpc.is_notification(e) or jsonrpc.is_response(e) for e in entries):
                # Nothing in it can be answered under an id: refused here, so no error goes astray on
                # another of the session's streams.
                return _json(_error_body(jsonrpc.INVALID_REQUEST, "Invalid Request: not a JSON-RPC request, "
                                         "notification or response"), 400, session)
            await session.submit(body, Exchange(set(), sse=False))
            return Response(status_code=202, headers={SESSION_HEADER: session.id})
        exchange = Exchange(set(keys), sse=True, progress=progress_tokens(msg))
        return await self._answer(request, session, body, exchange, modern=False, batch=isinstance(msg, list))

    async def _answer(self, request: Request, session: FrontSession, body: bytes, exchange: Exchange,
                      modern: bool, batch: bool = False) -> Response:
        exchange.batch = batch
        await session.submit(body, exchange)
        if not exchange.open:  # answered at once (a denial, an error): plain JSON
            session.detach(exchange)
            return self._json_answer(_merge(_drain(exchange), batch), session, modern)
        if not exchange.sse or batch:
            return await self._answer_json(request, session, exchange, batch, modern)
        # The first message decides: the answer alone goes back as JSON; anything before it opens a stream.
        first = await _next_or_disconnect(request, exchange)
        if first is _GONE:
            await self._abandon(session, exchange, modern)
            return Response(status_code=499)  # nobody reads it
        assert not isinstance(first, _Gone)
        if first is None or (not exchange.open and exchange.queue.qsize() == 1):
            session.detach(exchange)
            return self._json_answer(first or b"", session, modern)
        headers = dict(SSE_HEADERS)
        if not session.stateless:
            headers[SESSION_HEADER] = session.id
        return StreamingResponse(self._stream(session, exchange, modern, first), media_type="text/event-stream",
                                 headers=headers)

    def _json_answer(self, body: bytes, session: FrontSession, modern: bool) -> Response:
        """A JSON answer; in the 2026-07-28 era an error's HTTP status follows its code (the spec's table)."""
        status = 200
        if modern and body.startswith(b"{") and b'"error"' in body:
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                status = ERROR_CODE_HTTP_STATUS.get(json.loads(body)["error"]["code"], 200)
        return _json(body, status, session=session)

    async def _answer_json(self, request: Request, session: FrontSession, exchange: Exchange, batch: bool,
                           modern: bool) -> Response:
        parts: list[bytes] = []
        while (item := await _next_or_disconnect(request, exchange)) is not None:
            if isinstance(item, _Gone):
                await self._abandon(session, exchange, modern)
                return Response(status_code=499)
            parts.append(item)
        session.detach(exchange)
        answers = [p for p in parts if _is_answer(p)]  # a JSON answer has no room for the server's requests
        return _json(_merge(answers, batch), session=session)

    async def _stream(self, session: FrontSession, exchange: Exchange, modern: bool,
                      first: bytes | None) -> AsyncIterator[bytes]:
        """An exchange's messages as SSE events, each with an id (``<exchange>-<n>``) a client can resume
        from with ``Last-Event-ID`` (2025-11-25) after its connection drops."""
        try:
            if first is not None:
                yield exchange.event(first)
            while (item := await exchange.queue.get()) is not None:
                yield exchange.event(item)
        finally:
            if exchange.open:
                await self._abandon(session, exchange, modern)
            else:
                session.detach(exchange)

    async def _abandon(self, session: FrontSession, exchange: Exchange, modern: bool) -> None:
        """The client went away before its answers came. In the 2026-07-28 era a closed stream is the
        client's cancellation, passed on upstream; before it, disconnecting cancels nothing (the spec), and
        the answers are kept for a client that resumes the stream (``Last-Event-ID``)."""
        if not modern:
            session.orphan(exchange)  # its answers keep arriving, for a GET with Last-Event-ID to resume
            return
        exchange.open = False
        session.detach(exchange)
        for key in list(exchange.waiting):
            front_id = int(key[1])  # type: ignore[index]  # stateless requests carry the front's integer ids
            note = jsonrpc.encode({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                   "params": {"requestId": front_id, "reason": "the client closed the stream"}})
            with contextlib.suppress(Exception):
                await session.deliver(session.core.client_line(note))

    # -- GET -------------------------------------------------------------------------------------------

    def _get(self, request: Request, session: FrontSession) -> Response:
        if not accepts(request)[1]:
            raise Refusal(406, "Not Acceptable: Client must accept text/event-stream")
        resumed = session.resume(request.headers.get(LAST_EVENT_HEADER, ""))
        if resumed is not None:
            headers = {**SSE_HEADERS, SESSION_HEADER: session.id}
            return StreamingResponse(self._stream(session, resumed, False, None), media_type="text/event-stream",
                                     headers=headers)
        if session.get_stream is not None and session.get_stream.open:
            raise Refusal(409, "Conflict: Only one SSE stream is allowed per session")
        stream = StreamExchange(set(), sse=True)
        session.get_stream = stream
        session.exchanges[stream.serial] = stream
        headers = {**SSE_HEADERS, SESSION_HEADER: session.id}
        return StreamingResponse(self._listen(session, stream), media_type="text/event-stream", headers=headers)

    async def _listen(self, session: FrontSession, stream: StreamExchange) -> AsyncIterator[bytes]:
        try:
            yield b": regoguard stream open\n\n"
            while True:
                try:
                    item = await asyncio.wait_for(stream.queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if item is None:
                    return
                session.touch()
                yield stream.event(item)
        finally:
            stream.open = False
            session.detach(stream)


def _classify(request: Request, msg: dict[str, Any]) -> Any:
    """The SDK's 2026-07-28 request ladder (``_meta``, then the routing headers, then the version)."""
    duplicated = find_duplicated_routing_header(request.headers.items())
    if duplicated is not None:
        return InboundLadderRejection(code=HEADER_MISMATCH, message=f"{duplicated} header appears more than once")
    try:
        return classify_inbound_request(msg, headers=dict(request.headers))
    except ValueError:  # the SDK's header decoder raises on a base64 sentinel that is not ASCII
        return InboundLadderRejection(code=HEADER_MISMATCH, message="a routing header cannot be decoded")


class _Gone:
    pass


_GONE = _Gone()


async def _next_or_disconnect(request: Request, exchange: Exchange) -> bytes | _Gone | None:
    """The exchange's next message, or ``_GONE`` if the client disconnects first (the body has been read,
    so the only thing ``receive`` can still bring is the disconnect)."""
    if not exchange.queue.empty():
        return exchange.queue.get_nowait()
    getter = asyncio.ensure_future(exchange.queue.get())
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not getter.done():
            getter.cancel()
    if getter in done:
        return getter.result()
    return _GONE


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _drain(exchange: Exchange) -> list[bytes]:
    parts: list[bytes] = []
    while not exchange.queue.empty():
        item = exchange.queue.get_nowait()
        if item is not None:
            parts.append(item)
    return parts


def _is_answer(data: bytes) -> bool:
    try:
        msg = json.loads(data)
    except ValueError:
        return False
    entries = msg if isinstance(msg, list) else [msg]
    return any(isinstance(e, dict) and "method" not in e for e in entries)


def _merge(parts: list[bytes], batch: bool) -> bytes:
    """One JSON body from the answers: the message itself, or one array for a batch."""
    if not batch:
        return parts[-1] if parts else b""
    pieces: list[str] = []
    for part in parts:
        text = part.decode("utf-8", "surrogatepass").strip()
        if text.startswith("["):
            spans = ids.element_spans(text)
            pieces.extend(text[b:e] for b, e in spans)
        else:
            pieces.append(text)
    return ("[" + ",".join(pieces) + "]").encode("utf-8", "surrogatepass")
