"""Benchmark what the relay core costs per message, in process, without pipes or a policy decision.

Usage: python benchmarks/bench_relay_core.py [--quick]

Measured in one run, interleaved, medians of per-message times (perf_counter_ns over batches of 200):

  parse           jsonrpc.loads of the request line (the strict parse every message gets)
  rewrite id      ids.with_id on the same text: finding the id member and splicing ours in
  restore id      ids.with_id on the server's answer: putting the client's id back
  ping round trip RelayCore.client_line(ping) + RelayCore.server_line(answer): parse, id bookkeeping,
                  rewrite and restore, both directions, no policy involved
  call, 4 KiB     the same for a tools/call whose arguments hold 4 KiB of text under a policy whose
                  decision is cached (so the engine's share is the cache lookup)

The "id rewriting" cost of a message is rewrite + restore; the ratio to parse says what it adds to the
work the relay did before it owned the id space. Exit 0 (no targets: this is an accounting of costs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    import regoguard  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from regoguard import Engine, compile_policy, load_policy_text
from regoguard.engine import run_with_large_stack
from regoguard.guard import Guard
from regoguard.proxy import ids, jsonrpc
from regoguard.proxy.core import RelayCore
from regoguard.proxy.session import Session

BATCH = 200
PING = b'{"jsonrpc":"2.0","id":12345,"method":"ping","params":{"_meta":{"progressToken":"t-1"}}}'
ANSWER = b'{"jsonrpc":"2.0","id":%d,"result":{}}'
CALL = json.dumps({"jsonrpc": "2.0", "id": "call-1", "method": "tools/call",
                   "params": {"name": "echo", "arguments": {"text": "x" * 4096, "n": 1}}}).encode()
CALL_ANSWER = b'{"jsonrpc":"2.0","id":%d,"result":{"content":[{"type":"text","text":"ok"}],"isError":false}}'


def per_message(fn: Callable[[], object], rounds: int) -> list[float]:
    """Median-ready samples: µs per call, each sample the mean over BATCH calls."""
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(BATCH):
            fn()
        samples.append((time.perf_counter_ns() - t0) / BATCH / 1000)
    return samples


def measure(rounds: int) -> dict[str, list[float]]:
    engine = Engine(compile_policy(load_policy_text("hide: [secret]\n", "bench.yaml")))
    try:
        core = RelayCore(Guard(engine), Session("bench", "alice"))
        text = PING.decode()
        answer_text = (ANSWER % 7).decode()

        def ping_round_trip() -> None:
            out = core.client_line(PING)
            upstream = json.loads(out.to_server[0])["id"]
            core.server_line(ANSWER % upstream)

        def call_round_trip() -> None:
            out = core.client_line(CALL.replace(b'"call-1"', b'"call-%d"' % len(core.inflight)))
            upstream = int(out.to_server[0].split(b'"id":', 1)[1].split(b",", 1)[0])
            core.server_line(CALL_ANSWER % upstream)

        cases: dict[str, Callable[[], object]] = {
            "parse": lambda: jsonrpc.loads(PING),
            "rewrite id": lambda: ids.with_id(text, "7"),
            "restore id": lambda: ids.with_id(answer_text, "12345"),
            "ping round trip": ping_round_trip,
            "call, 4 KiB": call_round_trip,
        }
        for fn in cases.values():  # warm-up, and the call's decision into the cache
            per_message(fn, 3)
        results: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):  # interleaved: a noisy neighbour hits every case alike
            for name, fn in cases.items():
                results[name] += per_message(fn, 1)
        return results
    finally:
        engine.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds (~2 s)")
    args = ap.parse_args()
    results: dict[str, list[float]] = run_with_large_stack(lambda: measure(20 if args.quick else 100))
    med = {name: statistics.median(samples) for name, samples in results.items()}
    print(f"relay core, per message, medians over {len(results['parse'])} samples of {BATCH} (µs)")
    for name, samples in results.items():
        p99 = sorted(samples)[int(0.99 * (len(samples) - 1))]
        print(f"  {name:<16} {med[name]:8.2f}   p99 {p99:8.2f}   {med[name] / med['parse']:5.2f}x parse")
    rewrite = med["rewrite id"] + med["restore id"]
    print(f"id rewriting (rewrite + restore) per request: {rewrite:.2f} µs = {rewrite / med['parse']:.2f}x the "
          f"strict parse it follows, {rewrite / med['ping round trip'] * 100:.0f}% of a ping's round trip "
          "through the core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
