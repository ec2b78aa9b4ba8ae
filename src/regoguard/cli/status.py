"""``regoguard status``: the proxies on this machine, alive or not, and what they have been deciding.

Each ``run``/``serve`` registers itself in the status directory and refreshes its entry every heartbeat
(:mod:`regoguard.audit.lifecycle`); this reads those entries: who each proxy is, whether it is alive,
calls per minute, the denial rate, the top denying rules and the latest denials.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from regoguard.audit.lifecycle import default_status_dir
from regoguard.cli.common import EXIT_FAIL, EXIT_OK

RATE_MINUTES = 5


def add_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="the proxies running on this machine and what they decided",
                       description="List the regoguard proxies on this machine (from their registry entries): "
                                   "alive, stopped or dead, calls per minute, denial rate, top deny rules and "
                                   "recent denials.")
    p.add_argument("--status-dir", metavar="DIR", help="where proxies register (default "
                                                       "~/.local/state/regoguard/proxies, as run and serve use)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--all", action="store_true", help="also list proxies that stopped or died")
    p.add_argument("--prune", action="store_true", help="delete the entries of proxies that stopped or died")
    p.set_defaults(func=cmd_status)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but there
    return True


def liveness(entry: dict[str, Any], now: float) -> str:
    """``alive``, ``stopped`` (shut down cleanly) or ``dead`` (gone, or silent past three heartbeats)."""
    if entry.get("state") == "stopped":
        return "stopped"
    pid = entry.get("pid")
    beat = float(entry.get("heartbeat_seconds") or 15)
    if not isinstance(pid, int) or not _alive(pid) or now - float(entry.get("last_seen") or 0) > 3 * beat + 5:
        return "dead"
    return "alive"


def summary(entry: dict[str, Any], now: float) -> dict[str, Any]:
    tally = entry.get("tally") or {}
    outcomes: dict[str, int] = tally.get("outcomes") or {}
    calls = sum(outcomes.values())
    blocked = outcomes.get("denied", 0) + outcomes.get("held", 0)
    minute = int(now // 60)
    recent = [v for m, v in (tally.get("per_minute") or {}).items() if minute - RATE_MINUTES < int(m) <= minute]
    rules = sorted((tally.get("denied_by_rule") or {}).items(), key=lambda kv: -kv[1])[:5]
    return {
        **{k: entry.get(k) for k in ("pid", "command", "server", "policy", "revision", "store", "state_backend",
                                     "fail_mode", "decision_log", "upstream", "listen", "dry_run")
           if entry.get(k) is not None},
        "status": liveness(entry, now),
        "started": _iso(entry.get("started")),
        "last_seen": _iso(entry.get("last_seen")),
        "calls": calls,
        "outcomes": outcomes,
        "calls_per_minute": round(sum(v[0] for v in recent) / RATE_MINUTES, 2),
        "denial_rate": round(blocked / calls, 4) if calls else 0.0,
        "top_deny_rules": dict(rules),
        "recent_denials": [{**d, "at": _iso(d.get("at"))} for d in (tally.get("recent_denials") or [])][-5:],
    }


def read_entries(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(directory.glob("*.json")):
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being replaced, or not ours
        if isinstance(entry, dict):
            out.append((path, entry))
    return out


def cmd_status(args: argparse.Namespace, out: BinaryIO) -> int:
    directory = Path(args.status_dir) if args.status_dir else default_status_dir()
    if not directory.is_dir():
        if args.json:
            _write(out, "[]")
            return EXIT_OK
        _write(out, f"no regoguard proxies have registered in {directory}")
        return EXIT_OK
    now = time.time()
    rows = []
    for path, entry in read_entries(directory):
        row = summary(entry, now)
        if row["status"] != "alive" and args.prune:
            try:
                path.unlink()
            except OSError as exc:
                print(f"error: cannot delete {path}: {exc}", file=sys.stderr)
                return EXIT_FAIL
            continue
        if row["status"] == "alive" or args.all:
            rows.append(row)
    if args.json:
        _write(out, json.dumps(rows, ensure_ascii=False, indent=2))
        return EXIT_OK
    if not rows:
        _write(out, "no regoguard proxies running" + ("" if args.all else " (--all lists stopped and dead ones)"))
        return EXIT_OK
    for row in rows:
        _write(out, _render(row))
    return EXIT_OK


def _render(row: dict[str, Any]) -> str:
    dry = "  dry run" if row.get("dry_run") else ""
    lines = [f"pid {row.get('pid')}  {row['status']}  {row.get('command', 'run')} {row.get('server')}  "
             f"last seen {row['last_seen']}",
             f"  policy {row.get('policy')} (revision {row.get('revision')}){dry}",
             f"  state {_store(row)}  fail {row.get('fail_mode')}  "
             f"decision log {row.get('decision_log')}",
             f"  {row['calls']} calls, {row['calls_per_minute']:g}/min over {RATE_MINUTES} min, "
             f"denial rate {row['denial_rate'] * 100:.1f}%"]
    if row["top_deny_rules"]:
        lines.append("  top deny rules: " + ", ".join(f"{r} ({n})" for r, n in row["top_deny_rules"].items()))
    for d in row["recent_denials"]:
        says = "held for approval" if d.get("outcome") == "held" else "denied"
        lines.append(f"    {d.get('at')}  {says}  {d.get('tool')}  {d.get('rule')}: {d.get('reason')}")
    return "\n".join(lines)


def _store(row: dict[str, Any]) -> str:
    backend, store = row.get("state_backend"), row.get("store")
    return str(backend) if store in (None, backend) else f"{backend} {store}"


def _iso(t: Any) -> str | None:
    if not isinstance(t, int | float):
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _write(out: BinaryIO, text: str) -> None:
    out.write((text + "\n").encode("utf-8", "backslashreplace"))
