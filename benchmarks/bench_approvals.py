"""Benchmark the approval path: what a held call and an approved retry cost in the guard, against an
allowed call, with the approvals in SQLite (the default store) and in memory.

Usage: python benchmarks/bench_approvals.py [--quick] [--calls N]

Measured in one run, medians of single timed Guard.decide calls (after warm-up), microseconds:
  allowed               a call no rule holds (the baseline: engine + its limit, in the same store)
  held, first ask       a call a require_approval rule holds, a new pending approval written
  held, named again     the identical call retried while its approval is pending (one store read)
  approved retry        approve, then the identical call: consume + the decision as approved + limits
Ratios are to ``allowed`` in the same run. The rules read only the amount, so the engine's decisions come
from its cache: what differs between the rows is the approval path itself.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from regoguard.approvals import ApprovalBook, open_approvals
from regoguard.compiler import compile_policy
from regoguard.engine import Engine
from regoguard.guard import Guard
from regoguard.limits import Limiter, open_store
from regoguard.policy import load_policy

POLICY = """\
version: "1"
tools:
  refund:
    rules:
      - name: review
        action: require_approval
        conditions: [{path: args.amount, op: lte, value: 100}]
      - name: budget
        rate_limit: 1000000/minute
"""


def doc(amount: int, ref: int) -> dict[str, object]:
    return {"tool": {"name": "refund", "arguments": {"amount": amount, "ref": f"r{ref}"}},
            "server": {"name": "pay"}, "principal": {"id": "alice", "claims": {}}, "session": {"id": "s1"}}


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def run(store_spec: str, calls: int, workdir: Path) -> dict[str, float]:
    path = workdir / "p.yaml"
    path.write_text(POLICY, encoding="utf-8")
    spec = str(workdir / f"{store_spec}.db") if store_spec == "sqlite" else "memory"
    limits = open_store(spec)  # as a proxy does: the limits and the approvals in one store (WAL for SQLite)
    book = ApprovalBook(open_approvals(spec))
    guard = Guard(Engine(compile_policy(load_policy(path))), Limiter(limits), approvals=book)
    timed: dict[str, list[float]] = {"allowed": [], "held, first ask": [], "held, named again": [],
                                     "approved retry": []}

    def clock(name: str, fn: Callable[[], object]) -> object:
        t0 = time.perf_counter()
        out = fn()
        timed[name].append(time.perf_counter() - t0)
        return out

    try:
        for i in range(-20, calls):  # the first 20 warm up
            clock("allowed", lambda i=i: guard.decide(doc(50, i)))
            held = clock("held, first ask", lambda i=i: guard.decide(doc(500, i)))
            clock("held, named again", lambda i=i: guard.decide(doc(500, i)))
            book.approve(held.approval.id, "bench")  # type: ignore[attr-defined]
            ran = clock("approved retry", lambda i=i: guard.decide(doc(500, i)))
            assert ran.allow, ran  # type: ignore[attr-defined]
            guard.finish(ran)  # type: ignore[arg-type]
    finally:
        guard.engine.close()
        book.store.close()
        limits.close()
    return {k: median_us(v[20:]) for k, v in timed.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run: 200 calls of each kind")
    ap.add_argument("--calls", type=int, default=None, help="calls of each kind per store (default 1000)")
    args = ap.parse_args()
    calls = args.calls or (200 if args.quick else 1000)
    with tempfile.TemporaryDirectory() as d:
        for store in ("memory", "sqlite"):
            got = run(store, calls, Path(d))
            base = got["allowed"]
            print(f"approvals in {store} ({calls} calls each, median us, ratio to allowed):")
            for name, us in got.items():
                print(f"  {name:20s} {us:9.1f}  {us / base:5.2f}x")


if __name__ == "__main__":
    main()
