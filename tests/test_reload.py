"""End to end: hot reload in ``regoguard run`` (``--reload-interval SECONDS``; 0 turns it off).

The proxy polls the policy file and the team's Rego (content hashes) and applies a change once two polls
agree: from the next call, without restarting the server (the spy's per-process call number, ``spy/seq``,
keeps counting) and without losing counters (they live in the state store). A change that does not load
is reported on stderr with file:line:column and "policy reload failed", and the policy in force keeps
enforcing.

Every test drives ``python -m regoguard run`` with the SDK's real client in front of the spy server
(tests/servers/spy.py); the proxy's stderr is kept in a file. Waiting is by polling with a deadline
(``eventually``), never by fixed sleeps, except where a test proves that nothing happens, and then only
after a positive control has shown that the same change was visible.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from mcp.client import Client
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

from proxy_harness import READ_TIMEOUT, python_server, read_jsonl, sdk_params, spy_calls, spy_tools

T = TypeVar("T")

INTERVAL = "0.2"  # seconds between polls; a change applies after two agreeing polls
DEADLINE = 10.0  # seconds any change may take to show
LIMIT = 20  # seconds per test (anyio.fail_after)

BASE = """\
default: allow
tools:
  delete_customer:
    rules:
      - name: no deletes
        action: deny
        on_deny: Version one says no.
"""
V2 = BASE.replace("Version one", "Version two")

TEAM_V1 = """\
package regoguard.custom

import rego.v1

deny contains {"rule": "team/v1", "message": "refunds are off"} if input.tool.name == "create_refund"
"""
TEAM_V2 = """\
package regoguard.custom

import rego.v1

deny contains {"rule": "team/v2", "message": "lists are off"} if input.tool.name == "list_customers"
"""


# --------------------------------------------------------------------------- harness


@dataclass
class Guarded:
    """One ``regoguard run`` behind the SDK client, with its stderr in a file and the spy's log."""

    client: Client
    stderr_path: Path
    spy: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    async def call(self, tool: str, arguments: dict[str, Any] | None = None) -> Outcome:
        return Outcome.of(await self.client.call_tool(tool, arguments or {}))


@dataclass(frozen=True)
class Outcome:
    """What became of one call: ``allow`` (the server answered; ``seq`` is its call number) or the proxy's
    ``deny`` / ``require_approval`` with the rule and reason."""

    action: str
    rule: str = ""
    reason: str = ""
    seq: int | None = None

    @classmethod
    def of(cls, result: CallToolResult) -> Outcome:
        meta = result.meta or {}
        if "regoguard/decision" in meta:
            assert result.is_error is True, result
            d = meta["regoguard/decision"]
            return cls(d["action"], d["rule"], d["reason"])
        assert result.is_error is not True, result  # the spy answers these calls without error
        return cls("allow", seq=meta["spy/seq"])


def save(path: Path, text: str) -> None:
    """Save as editors do: write a temporary file beside it, then rename it over the old one."""
    tmp = path.with_name(path.name + ".swp~")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@asynccontextmanager
async def guarded(tmp_path: Path, policy: Path, *options: str, name: str = "proxy", interval: str | None = INTERVAL,
                  env: dict[str, str] | None = None) -> AsyncIterator[Guarded]:
    spy = tmp_path / f"{name}-spy.jsonl"
    stderr_path = tmp_path / f"{name}-stderr.txt"
    opts = ["--state", "memory", *(["--reload-interval", interval] if interval is not None else []), *options]
    params = sdk_params(policy, python_server("spy"), env={"SPY_LOG": str(spy), **(env or {})}, options=opts)
    with stderr_path.open("w", encoding="utf-8") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy",
                          read_timeout_seconds=READ_TIMEOUT) as client:
            yield Guarded(client, stderr_path, spy)


