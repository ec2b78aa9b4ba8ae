"""End to end: ``action: require_approval`` through ``regoguard run``, answered by a person.

The SDK's real client → ``regoguard run`` → the spy server (tests/servers/spy.py), whose log proves what
reached upstream. A held call is answered at once (out of band, ``regoguard approvals`` in another process,
the same ``--state``) or, for a client that declared elicitation, by asking its user
(``elicitation/create``) while the call waits. Also: limits taken only when the approved call runs, the
approval given back when the call fails upstream, two proxies sharing one store, deny rules winning over
approval, the decision log and ``regoguard log``, the signed webhook, and the elicitation exchange on the
wire (a raw client in front of tests/servers/raw_echo.py, which logs every line the server receives).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolResult, ElicitRequestFormParams, ElicitResult, ErrorData, TextContent

from proxy_harness import (
    TIMEOUT,
    RawProxy,
    denial_of,
    proxied_client,
    python_server,
    read_jsonl,
    request,
    spy_calls,
    tools_call,
    write_policy,
)

APPROVAL_ID = re.compile(r"^apr-[0-9a-f]{12}$")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
RULE = "create_refund/big"

POLICY = """\
version: "1"
default: allow
tools:
  create_refund:
    rules:
      - name: big
        action: require_approval
        approval_timeout: 60
        on_deny: Refunds above 100 need a person.
        conditions:
          - {path: args.amount, op: lte, value: 100}
  no_such_tool:
    rules:
      - name: ghost
        action: require_approval
        approval_timeout: 60
"""


# --------------------------------------------------------------------------- helpers


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


async def regoguard(*argv: str) -> Done:
    """``python -m regoguard ARGV`` in another process (the event loop keeps running meanwhile)."""
    proc = await anyio.run_process([sys.executable, "-m", "regoguard", *argv], check=False)
    return Done(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


class Approvals:
    """``regoguard approvals ...`` against one ``--state`` (and ``--state-prefix``)."""

    def __init__(self, state: str, prefix: str | None = None, decision_log: Path | None = None) -> None:
        self.store = ["--state", state, *(["--state-prefix", prefix] if prefix is not None else [])]
        self.decision_log = decision_log

    async def run(self, *argv: str) -> Done:
        log = ["--decision-log", str(self.decision_log)] if self.decision_log is not None else []
        return await regoguard("approvals", *argv, *log, *self.store)

    async def list(self, every: bool = False) -> list[dict[str, Any]]:
        done = await self.run("list", "--json", *(["--all"] if every else []))
        assert done.returncode == 0, done
        out = json.loads(done.stdout)
        assert isinstance(out, list), out
        return out

    async def by_id(self, every: bool = True) -> dict[str, dict[str, Any]]:
        return {a["id"]: a for a in await self.list(every)}

    async def show(self, approval_id: str) -> dict[str, Any]:
        done = await self.run("show", approval_id, "--json")
        assert done.returncode == 0, done
        out = json.loads(done.stdout)
        assert isinstance(out, dict), out
        return out

    async def approve(self, approval_id: str, *opts: str) -> Done:
        return await self.run("approve", approval_id, *opts)

    async def deny(self, approval_id: str, *opts: str) -> Done:
        return await self.run("deny", approval_id, *opts)


def text_of(result: CallToolResult) -> str:
    assert result.content, result
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


def parse_iso(text: str) -> float:
    assert ISO_UTC.match(text), text
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def held(result: CallToolResult, *, rule: str = RULE, approver: str = "user", timeout: float = 60,
         tool: str = "create_refund") -> str:
    """The proxy's out-of-band answer to a held call: isError, "held for approval", the approval id in the
    text and in ``_meta``; returns the approval id."""
    assert result.is_error is True, result
    text = text_of(result)
    assert text.startswith("[regoguard] "), text
    assert "held for approval" in text and repr(tool) in text and repr(rule) in text, text
    assert result.meta is not None and "spy/seq" not in result.meta, result
    decision = result.meta["regoguard/decision"]
    assert decision["action"] == "require_approval", decision
    assert decision["rule"] == rule, decision
    assert decision["approver"] == approver, decision
    approval_id = decision["approval_id"]
    assert APPROVAL_ID.match(approval_id), decision
    assert approval_id in text, text
    expires = parse_iso(decision["expires_at"])
    assert time.time() - 5 < expires <= time.time() + timeout + 2, decision
    return str(approval_id)


def denied(result: CallToolResult, rule: str) -> tuple[str, dict[str, Any]]:
    """A proxy denial (not the server's answer) under ``rule``: (its text, its decision meta)."""
    assert result.is_error is True, result
    text = text_of(result)
    assert text.startswith("[regoguard] "), text
    assert result.meta is not None and "spy/seq" not in result.meta, result
    decision = result.meta["regoguard/decision"]
    assert decision["rule"] == rule, decision
    assert repr(rule) in text, text
    return text, decision


def ran(result: CallToolResult, text: str) -> None:
    """The server's own answer, relayed."""
    assert result.is_error is not True, result
    assert text_of(result) == text, result
    assert result.meta is not None and "spy/seq" in result.meta, result


def client_for(tmp_path: Path, policy: Path, *options: str, state: str | None = None, spy: Path | None = None,
               env: dict[str, str] | None = None, **kwargs: Any) -> Client:
    return proxied_client(policy, python_server("spy"), "legacy",
                          env={"SPY_LOG": str(spy or tmp_path / "spy.jsonl"), **(env or {})},
                          options=["--state", state or str(tmp_path / "state.db"), *options], **kwargs)


async def _true_if(value: bool) -> bool:
    return value


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.2)


