"""Reading a rule's limits: ``rate_limit`` in both dialects, and Intercept's ``state`` counters."""

from __future__ import annotations

import difflib
import re
from typing import Any

from regoguard.policy._yaml import Node
from regoguard.policy.conditions import arg_path
from regoguard.policy.model import WINDOWS, Limit
from regoguard.policy.reader import Reader, is_number, join_path

STATE_KEYS = ("counter", "window", "increment", "increment_from")
CATALOGUE_LIMIT_KEYS = ("max", "window")

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*([A-Za-z]+)\s*$")


def default_message(rule_id: str, action: str, limit: Limit | None) -> str:
    """The message of a rule without ``on_deny``/``reason``: a limit's own words, or a generic denial.

    (When such a rule fails its conditions, the library says which condition failed instead.)
    """
    if limit is not None:
        word = next((w for w, s in WINDOWS.items() if s == limit.window), None)
        per = f"per {word}" if word else f"per {limit.window} seconds"
        if limit.counter.split(".")[-1].startswith("_rate_"):
            return f"Rate limit of {_num_text(limit.capacity)} calls {per} reached. Try again later."
        return f"Limit of {_num_text(limit.capacity)} {per} on {limit.counter} reached. Try again later."
    if action == "deny":
        return f'Denied by policy rule "{rule_id}"'
    if action == "require_approval":
        return f'Calls under policy rule "{rule_id}" need a person\'s approval'
    return f'Policy rule "{rule_id}" denied the call'


def _num_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def _window(r: Reader, node: Node, path: str, allow_seconds: bool) -> int | None:
    if allow_seconds and isinstance(node.value, int) and not isinstance(node.value, bool):
        if node.value <= 0:
            r.error(node.pos, path, f"window must be a positive number of seconds, got {node.value}")
            return None
        return node.value
    if isinstance(node.value, str) and node.value in WINDOWS:
        return WINDOWS[node.value]
    close = difflib.get_close_matches(str(node.value), WINDOWS, n=1, cutoff=0.6)
    r.error(node.pos, path, f"window must be one of {', '.join(WINDOWS)}"
            + (" or a number of seconds" if allow_seconds else "") + f"; got {node.value!r}",
            f"did you mean {close[0]!r}?" if close else None)
    return None


def read_rate_limit(r: Reader, node: Node, path: str, owner: str, scope: str | None) -> Limit | None:
    if isinstance(node.value, str):
        m = _RATE_RE.match(node.value)
        if not m:
            r.error(node.pos, path, f'rate_limit must look like "5/minute" (or {{max, window}}); got {node.value!r}')
            return None
        count, word = int(m.group(1)), m.group(2)
        if count <= 0:
            r.error(node.pos, path, f"rate_limit count must be a positive integer, got {count}")
            return None
        if word not in WINDOWS:
            close = difflib.get_close_matches(word, WINDOWS, n=1, cutoff=0.5)
            r.error(node.pos, path, f"rate_limit window must be one of {', '.join(WINDOWS)}; got {word!r}",
                    f"did you mean {close[0]!r}?" if close else None)
            return None
        return Limit(f"{owner}._rate_{word}", count, WINDOWS[word], False, scope or "global")
    entries = r.mapping(node, path, CATALOGUE_LIMIT_KEYS, "rate_limit")
    if entries is None:
        return None
    ok = True
    for k in CATALOGUE_LIMIT_KEYS:
        if k not in entries:
            r.error(node.pos, path, f"rate_limit needs `{k}`")
            ok = False
    if not ok:
        return None
    mx = entries["max"]
    if not isinstance(mx.value, int) or isinstance(mx.value, bool) or mx.value <= 0:
        r.error(mx.pos, join_path(path, "max"), f"max must be a positive integer, got {mx.value!r}")
        ok = False
    window = _window(r, entries["window"], join_path(path, "window"), allow_seconds=True)
    if not ok or window is None:
        return None
    return Limit(f"{owner}._rate_{window}s", mx.value, window, False, scope or "session")


def read_state(r: Reader, node: Node, path: str) -> dict[str, Any] | None:
    entries = r.mapping(node, path, STATE_KEYS, "state")
    if entries is None:
        return None
    out: dict[str, Any] = {}
    if "counter" not in entries:
        r.error(node.pos, path, "state needs `counter`")
    else:
        c = r.string(entries["counter"], join_path(path, "counter"), "counter")
        if c is not None and not re.fullmatch(r"[A-Za-z0-9_\-]+", c):
            r.error(entries["counter"].pos, join_path(path, "counter"),
                    f"counter {c!r} may hold only letters, digits, _ and -")
        elif c is not None:
            out["counter"] = c
    if "window" not in entries:
        r.error(node.pos, path, "state needs `window` (minute, hour or day)")
    else:
        w = _window(r, entries["window"], join_path(path, "window"), allow_seconds=False)
        if w is not None:
            out["window"] = w
    if "increment" in entries and "increment_from" in entries:
        r.error(entries["increment_from"].pos, join_path(path, "increment_from"),
                "state takes `increment` or `increment_from`, not both")
    if "increment" in entries:
        inc = entries["increment"]
        if not is_number(inc.value) or inc.value <= 0:
            r.error(inc.pos, join_path(path, "increment"), f"increment must be a positive number, got {inc.value!r}")
        else:
            out["increment"] = inc.value
    if "increment_from" in entries:
        src = entries["increment_from"]
        text = r.string(src, join_path(path, "increment_from"), "increment_from")
        if text is not None:
            segs = arg_path(text)
            if segs is None:
                r.error(src.pos, join_path(path, "increment_from"),
                        f'increment_from must be an argument path like "args.amount", got {text!r}')
            else:
                out["increment_from"] = segs
    return out
