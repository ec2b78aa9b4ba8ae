"""`regoguard test` with the team's Rego: custom `deny`/`charges` decided in YAML cases, `test_` rules run
in worker processes (one crashing the engine fails alone), syntax errors at file:line:column, timeouts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_policy import dedent
from regoguard.policytest.rego_files import find_tests, isolate, strip_comments

SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) errors?)?$", re.MULTILINE)

POLICY = """\
rego: [rego/]
tools:
  git_push:
    rules:
      - name: branch given
        conditions: [{path: args.branch, op: exists, value: true}]
"""

CUSTOM = """\
package regoguard.custom

import rego.v1

import data.team.helpers

deny contains {"rule": "no-main", "message": "Pushes to main need a release ticket"} if {
	input.tool.name == "git_push"
	helpers.protected(input.tool.arguments.branch)
	not helpers.ticket_ok(object.get(input.tool.arguments, "ticket", ""))
}

charges contains {"counter": "pushes", "capacity": 3, "window": 3600, "scope": "principal",
	"rule": "push-budget", "message": "3 pushes an hour"} if input.tool.name == "git_push"

approval contains {"rule": "force-push", "message": "Force pushes need a human"} if {
	input.tool.name == "git_push"
	input.tool.arguments.force == true
}
"""

HELPERS = """\
package team.helpers

import rego.v1

protected(branch) if branch in {"main", "release"}

ticket_ok(t) if regex.match(`^REL-[0-9]+$`, t)
"""

HELPERS_TEST = """\
package team.helpers_test

import rego.v1

import data.team.helpers

test_main_is_protected if helpers.protected("main")

# test_commented_out if false

test_feature_is_not if not helpers.protected("feature/x")

test_bad_ticket if {
	print("checking nope")
	helpers.ticket_ok("nope")
}

test_not_a_boolean := 5

test_sees_the_policy_settings if data.regoguard.settings.tools.git_push.rules[0].id == "git_push/branch given"
"""

# The case measured on regopy 1.5.2: `with input as` over a rule calling sprintf kills the process.
CRASH_TEST = """\
package team.crash_test

import rego.v1

deny contains m if {
	input.x == 1
	m := sprintf("%v", [input.y])
}

test_before if true

test_a if {
	count(deny) == 1 with input as {"x": 1, "y": "z"}
}

test_after if count(deny) == 0
"""

CASES = """\
policy: team.yaml
principal: alice
tests:
  - name: feature push allowed
    call: {tool: git_push, args: {branch: feature/x}}
    expect: allow
  - name: main push denied by the team's Rego
    call: {tool: git_push, args: {branch: main}}
    expect: {decision: deny, rule: no-main, message: Pushes to main need a release ticket}
  - name: main push with a ticket allowed
    call: {tool: git_push, args: {branch: main, ticket: REL-7}}
    expect: allow
  - name: a force push waits for a human
    call: {tool: git_push, args: {branch: feature/x, force: true}}
    expect: {decision: require_approval, rule: force-push, message: Force pushes need a human}
  - name: the team's charge allows 3 pushes an hour per principal
    steps:
      - call: {tool: git_push, args: {branch: feature/x}}
        repeat: 3
        expect: allow
      - call: {tool: git_push, args: {branch: feature/x}}
        expect: {decision: deny, rule: push-budget, message_contains: 3 pushes an hour}
      - call: {tool: git_push, args: {branch: feature/x}, principal: bob}
        expect: allow
      - advance: 1200
      - call: {tool: git_push, args: {branch: feature/x}}
        expect: allow
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "regoguard", "test", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120, check=False)


def counts(stdout: str) -> tuple[int, int, int]:
    passed, failed, errors = SUMMARY.findall(stdout)[-1]
    return int(passed), int(failed), int(errors or 0)


@pytest.fixture
def team(tmp_path: Path) -> Path:
    (tmp_path / "rego").mkdir()
    (tmp_path / "team.yaml").write_text(POLICY)
    (tmp_path / "team_test.yaml").write_text(CASES)
    (tmp_path / "rego" / "custom.rego").write_text(CUSTOM)
    (tmp_path / "rego" / "helpers.rego").write_text(HELPERS)
    (tmp_path / "rego" / "helpers_test.rego").write_text(HELPERS_TEST)
    return tmp_path


def test_custom_rego_decides_yaml_cases_and_test_rules_pass_or_fail(team: Path):
    proc = run(cwd=team)
    out = proc.stdout
    for case in ("feature push allowed", "main push denied by the team's Rego", "main push with a ticket allowed",
                 "a force push waits for a human", "the team's charge allows 3 pushes an hour per principal"):
        assert f"PASS team_test.yaml::{case}" in out, out
    prefix = "rego/helpers_test.rego::data.team.helpers_test."
    assert f"PASS {prefix}test_main_is_protected" in out
    assert f"PASS {prefix}test_feature_is_not" in out
    assert f"PASS {prefix}test_sees_the_policy_settings" in out
    assert f"FAIL {prefix}test_bad_ticket\n    rego/helpers_test.rego:13: undefined" in out
    assert "    | checking nope" in out  # the failing test's print() output
    assert f"FAIL {prefix}test_not_a_boolean\n    rego/helpers_test.rego:18: the rule is 5, not true" in out
    assert "test_commented_out" not in out
    assert proc.returncode == 1
    assert counts(out) == (8, 2, 0)


