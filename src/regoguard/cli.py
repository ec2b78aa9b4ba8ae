"""The ``regoguard`` command line: check, compile, eval, log, state; run (cli_run), test (policytest), scan.

Exit codes: 0 success (valid / allowed), 1 invalid policy or denied call, 2 usage or policy error in
``eval``. Errors go to stderr; only each command's own output reaches stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from regoguard import __version__, cli_run
from regoguard.audit import configure_logging
from regoguard.audit.summary import summarise
from regoguard.cli_common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, print_errors, rego_option, state_options
from regoguard.compiler import compile_policy
from regoguard.engine import Engine, run_with_large_stack
from regoguard.errors import PolicyLoadError, RegoguardError
from regoguard.limits import StoreError, open_store
from regoguard.policy import Policy, load_policy
from regoguard.policy_set import load_policy_set
from regoguard.stdout_guard import claim_stdout


def _load_all(paths: Sequence[str]) -> tuple[list[Policy], bool]:
    policies: list[Policy] = []
    ok = True
    for p in paths:
        try:
            policies.append(load_policy(p))
        except PolicyLoadError as exc:
            print_errors(exc)
            ok = False
    return policies, ok


def cmd_check(args: argparse.Namespace, out: BinaryIO) -> int:
    ok = True
    for path in args.policy:
        try:
            loaded = load_policy_set(path, args.rego)
        except PolicyLoadError as exc:
            print_errors(exc)
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
        print_errors(exc)
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


def cmd_log(args: argparse.Namespace, out: BinaryIO) -> int:
    summary = summarise(args.path, args.recent)
    if not summary.files:
        print(f"error: no decision log at {args.path}", file=sys.stderr)
        return EXIT_FAIL
    text = json.dumps(summary.to_json(), indent=2) if args.json else summary.render()
    out.write((text + "\n").encode())
    return EXIT_OK


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regoguard", description="Policy-enforcing proxy for MCP: YAML policy, Rego decisions."
    )
    parser.add_argument("--version", action="version", version=f"regoguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate policy files (and their Rego); errors as file:line:column")
    p.add_argument("policy", nargs="+")
    rego_option(p)
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
    rego_option(p)
    p.set_defaults(func=cmd_eval)

    cli_run.add_parser(sub)

    p = sub.add_parser("log", help="summarise a decision log: calls, denials by rule and by tool, recent denials")
    p.add_argument("path", help="the decision log file (rotated files beside it are read too)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--recent", type=int, default=10, help="how many recent denials to list (default 10)")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("state", help="show or reset rate-limit counters")
    p.add_argument("action", choices=("show", "reset"))
    p.add_argument("counter", nargs="?", help="a key prefix, e.g. global//payments/create_charge.daily_spend")
    p.add_argument("--json", action="store_true", help="print JSON (show)")
    state_options(p)
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
