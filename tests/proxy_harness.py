"""Shared pieces of the end-to-end proxy tests (tests/test_proxy_*.py).

Two ways to talk to ``regoguard run``:

- the SDK's real client (:func:`sdk_params` builds the ``StdioServerParameters`` that start the proxy,
  which starts the server), for everything a well-behaved MCP client does;
- :class:`RawProxy`, which spawns the proxy with asyncio pipes and writes / reads raw lines, for what no
  SDK would ever send (batches, duplicate keys, bare ``\\r``, oversize lines, ...).

Servers are started by the proxy, never by the test, so the proxy's relay is always in the path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import StdioServerParameters
from mcp.client import Client

TESTS = Path(__file__).resolve().parent
SERVERS = TESTS / "servers"
NODE_DIR = TESTS / "node"
EVERYTHING_JS = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"

TIMEOUT = 30  # seconds, per test (anyio.fail_after)
READ_TIMEOUT = 10.0  # seconds, per awaited line

STATELESS = "2026-07-28"
META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
LEGACY = "2025-11-25"
MODES = ["legacy", "auto"]

# The spy server's tools (tests/servers/spy.py): 5 core tools, then 120 bulk tools, 50 per page.
SPY_CORE = ["create_charge", "create_refund", "delete_customer", "list_customers", "echo"]
SPY_BULK = [f"bulk_tool_{i:03d}" for i in range(120)]
SPY_ALL = SPY_CORE + SPY_BULK


# --------------------------------------------------------------------------- commands and policies


def python_server(name: str, *args: str) -> list[str]:
    """The command line of a test server in tests/servers/."""
    return [sys.executable, str(SERVERS / f"{name}.py"), *args]


def proxy_argv(policy: Path, server: Sequence[str], *options: str) -> list[str]:
    """``python -m regoguard run -c POLICY [OPTIONS] -- SERVER...``"""
    return [sys.executable, "-m", "regoguard", "run", "-c", str(policy), *options, "--", *server]


def sdk_params(
    policy: Path, server: Sequence[str], *, env: dict[str, str] | None = None, options: Sequence[str] = ()
) -> StdioServerParameters:
    """Parameters for the SDK client to start the proxy in front of ``server``.

    The SDK's stdio client gives its child only a few variables (HOME, PATH, ...) plus ``env``; the proxy
    passes its whole environment on to the server, so ``env`` is how a test reaches the server too.
    """
    argv = proxy_argv(policy, server, *options)
    return StdioServerParameters(command=argv[0], args=argv[1:], env=env)


def proxied_client(
    policy: Path,
    server: Sequence[str],
    mode: str,
    *,
    env: dict[str, str] | None = None,
    options: Sequence[str] = (),
    **kwargs: Any,
) -> Client:
    """The SDK's real client, connected through ``regoguard run`` to ``server``. Every request is bounded
    (READ_TIMEOUT): a proxy that dies never leaves a test hanging until its overall deadline."""
    kwargs.setdefault("read_timeout_seconds", READ_TIMEOUT)
    return Client(sdk_params(policy, server, env=env, options=options), mode=mode, **kwargs)


def write_policy(directory: Path, text: str, name: str = "policy.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[Any]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def spy_calls(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(tool, arguments) of every tools/call the spy server received, in order."""
    return [(entry["tool"], entry["arguments"]) for entry in read_jsonl(path)]


def spy_tools(path: Path) -> list[str]:
    return [tool for tool, _ in spy_calls(path)]


# --------------------------------------------------------------------------- strict JSON


class NotStrictJSON(ValueError):
    pass


