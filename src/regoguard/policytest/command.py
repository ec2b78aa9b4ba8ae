"""``regoguard test [PATH...]``: run YAML policy test cases and the team's Rego ``test_`` rules.

Exit codes: 0 every test passed; 1 a test failed, a test file (or its policy, or its Rego) did not load,
no test was found, or coverage fell under ``--fail-under``; 2 usage errors (a PATH that does not exist,
a bad ``--run`` pattern).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, BinaryIO

from regoguard.engine import library_modules
from regoguard.engine_io import data_json
from regoguard.errors import PolicyLoadError
from regoguard.policytest import coverage as cov
from regoguard.policytest import report
from regoguard.policytest.discover import discover
from regoguard.policytest.loading import Loader, Target
from regoguard.policytest.model import display_path
from regoguard.policytest.rego_files import find_tests, load_modules
from regoguard.policytest.rego_tests import RegoGroup, run_group
from regoguard.policytest.runner import CaseResult, run_case
from regoguard.rego_modules import TEST_SUFFIX

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser("test", help="run policy tests: YAML cases (*_test.yaml) and Rego test_ rules",
                       description="Run policy unit tests: *_test.yaml cases (policy:, tests: with call/expect, "
                                   "repeat, steps and advance for limits) and test_ rules in *_test.rego. The "
                                   "format is documented in docs/testing.md of the regoguard repository.")
    p.add_argument("paths", nargs="*", default=["."], metavar="PATH",
                   help="test files, or directories searched for *_test.yaml / *.test.yaml (default .)")
    p.add_argument("--rego", action="append", default=[], metavar="DIR",
                   help="more team Rego (file or directory), loaded with every test file; repeatable")
    p.add_argument("-v", "--verbose", action="store_true", help="show each passing case's calls and outputs")
    p.add_argument("--run", metavar="REGEX", help="only tests whose FILE::NAME matches (re.search)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--coverage", action="store_true",
                   help="list the policy rules no test saw deny a call, and tools no test calls")
    p.add_argument("--fail-under", type=float, metavar="PCT",
                   help="exit 1 when coverage is under PCT percent (implies --coverage)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="time allowed each Rego test (default 10)")
    p.set_defaults(func=cmd_test)


class _Run:
    """Collects results and writes text as it goes (or JSON at the end)."""

    def __init__(self, args: argparse.Namespace, out: BinaryIO) -> None:
        self.args, self.out = args, out
        self.tally = report.Tally()
        self.shown_errors: set[str] = set()
        self.pattern = re.compile(args.run) if args.run else None
        self.considered = 0

    def wanted(self, name: str) -> bool:
        self.considered += 1
        return self.pattern is None or self.pattern.search(name) is not None

    def write(self, lines: list[str]) -> None:
        if not self.args.json and lines:
            self.out.write(("\n".join(lines) + "\n").encode())

    def error(self, title: str, errors: list[Any]) -> None:
        self.tally.errors += 1
        self.tally.error_records.append(report.error_record(title, errors))
        self.write(report.error_lines(title, errors, self.shown_errors))

    def result(self, passed: bool, lines: list[str], record: dict[str, Any]) -> None:
        if passed:
            self.tally.passed += 1
        else:
            self.tally.failed += 1
        self.tally.records.append(record)
        self.write(lines)


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_test(args: argparse.Namespace, out: BinaryIO) -> int:
    try:
        run = _Run(args, out)
    except re.error as exc:
        return _usage(f"--run {args.run!r} is not a valid regular expression: {exc}")
    paths = [Path(p) for p in args.paths]
    rego = [Path(p) for p in args.rego]
    for p in (*paths, *rego):
        if not p.exists():
            return _usage(f"{p}: no such file or directory")
    if any(p.is_file() and p.suffix == ".rego" for p in paths):
        return _usage("Rego files are not test files: give their directory with --rego DIR")
    if args.timeout <= 0:
        return _usage("--timeout must be a positive number of seconds")
    if args.fail_under is not None:
        if not 0 <= args.fail_under <= 100:
            return _usage("--fail-under is a percentage, from 0 to 100")
        args.coverage = True
    loader = Loader(rego)
    try:
        results = _run_yaml(run, loader, discover(paths))
        _run_rego(run, loader, rego)
        coverage = _coverage(loader, results) if args.coverage else None
    finally:
        loader.close()
    return _finish(run, coverage, args)


def _run_yaml(run: _Run, loader: Loader, files: list[Path]) -> list[tuple[Target, CaseResult]]:
    results: list[tuple[Target, CaseResult]] = []
    for path in files:
        loaded = loader.load(path)
        if isinstance(loaded, list):
            run.error(display_path(path), loaded)
            continue
        suite, target = loaded
        for case in suite.cases:
            if not run.wanted(f"{suite.display}::{case.name}"):
                continue
            r = run_case(target.engine, suite, case)
            results.append((target, r))
            run.result(r.passed, report.case_lines(r, run.args.verbose), report.case_record(r))
    return results


def _groups(loader: Loader, extra_rego: list[Path]) -> list[tuple[str | None, dict[str, Any] | None, tuple[Path, ...]]]:
    """(policy label, policy data, Rego paths) of each distinct set the Rego tests run against."""
    targets = loader.targets()
    if not targets:
        return [(None, None, tuple(p.resolve() for p in extra_rego))] if extra_rego else []
    return [(display_path(Path(t.policy.source)), {"regoguard": {"settings": t.compiled.settings}}, t.rego)
            for t in targets if t.rego]


def _run_rego(run: _Run, loader: Loader, extra_rego: list[Path]) -> None:
    groups = _groups(loader, extra_rego)
    found: list[tuple[str | None, RegoGroup]] = []
    for label, data, rego in groups:
        try:
            modules = load_modules(rego, tests=True)
        except PolicyLoadError as exc:
            run.error(f"Rego tests against {label or '--rego'}", exc.errors)
            continue
        tests = tuple(t for name, src in modules.items() if name.endswith(TEST_SUFFIX) for t in find_tests(name, src))
        if not tests:
            continue
        all_modules = {**library_modules(), **modules}
        found.append((label, RegoGroup(label or "", data_json(data) if data is not None else None, all_modules, tests)))
    counts: dict[tuple[str, str], int] = {}
    for _, g in found:
        for t in g.tests:
            counts[(t.module, t.query)] = counts.get((t.module, t.query), 0) + 1
    for label, g in found:
        named = {t: label if counts[(t.module, t.query)] > 1 else None for t in g.tests}
        chosen = tuple(t for t in g.tests if run.wanted(f"{t.module}::{t.query}"))
        if not chosen:
            continue
        outcomes, errors = run_group(RegoGroup(g.label, g.data, g.modules, chosen), run.args.timeout)
        for o in outcomes:
            run.result(o.passed, report.rego_lines(o, named[o.test], run.args.verbose),
                       report.rego_record(o, named[o.test]))
        if errors:
            run.error(f"Rego tests against {label or '--rego'}", errors)


def _coverage(loader: Loader, results: list[tuple[Target, CaseResult]]) -> cov.Coverage:
    c = cov.Coverage()
    by_policy: dict[Path, tuple[Target, list[CaseResult]]] = {}
    for target in loader.targets():
        by_policy.setdefault(target.key[0], (target, []))
    for target, r in results:
        by_policy[target.key[0]][1].append(r)
    for target, rs in by_policy.values():
        cov.add_policy(c, target.policy, target.compiled, rs)
    return c


def _finish(run: _Run, coverage: cov.Coverage | None, args: argparse.Namespace) -> int:
    t = run.tally
    code = EXIT_OK if t.failed == 0 and t.errors == 0 else EXIT_FAIL
    note = None
    if t.passed + t.failed == 0 and t.errors == 0:
        note = (f"no tests matched --run {args.run!r}" if run.considered else
                f"no tests found in {' '.join(args.paths)} (test files are named *_test.yaml or *.test.yaml; "
                "Rego test_ rules run from a test file's `rego:` directories or --rego DIR)")
        code = EXIT_FAIL
    under = coverage is not None and args.fail_under is not None and coverage.percent < args.fail_under
    if under:
        code = EXIT_FAIL
    if args.json:
        doc: dict[str, Any] = {"tests": t.records, "errors": t.error_records,
                               "summary": {"passed": t.passed, "failed": t.failed, "errors": t.errors}}
        if coverage is not None:
            doc["coverage"] = coverage.to_json()
        if note:
            doc["message"] = note
        run.out.write((json.dumps(doc, indent=2) + "\n").encode())
        return code
    lines = [""] if t.records or t.error_records else []
    if coverage is not None:
        lines += [*cov.render(coverage), ""]
        if under:
            lines.append(f"coverage {coverage.percent:.0f}% is under --fail-under {args.fail_under:g}%")
    if note:
        lines.append(note)
    lines.append(t.summary())
    run.write(lines)
    return code
