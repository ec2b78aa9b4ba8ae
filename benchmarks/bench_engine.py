"""Benchmark the embedded decision engine: per-call latency, throughput, load time and memory.

Usage: python benchmarks/bench_engine.py [--quick] [--sizes 10,100,1000,10000] [--baseline DIR]

For generated policies of 10, 100, 1,000 and 10,000 tools (each in a fresh child process, so that its
load time and RSS are its own), it measures:

- load: YAML load + compile, then ``Engine(compiled)`` (ready to decide), then the wait until every
  tool's bundle is built by the background thread (``ahead``), and the RSS the policy added;
- latency of ``Engine.evaluate``, median and p99 over ``--calls`` calls, uncached (``cache_size=0``:
  every call is a regopy query) and cached (every timed call a hit), called from a large-stack thread as
  ``regoguard run`` and ``serve`` call it (inline where the call's regexes are bounded), and uncached
  again from an ordinary thread (every call on the worker pool), for calls that are allowed (all of
  the tool's rules pass), denied (the first rule fails), to an unlisted name (only the ``"*"`` rule), and
  to a hidden name; calls rotate over 8 tools identical in every size, so the size ratios compare the
  same calls. The first call to a tool whose bundle is not built yet (``cold``) is timed once;
- throughput: 32 threads calling one uncached engine at once, with 1 worker and with one per CPU.

``--baseline DIR`` runs the same children against another checkout's ``src/`` (say /work/baseline) for
before/after numbers in one run (its engine has no background build; sizes above 1,000 are skipped
there, at ~50 ms a call). The harness uses only ``Engine``, ``EngineLimits(cache_size=...)``,
``evaluate`` and ``engine_threads.run_with_large_stack``, which both sides have. No network; everything
is generated in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIZES = (10, 100, 1000, 10000)
TARGETS = {"uncached median": 80.0, "deny/allow": 1.2, "p99/median": 3.0, "load 1000 s": 1.0, "rss 1000 MB": 150.0}


def _child_cmd(src: Path, n: int, calls: int, quick: bool) -> list[str]:
    cmd = [sys.executable, str(HERE / "engine_child.py"), "--src", str(src), "--tools", str(n),
           "--calls", str(calls)]
    return cmd + (["--quick"] if quick else [])


def run_child(src: Path, n: int, calls: int, quick: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run(_child_cmd(src, n, calls, quick), capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed ({src}, {n} tools):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _us(x: float) -> str:
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.1f} µs"


KINDS = ("allow", "deny", "unlisted", "hidden")


def report(label: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n== {label}")
    print(f"{'tools':>6} {'yaml':>8} {'compile':>9} {'engine()':>9} {'ahead':>9} {'RSS MB':>7} {'cold':>9} | "
          + " ".join(f"{k + ' med/p99':>20}" for k in KINDS) + " | cached allow med/p99")
    for r in rows:
        lat = r["uncached"]
        cells = " ".join(f"{_us(lat[k]['median']) + ' / ' + _us(lat[k]['p99']):>20}" for k in KINDS)
        ahead = f"{r['ahead_s'] * 1000:.0f} ms" if r.get("ahead_s") is not None else "-"
        cold = _us(r["cold_us"]) if r.get("cold_us") is not None else "-"
        c = r["cached"]["allow"]
        yaml_ms = f"{r['yaml_s'] * 1000:.0f} ms" if "yaml_s" in r else "-"
        print(f"{r['tools']:>6} {yaml_ms:>8} {r['compile_s'] * 1000:>6.0f} ms {r['engine_s'] * 1000:>6.0f} ms "
              f"{ahead:>9} "
              f"{r['rss_mb']:>7.1f} {cold:>9} | {cells} | {_us(c['median'])} / {_us(c['p99'])}")
    print("the same calls from an ordinary thread (every call on the worker pool: a thread hop each), "
          "uncached median / p99:")
    for r in rows:
        print(f"{r['tools']:>6} " + " ".join(
            f"{k} {_us(r['pool'][k]['median'])} / {_us(r['pool'][k]['p99'])};" for k in KINDS))
    print("ratios: " + "; ".join(
        f"{r['tools']} tools: deny/allow {r['uncached']['deny']['median'] / r['uncached']['allow']['median']:.2f}x, "
        f"unlisted/allow {r['uncached']['unlisted']['median'] / r['uncached']['allow']['median']:.2f}x, "
        f"p99/median (allow) {r['uncached']['allow']['p99'] / r['uncached']['allow']['median']:.2f}x"
        for r in rows))
    lo, hi = rows[0], rows[-1]
    print(f"size: {hi['tools']} vs {lo['tools']} tools, uncached allow median "
          f"{hi['uncached']['allow']['median'] / lo['uncached']['allow']['median']:.2f}x, deny "
          f"{hi['uncached']['deny']['median'] / lo['uncached']['deny']['median']:.2f}x")
    for r in rows:
        if "throughput" in r:
            t = r["throughput"]
            print(f"throughput at {r['tools']} tools, 32 threads in flight, uncached: "
                  + ", ".join(f"{w} worker(s) {v:.0f} calls/s" for w, v in t.items())
                  + (f" ({t[max(t, key=int)] / t['1']:.2f}x)" if "1" in t and len(t) > 1 else ""))


def check_targets(rows: list[dict[str, Any]]) -> None:
    print("\nTargets (this run):")

    def line(what: str, got: float, limit: float, unit: str) -> None:
        print(f"  {what:<44} <= {limit:g} {unit:<3} measured {got:.2f} {unit:<3} {'ok' if got <= limit else 'MISSED'}")

    for r in rows:
        worst = max(r["uncached"][k]["median"] for k in KINDS)
        line(f"uncached median, worst kind, {r['tools']} tools", worst, TARGETS["uncached median"], "µs")
        worst_pool = max(r["pool"][k]["median"] for k in KINDS)
        line("  the same on the worker pool (thread hop)", worst_pool, TARGETS["uncached median"], "µs")
        line(f"denial / allow, {r['tools']} tools", r["uncached"]["deny"]["median"] / r["uncached"]["allow"]["median"],
             TARGETS["deny/allow"], "x")
        worst_tail = max(r["uncached"][k]["p99"] / r["uncached"][k]["median"] for k in KINDS)
        line(f"p99 / median, worst kind, {r['tools']} tools", worst_tail, TARGETS["p99/median"], "x")
    for r in rows:
        if r["tools"] == 1000:
            load = r.get("yaml_s", 0) + r["compile_s"] + r["engine_s"]
            line("load (YAML + compile + engine ready), 1000 tools", load, TARGETS["load 1000 s"], "s")
            if r.get("ahead_s") is not None:
                line("load + every bundle built ahead, 1000 tools", load + r["ahead_s"],
                     TARGETS["load 1000 s"], "s")
            line("RSS added, 1000 tools (all bundles built)", r["rss_mb"], TARGETS["rss 1000 MB"], "MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run: 300 calls per series")
    parser.add_argument("--calls", type=int, help="timed calls per series (default 2000; 300 with --quick)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="policy sizes, comma-separated")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure the same way (before/after)")
    args = parser.parse_args(argv)
    calls = args.calls or (300 if args.quick else 2000)
    sizes = [int(s) for s in args.sizes.split(",")]
    print("regoguard engine benchmark" + (" (quick)" if args.quick else ""))
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs; "
          f"load average at start {os.getloadavg()[0]:.2f} (other processes skew p99s)")
    t0 = time.perf_counter()
    rows = []
    for n in sizes:
        print(f"  {n} tools ...", flush=True)
        rows.append(run_child(HERE.parent / "src", n, calls, args.quick))
    report("this checkout", rows)
    if args.baseline is not None:
        base = []
        for n in (s for s in sizes if s <= 1000):
            print(f"  baseline {n} tools ...", flush=True)
            base.append(run_child(args.baseline / "src", n, max(100, calls // 10), args.quick))
        report(f"baseline {args.baseline}", base)
        print("\nBefore -> after, uncached median: " + "; ".join(
            f"{b['tools']} tools " + ", ".join(
                f"{k} {_us(b['uncached'][k]['median'])} -> {_us(a['uncached'][k]['median'])} "
                f"(after/before {a['uncached'][k]['median'] / b['uncached'][k]['median']:.2f}x)"
                for k in ("allow", "deny"))
            for b, a in zip(base, rows, strict=False)))
    check_targets(rows)
    print(f"\nTotal benchmark time: {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
