"""Shared pieces of the HTTP tests: ``regoguard serve`` and HTTP MCP servers as subprocesses on 127.0.0.1.

Every process is started by the test, bounded in time (start-up waits, a stop that ends in SIGKILL), and
listens on 127.0.0.1 only: npm servers that call ``listen(port)`` get a preload that binds them there.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from conftest import free_port
from proxy_harness import EVERYTHING_JS, NODE_DIR, SERVERS

NODE = NODE_DIR / "node_modules" / "node" / "bin" / "node"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
_LISTENING = re.compile(r"regoguard listening on (http://\S+)")

LOOPBACK_PRELOAD = """\
import net from 'node:net';
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const port = args[0];
  if ((typeof port === 'number' || (typeof port === 'string' && /^\\d+$/.test(port))) && typeof args[1] !== 'string') {
    args.splice(1, 0, '127.0.0.1');
  }
  return listen.apply(this, args);
};
"""


@dataclass
class Proc:
    """A subprocess whose stderr is collected by a thread (so it never blocks on a full pipe)."""

    proc: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)
    url: str = ""

    def stderr(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT)


def _spawn(argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    p = Proc(proc)

    def collect() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            p.lines.append(raw.decode("utf-8", "replace"))

    threading.Thread(target=collect, daemon=True).start()
    return p


def wait_port(port: int, proc: Proc, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.proc.returncode}):\n{proc.stderr()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout}s:\n{proc.stderr()}")


def serve_argv(policy: Path, *options: str, upstream: str | None = None,
               command: Sequence[str] = ()) -> list[str]:
    argv = [sys.executable, "-m", "regoguard", "serve", "-c", str(policy), "--listen", "127.0.0.1:0", *options]
    if upstream is not None:
        return [*argv, "--upstream", upstream]
    return [*argv, "--", *command]


@contextlib.contextmanager
def serving(policy: Path, *options: str, upstream: str | None = None, command: Sequence[str] = (),
            env: dict[str, str] | None = None) -> Iterator[Proc]:
    """``regoguard serve`` until the block ends; ``.url`` is the URL it printed."""
    if not any(o.startswith("--state") for o in options):
        options = ("--state", "memory", *options)
    p = _spawn(serve_argv(policy, *options, upstream=upstream, command=command), env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not p.url:
            if match := _LISTENING.search(p.stderr()):
                p.url = match.group(1)
                break
            if p.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"regoguard serve did not start:\n{p.stderr()}")
            time.sleep(0.02)
        yield p
    finally:
        p.stop()


@contextlib.contextmanager
def spy_http(log: Path, *, json_response: bool = False, headers_log: Path | None = None) -> Iterator[str]:
    """tests/servers/spy.py as the SDK's Streamable HTTP server; yields its URL. ``headers_log``: where it
    writes the ``authorization`` header of every request it gets."""
    port = free_port()
    argv = [sys.executable, str(SERVERS / "spy.py"), "--http", str(port), *(["--json"] if json_response else [])]
    env = {"SPY_LOG": str(log), **({"SPY_HEADERS_LOG": str(headers_log)} if headers_log else {})}
    p = _spawn(argv, env)
    try:
        wait_port(port, p)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        p.stop()


def everything_available() -> str | None:
    """Why npm server-everything cannot run here, or None."""
    if not EVERYTHING_JS.exists() or not NODE.exists():
        return "npm packages missing: run `npm install --prefix tests/node`"
    return None


@contextlib.contextmanager
def everything_http(mode: str, workdir: Path) -> Iterator[str]:
    """npm ``@modelcontextprotocol/server-everything`` in its ``streamableHttp`` or ``sse`` mode on
    127.0.0.1; yields the URL a client connects to (``/mcp`` or ``/sse``)."""
    preload = workdir / "loopback.mjs"
    preload.write_text(LOOPBACK_PRELOAD)
    port = free_port()
    p = _spawn([str(NODE), "--import", str(preload), str(EVERYTHING_JS), mode], {"PORT": str(port)}, cwd=workdir)
    try:
        wait_port(port, p)
        yield f"http://127.0.0.1:{port}/{'mcp' if mode == 'streamableHttp' else 'sse'}"
    finally:
        p.stop()


class JsonServer:
    """A JSON document served over HTTP on 127.0.0.1 (a thread), which a test may change; ``hits`` lists
    the paths of the GETs it answered."""

    def __init__(self, document: object) -> None:
        import http.server
        import json

        self.document = document
        self.hits: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits.append(self.path)
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def json_server(document: object) -> Iterator[JsonServer]:
    server = JsonServer(document)
    try:
        yield server
    finally:
        server.close()
