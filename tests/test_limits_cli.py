"""End to end: ``regoguard run --state ...`` in front of tests/servers/spy.py, driven by the MCP SDK client,
and ``regoguard state show|reset``. The spy records every tools/call that reaches it (SPY_LOG), which is
how these tests prove a denied call never got there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import StdioServerParameters
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolResult, TextContent

from conftest import free_port
from regoguard.limits.sqlite_store import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]
SPY = ROOT / "tests" / "servers" / "spy.py"
TIMEOUT = 60

ECHO_POLICY = """
tools:
  echo:
    rules:
      - name: two_per_minute
        rate_limit: "2/minute"
        on_deny: "echo is rate limited"
"""
ECHO_KEY = "global//spy/echo._rate_minute"

REFUND_POLICY = """
tools:
  ghost_tool:
    rules:
      - name: one_per_minute
        rate_limit: "1/minute"
  create_charge:
    rules:
      - name: one_per_minute
        rate_limit: "1/minute"
"""

SESSION_POLICY = """
tools:
  echo:
    rules:
      - name: per_session
        rate_limit: {max: 1, window: 60}
      - name: per_principal
        rate_limit: "5/minute"
        scope: principal
"""


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.spy_log = tmp_path / "spy.jsonl"
        self.xdg = tmp_path / "xdg"  # in case a command ever falls back to the default state path

    def policy(self, text: str, name: str = "policy.yaml") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def env(self) -> dict[str, str]:
        return {"SPY_LOG": str(self.spy_log), "XDG_STATE_HOME": str(self.xdg)}

    def spy_calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        if not self.spy_log.exists():
            return []
        calls = [json.loads(line) for line in self.spy_log.read_text().splitlines()]
        return [c for c in calls if tool is None or c["tool"] == tool]

    @asynccontextmanager
    async def proxy(self, policy: Path, *run_args: str, mode: str = "legacy") -> AsyncIterator[Client]:
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "regoguard", "run", "-c", str(policy), *run_args, "--", sys.executable, str(SPY)],
            env=self.env(),
            cwd=str(ROOT),
        )
        async with Client(params, mode=mode) as client:
            yield client

    def state(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "regoguard", "state", *args],
            capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, check=False,
            env={"PATH": "/usr/bin:/bin", "XDG_STATE_HOME": str(self.xdg), "HOME": str(self.tmp)},
        )


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def text_of(result: CallToolResult) -> str:
    assert result.content, result
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


def denial_rule(result: CallToolResult) -> str | None:
    """The rule of a regoguard denial, or None if the result is not one."""
    meta = result.meta or {}
    decision = meta.get("regoguard/decision")
    return decision["rule"] if result.is_error and decision else None


# -- a global 2/minute limit, shared by processes and restarts (SQLite) ------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_sqlite_limit_across_processes_restarts_and_reset(env: Env, mode: str) -> None:
    policy = env.policy(ECHO_POLICY)
    state = str(env.tmp / "state" / "state.db")
    with anyio.fail_after(TIMEOUT):
        async with env.proxy(policy, "--state", state, mode=mode) as c:
            for i in range(2):
                r = await c.call_tool("echo", {"text": f"hi {i}"})
                assert not r.is_error and text_of(r) == f"hi {i}"
            r = await c.call_tool("echo", {"text": "three"})
            assert denial_rule(r) == "echo/two_per_minute"
            assert "echo is rate limited" in text_of(r) and "retry after" in text_of(r)
        assert [c["arguments"]["text"] for c in env.spy_calls("echo")] == ["hi 0", "hi 1"]

        # a second proxy process, after the first is gone: still denied
        async with env.proxy(policy, "--state", state, mode=mode) as c:
            r = await c.call_tool("echo", {"text": "after restart"})
            assert denial_rule(r) == "echo/two_per_minute"
            assert len(env.spy_calls("echo")) == 2

            shown = env.state("show", "--state", state)
            assert shown.returncode == 0, shown.stderr
            assert ECHO_KEY in shown.stdout and "tokens=0" in shown.stdout
            as_json = json.loads(env.state("show", "--json", "--state", state).stdout)
            assert set(as_json) == {ECHO_KEY}
            # empty, give or take what refilled since (2/minute: a loaded machine's seconds) — no call fits
            assert 0.0 <= as_json[ECHO_KEY]["tokens"] < 1.0
            assert env.state("show", "principal/", "--state", state).stdout == "no counters\n"

            reset = env.state("reset", "--state", state)
            assert reset.returncode == 0, reset.stderr
            assert reset.stdout == "reset 1 counter\n"
            assert env.state("show", "--state", state).stdout == "no counters\n"

            # the running proxy sees the reset at once
            r = await c.call_tool("echo", {"text": "after reset"})
            assert not r.is_error and text_of(r) == "after reset"
        assert len(env.spy_calls("echo")) == 3


def test_state_show_with_the_policy_refills_tokens_to_now(env: Env) -> None:
    """A store keeps tokens as of a bucket's last use; with -c POLICY, show says what is there now."""
    import time

    from regoguard.limits import Spec
    from regoguard.limits.sqlite_store import SQLiteStore

    state = str(env.tmp / "state.db")
    store = SQLiteStore(state)
    spec = Spec(2, 60, 1)
    assert store.take_all([(ECHO_KEY, spec), (ECHO_KEY, spec)], time.time() - 30).ok  # empty, 30 s ago
    store.close()
    plain = env.state("show", "--state", state)
    assert "tokens=0 " in plain.stdout and "add -c POLICY" in plain.stdout, plain.stdout
    refilled = env.state("show", "--state", state, "-c", str(env.policy(ECHO_POLICY)))
    assert refilled.returncode == 0, refilled.stderr
    assert "of 2 now" in refilled.stdout and "(0 when last used" in refilled.stdout, refilled.stdout
    shown = json.loads(env.state("show", "--json", "--state", state, "-c", str(env.policy(ECHO_POLICY))).stdout)
    assert shown[ECHO_KEY]["tokens"] == 0 and 0.95 <= shown[ECHO_KEY]["tokens_now"] <= 1.2  # half a minute: ~1
    assert shown[ECHO_KEY]["capacity"] == 2 and shown[ECHO_KEY]["window"] == 60


