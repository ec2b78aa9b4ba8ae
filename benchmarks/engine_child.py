"""One policy size of benchmarks/bench_engine.py, in a process of its own: prints one JSON line.

Run by bench_engine.py (``PYTHONPATH`` chooses which checkout's ``src/`` is measured); not a benchmark
by itself, so its name does not start with ``bench_`` (benchmarks/run.sh runs those).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import statistics
import sys
import threading
import time
from typing import Any

from regoguard.compiler import compile_policy
from regoguard.engine import Engine, EngineLimits
from regoguard.engine_threads import run_with_large_stack
from regoguard.policy.loader import load_policy_text

TARGETS = 8
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1", "ap-northeast-1"]
HIDDEN = ["drop_everything", "wipe_disk"]


Tool = tuple[str, list[dict[str, Any]], dict[str, Any], dict[str, Any]]


def make_tools(n: int, bounded: bool = False) -> list[Tool]:
    """(name, rules, passing args, args failing the first rule). The first 8 tools, the same in every
    size, each have three argument conditions (an ``lte``, an ``in``, a regex with a ``not_regex``) and
    a rate limit; the rest draw 1 to 3 of those kinds. ``bounded``: ``starts_with`` for the regexes (a
    policy without regexes may be decided inline, on the caller's large-stack thread)."""
    out = []
    for i in range(n):
        rnd = random.Random(f"1:{i}")
        kinds = ["cap", "in", "path", "rate"] if i < TARGETS else rnd.sample(["cap", "in", "path", "rate"],
                                                                             rnd.randint(1, 3))
        rules: list[dict[str, Any]] = []
        args: dict[str, Any] = {"note": f"call {i}"}
        bad: dict[str, Any] = {}
        for kind in kinds:
            if kind == "cap":
                cap = rnd.choice([100, 1_000, 10_000, 50_000])
                rules.append({"name": "amount cap", "conditions": [{"path": "args.amount", "op": "lte", "value": cap}],
                              "on_deny": f"amount must be at most {cap}"})
                args["amount"] = rnd.randint(1, cap)
                bad = bad or {"amount": cap + 1}
            elif kind == "in":
                allowed = rnd.sample(REGIONS, rnd.randint(2, 4))
                rules.append({"name": "region", "conditions": [{"path": "args.region", "op": "in", "value": allowed}]})
                args["region"] = rnd.choice(allowed)
                bad = bad or {"region": "mars-1"}
            elif kind == "path":
                root = rnd.choice(["workspace", "data", "srv/app"])
                conds = ([{"path": "args.path", "op": "starts_with", "value": f"/{root}/"}] if bounded else
                         [{"path": "args.path", "op": "regex", "value": f"^/{root}/"},
                          {"path": "args.path", "op": "not_regex", "value": r"\.\."}])
                rules.append({"name": "path", "conditions": conds})
                args["path"] = f"/{root}/project/src/module_{i}.py"
                bad = bad or {"path": "/etc/passwd"}
            else:
                rules.append({"name": "rate", "rate_limit": rnd.choice(["30/minute", "500/hour", "5/second"])})
        out.append((f"tool_{i:05d}", rules, args, {**args, **bad}))
    return out


def policy_yaml(tools: list[Tool]) -> str:
    lines = ['version: "1"', f"description: generated benchmark policy, {len(tools)} tools",
             f"hide: {json.dumps(HIDDEN)}", "tools:"]
    for name, rules, _, _ in tools:
        lines += [f"  {name}:", "    rules:"]
        for r in rules:
            lines.append(f"      - name: {json.dumps(r['name'])}")
            if "rate_limit" in r:
                lines.append(f"        rate_limit: {json.dumps(r['rate_limit'])}")
            if "conditions" in r:
                lines.append("        conditions:")
                lines += [f"          - {{path: {c['path']}, op: {c['op']}, value: {json.dumps(c['value'])}}}"
                          for c in r["conditions"]]
            if "on_deny" in r:
                lines.append(f"        on_deny: {json.dumps(r['on_deny'])}")
    # one glob key per ten tools: a name no exact key matches is tried against every glob (once per name)
    for g in range(max(1, len(tools) // 10)):
        lines += [f'  "svc{g:04d}_*":', "    rules:", "      - name: svc rate", '        rate_limit: "600/minute"']
    lines += ['  "*":', "    rules:", "      - name: global rate", '        rate_limit: "6000/minute"']
    return "\n".join(lines) + "\n"


def doc(name: str, args: dict[str, Any]) -> tuple[dict[str, Any], int]:
    d = {"tool": {"name": name, "arguments": dict(args)}, "server": {"name": "bench"},
         "session": {"id": "bench-session", "client": {"name": "bench", "version": "0"}},
         "principal": {"id": "bench", "claims": {}}}
    return d, len(json.dumps(d))


def call_kinds(tools: list[Tool]) -> dict[str, tuple[list[tuple[dict[str, Any], int]], bool]]:
    """The calls each kind of decision is timed on, and whether they must be allowed."""
    targets = tools[:TARGETS]
    return {
        "allow": ([doc(n, ok) for n, _, ok, _ in targets], True),
        "deny": ([doc(n, bad) for n, _, _, bad in targets], False),
        "unlisted": ([doc(f"unlisted_{i}", {"note": "x"}) for i in range(TARGETS)], True),
        "hidden": ([doc(h, {}) for h in HIDDEN], False),
    }


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def series(engine: Any, docs: list[tuple[dict[str, Any], int]], n: int, allow: bool, cached: bool) -> dict[str, float]:
    for d, size in docs:  # warm up: every tool once (and, cached, fill the cache)
        engine.evaluate(d, size)
    gc.collect()
    samples = []
    clock = time.perf_counter_ns
    for k in range(n):
        d, size = docs[k % len(docs)]
        t0 = clock()
        out = engine.evaluate(d, size)
        samples.append(clock() - t0)
        if out.allow is not allow or out.cached is not cached:
            raise SystemExit(f"unexpected decision for {d['tool']['name']}: {out}")
    samples.sort()
    return {"median": statistics.median(samples) / 1000, "p99": samples[max(0, math.ceil(0.99 * n) - 1)] / 1000}


def throughput(compiled: Any, docs: list[tuple[dict[str, Any], int]], workers: int, seconds: float) -> float:
    try:
        engine = Engine(compiled, EngineLimits(cache_size=0, workers=workers))  # type: ignore[call-arg]
    except TypeError:
        return float("nan")  # an engine without a pool
    for d, size in docs:
        engine.evaluate(d, size)
    stop = time.perf_counter() + seconds
    counts = [0] * 32

    def run(i: int) -> None:
        k = 0
        while time.perf_counter() < stop:
            d, size = docs[(i + k) % len(docs)]
            engine.evaluate(d, size)
            k += 1
        counts[i] = k

    threads = [threading.Thread(target=run, args=(i,)) for i in range(32)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    engine.close()
    return sum(counts) / elapsed


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--src")
    p.add_argument("--tools", type=int, required=True)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    tools = make_tools(a.tools)
    text = policy_yaml(tools)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    policy = load_policy_text(text, f"<bench-{a.tools}>")
    yaml_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = compile_policy(policy)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = Engine(compiled, EngineLimits(cache_size=0))
    engine_s = time.perf_counter() - t0
    out: dict[str, Any] = {"tools": a.tools, "yaml_s": yaml_s, "compile_s": compile_s, "engine_s": engine_s}
    built = getattr(engine, "bundles_built", None)
    if built is not None:
        # a cold call: the last tool's bundle, which the background build reaches last
        name, _, args, _ = tools[-1]
        t0 = time.perf_counter_ns()
        engine.evaluate(*doc(name, args))
        out["cold_us"] = (time.perf_counter_ns() - t0) / 1000 if engine.cold_builds else None
        t0 = time.perf_counter()
        while engine.bundles_built < min(len(compiled.units), engine.limits.max_bundles):
            time.sleep(0.005)
        out["ahead_s"] = time.perf_counter() - t0
    out["rss_mb"] = rss_mb() - rss0
    kinds = call_kinds(tools)
    # as `regoguard run` and `serve` call it: from their large-stack thread (inline where the engine may)
    out["uncached"] = run_with_large_stack(
        lambda: {k: series(engine, docs, a.calls, allow, False) for k, (docs, allow) in kinds.items()})
    # from an ordinary thread (a library user's): every call on the worker pool
    out["pool"] = {k: series(engine, docs, a.calls, allow, False) for k, (docs, allow) in kinds.items()}
    engine.close()
    cached = Engine(compiled)
    out["cached"] = run_with_large_stack(
        lambda: {k: series(cached, docs, a.calls, allow, True) for k, (docs, allow) in kinds.items()})
    cached.close()
    if a.tools in (100, 1000) and built is not None:
        secs = 1.0 if a.quick else 3.0
        out["throughput"] = {"1": throughput(compiled, kinds["allow"][0], 1, secs),
                             "2": throughput(compiled, kinds["allow"][0], 2, secs)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
