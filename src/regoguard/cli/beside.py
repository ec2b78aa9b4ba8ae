"""What runs beside the guard for ``run`` and ``serve``: the approvals store, the approval webhook, and
the registry entry ``regoguard status`` reads."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from regoguard.approvals import ApprovalBook, open_approvals
from regoguard.approvals.stores import MemoryApprovals
from regoguard.approvals.webhook import Webhook
from regoguard.audit.lifecycle import Lifecycle, Tally, default_status_dir
from regoguard.limits import MemoryStore, StoreError
from regoguard.limits.sqlite_store import default_state_path

if TYPE_CHECKING:
    from regoguard.guard import Guard
    from regoguard.limits import Store


def open_webhook(args: argparse.Namespace) -> Webhook | None:
    """``--approval-webhook`` (signed with ``--approval-webhook-secret-env``); ValueError when the secret's
    variable is unset."""
    if not args.approval_webhook:
        return None
    var = args.approval_webhook_secret_env
    secret = os.environ.get(var) if var else None
    if var and not secret:
        raise ValueError(f"--approval-webhook-secret-env: ${var} is not set")
    return Webhook(args.approval_webhook, secret.encode() if secret else None)


def register(args: argparse.Namespace, guard: Guard, server: str, fail_open: bool,
             command: list[str] | None) -> Lifecycle | None:
    """Register this proxy for ``regoguard status`` and start its heartbeat (None: --status-dir off)."""
    if args.status_dir == "off":
        return None
    state = args.state or str(default_state_path())
    backend = "memory" if state == "memory" else "redis" if state.startswith(("redis", "unix")) else "sqlite"
    info = {"command": getattr(args, "command", None) or "run", "server": server,
            "policy": os.path.abspath(args.config), "revision": guard.engine.revision,
            "store": _redacted(state), "state_backend": backend, "fail_mode": "open" if fail_open else "closed",
            "decision_log": (os.path.abspath(args.decision_log)
                             if args.decision_log not in (None, "off", "stderr") else args.decision_log),
            "upstream": args.upstream or " ".join(command or [])[:200], "dry_run": guard.dry_run}
    if getattr(args, "listen", None):
        info["listen"] = args.listen
    guard.tally = Tally()
    directory = Path(args.status_dir) if args.status_dir else default_status_dir()
    lifecycle = Lifecycle(directory, info, guard.tally)
    lifecycle.start()
    return lifecycle


def _redacted(url: str) -> str:
    """A store URL without its password (redis://user:secret@host → redis://user:***@host)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, user + host + port, parts.path, parts.query, parts.fragment))


def open_book(args: argparse.Namespace, store: Store) -> ApprovalBook:
    """Approvals beside the limits, in the same store (in memory when the limits fell back to memory)."""
    if isinstance(store, MemoryStore):
        return ApprovalBook(MemoryApprovals())
    try:
        return ApprovalBook(open_approvals(args.state, args.state_prefix))
    except StoreError as exc:
        print(f"warning: {exc}; approvals are kept in memory, for this process only", file=sys.stderr)
        return ApprovalBook(MemoryApprovals())