def test_state_show_of_a_missing_file_is_an_error_and_creates_nothing(env: Env) -> None:
    shown = env.state("show", "--state", str(env.tmp / "no" / "such" / "x.db"))
    assert shown.returncode == 1
    assert "no state database at" in shown.stderr
    assert not (env.tmp / "no").exists()


async def test_two_live_proxies_share_one_sqlite_file(env: Env) -> None:
    policy = env.policy(ECHO_POLICY)
    state = str(env.tmp / "state.db")
    with anyio.fail_after(TIMEOUT):
        async with env.proxy(policy, "--state", state) as a, env.proxy(policy, "--state", state) as b:
            assert not (await a.call_tool("echo", {"text": "a1"})).is_error
            assert not (await b.call_tool("echo", {"text": "b1"})).is_error
            assert denial_rule(await a.call_tool("echo", {"text": "a2"})) == "echo/two_per_minute"
            assert denial_rule(await b.call_tool("echo", {"text": "b2"})) == "echo/two_per_minute"
    assert sorted(c["arguments"]["text"] for c in env.spy_calls("echo")) == ["a1", "b1"]


def test_state_prefix_after_options(env: Env) -> None:
    state = str(env.tmp / "state.db")
    SQLiteStore(state).close()  # `state` reads a store; it never makes one
    for args in (("show", "--json", "global//"), ("reset", "--state", state, "global//")):
        proc = env.state(*args) if "--state" in args else env.state(*args, "--state", state)
        assert proc.returncode == 0, proc.stderr


