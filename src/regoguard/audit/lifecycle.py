"""What ``regoguard status`` reads: each running proxy's registry entry, and its lifecycle events.

A proxy writes one JSON file, ``<status dir>/<pid>.json`` (default ``~/.local/state/regoguard/proxies``),
at startup, on every reload, every ``heartbeat`` seconds and at shutdown: who it is (pid, server, policy,
revision, state backend, fail mode, decision log), when it was last seen, and a tally of its calls
(outcomes, per-minute counts, denials by rule, the last denials). The same moments are appended to
``<status dir>/lifecycle.jsonl`` as ``regoguard/lifecycle`` events (``startup``, ``reload``, ``heartbeat``
with the tally, ``shutdown``): a history beside the registry, kept out of the decision log, whose readers
expect one event per decision. Writing fails open, as the decision log does: a full disk never stops a call.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from regoguard.audit.decision_log import Sink

HEARTBEAT_SECONDS = 15.0
MINUTES_KEPT = 60
RECENT_DENIALS = 10
EVENTS_FILE = "lifecycle.jsonl"
EVENTS_MAX_BYTES = 10 * 1024 * 1024
FORGET_AFTER = 86400.0
"""A registry entry not refreshed for this long (seconds) is deleted by the next proxy that starts."""


def _short(text: str | None, limit: int = 200) -> str | None:
    """A name as the tally keeps it: an agent may call a tool named by a megabyte of text."""
    return text if text is None or len(text) <= limit else text[:limit] + "…"


def default_status_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "regoguard" / "proxies"


@dataclass
class Tally:
    """Counts of one proxy's finished calls (thread-safe)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    denied_by_rule: Counter[str] = field(default_factory=Counter)
    per_minute: dict[int, list[int]] = field(default_factory=dict)  # minute -> [calls, denials]
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_DENIALS))
    changed: bool = False
    """Set by every record; the registry entry is refreshed within a second of a change."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, outcome: str, tool: str | None, rule: str | None, reason: str | None,
               now: float | None = None) -> None:
        now = time.time() if now is None else now
        blocked = outcome in ("denied", "held")
        with self._lock:
            self.changed = True
            self.outcomes[outcome] += 1
            minute = int(now // 60)
            slot = self.per_minute.get(minute)
            if slot is None:  # a new minute: the only time old ones can have fallen out of the window
                slot = self.per_minute[minute] = [0, 0]
                for old in [m for m in self.per_minute if m < minute - MINUTES_KEPT]:
                    del self.per_minute[old]
            slot[0] += 1
            if blocked:
                slot[1] += 1
                self.denied_by_rule[_short(rule) or "?"] += 1
                self.recent.append({"at": now, "outcome": outcome, "tool": _short(tool), "rule": _short(rule),
                                    "reason": (reason or "")[:300]})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self.changed = False
            return {
                "outcomes": dict(self.outcomes),
                "denied_by_rule": dict(self.denied_by_rule.most_common(50)),
                "per_minute": {str(m): list(v) for m, v in sorted(self.per_minute.items())},
                "recent_denials": list(self.recent),
            }


class Lifecycle:
    """One proxy's registry entry and lifecycle events."""

    def __init__(self, directory: Path | None, info: dict[str, Any], tally: Tally,
                 heartbeat: float = HEARTBEAT_SECONDS) -> None:
        self.directory = directory
        self.info = {**info, "pid": os.getpid(), "started": time.time()}
        self.tally = tally
        self.events: Sink | None = None
        if directory is not None:
            from regoguard.audit.decision_log import FileSink

            self.events = FileSink(directory / EVENTS_FILE, EVENTS_MAX_BYTES, 2)
        self.heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writing = threading.Lock()  # the heartbeat, a reload and the shutdown may write at once
        self.path = directory / f"{os.getpid()}.json" if directory is not None else None

    def start(self) -> None:
        self._prune(time.time())
        self._write("startup")
        self._thread = threading.Thread(target=self._beat, name="regoguard-heartbeat", daemon=True)
        self._thread.start()

    def reloaded(self, revision: str) -> None:
        self.info["revision"] = revision
        self._write("reload")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self._write("shutdown")

    def _prune(self, now: float) -> None:
        """Entries of proxies not seen for a day go (the directory stays small however many have run)."""
        if self.directory is None or not self.directory.is_dir():
            return
        for path in self.directory.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, TypeError):
                seen = float(json.loads(path.read_text(encoding="utf-8")).get("last_seen") or 0)
                if now - seen > FORGET_AFTER:
                    path.unlink()

    def _beat(self) -> None:
        """A heartbeat (entry and event) every ``heartbeat`` seconds; between them the entry is refreshed
        within a second of any call, so ``status`` is current without an event per call."""
        last = time.monotonic()
        while not self._stop.wait(min(1.0, self.heartbeat)):
            if time.monotonic() - last >= self.heartbeat:
                last = time.monotonic()
                self._write("heartbeat")
            elif self.tally.changed:
                self._write("heartbeat", logged=False)

    def _write(self, event: str, logged: bool = True) -> None:
        now = time.time()
        if self.directory is not None:
            with contextlib.suppress(OSError):
                self.directory.mkdir(parents=True, exist_ok=True)
        entry = {**self.info, "state": "stopped" if event == "shutdown" else "running", "last_seen": now,
                 "last_event": event, "heartbeat_seconds": self.heartbeat, "tally": self.tally.snapshot()}
        if self.events is not None and logged:
            with contextlib.suppress(OSError, ValueError, TypeError):
                self.events.write(json.dumps({"timestamp": now, "path": "regoguard/lifecycle", "outcome": event,
                                              "proxy": entry}, ensure_ascii=False))
        if self.path is None:
            return
        with self._writing, contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(entry, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, self.path)
