"""``regoguard serve``: a shared gateway. Streamable HTTP (and the legacy HTTP+SSE transport) for many
clients, each MCP session relayed to its own server process (``-- COMMAND``) or its own session with a
remote server (``--upstream URL``)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import signal
import socket
import sys
import threading
from typing import Any, BinaryIO

from regoguard.cli.common import EXIT_USAGE
from regoguard.cli.run import guard_options, open_guard

DEFAULT_LISTEN = "127.0.0.1:0"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="a shared gateway over HTTP: regoguard serve -c POLICY [--listen HOST:PORT] "
                                     "(--upstream URL | -- COMMAND ...)")
    guard_options(p)
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help="where to listen (default 127.0.0.1:0, a free port; the URL is printed on stderr)")
    p.add_argument("--path", default="/mcp", help="the Streamable HTTP endpoint's path (default /mcp)")
    p.add_argument("--principal", help="principal id in the input document (default: the OS user)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a browser Origin allowed besides this proxy's own loopback ones (repeatable; * for any)")
    p.add_argument("--allow-host", action="append", default=[], metavar="HOST[:PORT]",
                   help="a Host header value answered besides the loopback names (repeatable; * for any): "
                        "the names clients use when the proxy listens beyond 127.0.0.1")
    p.add_argument("--session-idle", type=float, default=1800.0, metavar="SECONDS",
                   help="end a session (and its server process) after this long without a request (default 1800)")
    p.add_argument("--max-sessions", type=int, default=1000, help="sessions served at once (default 1000)")
    p.add_argument("--max-message-bytes", type=int, default=16 * 1024 * 1024,
                   help="largest request body accepted (default 16 MiB)")
    p.add_argument("--body-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="longest a client may take to send one request body (default 30)")
    p.add_argument("--no-legacy-sse", action="store_true",
                   help="do not serve the deprecated HTTP+SSE transport (GET /sse, POST /messages)")
    p.add_argument("server_command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]",
                   help="a stdio MCP server to start for each session, after --")
    p.set_defaults(func=cmd_serve)


def parse_listen(value: str) -> tuple[str, int] | None:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        return None
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class StopRelay:
    """SIGINT/SIGTERM, caught on the main thread, ask the server (on another thread) to stop."""

    def __init__(self) -> None:
        self.server: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.early = False

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.server is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(setattr, self.server, "should_exit", True)
        else:
            self.early = True


def cmd_serve(args: argparse.Namespace, out: BinaryIO) -> int:
    import uvicorn

    from regoguard.proxy.http_checks import HostRules
    from regoguard.proxy.http_front import FrontOptions, HttpFront
    from regoguard.proxy.http_legacy import LegacySse
    from regoguard.proxy.http_sessions import SessionOptions, SessionTable

    listen = parse_listen(args.listen)
    if listen is None:
        print(f"error: --listen {args.listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8080", file=sys.stderr)
        return EXIT_USAGE
    if not args.path.startswith("/"):
        print(f"error: --path {args.path!r} must start with /", file=sys.stderr)
        return EXIT_USAGE
    stop: StopRelay = args.stop_relay
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
    # each answer's second write waits for the client's delayed ACK (~40 ms per call).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(listen)
    except OSError as exc:
        print(f"error: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sock.listen(512)
    host, port = sock.getsockname()[:2]
    guarded = open_guard(args, "regoguard serve -c p.yaml -- npx server")
    if guarded is None:
        sock.close()
        return EXIT_USAGE
    try:
        table = SessionTable(guarded.guard, guarded.make_upstream, SessionOptions(
            server_name=guarded.server_name, principal=args.principal or getpass.getuser(),
            idle_timeout=args.session_idle, max_sessions=args.max_sessions,
            refund_on_tool_error=args.refund_on_tool_error))
        rules = HostRules(port=port, bind_host=host, allowed_hosts=frozenset(h.lower() for h in args.allow_host),
                          allowed_origins=frozenset(o.lower().rstrip("/") for o in args.allow_origin))
        options = FrontOptions(path=args.path, max_body_bytes=args.max_message_bytes, body_timeout=args.body_timeout)
        legacy = None if args.no_legacy_sse else LegacySse(table, options)
        app = HttpFront(table, rules, options, legacy)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", ws="none",
                                http="h11", timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        shown = f"[{host}]" if ":" in host else host
        print(f"regoguard listening on http://{shown}:{port}{args.path}", file=sys.stderr, flush=True)

        async def main() -> None:
            stop.server, stop.loop = server, asyncio.get_running_loop()
            if stop.early:
                return
            await server.serve(sockets=[sock])

        asyncio.run(main())
        return 0
    finally:
        sock.close()
        guarded.close()
