"""What every command shares: exit codes, how policy errors print, and options used by several commands."""

from __future__ import annotations

import argparse
import sys

from regoguard.errors import PolicyLoadError
from regoguard.policy_set import PolicySet, load_policy_set

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


def print_errors(exc: PolicyLoadError) -> None:
    for err in exc.errors:
        print(err, file=sys.stderr)
    n = len(exc.errors)
    print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)


def load_or_report(path: str, rego: list[str]) -> PolicySet | None:
    """The policy and its team Rego, or None with every error printed (file:line:column)."""
    try:
        return load_policy_set(path, rego)
    except PolicyLoadError as exc:
        print_errors(exc)
        return None


def state_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="PATH|redis://...",
                   help="where limits live: a SQLite file (default ~/.local/state/regoguard/state.db), "
                        "redis://host:port/db, or memory")
    p.add_argument("--state-prefix", default=None, metavar="P",
                   help="put P before every counter key, so teams can share one store (default: regoguard: in "
                        "Redis, none in SQLite)")


def rego_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rego", action="append", default=[], metavar="DIR",
                   help="the team's Rego modules (a directory or .rego file; repeatable), loaded beside the "
                        "policy's own `rego:` list")


def server_command(args: argparse.Namespace, example: str) -> list[str] | None:
    """The MCP server's command given after ``--`` (argparse keeps the ``--``); None, with the usage
    error printed, when there is none."""
    command = list(args.server_command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print(f"error: give the MCP server's command after --, e.g. {example}", file=sys.stderr)
        return None
    return command