def test_a_test_that_crashes_the_engine_fails_alone(team: Path):
    (team / "rego" / "crash_test.rego").write_text(CRASH_TEST)
    proc = run("--run", "crash_test", cwd=team)
    out = proc.stdout
    assert "PASS rego/crash_test.rego::data.team.crash_test.test_before" in out
    assert "PASS rego/crash_test.rego::data.team.crash_test.test_after" in out
    assert re.search(r"FAIL rego/crash_test\.rego::data\.team\.crash_test\.test_a\n    rego/crash_test\.rego:12: "
                     r"the embedded engine crashed evaluating this test \(signal \d+, SIG\w+\) — a known rego-cpp 1\.5 "
                     r"bug", out), out
    assert proc.returncode == 1
    assert counts(out) == (2, 1, 0)


def test_rego_syntax_errors_name_file_line_and_column(team: Path):
    (team / "rego" / "broken_test.rego").write_text("package team.broken_test\n\nimport rego.v1\n\ntest_x if {\n"
                                                    "\t1 == 1 +\n}\n")
    proc = run(cwd=team)
    assert "rego/broken_test.rego:6:9: error: Invalid arithmetic operator" in proc.stdout
    assert "PASS team_test.yaml::feature push allowed" in proc.stdout  # YAML cases do not load test modules
    assert proc.returncode == 1
    (team / "rego" / "broken_test.rego").unlink()
    (team / "rego" / "helpers.rego").write_text(HELPERS.replace('"release"}', '"release"'))
    proc = run(cwd=team)
    assert re.search(r"^rego/helpers\.rego:5:\d+: error: ", proc.stdout, re.MULTILINE), proc.stdout
    assert "ERROR team_test.yaml" in proc.stdout
    assert counts(proc.stdout)[2] >= 1 and proc.returncode == 1


def test_rego_dirs_from_the_command_line_and_timeouts(tmp_path: Path):
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "slow_test.rego").write_text(dedent("""
        package slow_test

        import rego.v1

        test_slow if count([x | some x in numbers.range(1, 100000000)]) > 0

        test_fast if true
        """))
    (tmp_path / "empty").mkdir()
    proc = run("empty", "--rego", "slow", "--timeout", "1", cwd=tmp_path)
    assert "FAIL slow/slow_test.rego::data.slow_test.test_slow\n    slow/slow_test.rego:5: timed out after 1s" \
        in proc.stdout
    assert "PASS slow/slow_test.rego::data.slow_test.test_fast" in proc.stdout
    assert proc.returncode == 1


def test_finding_test_rules_in_module_text():
    source = dedent('''
        package a.b_test
        import rego.v1
        # test_in_a_comment if true
        s := "# test_in_a_string"
        test_one if {
        \tx := "{"
        \tx == "{"
        }

        test_one if false
        test_two := true
        test_fn(x) := x
        ''')
    assert strip_comments("a # b\nc") == "a    \nc"
    tests = find_tests("m_test.rego", source)
    assert [(t.rule, t.line, t.query) for t in tests] == [("test_one", 5, "data.a.b_test.test_one"),
                                                          ("test_two", 11, "data.a.b_test.test_two")]
    only_two = isolate(source, "test_two")
    assert "test_one" not in only_two and "test_two := true" in only_two
    assert only_two.count("\n") == source.count("\n")  # lines kept, so errors still point right
    assert "test_one if {" in isolate(source, "test_one")


def test_the_test_files_own_rego_list_is_loaded_beside_the_policy(tmp_path: Path):
    (tmp_path / "extra").mkdir()
    (tmp_path / "plain.yaml").write_text("tools:\n  send:\n    rules: []\n")
    (tmp_path / "extra" / "mail.rego").write_text(dedent("""
        package regoguard.custom

        import rego.v1

        deny contains sprintf("no mail to %s", [input.tool.arguments.to]) if {
        \tendswith(input.tool.arguments.to, "@competitor.example")
        }
        """))
    (tmp_path / "plain_test.yaml").write_text(dedent("""
        policy: plain.yaml
        rego: extra/
        tests:
          - name: denied by the extra module
            call: {tool: send, args: {to: "ceo@competitor.example"}}
            expect: {decision: deny, rule: rego, message: "no mail to ceo@competitor.example"}
          - name: others pass
            call: {tool: send, args: {to: "a@us.example"}}
            expect: allow
        """))
    proc = run(cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert counts(proc.stdout) == (2, 0, 0)
