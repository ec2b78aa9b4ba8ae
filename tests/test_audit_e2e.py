"""End to end: the decision log, masking and dry run through ``regoguard run``.

``regoguard run --decision-log <tmp>/d.jsonl --state memory -c POLICY -- python tests/servers/spy.py``,
driven by the SDK's real client (or raw pipes for what no SDK sends). The spy records every call that
reaches it (SPY_LOG), which is how these tests tell "blocked" from "forwarded".
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolResult, TextContent

from proxy_harness import (
    TIMEOUT,
    RawProxy,
    denial_of,
    error_of,
    proxied_client,
    python_server,
    read_jsonl,
    request,
    spy_calls,
    tools_call,
    write_policy,
)
from regoguard import __version__
from regoguard.audit.summary import read_events

ROOT = Path(__file__).resolve().parents[1]
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

POLICY = """\
default: allow
hide:
  - bulk_tool_010
tools:
  delete_customer:
    rules:
      - name: no_deletes
        action: deny
        on_deny: Deleting customers needs a human.
  echo:
    rules:
      - name: two_per_minute
        rate_limit: "2/minute"
        on_deny: echo is rate limited
audit:
  erase: [/card/number]
"""

# Planted secrets: none of these strings may appear anywhere in a decision log file.
PASSWORD = "pw-Zq81-never-log"
API_KEY = "ak-Xv42-never-log"
BEARER = "tok-Lm93-never-log"
CARD = "4111-Qw55-never-log"
SECRETS = (PASSWORD, API_KEY, BEARER, CARD)


def secret_args(text: str = "hello") -> dict[str, Any]:
    return {
        "text": text,
        "customer_id": "cus_001",
        "user": {"name": "ada", "password": PASSWORD},
        "config": [{"service": "billing", "api_key": API_KEY}],
        "request": {"headers": {"Authorization": f"Bearer {BEARER}", "Accept": "application/json"}},
        "card": {"number": CARD, "brand": "visa"},
    }


SECRET_ERASED = ["/input/tool/arguments/card/number"]
SECRET_MASKED = [
    "/input/tool/arguments/config/0/api_key",
    "/input/tool/arguments/request/headers/Authorization",
    "/input/tool/arguments/user/password",
]


class Paths:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.dlog = tmp / "d.jsonl"
        self.spy = tmp / "spy.jsonl"

    def env(self) -> dict[str, str]:
        return {"SPY_LOG": str(self.spy)}

    def events(self) -> list[dict[str, Any]]:
        return list(read_events(self.dlog))

    def client(self, policy: Path, *options: str, log: str | None = None, mode: str = "legacy") -> Client:
        opts = ["--decision-log", log or str(self.dlog), "--state", "memory", *options]
        return proxied_client(policy, python_server("spy"), mode, env=self.env(), options=opts)

    def raw(self, policy: Path, *options: str, log: str | None = None, server: str = "spy") -> Any:
        opts = ["--decision-log", log or str(self.dlog), "--state", "memory", *options]
        return RawProxy.start(policy, python_server(server), options=opts, env=self.env())


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path)


def text_of(result: CallToolResult) -> str:
    assert result.content, result
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


def denial(result: CallToolResult) -> dict[str, Any] | None:
    """The ``_meta["regoguard/decision"]`` of a proxy denial, or None if the server answered."""
    meta = result.meta or {}
    decision = meta.get("regoguard/decision")
    if decision is not None:
        assert result.is_error is True and text_of(result).startswith("[regoguard] "), result
    return decision


def regoguard_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "regoguard", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=ROOT, check=False)


def assert_no_secrets(path: Path) -> None:
    files = [path, *path.parent.glob(path.name + ".*")]
    for file in files:
        text = file.read_text(encoding="utf-8")
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked into {file.name}"


# -- one event per call, with the right outcome ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_one_event_per_call_with_its_outcome(paths: Paths, mode: str) -> None:
    policy = write_policy(paths.tmp, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with paths.client(policy, mode=mode) as c:
            allowed = await c.call_tool("list_customers", {})
            assert denial(allowed) is None and not allowed.is_error

            denied = denial(await c.call_tool("delete_customer", {"customer_id": "cus_001"}))
            assert denied is not None and denied["rule"] == "delete_customer/no_deletes"

            hidden = denial(await c.call_tool("bulk_tool_010", {"x": "1"}))
            assert hidden is not None and hidden["rule"] == "hide"

            for i in range(2):
                r = await c.call_tool("echo", {"text": f"e{i}"})
                assert denial(r) is None and text_of(r) == f"e{i}"
            limited = denial(await c.call_tool("echo", {"text": "e2"}))
            assert limited is not None and limited["rule"] == "echo/two_per_minute"

            with pytest.raises(MCPError) as excinfo:
                await c.call_tool("ghost_tool", {"x": 1})
            assert excinfo.value.error.code == INVALID_PARAMS

    assert [tool for tool, _ in spy_calls(paths.spy)] == ["list_customers", "echo", "echo", "ghost_tool"]
    events = paths.events()
    assert [(e["tool"], e["outcome"]) for e in events] == [
        ("list_customers", "allowed"),
        ("delete_customer", "denied"),
        ("bulk_tool_010", "denied"),
        ("echo", "allowed"),
        ("echo", "allowed"),
        ("echo", "denied"),
        ("ghost_tool", "upstream_error"),
    ]
    # the id a denial carries is the id in the log
    by_id = {e["decision_id"]: e for e in events}
    assert len(by_id) == len(events)
    for meta in (denied, hidden, limited):
        event = by_id[meta["decision_id"]]
        assert event["rule"] == meta["rule"] and event["reason"] == meta["reason"]
        assert event["result"]["allow"] is False and event["result"]["reasons"][0]["rule"] == meta["rule"]

    for e in events:
        assert UUID_RE.match(e["decision_id"])
        assert RFC3339_UTC.match(e["timestamp"])
        assert e["path"] == "regoguard/lib/decision"
        assert e["mode"] == "enforce"
        assert e["labels"]["server"] == "spy" and e["labels"]["version"] == __version__
        assert UUID_RE.match(e["labels"]["instance"])
        assert isinstance(e["metrics"]["timer_regoguard_eval_ns"], int)
        assert set(e["result"]) >= {"allow", "action", "reasons", "charges"}
        assert e["input"]["tool"]["name"] == e["tool"]
        assert e["input"]["server"] == {"name": "spy"}
    assert len({e["revision"] for e in events}) == 1 and events[0]["revision"]
    assert len({e["labels"]["instance"] for e in events}) == 1
    assert len({e["input"]["session"]["id"] for e in events}) == 1

    assert events[0]["result"]["allow"] is True and "rule" not in events[0]
    assert events[1]["reason"] == "Deleting customers needs a human."
    echo_ok, echo_limited = events[3], events[5]
    assert echo_ok["result"]["charges"] and echo_ok["result"]["charges"][0]["rule"] == "echo/two_per_minute"
    assert echo_limited["result"]["retry_after"] > 0
    assert "echo is rate limited" in echo_limited["reason"]
    upstream = events[6]
    assert upstream["upstream_error"]["code"] == INVALID_PARAMS
    assert "Unknown tool" in upstream["upstream_error"]["message"]
    assert upstream["result"]["allow"] is True

    # regoguard log
    shown = regoguard_cli("log", str(paths.dlog))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("7 calls in 1 file(s)")
    assert "delete_customer/no_deletes" in shown.stdout and "echo/two_per_minute" in shown.stdout
    as_json = regoguard_cli("log", str(paths.dlog), "--json", "--recent", "2")
    assert as_json.returncode == 0, as_json.stderr
    summary = json.loads(as_json.stdout)
    assert summary["calls"] == 7
    assert summary["outcomes"] == {"denied": 3, "allowed": 3, "upstream_error": 1}
    assert summary["denials_by_rule"] == {"delete_customer/no_deletes": 1, "hide": 1, "echo/two_per_minute": 1}
    assert summary["denials_by_tool"] == {"delete_customer": 1, "bulk_tool_010": 1, "echo": 1}
    assert [r["decision_id"] for r in summary["recent_denials"]] == [limited["decision_id"], hidden["decision_id"]]


def test_log_command_on_a_missing_file(tmp_path: Path) -> None:
    proc = regoguard_cli("log", str(tmp_path / "nope.jsonl"))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "no decision log" in proc.stderr
    assert regoguard_cli("log", str(tmp_path / "nope.jsonl"), "--json").returncode == 1


async def test_invalid_params_and_calls_without_id_raw(paths: Paths) -> None:
    policy = write_policy(paths.tmp, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with paths.raw(policy) as p:
            await p.initialize()
            answer = await p.call(tools_call(1, "echo", [PASSWORD]))
            bad_args = error_of(answer, INVALID_PARAMS)["data"]["regoguard/decision"]
            answer = await p.call(request(2, "tools/call", {"arguments": {"password": PASSWORD}}))
            no_name = error_of(answer, INVALID_PARAMS)["data"]["regoguard/decision"]
            await p.send({"jsonrpc": "2.0", "method": "tools/call",
                          "params": {"name": "echo", "arguments": {"password": PASSWORD}}})
            await p.settle()
    assert spy_calls(paths.spy) == []
    events = paths.events()
    assert [(e["outcome"], e["rule"]) for e in events] == [
        ("denied", "proxy/invalid-params"), ("denied", "proxy/invalid-params"), ("denied", "proxy/no-id")]
    assert [e["decision_id"] for e in events[:2]] == [bad_args["decision_id"], no_name["decision_id"]]
    assert events[0]["tool"] == "echo" and events[1]["tool"] is None
    assert bad_args["rule"] == "proxy/invalid-params"
    assert_no_secrets(paths.dlog)


# -- secrets -------------------------------------------------------------------------------------------------------


async def test_planted_secrets_never_reach_the_log(paths: Paths) -> None:
    policy = write_policy(paths.tmp, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with paths.client(policy) as c:
            r = await c.call_tool("echo", secret_args("first"))  # allowed
            assert denial(r) is None and text_of(r) == "first"
            assert denial(await c.call_tool("delete_customer", secret_args())) is not None  # denied
            assert denial(await c.call_tool("bulk_tool_010", secret_args())) is not None  # hidden
            r = await c.call_tool("list_customers", secret_args())
            assert denial(r) is None
            with pytest.raises(MCPError):
                await c.call_tool("ghost_tool", secret_args())  # upstream error
            r = await c.call_tool("create_charge", {**secret_args(), "amount": 5})  # isError result
            assert r.is_error and denial(r) is None
    # masking is for the log only: the server got the call as sent
    received = dict(spy_calls(paths.spy))
    assert received["echo"]["user"]["password"] == PASSWORD
    assert received["echo"]["card"]["number"] == CARD

    assert_no_secrets(paths.dlog)
    events = paths.events()
    assert [e["outcome"] for e in events] == ["allowed", "denied", "denied", "allowed", "upstream_error",
                                              "upstream_error"]
    for e in events:
        assert e["erased"] == SECRET_ERASED, e
        assert e["masked"] == SECRET_MASKED, e
        args = e["input"]["tool"]["arguments"]
        assert args["card"] == {"brand": "visa"}
        assert args["user"] == {"name": "ada", "password": "***"}
        assert args["request"]["headers"] == {"Authorization": "***", "Accept": "application/json"}
        assert args["text"] in ("first", "hello")
    assert events[-1]["upstream_error"] == {"isError": True}


async def test_hash_arguments_policy_logs_no_argument_at_all(paths: Paths) -> None:
    policy = write_policy(paths.tmp, POLICY.replace("  erase: [/card/number]", "  hash_arguments: true"))
    with anyio.fail_after(TIMEOUT):
        async with paths.client(policy) as c:
            assert denial(await c.call_tool("echo", secret_args())) is None
            assert denial(await c.call_tool("delete_customer", secret_args())) is not None
    assert_no_secrets(paths.dlog)
    events = paths.events()
    assert len(events) == 2
    hashes = [e["input"]["tool"]["arguments"] for e in events]
    assert all(set(h) == {"sha256"} for h in hashes)
    assert all(e["masked"] == ["/input/tool/arguments"] and "erased" not in e for e in events)
    text = paths.dlog.read_text()
    assert "cus_001" not in text and "billing" not in text


# -- dry run ---------------------------------------------------------------------------------------------------------

BLOCKED = {  # what enforce mode blocks in SCENARIO: index -> rule
    0: "delete_customer/no_deletes",
    1: "hide",
    4: "echo/two_per_minute",
}
SCENARIO: list[tuple[str, dict[str, Any]]] = [
    ("delete_customer", {"customer_id": "cus_001", "password": PASSWORD}),
    ("bulk_tool_010", {"x": "hidden", "api_key": API_KEY}),
    ("echo", {"text": "a"}),
    ("echo", {"text": "b"}),
    ("echo", {"text": "c", "card": {"number": CARD}}),
    ("list_customers", {}),
]


@pytest.mark.parametrize("how", ["enforce", "flag", "policy"])
async def test_dry_run_forwards_what_enforce_blocks(paths: Paths, how: str) -> None:
    text = POLICY if how != "policy" else "mode: dry_run\n" + POLICY
    policy = write_policy(paths.tmp, text)
    options = ["--dry-run"] if how == "flag" else []
    dry = how != "enforce"
    results: list[CallToolResult] = []
    with anyio.fail_after(TIMEOUT):
        async with paths.client(policy, *options) as c:
            listed = [t.name for t in (await c.list_tools()).tools]
            assert ("bulk_tool_010" in listed) is dry  # nothing is hidden in a dry run
            for tool, args in SCENARIO:
                results.append(await c.call_tool(tool, args))

    forwarded = [i for i in range(len(SCENARIO)) if dry or i not in BLOCKED]
    assert spy_calls(paths.spy) == [SCENARIO[i] for i in forwarded]
    for i, r in enumerate(results):
        meta = denial(r)
        if i in BLOCKED and not dry:
            assert meta is not None and meta["rule"] == BLOCKED[i]
        else:
            assert meta is None, (i, r)  # the server's own answer
    if dry:
        assert text_of(results[0]) == "deleted customer cus_001"
        assert text_of(results[4]) == "c"  # the 3rd call over the 2/minute limit still went through

    events = paths.events()
    assert [e["tool"] for e in events] == [tool for tool, _ in SCENARIO]
    blocked_outcome = "would_deny" if dry else "denied"
    assert [e["outcome"] for e in events] == [blocked_outcome if i in BLOCKED else "allowed"
                                              for i in range(len(SCENARIO))]
    assert {e["mode"] for e in events} == {"dry_run" if dry else "enforce"}
    for i, rule in BLOCKED.items():
        assert events[i]["rule"] == rule and events[i]["reason"], events[i]
        assert events[i]["result"]["allow"] is False
    assert "echo is rate limited" in events[4]["reason"]
    assert events[4]["result"]["retry_after"] > 0  # tokens were counted in the dry run too
    assert_no_secrets(paths.dlog)

    summary = json.loads(regoguard_cli("log", str(paths.dlog), "--json").stdout)
    assert summary["outcomes"] == {blocked_outcome: 3, "allowed": 3}
    assert summary["denials_by_rule"] == dict.fromkeys(BLOCKED.values(), 1)


# -- rotation through the CLI flags --------------------------------------------------------------------------------


async def test_rotation_through_cli_flags(paths: Paths) -> None:
    policy = write_policy(paths.tmp, "tools:\n  delete_customer:\n    rules:\n      - action: deny\n")
    max_bytes = 2500
    n = 14
    with anyio.fail_after(TIMEOUT):
        async with paths.client(policy, "--decision-log-max-bytes", str(max_bytes),
                                "--decision-log-backups", "2") as c:
            for i in range(n):
                r = await c.call_tool("echo", {"text": f"call-{i:02d}"})
                assert text_of(r) == f"call-{i:02d}"
    names = sorted(p.name for p in paths.tmp.glob("d.jsonl*"))
    assert names == ["d.jsonl", "d.jsonl.1", "d.jsonl.2"]
    for name in names:
        data = (paths.tmp / name).read_bytes()
        assert 0 < len(data) <= max_bytes, (name, len(data))
        assert data.endswith(b"\n")
        for line in data.splitlines():
            assert json.loads(line)["outcome"] == "allowed"  # whole events only
    texts = [e["input"]["tool"]["arguments"]["text"] for e in paths.events()]
    kept = len(texts)
    assert 3 <= kept < n
    assert texts == [f"call-{i:02d}" for i in range(n - kept, n)]  # oldest first, the newest kept, no gaps
    shown = json.loads(regoguard_cli("log", str(paths.dlog), "--json").stdout)
    assert shown["calls"] == kept and len(shown["files"]) == 3


# -- the log fails open ----------------------------------------------------------------------------------------------


async def test_unwritable_decision_log_does_not_stop_enforcement(paths: Paths) -> None:
    (paths.tmp / "afile").write_text("x")
    bad = str(paths.tmp / "afile" / "d.jsonl")
    policy = write_policy(paths.tmp, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with paths.raw(policy, log=bad) as p:
            await p.initialize()
            ok = await p.call(tools_call(1, "list_customers", {}))
            assert "result" in ok and ok["result"]["isError"] is False
            assert denial_of(await p.call(tools_call(2, "delete_customer", {"customer_id": "c"})))["rule"] == (
                "delete_customer/no_deletes")
            assert denial_of(await p.call(tools_call(3, "bulk_tool_010", {})))["rule"] == "hide"
            ok = await p.call(tools_call(4, "echo", {"text": "still here"}))
            assert ok["result"]["content"][0]["text"] == "still here"
            assert p.proc.returncode is None
        assert p.proc.returncode == 0
    assert [tool for tool, _ in spy_calls(paths.spy)] == ["list_customers", "echo"]
    assert "cannot write the decision log" in p.stderr_text()
    assert (paths.tmp / "afile").read_text() == "x"


async def test_stderr_decision_log_keeps_stdout_json_rpc_only(paths: Paths) -> None:
    policy = write_policy(paths.tmp, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with paths.raw(policy, log="stderr") as p:
            await p.initialize()
            await p.call(tools_call(1, "echo", {"text": "x", "password": PASSWORD}))
            meta = denial_of(await p.call(tools_call(2, "delete_customer", {"customer_id": "c"})))
            error_of(await p.call(tools_call(3, "echo", "not an object")), INVALID_PARAMS)
            error_of(await p.call(tools_call(4, "ghost_tool", {})), INVALID_PARAMS)
            await p.settle()
    p.assert_all_json()
    for msg in p.messages:
        assert isinstance(msg, dict) and msg.get("jsonrpc") == "2.0" and "decision_id" not in msg, msg
    events = [json.loads(line) for line in p.stderr_text().splitlines() if line.startswith('{"decision_id"')]
    assert [e["outcome"] for e in events] == ["allowed", "denied", "denied", "upstream_error"]
    assert events[1]["decision_id"] == meta["decision_id"]
    assert PASSWORD not in p.stderr_text()
    assert not paths.dlog.exists()


async def test_server_death_logs_the_call_in_flight(paths: Paths) -> None:
    policy = write_policy(paths.tmp, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with paths.raw(policy, server="raw_echo") as p:
            await p.initialize()
            await p.call(tools_call(1, "echo", {"text": "before"}))
            answer = await p.call(tools_call(2, "die", {"code": 3}))
            assert "exited before answering" in error_of(answer, -32603)["message"]
            assert await p.wait() == 3
    events = paths.events()
    assert [(e["tool"], e["outcome"]) for e in events] == [("echo", "allowed"), ("die", "upstream_error")]
    assert "exited before answering" in events[1]["upstream_error"]["message"]


# -- bugs ------------------------------------------------------------------------------------------------------------


async def test_log_level_warning_keeps_the_decision_log(paths: Paths) -> None:
    """BUG: ``--log-level warning`` (a quieter stderr) silently turns the decision log off: no file is
    written, for allowed and denied calls alike. The decision logger inherits structlog's global filtering
    wrapper (audit/decision_log.py: structlog.wrap_logger without wrapper_class) and logs at info."""
    policy = write_policy(paths.tmp, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with paths.client(policy, "--log-level", "warning") as c:
            assert denial(await c.call_tool("list_customers", {})) is None
            assert denial(await c.call_tool("delete_customer", {"customer_id": "c"})) is not None
    assert paths.dlog.exists(), "--log-level warning wrote no decision log at all"
    assert [e["outcome"] for e in paths.events()] == ["allowed", "denied"]


async def test_server_error_with_a_lone_surrogate_does_not_kill_the_proxy(paths: Paths) -> None:
    """BUG: a server answers an allowed call with a JSON-RPC error whose message holds a lone surrogate
    (``"\\ud800"`` — valid JSON, what a JavaScript server emits when it cuts a string inside an emoji).
    Writing that event raises UnicodeEncodeError in FileSink.write, which DecisionLog does not catch (only
    OSError): the exception leaves Guard.finish inside the server pump and the proxy exits with status 1,
    dropping the session. With ``--decision-log off`` the same exchange is relayed fine.

    raw_echo's ``emit`` writes the error line for the in-flight ``hang`` call (under the id the server got
    it by, which the proxy assigned), as a server would."""
    policy = write_policy(paths.tmp, POLICY)
    error_line = json.dumps({"jsonrpc": "2.0", "id": "$LAST_HANG_ID", "error": {"code": -32000,
                                                                             "message": "cut \\ud83d"}})
    error_line = error_line.replace("\\\\ud83d", "\\ud83d")  # a real \ud83d escape on the wire
    assert "\\ud83d" in error_line and "\\\\" not in error_line
    with anyio.fail_after(TIMEOUT):
        async with paths.raw(policy, server="raw_echo") as p:
            await p.initialize()
            await p.send(tools_call(7, "hang", {}))
            await p.send(request(8, "emit", {"lines": [error_line]}))
            relayed = await p.response(7, timeout=5)
            assert relayed["error"]["code"] == -32000
            after = await p.call(tools_call(9, "echo", {"text": "after"}), timeout=5)
            assert "result" in after, after
            assert p.proc.returncode is None
    outcomes = [(e["tool"], e["outcome"]) for e in paths.events()]
    assert outcomes[-1] == ("echo", "allowed")
    assert ("hang", "upstream_error") in outcomes
    for line in read_jsonl(paths.dlog):
        assert "decision_id" in line