async def test_state_reset_with_a_key_prefix(env: Env) -> None:
    policy = env.policy(ECHO_POLICY)
    state = str(env.tmp / "state.db")
    with anyio.fail_after(TIMEOUT):
        async with env.proxy(policy, "--state", state) as c:
            assert not (await c.call_tool("echo", {"text": "x"})).is_error
    assert env.state("reset", "global//other/", "--state", state).stdout == "reset 0 counters\n"
    assert ECHO_KEY in env.state("show", "--state", state).stdout
    assert env.state("reset", ECHO_KEY, "--state", state).stdout == "reset 1 counter\n"


# -- the same through Redis, with a prefix ---------------------------------------------------------------------


async def test_redis_limit_across_processes_and_reset(env: Env, redis_url: str, redis_prefix: str) -> None:
    policy = env.policy(ECHO_POLICY)
    opts = ("--state", redis_url, "--state-prefix", redis_prefix)
    with anyio.fail_after(TIMEOUT):
        async with env.proxy(policy, *opts) as c:
            assert not (await c.call_tool("echo", {"text": "1"})).is_error
            assert not (await c.call_tool("echo", {"text": "2"})).is_error
            assert denial_rule(await c.call_tool("echo", {"text": "3"})) == "echo/two_per_minute"
        async with env.proxy(policy, *opts) as c:
            assert denial_rule(await c.call_tool("echo", {"text": "4"})) == "echo/two_per_minute"
            shown = env.state("show", *opts)
            assert shown.returncode == 0, shown.stderr
            assert ECHO_KEY in shown.stdout and "tokens=0" in shown.stdout
            # another prefix is another namespace
            assert env.state("show", "--state", redis_url, "--state-prefix", redis_prefix + "x:").stdout == (
                "no counters\n")
            assert env.state("reset", *opts).stdout == "reset 1 counter\n"
            assert env.state("show", *opts).stdout == "no counters\n"
            r = await c.call_tool("echo", {"text": "5"})
            assert not r.is_error and text_of(r) == "5"
    assert [c["arguments"]["text"] for c in env.spy_calls("echo")] == ["1", "2", "5"]


async def test_redis_unreachable_fails_closed_or_open(env: Env) -> None:
    policy = env.policy(ECHO_POLICY + "  list_customers:\n    rules:\n      - action: allow\n")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with anyio.fail_after(TIMEOUT):
        async with env.proxy(policy, "--state", dead) as c:
            r = await c.call_tool("echo", {"text": "x"})
            assert denial_rule(r) == "limits/store-error"
            r = await c.call_tool("list_customers", {})  # no limit on it: the store is not needed
            assert denial_rule(r) is None
            assert not r.is_error
        async with env.proxy(policy, "--state", dead, "--fail-open") as c:
            for i in range(4):  # no limit enforced while the store is down
                assert not (await c.call_tool("echo", {"text": f"open {i}"})).is_error
    assert len(env.spy_calls("echo")) == 4
    # the policy can choose fail-open too
    open_policy = env.policy("on_store_error: allow\n" + ECHO_POLICY)
    with anyio.fail_after(TIMEOUT):
        async with env.proxy(open_policy, "--state", dead) as c:
            assert not (await c.call_tool("echo", {"text": "policy open"})).is_error
    assert len(env.spy_calls("echo")) == 5
    shown = env.state("show", "--state", dead)
    assert shown.returncode == 1 and "error" in shown.stderr


