"""What the team's Rego and hot reload cost: decisions with and without a team module, and a reload.

Same policy (policies/payments.yaml), same calls, one run:

- uncached decisions without team Rego (one query of the called tool's own bundle, which holds only that
  tool's compiled rules; cache off to measure the engine);
- decisions with a three-rule team module in `package regoguard.custom` (deny, approval, charges): each
  tool's bundle then also holds the library and the team's modules, and one query asks the library's
  `verdict`, on the worker pool behind the timeout, never cached;
- a hot reload: loading the policy set (YAML + team Rego, checked) and building the new engine, the work
  done before the swap (the swap itself is one assignment).

    python benchmarks/bench_team_rego.py [--calls N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from regoguard.engine import Engine
from regoguard.policy_set import load_policy_set

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies" / "payments.yaml"

TEAM = """\
package regoguard.custom

import rego.v1

deny contains {"rule": "no-test-customers", "message": "No charges for test customers"} if {
	input.tool.name == "create_charge"
	startswith(input.tool.arguments.customer, "test_")
}

approval contains {"rule": "big-charge", "message": "Charges over $400 need a human"} if {
	input.tool.name == "create_charge"
	input.tool.arguments.amount > 40000
}

charges contains {"counter": "customer_spend", "capacity": 100000, "window": 86400, "scope": "principal",
                  "cost": input.tool.arguments.amount} if input.tool.name == "create_charge"
"""


def _doc(i: int) -> dict[str, Any]:
    return {"tool": {"name": "create_charge", "arguments": {"amount": 100 + i % 50, "currency": "usd",
                                                            "customer": f"cus_{i % 7}"}},
            "server": {"name": "payments"}, "session": {"id": "bench"}, "principal": {"id": "bench", "claims": {}}}


def _median_ms(engine: Engine, calls: int) -> float:
    samples = []
    for i in range(calls):
        doc = _doc(i)
        t0 = time.perf_counter_ns()
        decision = engine.evaluate(doc)
        samples.append(time.perf_counter_ns() - t0)
        assert decision.allow, decision
    return statistics.median(samples) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="200 calls, 5 reloads")
    args = parser.parse_args()
    calls, reloads = (200, 5) if args.quick else (args.calls, args.reloads)
    print("regoguard team Rego and hot reload benchmark")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        team_dir = Path(tmp) / "team"
        team_dir.mkdir()
        (team_dir / "payments.rego").write_text(TEAM, encoding="utf-8")
        plain = load_policy_set(POLICY)
        team = load_policy_set(POLICY, [str(team_dir)])
        e_plain = Engine(plain.compiled)
        e_plain._cacheable = False  # measure the engine, not the cache
        e_team = Engine(team.compiled, extra_modules=team.modules)
        try:
            _median_ms(e_plain, 20), _median_ms(e_team, 20)  # warm up
            plain_ms = _median_ms(e_plain, calls)
            team_ms = _median_ms(e_team, calls)
        finally:
            e_plain.close()
            e_team.close()
        builds = []
        for _ in range(reloads):
            t0 = time.perf_counter_ns()
            loaded = load_policy_set(POLICY, [str(team_dir)])
            Engine(loaded.compiled, extra_modules=loaded.modules).close()
            builds.append(time.perf_counter_ns() - t0)
    print(f"uncached decision, YAML only       median {plain_ms:.3f} ms  ({calls} calls)")
    print(f"decision with team Rego (3 rules)  median {team_ms:.3f} ms  ({calls} calls)")
    print(f"ratio team / YAML only: {team_ms / plain_ms:.2f}x")
    print(f"hot reload (load + check + build), median {statistics.median(builds) / 1e6:.1f} ms ({reloads} reloads)")


if __name__ == "__main__":
    main()
