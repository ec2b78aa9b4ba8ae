"""What every command shares: exit codes, how policy errors print, and options used by several commands."""

from __future__ import annotations

import argparse
import sys

from regoguard.errors import PolicyLoadError

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


def print_errors(exc: PolicyLoadError) -> None:
    for err in exc.errors:
        print(err, file=sys.stderr)
    n = len(exc.errors)
    print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)


def state_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="PATH|redis://...",
                   help="where limits live: a SQLite file (default ~/.local/state/regoguard/state.db), "
                        "redis://host:port/db, or memory")
    p.add_argument("--state-prefix", default="regoguard:", help="key prefix in Redis (default regoguard:)")


def rego_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rego", action="append", default=[], metavar="DIR",
                   help="the team's Rego modules (a directory or .rego file; repeatable), loaded beside the "
                        "policy's own `rego:` list")
