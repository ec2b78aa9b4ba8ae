"""Intercept as a drop-in: its root command and flag names, translated to regoguard's own, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import StdioServerParameters
from mcp.client import Client

from proxy_harness import READ_TIMEOUT, TIMEOUT, python_server
from regoguard.cli.intercept import InterceptUsage, translate

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, expected", [
    (["-c", "p.yaml", "--", "npx", "srv"], ["run", "-c", "p.yaml", "--", "npx", "srv"]),
    (["-c", "p.yaml", "--state-dir", "/var/lib/x", "--state-fail-mode", "open", "--", "srv", "--port", "9"],
     ["run", "-c", "p.yaml", "--state", "/var/lib/x/state.db", "--fail-open", "--", "srv", "--port", "9"]),
    (["--config=p.yaml", "--state-dsn", "redis://127.0.0.1:6379/0", "--state-prefix", "t:", "--upstream", "http://h/mcp",
      "--header", "A: b"],
     ["run", "--config=p.yaml", "--state-prefix", "t:", "--upstream", "http://h/mcp", "--header", "A: b", "--state",
      "redis://127.0.0.1:6379/0"]),
    (["-c", "p.yaml", "--transport", "http", "--bind", "0.0.0.0", "--port=8080", "--upstream", "http://h/mcp"],
     ["serve", "-c", "p.yaml", "--upstream", "http://h/mcp", "--listen", "0.0.0.0:8080"]),
    (["-c", "p.yaml", "--transport", "sse", "--", "srv"], ["serve", "-c", "p.yaml", "--listen", "127.0.0.1:0", "--",
                                                          "srv"]),
])
def test_intercept_flags_become_regoguards(argv: list[str], expected: list[str]) -> None:
    assert translate(argv) == expected


@pytest.mark.parametrize("argv, problem", [
    (["-c", "p", "--state-fail-mode", "maybe"], "open or closed"),
    (["-c", "p", "--transport", "ws"], "stdio, http or sse"),
    (["-c", "p", "--port", "80", "--", "x"], "apply to --transport http"),
    (["-c", "p", "--state-dir", "a", "--state-dsn", "b"], "not both"),
    (["-c", "p", "--bind"], "needs a value"),
])
def test_bad_intercept_flags_are_usage_errors(argv: list[str], problem: str) -> None:
    with pytest.raises(InterceptUsage, match=problem):
        translate(argv)


async def test_the_root_command_runs_the_proxy(tmp_path: Path) -> None:
    """`regoguard -c POLICY --state-dir DIR -- SERVER`, as an Intercept client config says it."""
    argv = [sys.executable, "-m", "regoguard", "-c", str(ROOT / "policies" / "looking-glass.yaml"),
            "--state-dir", str(tmp_path), "--", *python_server("looking_glass")]
    with anyio.fail_after(TIMEOUT):
        async with Client(StdioServerParameters(command=argv[0], args=argv[1:]), mode="legacy",
                          read_timeout_seconds=READ_TIMEOUT) as client:
            assert client.server_info is not None and client.server_info.name == "looking-glass"
            assert (await client.list_tools()).tools
    assert (tmp_path / "state.db").is_file()


def test_validate_is_check() -> None:
    ok = subprocess.run([sys.executable, "-m", "regoguard", "validate", "-c", str(ROOT / "policies" / "payments.yaml")],
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and "ok" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "regoguard", "-c", "p.yaml", "--transport", "ws"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "stdio, http or sse" in bad.stderr
