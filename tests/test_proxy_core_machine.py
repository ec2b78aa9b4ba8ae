"""A state-machine test of the relay core: random interleavings of what a client and a server may send,
with the invariants checked after every step.

The core is driven directly (it does no I/O), with a real Guard, Engine, in-memory limit store and
decision log. The "server" is the test: it sees exactly what the core sends upstream and answers it in
any order, twice, under ids never sent, or with garbage. Every client request carries a sequence number in
``params._meta`` (the proxy forwards every byte but the id), so the test always knows which request a
forwarded message or an answer belongs to, independently of the ids the proxy assigns.

Invariants:
- each client request gets at most one answer, under its own id, and (once the server has answered
  everything) exactly one, unless the client cancelled it;
- no denied or hidden call reaches the server; a rate-limited tool's calls are forwarded exactly when
  the model's token count says so, i.e. tokens come back only for a call the server answered with an error;
- exactly one decision event per ``tools/call`` the client sent;
- no hidden tool in any ``tools/list`` answer the client gets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import regoguard
from regoguard.audit import DecisionLog, MaskingRules
from regoguard.engine import Engine
from regoguard.guard import Guard
from regoguard.limits import Limiter, ManualClock, MemoryStore
from regoguard.proxy.core import Outbox, RelayCore, ToClient
from regoguard.proxy.session import Session

POLICY = """\
default: allow
hide: [secret]
tools:
  pay:
    rules:
      - name: cap
        conditions:
          - {path: args.amount, op: lte, value: 100}
        on_deny: too much
      - name: rate
        rate_limit: 2/minute
  deny_me:
    rules:
      - name: never
        action: deny
        on_deny: never
  checked:
    rules:
      - validate: {required_args: true}
        reason: missing
