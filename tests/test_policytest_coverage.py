"""`regoguard test --coverage`: exactly the rules no passing case saw deny a call, and the tools no case calls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

POLICY = """\
default: deny
hide: [nuke]
tools:
  pay:
    rules:
      - name: cap
        conditions: [{path: args.amount, op: lte, value: 100}]
      - name: budget
        conditions: [{path: state.pay.spent, op: lte, value: 300}]
        state: {counter: spent, window: day, increment_from: args.amount}
  search:
    rules:
      - action: allow
  read:
    rules:
      - rate_limit: 2/minute
  "*":
    rules:
      - name: global
        rate_limit: 100/minute
"""

CASES = """\
policy: cov.yaml
tests:
  - name: the cap bites
    call: {tool: pay, args: {amount: 500}}
    expect: {decision: deny, rule: pay/cap}
  - name: read is limited
    steps:
      - call: {tool: read}
        repeat: 2
        expect: allow
      - call: {tool: read}
        expect: {decision: deny, rule: "read/rules[0]"}
  - name: hidden
    call: {tool: nuke}
    expect: deny
  - name: a failing case proves nothing
    call: {tool: unlisted}
    expect: allow
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "regoguard", "test", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120, check=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "cov.yaml").write_text(POLICY)
    (tmp_path / "cov_test.yaml").write_text(CASES)
    return tmp_path


def test_coverage_lists_exactly_the_rules_never_seen_denying(project: Path):
    proc = run("--coverage", cwd=project)
    lines = proc.stdout.splitlines()
    start = lines.index("coverage: 3 of 6 rules exercised (50%)")
    assert lines[start + 1:start + 6] == [
        "  cov.yaml:1: default: never seen denying a call",  # only the failing case met it
        "  cov.yaml:8: pay/budget: never seen denying a call",
        "  cov.yaml:19: */global: never seen denying a call",
        "tools no test case calls:",
        "  cov.yaml:11: search",
    ]
    assert lines[-1] == "3 passed, 1 failed"
    assert proc.returncode == 1  # the failing case, not coverage


def test_fail_under_and_json(project: Path):
    ok = run("--coverage", "--fail-under", "50", "--run", "cap|read|hidden", cwd=project)
    assert ok.returncode == 0, ok.stdout
    under = run("--fail-under", "60", "--run", "cap|read|hidden", cwd=project)
    assert under.returncode == 1
    assert "coverage 50% is under --fail-under 60%" in under.stdout
    doc = json.loads(run("--coverage", "--json", "--run", "cap|read|hidden", cwd=project).stdout)
    assert doc["coverage"]["exercised"] == 3 and doc["coverage"]["rules"] == 6
    assert [(u["rule"], u["line"]) for u in doc["coverage"]["uncovered"]] == [
        ("default", 1), ("pay/budget", 8), ("*/global", 19)]
    assert doc["coverage"]["untested_tools"] == [{"file": "cov.yaml", "line": 11, "tool": "search"}]


def test_a_rule_with_a_limit_must_be_seen_denying_both_ways(tmp_path: Path):
    (tmp_path / "lg.yaml").write_text(
        "tools:\n  go:\n    rules:\n      - rate_limit: {max: 1, window: 60}\n"
        "        validate: {required_args: true}\n")
    (tmp_path / "lg_test.yaml").write_text(
        "policy: lg.yaml\nschemas: {go: {required: [url]}}\ntests:\n"
        "  - name: missing url\n    call: {tool: go}\n    expect: deny\n")
    proc = run("--coverage", cwd=tmp_path)
    assert "  lg.yaml:4: go/rules[0]: its limit never seen denying a call (its argument checks were)" in proc.stdout
    assert proc.returncode == 0
