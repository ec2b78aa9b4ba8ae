"""The ``regoguard`` command line: check, compile, eval (and run, once the proxy lands).

Exit codes: 0 success (valid / allowed), 1 invalid policy or denied call, 2 usage or policy error in
``eval``. Errors go to stderr; only each command's own output reaches stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from regoguard import __version__
from regoguard.audit import (
    DEFAULT_SENSITIVE_KEYS,
    DecisionLog,
    FileSink,
    MaskingRules,
    Sink,
    StderrSink,
    configure_logging,
)
from regoguard.audit.summary import summarise
from regoguard.compiler import compile_policy
from regoguard.engine import Engine, run_with_large_stack
from regoguard.errors import PolicyLoadError, RegoguardError
from regoguard.limits import Limiter, MemoryStore, StoreError, open_store
from regoguard.policy import Policy, load_policy
from regoguard.policy_set import PolicySet, load_policy_set
from regoguard.reload import PolicyWatcher
from regoguard.stdout_guard import claim_stdout

if TYPE_CHECKING:
    from regoguard.guard import Guard

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


def _print_errors(exc: PolicyLoadError) -> None:
    for err in exc.errors:
        print(err, file=sys.stderr)
    n = len(exc.errors)
    print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)


def _load_all(paths: Sequence[str]) -> tuple[list[Policy], bool]:
    policies: list[Policy] = []
    ok = True
    for p in paths:
        try:
            policies.append(load_policy(p))
        except PolicyLoadError as exc:
            _print_errors(exc)
            ok = False
    return policies, ok


def cmd_check(args: argparse.Namespace, out: BinaryIO) -> int:
    ok = True
    for path in args.policy:
        try:
            loaded = load_policy_set(path, args.rego)
        except PolicyLoadError as exc:
            _print_errors(exc)
            ok = False
            continue
        policy = loaded.policy
        for warning in policy.warnings:
            print(warning, file=sys.stderr)
        tools = sum(1 for t in policy.tools)
        rules = sum(len(t.rules) for t in policy.tools)
        team = f", {len(loaded.modules)} Rego module{'s' if len(loaded.modules) != 1 else ''}" if loaded.modules else ""
        out.write(f"{policy.source}: ok ({tools} tool keys, {rules} rules{team})\n".encode())
    return EXIT_OK if ok else EXIT_FAIL


def cmd_compile(args: argparse.Namespace, out: BinaryIO) -> int:
    policies, ok = _load_all(args.policy)
    if not ok:
        return EXIT_FAIL
    compiled = [compile_policy(p) for p in policies]
    names = [c.filename for c in compiled]
    if len(set(names)) != len(names):
        print("error: two policies compile to the same file name; compile them into separate directories",
              file=sys.stderr)
        return EXIT_USAGE
    if args.output is None:
        if args.check:
            print("error: --check needs -o DIR (the directory holding the committed Rego)", file=sys.stderr)
            return EXIT_USAGE
        for c in compiled:
            out.write(c.module.encode())
        return EXIT_OK
    outdir = Path(args.output)
    if args.check:
        stale = [c for c in compiled if _read(outdir / c.filename) != c.module]
        for c in stale:
            print(f"{outdir / c.filename}: stale: regenerate with `regoguard compile {c.source} -o {outdir}`",
                  file=sys.stderr)
        if not stale:
            out.write(f"{len(compiled)} compiled polic{'y is' if len(compiled) == 1 else 'ies are'} "
                      "up to date\n".encode())
        return EXIT_FAIL if stale else EXIT_OK
    outdir.mkdir(parents=True, exist_ok=True)
    for c in compiled:
        target = outdir / c.filename
        target.write_text(c.module, encoding="utf-8")
        out.write(f"wrote {target}\n".encode())
    return EXIT_OK


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _json_arg(text: str, what: str) -> Any:
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from exc


def cmd_eval(args: argparse.Namespace, out: BinaryIO) -> int:
    try:
        arguments = _json_arg(args.args, "--args")
        schema = _json_arg(args.schema, "--schema") if args.schema else None
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(arguments, dict):
        print("error: --args must be a JSON object", file=sys.stderr)
        return EXIT_USAGE
    if schema is not None and not isinstance(schema, dict):
        print("error: --schema must be a JSON object (the tool's inputSchema)", file=sys.stderr)
        return EXIT_USAGE
    try:
        loaded = load_policy_set(args.config, args.rego)
    except PolicyLoadError as exc:
        _print_errors(exc)
        return EXIT_USAGE
    engine = Engine(loaded.compiled, extra_modules=loaded.modules or None)
    try:
        doc: dict[str, Any] = {
            "tool": {"name": args.tool, "arguments": arguments},
            "server": {"name": args.server_name},
            "session": {"id": "cli", "client": {"name": "regoguard-eval", "version": __version__}},
            "principal": {"id": args.principal, "claims": {}},
        }
        if schema is not None:
            doc["schema"] = schema
        decision = engine.evaluate(doc)
    finally:
        engine.close()
    result = decision.to_json()
    details = decision.extra.get("details", {})
    for reason in result["reasons"]:
        reason["detail"] = details.get(reason["rule"], [])
    out.write((json.dumps(result, indent=2 if args.pretty else None) + "\n").encode())
    return EXIT_OK if decision.allow else EXIT_FAIL


def cmd_run(args: argparse.Namespace, out: BinaryIO) -> int:
    import asyncio
    import getpass

    from regoguard.guard import Guard
    from regoguard.proxy.stdio import ProxyOptions, StdioProxy, default_server_name

    command = list(args.server_command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("error: give the MCP server's command after --, e.g. regoguard run -c p.yaml -- npx server",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        loaded = load_policy_set(args.config, args.rego)
    except PolicyLoadError as exc:
        _print_errors(exc)
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
        watcher = PolicyWatcher(loaded, args.rego, lambda new: _apply_reload(args, new, guard, limiter, decision_log),
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


def _apply_reload(args: argparse.Namespace, new: PolicySet, guard: Guard, limiter: Limiter,
                  decision_log: DecisionLog | None) -> None:
    """Put a freshly loaded policy in force: build its engine first (raising leaves the old one), then swap."""
    import threading

    engine = Engine(new.compiled, extra_modules=new.modules or None)
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


def cmd_log(args: argparse.Namespace, out: BinaryIO) -> int:
    summary = summarise(args.path, args.recent)
    if not summary.files:
        print(f"error: no decision log at {args.path}", file=sys.stderr)
        return EXIT_FAIL
    text = json.dumps(summary.to_json(), indent=2) if args.json else summary.render()
    out.write((text + "\n").encode())
    return EXIT_OK


def _state_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="PATH|redis://...",
                   help="where limits live: a SQLite file (default ~/.local/state/regoguard/state.db), "
                        "redis://host:port/db, or memory")
    p.add_argument("--state-prefix", default="regoguard:", help="key prefix in Redis (default regoguard:)")


def cmd_state(args: argparse.Namespace, out: BinaryIO) -> int:
    import time

    try:
        store = open_store(args.state, args.state_prefix)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    try:
        prefix = args.counter or ""
        if args.action == "reset":
            n = store.reset(prefix)
            out.write(f"reset {n} counter{'s' if n != 1 else ''}\n".encode())
            return EXIT_OK
        rows = store.snapshot(prefix)
        if args.json:
            out.write((json.dumps({k: {"tokens": v.tokens, "updated": v.updated} for k, v in rows.items()})
                       + "\n").encode())
            return EXIT_OK
        if not rows:
            out.write(b"no counters\n")
        now = time.time()
        for key, state in rows.items():
            age = max(0.0, now - state.updated)
            out.write(f"{key}  tokens={state.tokens:g}  updated {age:.0f}s ago\n".encode())
        return EXIT_OK
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        store.close()


def _rego_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rego", action="append", default=[], metavar="DIR",
                   help="the team's Rego modules (a directory or .rego file; repeatable), loaded beside the "
                        "policy's own `rego:` list")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regoguard", description="Policy-enforcing proxy for MCP: YAML policy, Rego decisions."
    )
    parser.add_argument("--version", action="version", version=f"regoguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate policy files (and their Rego); errors as file:line:column")
    p.add_argument("policy", nargs="+")
    _rego_option(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("compile", help="write the Rego module of each policy")
    p.add_argument("policy", nargs="+")
    p.add_argument("-o", "--output", metavar="DIR", help="directory to write <policy>.rego into (default stdout)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if the Rego in DIR is stale (for CI and pre-commit)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("eval", help="decide one tool call and print the decision as JSON")
    p.add_argument("-c", "--config", required=True, metavar="POLICY")
    p.add_argument("--tool", required=True, help="the tool name")
    p.add_argument("--args", default="{}", help="the arguments as a JSON object (or @file.json)")
    p.add_argument("--schema", help="the tool's inputSchema as JSON (or @file.json)")
    p.add_argument("--principal", default="cli", help="principal id in the input document")
    p.add_argument("--server-name", default="cli", help="server name in the input document")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    _rego_option(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("run", help="run an MCP server behind the guard: regoguard run -c POLICY -- COMMAND ...")
    p.add_argument("-c", "--config", required=True, metavar="POLICY")
    p.add_argument("--server-name", help="server name in the input document (default: from the command)")
    p.add_argument("--principal", help="principal id in the input document (default: the OS user)")
    p.add_argument("--max-message-bytes", type=int, default=16 * 1024 * 1024,
                   help="largest client message accepted (default 16 MiB)")
    _state_options(p)
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
    _rego_option(p)
    p.add_argument("--reload-interval", type=float, default=1.0, metavar="SECONDS",
                   help="how often to look for changes to the policy and its Rego (default 1; 0 turns hot "
                        "reload off)")
    p.add_argument("--refund-on-tool-error", action="store_true",
                   help="also give tokens back when the tool answers with isError (JSON-RPC errors always are)")
    p.add_argument("server_command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("log", help="summarise a decision log: calls, denials by rule and by tool, recent denials")
    p.add_argument("path", help="the decision log file (rotated files beside it are read too)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--recent", type=int, default=10, help="how many recent denials to list (default 10)")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("state", help="show or reset rate-limit counters")
    p.add_argument("action", choices=("show", "reset"))
    p.add_argument("counter", nargs="?", help="a key prefix, e.g. global//payments/create_charge.daily_spend")
    p.add_argument("--json", action="store_true", help="print JSON (show)")
    _state_options(p)
    p.set_defaults(func=cmd_state)

    from regoguard import scan

    scan.add_parser(sub)
    from regoguard.policytest import command as policytest_command

    policytest_command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        # --help and --version print to stdout, before it is claimed
        args, extra = parser.parse_known_args(argv)
        if extra and args.command == "state" and args.counter is None and len(extra) == 1:
            args.counter = extra[0]  # `state reset --state X PREFIX`: argparse places optional positionals early
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse: usage errors exit 2, --help/--version exit 0
        return int(exc.code or 0)
    out = claim_stdout()
    configure_logging(getattr(args, "log_level", None))
    args.signal_relay = None
    if args.command == "run":
        from regoguard.proxy.stdio import SignalRelay

        args.signal_relay = SignalRelay()
        args.signal_relay.install()  # handlers run on the main thread; the proxy runs on a large-stack thread
    try:
        code: int = run_with_large_stack(lambda: args.func(args, out))
    except RegoguardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
