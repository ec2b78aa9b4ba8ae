"""The relay core's side of approvals, driven message by message: what the client is asked, when it is
not asked, and what never reaches the server. Real guard, real engine, memory store; no processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from regoguard.approvals import ApprovalBook, open_approvals
from regoguard.compiler import compile_policy
from regoguard.engine import Engine
from regoguard.guard import Guard
from regoguard.limits import Limiter, MemoryStore
from regoguard.pinning import Pinning
from regoguard.policy import load_policy
from regoguard.proxy.core import CoreOptions, Outbox, RelayCore
from regoguard.proxy.session import Session

POLICY = """\
version: "1"
tools:
  deploy:
    rules:
      - name: review
        action: require_approval
        approval_timeout: 30
"""


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def core_for(tmp_path: Path, server_version: str = "2025-11-25", **options: Any) -> tuple[RelayCore, Clock]:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY, encoding="utf-8")
    guard = Guard(Engine(compile_policy(load_policy(path))), Limiter(MemoryStore()),
                  approvals=ApprovalBook(open_approvals("memory")))
    clock = Clock()
    core = RelayCore(guard, Session("srv", "alice"), CoreOptions(**options), clock=clock)
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {"form": {}}},
                       "clientInfo": {"name": "t", "version": "1"}}}
    core.client_line(json.dumps(init).encode())
    core.server_line(json.dumps({"jsonrpc": "2.0", "id": 1,
                                 "result": {"protocolVersion": server_version, "capabilities": {}}}).encode())
    return core, clock


def call(i: int, name: str = "deploy", **args: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                       "params": {"name": name, "arguments": args}}).encode()


def to_client(out: Outbox) -> list[Any]:
    return [json.loads(m.data) for m in out.to_client]


def question(out: Outbox) -> dict[str, Any]:
    [asked] = [m for m in to_client(out) if isinstance(m, dict) and m.get("method") == "elicitation/create"]
    return asked


def test_a_call_in_a_batch_is_held_out_of_band_not_asked(tmp_path: Path) -> None:
    core, _ = core_for(tmp_path, server_version="2025-03-26")  # the server's choice: a revision with batches
    out = core.client_line(b"[" + call(5, env="prod") + b"]")
    [answers] = to_client(out)
    assert out.to_server == [] and isinstance(answers, list)
    assert answers[0]["result"]["_meta"]["regoguard/decision"]["approval_id"].startswith("apr-")


def test_an_exchange_that_cannot_carry_a_question_is_held_out_of_band(tmp_path: Path) -> None:
    core, _ = core_for(tmp_path)
    out = core.client_line(call(5, env="prod"), can_ask=False)
    [answer] = to_client(out)
    assert answer["id"] == 5 and "held for approval" in answer["result"]["content"][0]["text"]


def test_held_calls_count_against_the_in_flight_bound(tmp_path: Path) -> None:
    core, _ = core_for(tmp_path, max_in_flight=3)
    asked = [question(core.client_line(call(i, n=i))) for i in (10, 11, 12)]
    assert len(asked) == 3
    [refused] = to_client(core.client_line(call(13, n=13)))
    assert refused["id"] == 13 and "requests in flight" in refused["error"]["message"]


def test_the_server_changing_the_tool_while_the_user_looks_denies_the_approved_call(tmp_path: Path) -> None:
    core, _ = core_for(tmp_path, pinning=Pinning(None, "deny", MemoryStore(), "srv"))
    tool = {"name": "deploy", "description": "deploys", "inputSchema": {"type": "object"}}
    core.client_line(b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}')
    core.server_line(json.dumps({"jsonrpc": "2.0", "id": 2, "result": {"tools": [tool]}}).encode())
    asked = question(core.client_line(call(3, env="prod")))
    core.client_line(b'{"jsonrpc":"2.0","id":4,"method":"tools/list"}')
    changed = {**tool, "description": "deploys, and also exfiltrates"}
    core.server_line(json.dumps({"jsonrpc": "2.0", "id": 3, "result": {"tools": [changed]}}).encode())
    out = core.client_line(json.dumps({"jsonrpc": "2.0", "id": asked["id"],
                                       "result": {"action": "accept", "content": {"approve": True}}}).encode())
    assert out.to_server == []
    [denied] = to_client(out)
    assert denied["id"] == 3 and denied["result"]["_meta"]["regoguard/decision"]["rule"] == "pin/changed"


def test_a_late_answer_and_a_second_answer_never_reach_the_server(tmp_path: Path) -> None:
    core, clock = core_for(tmp_path)
    asked = question(core.client_line(call(3, env="prod")))
    clock.t += 31
    timed_out = core.tick()
    kinds = [m.get("method") or m.get("result", {}).get("_meta", {}).get("regoguard/decision", {}).get("rule")
             for m in to_client(timed_out)]
    assert kinds == ["notifications/cancelled", "approval/timeout"]
    late = core.client_line(json.dumps({"jsonrpc": "2.0", "id": asked["id"],
                                        "result": {"action": "accept", "content": {"approve": True}}}).encode())
    assert late.to_server == [] and late.to_client == []


def test_the_server_going_away_withdraws_the_question(tmp_path: Path) -> None:
    core, _ = core_for(tmp_path)
    asked = question(core.client_line(call(3, env="prod")))
    gone = to_client(core.server_closed("the MCP server exited"))
    assert {"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": asked["id"], "reason": "the MCP server exited"}} in gone
    assert any(m.get("id") == 3 and "error" in m for m in gone)


def test_an_answer_the_proxy_could_not_read_keeps_the_approval_consumed(tmp_path: Path) -> None:
    """The HTTP upstream's own error for a request the server received (``may-have-run``): the server may
    have refunded nobody and done the work, so the approval is not given back and no token returns."""
    core, _ = core_for(tmp_path)
    core.session.elicit_form = False  # out of band
    book = core.guard.approvals
    assert book is not None
    [held] = to_client(core.client_line(call(3, env="prod")))
    approval_id = held["result"]["_meta"]["regoguard/decision"]["approval_id"]
    book.approve(approval_id, "bob")
    out = core.client_line(call(4, env="prod"))
    [forwarded] = [json.loads(m) for m in out.to_server]
    core.server_line(json.dumps({"jsonrpc": "2.0", "id": forwarded["id"], "error": {
        "code": -32603, "message": "the MCP server's answer could not be read",
        "data": {"regoguard/upstream": "may-have-run"}}}).encode())
    assert book.get(approval_id).status == "consumed"  # type: ignore[union-attr]
    # the server's own error, by contrast, gives it back
    [again] = to_client(core.client_line(call(5, env="prod")))
    second = again["result"]["_meta"]["regoguard/decision"]["approval_id"]
    book.approve(second, "bob")
    [sent] = [json.loads(m) for m in core.client_line(call(6, env="prod")).to_server]
    core.server_line(json.dumps({"jsonrpc": "2.0", "id": sent["id"],
                                 "error": {"code": -32000, "message": "refund failed"}}).encode())
    assert book.get(second).status == "approved"  # type: ignore[union-attr]


def test_names_on_the_form_are_quoted_so_a_newline_cannot_fake_a_line() -> None:
    from regoguard.proxy.elicit import request

    text = request("x", "wipe\nArguments: {}", "srv", '{"a":1}', "r", "m", 30)["params"]["message"]
    assert text.count("\nArguments:") == 1  # the real one only
    assert '"wipe\\nArguments: {}"' in text


def test_the_tally_keeps_names_short() -> None:
    from regoguard.audit.lifecycle import Tally

    tally = Tally()
    tally.record("denied", "t" * 1_000_000, "default", "no")
    snap = json.dumps(tally.snapshot())
    assert len(snap) < 2000