"""
RATE = 2
TOOLS = [
    {"name": "echo", "inputSchema": {"type": "object"}},
    {"name": "pay", "inputSchema": {"type": "object", "properties": {"amount": {"type": "number"}}}},
    {"name": "deny_me", "inputSchema": {"type": "object"}},
    {"name": "secret", "inputSchema": {"type": "object"}},
    {"name": "checked", "inputSchema": {"type": "object", "required": ["x"]}},
]

_engine: Engine | None = None


def engine() -> Engine:
    global _engine
    if _engine is None:
        _engine = Engine(regoguard.compile_policy(regoguard.load_policy_text(POLICY, "machine.yaml")))
    return _engine


class ListSink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def write(self, line: str) -> None:
        self.events.append(json.loads(line))


# Ids a client may use: small integers and strings collide often; the rest are every other JSON type.
IDS = st.one_of(st.integers(0, 4), st.sampled_from(["a", "b", None, True, 2**70, -(2**63), "9007199254740993",
                                                    "\ud800"]))


def _key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


@dataclass
class Req:
    seq: int
    id: Any
    method: str
    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    answers: list[dict[str, Any]] = field(default_factory=list)
    upstream: int | None = None
    cancelled: bool = False


class RelayMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sink = ListSink()
        self.guard = Guard(engine(), Limiter(MemoryStore(), ManualClock()),
                           DecisionLog(self.sink, MaskingRules(), "rev", {"server": "s"}))
        self.core = RelayCore(self.guard, Session("s", "alice"))
        self.reqs: dict[int, Req] = {}
        self.by_upstream: dict[int, Req] = {}  # forwarded and not yet answered by the server
        self.answered_upstream: list[tuple[int, str]] = []  # what the server already sent, for replays
        self.live_pay = 0  # pay calls forwarded and not refunded: the tokens taken
        self.tools_calls = 0
        self.schemas_known = False
        self.server_requests = 0

    # -- the client -----------------------------------------------------------------------------------

    def _new_request(self, id_: Any, method: str, tool: str | None, amount: int | None, has_x: bool) -> Req:
        seq = len(self.reqs)
        args: dict[str, Any] = {}
        if tool == "pay":
            args["amount"] = amount
        if tool == "checked" and has_x:
            args["x"] = 1
        req = Req(seq, id_, method, tool if method == "tools/call" else None, args)
        self.reqs[seq] = req
        return req

    @staticmethod
    def _wire(req: Req) -> dict[str, Any]:
        params: dict[str, Any] = {"_meta": {"seq": req.seq}}
        if req.method == "tools/call":
            params.update(name=req.tool, arguments=req.args)
        return {"jsonrpc": "2.0", "id": req.id, "method": req.method, "params": params}

    def _awaiting(self, id_: Any) -> bool:
        return any(r.upstream is not None and not r.cancelled and not r.answers and _key(r.id) == _key(id_)
                   for r in self.by_upstream.values())

    def _predict(self, req: Req) -> bool:
        """True when the core must forward ``req`` (and account for it as the core does)."""
        if self._awaiting(req.id):
            return False
        if req.method != "tools/call":
            return True
        if req.tool in ("secret", "deny_me"):
            return False
        if req.tool == "checked":
            return "x" in req.args
        if req.tool == "pay":
            if req.args["amount"] > 100 or self.live_pay >= RATE:
                return False
            self.live_pay += 1
        return True

    requests = st.tuples(IDS, st.sampled_from(["tools/call", "tools/call", "tools/list", "ping"]),
                         st.sampled_from(["echo", "pay", "pay", "pay", "deny_me", "secret", "checked"]),
                         st.sampled_from([1, 100, 101]), st.booleans())

    @rule(spec=requests)
    def client_request(self, spec: tuple[Any, str, str, int, bool]) -> None:
        req = self._new_request(*spec)
        self._send_client([req], json.dumps(self._wire(req)))

    @rule(specs=st.lists(requests, min_size=1, max_size=3))
    def client_batch(self, specs: list[tuple[Any, str, str, int, bool]]) -> None:
        reqs = [self._new_request(*spec) for spec in specs]
        self._send_client(reqs, json.dumps([self._wire(r) for r in reqs]))

    @rule(tool=st.sampled_from(["echo", "pay", "secret"]))
    def client_call_without_id(self, tool: str) -> None:
        self.tools_calls += 1
        out = self.core.client_line(json.dumps({"jsonrpc": "2.0", "method": "tools/call",
                                                "params": {"name": tool, "arguments": {"amount": 1}}}).encode())
        assert out.to_server == [] and out.to_client == []

    @rule(line=st.sampled_from([b"{", b"42", b'"x"', b"null", b"[]", b"[1]", b'{"id":1}', b"1" * 5000,
                                b"[" * 150 + b"]" * 150,
                                b'{"jsonrpc":"2.0","id":1,"method":"x"}\r{"id":2,"method":"tools/call"}',
                                b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay",'
                                b'"name":"echo"}}']))
    def client_garbage(self, line: bytes) -> None:
        """Lines that cannot be read are answered with an error (never forwarded, never decided)."""
        out = self.core.client_line(line)
        assert out.to_server == []
        [answer] = self._client_messages(out.to_client)
        assert "error" in answer

    @precondition(lambda self: any(not r.cancelled for r in self.by_upstream.values()))
    @rule(data=st.data())
    def client_cancels(self, data: st.DataObject) -> None:
        live = sorted((r for r in self.by_upstream.values() if not r.cancelled), key=lambda r: r.seq)
        req = data.draw(st.sampled_from(live))
        out = self.core.client_line(json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                                "params": {"requestId": req.id, "reason": "t"}}).encode())
        req.cancelled = True
        assert out.to_client == []
        [line] = out.to_server
        assert json.loads(line)["params"]["requestId"] == req.upstream  # the server knows it by our id

    def _send_client(self, reqs: list[Req], line: str) -> None:
        expected = []
        for req in reqs:
            if req.method == "tools/call":
                self.tools_calls += 1
            if self._predict(req):
                expected.append(req)
                self.by_upstream[-1 - req.seq] = req  # awaiting; its real id is read from what reaches the server
                req.upstream = -1
        to_client = self._check_forwards(self.core.client_line(line.encode()), expected)
        proxy_answered = [r for r in reqs if r not in expected]
        answers = self._client_messages(to_client)
        assert [a.get("id") for a in answers] == [r.id for r in proxy_answered]
        for req, answer in zip(proxy_answered, answers, strict=True):
            req.answers.append(answer)
            # a denial is a tool result marked isError; a refused request (its id in flight) is an error
            assert answer.get("result", {}).get("isError") is True or "error" in answer

    def _check_forwards(self, out: Outbox, expected: list[Req]) -> list[ToClient]:
        """Check that what reached the server is exactly the expected requests, in order (the proxy's own
        tools/list, to validate ``checked``, is answered here at once); return what reached the client."""
        forwarded: list[int] = []
        pending = list(out.to_server)
        to_client = list(out.to_client)
        while pending:
            msg = json.loads(pending.pop(0))
            for entry in msg if isinstance(msg, list) else [msg]:
                seq = entry.get("params", {}).get("_meta", {}).get("seq")
                if seq is None:
                    assert entry["method"] == "tools/list" and type(entry["id"]) is int
                    more = self.core.server_line(self._list_answer(entry["id"], entry["params"].get("cursor")))
                    pending.extend(more.to_server)
                    to_client.extend(more.to_client)
                    continue
                req = self.reqs[seq]
                assert type(entry["id"]) is int and entry["id"] not in self.by_upstream
                self.by_upstream.pop(-1 - seq)
                req.upstream = entry["id"]
                self.by_upstream[entry["id"]] = req
                forwarded.append(seq)
        assert forwarded == [r.seq for r in expected]
        return to_client

    def _list_answer(self, upstream: int, cursor: Any) -> bytes:
        page = TOOLS[:3] if cursor is None else TOOLS[3:]
        result: dict[str, Any] = {"tools": page}
        if cursor is None:
            result["nextCursor"] = "page-2"
        return json.dumps({"jsonrpc": "2.0", "id": upstream, "result": result}).encode()

    @staticmethod
    def _client_messages(items: list[ToClient]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for item in items:
            msg = json.loads(item.data)
            found.extend(msg if isinstance(msg, list) else [msg])
        return found

    # -- the server -----------------------------------------------------------------------------------

    @precondition(lambda self: any(k >= 0 for k in self.by_upstream))
    @rule(data=st.data(), error=st.booleans())
    def server_answers(self, data: st.DataObject, error: bool) -> None:
        upstream = data.draw(st.sampled_from(sorted(k for k in self.by_upstream if k >= 0)))
        self._answer(upstream, error)

    def _answer(self, upstream: int, error: bool) -> None:
        req = self.by_upstream.pop(upstream)
        if error:
            body: dict[str, Any] = {"error": {"code": -32000, "message": f"seq {req.seq} failed"}}
        elif req.method == "tools/list":
            body = {"result": {"tools": TOOLS, "nextCursor": "more"}}
        else:
            body = {"result": {"content": [{"type": "text", "text": f"seq {req.seq}"}], "isError": False}}
        line = json.dumps({"jsonrpc": "2.0", "id": upstream, **body})
        self.answered_upstream.append((upstream, line))
        if error and req.tool == "pay" and not req.cancelled:
            self.live_pay -= 1  # the only way tokens come back
        out = self.core.server_line(line.encode())
        assert out.to_server == []
        answers = self._client_messages(out.to_client)
        if req.cancelled:
            assert answers == []
            return
        [answer] = answers
        assert answer["id"] == req.id and type(answer["id"]) is type(req.id)
        if error:
            assert answer["error"]["message"] == f"seq {req.seq} failed"
        elif req.method == "tools/list":
            names = [t["name"] for t in answer["result"]["tools"]]
            assert names == [t["name"] for t in TOOLS if t["name"] != "secret"]
            assert answer["result"]["nextCursor"] == "more"
        else:
            assert answer["result"]["content"][0]["text"] == f"seq {req.seq}"
        req.answers.append(answer)

    @precondition(lambda self: any(k >= 0 and not r.cancelled for k, r in self.by_upstream.items()))
    @rule(data=st.data())
    def server_answer_unreadable(self, data: st.DataObject) -> None:
        """An answer that does not parse still names its request: the client gets an error, no refund."""
        upstream = data.draw(st.sampled_from(sorted(k for k, r in self.by_upstream.items()
                                                    if k >= 0 and not r.cancelled)))
        req = self.by_upstream.pop(upstream)
        out = self.core.server_line(b'{"jsonrpc":"2.0","id":%d,"result":{"x":NaN}}' % upstream)
        [answer] = self._client_messages(out.to_client)
        assert answer["id"] == req.id and "error" in answer
        req.answers.append(answer)

    @precondition(lambda self: bool(self.answered_upstream))
    @rule(data=st.data())
    def server_replays_an_answer(self, data: st.DataObject) -> None:
        _, line = data.draw(st.sampled_from(self.answered_upstream))
        out = self.core.server_line(line.encode())
        assert out.to_client == [] and out.to_server == []

    @rule(id_=st.sampled_from([10**6, -1, 0, "1", 1.0, None, True, [1], {"a": 1}]))
    def server_answers_an_unknown_id(self, id_: Any) -> None:
        out = self.core.server_line(json.dumps({"jsonrpc": "2.0", "id": id_, "result": {}}).encode())
        assert out.to_client == [] and out.to_server == []

    @rule(line=st.sampled_from([b"42", b'"ready"', b"null", b"[1,2]", b"{", b"not json", b"[" * 200,
                                b'{"jsonrpc":"2.0","result":{}}', b"9" * 5000, b"[]"]))
    def server_garbage(self, line: bytes) -> None:
        out = self.core.server_line(line)
        assert out.to_client == [] and out.to_server == []

    @rule()
    def server_request_passes_through(self) -> None:
        self.server_requests += 1
        line = json.dumps({"jsonrpc": "2.0", "id": f"srv-{self.server_requests}", "method": "roots/list"})
        out = self.core.server_line(line.encode())
        assert [item.data for item in out.to_client] == [line.encode()]

    # -- invariants -----------------------------------------------------------------------------------

    @invariant()
    def at_most_one_answer_each(self) -> None:
        for req in self.reqs.values():
            assert len(req.answers) <= (0 if req.cancelled and req.upstream else 1), req

    @invariant()
    def one_event_per_finished_call(self) -> None:
        ids = [e["decision_id"] for e in self.sink.events]
        assert len(ids) == len(set(ids))
        waiting = sum(1 for r in self.by_upstream.values() if r.tool is not None and not r.cancelled)
        assert len(ids) == self.tools_calls - waiting

    def teardown(self) -> None:
        for upstream in sorted(k for k in self.by_upstream if k >= 0):
            self._answer(upstream, error=False)
        for req in self.reqs.values():
            assert len(req.answers) == (0 if req.cancelled else 1), req
        assert len(self.sink.events) == self.tools_calls


TestRelayMachine = RelayMachine.TestCase
TestRelayMachine.settings = settings(max_examples=100, stateful_step_count=30, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def _close_engine() -> Any:
    yield
    if _engine is not None:
        _engine.close()
