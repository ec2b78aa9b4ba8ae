"""The ``regoguard`` command line, run as a child process: exit codes, compiler-style errors on stderr, and
nothing on stdout but each command's own output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import regoguard
from helpers_policy import dedent

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parents[1]
REGOGUARD = [sys.executable, "-m", "regoguard"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REGOGUARD, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


@pytest.fixture
def stripe(tmp_path: Path) -> Path:
    path = tmp_path / "stripe.yaml"
    shutil.copy(GOLDEN / "stripe.yaml", path)
    return path


BROKEN = """\
defualt: deny
tools:
  t:
    rules:
      - conditions:
          - {path: args.a, op: lessthan, value: 5}
"""


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    return path


def test_the_installed_script_runs():
    script = Path(sys.executable).parent / "regoguard"
    proc = subprocess.run([str(script), "check", str(GOLDEN / "stripe.yaml")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def test_version_and_help_print_to_stdout():
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"regoguard {regoguard.__version__}"
    proc = run("--help")
    assert proc.returncode == 0
    assert "usage: regoguard" in proc.stdout


def test_usage_error_exits_2():
    proc = run("eval")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "the following arguments are required" in proc.stderr


# --- check --------------------------------------------------------------------------------------------


def test_check_valid_policies():
    paths = [str(GOLDEN / f"{n}.yaml") for n in ("stripe", "github", "looking_glass")]
    proc = run("check", *paths)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{paths[0]}: ok (3 tool keys, 6 rules)",
        f"{paths[1]}: ok (6 tool keys, 7 rules)",
        f"{paths[2]}: ok (4 tool keys, 5 rules)",
    ]
    # the session-scoped limit is a warning, compiler-style
    assert proc.stderr.splitlines() == [
        f"{paths[2]}:5:9: warning: rule 'session_start/rules[0]' has a session-scoped limit: it starts over when "
        "the agent reconnects (set `scope: principal` or `global` to make it stick) (tools.session_start.rules[0])"
    ]


def test_check_reads_test_files_among_the_policies_as_test_files(tmp_path: Path):
    """The README's CI recipe `regoguard check policies/*.yaml` on a directory that keeps its
    *_test.yaml files beside the policies (as this repo's own policies/ does)."""
    shipped = run("check", *sorted(str(p) for p in (ROOT / "policies").glob("*.yaml")))
    assert shipped.returncode == 0, shipped.stderr
    assert "looking-glass_test.yaml: ok (a test file: " in shipped.stdout
    assert "regoguard test" in shipped.stdout
    (tmp_path / "p.yaml").write_text("tools:\n  t:\n    rules:\n      - action: deny\n        reason: never\n")
    (tmp_path / "p_test.yaml").write_text("policy: p.yaml\ntests:\n  - name: x\n    call: {tool: t}\n"
                                          "    expect: {decision: deny}\n    extra: 1\n")
    bad = run("check", str(tmp_path / "p.yaml"), str(tmp_path / "p_test.yaml"))
    assert bad.returncode == 1
    assert "p_test.yaml:6:5: error: unknown key 'extra'" in bad.stderr, bad.stderr
    assert "p.yaml: ok" in bad.stdout


def test_check_invalid_policy_reports_every_error_compiler_style(broken: Path):
    proc = run("check", str(broken))
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0] == f"{broken}:1:1: error: unknown key 'defualt' in the policy (defualt)"
    assert lines[1] == "    hint: did you mean 'default'?"
    assert lines[2].startswith(f"{broken}:6:32: error: op must be one of eq, neq,")
    assert lines[2].endswith("(tools.t.rules[0].conditions[0].op)")
    assert lines[-1] == "2 errors"


def test_check_reports_good_and_bad_files_together(broken: Path, stripe: Path):
    proc = run("check", str(stripe), str(broken))
    assert proc.returncode == 1
    assert proc.stdout == f"{stripe}: ok (3 tool keys, 6 rules)\n"
    assert f"{broken}:1:1: error:" in proc.stderr


def test_check_missing_file(tmp_path: Path):
    proc = run("check", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"{tmp_path / 'nope.yaml'}:1:1: error: cannot read policy")
    assert proc.stderr.splitlines()[-1] == "1 error"


