"""The decision log: one JSON object per decided call, shaped like OPA's decision log.

A pipeline of small steps: build the event (``decision_event``), mask it (``masking``), write it to a
sink. Logging fails open: a sink that cannot be written is reported on stderr and enforcement goes on
(the guard itself fails closed; its log must never be the reason a call is blocked or let through).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
import uuid
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from regoguard.audit.masking import MaskingRules, mask_arguments
from regoguard.decision import Decision

if TYPE_CHECKING:
    from regoguard.approvals.record import ApprovalRecord

DECISION_PATH = "regoguard/lib/decision"
OUTCOMES = ("allowed", "denied", "would_deny", "upstream_error", "held")
"""A call's outcome: ``held`` is a call waiting for a person's approval (never forwarded as it stands)."""
APPROVAL_PATH = "regoguard/approval"
INSTANCE_ID = str(uuid.uuid4())


class Sink(Protocol):
    def write(self, line: str) -> None:
        """Write one line (no newline). Raises OSError when it cannot."""
        ...


class StderrSink:
    def write(self, line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class FileSink:
    """JSON lines appended to ``path``, rotated by size: ``path`` → ``path.1`` → … ``path.<backups>``.

    The file stays open between lines; before each line the name is looked up again, so a file another
    process rotated, moved away (logrotate) or removed is followed to whatever now has the name: every
    line lands in the file called ``path`` when it is written, as if the file were opened for each one.
    """

    def __init__(self, path: str | Path, max_bytes: int = 50 * 1024 * 1024, backups: int = 5) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._file_id: tuple[int, int] | None = None

    def _rotate(self) -> None:
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()

    def _open(self) -> os.stat_result:
        self._close()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        status = os.fstat(fd)
        self._fd, self._file_id = fd, (status.st_dev, status.st_ino)
        return status

    def _close(self) -> None:
        fd, self._fd, self._file_id = self._fd, None, None
        if fd is not None:
            os.close(fd)

    def write(self, line: str) -> None:
        # backslashreplace: a lone surrogate (a server's cut-off emoji) becomes a valid \\udXXX escape
        data = memoryview((line + "\n").encode("utf-8", "backslashreplace"))
        with self._lock:
            try:
                try:
                    status = os.stat(self.path)
                except FileNotFoundError:
                    status = None
                if status is None or (status.st_dev, status.st_ino) != self._file_id:
                    status = self._open()  # first line, or the name now points at another file (or none)
                if status.st_size and status.st_size + len(data) > self.max_bytes:
                    self._close()
                    self._rotate()
                    self._open()
                assert self._fd is not None
                while data:
                    data = data[os.write(self._fd, data):]
            except OSError:
                self._close()  # the next line starts again from the name
                raise

    def close(self) -> None:
        """Close the file (a later line opens it again)."""
        with self._lock:
            self._close()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


class _SinkLogger:
    """The structlog logger at the end of the decision pipeline: hands the rendered line to the sink."""

    def __init__(self, sink: Sink, on_error: Callable[[Exception], None]) -> None:
        self._sink = sink
        self._on_error = on_error

    def msg(self, message: str) -> None:
        try:
            self._sink.write(message)
        except (OSError, ValueError) as exc:
            self._on_error(exc)

    info = msg


def _timestamp() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class DecisionLog:
    """Writes decision events. ``sink=None`` turns the log off (events are still counted)."""

    def __init__(self, sink: Sink | None, masking: MaskingRules, revision: str, labels: dict[str, str]) -> None:
        self.masking = masking
        self.revision = revision
        self.labels = {**labels, "instance": INSTANCE_ID}
        self.written = 0
        self.failed = 0
        self._logger = None
        if sink is not None:
            # An unfiltered wrapper: the stderr log level must never silence decision events.
            self._logger = structlog.wrap_logger(
                _SinkLogger(sink, self._report),
                processors=[_drop_event_key, structlog.processors.JSONRenderer(ensure_ascii=False)],
                wrapper_class=structlog.BoundLogger,
            )

    def _report(self, exc: Exception) -> None:
        self.failed += 1
        if self.failed == 1 or self.failed % 100 == 0:
            print(f"regoguard: cannot write the decision log ({self.failed} events lost so far): {exc}; "
                  "enforcement goes on", file=sys.stderr, flush=True)

    def tool_changed(self, tool: str, reason: str, fields: list[str], action: str, session: str | None,
                     server: str | None) -> None:
        """Write the event of a pinned tool that is new or changed (fails open, as every event does)."""
        if self._logger is None:
            return
        try:
            self._logger.info("tool_changed", **tool_changed_event(tool, reason, fields, action, session, server,
                                                                   self.labels, self.revision))
            self.written += 1
        except Exception as exc:
            self._report(exc)

    def approval(self, kind: str, record: ApprovalRecord, extra: dict[str, Any]) -> None:
        """Write an approval's event: ``approval_requested``, ``_approved``, ``_denied``, ``_expired``,
        ``_consumed`` or ``_restored`` (fails open)."""
        if self._logger is None:
            return
        try:
            self._logger.info("approval", **approval_event(kind, record, extra, self.labels))
            self.written += 1
        except Exception as exc:
            self._report(exc)

    def record(self, decision_id: str, doc: dict[str, Any], decision: Decision, outcome: str,
               mode: str = "enforce", upstream_error: Any = None, revision: str | None = None,
               trace: dict[str, str] | None = None, approval_id: str | None = None) -> dict[str, Any]:
        """Build, mask and write the event for one call; return it (masked). ``revision``: the policy that
        decided it, when not the log's own (after a hot reload); ``trace``: the call's W3C trace context;
        ``approval_id``: the approval that holds the call, denied it, or that it ran under."""
        event = decision_event(decision_id, doc, decision, outcome, self.masking, revision or self.revision,
                               self.labels, mode, upstream_error)
        if trace:
            event["trace_context"] = trace
        if approval_id is not None:
            event["approval_id"] = approval_id
        if self._logger is not None:
            before = self.failed
            try:
                self._logger.info("decision", **event)
            except Exception as exc:  # the log fails open: never let it break the call or the session
                self._report(exc)
            if self.failed == before:
                self.written += 1
        return event


def tool_changed_event(tool: str, reason: str, fields: list[str], action: str, session: str | None,
                       server: str | None, labels: dict[str, str], revision: str) -> dict[str, Any]:
    """The event of a pinned server's tool that is new or changed (``outcome: tool_changed``)."""

    return {
        "decision_id": str(uuid.uuid4()),
        "timestamp": _timestamp(),
        "path": "regoguard/pin",
        "input": {"tool": {"name": tool}, "server": {"name": server}, "session": {"id": session}},
        "result": {"allow": action == "warn", "action": "deny" if action == "deny" else "allow"},
        "revision": revision,
        "labels": labels,
        "outcome": "tool_changed",
        "mode": action,
        "tool": tool,
        "rule": "pin/changed",
        "reason": reason,
        "changed": fields,
    }


