"""``regoguard compile POLICY... [-o DIR] [--check]``: write each policy's Rego, or check it is current."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from regoguard.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, print_errors
from regoguard.compiler import compile_policy
from regoguard.errors import PolicyLoadError
from regoguard.policy import Policy, load_policy


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compile", help="write the Rego module of each policy")
    p.add_argument("policy", nargs="+", help="policy files to compile")
    p.add_argument("-o", "--output", metavar="DIR", help="directory to write <policy>.rego into (default stdout)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if the Rego in DIR is stale (for CI and pre-commit)")
    p.set_defaults(func=cmd_compile)


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
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. -o names a file: -o takes the directory the .rego files go into
        print(f"error: cannot use {outdir} as the output directory: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
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
