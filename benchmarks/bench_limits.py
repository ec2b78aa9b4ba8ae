"""Benchmark rate/spend limits: store take latency, and what a limit adds to a Guard decision.

Usage: python benchmarks/bench_limits.py [--quick] [--takes N] [--calls N]

1. take: ``Store.take_all`` of one bucket (capacity large enough that every take fits), timed with
   ``perf_counter_ns`` around the call, median and p99 over ``--takes`` takes (default 2,000) after 200
   warm-up takes, for MemoryStore, SQLiteStore (a file in a temporary directory; WAL, synchronous=NORMAL)
   and RedisStore (a ``redis-server`` this script starts on 127.0.0.1, on a free port, with no
   persistence, and stops at the end). A second take row charges two buckets at once (a tool limit and a
   ``"*"`` limit), which is what a policy with both costs.
2. guard: ``Guard.decide`` for two policies of the same shape (one tool, one condition rule), one with an
   extra ``rate_limit: 100000/minute`` rule, over each store, with the system clock. The calls alternate
   limited/unlimited so drift hits both alike; the arguments rotate over 8 values, all warmed up, so the
   engine answers from its decision cache in both and the difference is the limiter. A second set uses an
   engine without the cache (``EngineLimits(cache_size=0)``): the full cost of a decision.

Targets (printed beside the numbers): take median <= 0.3 ms for SQLite and Redis; a rate-limited decision
<= 0.3 ms more than an unlimited one. Nothing leaves 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import regoguard  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from regoguard import Engine, EngineLimits, compile_policy, load_policy_text
from regoguard.guard import Guard
from regoguard.limits import Limiter, MemoryStore, Spec, Store, open_store
from regoguard.limits.sqlite_store import SQLiteStore

WARMUP = 200
TARGET_TAKE_MS = 0.3
TARGET_OVERHEAD_MS = 0.3

UNLIMITED = """
tools:
  create_charge:
    rules:
      - name: small
        conditions:
          - {path: args.amount, op: lte, value: 1000}
"""
LIMITED = UNLIMITED + """      - name: rate
        rate_limit: "100000/minute"
"""


# -- redis-server ----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(workdir: Path) -> Iterator[str | None]:
    """A throwaway redis-server on 127.0.0.1; yields its URL, or None when redis-server is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- timing ----------------------------------------------------------------------------------------------------


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    k = max(0, min(len(sorted_ns) - 1, math.ceil(q * len(sorted_ns)) - 1))
    return sorted_ns[k] / 1e6


def summary(samples: list[int]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s) / 1e6, percentile(s, 0.99)


def time_calls(fn: Callable[[int], Any], n: int) -> list[int]:
    out = []
    for i in range(n):
        t = time.perf_counter_ns()
        fn(i)
        out.append(time.perf_counter_ns() - t)
    return out


def bench_take(store: Store, n: int, buckets: int) -> tuple[float, float]:
    big = Spec(capacity=1e12, window=60, cost=1)
    items = [(f"global//bench/tool{b}._rate_minute", big) for b in range(buckets)]

    def one(_: int) -> None:
        r = store.take_all(items, time.time())
        if not r.ok:
            raise RuntimeError("a benchmark take was denied")

    time_calls(one, WARMUP)
    return summary(time_calls(one, n))


def bench_guard(limited: Guard, unlimited: Guard, n: int) -> tuple[tuple[float, float], tuple[float, float]]:
    docs = [
        {"tool": {"name": "create_charge", "arguments": {"amount": 10 + i, "currency": "usd"}},
         "server": {"name": "bench"}, "session": {"id": "s"}, "principal": {"id": "p"}}
        for i in range(8)
    ]

    def run(g: Guard, i: int) -> None:
        v = g.decide(docs[i % len(docs)], 120)
        if not v.allow:
            raise RuntimeError(f"benchmark call denied: {v.decision.message}")

    for i in range(WARMUP):
        run(limited, i)
        run(unlimited, i)
    lim: list[int] = []
    unl: list[int] = []
    for i in range(n):  # alternate, so both see the same machine
        t = time.perf_counter_ns()
        run(limited, i)
        lim.append(time.perf_counter_ns() - t)
        t = time.perf_counter_ns()
        run(unlimited, i)
        unl.append(time.perf_counter_ns() - t)
    return summary(lim), summary(unl)