def test_sqlite_unopenable_state_is_a_startup_error(env: Env) -> None:
    policy = env.policy(ECHO_POLICY)
    (env.tmp / "afile").write_text("x")
    bad = str(env.tmp / "afile" / "state.db")
    proc = subprocess.run(
        [sys.executable, "-m", "regoguard", "run", "-c", str(policy), "--state", bad, "--",
         sys.executable, str(SPY)],
        input="", capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, check=False,
        env={**env.env(), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "state database" in proc.stderr
    assert proc.stdout == ""
    shown = env.state("show", "--state", bad)
    assert shown.returncode == 1 and "error" in shown.stderr


async def test_sqlite_unopenable_state_with_fail_open_runs_in_memory(env: Env) -> None:
    policy = env.policy(ECHO_POLICY)
    (env.tmp / "afile").write_text("x")
    bad = str(env.tmp / "afile" / "state.db")
    with anyio.fail_after(TIMEOUT):
        async with env.proxy(policy, "--state", bad, "--fail-open") as c:
            results = [await c.call_tool("echo", {"text": str(i)}) for i in range(3)]
    # The proxy warns that limits are kept in memory for this process only, and they do hold.
    assert [r.is_error for r in results[:2]] == [False, False]
    assert denial_rule(results[2]) == "echo/two_per_minute"


async def test_memory_state(env: Env) -> None:
    policy = env.policy(ECHO_POLICY)
    with anyio.fail_after(TIMEOUT):
        async with env.proxy(policy, "--state", "memory") as c:
            assert not (await c.call_tool("echo", {"text": "1"})).is_error
            assert not (await c.call_tool("echo", {"text": "2"})).is_error
            assert denial_rule(await c.call_tool("echo", {"text": "3"})) == "echo/two_per_minute"
        async with env.proxy(policy, "--state", "memory") as c:  # a new process starts from nothing
            assert not (await c.call_tool("echo", {"text": "4"})).is_error


# -- a tool the policy does not name -------------------------------------------------------------------------------


async def test_unlisted_tool_is_answered(env: Env) -> None:
    """Regression: at 13d41c8, Guard.needs_schema raised KeyError('wildcard') for every tool that is not an
    exact policy key; the proxy's client pump died and the call was never answered (fixed in 75e3020)."""
    policy = env.policy(ECHO_POLICY)  # default allow; list_customers is not named
    state = str(env.tmp / "state.db")
    with anyio.fail_after(TIMEOUT):
        async with env.proxy(policy, "--state", state) as c:
            r = await c.call_tool("list_customers", {}, read_timeout_seconds=5)
            assert not r.is_error
    assert len(env.spy_calls("list_customers")) == 1


STAR_POLICY = """
tools:
  echo:
    rules:
      - name: own
        rate_limit: "100/minute"
  "*":
    rules:
      - name: everything
        rate_limit: "3/minute"
"""


async def test_star_limit_counts_every_tool_through_the_proxy(env: Env) -> None:
    policy = env.policy(STAR_POLICY)
    state = str(env.tmp / "state.db")
    with anyio.fail_after(TIMEOUT):
        async with env.proxy(policy, "--state", state) as c:
            first_taken = time.monotonic()  # the bucket is full until the first call takes from it
            assert not (await c.call_tool("echo", {"text": "a"}, read_timeout_seconds=10)).is_error
            assert not (await c.call_tool("list_customers", {}, read_timeout_seconds=10)).is_error
            r = await c.call_tool("create_charge", {"amount": 1, "currency": "usd"}, read_timeout_seconds=10)
            assert not r.is_error
            for tool, args in (("echo", {"text": "b"}), ("list_customers", {}), ("bulk_tool_000", {})):
                r = await c.call_tool(tool, args, read_timeout_seconds=10)
                assert denial_rule(r) == "*/everything", tool
            refilled = (time.monotonic() - first_taken) * 3 / 60  # what 3/minute can have refilled since
    assert [c["tool"] for c in env.spy_calls()] == ["echo", "list_customers", "create_charge"]
    snap = json.loads(env.state("show", "--json", "--state", state).stdout)
    # all three calls counted: empty but for what refilled between the first call and the last (the store
    # keeps the refill each call computes), a fraction of one token
    assert 0.0 <= snap["global//spy/_global._rate_minute"]["tokens"] <= refilled + 1e-9
    assert snap["global//spy/echo._rate_minute"]["tokens"] == pytest.approx(99.0, abs=1e-3)


# -- refunds -------------------------------------------------------------------------------------------------------


async def test_json_rpc_error_gets_the_token_back(env: Env) -> None:
    """spy.py answers a call to a tool it does not have with a JSON-RPC error (-32602): the proxy refunds."""
    policy = env.policy(REFUND_POLICY)
    state = str(env.tmp / "state.db")
    with anyio.fail_after(TIMEOUT):
        async with env.proxy(policy, "--state", state) as c:
            for _ in range(3):  # 1/minute, yet every call reaches the server: each error refunds it
                with pytest.raises(MCPError) as excinfo:
                    await c.call_tool("ghost_tool", {"x": 1})
                assert excinfo.value.error.code == INVALID_PARAMS
                assert "Unknown tool" in excinfo.value.error.message
    assert len(env.spy_calls("ghost_tool")) == 3
    snap = json.loads(env.state("show", "--json", "--state", state).stdout)
    assert snap["global//spy/ghost_tool._rate_minute"]["tokens"] == pytest.approx(1.0, abs=1e-3)


async def test_is_error_result_is_not_refunded_by_default(env: Env) -> None:
    """spy.py answers create_charge without its required `currency` with an isError RESULT (not a JSON-RPC
    error). Without --refund-on-tool-error that call keeps its token."""
    policy = env.policy(REFUND_POLICY)
    state = str(env.tmp / "state.db")
    with anyio.fail_after(TIMEOUT):
        async with env.proxy(policy, "--state", state) as c:
            r = await c.call_tool("create_charge", {"amount": 5})
            assert r.is_error and denial_rule(r) is None
            assert "missing required argument(s): currency" in text_of(r)
            r = await c.call_tool("create_charge", {"amount": 5, "currency": "usd"})
            assert denial_rule(r) == "create_charge/one_per_minute"
    assert len(env.spy_calls("create_charge")) == 1


async def test_refund_on_tool_error_gives_is_error_results_their_token_back(env: Env) -> None:
    policy = env.policy(REFUND_POLICY)
    state = str(env.tmp / "state.db")
    with anyio.fail_after(TIMEOUT):
        async with env.proxy(policy, "--state", state, "--refund-on-tool-error") as c:
            for _ in range(3):
                r = await c.call_tool("create_charge", {"amount": 5})
                assert r.is_error and denial_rule(r) is None  # the server's isError, not a denial
            r = await c.call_tool("create_charge", {"amount": 5, "currency": "usd"})
            assert not r.is_error  # a success keeps its token
            r = await c.call_tool("create_charge", {"amount": 6, "currency": "usd"})
            assert denial_rule(r) == "create_charge/one_per_minute"
            # a regoguard denial is an isError result too, but nothing was taken, so nothing comes back
            r = await c.call_tool("create_charge", {"amount": 7, "currency": "usd"})
            assert denial_rule(r) == "create_charge/one_per_minute"
    assert len(env.spy_calls("create_charge")) == 4
    snap = json.loads(env.state("show", "--json", "--state", state).stdout)
    assert snap["global//spy/create_charge._rate_minute"]["tokens"] == pytest.approx(0.0, abs=1e-3)


# -- session buckets -----------------------------------------------------------------------------------------------


async def test_session_buckets_are_forgotten_at_session_end(env: Env) -> None:
    policy = env.policy(SESSION_POLICY)
    state = str(env.tmp / "state.db")
    with anyio.fail_after(TIMEOUT):
        async with env.proxy(policy, "--state", state, "--principal", "alice") as c:
            assert not (await c.call_tool("echo", {"text": "1"})).is_error
            assert denial_rule(await c.call_tool("echo", {"text": "2"})) == "echo/per_session"
            live = json.loads(env.state("show", "session/", "--json", "--state", state).stdout)
            assert len(live) == 1
        after = json.loads(env.state("show", "--json", "--state", state).stdout)
        assert [k for k in after if k.startswith("session/")] == []  # forgotten
        assert "principal/alice/spy/echo._rate_minute" in after  # principal buckets stay
        async with env.proxy(policy, "--state", state, "--principal", "alice") as c:  # a new session
            assert not (await c.call_tool("echo", {"text": "3"})).is_error
    assert [c["arguments"]["text"] for c in env.spy_calls("echo")] == ["1", "3"]
