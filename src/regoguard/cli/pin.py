"""``regoguard pin``: write the lock file that holds a server's tools to their reviewed definitions, or
check a server against one (``--check``, for CI)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, BinaryIO

from regoguard.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, upstream_options, upstream_target

DEFAULT_LOCK = "tools.lock.json"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pin", help="write a lock file of a server's tools (or --check one): regoguard pin -o "
                                   "tools.lock.json -- COMMAND ...")
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help=f"the lock file to write, or to check with --check (default {DEFAULT_LOCK}; - for stdout)")
    p.add_argument("--check", action="store_true",
                   help="compare the server with the lock file instead of writing it: exit 1 and list what "
                        "differs (a changed, new or missing tool)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the server to list its tools (default 30)")
    upstream_options(p)
    p.add_argument("server_command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]",
                   help="the MCP server's own command line, after --")
    p.set_defaults(func=cmd_pin)


def cmd_pin(args: argparse.Namespace, out: BinaryIO) -> int:
    from regoguard.pinning import LockFile, PinError
    from regoguard.scan.command import list_or_report

    target = upstream_target(args, "regoguard pin -o tools.lock.json -- npx -y @scope/server")
    if target is None:
        return EXIT_USAGE
    command, headers = target
    path = args.output or DEFAULT_LOCK
    listing = list_or_report(args, command, headers)
    if listing is None:
        return EXIT_FAIL
    if args.check:
        try:
            lock = LockFile.read(path)
        except PinError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        problems = lock.diff(listing.raw)
        for line in problems:
            print(f"{path}: {line}", file=sys.stderr)
        if problems:
            print(f"{path}: {len(problems)} difference{'s' if len(problems) != 1 else ''} with {listing.server}; "
                  "review them, then run `regoguard pin` again to accept", file=sys.stderr)
            return EXIT_FAIL
        print(f"{path}: {len(lock.tools)} tools match {listing.server}", file=sys.stderr)
        return EXIT_OK
    text = LockFile.of(listing.server, listing.raw).text()
    if path == "-":
        out.write(text.encode("utf-8"))
    else:
        Path(path).write_text(text, encoding="utf-8")
    print(f"regoguard pin: {len(listing.raw)} tools of {listing.server} pinned in "
          f"{'stdout' if path == '-' else path}", file=sys.stderr)
    return EXIT_OK
