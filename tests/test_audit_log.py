"""Unit tests of the decision log (regoguard.audit.decision_log) and its summary (regoguard.audit.summary).

One event per call, shaped like OPA's decision log; a file sink rotated by size that never loses or splits
an event; a sink that cannot be written is counted and reported on stderr, never raised; ``summarise``
reads the rotated files oldest first.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import structlog

from regoguard.audit import DecisionLog, FileSink, MaskingRules, StderrSink, configure_logging
from regoguard.audit.decision_log import DECISION_PATH, INSTANCE_ID, OUTCOMES
from regoguard.audit.summary import log_files, read_events, summarise
from regoguard.decision import Charge, Decision, Reason

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

CHARGE = Charge(counter="echo._rate_minute", scope="global", cost=1, capacity=2, window=60, strict=False,
                rule="echo/two_per_minute", message="echo is rate limited")
ALLOW = Decision(True, "allow", (), (CHARGE,), cached=False, eval_ns=1234)
DENY = Decision(False, "deny", (Reason("delete_customer/no_deletes", "Deleting customers needs a human."),
                                Reason("*/other", "second reason")), (), cached=True, eval_ns=99)
LIMITED = Decision(False, "deny", (Reason("echo/two_per_minute", "echo is rate limited"),), (), False, 5,
                   {"retry_after": 29.5})


def doc(name: str = "echo", arguments: Any = None) -> dict[str, Any]:
    return {
        "tool": {"name": name, "arguments": {"text": "hi"} if arguments is None else arguments},
        "server": {"name": "spy"},
        "session": {"id": "sess-1", "client": {"name": "c", "version": "1"}, "protocol_version": "2025-11-25"},
        "principal": {"id": "alice", "claims": {}},
    }


class ListSink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)


class BrokenSink:
    def __init__(self) -> None:
        self.calls = 0

    def write(self, line: str) -> None:
        self.calls += 1
        raise OSError(28, "No space left on device")


def new_log(sink: Any, masking: MaskingRules | None = None) -> DecisionLog:
    return DecisionLog(sink, masking or MaskingRules(), "rev-abc", {"server": "spy", "version": "9.9.9"})


def events_of(sink: ListSink) -> list[dict[str, Any]]:
    return [json.loads(line) for line in sink.lines]


# -- one event -------------------------------------------------------------------------------------------------------


def test_allowed_event_shape() -> None:
    sink = ListSink()
    log = new_log(sink)
    before = dt.datetime.now(dt.UTC)
    returned = log.record("11111111-2222-3333-4444-555555555555", doc(), ALLOW, "allowed")
    after = dt.datetime.now(dt.UTC)
    assert len(sink.lines) == 1 and "\n" not in sink.lines[0]
    (event,) = events_of(sink)
    assert event == returned
    assert event["decision_id"] == "11111111-2222-3333-4444-555555555555"
    assert RFC3339_UTC.match(event["timestamp"]), event["timestamp"]
    stamp = dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(seconds=1) <= stamp <= after + dt.timedelta(seconds=1)
    assert event["path"] == DECISION_PATH == "regoguard/lib/decision"
    assert event["input"] == doc()
    assert event["result"] == {"allow": True, "action": "allow", "reasons": [], "charges": [CHARGE.to_json()]}
    assert event["revision"] == "rev-abc"
    assert event["labels"] == {"server": "spy", "version": "9.9.9", "instance": INSTANCE_ID}
    assert UUID_RE.match(event["labels"]["instance"])
    assert event["metrics"] == {"timer_regoguard_eval_ns": 1234, "cached": False}
    assert event["outcome"] == "allowed"
    assert event["mode"] == "enforce"
    assert event["tool"] == "echo"
    for absent in ("erased", "masked", "rule", "reason", "upstream_error", "event"):
        assert absent not in event, absent
    assert log.written == 1 and log.failed == 0


def test_denied_event_names_the_first_rule_and_reason() -> None:
    sink = ListSink()
    new_log(sink).record("d1", doc("delete_customer", {"customer_id": "c1"}), DENY, "denied")
    (event,) = events_of(sink)
    assert event["outcome"] == "denied"
    assert event["rule"] == "delete_customer/no_deletes"
    assert event["reason"] == "Deleting customers needs a human."
    assert event["result"]["allow"] is False and event["result"]["action"] == "deny"
    assert event["result"]["reasons"] == [
        {"rule": "delete_customer/no_deletes", "message": "Deleting customers needs a human."},
        {"rule": "*/other", "message": "second reason"},
    ]
    assert event["metrics"] == {"timer_regoguard_eval_ns": 99, "cached": True}
    assert event["tool"] == "delete_customer"


def test_rate_limited_event_carries_retry_after() -> None:
    sink = ListSink()
    new_log(sink).record("r1", doc(), LIMITED, "denied")
    (event,) = events_of(sink)
    assert event["result"]["retry_after"] == 29.5
    assert event["rule"] == "echo/two_per_minute"


def test_would_deny_and_upstream_error_events() -> None:
    sink = ListSink()
    log = new_log(sink)
    log.record("w1", doc("delete_customer"), DENY, "would_deny", mode="dry_run")
    log.record("u1", doc("ghost"), ALLOW, "upstream_error", upstream_error={"code": -32602, "message": "Unknown"})
    would, upstream = events_of(sink)
    assert would["outcome"] == "would_deny" and would["mode"] == "dry_run"
    assert would["rule"] == "delete_customer/no_deletes"
    assert upstream["outcome"] == "upstream_error"
    assert upstream["upstream_error"] == {"code": -32602, "message": "Unknown"}
    assert {e["outcome"] for e in (would, upstream)} <= set(OUTCOMES)
    assert OUTCOMES == ("allowed", "denied", "would_deny", "upstream_error", "held")


def test_event_input_is_masked_and_lists_erased_and_masked() -> None:
    sink = ListSink()
    original = doc("pay", {"card": {"number": "4111-1111", "cvv": "987"}, "password": "pw", "note": "n"})
    log = new_log(sink, MaskingRules(erase=("/card/number",)))
    log.record("m1", original, ALLOW, "allowed")
    (event,) = events_of(sink)
    assert event["input"]["tool"]["arguments"] == {"card": {"cvv": "***"}, "password": "***", "note": "n"}
    assert event["erased"] == ["/input/tool/arguments/card/number"]
    assert event["masked"] == ["/input/tool/arguments/card/cvv", "/input/tool/arguments/password"]
    # as JSON strings: a bare "987" can occur in the event's random decision id or its timestamp
    for secret in ('"4111-1111"', '"987"', '"pw"'):
        assert secret not in sink.lines[0]
    # the rest of the input is logged as it was, and the caller's document is untouched
    assert {k: v for k, v in event["input"].items() if k != "tool"} == {k: v for k, v in doc().items() if k != "tool"}
    assert original["tool"]["arguments"]["card"]["number"] == "4111-1111"
    assert original["tool"]["arguments"]["password"] == "pw"


def test_hashed_arguments_event() -> None:
    sink = ListSink()
    new_log(sink, MaskingRules(hash_arguments=True)).record("h1", doc("x", {"password": "pw", "a": 1}), ALLOW,
                                                            "allowed")
    (event,) = events_of(sink)
    assert set(event["input"]["tool"]["arguments"]) == {"sha256"}
    assert event["masked"] == ["/input/tool/arguments"]
    assert "erased" not in event
    assert '"pw"' not in sink.lines[0]


def test_event_for_a_call_that_never_reached_the_policy() -> None:
    """The proxy logs invalid params with a document holding only the tool (name may be None)."""
    sink = ListSink()
    new_log(sink).record("i1", {"tool": {"name": None, "arguments": {}}},
                         Decision.deny("proxy/invalid-params", "bad"), "denied")
    (event,) = events_of(sink)
    assert event["tool"] is None and event["rule"] == "proxy/invalid-params"
    assert event["input"] == {"tool": {"name": None, "arguments": {}}}


def test_no_sink_still_returns_the_event() -> None:
    log = new_log(None)
    event = log.record("n1", doc(), ALLOW, "allowed")
    assert event["decision_id"] == "n1" and event["outcome"] == "allowed"
    assert log.written == 0 and log.failed == 0


def test_non_ascii_is_kept_readable(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    new_log(FileSink(path)).record("u", doc("echo", {"text": "héllo ✓ 日本"}), ALLOW, "allowed")
    raw = path.read_bytes()
    assert "héllo ✓ 日本".encode() in raw
    assert json.loads(raw)["input"]["tool"]["arguments"]["text"] == "héllo ✓ 日本"


def test_stderr_sink_writes_one_line_per_event(capsys: pytest.CaptureFixture[str]) -> None:
    log = new_log(StderrSink())
    log.record("s1", doc(), ALLOW, "allowed")
    log.record("s2", doc(), DENY, "denied")
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert [json.loads(line)["decision_id"] for line in lines] == ["s1", "s2"]


@pytest.fixture
def restore_structlog() -> Any:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.parametrize("level", ["warning", "error"])
def test_stderr_log_level_does_not_silence_the_decision_log(tmp_path: Path, level: str,
                                                            restore_structlog: None) -> None:
    """BUG: `regoguard run --log-level warning` (or REGOGUARD_LOG_LEVEL=warning) turns the decision log off.

    DecisionLog wraps its sink with ``structlog.wrap_logger`` without a wrapper class, so it takes the global
    filtering wrapper configure_logging() set for the stderr log; an ``info`` event below the level is dropped
    before it reaches the sink, and is still counted as written.
    """
    configure_logging(level)
    path = tmp_path / "d.jsonl"
    log = new_log(FileSink(path))
    log.record("lvl-1", doc(), DENY, "denied")
    assert path.exists(), f"--log-level {level} dropped the decision event (log.written={log.written})"
    assert [e["decision_id"] for e in read_events(path)] == ["lvl-1"]


# -- a sink that cannot be written -----------------------------------------------------------------------------------


def test_unwritable_file_sink_does_not_raise_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    log = new_log(FileSink(blocker / "d.jsonl"))
    for i in range(3):
        event = log.record(f"x{i}", doc(), DENY, "denied")
        assert event["decision_id"] == f"x{i}"
    assert log.failed == 3 and log.written == 0
    err = capsys.readouterr().err
    assert "cannot write the decision log" in err and "enforcement goes on" in err
    assert err.count("cannot write the decision log") == 1  # reported once, not once per event
    assert blocker.read_text() == "x"


def test_failing_sink_is_reported_every_hundred_failures(capsys: pytest.CaptureFixture[str]) -> None:
    sink = BrokenSink()
    log = new_log(sink)
    for i in range(250):
        log.record(str(i), doc(), ALLOW, "allowed")
    assert sink.calls == 250 and log.failed == 250 and log.written == 0
    err = capsys.readouterr().err
    assert err.count("cannot write the decision log") == 3  # failures 1, 100 and 200
    assert "(100 events lost so far)" in err and "(200 events lost so far)" in err


def test_sink_recovers_after_failures(tmp_path: Path) -> None:
    blocker = tmp_path / "dir"
    blocker.write_text("x")
    path = blocker / "d.jsonl"
    log = new_log(FileSink(path))
    log.record("lost", doc(), ALLOW, "allowed")
    blocker.unlink()
    blocker.mkdir()
    log.record("kept", doc(), ALLOW, "allowed")
    assert log.failed == 1 and log.written == 1
    assert [e["decision_id"] for e in read_events(path)] == ["kept"]


def test_upstream_error_text_that_is_not_utf8_encodable_does_not_raise(tmp_path: Path) -> None:
    """BUG: a lone surrogate (JSON ``"\\ud800"``, valid JSON and accepted by the proxy's parser) in what an
    event carries makes FileSink.write raise UnicodeEncodeError. Only OSError is caught, so the exception
    leaves DecisionLog.record and Guard.finish: on a server's answer it kills the proxy (see
    test_audit_e2e.py::test_server_error_with_a_lone_surrogate_does_not_kill_the_proxy)."""
    path = tmp_path / "d.jsonl"
    log = new_log(FileSink(path))
    log.record("s1", doc("ghost"), ALLOW, "upstream_error", upstream_error={"code": -1, "message": "bad \ud800"})
    log.record("s2", doc(), ALLOW, "allowed")
    assert [e["decision_id"] for e in read_events(path)][-1] == "s2"


# -- rotation --------------------------------------------------------------------------------------------------------


def line_of(i: int, width: int = 100) -> str:
    body = json.dumps({"decision_id": f"id-{i:04d}", "outcome": "allowed", "pad": ""})
    return body.replace('"pad": ""', '"pad": "' + "x" * (width - len(body)) + '"')


def test_rotation_keeps_the_backup_bound(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    sink = FileSink(path, max_bytes=350, backups=2)
    for i in range(40):
        sink.write(line_of(i))  # 101 bytes a line: 3 lines a file
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["d.jsonl", "d.jsonl.1", "d.jsonl.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 350
    ids = [e["decision_id"] for e in read_events(path)]
    # oldest first, consecutive, ending with the last line written
    assert ids[-1] == "id-0039"
    assert ids == [f"id-{i:04d}" for i in range(40 - len(ids), 40)]
    assert len(ids) >= 7


def test_rotation_loses_and_splits_nothing_within_the_backups(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    sink = FileSink(path, max_bytes=500, backups=100)
    for i in range(60):
        sink.write(line_of(i, width=80 + (i * 37) % 90))
    files = log_files(path)
    assert files[-1] == path and len(files) > 5
    assert [p.name for p in files[:-1]] == [f"d.jsonl.{n}" for n in range(len(files) - 1, 0, -1)]
    for p in files:
        data = p.read_bytes()
        assert data.endswith(b"\n") and len(data) <= 500
        for raw in data.splitlines():
            json.loads(raw)  # every line whole
    assert [e["decision_id"] for e in read_events(path)] == [f"id-{i:04d}" for i in range(60)]


def test_no_backups_keeps_only_the_current_file(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    sink = FileSink(path, max_bytes=250, backups=0)
    for i in range(10):
        sink.write(line_of(i))
    assert [p.name for p in tmp_path.iterdir()] == ["d.jsonl"]
    assert [e["decision_id"] for e in read_events(path)] == ["id-0008", "id-0009"]


def test_an_event_larger_than_max_bytes_is_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    sink = FileSink(path, max_bytes=150, backups=3)
    sink.write(line_of(0))
    sink.write(line_of(1, width=600))
    sink.write(line_of(2))
    assert [e["decision_id"] for e in read_events(path)] == ["id-0000", "id-0001", "id-0002"]
    assert (tmp_path / "d.jsonl.1").stat().st_size == 601


def test_a_log_moved_away_or_removed_is_followed_to_its_name(tmp_path: Path) -> None:
    """The sink keeps its file open between lines, yet each line lands in the file that has the name when it
    is written: after logrotate moves the file away, and after someone removes it."""
    path = tmp_path / "d.jsonl"
    sink = FileSink(path)
    sink.write(line_of(0))
    path.rename(tmp_path / "moved.jsonl")
    sink.write(line_of(1))
    assert [e["decision_id"] for e in read_events(tmp_path / "moved.jsonl")] == ["id-0000"]
    assert [e["decision_id"] for e in read_events(path)] == ["id-0001"]
    path.unlink()
    sink.write(line_of(2))
    assert [e["decision_id"] for e in read_events(path)] == ["id-0002"]


def test_two_sinks_on_one_log_follow_each_others_rotation(tmp_path: Path) -> None:
    """The proxy and `regoguard approvals` append to one decision log, each through its own sink; when one
    rotates it, the other writes on into the new file, and no line is lost or split."""
    path = tmp_path / "d.jsonl"
    proxy, cli = FileSink(path, max_bytes=350, backups=50), FileSink(path, max_bytes=350, backups=50)
    for i in range(30):
        (proxy if i % 3 else cli).write(line_of(i))
    files = log_files(path)
    assert len(files) > 5
    for p in files:
        assert p.stat().st_size <= 350
    assert [e["decision_id"] for e in read_events(path)] == [f"id-{i:04d}" for i in range(30)]


def test_decision_log_rotation_with_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = new_log(FileSink(path, max_bytes=4000, backups=1000))
    threads_n, per_thread = 8, 40

    def work(t: int) -> None:
        for i in range(per_thread):
            log.record(f"t{t}-{i}", doc("echo", {"text": f"{t}/{i}", "password": "pw"}), ALLOW, "allowed")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert log.written == threads_n * per_thread and log.failed == 0
    files = log_files(path)
    assert len(files) > 10
    seen: list[str] = []
    for p in files:
        assert p.stat().st_size <= 4000
        seen.extend(json.loads(raw)["decision_id"] for raw in p.read_bytes().splitlines())
    assert sorted(seen) == sorted(f"t{t}-{i}" for t in range(threads_n) for i in range(per_thread))
    for t in range(threads_n):  # each writer's events in its own order
        mine = [s for s in seen if s.startswith(f"t{t}-")]
        assert mine == [f"t{t}-{i}" for i in range(per_thread)]


# -- summarise -------------------------------------------------------------------------------------------------------


def ev(i: int, outcome: str, tool: str, rule: str | None = None, reason: str | None = None) -> str:
    event: dict[str, Any] = {"decision_id": f"id-{i}", "timestamp": f"2026-01-01T00:00:{i:02d}.000000Z",
                             "outcome": outcome, "tool": tool}
    if rule is not None:
        event["rule"] = rule
        event["reason"] = reason or f"reason {i}"
    return json.dumps(event)


@pytest.fixture
def rotated_log(tmp_path: Path) -> Path:
    path = tmp_path / "d.jsonl"
    (tmp_path / "d.jsonl.2").write_text("\n".join([
        ev(1, "allowed", "echo"),
        ev(2, "denied", "delete_customer", "delete_customer/no_deletes"),
    ]) + "\n")
    (tmp_path / "d.jsonl.1").write_text("\n".join([
        ev(3, "denied", "echo", "echo/two_per_minute"),
        "not json at all",
        "",
        json.dumps({"no": "decision_id"}),
        ev(4, "upstream_error", "ghost"),
    ]) + "\n")
    path.write_text("\n".join([
        ev(5, "would_deny", "delete_customer", "delete_customer/no_deletes"),
        ev(6, "allowed", "echo"),
        ev(7, "denied", "bulk_tool_010", "hide"),
    ]) + "\n")
    (tmp_path / "d.jsonl.bak").write_text(ev(99, "denied", "x", "y") + "\n")  # not a rotated file
    (tmp_path / "other.jsonl.1").write_text(ev(98, "denied", "x", "y") + "\n")
    return path


def test_log_files_oldest_first(rotated_log: Path) -> None:
    d = rotated_log.parent
    assert log_files(rotated_log) == [d / "d.jsonl.2", d / "d.jsonl.1", d / "d.jsonl"]
    assert [e["decision_id"] for e in read_events(rotated_log)] == [f"id-{i}" for i in range(1, 8)]


def test_log_files_orders_backups_numerically(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    for n in (1, 2, 10, 11, 3):
        (tmp_path / f"d.jsonl.{n}").write_text(ev(100 - n, "allowed", "echo") + "\n")
    assert [p.name for p in log_files(path)] == ["d.jsonl.11", "d.jsonl.10", "d.jsonl.3", "d.jsonl.2", "d.jsonl.1"]


def test_summarise_counts(rotated_log: Path) -> None:
    s = summarise(rotated_log)
    assert s.files == [str(p) for p in log_files(rotated_log)]
    assert s.calls == 7
    assert dict(s.outcomes) == {"allowed": 2, "denied": 3, "would_deny": 1, "upstream_error": 1}
    assert dict(s.blocked_by_rule) == {"delete_customer/no_deletes": 2, "echo/two_per_minute": 1, "hide": 1}
    assert dict(s.blocked_by_tool) == {"delete_customer": 2, "echo": 1, "bulk_tool_010": 1}
    assert [r["decision_id"] for r in s.recent] == ["id-7", "id-5", "id-3", "id-2"]  # newest first
    assert s.recent[0] == {"timestamp": "2026-01-01T00:00:07.000000Z", "decision_id": "id-7", "outcome": "denied",
                           "tool": "bulk_tool_010", "rule": "hide", "reason": "reason 7"}
    as_json = s.to_json()
    assert as_json["calls"] == 7
    assert as_json["denials_by_rule"] == {"delete_customer/no_deletes": 2, "echo/two_per_minute": 1, "hide": 1}
    assert as_json["denials_by_tool"]["delete_customer"] == 2
    assert next(iter(as_json["outcomes"])) == "denied"  # most common first
    json.dumps(as_json)


def test_summarise_recent_limit(rotated_log: Path) -> None:
    assert [r["decision_id"] for r in summarise(rotated_log, recent=2).recent] == ["id-7", "id-5"]
    assert summarise(rotated_log, recent=0).recent == []


def test_summary_render(rotated_log: Path) -> None:
    text = summarise(rotated_log).render()
    assert text.startswith("7 calls in 3 file(s)")
    assert "denials by rule:" in text and "denials by tool:" in text and "recent denials:" in text
    assert "delete_customer/no_deletes" in text and "would_deny" in text
    lines = text.splitlines()
    recent = lines[lines.index("recent denials:") + 1:]
    assert "bulk_tool_010" in recent[0] and "hide" in recent[0]


def test_summarise_missing_file(tmp_path: Path) -> None:
    s = summarise(tmp_path / "nope.jsonl")
    assert s.files == [] and s.calls == 0 and s.recent == []
    assert s.render().startswith("0 calls in 0 file(s)")


def test_summarise_only_rotated_files_left(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl.1").write_text(ev(1, "denied", "echo", "r") + "\n")
    s = summarise(tmp_path / "d.jsonl")
    assert s.calls == 1 and s.files == [str(tmp_path / "d.jsonl.1")]


def test_summarise_a_file_the_decision_log_wrote(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = new_log(FileSink(path, max_bytes=1500, backups=20))
    log.record("a", doc(), ALLOW, "allowed")
    log.record("b", doc("delete_customer"), DENY, "denied")
    log.record("c", doc(), LIMITED, "would_deny", mode="dry_run")
    log.record("d", doc("ghost"), ALLOW, "upstream_error", upstream_error={"code": 1, "message": "m"})
    assert len(log_files(path)) > 1
    s = summarise(path)
    assert s.calls == 4
    assert dict(s.outcomes) == {"allowed": 1, "denied": 1, "would_deny": 1, "upstream_error": 1}
    assert dict(s.blocked_by_rule) == {"delete_customer/no_deletes": 1, "echo/two_per_minute": 1}
    assert [r["decision_id"] for r in s.recent] == ["c", "b"]


def test_log_files_with_glob_characters_in_the_name(tmp_path: Path) -> None:
    """BUG: log_files() finds rotated files with Path.glob(name + ".*"), so a log named ``[prod].jsonl``
    (glob metacharacters) never finds ``[prod].jsonl.1`` …: `regoguard log` silently skips every rotated
    file."""
    path = tmp_path / "[prod].jsonl"
    sink = FileSink(path, max_bytes=150, backups=3)
    for i in range(3):
        sink.write(line_of(i))
    assert (tmp_path / "[prod].jsonl.2").exists()
    assert [p.name for p in log_files(path)] == ["[prod].jsonl.2", "[prod].jsonl.1", "[prod].jsonl"]
    assert summarise(path).calls == 3
