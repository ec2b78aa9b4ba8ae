"""`regoguard test` with YAML test files, end to end through the CLI: pass/fail lines, the summary line CI
parsers read, expected/actual diffs, limits over a manual clock, file:line:column errors, --run, --json."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_policy import dedent

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "policies"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed(, (\d+) errors?)?$", re.MULTILINE)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "regoguard", "test", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120, check=False)


def summary(stdout: str) -> tuple[int, int, int]:
    found = SUMMARY.findall(stdout)
    assert found, stdout
    passed, failed, _, errors = found[-1]
    return int(passed), int(failed), int(errors or 0)


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """A directory with copies of the shipped policies, for test files written by each test."""
    for name in ("payments.yaml", "looking-glass.yaml"):
        shutil.copy(POLICIES / name, tmp_path / name)
    return tmp_path


def test_the_shipped_policy_tests_pass():
    proc = run("policies", cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed, failed, errors = summary(proc.stdout)
    assert passed >= 20 and failed == 0 and errors == 0
    assert "PASS policies/looking-glass_test.yaml::the 11th session_start within a minute is denied, and the " \
           "bucket refills" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1] == f"{passed} passed, 0 failed"


def test_a_wrong_expectation_fails_with_expected_and_actual(suite: Path):
    (suite / "pay_test.yaml").write_text(dedent("""
        policy: payments.yaml
        tests:
          - name: big charge
            call: {tool: create_charge, args: {amount: 90000, currency: usd}}
            expect: allow
          - name: wrong rule
            call: {tool: create_charge, args: {amount: 100, currency: jpy}}
            expect: {decision: deny, rule: create_charge/max single charge}
          - name: small charge
            call: {tool: create_charge, args: {amount: 100, currency: usd}}
            expect: allow
          - name: made-up rule id
            call: {tool: create_charge, args: {amount: 100, currency: jpy}}
            expect: {decision: deny, rule: create_charge/allowed currency}
        """))
    proc = run(".", cwd=suite)
    assert proc.returncode == 1
    out = proc.stdout
    assert "FAIL pay_test.yaml::big charge" in out
    assert "PASS pay_test.yaml::small charge" in out
    assert "pay_test.yaml:3: create_charge\n" in out
    assert re.search(r"- expected decision\s+allow\n\s+\+ actual   decision\s+deny", out), out
    assert "the call got: deny by create_charge/max single charge" in out
    assert re.search(r"- expected rule\s+create_charge/max single charge\n\s+\+ actual   rule\s+"
                     r"create_charge/allowed currencies", out), out
    assert "hint: no rule of payments.yaml has the id 'create_charge/allowed currency'; did you mean " \
           "'create_charge/allowed currencies'?" in out
    assert summary(out) == (1, 3, 0)


def test_the_eleventh_call_is_denied_and_the_clock_refills_the_bucket(suite: Path):
    (suite / "lg_test.yaml").write_text(dedent("""
        policy: looking-glass.yaml
        schemas:
          session_start: {type: object, required: [url]}
        tests:
          - name: limit
            session: s1
            steps:
              - call: {tool: session_start, args: {url: "https://example.com"}}
                repeat: 10
                expect: allow
              - call: {tool: session_start, args: {url: "https://example.com"}}
                expect: {decision: deny, rule: "session_start/rules[0]", message_contains: "retry after"}
              - advance: 6
              - call: {tool: session_start, args: {url: "https://example.com"}}
                expect: allow
              - call: {tool: session_start, args: {url: "https://example.com"}}
                expect: deny
          - name: wrong about the eleventh
            steps:
              - call: {tool: session_start, args: {url: "https://example.com"}}
                repeat: 11
                expect: allow
          - name: required args
            call: {tool: session_start, args: {}}
            expect: {decision: deny, message_contains: 'missing required argument "url"'}
        """))
    proc = run("lg_test.yaml", cwd=suite)
    assert "PASS lg_test.yaml::limit" in proc.stdout
    assert "PASS lg_test.yaml::required args" in proc.stdout
    # the 11th of 11 repetitions is the one that fails, and the report says so
    assert "FAIL lg_test.yaml::wrong about the eleventh" in proc.stdout
    assert "lg_test.yaml:20: session_start, call 11 of 11\n" in proc.stdout
    assert "Rate limit of 10 calls" in proc.stdout
    assert proc.returncode == 1
    assert summary(proc.stdout) == (2, 1, 0)


def test_each_case_starts_with_fresh_counters(suite: Path):
    case = dedent("""
          - name: ten NAME
            steps:
              - call: {tool: session_start, args: {url: u}}
                repeat: 10
                expect: allow
        """)
    (suite / "fresh_test.yaml").write_text(
        "policy: looking-glass.yaml\nsession: same\nschemas: {session_start: {required: [url]}}\ntests:\n"
        + "".join(case.replace("NAME", str(i)) for i in range(3)))
    proc = run(cwd=suite)
    assert proc.returncode == 0, proc.stdout
    assert summary(proc.stdout) == (3, 0, 0)


def test_typos_in_a_test_file_give_file_line_column_and_did_you_mean(suite: Path):
    (suite / "typo_test.yaml").write_text(dedent("""
        policy: payments.yaml
        tests:
          - name: one
            call: {tool: create_charge, agrs: {amount: 1}}
            expect: allow
          - name: two
            call: {tool: create_charge}
            expect: {decison: deny}
        """))
    (suite / "good_test.yaml").write_text(dedent("""
        policy: payments.yaml
        tests:
          - name: fine
            call: {tool: create_charge, args: {amount: 100, currency: usd}}
            expect: allow
        """))
    proc = run(".", cwd=suite)
    assert proc.returncode == 1
    assert "ERROR typo_test.yaml" in proc.stdout
    assert "typo_test.yaml:4:33: error: unknown key 'agrs' in a call (tests[0].call.agrs)" in proc.stdout
    assert "hint: did you mean 'args'?" in proc.stdout
    assert "typo_test.yaml:8:14: error: unknown key 'decison' in expect" in proc.stdout
    assert "did you mean 'decision'?" in proc.stdout
    assert "PASS good_test.yaml::fine" in proc.stdout  # the other file still ran
    assert summary(proc.stdout) == (1, 0, 1)


def test_duplicate_keys_bad_values_and_a_missing_policy_are_errors(suite: Path):
    (suite / "dup_test.yaml").write_text(dedent("""
        policy: nowhere.yaml
        tests:
          - name: a
            name: b
            call: {tool: t}
            expect: maybe
        """))
    proc = run("dup_test.yaml", cwd=suite)
    assert proc.returncode == 1
    assert "dup_test.yaml:4:5: error: duplicate key 'name' (first defined at line 3, column 5)" in proc.stdout
    (suite / "dup_test.yaml").write_text(dedent("""
        policy: nowhere.yaml
        tests:
          - name: a
            call: {tool: t}
            expect: maybe
        """))
    proc = run("dup_test.yaml", cwd=suite)
    assert "dup_test.yaml:1:9: error: the policy file 'nowhere.yaml' does not exist" in proc.stdout
    assert "dup_test.yaml:5:13: error: expect must be one of allow, deny, require_approval; got 'maybe'" in proc.stdout


def test_a_broken_policy_is_reported_with_its_own_positions(suite: Path):
    (suite / "broken.yaml").write_text(
        "tools:\n  t:\n    rules:\n      - conditions: [{path: args.a, op: lessthan, value: 1}]\n")
    (suite / "broken_test.yaml").write_text(
        "policy: broken.yaml\ntests:\n  - name: a\n    call: {tool: t}\n    expect: allow\n")
    proc = run(cwd=suite)
    assert proc.returncode == 1
    assert re.search(r"^broken\.yaml:4:\d+: error: .*lessthan", proc.stdout, re.MULTILINE), proc.stdout


def test_run_filters_cases_by_file_and_name():
    proc = run("policies", "--run", "by name$|payments_test.*small|JavaScript", cwd=REPO)
    assert proc.returncode == 0, proc.stdout
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("PASS", "FAIL"))]
    assert lines == [
        "PASS policies/looking-glass_test.yaml::running JavaScript in the page is denied",
        "PASS policies/payments_test.yaml::a small charge is allowed",
        "PASS policies/payments_test.yaml::hidden tools are denied even when called by name",
    ]
    proc = run("policies", "--run", "no such case", cwd=REPO)
    assert proc.returncode == 1
    assert "no tests matched --run 'no such case'" in proc.stdout


def test_json_output(suite: Path):
    (suite / "j_test.yaml").write_text(dedent("""
        policy: payments.yaml
        tests:
          - name: ok
            call: {tool: create_charge, args: {amount: 100, currency: usd}}
            expect: allow
          - name: not ok
            call: {tool: delete_customer}
            expect: allow
        """))
    proc = run("--json", cwd=suite)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["summary"] == {"passed": 1, "failed": 1, "errors": 0}
    failed = next(t for t in doc["tests"] if t["status"] == "fail")
    assert failed["failure"]["mismatches"] == [{"field": "decision", "expected": "allow", "actual": "deny"}]
    assert failed["failure"]["decision"]["reasons"][0]["rule"] == "hide"


def test_no_tests_and_usage_errors(tmp_path: Path):
    proc = run(cwd=tmp_path)
    assert proc.returncode == 1
    assert "no tests found" in proc.stdout
    assert run("missing-dir", cwd=tmp_path).returncode == 2
    assert run("--run", "(", cwd=tmp_path).returncode == 2