def approval_event(kind: str, record: ApprovalRecord, extra: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """The event of one step in an approval's life (``outcome: approval_<kind>``): the call it is for
    (arguments as shown to the approver, already masked), who answered and why."""
    from regoguard.approvals.record import iso

    # never the fingerprint: it hashes the unmasked arguments, so a masked low-entropy value could be guessed
    approval: dict[str, Any] = {"id": record.id, "status": record.status, "approver": record.approver,
                                "expires_at": iso(record.expires_at)}
    for k in ("decided_by", "reason"):
        if getattr(record, k) is not None:
            approval[k] = getattr(record, k)
    event: dict[str, Any] = {
        "decision_id": str(uuid.uuid4()),
        "timestamp": _timestamp(),
        "path": APPROVAL_PATH,
        "input": {"tool": {"name": record.tool, "arguments": _as_json(record.arguments)},
                  "server": {"name": record.server},
                  "principal": {"id": record.principal}},
        "result": {"allow": False, "action": "require_approval"},
        "revision": record.revision,
        "labels": labels,
        "outcome": f"approval_{kind}",
        "tool": record.tool,
        "rule": record.rule,
        "reason": record.message,
        "approval": approval,
    }
    event.update({k: v for k, v in extra.items() if v is not None})
    return event


def _as_json(text: str) -> Any:
    """An approval's shown arguments (canonical JSON text) as the object they are."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _drop_event_key(logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event_dict.pop("event", None)
    return event_dict


def decision_event(decision_id: str, doc: dict[str, Any], decision: Decision, outcome: str, masking: MaskingRules,
                   revision: str, labels: dict[str, str], mode: str = "enforce",
                   upstream_error: Any = None) -> dict[str, Any]:
    raw_tool = doc.get("tool")
    tool: dict[str, Any] = raw_tool if isinstance(raw_tool, dict) else {}
    arguments, erased, masked = mask_arguments(tool.get("arguments", {}), masking)
    logged_input = {**doc, "tool": {**tool, "arguments": arguments}}
    result = decision.to_json()
    if decision.extra.get("retry_after") is not None:
        result["retry_after"] = decision.extra["retry_after"]
    event: dict[str, Any] = {
        "decision_id": decision_id,
        "timestamp": _timestamp(),
        "path": DECISION_PATH,
        "input": logged_input,
        "result": result,
        "revision": revision,
        "labels": labels,
        "metrics": {"timer_regoguard_eval_ns": decision.eval_ns, "cached": decision.cached},
        "outcome": outcome,
        "mode": mode,
        "tool": tool.get("name"),
    }
    if decision.rule is not None:
        event["rule"] = decision.rule
        event["reason"] = decision.message
    if erased:
        event["erased"] = erased
    if masked:
        event["masked"] = masked
    if upstream_error is not None:
        event["upstream_error"] = upstream_error
    return event
