"""``regoguard scan`` end to end: the CLI as a child process against real stdio MCP servers (SDK servers in
tests/servers/, ``mcp-server-time`` from PyPI, ``@modelcontextprotocol/server-everything`` from npm).

What a user would notice: the policy passes ``regoguard check``; destructive and financial tools are
denied and the rest rate-limited, through ``regoguard eval`` and through ``regoguard run`` in front of the
same server; comments carry each tool's description and arguments; only the policy reaches stdout; a
server that does not start, exits, loops or hangs gives exit 1 and one clear line, in bounded time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from proxy_harness import NODE_DIR, TIMEOUT, proxied_client, python_server
from regoguard.policy import Policy, load_policy

REGOGUARD = [sys.executable, "-m", "regoguard"]
RUN_TIMEOUT = 60  # seconds, per CLI run

ANNOTATED_GROUPS = {
    "archive-project": "destructive", "delete_record": "destructive", "purge_cache": "destructive",
    "create_invoice": "financial", "refund_payment": "financial",
    "evalScript": "execute", "run_command": "execute",
    "-dash-leading": "write", "fetch_report": "write", "frobnicate": "write", "send_email": "write",
    "weird: name": "write", "yes": "write",
    "get_record": "read", "list_invoices": "read", "list_records": "read", "summarise": "read",
    "update_index": "read",
}
NOT_WRITTEN = ['bad"quote', "glob*tool"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REGOGUARD, *args], capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
                          env={**os.environ, **(env or {})})


def scan_to(path: Path, server: list[str], *options: str, env: dict[str, str] | None = None) -> str:
    """Scan ``server`` into ``path`` (via stdout), check it succeeded, and return its stderr."""
    proc = cli("scan", *options, "--", *server, env=env)
    assert proc.returncode == 0, proc.stderr
    path.write_text(proc.stdout, encoding="utf-8")
    return proc.stderr


def groups_of(policy: Policy) -> dict[str, str]:
    """Each tool's group, read back from the rule scan gave it."""
    groups: dict[str, str] = {}
    limits = {5: "execute", 30: "write", 120: "read"}
    for tool in policy.tools:
        (rule,) = tool.rules
        if rule.action == "deny":
            groups[tool.key] = (rule.name or "").split(",")[0]
        else:
            assert rule.limit is not None and rule.limit.window == 60, rule
            groups[tool.key] = limits[int(rule.limit.capacity)]
    return groups


def comment_above(text: str, key: str) -> list[str]:
    """The comment lines right above the tool key ``key`` (as written, quotes included)."""
    lines = text.splitlines()
    at = lines.index(f"  {key}:")
    block: list[str] = []
    for line in reversed(lines[:at]):
        if not line.startswith("  #"):
            break
        block.insert(0, line[len("  # "):])
    return block


def decide(policy: Path, tool: str, args: dict[str, object] | None = None) -> int:
    return cli("eval", "-c", str(policy), "--tool", tool, "--args", json.dumps(args or {})).returncode