# --------------------------------------------------------------------------- out of band


async def test_out_of_band_approve_then_identical_retry_runs_once(tmp_path: Path) -> None:
    spy = tmp_path / "spy.jsonl"
    policy = write_policy(tmp_path, POLICY)
    approvals = Approvals(str(tmp_path / "state.db"))
    with anyio.fail_after(TIMEOUT):
        async with client_for(tmp_path, policy) as client:
            first = held(await client.call_tool("create_refund", {"amount": 500, "charge_id": "ch_1"}))
            assert spy_calls(spy) == []
            # asking again while it is pending names the same approval
            assert held(await client.call_tool("create_refund", {"amount": 500, "charge_id": "ch_1"})) == first

            pending = await approvals.list()
            assert [a["id"] for a in pending] == [first]
            a = pending[0]
            assert set(a) >= {"id", "status", "tool", "server", "principal", "rule", "message", "arguments",
                              "expires_at", "created_at", "approver"}, a
            assert a["status"] == "pending" and a["tool"] == "create_refund" and a["rule"] == RULE
            assert a["arguments"] == {"amount": 500, "charge_id": "ch_1"}
            assert a["server"] and isinstance(a["principal"], str)
            assert "Refunds above 100 need a person." in a["message"]
            assert parse_iso(a["created_at"]) <= parse_iso(a["expires_at"])
            plain = await approvals.run("list")  # for a person: one line per pending approval
            assert plain.returncode == 0 and first in plain.stdout and "pending" in plain.stdout, plain
            assert "create_refund" in plain.stdout and RULE in plain.stdout, plain

            # other arguments: an approval of their own; the first is untouched
            second = held(await client.call_tool("create_refund", {"amount": 600, "charge_id": "ch_1"}))
            assert second != first
            assert {i: x["status"] for i, x in (await approvals.by_id(every=False)).items()} == {
                first: "pending", second: "pending"}

            # a small refund needs nobody
            ran(await client.call_tool("create_refund", {"amount": 50}), "refunded 50")

            done = await approvals.approve(first, "--reason", "customer called", "--as", "alice")
            assert done.returncode == 0, done
            assert first in done.stdout and "create_refund" in done.stdout
            shown = await approvals.show(first)
            assert shown["status"] == "approved" and shown["decided_by"] == "alice"
            assert shown["reason"] == "customer called"

            # the identical call (keys reordered, 500 spelled 500.0) runs, once
            ran(await client.call_tool("create_refund", {"charge_id": "ch_1", "amount": 500.0}), "refunded 500.0")
            assert spy_calls(spy) == [("create_refund", {"amount": 50}),
                                      ("create_refund", {"charge_id": "ch_1", "amount": 500.0})]
            assert (await approvals.show(first))["status"] == "consumed"
            assert (await approvals.show(second))["status"] == "pending"

            # and once only: the next identical call is held anew
            third = held(await client.call_tool("create_refund", {"amount": 500, "charge_id": "ch_1"}))
            assert third not in (first, second)
            assert len(spy_calls(spy)) == 2
            assert {a["id"] for a in await approvals.list()} == {second, third}

            # the approver is shown the arguments masked as the decision log masks them; the server gets them
            secret = {"amount": 900, "charge_id": "ch_2", "token": "tok_live_SECRET"}
            masked = held(await client.call_tool("create_refund", secret))
            listed = await approvals.by_id(every=False)
            assert listed[masked]["arguments"]["token"] != "tok_live_SECRET"
            assert "tok_live_SECRET" not in json.dumps(listed)
            assert (await approvals.approve(masked, "--as", "carol")).returncode == 0
            ran(await client.call_tool("create_refund", secret), "refunded 900")
            assert spy_calls(spy)[-1] == ("create_refund", secret)

    # only a pending approval can be answered
    for action in ("approve", "deny"):
        done = await approvals.run(action, first)
        assert done.returncode == 1, done
        assert "consumed" in done.stderr and first in done.stderr, done
    done = await approvals.approve("apr-000000000000")
    assert done.returncode == 1 and "no approval" in done.stderr, done
    done = await approvals.run("show", "apr-000000000000")
    assert done.returncode == 1 and "no approval" in done.stderr, done
    assert (await approvals.show(first))["status"] == "consumed"


async def test_out_of_band_deny(tmp_path: Path) -> None:
    spy = tmp_path / "spy.jsonl"
    policy = write_policy(tmp_path, POLICY)
    approvals = Approvals(str(tmp_path / "state.db"))
    with anyio.fail_after(TIMEOUT):
        async with client_for(tmp_path, policy) as client:
            approval_id = held(await client.call_tool("create_refund", {"amount": 5000}))
            done = await approvals.deny(approval_id, "--reason", "too big", "--as", "bob", "--json")
            assert done.returncode == 0, done
            answered = json.loads(done.stdout)
            assert answered["id"] == approval_id and answered["status"] == "denied", answered
            assert answered["decided_by"] == "bob" and answered["reason"] == "too big", answered

            for _ in range(2):  # it stays denied
                text, decision = denied(await client.call_tool("create_refund", {"amount": 5000.0}),
                                        "approval/denied")
                assert "bob" in text and "too big" in text and approval_id in text, text
                assert "bob" in decision["reason"] and "too big" in decision["reason"], decision

            # another amount is a call of its own
            held(await client.call_tool("create_refund", {"amount": 5001}))

    assert spy_calls(spy) == []
    shown = await approvals.show(approval_id)
    assert shown["status"] == "denied" and shown["decided_by"] == "bob" and shown["reason"] == "too big"
    assert approval_id not in {a["id"] for a in await approvals.list()}
    done = await approvals.approve(approval_id)
    assert done.returncode == 1 and "denied" in done.stderr, done


