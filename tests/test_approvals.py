"""Approvals without a proxy: the fingerprint, the rules of an approval's life over every store (memory,
SQLite, a real redis-server), the YAML that asks for them, and how the engine and guard decide held calls.
Time is a manual clock; nothing sleeps."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers_policy import call_doc, decide, load_errors
from regoguard.approvals import ApprovalBook, ApprovalError, fingerprint, open_approvals
from regoguard.approvals.record import ApprovalRecord
from regoguard.approvals.webhook import sign
from regoguard.compiler import compile_policy
from regoguard.engine import Engine
from regoguard.guard import Guard
from regoguard.limits import Limiter, ManualClock, MemoryStore
from regoguard.policy import load_policy

# --- the fingerprint ------------------------------------------------------------------------------


def fp(args: Any, *, principal: str = "alice", server: str = "pay", tool: str = "refund", rev: str = "r1") -> str:
    return fingerprint(principal, server, tool, args, rev)


def test_key_order_and_number_spelling_do_not_change_the_fingerprint() -> None:
    a = fp({"amount": 500, "to": {"iban": "DE1", "ref": [1, 2.5]}})
    assert a == fp({"to": {"ref": [1.0, 2.5], "iban": "DE1"}, "amount": 500.0})
    assert a == fp({"amount": 5e2, "to": {"ref": [1, 2.50], "iban": "DE1"}})


@pytest.mark.parametrize("other", [
    {"amount": "500", "to": "x"},  # a string for a number
    {"amount": 501, "to": "x"},
    {"amount": 500, "to": "x", "memo": None},  # one more key, even null
    {"amount": 500, "to": "X"},
    {"amount": True, "to": "x"},
])
def test_anything_else_in_the_arguments_changes_it(other: dict[str, Any]) -> None:
    assert fp({"amount": 500, "to": "x"}) != fp(other)
    assert fp({"flag": 1}) != fp({"flag": True})


def test_principal_server_tool_and_revision_are_bound() -> None:
    base = fp({})
    assert len({base, fp({}, principal="bob"), fp({}, server="other"), fp({}, tool="charge"),
                fp({}, rev="r2")}) == 5


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**60, 2**60) | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8)


def _respell(value: Any) -> Any:
    """The same JSON value written differently: keys reversed, whole numbers as floats."""
    if isinstance(value, dict):
        return {k: _respell(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_respell(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:
        return float(value)
    return value


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_a_respelled_call_has_the_same_fingerprint(value: Any) -> None:
    assert fp({"v": value}) == fp({"v": _respell(value)})


# --- the book over each store ---------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "redis"])
def book(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ApprovalBook]:
    clock = ManualClock(1_800_000_000.0)
    if request.param == "memory":
        store = open_approvals("memory")
    elif request.param == "sqlite":
        store = open_approvals(str(tmp_path / "state.db"))
    else:
        store = open_approvals(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
    events: list[tuple[str, str]] = []
    b = ApprovalBook(store, clock.now, lambda kind, record, extra: events.append((kind, record.status)))
    b.clock_ = clock  # type: ignore[attr-defined]
    b.events_ = events  # type: ignore[attr-defined]
    yield b
    store.close()


def make(fingerprint_: str, timeout: int = 60):
    def build(approval_id: str, now: float) -> ApprovalRecord:
        return ApprovalRecord(approval_id, fingerprint_, "pending", now, now + timeout, timeout, "refund", "pay",
                              "alice", "refund/big", "Refunds need a person", "operator", '{"amount":500}', "r1")
    return build


def test_one_pending_approval_per_call_until_answered(book: ApprovalBook) -> None:
    first, created = book.ask("fp1", make("fp1"))
    assert created and first.status == "pending" and first.id.startswith("apr-")
    again, created = book.ask("fp1", make("fp1"))
    assert not created and again.id == first.id  # a retry names the same approval, never a second one
    other, created = book.ask("fp2", make("fp2"))
    assert created and other.id != first.id
    assert [r.id for r in book.list()] == [other.id, first.id] or {r.id for r in book.list()} == {first.id, other.id}
    assert book.events_ == [("requested", "pending"), ("requested", "pending")]  # type: ignore[attr-defined]


def test_approved_is_consumed_once_then_a_new_request_is_needed(book: ApprovalBook) -> None:
    record, _ = book.ask("fp1", make("fp1"))
    approved = book.approve(record.id, "bob", "checked the ticket")
    assert (approved.status, approved.decided_by, approved.reason) == ("approved", "bob", "checked the ticket")
    assert book.ask("fp1", make("fp1"))[0].status == "approved"
    used = book.consume(record.id)
    assert used is not None and used.status == "running"
    assert book.consume(record.id) is None  # never twice
    waiting, created = book.ask("fp1", make("fp1"))  # the identical call while it runs: waits, asks nothing
    assert not created and waiting.id == record.id and waiting.status == "running"
    done = book.settle(record.id)
    assert done is not None and done.status == "consumed"
    with pytest.raises(ApprovalError, match="consumed, not pending"):
        book.approve(record.id, "bob")
    fresh, created = book.ask("fp1", make("fp1"))  # the replay asks anew
    assert created and fresh.id != record.id and fresh.status == "pending"


def test_denying_an_approved_approval_revokes_it_until_its_call_uses_it(book: ApprovalBook) -> None:
    record, _ = book.ask("fp1", make("fp1"))
    book.approve(record.id, "alice")
    revoked = book.deny(record.id, "bob", "approved by mistake")
    assert (revoked.status, revoked.decided_by, revoked.reason) == ("denied", "bob", "approved by mistake")
    assert book.consume(record.id) is None  # its retry cannot use it
    assert book.ask("fp1", make("fp1"))[0].status == "denied"  # and is denied, naming who and why
    assert book.events_[-1] == ("denied", "denied")  # type: ignore[attr-defined]
    with pytest.raises(ApprovalError, match="denied, not pending"):
        book.approve(record.id, "alice")  # a revocation is not undone by approving again

    used, _ = book.ask("fp2", make("fp2"))
    book.approve(used.id, "alice")
    assert book.consume(used.id) is not None
    with pytest.raises(ApprovalError, match="running, not pending"):
        book.deny(used.id, "bob")  # the call has started: too late
    book.settle(used.id)
    with pytest.raises(ApprovalError, match="consumed, not pending"):
        book.deny(used.id, "bob")


def test_a_failed_call_gives_its_approval_back(book: ApprovalBook) -> None:
    record, _ = book.ask("fp1", make("fp1"))
    book.approve(record.id, "bob")
    assert book.consume(record.id) is not None
    assert book.ask("fp1", make("fp1"))[0].id == record.id  # a retry meanwhile does not orphan it
    back = book.restore(record.id, "the server failed it")
    assert back is not None and back.status == "approved"
    assert book.restore(record.id, "twice") is None  # only a running one goes back
    assert book.ask("fp1", make("fp1"))[0].id == record.id  # still the one that answers the call
    assert book.consume(record.id) is not None
    assert [k for k, _ in book.events_] == ["requested", "approved", "consumed", "restored", "consumed"]  # type: ignore[attr-defined]


def test_deny_holds_for_the_timeout_then_the_call_may_be_asked_again(book: ApprovalBook) -> None:
    record, _ = book.ask("fp1", make("fp1", timeout=60))
    denied = book.deny(record.id, "carol", "not this customer")
    assert denied.status == "denied"
    assert book.ask("fp1", make("fp1"))[0].id == record.id  # still denied
    with pytest.raises(ApprovalError):
        book.approve(record.id, "dave")  # a denial is final
    book.clock_.advance(61)  # type: ignore[attr-defined]
    fresh, created = book.ask("fp1", make("fp1"))
    assert created and fresh.id != record.id


def test_expiry_with_a_manual_clock(book: ApprovalBook) -> None:
    record, _ = book.ask("fp1", make("fp1", timeout=30))
    book.clock_.advance(29.9)  # type: ignore[attr-defined]
    assert book.get(record.id).state(book.clock()) == "pending"  # type: ignore[union-attr]
    book.clock_.advance(0.2)  # type: ignore[attr-defined]
    assert book.get(record.id).state(book.clock()) == "expired"  # type: ignore[union-attr]
    with pytest.raises(ApprovalError, match="expired"):
        book.approve(record.id, "bob")
    fresh, created = book.ask("fp1", make("fp1"))
    assert created and fresh.id != record.id
    assert book.get(record.id).status == "expired"  # type: ignore[union-attr]
    assert ("expired", "expired") in book.events_  # type: ignore[attr-defined]
    # an approved approval not used in time expires too
    book.approve(fresh.id, "bob")  # the retry has the rule's timeout (60 s) from the approval
    book.clock_.advance(61)  # type: ignore[attr-defined]
    assert book.consume(fresh.id) is None


def test_unknown_ids_are_errors(book: ApprovalBook) -> None:
    with pytest.raises(ApprovalError, match="no approval"):
        book.deny("apr-000000000000", "bob")
    assert book.get("apr-000000000000") is None


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_two_books_on_one_store_consume_an_approval_once(backend: str, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    """Two proxies sharing a store, eight threads each racing for one approval: exactly one wins."""
    if backend == "sqlite":
        spec, prefix = str(tmp_path / "state.db"), None
    else:
        spec, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    stores = [open_approvals(spec, prefix) for _ in range(2)]
    books = [ApprovalBook(s) for s in stores]
    try:
        record, _ = books[0].ask("fp1", make("fp1"))
        books[1].approve(record.id, "bob")
        wins: list[Any] = []
        barrier = threading.Barrier(16)

        def race(b: ApprovalBook) -> None:
            barrier.wait()
            wins.append(b.consume(record.id))

        threads = [threading.Thread(target=race, args=(books[i % 2],)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(wins) == 16 and sum(w is not None for w in wins) == 1
    finally:
        for s in stores:
            s.close()


def test_the_cli_never_creates_a_store(tmp_path: Path) -> None:
    from regoguard.limits import StoreError

    with pytest.raises(StoreError, match="no state database"):
        open_approvals(str(tmp_path / "typo" / "state.db"), create=False)
    assert not (tmp_path / "typo").exists()


def test_webhook_signature_is_hmac_sha256_of_the_body() -> None:
    import hashlib
    import hmac

    assert sign(b"k", b'{"a":1}') == "sha256=" + hmac.new(b"k", b'{"a":1}', hashlib.sha256).hexdigest()


# --- the policy -----------------------------------------------------------------------------------

APPROVAL = """\
version: "1"
tools:
  refund:
    rules:
      - name: cap
        conditions: [{path: args.amount, op: lte, value: 1000}]
      - name: review
        action: require_approval
        approval_timeout: 10m
        conditions: [{path: args.amount, op: lte, value: 100}]
        on_deny: Refunds over 100 need a person
      - name: budget
        rate_limit: 2/minute
  deploy:
    rules:
      - name: every deploy
        action: require_approval
        approver: operator
