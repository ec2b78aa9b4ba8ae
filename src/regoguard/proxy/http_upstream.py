"""A remote MCP server as an :class:`~regoguard.proxy.upstream.Upstream`: Streamable HTTP (both protocol
eras) or the legacy HTTP+SSE transport, over httpx2 (the MCP SDK's HTTP client) and its SSE parser.

What the core hands over is sent as it is: one POST per message, the bytes unchanged. Only HTTP headers are
added, and they are derived from the body, never taken from the client: ``Mcp-Session-Id`` (the one the
server gave this proxy), ``MCP-Protocol-Version`` (negotiated by ``initialize``, or the request's own
``_meta`` in the 2026-07-28 era, which also gets ``Mcp-Method`` and ``Mcp-Name``).

Every answer, whether a JSON body or events of an SSE stream, goes to ``deliver`` tagged with the context
of its POST. An HTTP failure becomes a JSON-RPC error for each request of that POST, so the core answers the
client under its own id and settles the call. Redirects are never followed: the configured headers
(credentials, often) go to the configured origin only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx2
import structlog
from mcp.shared.inbound import (
    NAME_BEARING_METHODS,
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    x_mcp_header_map,
)

from regoguard.proxy.jsonrpc import INTERNAL_ERROR, META_PROTOCOL_VERSION
from regoguard.proxy.upstream import Deliver, UpstreamError

log = structlog.get_logger("regoguard.proxy")

SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
METHOD_HEADER = "mcp-method"
NAME_HEADER = "mcp-name"
LAST_EVENT_HEADER = "last-event-id"
MAX_BODY_BYTES = 256 * 1024 * 1024
MAX_EVENT_BYTES = 256 * 1024 * 1024
RECONNECT_ATTEMPTS = 3
RECONNECT_DELAY = 1.0
FALLBACK_STATUSES = frozenset({400, 404, 405})
TRANSPORTS = ("auto", "streamable-http", "sse")


@dataclass(frozen=True)
class HttpOptions:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    connect_timeout: float = 30.0
    read_timeout: float = 300.0  # a tool call may stream for minutes


@dataclass(frozen=True)
class _Outgoing:
    """What the headers and the error replies of one POST need to know of its body."""

    request_ids: tuple[Any, ...]
    method: str | None
    name: str | None
    modern_version: str | None
    cancels: Any = None  # the upstream id a notifications/cancelled names
    arguments: Any = None  # a tools/call's arguments (for its Mcp-Param-* headers)


def _describe(data: bytes) -> _Outgoing:
    try:
        msg = json.loads(data)
    except ValueError:
        return _Outgoing((), None, None, None)
    entries = msg if isinstance(msg, list) else [msg]
    ids = tuple(e["id"] for e in entries if isinstance(e, dict) and "method" in e and "id" in e)
    if isinstance(msg, list) or not isinstance(msg, dict):
        return _Outgoing(ids, None, None, None)
    method = msg.get("method") if isinstance(msg.get("method"), str) else None
    params: dict[str, Any] = msg["params"] if isinstance(msg.get("params"), dict) else {}
    meta: dict[str, Any] = params["_meta"] if isinstance(params.get("_meta"), dict) else {}
    version = meta.get(META_PROTOCOL_VERSION)
    name_key = NAME_BEARING_METHODS.get(method or "")
    name = params.get(name_key) if name_key else None
    cancels = params.get("requestId") if method == "notifications/cancelled" else None
    arguments = params.get("arguments") if method == "tools/call" else None
    return _Outgoing(ids, method, name if isinstance(name, str) else None,
                     version if isinstance(version, str) else None, cancels, arguments)


MAY_HAVE_RUN_KEY = "regoguard/upstream"
MAY_HAVE_RUN = "may-have-run"


def _error_line(upstream_id: Any, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": INTERNAL_ERROR, "message": message}
    if data is not None:
        error["data"] = data
    return json.dumps({"jsonrpc": "2.0", "id": upstream_id, "error": error}).encode()


def same_origin(a: str, b: str) -> bool:
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.hostname, x.port) == (y.scheme, y.hostname, y.port)


class _Base:
    def __init__(self, options: HttpOptions, deliver: Deliver) -> None:
        self.options = options
        self._deliver = deliver
        timeout = httpx2.Timeout(options.connect_timeout, read=options.read_timeout)
        self._client = httpx2.AsyncClient(timeout=timeout, follow_redirects=False)
        self._tasks: set[asyncio.Task[None]] = set()
        self._done = asyncio.Event()
        self._status = 0
        self._closing = False
        self._closer: asyncio.Future[None] | None = None

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _fail(self, ids: Iterable[Any], message: str, context: object, data: Any = None,
                    sent: bool = True) -> None:
        """Answer requests the server did not answer readably. ``sent``: the request reached the server,
        which may have acted on it; the error then says so (``data["regoguard/upstream"]``), so the relay
        neither refunds its limits nor gives its approval back."""
        if sent:
            data = {**(data if isinstance(data, dict) else {}), MAY_HAVE_RUN_KEY: MAY_HAVE_RUN}
        for upstream_id in ids:
            await self._deliver(_error_line(upstream_id, message, data), context)

    def _end(self, status: int) -> None:
        if not self._done.is_set():
            self._status = status
            self._done.set()

    async def wait_closed(self) -> int:
        await self._done.wait()
        return self._status

    async def _shutdown(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._client.aclose()

    async def close(self) -> None:
        raise NotImplementedError

    def forward_signal(self, signum: int) -> None:
        """SIGINT/SIGTERM end a remote session as a client EOF does (there is no process to pass it to)."""
        if self._closer is None:  # kept apart from _tasks, which closing cancels
            self._closer = asyncio.ensure_future(self.close())


class StreamableHttpUpstream(_Base):
    """One upstream session over Streamable HTTP: POST per message, answers as JSON or SSE, the server's
    own messages on a GET stream when it offers one, DELETE at the end."""

    def __init__(self, options: HttpOptions, deliver: Deliver) -> None:
        super().__init__(options, deliver)
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._gate = asyncio.Lock()  # held through each initialize exchange
        self._get_stream: asyncio.Task[None] | None = None
        self._by_upstream_id: dict[Any, asyncio.Task[None]] = {}
        self._modern: set[Any] = set()  # upstream ids of 2026-07-28 requests (cancelled by closing)
        self._param_maps: dict[str, dict[tuple[str, ...], str]] = {}  # tool -> its x-mcp-header properties
        self.first_status: int | None = None  # for auto: the status of the very first POST

    async def open(self) -> None:
        return None

    async def send(self, data: bytes, context: object = None) -> None:
        info = _describe(data)
        if info.cancels is not None and info.cancels in self._modern:
            # The 2026-07-28 wire has no client notifications: closing the request's stream cancels it.
            self._modern.discard(info.cancels)
            task = self._by_upstream_id.pop(info.cancels, None)
            if task is not None:
                task.cancel()
            return
        if info.method == "initialize":  # its answer carries the session id every later POST needs
            async with self._gate:
                await self._exchange(data, info, context)
            return
        task = self._spawn(self._exchange(data, info, context))
        for upstream_id in info.request_ids:
            self._by_upstream_id[upstream_id] = task
            if info.modern_version is not None:
                self._modern.add(upstream_id)
        ids = info.request_ids
        task.add_done_callback(lambda _task: self._forget(ids))

    def _forget(self, ids: tuple[Any, ...]) -> None:
        for upstream_id in ids:
            self._by_upstream_id.pop(upstream_id, None)
            self._modern.discard(upstream_id)

    def _headers(self, info: _Outgoing) -> dict[str, str]:
        headers = {**self.options.headers, "content-type": "application/json",
                   "accept": "application/json, text/event-stream"}
        if self.session_id is not None:
            headers[SESSION_HEADER] = self.session_id
        version = info.modern_version or self.protocol_version
        if version is not None:
            headers[VERSION_HEADER] = version
        if info.modern_version is not None and info.method is not None:
            headers[METHOD_HEADER] = info.method
            if info.name is not None:
                headers[NAME_HEADER] = encode_header_value(info.name)
            if info.method == "tools/call" and info.name in self._param_maps and isinstance(info.arguments, dict):
                headers.update(mcp_param_headers(self._param_maps[info.name], info.arguments))
        return headers

    def _note_tools(self, body: bytes) -> None:
        """The ``x-mcp-header`` properties of each tool in a ``tools/list`` answer: a 2026-07-28 call to one
        must mirror them as ``Mcp-Param-*`` headers, or the server refuses it."""
        try:
            tools = json.loads(body)["result"]["tools"]
        except (ValueError, KeyError, TypeError):
            return
        for tool in tools if isinstance(tools, list) else ():
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                schema = tool.get("inputSchema")
                if find_invalid_x_mcp_header(schema) is None and (found := x_mcp_header_map(schema)):
                    self._param_maps[tool["name"]] = found
                else:
                    self._param_maps.pop(tool["name"], None)

    async def _exchange(self, data: bytes, info: _Outgoing, context: object) -> None:
        try:
            request = self._client.build_request("POST", self.options.url, content=data,
                                                 headers=self._headers(info))
        except (UnicodeError, ValueError, TypeError) as exc:  # a name no HTTP header can carry, say
            await self._fail(info.request_ids, f"the request cannot be sent over HTTP: {exc}", context, sent=False)
            return
        try:
            response = await self._client.send(request, stream=True)
        except asyncio.CancelledError:
            raise
        except httpx2.HTTPError as exc:
            if self.first_status is None:
                self.first_status = -1
            unsent = isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout)  # else it may have arrived
            await self._fail(info.request_ids, f"cannot reach the MCP server at {self.options.url}: {exc}", context,
                             sent=not unsent)
            return
        try:
            if self.first_status is None:
                self.first_status = response.status_code
            await self._answer(response, info, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken stream, an oversize body, a bad encoding: answered, never fatal
            log.warning("reading the MCP server's answer failed", error=str(exc))
            await self._fail(info.request_ids, f"the MCP server's answer could not be read: {exc}", context)
        finally:
            await response.aclose()

    async def _answer(self, response: httpx2.Response, info: _Outgoing, context: object) -> None:
        status = response.status_code
        if info.method == "initialize" and 200 <= status < 300:
            self.session_id = response.headers.get(SESSION_HEADER) or self.session_id
        if status == 202 or (200 <= status < 300 and not info.request_ids and not response.headers.get("content-type")):
            if info.request_ids:  # accepted, but no answer will come on this POST: never left waiting
                await self._fail(info.request_ids, "the MCP server accepted the request without answering it",
                                 context)
            return
        if status == 404 and self.session_id is not None:
            await self._fail(info.request_ids, "the MCP server ended this session (HTTP 404)", context, sent=False)
            log.warning("the MCP server ended the session; closing", url=self.options.url)
            self._end(1)
            return
        kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if not 200 <= status < 300:
            body = await _read_bounded(response, 64 * 1024)
            if not await self._relay_error_body(body, info, context):
                text = body.decode("utf-8", "replace").strip()[:300]
                message = f"the MCP server answered HTTP {status}" + (f": {text}" if text else "")
                await self._fail(info.request_ids, message, context, {"status": status})
            return
        if kind == "text/event-stream":
            await self._read_events(response, info, context)
            return
        if kind == "application/json":
            body = await _read_bounded(response, MAX_BODY_BYTES)
            if info.method == "initialize":
                self._note_version(body)
            elif info.method == "tools/list":
                self._note_tools(body)
            await self._deliver(body, context)
            answered = set(_answered_ids(body))
            missing = [i for i in info.request_ids if _key(i) not in answered]
            if missing:
                await self._fail(missing, "the MCP server's answer did not answer this request", context)
            return
        if info.request_ids:
            await self._fail(info.request_ids, f"the MCP server answered with content type {kind or 'none'!r}", context)

    async def _relay_error_body(self, body: bytes, info: _Outgoing, context: object) -> bool:
        """A JSON-RPC error the server sent with an HTTP error status: relayed as it is when it answers the
        one request of this POST."""
        try:
            msg = json.loads(body)
        except ValueError:
            return False
        if (isinstance(msg, dict) and "error" in msg and len(info.request_ids) == 1
                and msg.get("id") == info.request_ids[0]):
            await self._deliver(body, context)
            return True
        return False

    def _note_version(self, body: bytes) -> None:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            version = json.loads(body)["result"]["protocolVersion"]
            if isinstance(version, str):
                self.protocol_version = version
                if self._get_stream is None and self.session_id is not None:
                    self._get_stream = self._spawn(self._listen())

    async def _read_events(self, response: httpx2.Response, info: _Outgoing, context: object) -> None:
        waiting = set(_keys(info.request_ids))
        last_id, retry = await self._events(response, waiting, context, info.method)
        attempts = 0
        while waiting and last_id and attempts < RECONNECT_ATTEMPTS and not self._closing:
            # The server closed the stream before answering (SSE polling): resume it with Last-Event-ID.
            attempts += 1
            await asyncio.sleep(retry if retry is not None else RECONNECT_DELAY)
            headers = self._headers(_Outgoing((), None, None, None))
            headers.pop("content-type")
            headers["accept"] = "text/event-stream"
            headers[LAST_EVENT_HEADER] = last_id
            async with self._client.stream("GET", self.options.url, headers=headers) as again:
                if again.status_code != 200:
                    break
                last_id, retry = await self._events(again, waiting, context, info.method, last_id, retry)
        if waiting:
            await self._fail([i for i in info.request_ids if _key(i) in waiting],
                             "the MCP server closed the stream before answering", context)

    async def _events(self, response: httpx2.Response, waiting: set[Any], context: object, method: str | None,
                      last_id: str = "", retry: float | None = None) -> tuple[str, float | None]:
        async for event in httpx2.EventSource(response, max_event_size=MAX_EVENT_BYTES):
            if event.id:
                last_id = event.id
            if event.retry is not None:
                retry = event.retry / 1000
            if event.event != "message" or not event.data.strip():
                continue
            body = event.data.encode("utf-8", "surrogatepass")
            for answered in _answered_ids(body):
                waiting.discard(answered)
            if method == "initialize":
                self._note_version(body)
            elif method == "tools/list":
                self._note_tools(body)
            await self._deliver(body, context)
        return last_id, retry

    async def _listen(self) -> None:
        """The GET stream for the server's own requests and notifications, resumed when it drops."""
        last_id = ""
        retry: float | None = None
        failures = 0
        while not self._closing and failures < RECONNECT_ATTEMPTS:
            headers = self._headers(_Outgoing((), None, None, None))
            headers.pop("content-type")
            headers["accept"] = "text/event-stream"
            if last_id:
                headers[LAST_EVENT_HEADER] = last_id
            try:
                async with self._client.stream("GET", self.options.url, headers=headers,
                                               timeout=httpx2.Timeout(self.options.connect_timeout, read=None)) as r:
                    if r.status_code == 405:
                        return  # the server offers no GET stream
                    if r.status_code != 200:
                        failures += 1
                    else:
                        failures = 0
                        last_id, retry = await self._events(r, set(), None, None, last_id, retry)
            except asyncio.CancelledError:
                raise
            except httpx2.HTTPError as exc:
                failures += 1
                log.debug("the server's GET stream dropped", error=str(exc))
            await asyncio.sleep(retry if retry is not None else RECONNECT_DELAY)

    async def close(self) -> None:
        if self.session_id is not None:
            headers = self._headers(_Outgoing((), None, None, None))
            headers.pop("content-type")
            with contextlib.suppress(httpx2.HTTPError):
                await self._client.delete(self.options.url, headers=headers, timeout=2.0)
        await self._shutdown()
        self._end(0)


