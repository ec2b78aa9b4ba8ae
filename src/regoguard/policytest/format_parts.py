"""The small values of a test file: what a call expects, and who makes it (server, principal, session...)."""

from __future__ import annotations

from typing import Any

from regoguard.policy._yaml import Node
from regoguard.policy.reader import Reader, join_path
from regoguard.policytest.model import DECISIONS, Context, Expect

CONTEXT_KEYS = ("server", "principal", "session", "claims", "client")
EXPECT_KEYS = ("decision", "rule", "message", "message_contains")
CLIENT_KEYS = ("name", "version")


def read_expect(r: Reader, node: Node, path: str) -> Expect | None:
    if isinstance(node.value, str):
        decision = r.choice(node, path, "expect", DECISIONS)
        return Expect(decision) if decision else None
    entries = r.mapping(node, path, EXPECT_KEYS, "expect")
    if entries is None:
        return None
    if "decision" not in entries:
        r.error(node.pos, path, "expect needs `decision:` (allow, deny or require_approval)")
        return None
    decision = r.choice(entries["decision"], join_path(path, "decision"), "decision", DECISIONS)
    fields: dict[str, str | None] = {}
    for k in ("rule", "message", "message_contains"):
        if k in entries:
            fields[k] = r.string(entries[k], join_path(path, k), k)
    if "message" in entries and "message_contains" in entries:
        r.error(entries["message_contains"].pos, join_path(path, "message_contains"),
                "expect takes `message` (exact) or `message_contains`, not both")
    if decision == "allow" and fields:
        r.error(node.pos, path, "an allowed call has no rule or message to expect")
    if decision is None or (fields and None in fields.values()):
        return None
    return Expect(decision, fields.get("rule"), fields.get("message"), fields.get("message_contains"))


def read_context(r: Reader, entries: dict[str, Node], path: str) -> Context:
    values: dict[str, Any] = {}
    for key in ("server", "principal", "session"):
        if key in entries:
            values[key] = r.string(entries[key], join_path(path, key), key)
    if "claims" in entries:
        cnode = entries["claims"]
        if r.mapping(cnode, join_path(path, "claims"), None, "claims") is not None:
            values["claims"] = cnode.plain()
    if "client" in entries:
        cnode = entries["client"]
        client = r.mapping(cnode, join_path(path, "client"), CLIENT_KEYS, "client")
        if client is not None:
            values["client"] = {k: r.string(v, join_path(join_path(path, "client"), k), f"client {k}")
                                for k, v in client.items()}
    return Context(**values)
