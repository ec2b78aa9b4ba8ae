"""``regoguard state show|reset [PREFIX]``: see or clear limit counters in a state store."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, BinaryIO

from regoguard.cli.common import EXIT_FAIL, EXIT_OK, state_options
from regoguard.limits import StoreError, open_store


def add_parser(sub: Any) -> None:
    p = sub.add_parser("state", help="show or reset rate-limit counters")
    p.add_argument("action", choices=("show", "reset"))
    p.add_argument("counter", nargs="?", help="a key prefix, e.g. global//payments/create_charge.daily_spend")
    p.add_argument("--json", action="store_true", help="print JSON (show)")
    state_options(p)
    p.set_defaults(func=cmd_state)


def cmd_state(args: argparse.Namespace, out: BinaryIO) -> int:
    import time

    try:
        store = open_store(args.state, args.state_prefix, create=False)
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