class SseUpstream(_Base):
    """The deprecated HTTP+SSE transport (2024-11-05): one GET stream carries everything the server says;
    its first ``endpoint`` event names where to POST (same origin only)."""

    def __init__(self, options: HttpOptions, deliver: Deliver) -> None:
        super().__init__(options, deliver)
        self.endpoint: str | None = None
        self._ready = asyncio.Event()
        self._stream: asyncio.Task[None] | None = None
        self._problem: str | None = None

    async def open(self) -> None:
        self._stream = self._spawn(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), self.options.connect_timeout)
        if self.endpoint is None:
            await self._shutdown()
            raise UpstreamError(self._problem or f"the SSE server at {self.options.url} sent no endpoint in time")

    async def _listen(self) -> None:
        headers = {**self.options.headers, "accept": "text/event-stream"}
        try:
            async with self._client.stream("GET", self.options.url, headers=headers,
                                           timeout=httpx2.Timeout(self.options.connect_timeout, read=None)) as r:
                if r.status_code != 200:
                    self._problem = f"the SSE server at {self.options.url} answered HTTP {r.status_code}"
                    return
                async for event in httpx2.EventSource(r, max_event_size=MAX_EVENT_BYTES):
                    if event.event == "endpoint" and self.endpoint is None:
                        endpoint = urljoin(self.options.url, event.data.strip())
                        if not same_origin(endpoint, self.options.url):
                            self._problem = f"the SSE server named an endpoint on another origin: {endpoint}"
                            return
                        self.endpoint = endpoint
                        self._ready.set()
                    elif event.event == "message" and event.data.strip():
                        await self._deliver(event.data.encode("utf-8", "surrogatepass"), None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._problem = f"the SSE stream from {self.options.url} failed: {exc}"
            log.warning("the SSE stream from the MCP server ended", error=str(exc))
        finally:
            self._ready.set()
            if not self._closing:
                self._end(0 if self.endpoint is not None else 1)

    async def send(self, data: bytes, context: object = None) -> None:
        self._spawn(self._post(data, _describe(data), context))

    async def _post(self, data: bytes, info: _Outgoing, context: object) -> None:
        if self.endpoint is None:
            await self._fail(info.request_ids, "the SSE server gave no endpoint to send to", context)
            return
        headers = {**self.options.headers, "content-type": "application/json"}
        try:
            response = await self._client.post(self.endpoint, content=data, headers=headers)
        except httpx2.HTTPError as exc:
            await self._fail(info.request_ids, f"cannot reach the MCP server at {self.endpoint}: {exc}", context)
            return
        if not 200 <= response.status_code < 300:
            await self._fail(info.request_ids, f"the MCP server answered HTTP {response.status_code}", context,
                             {"status": response.status_code})

    async def close(self) -> None:
        await self._shutdown()
        self._end(0)


class AutoUpstream:
    """Streamable HTTP first; if the first ``initialize`` POST is refused with 400, 404 or 405, the legacy
    SSE transport at the same URL, as the spec's backwards-compatibility section describes. Requests of
    the 2026-07-28 era before it (a client probing with ``server/discover``) go over Streamable HTTP and
    get whatever the server answers; the client then falls back to ``initialize`` itself."""

    def __init__(self, options: HttpOptions, deliver: Deliver) -> None:
        self.options = options
        self._deliver = deliver
        self._held: list[tuple[bytes, object]] | None = None  # answers kept back while initialize probes
        self.inner: StreamableHttpUpstream | SseUpstream = StreamableHttpUpstream(options, self._probe_deliver)
        self._decided = False
        self._swapped = asyncio.Event()

    async def _probe_deliver(self, line: bytes, context: object) -> None:
        if self._held is not None:
            self._held.append((line, context))
            return
        await self._deliver(line, context)

    async def open(self) -> None:
        await self.inner.open()

    async def send(self, data: bytes, context: object = None) -> None:
        first = self.inner
        if self._decided or not isinstance(first, StreamableHttpUpstream) or _describe(data).method != "initialize":
            await first.send(data, context)
            return
        self._decided = True
        self._held = []
        first.first_status = None
        await first.send(data, context)  # an initialize exchange runs to its end before send returns
        held, self._held = self._held, None
        if first.first_status in FALLBACK_STATUSES:
            log.info("the server refused Streamable HTTP; trying the legacy SSE transport",
                     status=first.first_status, url=self.options.url)
            sse = SseUpstream(self.options, self._deliver)
            try:
                await sse.open()
            except UpstreamError as exc:
                log.warning("the legacy SSE transport failed too; staying on Streamable HTTP", error=str(exc))
            else:
                self.inner = sse
                self._swapped.set()
                await first._shutdown()
                await sse.send(data, context)
                return
        for line, context_ in held:
            await self._deliver(line, context_)

    async def wait_closed(self) -> int:
        while True:
            inner = self.inner
            closed = asyncio.ensure_future(inner.wait_closed())
            swapped = asyncio.ensure_future(self._swapped.wait())
            await asyncio.wait({closed, swapped}, return_when=asyncio.FIRST_COMPLETED)
            swapped.cancel()
            if closed.done() and inner is self.inner:
                return closed.result()
            closed.cancel()
            self._swapped.clear()

    async def close(self) -> None:
        await self.inner.close()

    def forward_signal(self, signum: int) -> None:
        self.inner.forward_signal(signum)


def http_upstream(transport: str, options: HttpOptions,
                  deliver: Deliver) -> AutoUpstream | StreamableHttpUpstream | SseUpstream:
    if transport == "sse":
        return SseUpstream(options, deliver)
    if transport == "streamable-http":
        return StreamableHttpUpstream(options, deliver)
    return AutoUpstream(options, deliver)


async def _read_bounded(response: httpx2.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise ValueError(f"the answer exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _key(value: Any) -> Any:
    return (type(value) is str, value)


def _keys(values: Iterable[Any]) -> list[Any]:
    return [_key(v) for v in values]


def _answered_ids(body: bytes) -> list[Any]:
    try:
        msg = json.loads(body)
    except ValueError:
        return []
    entries = msg if isinstance(msg, list) else [msg]
    return [_key(e["id"]) for e in entries if isinstance(e, dict) and "id" in e and "method" not in e]