# -- main ------------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer iterations (500): a smoke run, not a measurement")
    ap.add_argument("--takes", type=int, default=2000, help="timed takes per store (default 2000)")
    ap.add_argument("--calls", type=int, default=2000, help="timed Guard decisions per variant (default 2000)")
    args = ap.parse_args()
    takes = 500 if args.quick else max(1, min(args.takes, 1_000_000))
    calls = 500 if args.quick else max(1, min(args.calls, 1_000_000))

    import sqlite3

    import redis as redis_module

    server = "redis-server: not installed"
    if shutil.which("redis-server"):
        server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
        server = "redis-server " + server.split()[2]
    print(f"python {platform.python_version()} on {platform.platform()}; cpus={os.cpu_count()}; "
          f"sqlite {sqlite3.sqlite_version}; redis-py {redis_module.__version__}; {server}")
    print(f"takes per store: {takes} (+{WARMUP} warm-up); guard decisions per variant: {calls} (+{WARMUP})")
    print()

    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-limits-") as tmp, redis_server(Path(tmp)) as redis_url:
        stores: dict[str, Callable[[], Store]] = {
            "memory": MemoryStore,
            "sqlite": lambda: SQLiteStore(Path(tmp) / "state.db"),
        }
        if redis_url is not None:
            stores["redis"] = lambda: open_store(redis_url, "bench:")

        # 1. takes
        rows = []
        for name, make in stores.items():
            store = make()
            try:
                one = bench_take(store, takes, 1)
                two = bench_take(store, takes, 2)
            finally:
                store.close()
            target = TARGET_TAKE_MS if name in ("sqlite", "redis") else None
            ok = target is None or one[0] <= target
            if not ok:
                failures.append(f"{name} take median {one[0]:.3f} ms > {target} ms")
            rows.append((name, one, two, target, ok))
        print("take latency (Store.take_all), ms")
        print(f"{'store':<8} {'1 bucket med':>13} {'p99':>8} {'2 buckets med':>14} {'p99':>8}   target (median)")
        for name, one, two, target, ok in rows:
            verdict = "-" if target is None else f"<= {target:.1f} ms  {'ok' if ok else 'MISSED'}"
            print(f"{name:<8} {one[0]:>13.4f} {one[1]:>8.4f} {two[0]:>14.4f} {two[1]:>8.4f}   {verdict}")
        if redis_url is None:
            print("redis    skipped: redis-server is not installed")
        print()

        # 2. guard decisions, limited vs unlimited
        for cache_label, limits in (("cached engine", None), ("uncached engine", EngineLimits(cache_size=0))):
            e_lim = Engine(compile_policy(load_policy_text(LIMITED, "limited.yaml")), limits)
            e_unl = Engine(compile_policy(load_policy_text(UNLIMITED, "unlimited.yaml")), limits)
            try:
                print(f"Guard.decide, {cache_label}: rate_limit 100000/minute vs no limit, ms")
                print(f"{'store':<8} {'limited med':>12} {'p99':>8} {'unlimited med':>14} {'p99':>8} "
                      f"{'difference':>11}   target (difference)")
                for name, make in stores.items():
                    store = make()
                    try:
                        store.reset()
                        limited = Guard(e_lim, Limiter(store))
                        unlimited = Guard(e_unl, Limiter(store))
                        (lm, lp), (um, up) = bench_guard(limited, unlimited, calls)
                    finally:
                        store.close()
                    diff = lm - um
                    ok = diff <= TARGET_OVERHEAD_MS
                    if not ok:
                        failures.append(f"{name} ({cache_label}): limit adds {diff:.3f} ms > {TARGET_OVERHEAD_MS} ms")
                    print(f"{name:<8} {lm:>12.4f} {lp:>8.4f} {um:>14.4f} {up:>8.4f} {diff:>11.4f}   "
                          f"<= {TARGET_OVERHEAD_MS:.1f} ms  {'ok' if ok else 'MISSED'}")
                print()
            finally:
                e_lim.close()
                e_unl.close()

    if failures:
        print("targets missed:")
        for f in failures:
            print(f"  {f}")
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
