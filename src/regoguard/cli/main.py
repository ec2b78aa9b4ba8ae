"""The ``regoguard`` command line: one module per command, wired here.

Commands: check, compile, eval (:mod:`.evaluate`), run, log, state, scan (:mod:`regoguard.scan`), test
(:mod:`regoguard.policytest`). Exit codes: 0 success (valid / allowed), 1 invalid policy or denied call, 2
usage or policy error in ``eval``. Errors go to stderr; only each command's own output reaches stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from regoguard import __version__
from regoguard.audit import configure_logging
from regoguard.cli import approvals, check, compile, evaluate, log, pin, run, serve, state, status
from regoguard.cli.common import EXIT_USAGE
from regoguard.engine import run_with_large_stack
from regoguard.errors import RegoguardError
from regoguard.stdout_guard import claim_stdout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regoguard", description="Policy-enforcing proxy for MCP: YAML policy, Rego decisions."
    )
    parser.add_argument("--version", action="version", version=f"regoguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (check, compile, evaluate, run, serve, pin, log, state, approvals, status):
        command.add_parser(sub)
    from regoguard.scan import command as scan_command

    scan_command.add_parser(sub)
    from regoguard.policytest import command as policytest_command

    policytest_command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from regoguard.cli.intercept import InterceptUsage, is_intercept_style, translate

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if is_intercept_style(argv):  # Intercept's root command: `regoguard -c POLICY [flags] -- COMMAND`
        try:
            argv = translate(argv)
        except InterceptUsage as exc:
            print(f"regoguard: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
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
    if args.command == "serve":
        args.stop_relay = serve.StopRelay()
        args.stop_relay.install()
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