async def eventually(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str,
                     timeout: float = DEADLINE, every: float = 0.1) -> T:
    """Run ``probe`` until ``ok`` holds for its value; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        await anyio.sleep(every)


async def stderr_shows(proxy: Guarded, *needles: str) -> str:
    async def read() -> str:
        return proxy.stderr()

    return await eventually(read, lambda text: all(n in text for n in needles), f"stderr to show {needles}")


def error_lines(text: str) -> list[str]:
    """The ``file:line:col: error: ...`` lines of a log, without structlog's prefix."""
    return re.findall(r"(\S+:\d+:\d+: error: .*)$", text, flags=re.MULTILINE)


# --------------------------------------------------------------------------- a valid change


async def test_valid_change_applies_to_the_same_server_and_keeps_counters(tmp_path: Path) -> None:
    limited = BASE + "  echo:\n    rules:\n      - name: three a minute\n        rate_limit: 3/minute\n"
    policy = tmp_path / "policy.yaml"
    policy.write_text(limited, encoding="utf-8")
    with anyio.fail_after(LIMIT):
        async with guarded(tmp_path, policy, "--state", str(tmp_path / "state.db")) as proxy:
            assert await proxy.call("echo", {"text": "a"}) == Outcome("allow", seq=1)
            assert await proxy.call("echo", {"text": "b"}) == Outcome("allow", seq=2)
            # an edit that leaves echo's limit alone: the deny message of another tool, and a description
            save(policy, "description: edited while running\n" + limited.replace("Version one", "Version two"))
            denial = await eventually(lambda: proxy.call("delete_customer", {"customer_id": "c"}),
                                      lambda o: o.reason == "Version two says no.", "the edited policy")
            assert denial.rule == "delete_customer/no deletes"
            # the same server process (its call counter goes on), and the same 3/minute bucket
            assert await proxy.call("echo", {"text": "c"}) == Outcome("allow", seq=3)
            fourth = await proxy.call("echo", {"text": "d"})
            assert (fourth.action, fourth.rule) == ("deny", "echo/three a minute"), fourth
            assert "policy reloaded" in proxy.stderr()
            assert "policy reload failed" not in proxy.stderr()
    assert spy_calls(proxy.spy) == [("echo", {"text": t}) for t in "abc"]


async def test_default_interval_reloads(tmp_path: Path) -> None:
    """Without --reload-interval the proxy polls every second."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(BASE, encoding="utf-8")
    with anyio.fail_after(LIMIT):
        async with guarded(tmp_path, policy, interval=None) as proxy:
            assert (await proxy.call("delete_customer", {"customer_id": "c"})).reason == "Version one says no."
            save(policy, V2)
            await eventually(lambda: proxy.call("delete_customer", {"customer_id": "c"}),
                             lambda o: o.reason == "Version two says no.", "the edit, at the default interval",
                             every=0.25)


async def test_interval_zero_ignores_edits(tmp_path: Path) -> None:
    """Two proxies on one policy file: the one polling every 0.2 s shows the edit (the control); the one
    with --reload-interval 0 goes on enforcing what it started with."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(BASE, encoding="utf-8")
    with anyio.fail_after(LIMIT):
        async with guarded(tmp_path, policy, name="watching") as watching, \
                guarded(tmp_path, policy, name="fixed", interval="0") as fixed:
            for proxy in (watching, fixed):
                assert (await proxy.call("delete_customer", {"customer_id": "c"})).reason == "Version one says no."
            save(policy, V2)
            started = time.monotonic()
            await eventually(lambda: watching.call("delete_customer", {"customer_id": "c"}),
                             lambda o: o.reason == "Version two says no.", "the watching proxy to reload")
            took = time.monotonic() - started
            await anyio.sleep(max(1.0, 2 * took))  # twice what the control needed: nothing is on its way
            still = await fixed.call("delete_customer", {"customer_id": "c"})
            assert still.reason == "Version one says no.", still
            assert "policy reloaded" in watching.stderr()
            assert "policy reload" not in fixed.stderr()


# --------------------------------------------------------------------------- invalid changes


