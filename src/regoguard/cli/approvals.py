"""``regoguard approvals list|show|approve|deny``: a person answers the calls a policy holds for approval.

The approvals live in the same store as the limits (``--state``: the SQLite file or Redis the proxies
use); approving works only on a pending, unexpired approval, and the agent's identical retry then runs
once; denying works on a pending one, or revokes an approved one its retry has not used yet (the retry then
stays denied).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any, BinaryIO

from regoguard import __version__
from regoguard.approvals import ApprovalBook, ApprovalError, ApprovalRecord, open_approvals
from regoguard.audit import DecisionLog, FileSink, MaskingRules, Sink, StderrSink
from regoguard.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, state_options
from regoguard.limits import StoreError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("approvals", help="list, show, approve or deny calls held for a person's approval",
                       description="Answer the tool calls a policy's require_approval rules hold. Use the same "
                                   "--state (and --state-prefix) as the proxies.")
    p.add_argument("action", choices=("list", "show", "approve", "deny"),
                   help="list: pending (all with --all); show ID; approve ID; deny ID (also revokes an unused "
                        "approval)")
    p.add_argument("id", nargs="?", help="the approval id (apr-...) the agent was shown")
    p.add_argument("--reason", help="why (kept with the approval and in the decision log)")
    p.add_argument("--as", dest="approver", metavar="NAME",
                   help="who is answering (default: the login name)")
    p.add_argument("--all", action="store_true", help="list: every kept approval, not only pending ones")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--decision-log", metavar="PATH|stderr",
                   help="also write the approved/denied event to this decision log (the proxies' file)")
    state_options(p)
    p.set_defaults(func=cmd_approvals)


def cmd_approvals(args: argparse.Namespace, out: BinaryIO) -> int:
    if args.action in ("show", "approve", "deny") and not args.id:
        print(f"error: regoguard approvals {args.action} needs the approval id (see `regoguard approvals list`)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.action == "list" and args.id:
        print("error: regoguard approvals list takes no id (show one with `regoguard approvals show ID`)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.state == "memory":
        print("error: --state memory keeps approvals inside one proxy process, where no other process can reach "
              "them; give the proxy's SQLite file or redis:// URL", file=sys.stderr)
        return EXIT_USAGE
    try:
        store = open_approvals(args.state, args.state_prefix, create=False)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    book = ApprovalBook(store)
    try:
        if args.action == "list":
            return _list(book, args, out)
        if args.action == "show":
            record = book.get(args.id)
            if record is None:
                print(f"error: no approval {args.id!r}", file=sys.stderr)
                return EXIT_FAIL
            _write(out, _plain(json.dumps(record.view(time.time()), indent=2, ensure_ascii=False), keep="\n"))
            return EXIT_OK
        log = _decision_log(args.decision_log)
        if log is not None:
            book.on_event = log.approval
        by = args.approver or getpass.getuser()
        answer = book.approve if args.action == "approve" else book.deny
        before = book.get(args.id)  # only for the message: the store decides, atomically
        revoking = args.action == "deny" and before is not None and before.state(time.time()) == "approved"
        record = answer(args.id, by, args.reason)
        if args.json:
            _write(out, _plain(json.dumps(record.view(time.time()), ensure_ascii=False)))
        elif args.action == "approve":
            _write(out, f"approved {record.id}: the identical call to {record.tool} runs once if retried before "
                        f"{record.view(time.time())['expires_at']}")
        elif revoking:
            _write(out, f"denied {record.id}: its approval is revoked before use; the identical call to "
                        f"{record.tool} stays denied")
        else:
            _write(out, f"denied {record.id}: the identical call to {record.tool} stays denied")
        return EXIT_OK
    except ApprovalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        store.close()


def _list(book: ApprovalBook, args: argparse.Namespace, out: BinaryIO) -> int:
    now = time.time()
    records = [r for r in book.list() if args.all or r.state(now) == "pending"]
    if args.json:
        _write(out, _plain(json.dumps([r.view(now) for r in records], ensure_ascii=False)))
        return EXIT_OK
    if not records:
        _write(out, "no pending approvals" if not args.all else "no approvals")
        return EXIT_OK
    for r in records:
        _write(out, _line(r, now))
    return EXIT_OK


def _line(r: ApprovalRecord, now: float) -> str:
    """One approval per line. Every field a client or server chose is escaped: a tool name holding a
    carriage return or a terminal escape must not rewrite what the operator sees."""
    view = r.view(now)
    left = f"{max(0, round(r.expires_at - now))}s left" if r.state(now) in ("pending", "approved") else ""
    args = _plain(r.arguments)
    args = args if len(args) <= 80 else args[:77] + "..."
    return (f"{r.id}  {view['status']:8s}  {_plain(r.server)}/{_plain(r.tool)}  {args}  by "
            f"{_plain(r.principal) or '-'}  rule {_plain(r.rule)}  {left}").rstrip()


def _plain(text: str, keep: str = "") -> str:
    """``text`` with control characters (and anything else not printable: bidi overrides, line separators)
    escaped as JSON escapes them; the characters in ``keep`` stay."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else json.dumps(c)[1:-1] for c in text)


def _decision_log(target: str | None) -> DecisionLog | None:
    if not target:
        return None
    sink: Sink = StderrSink() if target == "stderr" else FileSink(target)
    return DecisionLog(sink, MaskingRules(), "", {"source": "regoguard approvals", "version": __version__})


def _write(out: BinaryIO, text: str) -> None:
    out.write((text + "\n").encode("utf-8", "backslashreplace"))
