"""Benchmark the decision log: what writing one call's event costs (``DecisionLog.record``).

Usage: python benchmarks/bench_decision_log.py [--quick] [--events N] [--rounds R] [--before DIR]

Each case writes ``--events`` events (default 3,000, after 300 warm-up) through a ``DecisionLog`` with a
``FileSink`` in a temporary directory, timed with ``perf_counter_ns`` around ``record``; median and p99:

- ``allowed``: a three-argument call, the default masking (what `regoguard run --decision-log PATH` does);
- ``nested``: 40 arguments nested two deep, one of them a sensitive key that is masked;
- ``erase``: the three-argument call under a policy's ``audit: {erase: [/note]}``;
- ``no sink``: the event built and masked, nothing written (``--decision-log off`` skips even that).

``--before DIR`` measures another checkout's ``src/`` (say a ``git worktree`` of the last landing) the same
way; the two alternate over ``--rounds`` child processes each (default 3), so both see the same machine, and
the report gives after/before ratios of the medians. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = ("allowed", "nested", "erase", "no sink")


def measure(events: int) -> dict[str, list[int]]:
    """Runs in a child: the timings of each case, in ns."""
    from regoguard.audit.decision_log import DecisionLog, FileSink
    from regoguard.audit.masking import MaskingRules
    from regoguard.decision import Decision

    small = {"amount": 1234, "region": "eu-west-1", "note": "benchmark call"}
    nested = {f"group{g}": {f"field{f}": f"value {g}.{f}" for f in range(8)} for g in range(5)}
    nested["group0"]["api_token"] = "s3cr3t"
    allow = Decision(True, "allow", (), (), False, 52_000)
    out: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            rules = MaskingRules(erase=("/note",)) if case == "erase" else MaskingRules()
            sink = None if case == "no sink" else FileSink(Path(tmp) / f"{case.replace(' ', '_')}.jsonl")
            log = DecisionLog(sink, rules, "revision", {"server": "bench"})
            doc = {"tool": {"name": "create_charge", "arguments": nested if case == "nested" else small},
                   "session": {"id": "0b6c2f4e"}, "principal": {"id": "alice", "claims": {}},
                   "server": {"name": "bench"}}
            times = []
            for i in range(300 + events):
                t0 = time.perf_counter_ns()
                log.record("5f0c3c1e-6f3a-4c41-9a53-9a8d1b1f2a77", doc, allow, "allowed")
                if i >= 300:
                    times.append(time.perf_counter_ns() - t0)
            out[case] = times
    return out


def run_child(src: Path, events: int) -> dict[str, list[int]]:
    env = dict(os.environ, PYTHONPATH=str(src))
    done = subprocess.run([sys.executable, __file__, "--child", str(events)], env=env, check=True,
                          capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def summary(times: list[int]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) / 1e3, ordered[int(len(ordered) * 0.99)] / 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 events a round, 2 rounds")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another checkout (its root or its src/) to compare with")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child)))
        return 0
    events, rounds = (1000, 2) if args.quick else (args.events, args.rounds)
    sides: dict[str, Path] = {"after": HERE.parent / "src"}
    if args.before is not None:
        before = args.before / "src" if (args.before / "src").is_dir() else args.before
        sides = {"before": before, **sides}
    merged: dict[str, dict[str, list[int]]] = {side: {case: [] for case in CASES} for side in sides}
    for _ in range(rounds):
        for side, src in sides.items():
            for case, times in run_child(src, events).items():
                merged[side][case].extend(times)
    print(f"decision log: {events} events x {rounds} rounds per case (median / p99, µs per event)")
    for case in CASES:
        cells = []
        for side in sides:
            median, p99 = summary(merged[side][case])
            cells.append(f"{side} {median:6.1f} / {p99:6.1f}")
        ratio = ""
        if "before" in sides:
            ratio = f"  after/before {summary(merged['after'][case])[0] / summary(merged['before'][case])[0]:.2f}x"
        print(f"  {case:8s}  " + "   ".join(cells) + ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