@dataclass(frozen=True)
class Breakage:
    """A bad edit: which file gets which text, and the file:line:col the error must name."""

    target: str  # "policy" or a path under the team directory
    text: str
    where: str  # "<file>:<line>:<col>", <file> relative to tmp_path


BREAKAGES = {
    "unknown-key": Breakage("policy", BASE.replace("on_deny:", "on_deni:"), "policy.yaml:7:9"),
    "yaml-syntax": Breakage("policy", BASE + "  echo: [unclosed\n", "policy.yaml:9:1"),
    "bad-value": Breakage("policy", BASE.replace("default: allow", "default: maybe"), "policy.yaml:1:10"),
    "missing-rego-path": Breakage("policy", BASE + "rego: [nowhere]\n", "policy.yaml:8:8"),
    "rego-syntax": Breakage("team/t.rego", "package regoguard.custom\nimport rego.v1\n\ndeny contains \"x\" if {\n"
                            "  input.tool.name == \n}\n", "team/t.rego:5:19"),
    "rego-reserved-package": Breakage("team/t.rego", TEAM_V1.replace("regoguard.custom", "regoguard.lib"),
                                      "team/t.rego:1:9"),
    "rego-with": Breakage("team/new.rego", TEAM_V2.replace('"list_customers"', '"list_customers" with input as {}'),
                          "team/new.rego:5:"),
}


@pytest.mark.parametrize("case", list(BREAKAGES))
async def test_invalid_change_keeps_the_old_policy_until_fixed(tmp_path: Path, case: str) -> None:
    bad = BREAKAGES[case]
    policy = tmp_path / "policy.yaml"
    policy.write_text(BASE, encoding="utf-8")
    team = tmp_path / "team"
    team.mkdir()
    (team / "t.rego").write_text(TEAM_V1, encoding="utf-8")

    async def old_policy_holds(proxy: Guarded, n: int) -> None:
        d = await proxy.call("delete_customer", {"customer_id": "c"})
        assert (d.rule, d.reason) == ("delete_customer/no deletes", "Version one says no."), d
        r = await proxy.call("create_refund", {"amount": n})
        assert (r.action, r.rule) == ("deny", "team/v1"), r
        assert (await proxy.call("list_customers", {"limit": n})).action == "allow"

    with anyio.fail_after(LIMIT):
        async with guarded(tmp_path, policy, "--rego", str(team)) as proxy:
            await old_policy_holds(proxy, 1)
            save(tmp_path / (policy.name if bad.target == "policy" else bad.target), bad.text)
            where = f"{tmp_path / bad.where}"
            text = await stderr_shows(proxy, "policy reload failed", where)
            assert f"{where}" in "\n".join(error_lines(text)), text
            await old_policy_holds(proxy, 2)

            # fixed: the new policy and module both apply
            if bad.target.startswith("team/") and bad.target != "team/t.rego":
                (tmp_path / bad.target).unlink()
            save(team / "t.rego", TEAM_V2)
            save(policy, V2)
            await eventually(lambda: proxy.call("delete_customer", {"customer_id": "c"}),
                             lambda o: o.reason == "Version two says no.", "the fixed policy")
            r = await proxy.call("list_customers", {"limit": 3})
            assert (r.action, r.rule) == ("deny", "team/v2"), r
            assert (await proxy.call("create_refund", {"amount": 3})).action == "allow"
    # what reached the server: exactly the calls the policy in force allowed
    assert spy_calls(proxy.spy) == [("list_customers", {"limit": 1}), ("list_customers", {"limit": 2}),
                                    ("create_refund", {"amount": 3})]