async def test_an_approved_call_can_be_revoked_before_its_retry(tmp_path: Path) -> None:
    """Approved by mistake: denying it before the agent retries revokes it, and the retry is denied; once
    the retry has used it, it can no longer be denied."""
    spy = tmp_path / "spy.jsonl"
    policy = write_policy(tmp_path, POLICY)
    approvals = Approvals(str(tmp_path / "state.db"))
    with anyio.fail_after(TIMEOUT):
        async with client_for(tmp_path, policy) as client:
            approval_id = held(await client.call_tool("create_refund", {"amount": 5000}))
            assert (await approvals.approve(approval_id, "--as", "alice")).returncode == 0
            log = tmp_path / "answers.jsonl"
            done = await approvals.deny(approval_id, "--reason", "wrong customer", "--as", "bob",
                                        "--decision-log", str(log))
            assert done.returncode == 0 and "revoked" in done.stdout, done
            events = [json.loads(line) for line in log.read_text().splitlines()]
            assert [(e["outcome"], e.get("revoked")) for e in events] == [("approval_denied", True)], events
            text, _ = denied(await client.call_tool("create_refund", {"amount": 5000}), "approval/denied")
            assert "bob" in text and "wrong customer" in text, text

            other = held(await client.call_tool("create_refund", {"amount": 5002}))
            assert (await approvals.approve(other, "--as", "alice")).returncode == 0
            ran(await client.call_tool("create_refund", {"amount": 5002}), "refunded 5002")
            done = await approvals.deny(other, "--as", "bob")
            assert done.returncode == 1 and "consumed" in done.stderr, done

    assert spy_calls(spy) == [("create_refund", {"amount": 5002})]  # the revoked call never reached it
    shown = await approvals.show(approval_id)
    assert shown["status"] == "denied" and shown["decided_by"] == "bob", shown


async def test_pending_and_approved_approvals_expire(tmp_path: Path) -> None:
    spy = tmp_path / "spy.jsonl"
    log = tmp_path / "decisions.jsonl"
    policy = write_policy(tmp_path, POLICY.replace("approval_timeout: 60", 'approval_timeout: "2s"', 1))
    approvals = Approvals(str(tmp_path / "state.db"))
    args = {"amount": 250}
    with anyio.fail_after(TIMEOUT):
        async with client_for(tmp_path, policy, "--decision-log", str(log)) as client:
            first = held(await client.call_tool("create_refund", args), timeout=2)

            async def first_expired() -> bool:
                return (await approvals.by_id())[first]["status"] == "expired"

            await eventually(first_expired, 8, f"{first} to expire")
            assert await approvals.list() == []  # not pending any more
            done = await approvals.approve(first, "--as", "alice")
            assert done.returncode == 1 and "expired" in done.stderr, done

            # the identical call asks anew
            second = held(await client.call_tool("create_refund", args), timeout=2)
            assert second != first
            assert [a["id"] for a in await approvals.list()] == [second]

            # an approval not used in time runs out too
            assert (await approvals.approve(second, "--as", "alice")).returncode == 0
            await anyio.sleep(2.3)
            third = held(await client.call_tool("create_refund", args), timeout=2)
            assert third not in (first, second)
            statuses = {i: a["status"] for i, a in (await approvals.by_id()).items()}
            assert statuses == {first: "expired", second: "expired", third: "pending"}
    assert spy_calls(spy) == []
    expired = [e["approval"]["id"] for e in read_jsonl(log) if e.get("outcome") == "approval_expired"]
    assert expired == [first, second]


# --------------------------------------------------------------------------- limits, upstream failure


LIMITED_POLICY = """\
version: "1"
default: allow
tools:
  create_refund:
    rules:
      - name: big
        action: require_approval
        approval_timeout: 60
        conditions:
          - {path: args.amount, op: lte, value: 100}
      - name: slow
        rate_limit: 1/minute
"""


async def test_limits_are_taken_only_when_the_approved_call_runs(tmp_path: Path) -> None:
    spy = tmp_path / "spy.jsonl"
    state = str(tmp_path / "state.db")
    policy = write_policy(tmp_path, LIMITED_POLICY)
    approvals = Approvals(state)

    async def buckets() -> dict[str, Any]:
        done = await regoguard("state", "show", "--json", "--state", state)
        assert done.returncode == 0, done
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    with anyio.fail_after(TIMEOUT):
        async with client_for(tmp_path, policy) as client:
            first = held(await client.call_tool("create_refund", {"amount": 500}))
            second = held(await client.call_tool("create_refund", {"amount": 600}))
            assert first != second
            # held calls take nothing from the bucket
            assert all(b["tokens"] >= 0.99 for b in (await buckets()).values())

            assert (await approvals.approve(first, "--as", "alice")).returncode == 0
            assert (await approvals.approve(second, "--as", "alice")).returncode == 0
            ran(await client.call_tool("create_refund", {"amount": 500}), "refunded 500")
            taken = await buckets()
            assert len(taken) == 1 and next(iter(taken.values()))["tokens"] < 0.5, taken

            # the bucket is empty: the second approved call is refused by the limit, and keeps its approval
            denied(await client.call_tool("create_refund", {"amount": 600}), "create_refund/slow")
            assert (await approvals.show(second))["status"] == "approved"
            assert (await approvals.show(first))["status"] == "consumed"
    assert spy_calls(spy) == [("create_refund", {"amount": 500})]


