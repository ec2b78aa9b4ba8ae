"""Benchmark ``validate: {schema: true}``: the cost of checking a call's arguments against its tool's
inputSchema (regoguard.schema_check, the jsonschema library underneath), and what it adds to a decision.

Usage: python benchmarks/bench_schema.py [--quick] [--calls N]

Measured in one run, medians of single timed calls (after warm-up), microseconds:
  check, valid / invalid   CHECKER.check(schema, arguments) on a typical tool schema (5 properties: types,
                           an enum, bounds, a pattern, a nested object, additionalProperties: false)
  build                    the first check of a schema never seen (the validator is built once per schema)
  decision without / with  Engine.evaluate for a tool whose only rule is a regex condition, and for the
                           same tool with validate: {schema: true} added (fresh arguments: no cache hits)
Target (from the issue): <= 30 us per call for a typical schema.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import regoguard
from regoguard.schema_check import SchemaChecker

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "amount": {"type": "integer", "minimum": 1, "maximum": 50000},
        "currency": {"type": "string", "enum": ["usd", "eur", "gbp"]},
        "customer": {"type": "string", "pattern": "^cus_[A-Za-z0-9]{4,24}$"},
        "metadata": {"type": "object", "properties": {"order": {"type": "string", "maxLength": 64}},
                     "additionalProperties": False},
        "capture": {"type": "boolean"},
    },
    "required": ["amount", "currency", "customer"],
    "additionalProperties": False,
}


def args_for(i: int, valid: bool = True) -> dict[str, Any]:
    return {"amount": (i % 50000) + 1 if valid else "12", "currency": "usd", "customer": f"cus_{i:08d}",
            "metadata": {"order": f"o-{i}"}, "capture": True}


def timed(fn: Any, n: int) -> float:
    samples = []
    for i in range(n):
        t = time.perf_counter_ns()
        fn(i)
        samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1000


def engine(policy_text: str) -> regoguard.Engine:
    path = Path(tempfile.mkdtemp()) / "p.yaml"
    path.write_text(policy_text)
    e = regoguard.Engine(regoguard.compile_policy(regoguard.load_policy(path)), regoguard.EngineLimits(cache_size=0))
    e.wait_ready(30)
    return e


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--calls", type=int, default=20000)
    a = ap.parse_args()
    n = 2000 if a.quick else a.calls
    checker = SchemaChecker()
    checker.check(SCHEMA, args_for(0))
    for i in range(500):
        checker.check(SCHEMA, args_for(i))
    valid = timed(lambda i: checker.check(SCHEMA, args_for(i)), n)
    invalid = timed(lambda i: checker.check(SCHEMA, args_for(i, valid=False)), n)
    build = timed(lambda i: SchemaChecker().check({**SCHEMA, "title": f"t{i}"}, args_for(i)), max(50, n // 100))

    base = ('version: "1"\ndefault: allow\ntools:\n  create_charge:\n    rules:\n      - name: customer id\n'
            '        conditions:\n          - {path: args.customer, op: regex, value: "^cus_"}\n')
    plain, checked = engine(base), engine(base + "      - name: shape\n        validate: {schema: true}\n")
    try:
        def doc(i: int) -> dict[str, Any]:
            return {"tool": {"name": "create_charge", "arguments": args_for(i)}, "schema": SCHEMA}

        for i in range(300):
            plain.evaluate(doc(i))
            checked.evaluate(doc(i))
        rounds = 4
        without: list[float] = []
        with_check: list[float] = []
        for r in range(rounds):  # interleaved rounds: a noisy neighbour hits both alike
            without.append(timed(lambda i, r=r: plain.evaluate(doc(10**6 * (r + 1) + i)), n // rounds))
            with_check.append(timed(lambda i, r=r: checked.evaluate(doc(10**7 * (r + 1) + i)), n // rounds))
    finally:
        plain.close()
        checked.close()
    d0, d1 = statistics.median(without), statistics.median(with_check)
    print(f"schema check (typical tool schema, {n} calls each), median us")
    print(f"  check, valid arguments     {valid:8.1f}")
    print(f"  check, invalid arguments   {invalid:8.1f}")
    print(f"  build (a schema first seen) {build:7.1f}")
    print(f"  decision without the rule  {d0:8.1f}")
    print(f"  decision with the rule     {d1:8.1f}   added {d1 - d0:+.1f} ({d1 / d0:.2f}x)")
    print(f"target: <= 30 us per call for a typical schema: {'met' if valid <= 30 else 'NOT met'} ({valid:.1f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