"""


@pytest.mark.parametrize(("args", "granted", "want"), [
    ({"amount": 50}, False, "allow"),  # the conditions say no person is needed
    ({"amount": 500}, False, "require_approval"),
    ({"amount": 500}, True, "allow"),  # a person approved this exact call
    ({"amount": 5000}, False, "deny"),  # a denial wins over a hold
    ({"amount": 5000}, True, "deny"),
    ({}, False, "deny"),  # no amount: the cap's condition fails
])
def test_require_approval_with_conditions(args: dict[str, Any], granted: bool, want: str) -> None:
    engine = Engine(compile_policy(load_policy_text(APPROVAL)))
    try:
        doc = call_doc("refund", args)
        if granted:
            doc["approval"] = {"granted": True}
        d = engine.evaluate(doc)
        assert ("allow" if d.allow else d.action) == want, d
        if want == "require_approval":
            assert d.rule == "refund/review" and d.message == "Refunds over 100 need a person"
        if want == "allow":
            assert [c.rule for c in d.charges] == ["refund/budget"]  # the approved call is charged
    finally:
        engine.close()


def test_without_conditions_every_call_is_held() -> None:
    d = decide(APPROVAL, "deploy", {"env": "prod"})
    assert d.action == "require_approval" and d.rule == "deploy/every deploy"
    assert "approval" in d.message


def load_policy_text(text: str) -> Any:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "policy.yaml"
        path.write_text(text, encoding="utf-8")
        return load_policy(path)


@pytest.mark.parametrize(("rule", "message"), [
    ("{action: require_approval, approval_timeout: 0}", "approval_timeout must be a duration from 1s to 7d"),
    ("{action: require_approval, approval_timeout: soon}", "approval_timeout must be a duration"),
    ("{action: require_approval, approver: boss}", "approver must be one of user, operator"),
    ("{action: require_approval, rate_limit: 5/minute}", "a require_approval rule takes no rate_limit"),
    ("{action: require_approval, validate: {required_args: true}}", "a require_approval rule takes no validate"),
    ("{rate_limit: 5/minute, approver: operator}", "approver applies to `action: require_approval` rules only"),
])
def test_approval_typos_fail_with_file_line_and_column(rule: str, message: str) -> None:
    errors = load_errors(f"tools:\n  t:\n    rules:\n      - {rule}\n")
    assert any(message in e.message and e.line == 4 and e.column > 0 for e in errors), errors


# --- the guard ------------------------------------------------------------------------------------


def guard_for(text: str, book: ApprovalBook | None) -> Guard:
    return Guard(Engine(compile_policy(load_policy_text(text))), Limiter(MemoryStore()), approvals=book)


def test_guard_consumes_an_approval_and_takes_limits_only_then() -> None:
    clock = ManualClock(1_800_000_000.0)
    book = ApprovalBook(open_approvals("memory"), clock.now)
    guard = guard_for(APPROVAL, book)
    try:
        doc = {**call_doc("refund", {"amount": 500}), "server": {"name": "pay"}}
        held = guard.decide(doc)
        assert held.decision.action == "require_approval" and held.approval is not None and held.taken is None
        assert held.hold is not None and held.hold.timeout == 600
        assert held.meta()["approval_id"] == held.approval.id
        assert guard.decide(doc).approval.id == held.approval.id  # type: ignore[union-attr]
        book.approve(held.approval.id, "bob")
        ran = guard.decide({**doc, "tool": {"name": "refund", "arguments": {"amount": 500.0}}})
        assert ran.allow and ran.taken is not None  # one token of refund/budget, taken now
        assert book.get(held.approval.id).status == "running"  # type: ignore[union-attr]
        guard.finish(ran, {"code": -32000, "message": "upstream failed"}, refund=True, answered=True)
        assert book.get(held.approval.id).status == "approved"  # given back: the call failed
        again = guard.decide(doc)
        assert again.allow  # the failed call's token came back (a JSON-RPC error): this takes the first
        small = {**doc, "tool": {"name": "refund", "arguments": {"amount": 50}}}
        assert guard.decide(small).allow  # the second of two a minute
        limited = guard.decide(small)
        assert not limited.allow and limited.decision.rule == "refund/budget"
    finally:
        guard.engine.close()


def test_guard_without_a_book_answers_held_with_no_id() -> None:
    guard = guard_for(APPROVAL, None)
    try:
        v = guard.decide(call_doc("deploy", {}))
        assert v.decision.action == "require_approval" and v.approval is None and v.hold is not None
        assert v.hold.approver == "operator" and "approval_id" not in v.meta()
    finally:
        guard.engine.close()


def test_a_proxy_with_state_in_memory_says_no_cli_can_reach_its_approvals() -> None:
    from regoguard.approvals.stores import MemoryApprovals
    from regoguard.proxy.replies import denial_reply

    guard = guard_for(APPROVAL, ApprovalBook(MemoryApprovals()))
    try:
        msg = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "deploy", "arguments": {}}}
        v = guard.decide(call_doc("deploy", {}))
        text = denial_reply("1", msg, "deploy", v)
        assert v.approval_local and "keeps its state in memory" in text and v.approval.id in text  # type: ignore[union-attr]
    finally:
        guard.engine.close()


# --- what the review found --------------------------------------------------------------------------


def test_numbers_the_server_reads_differently_never_share_an_approval() -> None:
    def exact(text: str) -> str:
        return fingerprint("p", "s", "t", None, "r", text)

    assert exact('{"amount": 12000}') == exact('{"amount": 12000.0}') == exact('{"amount": 1.2e4}')
    assert exact('{"amount": 12000}') != exact('{"amount": 12000.0000000000000001}')
    assert exact('{"n": 9007199254740993}') != exact('{"n": 9007199254740992}')
    assert exact('{"n": 9007199254740993}') == exact('{"n": 9007199254740993.0}')
    assert exact('{"n": 1e999999999}') != exact('{"n": 1e999999998}')  # huge exponents stay cheap and exact
    assert exact('{"n": "5"}') != exact('{"n": 5}') and exact('{"b": 1, "a": 2}') == exact('{"a": 2, "b": 1}')


def test_an_approval_asked_under_one_policy_is_not_applied_under_another(tmp_path: Path) -> None:
    """A reload between the question and the answer: the answer was for the old policy, so the call is
    denied and its retry is decided afresh (here the new policy wants an operator)."""
    book = ApprovalBook(open_approvals("memory"))
    guard = guard_for(APPROVAL, book)
    operator = APPROVAL.replace("approval_timeout: 10m", "approval_timeout: 10m\n        approver: operator")
    newer = Engine(compile_policy(load_policy_text(operator)))
    try:
        doc = call_doc("refund", {"amount": 500})
        held = guard.decide(doc, elicit=True)
        assert held.hold is not None and held.approval is None  # the transport would ask the user
        guard.swap(newer).close()
        ran = guard.granted(held)
        assert not ran.allow and ran.decision.rule == "approval/policy-changed"
        again = guard.decide(doc, elicit=True)
        assert again.approval is not None and again.hold.approver == "operator"  # type: ignore[union-attr]
    finally:
        guard.engine.close()


def test_an_answer_given_out_of_band_stands_for_a_client_that_could_be_asked() -> None:
    book = ApprovalBook(open_approvals("memory"))
    guard = guard_for(APPROVAL, book)
    try:
        doc = call_doc("refund", {"amount": 500})
        first = guard.decide(doc)
        book.deny(first.approval.id, "carol", "no")  # type: ignore[union-attr]
        asked = guard.decide(doc, elicit=True)
        assert asked.decision.rule == "approval/denied" and not asked.allow
    finally:
        guard.engine.close()


def test_arguments_a_person_cannot_be_shown_whole_are_never_approved_unseen() -> None:
    book = ApprovalBook(open_approvals("memory"))
    guard = guard_for(APPROVAL, book)
    try:
        padded = {"amount": 500, "comment": "x" * 3000}
        asked = guard.decide(call_doc("refund", padded), elicit=True)
        assert asked.approval is not None  # too long for a form: held out of band, shown whole there
        assert "x" * 3000 in asked.approval.arguments
        huge = guard.decide(call_doc("refund", {"amount": 500, "comment": "x" * 70000}))
        assert huge.decision.rule == "approval/too-large" and huge.approval is None
    finally:
        guard.engine.close()


def test_the_fingerprint_is_not_shown_where_arguments_are_masked(tmp_path: Path) -> None:
    record = make("secret-fingerprint")("apr-000000000001", 1_800_000_000.0)
    assert "fingerprint" not in record.view(1_800_000_000.0)


def test_the_cli_escapes_what_a_client_chose_and_refuses_a_store_it_cannot_reach(tmp_path: Path) -> None:
    import subprocess
    import sys

    state = str(tmp_path / "state.db")
    store = open_approvals(state)
    book = ApprovalBook(store)

    def forged(approval_id: str, now: float) -> ApprovalRecord:
        return make("fp")(approval_id, now).but(tool="wipe_db\r\x1b[2Kapr-000000000000  approved  read_only",
                                                  principal="eve\u202e")

    record, _ = book.ask("fp", forged)
    store.close()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "regoguard", "approvals", *args], check=False,
                              capture_output=True, text=True, timeout=60)

    for args in (("list", "--state", state), ("show", record.id, "--state", state),
                 ("list", "--json", "--state", state)):
        out = cli(*args)
        assert out.returncode == 0, out.stderr
        assert "\x1b" not in out.stdout and "\r" not in out.stdout and "\u202e" not in out.stdout, out.stdout
        assert "\\u001b" in out.stdout and "\\u202e" in out.stdout, out.stdout
    memory = cli("list", "--state", "memory")
    assert memory.returncode == 2 and "no other process can reach" in memory.stderr
    stray = cli("list", record.id, "--state", state)
    assert stray.returncode == 2 and "takes no id" in stray.stderr
    untouched = tmp_path / "limits.db"
    from regoguard.limits.sqlite_store import SQLiteStore

    SQLiteStore(untouched).close()  # a proxy's file that never held an approval
    before = untouched.read_bytes()
    assert cli("list", "--state", str(untouched)).stdout.strip() == "no pending approvals"
    assert untouched.read_bytes() == before  # listing wrote nothing into it