async def test_approval_comes_back_when_the_approved_call_fails_upstream(tmp_path: Path) -> None:
    spy = tmp_path / "spy.jsonl"
    log = tmp_path / "decisions.jsonl"
    policy = write_policy(tmp_path, POLICY)
    approvals = Approvals(str(tmp_path / "state.db"))
    bad = {"charge_id": "ch_3"}  # no amount: the condition does not hold (held), and the spy refuses it
    with anyio.fail_after(TIMEOUT):
        async with client_for(tmp_path, policy, "--decision-log", str(log)) as client:
            approval_id = held(await client.call_tool("create_refund", bad))
            assert (await approvals.approve(approval_id, "--as", "alice")).returncode == 0

            for n in (1, 2):  # an isError result: the approval is approved again, and the retry runs again
                result = await client.call_tool("create_refund", bad)
                assert result.is_error is True and result.meta is not None and "spy/seq" in result.meta, result
                assert text_of(result) == "create_refund: missing required argument(s): amount"
                assert len(spy_calls(spy)) == n
                shown = await approvals.show(approval_id)
                assert shown["status"] == "approved" and shown["decided_by"] == "alice", shown

            # a JSON-RPC error from the server: the same
            ghost = held(await client.call_tool("no_such_tool", {"x": 1}), rule="no_such_tool/ghost",
                         tool="no_such_tool")
            assert (await approvals.approve(ghost)).returncode == 0
            with pytest.raises(MCPError) as excinfo:
                await client.call_tool("no_such_tool", {"x": 1})
            assert excinfo.value.code == INVALID_PARAMS
            assert (await approvals.show(ghost))["status"] == "approved"

            # a success consumes it for good
            ok = {"charge_id": "ch_3", "amount": 1000}
            ok_id = held(await client.call_tool("create_refund", ok))
            assert (await approvals.approve(ok_id)).returncode == 0
            ran(await client.call_tool("create_refund", ok), "refunded 1000")
            assert (await approvals.show(ok_id))["status"] == "consumed"

    assert [t for t, _ in spy_calls(spy)] == ["create_refund", "create_refund", "no_such_tool", "create_refund"]
    events = [(e["outcome"], e["approval"]["id"]) for e in read_jsonl(log) if e.get("path") == "regoguard/approval"]
    assert events.count(("approval_restored", approval_id)) == 2
    assert events.count(("approval_consumed", approval_id)) == 2
    assert ("approval_restored", ghost) in events
    assert ("approval_restored", ok_id) not in events and ("approval_consumed", ok_id) in events