def _no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise NotStrictJSON(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise NotStrictJSON(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise NotStrictJSON(f"{text} overflows a double")
    return value


def strict_loads(line: bytes) -> Any:
    """Parse one line as RFC 8259 JSON: UTF-8, no NaN/Infinity, no duplicate keys, one value."""
    return json.loads(
        line.decode("utf-8"), object_pairs_hook=_no_dupes, parse_constant=_no_constant, parse_float=_finite_float
    )


def same_id(a: Any, b: Any) -> bool:
    """Type-exact id equality (1, 1.0, True and "1" are four different ids)."""
    return type(a) is type(b) and json.dumps(a) == json.dumps(b)


def request(id_: Any, method: str, params: Any = None, **extra: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        msg["params"] = params
    msg.update(extra)
    return msg


def tools_call(id_: Any, name: str, arguments: Any = None, *, stateless: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name}
    if arguments is not None:
        params["arguments"] = arguments
    if stateless:
        params["_meta"] = stateless_meta()
    return request(id_, "tools/call", params)


def stateless_meta() -> dict[str, Any]:
    """The ``_meta`` envelope every 2026-07-28 request carries (no initialize handshake)."""
    return {
        META_PROTOCOL_VERSION: STATELESS,
        "io.modelcontextprotocol/clientInfo": {"name": "raw-harness", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }


def dumps(msg: Any) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode("utf-8") + b"\n"


# --------------------------------------------------------------------------- the raw harness


class RawProxy:
    """One ``regoguard run`` process driven over raw pipes.

    Every line the proxy writes to its stdout is kept in :attr:`lines` (bytes, as read) and, parsed
    strictly, in :attr:`messages` (a line that is not strict JSON is kept as a :class:`NotStrictJSON`).
    Its stderr is collected in :attr:`stderr`.
    """

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[bytes] = []
        self.messages: list[Any] = []
        self.stderr = bytearray()
        self._consumed: set[int] = set()
        self._changed = asyncio.Condition()
        self._eof = False
        self._tasks = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        policy: Path,
        server: Sequence[str],
        *,
        options: Sequence[str] = (),
        env: dict[str, str] | None = None,
        stdin: Any = asyncio.subprocess.PIPE,
        stdout: Any = asyncio.subprocess.PIPE,
    ) -> AsyncIterator[RawProxy]:
        full_env = {**os.environ, **(env or {})}
        proc = await asyncio.create_subprocess_exec(
            *proxy_argv(policy, server, *options),
            stdin=stdin,
            stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
            limit=64 * 1024 * 1024,
        )
        proxy = cls(proc)
        try:
            yield proxy
        finally:
            await proxy._shutdown()

    async def _shutdown(self) -> None:
        if self.proc.returncode is None:
            await self.close_stdin()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 5)

    # -- io ------------------------------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        reader = self.proc.stdout
        if reader is None:
            return
        while True:
            line = await reader.readline()
            async with self._changed:
                if not line:
                    self._eof = True
                    self._changed.notify_all()
                    return
                self.lines.append(line)
                try:
                    self.messages.append(strict_loads(line))
                except (NotStrictJSON, ValueError) as exc:
                    self.messages.append(NotStrictJSON(f"{exc}: {line[:200]!r}"))
                self._changed.notify_all()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self.stderr.extend(chunk)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def send_raw(self, data: bytes) -> None:
        """Write exactly ``data`` (add the newline yourself)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def send(self, msg: Any) -> None:
        await self.send_raw(dumps(msg))

    async def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
            with contextlib.suppress(ConnectionError, BrokenPipeError):
                await self.proc.stdin.wait_closed()

    async def wait(self, timeout: float = READ_TIMEOUT) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    # -- expectations ----------------------------------------------------------------------------------------

    async def expect(self, predicate: Callable[[Any], bool], timeout: float = READ_TIMEOUT, what: str = "") -> Any:
        """The first message (not returned before) that satisfies ``predicate``; waits for it."""

        def scan() -> Any:
            for i, msg in enumerate(self.messages):
                if i not in self._consumed and not isinstance(msg, NotStrictJSON) and predicate(msg):
                    self._consumed.add(i)
                    return msg
            return None

        async def wait() -> Any:
            async with self._changed:
                while True:
                    found = scan()
                    if found is not None:
                        return found
                    if self._eof:
                        raise AssertionError(f"proxy stdout closed before {what or 'the expected message'}; "
                                             f"got {self.messages!r}; stderr: {self.stderr_text()[-2000:]}")
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what or 'a message'}; got {self.messages!r}; "
                                 f"stderr: {self.stderr_text()[-2000:]}") from None

    async def response(self, id_: Any, timeout: float = READ_TIMEOUT) -> dict[str, Any]:
        """The response (a lone object, not a batch) with this id."""
        return await self.expect(  # type: ignore[no-any-return]
            lambda m: isinstance(m, dict) and "method" not in m and "id" in m and same_id(m["id"], id_),
            timeout, f"the response to id {id_!r}",
        )

    async def null_id_error(self, code: int, timeout: float = READ_TIMEOUT) -> dict[str, Any]:
        return await self.expect(  # type: ignore[no-any-return]
            lambda m: isinstance(m, dict) and m.get("id", 0) is None and m.get("error", {}).get("code") == code,
            timeout, f"an error {code} with id null",
        )

    async def call(self, msg: dict[str, Any], timeout: float = READ_TIMEOUT) -> dict[str, Any]:
        await self.send(msg)
        return await self.response(msg["id"], timeout)

    async def initialize(self, protocol_version: str = LEGACY) -> dict[str, Any]:
        """The legacy handshake: initialize, then notifications/initialized."""
        answer = await self.call(request("init", "initialize", {
            "protocolVersion": protocol_version,
            "capabilities": {},
            "clientInfo": {"name": "raw-harness", "version": "0"},
        }), timeout=20)
        assert "result" in answer, answer
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    async def settle(self, id_: Any = "settle") -> None:
        """A ping round trip: everything sent before it has been read and handled by the proxy and server."""
        await self.call(request(id_, "ping"))

    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def assert_all_json(self) -> None:
        """The client's stdout only ever held strict JSON-RPC lines."""
        bad = [m for m in self.messages if isinstance(m, NotStrictJSON)]
        assert not bad, f"the proxy wrote lines that are not JSON to the client: {bad}"
        for line in self.lines:
            assert line.endswith(b"\n") and line.count(b"\n") == 1, line


def denial_of(answer: dict[str, Any]) -> dict[str, Any]:
    """Check ``answer`` is the proxy's denial (a tool result, isError) and return its decision meta."""
    assert "result" in answer, answer
    result = answer["result"]
    assert result["isError"] is True, answer
    assert result["content"][0]["type"] == "text", answer
    assert result["content"][0]["text"].startswith("[regoguard] "), answer
    decision = result["_meta"]["regoguard/decision"]
    assert set(decision) >= {"decision_id", "rule", "reason"}, decision
    assert decision["rule"] in result["content"][0]["text"], answer
    return decision  # type: ignore[no-any-return]


def error_of(answer: dict[str, Any], code: int) -> dict[str, Any]:
    assert "error" in answer and "result" not in answer, answer
    assert answer["error"]["code"] == code, answer
    return answer["error"]  # type: ignore[no-any-return]
