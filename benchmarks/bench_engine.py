"""Benchmark the embedded decision engine: bundle build time and per-call decision latency.

Usage: python benchmarks/bench_engine.py [--quick] [--calls N] [--builds N] [--seed N]

What it measures, for generated policies of 10, 100 and 1,000 tools:

- build: ``Engine(compiled)`` wall time (rego library read, worker thread start, regopy ``build``),
  median of 5 constructions. YAML load + compile is timed separately (``compile`` column).
- uncached: decision latency with the decision cache disabled, ``EngineLimits(cache_size=0)``. That
  setting does disable it: ``Engine.evaluate`` inserts each decision and then evicts down to
  ``cache_size`` entries, so a cache of size 0 is always empty and every call is a regopy query. The run
  checks this: every uncached call must come back with ``Decision.cached == False`` (and every timed
  cached call with ``True``), or the benchmark fails.
- cached: the same calls with the default cache, after one warm-up pass (every timed call is a hit).

Each latency is the median and p99 over ``--calls`` calls (default 2,000) of ``Engine.evaluate``, timed
with ``perf_counter_ns`` around the call, for both paths the engine has:

- worker: the default; the caller's thread hands the query to the engine's worker thread (512 MB stack).
- inline: the caller is itself inside ``run_with_large_stack`` (as the CLI is), so the query runs on the
  calling thread's own interpreter with no thread hop.

The calls rotate over the first 8 tools, which are identical in every policy size (so the size ratios
compare the same calls), with arguments that pass every rule, so each uncached call evaluates all of its
tool's conditions and computes its charges (the allow path, the most work). A second, smaller table
shows how the uncached cost grows with the number of rules on the called tool, and what a call to a
tool no key names costs. ``size_hint`` is passed, as a proxy that knows the message length would, so
the input is not re-encoded to measure its size. No network; everything is generated in memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

try:
    from regoguard.compiler import CompiledPolicy, compile_policy
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from regoguard.compiler import CompiledPolicy, compile_policy
from regoguard.engine import Engine, EngineLimits, run_with_large_stack
from regoguard.policy.loader import load_policy_text

SIZES = (10, 100, 1000)
TARGET_TOOLS = 8
WARMUP_CALLS = 200
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1", "ap-northeast-1"]

# The targets the engine is held to (see the project README / docs).
TARGET_UNCACHED_MS = {100: 0.4, 1000: 1.0}
TARGET_CACHED_US = 20.0
TARGET_BUILD_S_1000 = 1.0


# --- the generated policy ---------------------------------------------------------------------------


@dataclass
class ToolSpec:
    name: str
    rules: list[dict[str, Any]]
    args: dict[str, Any]  # arguments that pass every rule of the tool


def _yaml_value(v: Any) -> str:
    return json.dumps(v)  # JSON is YAML: strings, numbers and lists come out valid


def make_tools(n: int, seed: int) -> list[ToolSpec]:
    """``n`` tools, each with 1 to 3 rules drawn from: an ``lte`` cap, an ``in`` list, a path regex (with a
    ``not_regex`` against ``..``), a rate limit. Tool ``i`` is the same in every policy of the same seed
    (its own generator), so the 10-, 100- and 1,000-tool policies share their first 10 tools exactly."""
    kinds = ["cap", "in", "path", "rate"]
    tools: list[ToolSpec] = []
    for i in range(n):
        rnd = random.Random(f"{seed}:{i}")
        name = f"tool_{i:04d}"
        chosen = rnd.sample(kinds, rnd.randint(1, 3))
        rules: list[dict[str, Any]] = []
        args: dict[str, Any] = {"note": f"call of {name}"}
        for kind in chosen:
            if kind == "cap":
                cap = rnd.choice([100, 1_000, 10_000, 50_000])
                rules.append({"name": "amount cap",
                              "conditions": [{"path": "args.amount", "op": "lte", "value": cap}],
                              "on_deny": f"amount must be at most {cap}"})
                args["amount"] = rnd.randint(1, cap)
            elif kind == "in":
                allowed = rnd.sample(REGIONS, rnd.randint(2, 4))
                rules.append({"name": "region",
                              "conditions": [{"path": "args.region", "op": "in", "value": allowed}]})
                args["region"] = rnd.choice(allowed)
            elif kind == "path":
                root = rnd.choice(["workspace", "data", "srv/app"])
                rules.append({"name": "path",
                              "conditions": [{"path": "args.path", "op": "regex", "value": f"^/{root}/"},
                                             {"path": "args.path", "op": "not_regex", "value": r"\.\."}]})
                args["path"] = f"/{root}/project/src/module_{i}.py"
            else:
                rate = rnd.choice(["30/minute", "500/hour", "5/second"])
                rules.append({"name": "rate", "rate_limit": rate})
        tools.append(ToolSpec(name, rules, args))
    return tools


def policy_yaml(tools: list[ToolSpec]) -> str:
    lines = ['version: "1"', f"description: generated benchmark policy, {len(tools)} tools", "tools:"]
    for t in tools:
        lines.append(f"  {t.name}:")
        lines.append("    rules:")
        for r in t.rules:
            lines.append(f"      - name: {_yaml_value(r['name'])}")
            if "rate_limit" in r:
                lines.append(f"        rate_limit: {_yaml_value(r['rate_limit'])}")
            for j, c in enumerate(r.get("conditions", [])):
                if j == 0:
                    lines.append("        conditions:")
                value = _yaml_value(c["value"])
                lines.append(f"          - {{path: {c['path']}, op: {c['op']}, value: {value}}}")
            if "on_deny" in r:
                lines.append(f"        on_deny: {_yaml_value(r['on_deny'])}")
    lines += ['  "*":', "    rules:", "      - name: global rate", '        rate_limit: "6000/minute"']
    return "\n".join(lines) + "\n"


def call_doc(t: ToolSpec) -> dict[str, Any]:
    return {
        "tool": {"name": t.name, "arguments": dict(t.args)},
        "server": {"name": "bench"},
        "session": {"id": "bench-session", "client": {"name": "bench", "version": "0"}},
        "principal": {"id": "bench", "claims": {}},
    }


# --- measurement ------------------------------------------------------------------------------------


@dataclass
class Series:
    median_us: float
    p99_us: float
    n: int


def _percentile(sorted_ns: list[int], q: float) -> float:
    idx = max(0, math.ceil(q * len(sorted_ns)) - 1)
    return sorted_ns[idx] / 1000


def time_calls(engine: Engine, docs: list[tuple[dict[str, Any], int]], n: int, expect_cached: bool) -> Series:
    """Warm up, then time ``n`` calls rotating over ``docs``; check every call is allowed and is (or is
    not) a cache hit as expected."""
    for k in range(WARMUP_CALLS):
        doc, size = docs[k % len(docs)]
        d = engine.evaluate(doc, size)
        if not d.allow:
            raise SystemExit(f"benchmark call denied: {doc['tool']['name']}: {d.message}")
    gc.collect()
    samples: list[int] = []
    wrong = 0
    evaluate = engine.evaluate
    clock = time.perf_counter_ns
    for k in range(n):
        doc, size = docs[k % len(docs)]
        t0 = clock()
        d = evaluate(doc, size)
        samples.append(clock() - t0)
        if d.cached is not expect_cached or not d.allow:
            wrong += 1
    if wrong:
        raise SystemExit(f"{wrong} of {n} calls were {'not ' if expect_cached else ''}cache hits or were "
                         "denied: the measurement would be wrong")
    samples.sort()
    return Series(statistics.median(samples) / 1000, _percentile(samples, 0.99), n)


def median_build(compiled: CompiledPolicy, builds: int) -> float:
    times = []
    for _ in range(builds):
        t0 = time.perf_counter()
        engine = Engine(compiled)
        times.append(time.perf_counter() - t0)
        engine.close()
    return statistics.median(times)


@dataclass
class Row:
    tools: int
    rules: int
    compile_s: float
    build_s: float
    inline_build_s: float
    lat: dict[tuple[str, str], Series]  # (path, "uncached" | "cached") -> series
    compiled: CompiledPolicy
    specs: list[ToolSpec]


RULE_COLUMNS = ("unlisted", "1 rule", "2 rules", "3 rules")


def by_rule_count(row: Row, calls: int) -> dict[str, Series]:
    """Uncached latency (worker path) of a call to a tool no key names (default: allow, so only the "*"
    rule applies) and to the first tool with 1, 2 and 3 rules of its own (plus the "*" rule)."""
    picks = {"unlisted": call_doc(ToolSpec("no_such_tool", [], {"note": "unlisted"}))}
    for k in (1, 2, 3):
        t = next((t for t in row.specs if len(t.rules) == k), None)
        if t is not None:
            picks[RULE_COLUMNS[k]] = call_doc(t)
    engine = Engine(row.compiled, EngineLimits(cache_size=0))
    try:
        return {label: time_calls(engine, [(doc, len(json.dumps(doc)))], calls, expect_cached=False)
                for label, doc in picks.items()}
    finally:
        engine.close()


def bench_size(n: int, calls: int, builds: int, seed: int) -> Row:
    tools = make_tools(n, seed)
    text = policy_yaml(tools)
    t0 = time.perf_counter()
    compiled = compile_policy(load_policy_text(text, f"<bench-{n}>"))
    compile_s = time.perf_counter() - t0
    build_s = median_build(compiled, builds)

    targets = tools[:TARGET_TOOLS]
    docs = [(d, len(json.dumps(d))) for d in map(call_doc, targets)]

    uncached = Engine(compiled, EngineLimits(cache_size=0))
    cached = Engine(compiled)
    lat: dict[tuple[str, str], Series] = {}
    try:
        lat["worker", "uncached"] = time_calls(uncached, docs, calls, expect_cached=False)
        lat["worker", "cached"] = time_calls(cached, docs, calls, expect_cached=True)

        def inline() -> float:
            # The first call on a large-stack thread builds that thread's interpreter: time it.
            t0 = time.perf_counter()
            uncached.evaluate(*docs[0])
            first = time.perf_counter() - t0
            cached.evaluate(*docs[0])
            lat["inline", "uncached"] = time_calls(uncached, docs, calls, expect_cached=False)
            lat["inline", "cached"] = time_calls(cached, docs, calls, expect_cached=True)
            return first

        inline_build_s = run_with_large_stack(inline)
    finally:
        uncached.close()
        cached.close()
    rules = sum(len(t.rules) for t in tools) + 1
    return Row(n, rules, compile_s, build_s, inline_build_s, lat, compiled, tools)


# --- report -----------------------------------------------------------------------------------------


def _fmt_us(us: float) -> str:
    return f"{us / 1000:.3f} ms" if us >= 1000 else f"{us:.1f} µs"


def report(rows: list[Row], calls: int, builds: int, per_rule: dict[int, dict[str, Series]],
           elapsed: float) -> None:
    mix = rows[0].specs[:TARGET_TOOLS]
    print()
    print(f"Decision latency per call: median / p99 over {calls} calls; build: median of {builds}.")
    counts = [len(t.rules) for t in mix]
    print(f"Calls rotate over {len(mix)} tools with {', '.join(map(str, counts))} rules of their "
          f"own (mean {statistics.mean(counts):.2f}), plus the \"*\" rule; all allowed.")
    header = (f"{'tools':>5} {'rules':>5} {'compile':>9} {'build':>9} {'path':>6} "
              f"{'uncached med':>13} {'uncached p99':>13} {'cached med':>11} {'cached p99':>11} "
              f"{'unc/cached':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        for i, path in enumerate(("worker", "inline")):
            u, c = r.lat[path, "uncached"], r.lat[path, "cached"]
            build_ms = r.build_s * 1000 if path == "worker" else r.inline_build_s * 1000
            build = f"{build_ms:.1f} ms" + ("" if path == "worker" else "*")
            lead = f"{r.tools:>5} {r.rules:>5} {r.compile_s * 1000:>6.1f} ms" if i == 0 else " " * 21
            print(f"{lead} {build:>9} {path:>6} {_fmt_us(u.median_us):>13} {_fmt_us(u.p99_us):>13} "
                  f"{_fmt_us(c.median_us):>11} {_fmt_us(c.p99_us):>11} {u.median_us / c.median_us:>9.1f}x")
    print("* inline build: the first call on a large-stack thread, which builds that thread's interpreter "
          "(single sample).")

    by = {r.tools: r for r in rows}
    lo, hi = min(by), max(by)
    print()
    print(f"Ratios, {hi}-tool vs {lo}-tool (same run):")
    for path in ("worker", "inline"):
        for kind in ("uncached", "cached"):
            a, b = by[hi].lat[path, kind], by[lo].lat[path, kind]
            print(f"  {path:>6} {kind:>8}: median {a.median_us / b.median_us:.2f}x, "
                  f"p99 {a.p99_us / b.p99_us:.2f}x")
    print(f"  build (worker): {by[hi].build_s / by[lo].build_s:.2f}x; "
          f"compile: {by[hi].compile_s / by[lo].compile_s:.2f}x")
    hop = [by[n].lat["worker", "uncached"].median_us / by[n].lat["inline", "uncached"].median_us
           for n in sorted(by)]
    print("Worker vs inline (same run), uncached median: "
          + ", ".join(f"{n} tools {x:.2f}x" for n, x in zip(sorted(by), hop, strict=True)))

    if per_rule:
        n_calls = next(iter(next(iter(per_rule.values())).values())).n
        print()
        print(f"Uncached median (p99) by the called tool's own rules, worker path, {n_calls} calls each;")
        print('every call also runs the "*" rule. "unlisted": a name no key matches (default: allow).')
        print(f"{'tools':>5} " + " ".join(f"{c:>20}" for c in RULE_COLUMNS))
        for n, cols in per_rule.items():
            cells = [f"{_fmt_us(cols[c].median_us)} ({_fmt_us(cols[c].p99_us)})" if c in cols else "-"
                     for c in RULE_COLUMNS]
            print(f"{n:>5} " + " ".join(f"{c:>20}" for c in cells))

    print()
    print("Targets (measured in this run; worker path, the default):")

    def line(what: str, got: float, limit: float, unit: str) -> None:
        mark = "ok" if got <= limit else "MISSED"
        print(f"  {what:<38} target <= {limit:g} {unit:<3} measured {got:.3f} {unit:<3} {mark}")

    for n, ms in TARGET_UNCACHED_MS.items():
        if n in by:
            line(f"uncached median at {n} tools", by[n].lat["worker", "uncached"].median_us / 1000, ms, "ms")
    for n in sorted(by):
        line(f"cached median at {n} tools", by[n].lat["worker", "cached"].median_us, TARGET_CACHED_US, "µs")
    if 1000 in by:
        line("build at 1000 tools", by[1000].build_s, TARGET_BUILD_S_1000, "s")
    print(f"\nTotal benchmark time: {elapsed:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run: 300 calls, 3 builds")
    parser.add_argument("--calls", type=int, help="timed calls per series (default 2000; 300 with --quick)")
    parser.add_argument("--builds", type=int,
                        help="engine constructions per size (default 5; 3 with --quick)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated policies")
    args = parser.parse_args(argv)
    calls = args.calls or (300 if args.quick else 2000)
    builds = args.builds or (3 if args.quick else 5)

    print("regoguard engine benchmark" + (" (quick)" if args.quick else ""))
    print(f"python {platform.python_version()}, regopy {metadata.version('regopy')}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load:
        print(f"load average at start: {load[0]:.2f} (other processes on this machine skew the p99s)")
    t0 = time.perf_counter()
    rows = []
    for n in SIZES:
        print(f"  {n} tools ...", flush=True)
        rows.append(bench_size(n, calls, builds, args.seed))
    per_rule = {r.tools: by_rule_count(r, max(200, calls // 4)) for r in rows}
    report(rows, calls, builds, per_rule, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
