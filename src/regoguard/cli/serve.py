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
from typing import TYPE_CHECKING, Any, BinaryIO

from regoguard import heap
from regoguard.cli import event_loop
from regoguard.cli.common import EXIT_USAGE
from regoguard.cli.run import guard_options, open_guard

if TYPE_CHECKING:
    from regoguard.proxy.auth import Verifier

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
    p.add_argument("--max-sessions-per-principal", type=int, default=64,
                   help="sessions one principal may hold at once (default 64; without tokens every caller is "
                        "one principal)")
    p.add_argument("--max-message-bytes", type=int, default=16 * 1024 * 1024,
                   help="largest request body accepted (default 16 MiB)")
    p.add_argument("--body-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="longest a client may take to send one request body (default 30)")
    p.add_argument("--no-legacy-sse", action="store_true",
                   help="do not serve the deprecated HTTP+SSE transport (GET /sse, POST /messages)")
    auth = p.add_argument_group("identity (bearer JWTs; without --jwks or --jwt-secret-env, serve is unauthenticated)")
    auth.add_argument("--jwks", metavar="FILE|URL", help="the keys tokens are signed with (a JWKS file or URL; a URL "
                                                         "is fetched again when a token names an unknown kid)")
    auth.add_argument("--jwt-secret-env", metavar="VAR",
                      help="for development: verify HS256 tokens with the secret in environment variable VAR")
    auth.add_argument("--issuer", help="the authorization server: tokens must carry this `iss`; named in the "
                                       "protected resource metadata")
    auth.add_argument("--audience", help="the `aud` tokens must name (default: this gateway's URL, --public-url)")
    auth.add_argument("--required-scope", action="append", default=[], metavar="SCOPE",
                      help="a scope every token must grant (repeatable); too few is 403 insufficient_scope")
    auth.add_argument("--principal-claim", default="sub",
                      help="the claim that names the principal (default sub)")
    auth.add_argument("--public-url", metavar="URL",
                      help="the URL clients reach this gateway at, when it is not the one it listens on (behind "
                           "a TLS proxy): the tokens' default audience and the metadata's resource")
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
    shown = f"[{host}]" if ":" in host else host
    resource = args.public_url or f"http://{shown}:{port}{args.path}"
    try:
        verifier = _verifier(args, resource)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sock.close()
        return EXIT_USAGE
    guarded = open_guard(args, "regoguard serve -c p.yaml -- npx server")
    if guarded is None:
        sock.close()
        return EXIT_USAGE
    try:
        table = SessionTable(guarded.guard, guarded.make_upstream, SessionOptions(
            server_name=guarded.server_name, principal=args.principal or getpass.getuser(),
            idle_timeout=args.session_idle, max_sessions=args.max_sessions,
            max_sessions_per_principal=args.max_sessions_per_principal,
            refund_on_tool_error=args.refund_on_tool_error, pinning=guarded.pinning))
        rules = HostRules(port=port, bind_host=host, allowed_hosts=frozenset(h.lower() for h in args.allow_host),
                          allowed_origins=frozenset(o.lower().rstrip("/") for o in args.allow_origin))
        options = FrontOptions(path=args.path, max_body_bytes=args.max_message_bytes, body_timeout=args.body_timeout)
        legacy = None if args.no_legacy_sse else LegacySse(table, options)
        table.metrics = guarded.metrics
        app = HttpFront(table, rules, options, legacy, verifier=verifier, resource=resource,
                        metrics=guarded.metrics)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", ws="none",
                                http="h11", timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        if verifier is None:
            print(f"regoguard: no --jwks or --jwt-secret-env: serving unauthenticated; every caller is "
                  f"principal {table.default_principal.id!r}", file=sys.stderr)
        elif not args.issuer:
            print("regoguard: no --issuer: tokens from any issuer these keys sign for are accepted",
                  file=sys.stderr)
        print(f"regoguard listening on http://{shown}:{port}{args.path}", file=sys.stderr, flush=True)

        async def main() -> None:
            stop.server, stop.loop = server, asyncio.get_running_loop()
            if stop.early:
                return
            await server.serve(sockets=[sock])

        heap.settle()  # the loaded policy out of the collector's full passes (no 100 ms stalls mid-call)
        event_loop.run(main())
        return 0
    finally:
        sock.close()
        guarded.close()


def _verifier(args: argparse.Namespace, resource: str) -> Verifier | None:
    """The token verifier the options ask for; None when they ask for none. Raises ValueError or OSError
    with a message for the user when a key cannot be loaded."""
    import os

    from regoguard.proxy.auth import AuthOptions, Verifier

    secret = None
    if args.jwt_secret_env:
        secret = os.environ.get(args.jwt_secret_env)
        if not secret:
            raise ValueError(f"--jwt-secret-env {args.jwt_secret_env}: that variable is not set")
    options = AuthOptions(jwks=args.jwks, secret=secret, issuer=args.issuer, audience=args.audience,
                          required_scopes=tuple(args.required_scope), principal_claim=args.principal_claim)
    if not options.enabled:
        if args.issuer or args.audience or args.required_scope:
            raise ValueError("--issuer, --audience and --required-scope need --jwks or --jwt-secret-env")
        return None
    try:
        return Verifier(options, resource)
    except Exception as exc:
        raise ValueError(f"--jwks {args.jwks}: cannot load the keys: {exc}") from exc
