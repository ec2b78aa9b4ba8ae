"""The pre-commit hooks in .pre-commit-hooks.yaml, run by pre-commit itself in a scratch git repository.

pre-commit installs a ``language: python`` hook from its repository with pip, which needs the network;
these tests copy each hook's definition into a ``repo: local`` config as ``language: system`` instead, so
pre-commit runs the same entry, args and file patterns against the regoguard installed here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / ".pre-commit-hooks.yaml"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

GOOD = """\
default: deny
tools:
  read_file:
    rules:
      - name: small reads
        conditions:
          - path: args.length
            op: lte
            value: 4096
"""

TESTS = """\
policy: files.yaml
tests:
  - name: a small read is allowed
    call: {tool: read_file, args: {length: 100}}
    expect: allow
  - name: a big read is denied
    call: {tool: read_file, args: {length: 100000}}
    expect: {decision: deny, rule: read_file/small reads}
"""


def _hooks() -> list[dict[str, Any]]:
    hooks = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(hooks, list)
    return hooks


def _local_config(hook_ids: list[str]) -> str:
    hooks = []
    for hook in _hooks():
        if hook["id"] in hook_ids:
            hooks.append({**hook, "language": "system"})
    return yaml.safe_dump({"repos": [{"repo": "local", "hooks": hooks}]}, sort_keys=False)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, timeout=30)


def _pre_commit(repo: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PRE_COMMIT_HOME": str(tmp / "pre-commit-home"), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    return subprocess.run([str(BIN / "pre-commit"), "run", "--all-files", "--color", "never"], cwd=repo, env=env,
                          check=False, capture_output=True, text=True, timeout=120)


@pytest.fixture
def policy_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "policies").mkdir(parents=True)
    (repo / "policies" / "files.yaml").write_text(GOOD, encoding="utf-8")
    (repo / "notes.yaml").write_text("not: [a, policy\n", encoding="utf-8")  # outside policies/: not checked
    subprocess.run([str(BIN / "regoguard"), "compile", "policies/files.yaml", "-o", "compiled"], cwd=repo,
                   check=True, capture_output=True, timeout=60)
    (repo / "policies" / "files_test.yaml").write_text(TESTS, encoding="utf-8")
    (repo / ".pre-commit-config.yaml").write_text(
        _local_config(["regoguard-check", "regoguard-compile-check", "regoguard-test"]), encoding="utf-8")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    return repo


def test_the_manifest_is_valid_for_pre_commit() -> None:
    done = subprocess.run([str(BIN / "pre-commit"), "validate-manifest", str(MANIFEST)], check=False,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {h["id"] for h in _hooks()} == {"regoguard-check", "regoguard-compile-check", "regoguard-test"}


def test_hooks_pass_on_a_clean_policy_repository(policy_repo: Path, tmp_path: Path) -> None:
    done = _pre_commit(policy_repo, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "regoguard check" in done.stdout and "Passed" in done.stdout
    assert "regoguard test" in done.stdout


def test_a_failing_policy_test_fails_the_commit(policy_repo: Path, tmp_path: Path) -> None:
    path = policy_repo / "policies" / "files_test.yaml"
    path.write_text(TESTS.replace("length: 100}", "length: 5000}"), encoding="utf-8")
    _git(policy_repo, "add", "-A")
    done = _pre_commit(policy_repo, tmp_path)
    assert done.returncode == 1, done.stdout
    assert "FAIL policies/files_test.yaml::a small read is allowed" in done.stdout, done.stdout
    assert "1 passed, 1 failed" in done.stdout, done.stdout


def test_a_policy_typo_fails_the_commit_with_file_line_and_column(policy_repo: Path, tmp_path: Path) -> None:
    path = policy_repo / "policies" / "files.yaml"
    path.write_text(GOOD.replace("op: lte", "op: ltee"), encoding="utf-8")
    _git(policy_repo, "add", "-A")
    done = _pre_commit(policy_repo, tmp_path)
    assert done.returncode == 1, done.stdout
    assert "policies/files.yaml:8:17: error: op must be one of" in done.stdout, done.stdout
    assert "got 'ltee'" in done.stdout, done.stdout


def test_a_policy_changed_without_recompiling_fails_compile_check(policy_repo: Path, tmp_path: Path) -> None:
    path = policy_repo / "policies" / "files.yaml"
    path.write_text(GOOD.replace("4096", "8192"), encoding="utf-8")
    _git(policy_repo, "add", "-A")
    done = _pre_commit(policy_repo, tmp_path)
    assert done.returncode == 1, done.stdout
    assert "compiled/files.rego: stale" in done.stdout, done.stdout
    # regenerating fixes it
    subprocess.run([str(BIN / "regoguard"), "compile", "policies/files.yaml", "-o", "compiled"], cwd=policy_repo,
                   check=True, capture_output=True, timeout=60)
    _git(policy_repo, "add", "-A")
    done = _pre_commit(policy_repo, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_team_rego_module_fails_check(policy_repo: Path, tmp_path: Path) -> None:
    (policy_repo / "policies" / "rego").mkdir()
    (policy_repo / "policies" / "rego" / "team.rego").write_text(
        "package regoguard.custom\n\nimport rego.v1\n\ndeny contains \"x\" if {\n  input.tool.name == \n}\n",
        encoding="utf-8")
    path = policy_repo / "policies" / "files.yaml"
    path.write_text("rego: [rego]\n" + GOOD, encoding="utf-8")
    subprocess.run([str(BIN / "regoguard"), "compile", "policies/files.yaml", "-o", "compiled"], cwd=policy_repo,
                   check=True, capture_output=True, timeout=60)
    _git(policy_repo, "add", "-A")
    done = _pre_commit(policy_repo, tmp_path)
    assert done.returncode == 1, done.stdout
    assert "policies/rego/team.rego:6:19: error:" in done.stdout, done.stdout
