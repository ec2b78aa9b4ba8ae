"""``regoguard run``: the proxy in front of one MCP server, with its state, decision log and hot reload."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from regoguard import __version__, heap
from regoguard.audit import DEFAULT_SENSITIVE_KEYS, DecisionLog, FileSink, MaskingRules, Sink, StderrSink
from regoguard.audit.lifecycle import Lifecycle
from regoguard.cli import event_loop
from regoguard.cli.beside import open_book, open_webhook, register
from regoguard.cli.common import (
    EXIT_USAGE,
    load_or_report,
    principal_claims,
    rego_option,
    state_options,
    upstream_options,
    upstream_target,
)
from regoguard.engine import Engine
from regoguard.limits import Limiter, MemoryStore, StoreError, open_store
from regoguard.metrics import Metrics
from regoguard.pinning import FIRST_USE, LockFile, PinError, Pinning
from regoguard.policy import Policy
from regoguard.policy_set import PolicySet
from regoguard.proxy.upstream import Deliver, Upstream
from regoguard.reload import PolicyWatcher

RELOAD_BUILD_WAIT = 60.0

if TYPE_CHECKING:
    from regoguard.guard import Guard
    from regoguard.limits import Store


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="guard an MCP server for one client on stdio: regoguard run -c POLICY -- COMMAND "
                                   "..., or --upstream URL for a remote server")
    guard_options(p)
    p.add_argument("--principal", help="principal id in the input document (default: the OS user)")
    p.add_argument("--principal-claims", metavar="JSON|@FILE",
                   help="the principal's claims in the input document (a JSON object, or @file holding one)")
    p.add_argument("--max-message-bytes", type=int, default=16 * 1024 * 1024,
                   help="largest client message accepted (default 16 MiB)")
    p.add_argument("server_command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]",
                   help="the MCP server's own command line, after --")
    p.set_defaults(func=cmd_run)


def guard_options(p: argparse.ArgumentParser) -> None:
    """The options ``run`` and ``serve`` share: the policy, the server, state, logging and reload."""
    p.add_argument("-c", "--config", required=True, metavar="POLICY",
                   help="the policy file (YAML); reloaded when it changes")
    p.add_argument("--server-name", help="server name in the input document (default: from the command, or the "
                                         "URL's host)")
    upstream_options(p)
    state_options(p)
    p.add_argument("--fail-open", action="store_true",
                   help="if the state store fails, allow calls instead of denying them (default: deny; "
                        "a policy can choose this with `on_store_error: allow`)")
    p.add_argument("--dry-run", action="store_true",
                   help="block nothing: log calls the policy would deny as would_deny (also `mode: dry_run`)")
    p.add_argument("--decision-log", metavar="PATH|stderr|off", default="off",
                   help="where decision events go: a file (rotated by size), stderr, or off (default)")
    p.add_argument("--decision-log-max-bytes", type=int, default=50 * 1024 * 1024,
                   help="rotate the decision log file at this size (default 50 MiB)")
    p.add_argument("--decision-log-backups", type=int, default=5, help="rotated files kept (default 5)")
    p.add_argument("--log-level", default=None, help="stderr log level: debug, info, warning, error")
    rego_option(p)
    p.add_argument("--reload-interval", type=float, default=1.0, metavar="SECONDS",
                   help="how often to look for changes to the policy and its Rego (default 1; 0 turns hot "
                        "reload off)")
    p.add_argument("--refund-on-tool-error", action="store_true",
                   help="also give tokens back when the tool answers with isError (JSON-RPC errors always are)")
    p.add_argument("--pin", metavar="LOCKFILE|first-use",
                   help="hold the server's tools to this lock file (written by `regoguard pin`), or to the "
                        "definitions first seen (first-use, kept in the state store); the policy's `pin:` does "
                        "the same: a tool that changed or is new is hidden and its calls denied")
    p.add_argument("--approval-webhook", metavar="URL",
                   help="POST each pending approval (JSON) to URL, off the call path; approvals live in --state")
    p.add_argument("--approval-webhook-secret-env", metavar="VAR",
                   help="sign webhook bodies with the secret in environment variable VAR "
                        "(X-Regoguard-Signature: sha256=<HMAC-SHA256 of the body>)")
    p.add_argument("--status-dir", metavar="DIR|off",
                   help="where this proxy registers itself for `regoguard status` (default "
                        "~/.local/state/regoguard/proxies; off: not at all)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (serve has them at /metrics too)")


@dataclass
class Guarded:
    """What ``run`` and ``serve`` put in front of a server: the guard, what it decides for, and what
    must be closed at the end."""

    guard: Guard
    command: list[str] | None
    headers: dict[str, str]
    server_name: str
    make_upstream: Callable[[Deliver], Upstream]
    metrics: Metrics
    pinning: Pinning | None
    _watcher: PolicyWatcher | None
    _store: Store
    _metrics_server: Any = None
    lifecycle: Lifecycle | None = None

    def close(self) -> None:
        if self.lifecycle is not None:
            self.lifecycle.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        if self._watcher is not None:
            self._watcher.stop()
        self.guard.engine.close()
        self._store.close()
        if self.guard.approvals is not None:
            self.guard.approvals.store.close()
        if self.guard.webhook is not None:
            self.guard.webhook.close()


def open_guard(args: argparse.Namespace, example: str) -> Guarded | None:
    """Load the policy, open the state store, build the engine and guard, start hot reload; None, with
    the problem printed, when any of it fails."""
    from regoguard.guard import Guard

    target = upstream_target(args, example)
    if target is None:
        return None
    command, headers = target
    loaded = load_or_report(args.config, args.rego)
    if loaded is None:
        return None
    policy = loaded.policy
    for warning in policy.warnings:
        print(warning, file=sys.stderr)
    fail_open = args.fail_open or policy.on_store_error == "allow"
    store: Store
    try:
        store = open_store(args.state, args.state_prefix)
    except StoreError as exc:
        if not fail_open:
            print(f"error: {exc}", file=sys.stderr)
            return None
        print(f"warning: {exc}; limits are kept in memory, for this process only (--fail-open)", file=sys.stderr)
        store = MemoryStore()
    server_name = args.server_name or target_name(command, args.upstream)
    pin_path = args.pin or policy.pin
    pinning = None
    if pin_path == FIRST_USE:
        pinning = Pinning(None, policy.on_change, store, server_name)
    elif pin_path is not None:
        try:
            pinning = Pinning(LockFile.read(pin_path), policy.on_change)
        except PinError as exc:
            print(f"error: {exc}", file=sys.stderr)
            store.close()
            return None
    engine = Engine(loaded.compiled, extra_modules=loaded.modules or None)
    decision_log = _decision_log(args, policy, engine.revision, server_name)
    dry_run = args.dry_run or policy.mode == "dry_run"
    if dry_run:
        print("regoguard: dry run: every call is forwarded; calls the policy would deny are logged as would_deny",
              file=sys.stderr)
    limiter = Limiter(store, fail_open=fail_open)
    metrics = Metrics()
    approvals = open_book(args, store)
    try:
        webhook = open_webhook(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        store.close()
        return None
    guard = Guard(engine, limiter, decision_log, dry_run=dry_run, metrics=metrics, approvals=approvals,
                  webhook=webhook, masking=_masking(policy))
    lifecycle = register(args, guard, server_name, fail_open, command)

    def reload(new: PolicySet) -> None:
        apply_reload(args, new, guard, limiter, decision_log)
        if lifecycle is not None:
            lifecycle.reloaded(guard.engine.revision)

    watcher = None
    if args.reload_interval > 0:
        watcher = PolicyWatcher(loaded, args.rego, reload, args.reload_interval)
        watcher.start()
    make_upstream = upstream_factory(command, args.upstream, headers, args.upstream_transport)
    guarded = Guarded(guard, command, headers, server_name, make_upstream, metrics, pinning, watcher, store,
                      lifecycle=lifecycle)
    if args.metrics_listen:
        try:
            guarded._metrics_server = start_metrics_server(args.metrics_listen, metrics)
        except (OSError, ValueError) as exc:
            print(f"error: --metrics-listen {args.metrics_listen}: {exc}", file=sys.stderr)
            guarded.close()
            return None
    return guarded


def start_metrics_server(listen: str, metrics: Metrics) -> Any:
    """prometheus_client's own HTTP server for ``/metrics``, on a thread of its own."""
    from prometheus_client import start_http_server

    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("expected HOST:PORT")
    server, _thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=metrics.registry)
    print(f"regoguard: metrics at http://{host or '127.0.0.1'}:{server.server_port}/metrics", file=sys.stderr)
    return server


