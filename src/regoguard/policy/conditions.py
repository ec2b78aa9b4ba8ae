"""Reading conditions: ``{path, op, value}``, each value checked against what its operator needs."""

from __future__ import annotations

import re
from typing import Any

from regoguard.policy._yaml import Node
from regoguard.policy.model import Condition
from regoguard.policy.reader import ESCAPE_HINT, Reader, is_number, join_path, unescapable
from regoguard.policy.regex_check import RegexProblem, glob_to_regex, portable_regex
from regoguard.policy.regex_cost import may_backtrack_exponentially

CONDITION_KEYS = ("path", "op", "value")
LIST_OPS = ("in", "not_in")
NUMBER_OPS = ("lt", "lte", "gt", "gte")
STRING_OPS = ("regex", "not_regex", "starts_with", "ends_with", "glob")
LENGTH_OPS = ("len_lte", "len_gte")
ANY_OPS = ("eq", "neq", "contains")
OPERATORS = (*ANY_OPS, *LIST_OPS, *NUMBER_OPS, *STRING_OPS, *LENGTH_OPS, "exists")
STATE_OPS = ("lte", "lt")
MAX_PATH_DEPTH = 8


def arg_path(text: str) -> tuple[str, ...] | None:
    if not text.startswith("args."):
        return None
    segs = tuple(text[len("args."):].split("."))
    if any(not s for s in segs) or len(segs) > MAX_PATH_DEPTH:
        return None
    return segs


# What of the call's context a condition may read (the input document's documented fields); None: any
# keys below it (a token's claims are the issuer's).
_CONTEXT_FIELDS: dict[str, dict[str, Any]] = {
    "principal": {"id": {}, "claims": None},
    "session": {"id": {}, "protocol_version": {}, "client": {"name": {}, "version": {}}},
    "server": {"name": {}},
}
CONTEXT_PATHS_TEXT = ("principal.id, principal.claims.<claim>[.<key>...], session.id, session.client.name, "
                      "session.client.version, session.protocol_version, server.name")


def context_path(text: str) -> tuple[str, tuple[str, ...]] | None:
    """``(root, segments)`` of a path into the call's context, or None when it names no such field."""
    root, _, rest = text.partition(".")
    if root not in _CONTEXT_FIELDS or not rest:
        return None
    segs = tuple(rest.split("."))
    if any(not s for s in segs) or len(segs) > MAX_PATH_DEPTH:
        return None
    fields: dict[str, Any] | None = _CONTEXT_FIELDS[root]
    for i, seg in enumerate(segs):
        if fields is None:
            return root, segs  # below claims: any key
        if seg not in fields:
            return None
        fields = fields[seg]
        if fields is None and i == len(segs) - 1:
            return None  # `principal.claims` itself: name a claim
    if fields:  # stopped at an object with fields of its own (session.client)
        return None
    return root, segs


def read_condition(r: Reader, node: Node, path: str) -> tuple[Condition, bool] | None:
    entries = r.mapping(node, path, CONDITION_KEYS, "a condition")
    if entries is None:
        return None
    n_errors = len(r.errors)
    for k in ("path", "op"):
        if k not in entries:
            r.error(node.pos, path, f"a condition needs `{k}`")
    if "value" not in entries:
        r.error(node.pos, path, "a condition needs `value`")
    if len(r.errors) != n_errors:
        return None
    text = r.string(entries["path"], join_path(path, "path"), "path")
    op = r.choice(entries["op"], join_path(path, "op"), "op", OPERATORS)
    if text is None or op is None:
        return None
    vnode = entries["value"]
    ppos = entries["path"].pos
    if any(ord(ch) < 0x20 or ch in "\x7f\u0085\u2028\u2029" for ch in text):
        r.error(ppos, join_path(path, "path"), f"path {text!r} holds a control character or line break")
        return None
    if text.startswith("state."):
        parts = text.split(".")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            r.error(ppos, join_path(path, "path"), f'a state path is "state.<tool>.<counter>", got {text!r}')
            return None
        if not is_number(vnode.value):
            r.error(vnode.pos, join_path(path, "value"), f"a state condition needs a number, got {vnode.value!r}")
            return None
        if vnode.value <= 0:
            r.error(vnode.pos, join_path(path, "value"), f"a state limit must be positive, got {vnode.value!r}")
            return None
        return Condition((parts[1], parts[2]), op, vnode.value, node.pos.line), True
    root = "args"
    segs = arg_path(text)
    if segs is None and (context := context_path(text)) is not None:
        root, segs = context
    if segs is None:
        r.error(ppos, join_path(path, "path"),
                f'path must be "args.<key>[.<key>...]" (at most {MAX_PATH_DEPTH} keys), '
                f'"state.<tool>.<counter>", or one of {CONTEXT_PATHS_TEXT}; got {text!r}')
        return None
    value = _check_value(r, op, vnode, join_path(path, "value"))
    if value is _INVALID:
        return None
    return Condition(segs, op, value, node.pos.line, root), False


_INVALID = object()

def _check_value(r: Reader, op: str, node: Node, path: str) -> Any:
    v = node.value
    if op not in ("regex", "not_regex", "glob") and unescapable(node.plain()):
        r.error(node.pos, path, f"value {node.plain()!r} holds a quote, backslash or control character", ESCAPE_HINT)
        return _INVALID
    if op in LIST_OPS:
        if not isinstance(v, list):
            r.error(node.pos, path, f"operator {op!r} needs a list value, got a {node.kind}")
            return _INVALID
        return [n.plain() for n in v]
    if op in NUMBER_OPS:
        if not is_number(v):
            hint = None
            if isinstance(v, str):
                hint = ("YAML reads this exponent form as text: write it with a dot and a sign (1.0e+6) "
                        "or in full" if re.fullmatch(r"-?\d+(\.\d+)?[eE][+-]?\d+", v) else
                        "numbers must be unquoted in YAML")
            r.error(node.pos, path, f"operator {op!r} needs a number, got a {node.kind}", hint)
            return _INVALID
        return v
    if op in LENGTH_OPS:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            r.error(node.pos, path, f"operator {op!r} needs a non-negative integer, got {v!r}")
            return _INVALID
        return v
    if op == "exists":
        if not isinstance(v, bool):
            r.error(node.pos, path, f"operator 'exists' needs true or false, got a {node.kind}")
            return _INVALID
        return v
    if op in STRING_OPS:
        if not isinstance(v, str):
            r.error(node.pos, path, f"operator {op!r} needs a string, got a {node.kind}")
            return _INVALID
        if '"' in v or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in v):
            r.error(node.pos, path, f"pattern {v!r} holds a quote or a control character", ESCAPE_HINT)
            return _INVALID
        try:
            emitted = portable_regex(v) if op in ("regex", "not_regex") else glob_to_regex(v) if op == "glob" else None
        except RegexProblem as exc:
            r.error(node.pos, path, f"bad {'glob' if op == 'glob' else 'regex'} {v!r}: {exc}")
            return _INVALID
        if emitted is not None and may_backtrack_exponentially(emitted):
            r.warn(node.pos, path, f"pattern {v!r} can backtrack exponentially in the embedded engine (a repeated "
                   "alternation or optional part, like (a|ab)* or (a?)*): calls it reads are decided on the worker "
                   "pool behind the timeout, and a stuck one keeps a thread busy; write it without the repeated "
                   "group (e.g. [ab]* for (a|b)*) if you can")
        return v
    return node.plain()