def test_check_yaml_syntax_error(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text("tools:\n  t: {rules: [\n")
    proc = run("check", str(path))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"{path}:3:1: error: YAML syntax error")


# --- compile ------------------------------------------------------------------------------------------


def test_compile_to_stdout(stripe: Path):
    proc = run("compile", str(stripe))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (GOLDEN / "stripe.rego").read_text()
    assert proc.stderr == ""


def test_compile_to_a_directory(stripe: Path, tmp_path: Path):
    out = tmp_path / "rego-out" / "nested"
    proc = run("compile", str(stripe), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"wrote {out / 'stripe.rego'}\n"
    assert (out / "stripe.rego").read_text() == (GOLDEN / "stripe.rego").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["stripe.rego"]


def test_compile_check_fresh_then_stale(stripe: Path, tmp_path: Path):
    out = tmp_path / "compiled"
    assert run("compile", str(stripe), "-o", str(out)).returncode == 0
    proc = run("compile", "--check", str(stripe), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1 compiled policy is up to date\n"
    before = (out / "stripe.rego").read_text()
    stripe.write_text(stripe.read_text().replace("value: 50000", "value: 40000"))
    proc = run("compile", "--check", str(stripe), "-o", str(out))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"{out / 'stripe.rego'}: stale" in proc.stderr
    assert (out / "stripe.rego").read_text() == before  # --check writes nothing


def test_compile_check_missing_output_is_stale(stripe: Path, tmp_path: Path):
    proc = run("compile", "--check", str(stripe), "-o", str(tmp_path / "empty"))
    assert proc.returncode == 1
    assert "stale" in proc.stderr


def test_compile_check_needs_an_output_directory(stripe: Path):
    proc = run("compile", "--check", str(stripe))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "--check needs -o DIR" in proc.stderr


def test_compile_invalid_policy_writes_nothing(broken: Path, tmp_path: Path):
    out = tmp_path / "out"
    proc = run("compile", str(broken), "-o", str(out))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"{broken}:1:1: error:" in proc.stderr
    assert not out.exists()


def test_compile_two_policies_with_the_same_file_name(stripe: Path, tmp_path: Path):
    other = tmp_path / "other" / "stripe.yaml"
    other.parent.mkdir()
    other.write_text("tools:\n  t:\n    rules: []\n")
    proc = run("compile", str(stripe), str(other), "-o", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "same file name" in proc.stderr


# --- eval ---------------------------------------------------------------------------------------------


def eval_json(proc: subprocess.CompletedProcess[str]) -> dict:
    """The one JSON object eval prints: stdout must hold it and nothing else."""
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def test_eval_allowed_call(stripe: Path):
    proc = run("eval", "-c", str(stripe), "--tool", "create_charge", "--args", '{"amount": 1200, "currency": "usd"}')
    assert proc.returncode == 0, proc.stderr
    out = eval_json(proc)
    assert set(out) == {"allow", "action", "reasons", "charges"}
    assert out["allow"] is True
    assert out["action"] == "allow"
    assert out["reasons"] == []
    assert [c["counter"] for c in out["charges"]] == [
        "create_charge.daily_spend",
        "create_charge._rate_minute",
        "_global._rate_minute",
    ]
    assert out["charges"][0] == {
        "counter": "create_charge.daily_spend",
        "scope": "global",
        "cost": 1200,
        "capacity": 1000000,
        "window": 86400,
        "strict": False,
        "rule": "create_charge/daily_spend",
        "message": "Daily spend limit reached",
    }


def test_eval_denied_call(stripe: Path):
    proc = run("eval", "-c", str(stripe), "--tool", "create_charge", "--args", '{"amount": 99999, "currency": "usd"}')
    assert proc.returncode == 1
    out = eval_json(proc)
    assert out["allow"] is False
    assert out["action"] == "deny"
    assert out["charges"] == []
    assert out["reasons"] == [
        {
            "rule": "create_charge/max_amount",
            "message": "Charges over $500.00 need a human",
            "detail": ["args.amount lte 50000 does not hold"],
        }
    ]


def test_eval_hidden_tool_and_no_args(stripe: Path):
    proc = run("eval", "-c", str(stripe), "--tool", "delete_customer")
    assert proc.returncode == 1
    assert eval_json(proc)["reasons"][0]["rule"] == "hide"


def test_eval_args_from_a_file_and_pretty(stripe: Path, tmp_path: Path):
    args = tmp_path / "args.json"
    args.write_text('{"amount": 10, "currency": "eur"}')
    proc = run("eval", "-c", str(stripe), "--tool", "create_charge", "--args", f"@{args}", "--pretty")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["allow"] is True
    assert proc.stdout.startswith("{\n  ")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--args", "{not json"], "--args is not valid JSON"),
        (["--args", "[1, 2]"], "--args must be a JSON object"),
        (["--args", "@/nonexistent/args.json"], "error:"),
        (["--schema", "nope"], "--schema is not valid JSON"),
        (["--schema", "[]"], "--schema must be a JSON object"),
    ],
)
def test_eval_bad_json_exits_2(stripe: Path, extra: list[str], message: str):
    proc = run("eval", "-c", str(stripe), "--tool", "create_charge", *extra)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert message in proc.stderr


def test_eval_broken_policy_exits_2(broken: Path):
    proc = run("eval", "-c", str(broken), "--tool", "t", "--args", "{}")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"{broken}:1:1: error: unknown key 'defualt'" in proc.stderr
    assert proc.stderr.splitlines()[-1] == "2 errors"


def test_eval_policy_the_engine_cannot_build_keeps_stdout_clean(tmp_path: Path):
    # Whatever the cause, regopy's own error report must not reach stdout.
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "tools:\n  t:\n    rules:\n      - conditions:\n          - {path: args.x, op: lte, value: 0.0000001}\n"
    )
    proc = run("eval", "-c", str(path), "--tool", "t", "--args", '{"x": 0}')
    assert proc.returncode in (0, 2), proc.stderr
    if proc.returncode == 2:
        assert proc.stdout == ""
    else:
        assert eval_json(proc)["allow"] is True


LOOKING_GLASS_SCHEMA = '{"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}'


def test_eval_schema_is_used_by_validate():
    policy = str(GOLDEN / "looking_glass.yaml")
    proc = run("eval", "-c", policy, "--tool", "session_start", "--args", '{"url": "https://x"}',
               "--schema", LOOKING_GLASS_SCHEMA)
    assert proc.returncode == 0, proc.stderr
    out = eval_json(proc)
    assert out["charges"][0]["scope"] == "session"
    assert out["charges"][0]["capacity"] == 10
    assert out["charges"][0]["window"] == 60

    proc = run("eval", "-c", policy, "--tool", "session_start", "--args", "{}", "--schema", LOOKING_GLASS_SCHEMA)
    assert proc.returncode == 1
    (reason,) = eval_json(proc)["reasons"]
    assert reason["rule"] == "session_start/rules[0]"
    assert reason["detail"] == ['missing required argument "url"']

    proc = run("eval", "-c", policy, "--tool", "session_start", "--args", '{"url": "https://x"}')
    assert proc.returncode == 1
    (reason,) = eval_json(proc)["reasons"]
    assert "inputSchema is unknown" in reason["message"]


def test_eval_principal_and_server_name_are_accepted(stripe: Path):
    proc = run("eval", "-c", str(stripe), "--tool", "list_customers", "--principal", "alice",
               "--server-name", "stripe")
    assert proc.returncode == 0, proc.stderr
    assert eval_json(proc)["allow"] is True


def test_eval_stdout_is_only_the_json_even_with_odd_input(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text(dedent(
        """
        tools:
          t:
            rules:
              - name: r
                conditions:
                  - {path: args.s, op: regex, value: "^[a-z]+$"}
        """
    ))
    args = tmp_path / "big.json"
    args.write_text(json.dumps({"s": "a" * 2_000_000}))  # over the 1 MiB regex bound
    proc = run("eval", "-c", str(path), "--tool", "t", "--args", f"@{args}")
    assert proc.returncode == 1
    assert eval_json(proc)["reasons"][0]["rule"] == "t/r"