def cmd_run(args: argparse.Namespace, out: BinaryIO) -> int:
    import getpass

    from regoguard.proxy.stdio import ProxyOptions, StdioProxy

    claims = principal_claims(args.principal_claims)
    if claims is None:
        return EXIT_USAGE
    guarded = open_guard(args, "regoguard run -c p.yaml -- npx server")
    if guarded is None:
        return EXIT_USAGE
    options = ProxyOptions(
        server_name=guarded.server_name,
        principal=args.principal or getpass.getuser(),
        principal_claims=claims,
        pinning=guarded.pinning,
        max_message_bytes=args.max_message_bytes,
        refund_on_tool_error=args.refund_on_tool_error,
    )
    proxy = StdioProxy(guarded.guard, guarded.make_upstream, options, sys.stdin.buffer, out,
                       signals=args.signal_relay)
    guarded.metrics.sessions.set(1)
    heap.settle()  # the loaded policy out of the collector's full passes (no 100 ms stalls mid-call)
    try:
        return event_loop.run(proxy.run())
    finally:
        guarded.metrics.sessions.set(0)
        guarded.close()


def target_name(command: list[str] | None, url: str | None) -> str:
    from urllib.parse import urlsplit

    from regoguard.proxy.stdio import default_server_name

    if command is not None:
        return default_server_name(command)
    return urlsplit(url or "").hostname or "mcp-server"


