"""The stdio relay: regoguard between an MCP client (our stdin/stdout) and a server (our child).

Bytes are relayed, not re-serialised models: every message that is not a ``tools/call`` request and
not the answer to a ``tools/list`` goes through as the original line, so unknown fields, number formats
and future methods pass unchanged. What could carry a ``tools/call`` past the guard is decided, never
forwarded blind: batches (every entry), calls without an id, params that do not parse, duplicate keys.

Only this module writes to the client's stdout, and only JSON-RPC lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any, BinaryIO

import structlog

from regoguard.guard import Guard, Verdict
from regoguard.proxy import jsonrpc
from regoguard.proxy.client_io import ClientWriter, open_reader, open_writer
from regoguard.proxy.lines import OVERSIZE, read_line
from regoguard.proxy.session import Session

log = structlog.get_logger("regoguard.proxy")

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SERVER_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
SCHEMA_FETCH_TIMEOUT = 10.0
SCHEMA_FETCH_MAX_PAGES = 100
INTERNAL_ID_PREFIX = "regoguard-internal-"


@dataclass(frozen=True)
class ProxyOptions:
    server_name: str
    principal: str
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    shutdown_grace: float = 5.0
    refund_on_tool_error: bool = False


_FORWARD = ("forward", None)
_DROP = ("drop", None)


class SignalRelay:
    """Carries SIGINT/SIGTERM from the main thread (where Python runs handlers) to the proxy's loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proxy: StdioProxy | None = None
        self.pending: list[int] = []

    def install(self) -> None:
        """Call on the main thread, before the proxy starts."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        if self._loop is not None and self._proxy is not None:
            self._loop.call_soon_threadsafe(self._proxy.forward_signal, signum)
        else:
            self.pending.append(signum)

    def attach(self, loop: asyncio.AbstractEventLoop, proxy: StdioProxy) -> None:
        self._loop, self._proxy = loop, proxy
        for signum in self.pending:
            loop.call_soon_threadsafe(proxy.forward_signal, signum)
        self.pending.clear()


class StdioProxy:
    """One client connection relayed to one server process.

    Args:
        guard: decides every ``tools/call``.
        command: the server's command line.
        options: names for the input document and bounds.
        client_in: where client messages arrive (our stdin).
        client_out: the only writer that reaches the client (see :func:`regoguard.stdout_guard.claim_stdout`).
    """

    def __init__(
        self,
        guard: Guard,
        command: list[str],
        options: ProxyOptions,
        client_in: BinaryIO,
        client_out: BinaryIO,
        signals: SignalRelay | None = None,
    ) -> None:
        self.guard = guard
        self.command = command
        self.options = options
        self.session = Session(options.server_name, options.principal)
        self._client_in = client_in
        self._client_out = client_out
        self._signals = signals
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: ClientWriter | None = None
        # client requests the server has not answered: id key -> (id, the verdict of an allowed tools/call)
        self._inflight: dict[str, tuple[Any, Verdict | None]] = {}
        self._list_ids: set[str] = set()  # client tools/list requests whose answers we filter
        self._internal: dict[str, asyncio.Future[Any]] = {}
        self._internal_ids = itertools.count(1)
        self._schema_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Relay until the server exits; return its exit status (128 + signal if it was killed)."""
        loop = asyncio.get_running_loop()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,
                limit=SERVER_MAX_MESSAGE_BYTES,
            )
        except OSError as exc:
            print(f"regoguard: cannot start MCP server {self.command[0]!r}: {exc}", file=sys.stderr)
            return 127
        if self._signals is not None:
            self._signals.attach(loop, self)
        client_reader = await open_reader(loop, self._client_in, self.options.max_message_bytes)
        self._writer = await open_writer(loop, self._client_out)

        client_task = asyncio.create_task(self._pump_client(client_reader))
        server_task = asyncio.create_task(self._pump_server())
        await server_task  # the server's stdout closed: it is exiting
        await self._fail_inflight()
        self.guard.end_session(self.session.id)
        returncode = await self._proc.wait()
        client_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await client_task
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()
        return returncode if returncode >= 0 else 128 - returncode

    def forward_signal(self, signum: int) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signum)

    async def _client_eof(self) -> None:
        """The client hung up: close the server's stdin, give it time to exit, then end it."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        with contextlib.suppress(ConnectionError, OSError):
            proc.stdin.close()
        for action, wait in ((None, self.options.shutdown_grace), (proc.terminate, 3.0), (proc.kill, None)):
            if action is not None:
                with contextlib.suppress(ProcessLookupError):
                    action()
            try:
                await asyncio.wait_for(proc.wait(), wait)
                return
            except TimeoutError:
                continue

    async def _fail_inflight(self) -> None:
        # No refund here: a server that died mid-call may have done the work (a charge made, then a crash),
        # so its tokens stay taken. Only an explicit JSON-RPC error answer gives them back.
        for id_, verdict in list(self._inflight.values()):
            self._send_client(jsonrpc.error(id_, jsonrpc.INTERNAL_ERROR, "the MCP server exited before answering"))
            if verdict is not None:
                self.guard.finish(verdict, {"message": "the MCP server exited before answering"}, refund=False)
        self._inflight.clear()
        for fut in self._internal.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the MCP server exited"))

    # -- writing -----------------------------------------------------------------------------------------

    def _send_client(self, message: Any) -> None:
        assert self._writer is not None
        self._writer.write(jsonrpc.dumps(message))

    def _send_client_raw(self, line: bytes) -> None:
        assert self._writer is not None
        self._writer.write(line if line.endswith(b"\n") else line + b"\n")

    async def _send_server(self, line: bytes) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        if self._proc.stdin.is_closing():
            return
        self._proc.stdin.write(line if line.endswith(b"\n") else line + b"\n")
        with contextlib.suppress(ConnectionError):
            await self._proc.stdin.drain()

    # -- client -> server ----------------------------------------------------------------------------------

    async def _pump_client(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = await read_line(reader)
            if line is None:
                break
            if isinstance(line, OVERSIZE):
                log.warning("oversize message from client", size=line.size, limit=self.options.max_message_bytes)
                self._send_client(jsonrpc.error(
                    None, jsonrpc.INVALID_REQUEST,
                    f"message of {line.size} bytes exceeds the proxy's limit of {self.options.max_message_bytes}",
                ))
                continue
            await self._on_client_line(line)
            assert self._writer is not None
            await self._writer.drain()
        await self._client_eof()

    async def _on_client_line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            msg = jsonrpc.loads(line)
        except jsonrpc.ParseError as exc:
            self._send_client(jsonrpc.error(None, jsonrpc.PARSE_ERROR, f"Parse error: {exc}"))
            return
        if isinstance(msg, list):
            await self._on_client_batch(line, msg)
            return
        kind, answer = await self._filter_client_message(msg, len(line))
        if kind == "forward":
            await self._send_server(line)
        elif kind == "answer":
            self._send_client(answer)

    async def _on_client_batch(self, line: bytes, batch: list[Any]) -> None:
        if not batch:
            self._send_client(jsonrpc.error(None, jsonrpc.INVALID_REQUEST, "empty batch"))
            return
        outcomes = [await self._filter_client_message(entry, len(line)) for entry in batch]
        if all(kind == "forward" for kind, _ in outcomes):
            await self._send_server(line)
            return
        forwarded = [entry for entry, (kind, _) in zip(batch, outcomes, strict=True) if kind == "forward"]
        answers = [answer for kind, answer in outcomes if kind == "answer"]
        if forwarded:
            await self._send_server(jsonrpc.dumps(forwarded))
        if answers:
            self._send_client(answers)

    async def _filter_client_message(self, msg: Any, size: int) -> tuple[str, Any]:
        """Decide what happens to one client message: forward it, answer it ourselves, or drop it.

        A failure here must not end the session, and must not let a call through: a ``tools/call`` we
        could not decide is answered with an error, never forwarded.
        """
        try:
            return await self._route_client_message(msg, size)
        except Exception as exc:
            log.exception("internal error while handling a client message")
            if not (isinstance(msg, dict) and msg.get("method") == "tools/call"):
                return _FORWARD
            if "id" not in msg:
                return _DROP
            verdict = self.guard.reject("proxy/internal-error", f"regoguard could not decide this call: {exc}")
            self.guard.finish(verdict)
            return "answer", jsonrpc.error(msg["id"], jsonrpc.INTERNAL_ERROR, verdict.decision.message or "",
                                           {"regoguard/decision": verdict.meta()})

    async def _route_client_message(self, msg: Any, size: int) -> tuple[str, Any]:
        if not isinstance(msg, dict):
            return "answer", jsonrpc.error(None, jsonrpc.INVALID_REQUEST, "a message must be a JSON object")
        method = msg.get("method")
        if method == "tools/call":
            return await self._on_tools_call(msg, size)
        if "method" in msg and "id" in msg:
            key = jsonrpc.id_key(msg["id"])
            if method == "initialize":
                self.session.note_initialize(msg)
            elif method == "tools/list":
                self._list_ids.add(key)
            self.session.note_meta(msg)
            self._inflight[key] = (msg["id"], None)
        return _FORWARD

    async def _on_tools_call(self, msg: dict[str, Any], size: int) -> tuple[str, Any]:
        if "id" not in msg:
            log.warning("dropped a tools/call notification (no id): it cannot be answered, so it is never forwarded")
            self.guard.finish(self.guard.reject("proxy/no-id", "a tools/call without an id is never forwarded",
                                                _call_doc(msg)))
            return _DROP
        self.session.note_meta(msg)
        params = msg.get("params")
        problem = _params_problem(params)
        if problem is not None:
            verdict = self.guard.reject("proxy/invalid-params", problem, _call_doc(msg))
            self.guard.finish(verdict)
            log.info("denied", tool=None, rule=verdict.decision.rule, reason=problem)
            return "answer", jsonrpc.error(
                msg["id"], jsonrpc.INVALID_PARAMS, f"Invalid params: {problem}",
                {"regoguard/decision": verdict.meta()},
            )
        assert isinstance(params, dict)
        name: str = params["name"]
        arguments = params.get("arguments") or {}
        schema = await self._schema_for(name, msg) if self.guard.needs_schema(name) else None
        verdict = self.guard.decide(self.session.input_document(name, arguments, schema), size)
        if verdict.allow:
            if verdict.would_deny:
                log.info("would deny (dry run)", tool=name, rule=verdict.decision.rule,
                         reason=verdict.decision.message, decision_id=verdict.decision_id)
            self._inflight[jsonrpc.id_key(msg["id"])] = (msg["id"], verdict)
            return _FORWARD
        log.info("denied", tool=name, rule=verdict.decision.rule, reason=verdict.decision.message,
                 decision_id=verdict.decision_id)
        self.guard.finish(verdict)
        return "answer", _denial(msg, name, verdict)

    # -- inputSchema for validate: {required_args: true} -------------------------------------------------

    async def _schema_for(self, name: str, trigger: dict[str, Any]) -> dict[str, Any] | None:
        if name in self.session.schemas or self.session.schemas_complete:
            return self.session.schemas.get(name)
        async with self._schema_lock:
            if name not in self.session.schemas and not self.session.schemas_complete:
                try:
                    await asyncio.wait_for(self._fetch_tools(trigger), SCHEMA_FETCH_TIMEOUT)
                except (TimeoutError, ConnectionError, ValueError) as exc:
                    log.warning("could not list the server's tools to validate arguments", error=str(exc))
        return self.session.schemas.get(name)

    async def _fetch_tools(self, trigger: dict[str, Any]) -> None:
        """List the server's tools ourselves (the client never did), page by page."""
        cursor: Any = None
        meta = jsonrpc.request_meta(trigger) if jsonrpc.is_stateless(trigger) else None
        for _ in range(SCHEMA_FETCH_MAX_PAGES):
            params: dict[str, Any] = {}
            if cursor is not None:
                params["cursor"] = cursor
            if meta:
                params["_meta"] = meta
            id_ = f"{INTERNAL_ID_PREFIX}{next(self._internal_ids)}"
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._internal[jsonrpc.id_key(id_)] = fut
            await self._send_server(jsonrpc.dumps({"jsonrpc": "2.0", "id": id_, "method": "tools/list",
                                                   "params": params}))
            try:
                response = await fut
            finally:
                self._internal.pop(jsonrpc.id_key(id_), None)
            result = response.get("result") if isinstance(response, dict) else None
            if not isinstance(result, dict):
                problem = response.get("error") if isinstance(response, dict) else response
                raise ValueError(f"tools/list failed: {problem}")
            self.session.note_tools(result.get("tools"))
            cursor = result.get("nextCursor")
            if not cursor:
                self.session.schemas_complete = True
                return

    # -- server -> client ----------------------------------------------------------------------------------

    async def _pump_server(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        reader = self._proc.stdout
        while True:
            line = await read_line(reader)
            if line is None:
                return
            if isinstance(line, OVERSIZE):
                log.error("dropped an oversize message from the server", size=line.size)
                continue
            self._on_server_line(line)
            assert self._writer is not None
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    def _on_server_line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            msg = jsonrpc.loads(line)
        except jsonrpc.ParseError as exc:
            # A server that prints logs to stdout would corrupt the client's stream: keep them out.
            log.warning("dropped a line from the server that is not JSON-RPC", error=str(exc),
                        line=line[:200].decode("utf-8", "replace"))
            return
        if isinstance(msg, list):
            kept: list[Any] = []
            changed = False
            for entry in msg:
                out = self._on_server_message(entry)
                changed = changed or out is not entry
                if out is not None:
                    kept.append(out)
            if not changed:
                self._send_client_raw(line)
            elif kept:
                self._send_client(kept)
            return
        out = self._on_server_message(msg)
        if out is msg:
            self._send_client_raw(line)
        elif out is not None:
            self._send_client(out)

    def _on_server_message(self, msg: Any) -> Any:
        """Return the message to relay: ``msg`` itself (bytes unchanged), a rewritten one, or None."""
        if not (isinstance(msg, dict) and "id" in msg and "method" not in msg):
            return msg
        key = jsonrpc.id_key(msg["id"])
        fut = self._internal.get(key)
        if fut is not None:
            if not fut.done():
                fut.set_result(msg)
            return None
        _, verdict = self._inflight.pop(key, (None, None))
        if verdict is not None:
            error = _upstream_error(msg)
            refund = "error" in msg or (error is not None and self.options.refund_on_tool_error)
            self.guard.finish(verdict, error, refund)
        if key in self._list_ids:
            self._list_ids.discard(key)
            return self._filter_tools_list(msg)
        return msg

    def _filter_tools_list(self, msg: dict[str, Any]) -> Any:
        result = msg.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return msg
        tools = result["tools"]
        self.session.note_tools(tools)
        if self.guard.dry_run:  # nothing is blocked in a dry run, hidden tools included
            return msg
        kept = [t for t in tools if not (isinstance(t, dict) and isinstance(t.get("name"), str)
                                         and self.guard.is_hidden(t["name"]))]
        if len(kept) == len(tools):
            return msg
        return {**msg, "result": {**result, "tools": kept}}


def _upstream_error(msg: dict[str, Any]) -> Any:
    """The server's JSON-RPC error, or its tool result's ``isError``; None when the call succeeded."""
    if "error" in msg:
        return msg["error"]
    result = msg.get("result")
    if isinstance(result, dict) and result.get("isError") is True:
        return {"isError": True}
    return None


def _call_doc(msg: dict[str, Any]) -> dict[str, Any]:
    """What can be logged of a call that never reached the policy."""
    params = msg.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    return {"tool": {"name": name if isinstance(name, str) else None, "arguments": {}}}


def _params_problem(params: Any) -> str | None:
    if not isinstance(params, dict):
        return "tools/call params must be an object"
    if not isinstance(params.get("name"), str):
        return "tools/call params.name must be a string"
    if "arguments" in params and not isinstance(params["arguments"], dict | None):
        return "tools/call params.arguments must be an object"
    return None


def _denial(msg: dict[str, Any], name: str, verdict: Verdict) -> dict[str, Any]:
    """The tool result a denied call gets: an error the agent reads, and a machine-readable ``_meta``."""
    decision = verdict.decision
    if decision.action == "require_approval":
        text = (f"[regoguard] Tool call {name!r} needs a human's approval (rule {decision.rule!r}): "
                f"{decision.message}. No approver is configured for this proxy, so the call was not forwarded.")
    else:
        text = f"[regoguard] Tool call {name!r} denied by policy rule {decision.rule!r}: {decision.message}"
    result: dict[str, Any] = {
        "content": [{"type": "text", "text": text}],
        "isError": True,
        "_meta": {"regoguard/decision": verdict.meta()},
    }
    if jsonrpc.is_stateless(msg):
        result["resultType"] = "complete"
    return {"jsonrpc": "2.0", "id": msg["id"], "result": result}


def default_server_name(command: list[str]) -> str:
    """A readable server name from its command: ``npx -y @scope/server-x`` → ``server-x``."""
    launchers = {"python", "python3", "node", "npx", "uvx", "uv", "pipx", "bunx", "deno", "bash", "sh", "env"}
    for part in command:
        base = os.path.basename(part)
        if base.startswith("-") or base in launchers or base.startswith("python3."):
            continue
        name = base.rsplit("/", 1)[-1]
        for suffix in (".py", ".js", ".mjs", ".ts"):
            name = name.removesuffix(suffix)
        return name.split("@")[0] or name
    return os.path.basename(command[0]) if command else "mcp-server"
