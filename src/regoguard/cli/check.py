"""``regoguard check POLICY...``: validate policies and their Rego; errors as file:line:column."""

from __future__ import annotations

import argparse
import sys
from typing import Any, BinaryIO

from regoguard.cli.common import EXIT_FAIL, EXIT_OK, print_errors, rego_option
from regoguard.errors import PolicyLoadError
from regoguard.policy_set import load_policy_set


def add_parser(sub: Any) -> None:
    p = sub.add_parser("check", help="validate policy files (and their Rego); errors as file:line:column")
    p.add_argument("policy", nargs="+")
    rego_option(p)
    p.set_defaults(func=cmd_check)


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