def upstream_factory(command: list[str] | None, url: str | None, headers: dict[str, str],
                     transport: str) -> Callable[[Deliver], Upstream]:
    """What builds the server side of one session: the command as a child, or the remote server."""
    from regoguard.proxy.child import ChildUpstream
    from regoguard.proxy.http_upstream import HttpOptions, http_upstream

    if command is not None:
        return lambda deliver: ChildUpstream(command, deliver)
    assert url is not None
    options = HttpOptions(url, headers)
    return lambda deliver: http_upstream(transport, options, deliver)


def apply_reload(args: argparse.Namespace, new: PolicySet, guard: Guard, limiter: Limiter,
                  decision_log: DecisionLog | None) -> None:
    """Put a freshly loaded policy in force: build its engine first (raising leaves the old one), then swap."""

    # The worker's interpreter is built here, before the swap; inline evaluation would build one on the
    # proxy's thread at the first call, so a reloaded engine goes without it.
    engine = Engine(new.compiled, extra_modules=new.modules or None, inline=False)
    # Its bundles are built ahead, on the watcher's side of the swap: no call after it pays a build.
    if not engine.wait_ready(RELOAD_BUILD_WAIT):
        print(f"regoguard: the reloaded policy's bundles are still building after {RELOAD_BUILD_WAIT:.0f}s; "
              "swapping now (the first call to each remaining tool builds its own)", file=sys.stderr)
    for warning in new.policy.warnings:
        print(warning, file=sys.stderr)
    before = guard.engine.compiled._policy
    if before is not None and (before.pin, before.on_change) != (new.policy.pin, new.policy.on_change):
        print("regoguard: the policy's pin/on_change changed; tool pinning keeps its old settings until "
              "regoguard restarts", file=sys.stderr)
    old = guard.swap(engine, dry_run=args.dry_run or new.policy.mode == "dry_run")
    limiter.fail_open = args.fail_open or new.policy.on_store_error == "allow"
    guard.masking = _masking(new.policy)
    if decision_log is not None:
        decision_log.masking = guard.masking
        decision_log.revision = engine.revision
    # Calls already inside the old engine finish within its timeout; then it goes, and the heap is settled
    # again: the old policy's cycles collected, the new one's objects frozen (see regoguard.heap).
    closer = threading.Timer(old.limits.timeout + 1.0, _retire, ([old],))
    closer.daemon = True
    closer.start()


def _retire(holder: list[Engine]) -> None:
    holder.pop().close()  # the holder was the last reference the reload kept
    heap.settle(full=True)


def _decision_log(args: argparse.Namespace, policy: Policy, revision: str, server: str) -> DecisionLog | None:
    target = args.decision_log
    if target in (None, "off"):
        return None
    sink: Sink = StderrSink() if target == "stderr" else FileSink(target, args.decision_log_max_bytes,
                                                                  args.decision_log_backups)
    return DecisionLog(sink, _masking(policy), revision, {"server": server, "version": __version__})


def _masking(policy: Policy) -> MaskingRules:
    audit = policy.audit
    return MaskingRules(erase=audit.erase, mask=audit.mask, hash_arguments=audit.hash_arguments,
                        default_keys=DEFAULT_SENSITIVE_KEYS if audit.default_masking else ())


