"""``regoguard check POLICY...``: validate policies and their Rego; errors as file:line:column.

A policy test file (``*_test.yaml``, see :mod:`regoguard.policytest`) given among the policies is checked
as a test file, with the policy it names, so ``regoguard check policies/*.yaml`` holds for a directory that
keeps its tests beside its policies. Running the tests is ``regoguard test``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, BinaryIO

from regoguard.cli.common import EXIT_FAIL, EXIT_OK, print_errors, rego_option
from regoguard.errors import PolicyLoadError
from regoguard.policy_set import PolicySet, load_policy_set
from regoguard.policytest.discover import is_test_file
from regoguard.policytest.format import load_suite


def add_parser(sub: Any) -> None:
    p = sub.add_parser("check", help="validate policy files (and their Rego); errors as file:line:column")
    p.add_argument("policy", nargs="+", help="policy files; *_test.yaml files among them are checked as tests")
    rego_option(p)
    p.set_defaults(func=cmd_check)
    v = sub.add_parser("validate", help="Intercept's name for check: regoguard validate -c POLICY")
    v.add_argument("-c", "--config", action="append", required=True, metavar="POLICY", dest="policy",
                   help="the policy file (repeatable)")
    rego_option(v)
    v.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace, out: BinaryIO) -> int:
    ok = True
    for path in args.policy:
        try:
            if is_test_file(Path(path).name):
                out.write(_check_test_file(Path(path), args.rego).encode())
                continue
            loaded = load_policy_set(path, args.rego)
        except PolicyLoadError as exc:
            print_errors(exc)
            ok = False
            continue
        out.write(f"{loaded.policy.source}: ok ({_summary(loaded)})\n".encode())
    return EXIT_OK if ok else EXIT_FAIL


def _summary(loaded: PolicySet, warn: bool = True) -> str:
    policy = loaded.policy
    for warning in policy.warnings if warn else ():
        print(warning, file=sys.stderr)
    tools = sum(1 for t in policy.tools)
    rules = sum(len(t.rules) for t in policy.tools)
    n = len(loaded.modules)
    team = f", {n} Rego module{'s' if n != 1 else ''}" if loaded.modules else ""
    return f"{tools} tool keys, {rules} rules{team}"


def _check_test_file(path: Path, rego: list[str]) -> str:
    """The test file and the policy it tests, loaded as ``regoguard test`` loads them (raises
    PolicyLoadError with every problem)."""
    suite = load_suite(path)
    loaded = load_policy_set(str(suite.policy), [*rego, *(str(p) for p in suite.rego)])
    n = len(suite.cases)
    return (f"{suite.display}: ok (a test file: {n} case{'s' if n != 1 else ''} for {loaded.policy.source}, "
            f"{_summary(loaded, warn=False)}; run them with `regoguard test {suite.display}`)\n")