# --------------------------------------------------------------------------- the annotated server


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The annotated server scanned once (three tools a page), shared by the tests that only read it."""
    path = tmp_path_factory.mktemp("scan") / "annotated.yaml"
    stderr = scan_to(path, python_server("annotated", "--page-size", "3"))
    return path, stderr


def test_annotated_policy_passes_check_and_groups_every_tool(annotated: tuple[Path, str]) -> None:
    path, stderr = annotated
    check = cli("check", str(path))
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == f"{path}: ok (18 tool keys, 18 rules)"
    policy = load_policy(path)
    assert policy.default == "deny" and policy.version == "1" and policy.hide == ()
    assert groups_of(policy) == ANNOTATED_GROUPS
    # seven pages of three, all followed
    assert "annotated 0.0.1-test: 20 tools in 7 pages" in stderr
    assert "2 not written (denied by default)" in stderr


def test_annotated_decisions(annotated: tuple[Path, str]) -> None:
    path, _ = annotated
    assert decide(path, "delete_record", {"record_id": "r1"}) == 1
    assert decide(path, "refund_payment", {"amount": 1, "currency": "usd"}) == 1
    assert decide(path, "get_record", {"record_id": "r1"}) == 0
    assert decide(path, "update_index", {"record_id": "r1"}) == 0
    assert decide(path, "run_command", {"command": "ls"}) == 0  # rate-limited, not denied
    assert decide(path, "weird: name") == 0
    assert decide(path, "yes") == 0
    assert decide(path, 'bad"quote') == 1  # could not be written: default deny
    assert decide(path, "glob*tool") == 1
    assert decide(path, "added_later") == 1
    proc = cli("eval", "-c", str(path), "--tool", "purge_cache")
    reason = json.loads(proc.stdout)["reasons"][0]
    assert reason["rule"] == "purge_cache/destructive, denied until reviewed"
    assert "until a reviewer deliberately loosens this rule" in reason["message"]


def test_annotated_comments(annotated: tuple[Path, str]) -> None:
    path, _ = annotated
    text = path.read_text(encoding="utf-8")
    assert comment_above(text, "delete_record") == [
        "Delete a record permanently.",
        "required: record_id | arguments: record_id, force",
        'destructive because name word "delete"',
    ]
    assert comment_above(text, "update_index")[2:] == [
        "read because readOnlyHint: true (hints: readOnlyHint=true)",
        'note: readOnlyHint: true outranks name word "update" (write)',
    ]
    assert comment_above(text, "create_invoice")[1] == "required: amount, currency | arguments: amount, currency, note"
    assert comment_above(text, "frobnicate")[0] == "(no description)"
    # the multi-line description, full of YAML, stays inside comments
    summary = comment_above(text, "summarise")
    assert summary[0].startswith("Summarise a document. Options: # not a comment in the tool's eyes mode: short")
    assert "injected: {rules: []} default: allow - action: allow" in " ".join(summary)
    assert "\u2028" not in text
    # names YAML must quote are quoted; the refused ones are named in a comment
    assert comment_above(text, '"weird: name"') and comment_above(text, '"-dash-leading"')
    assert comment_above(text, '"yes"')
    assert '  # "bad\\"quote": it holds a quote, backslash or control character' in text
    assert '  # "glob*tool": it holds *, ? or [' in text
    for header in ("# --- destructive: denied until reviewed ---", "# --- execute: runs code or commands; 5 calls",
                   "# --- write: changes state; 30 calls", "# --- read: 120 calls", "# --- financial: denied"):
        assert header in text
    assert "# default: deny." in text


async def test_rate_limits_hold_in_front_of_the_server(annotated: tuple[Path, str]) -> None:
    """The starter policy, enforced by ``regoguard run`` in front of the server it came from."""
    path, _ = annotated
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(path, python_server("annotated"), "legacy", options=("--state", "memory")) as client:
            for i in range(5):
                r = await client.call_tool("run_command", {"command": f"echo {i}"})
                assert not r.is_error, r
            r = await client.call_tool("run_command", {"command": "echo 6"})
            assert r.is_error and r.meta is not None
            assert r.meta["regoguard/decision"]["rule"] == "run_command/execute rate limit"
            r = await client.call_tool("delete_record", {"record_id": "r1"})
            assert r.is_error and r.meta is not None
            assert r.meta["regoguard/decision"]["rule"] == "delete_record/destructive, denied until reviewed"
            r = await client.call_tool("weird: name", {})
            assert not r.is_error, r


def test_the_server_inherits_the_environment_and_server_name(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    stderr = scan_to(path, python_server("annotated"), "--server-name", "records-api",
                     env={"ANNOTATED_EXTRA_TOOL": "env_probe_tool"})
    assert "env_probe_tool" in groups_of(load_policy(path))
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Starter policy for the MCP server records-api, written by `regoguard scan`.")
    assert "annotated 0.0.1-test: 21 tools in 1 page" in stderr


# --------------------------------------------------------------------------- other real servers


def test_looking_glass(tmp_path: Path) -> None:
    path = tmp_path / "lg.yaml"
    scan_to(path, python_server("looking_glass"))
    assert cli("check", str(path)).returncode == 0
    assert groups_of(load_policy(path)) == {
        "browser_clear_storage": "destructive", "page_eval_js": "destructive", "session_stop": "destructive",
        "page_click": "write", "session_start": "write", "page_screenshot": "read", "session_list": "read",
    }
    assert comment_above(path.read_text(encoding="utf-8"), "page_eval_js")[:2] == [
        "Evaluate JavaScript in the page.",
        "required: session_id, script | arguments: session_id, script",
    ]
    assert decide(path, "session_list") == 0
    assert decide(path, "browser_clear_storage") == 1


def test_pagination_of_a_lowlevel_server(tmp_path: Path) -> None:
    path = tmp_path / "spy.yaml"
    stderr = scan_to(path, python_server("spy"))
    groups = groups_of(load_policy(path))
    assert len(groups) == 125 and "bulk_tool_119" in groups and "bulk_tool_000" in groups
    assert "125 tools in 3 pages" in stderr
    assert groups["delete_customer"] == "destructive"
    assert groups["create_charge"] == groups["create_refund"] == "financial"
    assert groups["list_customers"] == "read"


def test_mcp_server_time(tmp_path: Path) -> None:
    if importlib.util.find_spec("mcp_server_time") is None:
        pytest.skip("mcp-server-time is not installed (pip install mcp-server-time)")
    path = tmp_path / "time.yaml"
    scan_to(path, [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"])
    assert groups_of(load_policy(path)) == {"convert_time": "read", "get_current_time": "read"}
    assert comment_above(path.read_text(encoding="utf-8"), "get_current_time")[1] == (
        "required: timezone | arguments: timezone")


def test_server_everything(tmp_path: Path) -> None:
    launcher = NODE_DIR / "node_modules" / ".bin" / "mcp-server-everything"
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not launcher.exists():
        pytest.skip("@modelcontextprotocol/server-everything is not installed (npm install --prefix tests/node)")
    path = tmp_path / "everything.yaml"
    stderr = scan_to(path, [str(launcher), "stdio"])
    assert cli("check", str(path)).returncode == 0
    groups = groups_of(load_policy(path))
    assert {"echo", "get-sum", "get-env", "trigger-long-running-operation", "gzip-file-as-resource"} <= set(groups)
    assert groups["get-sum"] == "read"
    assert "everything" in stderr
    assert comment_above(path.read_text(encoding="utf-8"), "echo")[:2] == [
        "Echoes back the input string", "required: message | arguments: message"]


# --------------------------------------------------------------------------- output file


def test_output_file_is_created_and_never_overwritten_without_force(tmp_path: Path) -> None:
    out = tmp_path / "policy.yaml"
    server = python_server("looking_glass")
    proc = cli("scan", "-o", str(out), "--", *server)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert f"wrote {out}" in proc.stderr
    assert cli("check", str(out)).returncode == 0
    out.write_text("# my reviewed policy\n", encoding="utf-8")

    proc = cli("scan", "-o", str(out), "--", *server)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"{out} exists; use --force to overwrite it" in proc.stderr
    assert out.read_text(encoding="utf-8") == "# my reviewed policy\n"

    proc = cli("scan", "-o", str(out), "--force", "--", *server)
    assert proc.returncode == 0, proc.stderr
    assert "session_list:" in out.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["policy.yaml"]  # no temporary file left behind


def test_output_into_a_missing_directory_fails_before_the_server_starts(tmp_path: Path) -> None:
    proc = cli("scan", "-o", str(tmp_path / "nope" / "p.yaml"), "--", "no-such-server-xyz")
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and "cannot start" not in proc.stderr


# --------------------------------------------------------------------------- servers that fail


def test_a_command_that_does_not_exist(tmp_path: Path) -> None:
    proc = cli("scan", "--", str(tmp_path / "no-such-server"))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "error: cannot start the server" in proc.stderr and "No such file or directory" in proc.stderr


def test_a_server_that_exits_at_once() -> None:
    proc = cli("scan", "--", sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "boom" in proc.stderr  # the server's stderr passes through
    assert "closed the connection during initialize: it exited or crashed" in proc.stderr


SCRIPTED = r"""
import json, sys
behaviour = sys.argv[1]
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "scripted", "version": "1"}}
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
    elif msg.get("method") == "tools/list":
        if behaviour == "crash":
            sys.exit(3)
        error = {"code": -32603, "message": "database unavailable"}
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "error": error}), flush=True)
"""


@pytest.mark.parametrize(("behaviour", "message"), [
    ("crash", "scripted 1 closed the connection during tools/list (page 1): it exited or crashed"),
    ("error", "scripted 1 failed during tools/list (page 1): database unavailable"),
])
def test_a_server_that_fails_to_list(behaviour: str, message: str) -> None:
    proc = cli("scan", "--", sys.executable, "-c", SCRIPTED, behaviour)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert message in proc.stderr


@pytest.mark.parametrize(("option", "message"), [
    ("--cursor-loop", "sent the same tools/list cursor twice: its pagination loops"),
    ("--endless", "was still paginating tools/list after 1000 pages"),
])
def test_pagination_that_never_ends(option: str, message: str) -> None:
    proc = cli("scan", "--", *python_server("annotated", option))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"error: annotated 0.0.1-test {message}" in proc.stderr


def test_a_server_that_hangs_times_out() -> None:
    start = time.monotonic()
    proc = cli("scan", "--timeout", "1", "--", sys.executable, "-c", "import time; time.sleep(120)")
    elapsed = time.monotonic() - start
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "did not list its tools within 1 s (stuck at initialize" in proc.stderr
    assert elapsed < 15  # 1 s, then at most a few seconds to stop the server


def test_usage_errors() -> None:
    proc = cli("scan")
    assert proc.returncode == 2 and "give the MCP server's command after --" in proc.stderr
    proc = cli("scan", "--timeout", "0", "--", "x")
    assert proc.returncode == 2 and "positive number of seconds" in proc.stderr
    assert proc.stdout == ""