async def test_reload_errors_match_check(tmp_path: Path) -> None:
    """Every error `regoguard check` finds in a bad edit is in the proxy's reload report, located alike."""
    import subprocess
    import sys

    policy = tmp_path / "policy.yaml"
    policy.write_text(BASE, encoding="utf-8")
    broken = BASE.replace("action: deny", "acton: deny") + "hide: 5\n"
    with anyio.fail_after(LIMIT):
        async with guarded(tmp_path, policy) as proxy:
            save(policy, broken)
            check = subprocess.run([sys.executable, "-m", "regoguard", "check", str(policy)], capture_output=True,
                                   text=True, timeout=60, check=False)
            assert check.returncode == 1
            expected = error_lines(check.stderr)
            assert len(expected) >= 2, check.stderr
            text = await stderr_shows(proxy, "policy reload failed", *expected)
            assert set(expected) <= set(error_lines(text))
            d = await proxy.call("delete_customer", {"customer_id": "c"})
            assert d.reason == "Version one says no."


async def test_policy_file_removed_then_restored(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(BASE, encoding="utf-8")
    with anyio.fail_after(LIMIT):
        async with guarded(tmp_path, policy) as proxy:
            policy.unlink()
            await stderr_shows(proxy, "policy reload failed")
            assert (await proxy.call("delete_customer", {"customer_id": "c"})).reason == "Version one says no."
            assert (await proxy.call("echo", {"text": "still allowed"})).action == "allow"
            save(policy, V2)
            await eventually(lambda: proxy.call("delete_customer", {"customer_id": "c"}),
                             lambda o: o.reason == "Version two says no.", "the restored policy")
    assert spy_tools(proxy.spy) == ["echo"]


# --------------------------------------------------------------------------- the team's Rego


async def test_rego_files_added_and_removed_in_a_watched_directory(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(BASE, encoding="utf-8")
    team = tmp_path / "team"
    team.mkdir()
    (team / "t.rego").write_text(TEAM_V1, encoding="utf-8")
    with anyio.fail_after(LIMIT):
        async with guarded(tmp_path, policy, "--rego", str(team)) as proxy:
            assert (await proxy.call("list_customers", {})).action == "allow"
            save(team / "two.rego", TEAM_V2)  # a new file
            await eventually(lambda: proxy.call("list_customers", {}), lambda o: o.rule == "team/v2",
                             "the added module")
            assert (await proxy.call("create_refund", {"amount": 1})).rule == "team/v1"  # the first one stays

            # a test module is not watched: not even one that would not load
            save(team / "two_test.rego", "package t\n\ntest_x if { data.x with input as {} \n")
            (team / "deep").mkdir()
            save(team / "deep" / "three.rego", TEAM_V1.replace("create_refund", "echo").replace("v1", "v3"))
            await eventually(lambda: proxy.call("echo", {"text": "?"}), lambda o: o.rule == "team/v3",
                             "a module in a subdirectory")
            assert "policy reload failed" not in proxy.stderr()

            (team / "two.rego").unlink()
            await eventually(lambda: proxy.call("list_customers", {"limit": 9}), lambda o: o.action == "allow",
                             "the removed module to stop applying")
    calls = spy_calls(proxy.spy)
    assert calls[0] == ("list_customers", {}) and calls[-1] == ("list_customers", {"limit": 9})
    assert set(spy_tools(proxy.spy)) == {"list_customers", "echo"}  # echo until three.rego applied


async def test_policy_gains_a_rego_list_then_a_file_in_it(tmp_path: Path) -> None:
    """Editing the policy's `rego:` list changes what is watched: a file added later to a directory that
    only the new list names still applies."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(BASE, encoding="utf-8")
    team = tmp_path / "team"
    team.mkdir()
    (team / "t.rego").write_text(TEAM_V1, encoding="utf-8")
    with anyio.fail_after(LIMIT):
        async with guarded(tmp_path, policy) as proxy:
            assert (await proxy.call("create_refund", {"amount": 1})).action == "allow"
            save(policy, BASE + "rego: [team]\n")
            await eventually(lambda: proxy.call("create_refund", {"amount": 2}), lambda o: o.rule == "team/v1",
                             "the module the policy now lists")
            save(team / "later.rego", TEAM_V2)
            await eventually(lambda: proxy.call("list_customers", {}), lambda o: o.rule == "team/v2",
                             "a module added to the newly watched directory")
            save(policy, BASE)  # and dropped again
            await eventually(lambda: proxy.call("create_refund", {"amount": 3}), lambda o: o.action == "allow",
                             "the policy without its rego: list")
            assert (await proxy.call("list_customers", {"limit": 4})).action == "allow"


async def test_decision_log_revision_changes_when_only_the_rego_does(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(BASE, encoding="utf-8")
    team = tmp_path / "team"
    team.mkdir()
    (team / "t.rego").write_text(TEAM_V1, encoding="utf-8")
    log = tmp_path / "decisions.jsonl"
    with anyio.fail_after(LIMIT):
        async with guarded(tmp_path, policy, "--rego", str(team), "--decision-log", str(log)) as proxy:
            assert (await proxy.call("echo", {"text": "before"})).action == "allow"
            before = len(read_jsonl(log))
            save(team / "t.rego", TEAM_V1.replace("refunds are off", "refunds are off today"))
            await eventually(lambda: proxy.call("create_refund", {"amount": 1}),
                             lambda o: o.reason == "refunds are off today", "the edited module")
            assert (await proxy.call("echo", {"text": "after"})).action == "allow"
            text = proxy.stderr()
    events = read_jsonl(log)
    first, last = events[0], events[-1]
    assert first["input"]["tool"]["arguments"] == {"text": "before"}
    assert last["input"]["tool"]["arguments"] == {"text": "after"}
    assert re.fullmatch(r"[0-9a-f]{16}", first["revision"]) and re.fullmatch(r"[0-9a-f]{16}", last["revision"])
    assert first["revision"] != last["revision"]
    # every event names the policy that decided it: the old one up to the swap, the new one after
    revs = [e["revision"] for e in events]
    assert revs[:before] == [first["revision"]] * before
    swap = revs.index(last["revision"])
    assert set(revs[:swap]) == {first["revision"]} and set(revs[swap:]) == {last["revision"]}
    assert events[swap]["result"]["reasons"][0]["message"] == "refunds are off today"
    assert f"revision={last['revision']}" in text and f"previous={first['revision']}" in text


# --------------------------------------------------------------------------- what else a reload carries


async def test_hide_list_change_shows_in_the_next_tools_list(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("default: allow\nhide: [delete_customer]\n", encoding="utf-8")

    async def names() -> set[str]:
        found: set[str] = set()
        cursor: str | None = None
        for _ in range(10):
            page = await proxy.client.list_tools(cursor=cursor)
            found |= {t.name for t in page.tools}
            cursor = page.next_cursor
            if cursor is None:
                return found
        raise AssertionError("tools/list did not end")

    with anyio.fail_after(LIMIT):
        async with guarded(tmp_path, policy) as proxy:
            listed = await names()
            assert "delete_customer" not in listed and "echo" in listed and len(listed) == 124
            assert (await proxy.call("delete_customer", {"customer_id": "c"})).rule == "hide"
            save(policy, "default: allow\nhide: [echo, bulk_tool_119]\n")
            listed = await eventually(names, lambda n: "echo" not in n, "tools/list without echo")
            assert "delete_customer" in listed and "bulk_tool_119" not in listed and len(listed) == 123
            assert (await proxy.call("echo", {"text": "x"})).rule == "hide"
            assert (await proxy.call("delete_customer", {"customer_id": "c"})).action == "allow"
    assert spy_tools(proxy.spy) == ["delete_customer"]


async def test_reload_switches_dry_run_and_audit_settings(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(BASE, encoding="utf-8")
    log = tmp_path / "decisions.jsonl"
    dry = "mode: dry_run\naudit:\n  erase: [/card]\n" + BASE
    with anyio.fail_after(LIMIT):
        async with guarded(tmp_path, policy, "--decision-log", str(log)) as proxy:
            args = {"customer_id": "c", "card": "4242"}
            assert (await proxy.call("delete_customer", args)).action == "deny"
            save(policy, dry)
            await eventually(lambda: proxy.call("delete_customer", args), lambda o: o.action == "allow",
                             "dry run: denied calls forwarded")
            save(policy, BASE)
            await eventually(lambda: proxy.call("delete_customer", {"customer_id": "back"}),
                             lambda o: o.action == "deny", "enforcing again")
    events = read_jsonl(log)
    assert events[0]["outcome"] == "denied" and events[0]["input"]["tool"]["arguments"]["card"] == "4242"
    would = [e for e in events if e["outcome"] == "would_deny"]
    assert would, events
    for e in would:
        assert e["mode"] == "dry_run" and "card" not in e["input"]["tool"]["arguments"], e
    assert events[-1]["outcome"] == "denied" and events[-1]["mode"] == "enforce"
    # what reached the server: exactly the calls dry run let through (the server saw the card; the log did not)
    assert len(spy_calls(proxy.spy)) == len(would)
    assert spy_calls(proxy.spy)[0] == ("delete_customer", {"customer_id": "c", "card": "4242"})


# --------------------------------------------------------------------------- never a half-loaded policy


# Two versions. Each head alone is a valid policy that allows delete_customer; only a whole file denies it.
HEAD_A = "default: allow\ndescription: version A\ntools:\n  echo:\n    rules:\n      - name: version a\n" \
         "        action: deny\n"
HEAD_B = "default: allow\ndescription: version B\ntools:\n  list_customers:\n    rules:\n      - name: version b\n" \
         "        action: deny\n"
TAIL = "  delete_customer:\n    rules:\n      - name: never\n        action: deny\n"
ANSWERS = {  # tool -> every answer either whole version may give
    "delete_customer": {("deny", "delete_customer/never")},
    "echo": {("deny", "echo/version a"), ("allow", "")},
    "list_customers": {("allow", ""), ("deny", "list_customers/version b")},
}


async def test_rewrites_in_two_chunks_never_decide_a_call_by_half_a_policy(tmp_path: Path) -> None:
    """A thread rewrites the policy over and over, A and B in turn, each save in two chunks (truncate, head,
    flush, a pause shorter than a poll, tail), while the client makes 120+ calls, three at a time. Every
    answer is one a whole version gives: delete_customer, which half a file would allow, is always denied."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(HEAD_A + TAIL, encoding="utf-8")
    stop = threading.Event()
    saves = itertools.count()
    rng = random.Random(20261124)

    def rewrite() -> None:
        for head in itertools.cycle([HEAD_B, HEAD_A]):
            if stop.is_set():
                return
            with policy.open("w", encoding="utf-8") as f:
                f.write(head)
                f.flush()
                time.sleep(rng.uniform(0.01, 0.05))  # a partial file, shorter than a poll
                f.write(TAIL)
                f.flush()
            next(saves)
            time.sleep(rng.uniform(0.2, 0.6))  # sometimes long enough for two polls to agree

    seen: dict[str, set[tuple[str, str]]] = {tool: set() for tool in ANSWERS}
    echo_answers: list[tuple[str, str]] = []
    calls = 0
    writer = threading.Thread(target=rewrite, name="policy-rewriter", daemon=True)

    def swaps() -> int:  # how often the version in force changed, as echo saw it
        return sum(1 for a, b in itertools.pairwise(echo_answers) if a != b)

    with anyio.fail_after(LIMIT):
        async with guarded(tmp_path, policy) as proxy:
            writer.start()
            try:
                started = time.monotonic()
                while time.monotonic() - started < 12 and (calls < 120 or swaps() < 6):
                    # the three calls of a round are in flight together, so swaps land between and during them
                    outcomes: dict[str, Outcome] = {}

                    async def one(tool: str, into: dict[str, Outcome]) -> None:
                        into[tool] = await proxy.call(tool, {"customer_id": "c"} if tool == "delete_customer" else {})

                    async with anyio.create_task_group() as tg:
                        for tool in ANSWERS:
                            tg.start_soon(one, tool, outcomes)
                    for tool, answers in ANSWERS.items():
                        o = outcomes[tool]
                        calls += 1
                        answer = (o.action, o.rule)
                        assert answer in answers, (tool, o, f"after {calls} calls")
                        seen[tool].add(answer)
                    echo_answers.append((outcomes["echo"].action, outcomes["echo"].rule))
                    await anyio.sleep(0.05)
            finally:
                stop.set()
                writer.join(5)
            reloads = proxy.stderr().count("policy reloaded")
    assert calls >= 100, calls
    assert seen["echo"] == ANSWERS["echo"] and seen["list_customers"] == ANSWERS["list_customers"], seen
    assert swaps() >= 3, f"too few swaps to prove anything: {swaps()} seen, {reloads} reloads, {next(saves)} saves"
    assert "delete_customer" not in spy_tools(proxy.spy)


# The watcher hashes the files, and once two polls agree it loads them: by reading them again. A save that
# starts in between is read half-written. This hook (test-only, injected into the proxy's interpreter with
# PYTHONPATH=sitecustomize) holds the first load until the test says go, making that race deterministic.
RELOAD_GATE = '''\
import importlib.abc
import importlib.machinery
import os
import sys
import time
from pathlib import Path

_GATE = os.environ.get("REGOGUARD_TEST_RELOAD_GATE")


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "regoguard.reload":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            real = module.load_policy_set
            calls = []

            def gated(*args, **kwargs):
                calls.append(1)
                if len(calls) == 1:
                    Path(_GATE, "loading").touch()
                    deadline = time.monotonic() + 10
                    while not Path(_GATE, "go").exists() and time.monotonic() < deadline:
                        time.sleep(0.01)
                return real(*args, **kwargs)

            module.load_policy_set = gated

        spec.loader.exec_module = exec_and_wrap
        return spec


if _GATE:
    sys.meta_path.insert(0, _Finder())
'''


async def test_a_save_begun_after_the_polls_agreed_is_not_loaded_half_written(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RELOAD_GATE, encoding="utf-8")
    gate = tmp_path / "gate"
    gate.mkdir()
    policy = tmp_path / "policy.yaml"
    policy.write_text(HEAD_A + TAIL, encoding="utf-8")
    env = {"REGOGUARD_TEST_RELOAD_GATE": str(gate), "PYTHONPATH": str(hook)}
    forwarded: list[Outcome] = []
    with anyio.fail_after(LIMIT):
        async with guarded(tmp_path, policy, env=env) as proxy:
            assert (await proxy.call("delete_customer", {"customer_id": "c"})).rule == "delete_customer/never"
            save(policy, HEAD_B + TAIL)

            async def loading() -> bool:
                return (gate / "loading").exists()

            await eventually(loading, bool, "the watcher to start loading B (the test hook did not fire: has "
                             "the watcher stopped calling regoguard.reload.load_policy_set? update the hook)")
            # the next save, of A: its first chunk is on disk as the watcher reads; its second follows
            # 50 ms later, well within one poll, so no two polls could ever agree on the half file
            with policy.open("w", encoding="utf-8") as f:
                f.write(HEAD_A)
            (gate / "go").touch()
            await anyio.sleep(0.05)
            with policy.open("a", encoding="utf-8") as f:
                f.write(TAIL)
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                o = await proxy.call("delete_customer", {"customer_id": "c"})
                if o.action == "allow":
                    forwarded.append(o)
                await anyio.sleep(0.05)
            await eventually(lambda: proxy.call("echo", {"text": "probe"}), lambda o: o.rule == "echo/version a",
                             "version A in force", timeout=5)
            final = await proxy.call("delete_customer", {"customer_id": "c"})
    assert not forwarded, f"{len(forwarded)} delete_customer calls were decided by half a policy and forwarded"
    assert final.rule == "delete_customer/never", final
    assert "delete_customer" not in spy_tools(proxy.spy)
