"""``regoguard run``: the proxy in front of one MCP server, with its state, decision log and hot reload."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import TYPE_CHECKING, Any, BinaryIO

from regoguard import __version__
from regoguard.audit import DEFAULT_SENSITIVE_KEYS, DecisionLog, FileSink, MaskingRules, Sink, StderrSink
from regoguard.cli.common import EXIT_USAGE, load_or_report, rego_option, server_command, state_options
from regoguard.engine import Engine
from regoguard.limits import Limiter, MemoryStore, StoreError, open_store
from regoguard.policy import Policy
from regoguard.policy_set import PolicySet
from regoguard.reload import PolicyWatcher

RELOAD_BUILD_WAIT = 60.0

if TYPE_CHECKING:
    from regoguard.guard import Guard


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run an MCP server behind the guard: regoguard run -c POLICY -- COMMAND ...")
    p.add_argument("-c", "--config", required=True, metavar="POLICY",
                   help="the policy file (YAML); reloaded when it changes")
    p.add_argument("--server-name", help="server name in the input document (default: from the command)")
    p.add_argument("--principal", help="principal id in the input document (default: the OS user)")
    p.add_argument("--max-message-bytes", type=int, default=16 * 1024 * 1024,
                   help="largest client message accepted (default 16 MiB)")
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
    p.add_argument("server_command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]",
                   help="the MCP server's own command line, after --")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace, out: BinaryIO) -> int:
    import asyncio
    import getpass

    from regoguard.guard import Guard
    from regoguard.proxy.stdio import ProxyOptions, StdioProxy, default_server_name

    command = server_command(args, "regoguard run -c p.yaml -- npx server")
    if command is None:
        return EXIT_USAGE
    loaded = load_or_report(args.config, args.rego)
    if loaded is None:
        return EXIT_USAGE
    policy = loaded.policy
    for warning in policy.warnings:
        print(warning, file=sys.stderr)
    fail_open = args.fail_open or policy.on_store_error == "allow"
    try:
        store = open_store(args.state, args.state_prefix)
    except StoreError as exc:
        if not fail_open:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"warning: {exc}; limits are kept in memory, for this process only (--fail-open)", file=sys.stderr)
        store = MemoryStore()
    engine = Engine(loaded.compiled, extra_modules=loaded.modules or None)
    server_name = args.server_name or default_server_name(command)
    decision_log = _decision_log(args, policy, engine.revision, server_name)
    options = ProxyOptions(
        server_name=server_name,
        principal=args.principal or getpass.getuser(),
        max_message_bytes=args.max_message_bytes,
        refund_on_tool_error=args.refund_on_tool_error,
    )
    dry_run = args.dry_run or policy.mode == "dry_run"
    if dry_run:
        print("regoguard: dry run: every call is forwarded; calls the policy would deny are logged as would_deny",
              file=sys.stderr)
    limiter = Limiter(store, fail_open=fail_open)
    guard = Guard(engine, limiter, decision_log, dry_run=dry_run)
    watcher = None
    if args.reload_interval > 0:
        watcher = PolicyWatcher(loaded, args.rego, lambda new: apply_reload(args, new, guard, limiter, decision_log),
                                args.reload_interval)
        watcher.start()
    proxy = StdioProxy(guard, command, options, sys.stdin.buffer, out, signals=args.signal_relay)
    try:
        return asyncio.run(proxy.run())
    finally:
        if watcher is not None:
            watcher.stop()
        guard.engine.close()
        store.close()


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
    old = guard.swap(engine, dry_run=args.dry_run or new.policy.mode == "dry_run")
    limiter.fail_open = args.fail_open or new.policy.on_store_error == "allow"
    if decision_log is not None:
        decision_log.masking = _masking(new.policy)
        decision_log.revision = engine.revision
    # Calls already inside the old engine finish within its timeout; then it goes.
    closer = threading.Timer(old.limits.timeout + 1.0, old.close)
    closer.daemon = True
    closer.start()


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


