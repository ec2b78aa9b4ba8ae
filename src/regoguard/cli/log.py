"""``regoguard log PATH``: summarise a decision log and its rotated files."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, BinaryIO

from regoguard.audit.summary import summarise
from regoguard.cli.common import EXIT_FAIL, EXIT_OK


def add_parser(sub: Any) -> None:
    p = sub.add_parser("log", help="summarise a decision log: calls, denials by rule and by tool, recent denials")
    p.add_argument("path", help="the decision log file (rotated files beside it are read too)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--recent", type=int, default=10, help="how many recent denials to list (default 10)")
    p.set_defaults(func=cmd_log)


def cmd_log(args: argparse.Namespace, out: BinaryIO) -> int:
    summary = summarise(args.path, args.recent)
    if not summary.files:
        print(f"error: no decision log at {args.path}", file=sys.stderr)
        return EXIT_FAIL
    text = json.dumps(summary.to_json(), indent=2) if args.json else summary.render()
    out.write((text + "\n").encode())
    return EXIT_OK
