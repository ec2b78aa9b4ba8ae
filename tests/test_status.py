"""``regoguard status``: proxies register themselves, beat, and say what they decided; dead ones are seen
as dead. Real proxies (``regoguard run`` in front of the spy server) and the real command."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from proxy_harness import TIMEOUT, proxied_client, python_server, read_jsonl, write_policy
from regoguard.audit.lifecycle import Lifecycle, Tally
from regoguard.cli.status import liveness, summary

POLICY = """\
version: "1"
tools:
  create_refund:
    rules:
      - name: review
        action: require_approval
        conditions: [{path: args.amount, op: lte, value: 100}]
  delete_customer:
    rules:
      - name: never
        action: deny
"""


def regoguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "regoguard", *args], check=False, capture_output=True, text=True,
                          timeout=60)


def status(directory: Path, *flags: str) -> Any:
    out = regoguard("status", "--status-dir", str(directory), "--json", *flags)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_tally_counts_outcomes_rules_and_minutes() -> None:
    tally = Tally()
    t0 = 1_800_000_000.0
    for i in range(6):
        tally.record("allowed", "echo", None, None, t0 + i)
    tally.record("denied", "delete_customer", "delete_customer/never", "no", t0 + 61)
    tally.record("held", "create_refund", "create_refund/review", "a person", t0 + 62)
    snap = tally.snapshot()
    assert snap["outcomes"] == {"allowed": 6, "denied": 1, "held": 1}
    assert snap["denied_by_rule"] == {"delete_customer/never": 1, "create_refund/review": 1}
    assert [d["outcome"] for d in snap["recent_denials"]] == ["denied", "held"]
    row = summary({"pid": 1, "state": "running", "last_seen": t0 + 62, "tally": snap}, t0 + 62)
    assert row["calls"] == 8 and row["denial_rate"] == 0.25
    assert row["calls_per_minute"] == pytest.approx(8 / 5)


def test_a_proxy_that_vanished_is_dead_and_one_that_stopped_is_stopped(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True).stdout.strip()
    now = time.time()
    assert liveness({"pid": int(gone), "state": "running", "last_seen": now}, now) == "dead"
    import os

    assert liveness({"pid": os.getpid(), "state": "running", "last_seen": now}, now) == "alive"
    assert liveness({"pid": os.getpid(), "state": "running", "last_seen": now - 100, "heartbeat_seconds": 15},
                    now) == "dead"  # silent for three heartbeats: hung or frozen
    assert liveness({"pid": os.getpid(), "state": "stopped", "last_seen": now}, now) == "stopped"
    (tmp_path / f"{gone}.json").write_text(json.dumps({"pid": int(gone), "state": "running", "last_seen": now,
                                                        "server": "ghost"}))
    assert status(tmp_path) == []  # only live ones by default
    assert [r["status"] for r in status(tmp_path, "--all")] == ["dead"]
    assert status(tmp_path, "--prune", "--all") == []
    assert not (tmp_path / f"{gone}.json").exists()


def test_entries_not_seen_for_a_day_are_forgotten(tmp_path: Path) -> None:
    (tmp_path / "1.json").write_text(json.dumps({"pid": 1, "state": "stopped", "last_seen": time.time() - 90000}))
    (tmp_path / "2.json").write_text(json.dumps({"pid": 2, "state": "stopped", "last_seen": time.time() - 60}))
    life = Lifecycle(tmp_path, {"server": "x"}, Tally(), heartbeat=3600)
    life.start()
    life.stop()
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(["2.json", life.path.name])  # type: ignore[union-attr]


async def test_status_shows_a_running_proxy_and_what_it_decided(tmp_path: Path) -> None:
    directory = tmp_path / "proxies"
    log = tmp_path / "decisions.jsonl"
    policy = write_policy(tmp_path, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("spy"), "legacy",
                                  options=["--state", "memory", "--status-dir", str(directory),
                                           "--decision-log", str(log)]) as client:
            await client.call_tool("echo", {"text": "hi"})
            await client.call_tool("create_refund", {"amount": 500})
            await client.call_tool("delete_customer", {"customer_id": "c1"})
            rows: list[dict[str, Any]] = []
            for _ in range(50):  # the entry is refreshed within a second of a call
                rows = await anyio.to_thread.run_sync(status, directory)
                if rows and rows[0]["calls"] == 3:
                    break
                await anyio.sleep(0.2)
            assert len(rows) == 1, rows
            row = rows[0]
            assert row["status"] == "alive" and row["server"] == "spy" and row["command"] == "run"
            assert row["state_backend"] == "memory" and row["fail_mode"] == "closed"
            assert row["policy"] == str(policy) and row["decision_log"] == str(log)
            assert row["outcomes"] == {"allowed": 1, "held": 1, "denied": 1}
            assert row["denial_rate"] == pytest.approx(2 / 3, abs=1e-3)
            assert row["top_deny_rules"] == {"create_refund/review": 1, "delete_customer/never": 1}
            assert [d["rule"] for d in row["recent_denials"]] == ["create_refund/review", "delete_customer/never"]
            text = (await anyio.to_thread.run_sync(regoguard, "status", "--status-dir", str(directory))).stdout
            assert "alive" in text and "held for approval" in text and "denial rate 66.7%" in text, text
    rows = status(directory, "--all")
    assert [r["status"] for r in rows] == ["stopped"]
    assert not [e for e in read_jsonl(log) if e.get("path") != "regoguard/lib/decision" and "approval" not in e]
    events = read_jsonl(directory / "lifecycle.jsonl")  # beside the registry, never in the decision log
    assert events[0]["outcome"] == "startup" and events[-1]["outcome"] == "shutdown"
    assert events[-1]["proxy"]["tally"]["outcomes"] == {"allowed": 1, "held": 1, "denied": 1}
    summary_text = regoguard("log", str(log)).stdout
    assert summary_text.startswith("3 calls"), summary_text  # lifecycle events are not calls


def test_a_directory_no_proxy_registered_in_says_so(tmp_path: Path) -> None:
    out = regoguard("status", "--status-dir", str(tmp_path / "none"))
    assert out.returncode == 0 and "no regoguard proxies have registered" in out.stdout