# --------------------------------------------------------------------------- two proxies, one store


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_two_proxies_sharing_a_store_run_an_approved_call_once(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spy = tmp_path / "spy.jsonl"  # both servers append to it
    policy = write_policy(tmp_path, POLICY)
    prefix: str | None = None
    if store == "redis":
        state = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
    else:
        state = str(tmp_path / "state.db")
    approvals = Approvals(state, prefix)
    extra = ["--state-prefix", prefix] if prefix is not None else []
    args = {"amount": 700, "charge_id": "ch_7"}
    with anyio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(client_for(tmp_path, policy, *extra, state=state))
            b = await stack.enter_async_context(client_for(tmp_path, policy, *extra, state=state))
            first = held(await a.call_tool("create_refund", args))
            # the other proxy holds the same call under the same approval
            assert held(await b.call_tool("create_refund", {"charge_id": "ch_7", "amount": 700.0})) == first
            assert [x["id"] for x in await approvals.list()] == [first]
            assert (await approvals.approve(first, "--as", "alice")).returncode == 0

            results: dict[str, CallToolResult] = {}

            async def retry(name: str, client: Client) -> None:
                results[name] = await client.call_tool("create_refund", args)

            async with anyio.create_task_group() as tg:
                tg.start_soon(retry, "a", a)
                tg.start_soon(retry, "b", b)

            winners = [r for r in results.values() if not r.is_error]
            losers = [r for r in results.values() if r.is_error]
            assert len(winners) == 1 and len(losers) == 1, results
            ran(winners[0], "refunded 700")
            assert spy_calls(spy) == [("create_refund", args)]
            # the loser came while the winner ran (it waits: approval/in-use, nothing new asked), or after
            # it (held again, under a new approval)
            loser = losers[0].meta["regoguard/decision"]  # type: ignore[index]
            if loser["rule"] == "approval/in-use":
                assert loser["approval_id"] == first
                statuses = {i: x["status"] for i, x in (await approvals.by_id()).items()}
                assert statuses == {first: "consumed"}
            else:
                again = held(losers[0])
                assert again != first
                statuses = {i: x["status"] for i, x in (await approvals.by_id()).items()}
                assert statuses == {first: "consumed", again: "pending"}


async def test_approvals_listed_without_a_prefix_can_be_answered_without_it(tmp_path: Path) -> None:
    """A team's proxy keeps its approvals under ``--state-prefix red:`` in the shared SQLite file. Whatever
    ``approvals list`` shows must be what ``show``/``approve`` with the same options can find."""
    state = str(tmp_path / "state.db")
    policy = write_policy(tmp_path, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with client_for(tmp_path, policy, "--state-prefix", "red:") as client:
            red_id = held(await client.call_tool("create_refund", {"amount": 500}))
        red = Approvals(state, "red:")
        assert [a["id"] for a in await red.list()] == [red_id]
        plain = Approvals(state)
        for listed in await plain.list(every=True):
            done = await plain.run("show", listed["id"])
            assert done.returncode == 0, f"`approvals list` shows {listed['id']}, `approvals show` says: {done.stderr}"


# --------------------------------------------------------------------------- elicitation


class Asker:
    """An elicitation callback the test steers: what the "user" answers next, and what it was asked."""

    def __init__(self) -> None:
        self.answer: ElicitResult | ErrorData | None = None
        self.asked: list[ElicitRequestFormParams] = []
        self.stall: anyio.Event | None = None  # set: the user never answers until this event is set
        self.cancelled = 0

    async def __call__(self, context: Any, params: Any) -> ElicitResult | ErrorData:
        assert isinstance(params, ElicitRequestFormParams), params
        self.asked.append(params)
        if self.stall is not None:
            try:
                with anyio.fail_after(15):
                    await self.stall.wait()
            except anyio.get_cancelled_exc_class():
                self.cancelled += 1
                raise
        assert self.answer is not None
        return self.answer


ELICIT_POLICY = """\
version: "1"
default: allow
tools:
  create_refund:
    rules:
      - name: big
        action: require_approval
        approval_timeout: 2
        on_deny: Refunds above 100 need a person.
        conditions:
          - {path: args.amount, op: lte, value: 100}
  delete_customer:
    rules:
      - name: ops
        action: require_approval
        approver: operator
        approval_timeout: 15m
"""


async def test_elicitation_accept_decline_and_timeout(tmp_path: Path) -> None:
    spy = tmp_path / "spy.jsonl"
    policy = write_policy(tmp_path, ELICIT_POLICY)
    asker = Asker()
    with anyio.fail_after(TIMEOUT):
        async with client_for(tmp_path, policy, elicitation_callback=asker) as client:
            # accept with approve: true runs the call
            asker.answer = ElicitResult(action="accept", content={"approve": True})
            ran(await client.call_tool("create_refund", {"amount": 500, "charge_id": "ch_1"}), "refunded 500")
            assert len(asker.asked) == 1
            asked = asker.asked[0]
            assert "create_refund" in asked.message and RULE in asked.message, asked.message
            assert '"amount":500' in asked.message.replace(" ", ""), asked.message
            schema = asked.requested_schema
            assert schema["properties"]["approve"]["type"] == "boolean", schema
            assert spy_calls(spy) == [("create_refund", {"amount": 500, "charge_id": "ch_1"})]

            # ... and asks again the next time: an elicited approval is for that one call
            asker.answer = ElicitResult(action="decline")
            denied(await client.call_tool("create_refund", {"amount": 500, "charge_id": "ch_1"}), "approval/declined")
            assert len(asker.asked) == 2

            for answer in (ElicitResult(action="cancel"), ElicitResult(action="accept", content={"approve": False}),
                           ElicitResult(action="accept", content={}),
                           ErrorData(code=-32603, message="no user here")):
                asker.answer = answer
                denied(await client.call_tool("create_refund", {"amount": 501}), "approval/declined")

            # nobody answers: denied when approval_timeout (2 s) runs out, and the question is withdrawn
            asker.stall = anyio.Event()
            asker.answer = ElicitResult(action="accept", content={"approve": True})
            started = time.monotonic()
            denied(await client.call_tool("create_refund", {"amount": 502}), "approval/timeout")
            assert 1.5 <= time.monotonic() - started < 6
            ran(await client.call_tool("echo", {"text": "settle"}), "settle")
            # the proxy withdrew its question (notifications/cancelled): the SDK cancelled the callback
            await eventually(lambda: _true_if(asker.cancelled == 1), 5, "the question to be withdrawn")

            # the client gives up on the waiting call: the question is withdrawn too, and nothing runs
            with pytest.raises(MCPError):
                await client.call_tool("create_refund", {"amount": 503}, read_timeout_seconds=0.7)
            await eventually(lambda: _true_if(asker.cancelled == 2), 5, "the question to be withdrawn")
            asker.stall.set()
            asker.stall = None
            ran(await client.call_tool("echo", {"text": "settle"}), "settle")

            # a small refund asks nobody
            n = len(asker.asked)
            ran(await client.call_tool("create_refund", {"amount": 5}), "refunded 5")
            # approver: operator: never asked of the user, answered out of band
            operator = held(await client.call_tool("delete_customer", {"customer_id": "cus_9"}),
                            rule="delete_customer/ops", approver="operator", timeout=900, tool="delete_customer")
            assert len(asker.asked) == n
            listed = await Approvals(str(tmp_path / "state.db")).list()
            assert [x["id"] for x in listed] == [operator]

    assert [args for tool, args in spy_calls(spy) if tool == "create_refund"] == [
        {"amount": 500, "charge_id": "ch_1"}, {"amount": 5}]
    assert "delete_customer" not in [tool for tool, _ in spy_calls(spy)]


async def test_stateless_client_with_elicitation_is_answered_out_of_band(tmp_path: Path) -> None:
    """A 2026-07-28 request cannot be answered with a question: the approval goes out of band."""
    spy = tmp_path / "spy.jsonl"
    policy = write_policy(tmp_path, ELICIT_POLICY)
    asker = Asker()
    asker.answer = ElicitResult(action="accept", content={"approve": True})
    approvals = Approvals(str(tmp_path / "state.db"))
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("spy"), "auto", env={"SPY_LOG": str(spy)},
                                  options=["--state", str(tmp_path / "state.db")],
                                  elicitation_callback=asker) as client:
            approval_id = held(await client.call_tool("create_refund", {"amount": 300}), timeout=2)
            assert asker.asked == []
            assert (await approvals.approve(approval_id)).returncode == 0
            ran(await client.call_tool("create_refund", {"amount": 300}), "refunded 300")
    assert spy_calls(spy) == [("create_refund", {"amount": 300})]


# --------------------------------------------------------------------------- decision log


async def test_decision_log_and_log_summary(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    policy = write_policy(tmp_path, POLICY)
    approvals = Approvals(str(tmp_path / "state.db"), decision_log=log)  # the proxies' file
    with anyio.fail_after(TIMEOUT):
        async with client_for(tmp_path, policy, "--decision-log", str(log)) as client:
            yes = held(await client.call_tool("create_refund", {"amount": 500}))
            no = held(await client.call_tool("create_refund", {"amount": 600}))
            assert (await approvals.approve(yes, "--as", "alice", "--reason", "known customer")).returncode == 0
            assert (await approvals.deny(no, "--as", "bob", "--reason", "too big")).returncode == 0
            ran(await client.call_tool("create_refund", {"amount": 500}), "refunded 500")
            denied(await client.call_tool("create_refund", {"amount": 600}), "approval/denied")

    events = read_jsonl(log)
    calls = [e for e in events if e.get("path") == "regoguard/lib/decision"]  # one per call (not lifecycle...)
    assert [(e["outcome"], e.get("rule")) for e in calls] == [
        ("held", RULE), ("held", RULE), ("allowed", None), ("denied", "approval/denied")]
    assert all(e["result"]["action"] == "require_approval" for e in calls[:2])
    steps = [(e["outcome"], e["approval"]["id"]) for e in events if e.get("path") == "regoguard/approval"]
    assert sorted(steps) == sorted([("approval_requested", yes), ("approval_requested", no),
                                    ("approval_approved", yes), ("approval_denied", no),
                                    ("approval_consumed", yes)])
    by_step = {(e["outcome"], e["approval"]["id"]): e for e in events if e.get("path") == "regoguard/approval"}
    approved = by_step[("approval_approved", yes)]
    assert approved["approval"]["decided_by"] == "alice" and approved["approval"]["reason"] == "known customer"
    assert approved["approval"]["status"] == "approved" and approved["approval"]["approver"] == "user"
    assert approved["tool"] == "create_refund" and approved["rule"] == RULE
    refused = by_step[("approval_denied", no)]
    assert refused["approval"]["decided_by"] == "bob" and refused["approval"]["reason"] == "too big"
    assert by_step[("approval_requested", yes)]["approval"]["status"] == "pending"
    # consumed as the call starts (running), and consumed for good once it has run
    assert by_step[("approval_consumed", yes)]["approval"]["status"] == "running"

    done = await regoguard("log", str(log))
    assert done.returncode == 0, done
    assert "held for approval" in done.stdout, done.stdout
    assert "approvals:" in done.stdout, done.stdout
    counts: dict[str, int] = {}
    for line in done.stdout.split("\napprovals:\n", 1)[1].splitlines():
        row = re.fullmatch(r"\s+(\d+)\s+(\w+)", line)
        if row is None:
            break  # the section ends
        counts[row[2]] = int(row[1])
    assert counts == {"requested": 2, "approved": 1, "denied": 1, "consumed": 1}, done.stdout
    summary = json.loads((await regoguard("log", str(log), "--json")).stdout)
    assert summary["calls"] == 4 and summary["approvals"]["requested"] == 2, summary


# --------------------------------------------------------------------------- webhook


class Receiver:
    """A local HTTP server that records every POST (path, headers, body)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


async def test_webhook_announces_each_new_pending_approval_signed(tmp_path: Path) -> None:
    secret = "whsec-test-5f1c"
    policy = write_policy(tmp_path, POLICY)
    with receiver() as hook, anyio.fail_after(TIMEOUT):
        async with client_for(tmp_path, policy, "--approval-webhook", hook.url,
                              "--approval-webhook-secret-env", "RG_HOOK_SECRET",
                              env={"RG_HOOK_SECRET": secret}) as client:
            first = held(await client.call_tool("create_refund", {"amount": 500}))
            assert held(await client.call_tool("create_refund", {"amount": 500.0})) == first  # same one
            second = held(await client.call_tool("create_refund", {"amount": 600}))
            ran(await client.call_tool("create_refund", {"amount": 10}), "refunded 10")

            async def two() -> bool:
                return len(hook.posts) >= 2

            await eventually(two, 10, "two webhook posts")
            await anyio.sleep(0.5)  # nothing more comes
            assert len(hook.posts) == 2, hook.posts

    seen = []
    for path, headers, body in hook.posts:
        assert path == "/hook"
        assert headers["content-type"].startswith("application/json")
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-regoguard-signature"], expected), headers
        doc = json.loads(body)
        assert doc["event"] == "approval_requested" and isinstance(doc["sent_at"], int | float)
        approval = doc["approval"]
        assert approval["status"] == "pending" and approval["tool"] == "create_refund" and approval["rule"] == RULE
        seen.append((approval["id"], approval["arguments"]))
    assert seen == [(first, {"amount": 500}), (second, {"amount": 600})]


async def test_every_announced_approval_is_in_the_store(tmp_path: Path) -> None:
    """docs/approvals.md: the webhook announces each new pending approval, "the approval is in the store
    either way". An elicitation-capable client's held call is asked of its user; whatever the webhook tells
    an operator about must be something ``regoguard approvals show`` finds."""
    policy = write_policy(tmp_path, POLICY)
    asker = Asker()
    asker.answer = ElicitResult(action="accept", content={"approve": True})
    with receiver() as hook, anyio.fail_after(TIMEOUT):
        async with client_for(tmp_path, policy, "--approval-webhook", hook.url, elicitation_callback=asker) as client:
            ran(await client.call_tool("create_refund", {"amount": 500}), "refunded 500")
            assert len(asker.asked) == 1
            await anyio.sleep(1.0)  # give a post, if one is coming, time to arrive
        announced = [json.loads(body)["approval"]["id"] for _, _, body in hook.posts]
        approvals = Approvals(str(tmp_path / "state.db"))
        for approval_id in announced:
            done = await approvals.run("show", approval_id)
            assert done.returncode == 0, f"the webhook announced {approval_id}; `approvals show`: {done.stderr}"


async def test_webhook_secret_variable_must_be_set(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    with anyio.fail_after(TIMEOUT):
        done = await regoguard("run", "-c", str(policy), "--state", str(tmp_path / "state.db"),
                               "--approval-webhook", "http://127.0.0.1:9/hook",
                               "--approval-webhook-secret-env", "RG_HOOK_SECRET_UNSET_X", "--",
                               *python_server("spy"))
    assert done.returncode != 0
    assert "RG_HOOK_SECRET_UNSET_X" in done.stderr, done


# --------------------------------------------------------------------------- deny wins over approval


DENY_WINS_POLICY = """\
version: "1"
default: deny
tools:
  create_charge:
    rules:
      - name: big
        action: require_approval
        approval_timeout: 60
        conditions:
          - {path: args.amount, op: lte, value: 100}
      - name: currencies
        conditions:
          - {path: args.currency, op: in, value: [usd, eur]}
        on_deny: Only usd and eur.
  delete_customer:
    rules:
      - name: ask
        action: require_approval
      - name: never
        action: deny
"""


@pytest.mark.parametrize("elicit", [False, True], ids=["out-of-band", "elicitation"])
async def test_deny_rules_win_over_approval(elicit: bool, tmp_path: Path) -> None:
    spy = tmp_path / "spy.jsonl"
    policy = write_policy(tmp_path, DENY_WINS_POLICY)
    asker = Asker()
    asker.answer = ElicitResult(action="accept", content={"approve": True})
    kwargs: dict[str, Any] = {"elicitation_callback": asker} if elicit else {}
    with anyio.fail_after(TIMEOUT):
        async with client_for(tmp_path, policy, **kwargs) as client:
            ran(await client.call_tool("create_charge", {"amount": 50, "currency": "usd"}), "charged 50 usd as ch_0001")
            for args in ({"amount": 500, "currency": "gbp"}, {"amount": 50, "currency": "gbp"}):
                text, _ = denied(await client.call_tool("create_charge", args), "create_charge/currencies")
                assert "Only usd and eur." in text
            denied(await client.call_tool("delete_customer", {"customer_id": "c1"}), "delete_customer/never")
            denied(await client.call_tool("echo", {"text": "x"}), "default")
            assert asker.asked == []  # a denied call is never put to the user
            big = await client.call_tool("create_charge", {"amount": 500, "currency": "usd"})
            if elicit:
                assert not big.is_error and len(asker.asked) == 1, big
            else:
                held(big, rule="create_charge/big", tool="create_charge")
            listed = await Approvals(str(tmp_path / "state.db")).list(every=True)
            assert [a["arguments"] for a in listed] == ([] if elicit else [{"amount": 500, "currency": "usd"}])
    assert [args for _, args in spy_calls(spy)] == [{"amount": 50, "currency": "usd"}] + (
        [{"amount": 500, "currency": "usd"}] if elicit else [])


# --------------------------------------------------------------------------- on the wire


RAW_POLICY = """\
version: "1"
default: allow
tools:
  echo:
    rules:
      - name: ask
        action: require_approval
        approval_timeout: 1
"""


async def raw_initialize(proxy: RawProxy, capabilities: dict[str, Any]) -> None:
    answer = await proxy.call(request("init", "initialize", {
        "protocolVersion": "2025-11-25", "capabilities": capabilities,
        "clientInfo": {"name": "raw-approvals", "version": "0"},
    }), timeout=20)
    assert "result" in answer, answer
    await proxy.send({"jsonrpc": "2.0", "method": "notifications/initialized"})


def is_method(name: str) -> Callable[[Any], bool]:
    return lambda m: isinstance(m, dict) and m.get("method") == name


def server_saw(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


async def test_elicitation_on_the_wire(tmp_path: Path) -> None:
    """What a raw client sees: the form request, the answer that runs the call, and, with no answer in time,
    the denial and the withdrawn request; a client that can only do URL elicitation is answered out of band."""
    log = tmp_path / "raw.jsonl"
    policy = write_policy(tmp_path, RAW_POLICY)
    options = ["--state", str(tmp_path / "state.db")]
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), env={"RAW_ECHO_LOG": str(log)},
                                  options=options) as proxy:
            await raw_initialize(proxy, {"elicitation": {"form": {}}})
            await proxy.send(tools_call(1, "echo", {"text": "hi"}))
            ask = await proxy.expect(is_method("elicitation/create"), what="the approval request")
            assert isinstance(ask["id"], str), ask
            params = ask["params"]
            assert params["mode"] == "form", params
            assert "echo" in params["message"] and "echo/ask" in params["message"], params
            schema = params["requestedSchema"]
            assert schema["type"] == "object" and schema["properties"]["approve"]["type"] == "boolean", schema
            assert schema.get("required") == ["approve"], schema
            await proxy.send({"jsonrpc": "2.0", "id": ask["id"],
                              "result": {"action": "accept", "content": {"approve": True}}})
            answer = await proxy.response(1)
            assert answer["result"]["content"][0]["text"] == 'echo {"text": "hi"}', answer

            await proxy.send(tools_call(2, "echo", {"text": "nobody there"}))
            ask = await proxy.expect(is_method("elicitation/create"), what="the second approval request")
            answer = await proxy.response(2, timeout=6)
            assert denial_of(answer)["rule"] == "approval/timeout"
            withdrawn = await proxy.expect(is_method("notifications/cancelled"), what="the withdrawn request")
            assert withdrawn["params"]["requestId"] == ask["id"], withdrawn
            proxy.assert_all_json()

        async with RawProxy.start(policy, python_server("raw_echo"), env={"RAW_ECHO_LOG": str(log)},
                                  options=options) as proxy:
            await raw_initialize(proxy, {"elicitation": {"url": {}}})
            answer = await proxy.call(tools_call(1, "echo", {"text": "url only"}))
            decision = denial_of(answer)
            assert decision["action"] == "require_approval" and APPROVAL_ID.match(decision["approval_id"]), decision
            assert "held for approval" in answer["result"]["content"][0]["text"]
            assert not any(is_method("elicitation/create")(m) for m in proxy.messages)

    calls = [m["params"]["arguments"] for m in server_saw(log) if m.get("method") == "tools/call"]
    assert calls == [{"text": "hi"}]


async def test_a_late_answer_to_an_approval_request_never_reaches_the_server(tmp_path: Path) -> None:
    """The proxy's ``elicitation/create`` is its own request: an answer that comes after the proxy gave up
    on it (or a second answer) is for nobody, and the server never asked for it."""
    log = tmp_path / "raw.jsonl"
    policy = write_policy(tmp_path, RAW_POLICY)
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), env={"RAW_ECHO_LOG": str(log)},
                                  options=["--state", str(tmp_path / "state.db")]) as proxy:
            await raw_initialize(proxy, {"elicitation": {}})
            await proxy.send(tools_call(1, "echo", {"text": "slow user"}))
            ask = await proxy.expect(is_method("elicitation/create"), what="the approval request")
            assert denial_of(await proxy.response(1, timeout=6))["rule"] == "approval/timeout"
            await proxy.expect(is_method("notifications/cancelled"), what="the withdrawn request")
            late = {"jsonrpc": "2.0", "id": ask["id"], "result": {"action": "accept", "content": {"approve": True}}}
            await proxy.send(late)
            await proxy.settle()
    forwarded = [m for m in server_saw(log) if m.get("id") == ask["id"]]
    assert forwarded == [], f"the server got the proxy's own elicitation answer: {forwarded}"
    assert not any(m.get("method") == "tools/call" for m in server_saw(log))


# --------------------------------------------------------------------------- the HTTP gateway


async def test_serve_asks_the_user_on_the_calls_own_stream_and_holds_out_of_band_otherwise(tmp_path: Path) -> None:
    """``regoguard serve`` in front of the spy: a 2025-11-25 client with elicitation is asked on the POST's
    SSE stream and its accept runs the call; without elicitation the call gets an approval id that the
    CLI approves, and the identical retry runs once."""
    from http_harness import serving

    spy = tmp_path / "spy.jsonl"
    state = str(tmp_path / "state.db")
    policy = write_policy(tmp_path, POLICY)
    asker = Asker()
    asker.answer = ElicitResult(action="accept", content={"approve": True})
    with anyio.fail_after(TIMEOUT + 30), serving(policy, "--state", state, command=python_server("spy"),
                                                 env={"SPY_LOG": str(spy)}) as gateway:
        async with Client(gateway.url, mode="legacy", read_timeout_seconds=15, elicitation_callback=asker) as c:
            ran(await c.call_tool("create_refund", {"amount": 300}), "refunded 300")
        assert len(asker.asked) == 1 and "create_refund" in asker.asked[0].message
        async with Client(gateway.url, mode="legacy", read_timeout_seconds=15) as c:
            approval_id = held(await c.call_tool("create_refund", {"amount": 400}))
            done = await Approvals(state).run("approve", approval_id, "--as", "carol")
            assert done.returncode == 0, done.stderr
            ran(await c.call_tool("create_refund", {"amount": 400.0}), "refunded 400.0")
    assert spy_calls(spy) == [("create_refund", {"amount": 300}), ("create_refund", {"amount": 400.0})]
