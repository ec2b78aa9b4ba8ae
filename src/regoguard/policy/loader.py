"""Read a YAML policy (Intercept or catalogue dialect) into the typed model, strictly.

Stages, in order: parse YAML with positions (``_yaml``), check the top level, check each tool and rule,
then cross-check what spans rules (state counters, duplicate ids). Every problem is collected, so the
author sees them all at once; nothing is returned unless the whole file is valid.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from regoguard.errors import PolicyError, PolicyLoadError
from regoguard.policy._yaml import Node, Pos, YamlProblem, parse
from regoguard.policy.model import (
    GLOBAL_SCOPE_NAME,
    SCOPES,
    WILDCARD,
    WINDOWS,
    Condition,
    Limit,
    Policy,
    Rule,
    ToolPolicy,
)
from regoguard.policy.regex_check import RegexProblem, glob_to_regex, portable_regex

MAX_POLICY_BYTES = 4 * 1024 * 1024

TOP_KEYS = ("version", "description", "default", "hide", "tools")
TOOL_KEYS = ("rules",)
RULE_KEYS = ("name", "action", "conditions", "on_deny", "reason", "rate_limit", "state", "validate", "scope")
CONDITION_KEYS = ("path", "op", "value")
STATE_KEYS = ("counter", "window", "increment", "increment_from")
CATALOGUE_LIMIT_KEYS = ("max", "window")
VALIDATE_KEYS = ("required_args",)

LIST_OPS = ("in", "not_in")
NUMBER_OPS = ("lt", "lte", "gt", "gte")
STRING_OPS = ("regex", "not_regex", "starts_with", "ends_with", "glob")
LENGTH_OPS = ("len_lte", "len_gte")
ANY_OPS = ("eq", "neq", "contains")
OPERATORS = (*ANY_OPS, *LIST_OPS, *NUMBER_OPS, *STRING_OPS, *LENGTH_OPS, "exists")
STATE_OPS = ("lte", "lt")
MAX_PATH_DEPTH = 8

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*([A-Za-z]+)\s*$")
_IDENT_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class _Reader:
    """Walks the node tree, collecting errors instead of stopping at the first."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[PolicyError] = []
        self.warnings: list[PolicyError] = []

    # -- reporting -------------------------------------------------------------------------------
    def error(self, pos: Pos, path: str, message: str, hint: str | None = None) -> None:
        self.errors.append(PolicyError(self.file, pos.line, pos.column, path, message, hint))

    def warn(self, pos: Pos, path: str, message: str) -> None:
        self.warnings.append(PolicyError(self.file, pos.line, pos.column, path, message, severity="warning"))

    def mapping(
        self, node: Node, path: str, allowed: Iterable[str] | None, what: str
    ) -> dict[str, Node] | None:
        """Return the mapping's entries, reporting keys not in ``allowed`` (with a did-you-mean).

        ``allowed=None`` accepts any key (a map from names, like ``tools``).
        """
        if not isinstance(node.value, dict):
            self.error(node.pos, path, f"{what} must be a mapping, not a {node.kind}")
            return None
        if allowed is None:
            return node.value
        allowed = tuple(allowed)
        assert node.key_pos is not None
        for key in node.value:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
                self.error(node.key_pos[key], _join(path, key), f"unknown key {key!r} in {what}", hint)
        return node.value

    def string(self, node: Node, path: str, what: str, nonempty: bool = True) -> str | None:
        if not isinstance(node.value, str):
            self.error(node.pos, path, f"{what} must be a string, not a {node.kind}")
            return None
        if nonempty and not node.value.strip():
            self.error(node.pos, path, f"{what} must not be empty")
            return None
        return node.value

    def choice(self, node: Node, path: str, what: str, choices: Iterable[str]) -> str | None:
        choices = tuple(choices)
        value = self.string(node, path, what)
        if value is None:
            return None
        if value not in choices:
            close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else None
            self.error(node.pos, path, f"{what} must be one of {', '.join(choices)}; got {value!r}", hint)
            return None
        return value


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _IDENT_RE.match(key) or key in ("",):
        key_text = f'"{key}"'
        return f"{path}[{key_text}]" if path else key_text
    return f"{path}.{key}" if path else key


def load_policy(path: str | Path) -> Policy:
    """Load and validate the policy file at ``path``.

    Raises:
        PolicyLoadError: listing every problem in the file.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise PolicyLoadError([PolicyError(str(p), 1, 1, "", f"cannot read policy: {exc.strerror}")]) from exc
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyLoadError([PolicyError(str(p), 1, 1, "", f"policy is larger than {MAX_POLICY_BYTES} bytes")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyLoadError([PolicyError(str(p), 1, 1, "", f"policy is not UTF-8: {exc}")]) from exc
    return load_policy_text(text, str(p))


def load_policy_text(text: str, source: str = "<policy>") -> Policy:
    """Load and validate a policy given as text; ``source`` names it in errors and in the Rego header."""
    reader = _Reader(source)
    try:
        root = parse(text)
    except YamlProblem as exc:
        raise PolicyLoadError([PolicyError(source, exc.pos.line, exc.pos.column, "", exc.message)]) from exc
    if root is None or root.value is None:
        line = root.pos.line if root is not None else 1
        raise PolicyLoadError([PolicyError(source, line, 1, "", "policy is empty; it needs at least `tools:`")])
    policy = _read_policy(reader, root)
    if reader.errors or policy is None:
        raise PolicyLoadError(reader.errors)
    return policy


def _read_policy(r: _Reader, root: Node) -> Policy | None:
    top = r.mapping(root, "", TOP_KEYS, "the policy")
    if top is None:
        return None
    version = None
    if "version" in top:
        v = top["version"]
        version = str(v.value) if v.kind in ("string", "number") else None
        if version != "1":
            r.error(v.pos, "version", f'version must be "1", got {v.value!r}')
    description = r.string(top["description"], "description", "description", False) if "description" in top else None
    default = "allow"
    if "default" in top:
        default = r.choice(top["default"], "default", "default", ("allow", "deny")) or "allow"
    hide = _read_hide(r, top["hide"]) if "hide" in top else ()
    tools: list[ToolPolicy] = []
    if "tools" in top:
        tnode = top["tools"]
        if tnode.kind == "null":
            pass
        elif (entries := r.mapping(tnode, "tools", None, "tools")) is not None:
            assert tnode.key_pos is not None
            for key, node in entries.items():
                tool = _read_tool(r, key, node, tnode.key_pos[key])
                if tool is not None:
                    tools.append(tool)
    elif not hide:
        r.error(root.pos, "tools", "policy has no `tools:` (and hides nothing), so it does nothing")
    return Policy(
        source=r.file,
        default=default,
        description=description,
        version=version,
        hide=hide,
        tools=tuple(tools),
        warnings=tuple(str(w) for w in r.warnings),
    )


def _read_hide(r: _Reader, node: Node) -> tuple[str, ...]:
    if not isinstance(node.value, list):
        r.error(node.pos, "hide", f"hide must be a list of tool names, not a {node.kind}")
        return ()
    out: list[str] = []
    for i, item in enumerate(node.value):
        name = r.string(item, f"hide[{i}]", "a hidden tool name")
        if name is None:
            continue
        if _unescapable(name):
            r.error(item.pos, f"hide[{i}]", f"tool name {name!r} holds a quote, backslash or control character",
                    _ESCAPE_HINT)
            continue
        if name in out:
            r.error(item.pos, f"hide[{i}]", f"duplicate entry {name!r} in hide")
            continue
        out.append(name)
    return tuple(out)


def _read_tool(r: _Reader, key: str, node: Node, key_pos: Pos) -> ToolPolicy | None:
    path = _join("tools", key)
    if not key.strip():
        r.error(key_pos, path, "tool name must not be empty")
        return None
    if _unescapable(key):
        r.error(key_pos, path, f"tool name {key!r} holds a quote, backslash or control character", _ESCAPE_HINT)
        return None
    if key != WILDCARD and any(c in key for c in "?["):
        # `?` and `[...]` match one byte in the embedded engine's std::regex but one character in OPA:
        # a key like `file_?` would not cover `file_é` here. `*` means the same in both.
        r.error(key_pos, path, f"tool key {key!r}: only `*` globs are supported in tool names",
                "write the names out, or use `*` (browser_*)")
        return None
    if node.kind == "null":
        r.error(node.pos, path, "a tool needs `rules:` (use `rules: []` to allow it with no checks)")
        return None
    entries = r.mapping(node, path, TOOL_KEYS, f"tool {key!r}")
    if entries is None:
        return None
    if "rules" not in entries:
        r.error(node.pos, path, "a tool needs `rules:` (use `rules: []` to allow it with no checks)")
        return None
    rnode = entries["rules"]
    if rnode.kind == "null":
        return ToolPolicy(key, (), key_pos.line)
    if not isinstance(rnode.value, list):
        r.error(rnode.pos, _join(path, "rules"), f"rules must be a list, not a {rnode.kind}")
        return None
    rules: list[Rule] = []
    names: dict[str, int] = {}
    counters: dict[str, int] = {}
    for i, rule_node in enumerate(rnode.value):
        rule = _read_rule(r, key, i, rule_node, _join(_join(path, "rules"), i))
        if rule is None:
            continue
        if rule.name is not None:
            if rule.name in names:
                r.error(rule_node.pos, _join(_join(path, "rules"), i),
                        f"duplicate rule name {rule.name!r} (also rules[{names[rule.name]}])",
                        "rule names must be unique per tool: they are the rule ids in decisions and logs")
            names[rule.name] = i
        if rule.limit is not None:
            counter = rule.limit.counter
            if counter in counters:
                r.error(rule_node.pos, _join(_join(path, "rules"), i),
                        f"duplicate counter {counter.split('.', 1)[1]!r} (also used by rules[{counters[counter]}])",
                        "use another counter name or window, or combine the two rules")
            counters[counter] = i
        rules.append(rule)
    return ToolPolicy(key, tuple(rules), key_pos.line)


def _counter_owner(tool_key: str) -> str:
    return GLOBAL_SCOPE_NAME if tool_key == WILDCARD else tool_key


def _read_rule(r: _Reader, tool_key: str, index: int, node: Node, path: str) -> Rule | None:
    entries = r.mapping(node, path, RULE_KEYS, "a rule")
    if entries is None:
        return None
    n_errors = len(r.errors)
    name = r.string(entries["name"], _join(path, "name"), "rule name") if "name" in entries else None
    rule_id = f"{tool_key}/{name}" if name else f"{tool_key}/rules[{index}]"

    action = "evaluate"
    explicit_allow = False
    if "action" in entries:
        a = r.choice(entries["action"], _join(path, "action"), "action", ("evaluate", "allow", "deny"))
        if a == "allow":
            explicit_allow = True
        action = "deny" if a == "deny" else "evaluate"

    message = None
    if "on_deny" in entries and "reason" in entries:
        r.error(entries["reason"].pos, _join(path, "reason"),
                "a rule takes `on_deny` (Intercept) or `reason` (catalogue), not both")
    for k in ("on_deny", "reason"):
        if k in entries:
            message = r.string(entries[k], _join(path, k), k) or message

    owner = _counter_owner(tool_key)
    limit: Limit | None = None
    scope_node = entries.get("scope")
    scope = None
    if scope_node is not None:
        scope = r.choice(scope_node, _join(path, "scope"), "scope", SCOPES)

    state_counter: tuple[str, Node] | None = None
    state_decl: dict[str, Any] | None = None
    if "state" in entries:
        state_decl = _read_state(r, entries["state"], _join(path, "state"))

    conditions: list[Condition] = []
    state_conditions: list[tuple[Condition, Node, str]] = []
    if "conditions" in entries:
        cnode = entries["conditions"]
        if not isinstance(cnode.value, list):
            r.error(cnode.pos, _join(path, "conditions"), f"conditions must be a list, not a {cnode.kind}")
        else:
            for ci, cn in enumerate(cnode.value):
                cpath = _join(_join(path, "conditions"), ci)
                got = _read_condition(r, cn, cpath)
                if got is None:
                    continue
                cond, is_state = got
                if is_state:
                    state_conditions.append((cond, cn, cpath))
                else:
                    conditions.append(cond)

    if "rate_limit" in entries:
        rl_path = _join(path, "rate_limit")
        if "conditions" in entries or "state" in entries:
            r.error(entries["rate_limit"].pos, rl_path, "rate_limit cannot be combined with conditions or state",
                    "use a separate rule, or the full `state:` form")
        limit = _read_rate_limit(r, entries["rate_limit"], rl_path, owner, scope)

    for cond, cn, cpath in state_conditions:
        scope_name, counter = cond.path
        if state_decl is None or state_decl.get("counter") != counter:
            r.error(cn.pos, _join(cpath, "path"),
                    f"condition reads state.{scope_name}.{counter} but this rule has no "
                    f"`state: {{counter: {counter}}}` block",
                    "declare the counter with a `state:` block in the same rule")
            continue
        if scope_name != owner:
            r.error(cn.pos, _join(cpath, "path"),
                    f"counters of tool {tool_key!r} are read as state.{owner}.{counter}, not "
                    f"state.{scope_name}.{counter}")
            continue
        if cond.op not in STATE_OPS:
            r.error(cn.pos, _join(cpath, "op"), f"a state condition limits its counter with lte or lt, not {cond.op}")
            continue
        if state_counter is not None:
            r.error(cn.pos, cpath, f"counter {counter!r} is limited twice in one rule")
            continue
        state_counter = (counter, cn)
        assert state_decl is not None
        if "window" not in state_decl:
            continue  # the missing or bad window is already reported
        limit = Limit(
            counter=f"{owner}.{counter}",
            capacity=cond.value,
            window=state_decl["window"],
            strict=cond.op == "lt",
            scope=scope or "global",
            cost=state_decl.get("increment", 1),
            cost_path=state_decl.get("increment_from"),
        )
    if state_decl is not None and state_counter is None and state_decl.get("counter"):
        r.error(entries["state"].pos, _join(path, "state"),
                f"state counter {state_decl['counter']!r} is never limited",
                f"add a condition {{path: state.{owner}.{state_decl['counter']}, op: lte, value: N}} to this rule")

    validate = False
    if "validate" in entries:
        vnode = entries["validate"]
        ventries = r.mapping(vnode, _join(path, "validate"), VALIDATE_KEYS, "validate")
        if ventries is not None:
            if "required_args" not in ventries:
                r.error(vnode.pos, _join(path, "validate"), "validate needs `required_args: true`")
            else:
                rv = ventries["required_args"]
                if not isinstance(rv.value, bool):
                    r.error(rv.pos, _join(_join(path, "validate"), "required_args"),
                            f"required_args must be true or false, not a {rv.kind}")
                else:
                    validate = rv.value

    if scope is not None and limit is None and "rate_limit" not in entries and "state" not in entries:
        r.error(scope_node.pos if scope_node else node.pos, _join(path, "scope"),
                "scope applies to a rule's limit, and this rule has no rate_limit or state")
    if limit is not None and limit.scope == "session":
        r.warn(node.pos, path, f"rule {rule_id!r} has a session-scoped limit: it starts over when the agent "
               "reconnects (set `scope: principal` or `global` to make it stick)")

    if action == "deny":
        for k in ("conditions", "rate_limit", "state", "validate"):
            if k in entries:
                r.error(entries[k].pos, _join(path, k), f"a deny rule takes no {k}: it always denies")
    elif len(r.errors) == n_errors and not explicit_allow and not (
        _nonempty_list(entries.get("conditions")) or "rate_limit" in entries or "validate" in entries
        or "state" in entries
    ):
        r.error(node.pos, path, "an evaluate rule needs at least one condition (or a rate_limit or validate)",
                "add conditions, or use `action: deny` to block the tool")

    if len(r.errors) != n_errors:
        return None
    custom_message = message is not None
    if message is None:
        message = _default_message(rule_id, action, limit)
    return Rule(
        id=rule_id,
        name=name,
        index=index,
        action=action,
        message=message,
        line=node.pos.line,
        conditions=tuple(conditions),
        limit=limit,
        validate_required=validate,
        explicit_allow=explicit_allow,
        custom_message=custom_message,
    )


def _nonempty_list(node: Node | None) -> bool:
    return node is not None and isinstance(node.value, list) and len(node.value) > 0


def _default_message(rule_id: str, action: str, limit: Limit | None) -> str:
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
    return f'Policy rule "{rule_id}" denied the call'


def _num_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def _window(r: _Reader, node: Node, path: str, allow_seconds: bool) -> int | None:
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


def _read_rate_limit(r: _Reader, node: Node, path: str, owner: str, scope: str | None) -> Limit | None:
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
        r.error(mx.pos, _join(path, "max"), f"max must be a positive integer, got {mx.value!r}")
        ok = False
    window = _window(r, entries["window"], _join(path, "window"), allow_seconds=True)
    if not ok or window is None:
        return None
    return Limit(f"{owner}._rate_{window}s", mx.value, window, False, scope or "session")


def _read_state(r: _Reader, node: Node, path: str) -> dict[str, Any] | None:
    entries = r.mapping(node, path, STATE_KEYS, "state")
    if entries is None:
        return None
    out: dict[str, Any] = {}
    if "counter" not in entries:
        r.error(node.pos, path, "state needs `counter`")
    else:
        c = r.string(entries["counter"], _join(path, "counter"), "counter")
        if c is not None and not re.fullmatch(r"[A-Za-z0-9_\-]+", c):
            r.error(entries["counter"].pos, _join(path, "counter"),
                    f"counter {c!r} may hold only letters, digits, _ and -")
        elif c is not None:
            out["counter"] = c
    if "window" not in entries:
        r.error(node.pos, path, "state needs `window` (minute, hour or day)")
    else:
        w = _window(r, entries["window"], _join(path, "window"), allow_seconds=False)
        if w is not None:
            out["window"] = w
    if "increment" in entries and "increment_from" in entries:
        r.error(entries["increment_from"].pos, _join(path, "increment_from"),
                "state takes `increment` or `increment_from`, not both")
    if "increment" in entries:
        inc = entries["increment"]
        if not _is_number(inc.value) or inc.value <= 0:
            r.error(inc.pos, _join(path, "increment"), f"increment must be a positive number, got {inc.value!r}")
        else:
            out["increment"] = inc.value
    if "increment_from" in entries:
        src = entries["increment_from"]
        text = r.string(src, _join(path, "increment_from"), "increment_from")
        if text is not None:
            segs = _arg_path(text)
            if segs is None:
                r.error(src.pos, _join(path, "increment_from"),
                        f'increment_from must be an argument path like "args.amount", got {text!r}')
            else:
                out["increment_from"] = segs
    return out


def _arg_path(text: str) -> tuple[str, ...] | None:
    if not text.startswith("args."):
        return None
    segs = tuple(text[len("args."):].split("."))
    if any(not s for s in segs) or len(segs) > MAX_PATH_DEPTH:
        return None
    return segs


def _read_condition(r: _Reader, node: Node, path: str) -> tuple[Condition, bool] | None:
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
    text = r.string(entries["path"], _join(path, "path"), "path")
    op = r.choice(entries["op"], _join(path, "op"), "op", OPERATORS)
    if text is None or op is None:
        return None
    vnode = entries["value"]
    ppos = entries["path"].pos
    if text.startswith("state."):
        parts = text.split(".")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            r.error(ppos, _join(path, "path"), f'a state path is "state.<tool>.<counter>", got {text!r}')
            return None
        if not _is_number(vnode.value):
            r.error(vnode.pos, _join(path, "value"), f"a state condition needs a number, got {vnode.value!r}")
            return None
        if vnode.value <= 0:
            r.error(vnode.pos, _join(path, "value"), f"a state limit must be positive, got {vnode.value!r}")
            return None
        return Condition((parts[1], parts[2]), op, vnode.value, node.pos.line), True
    segs = _arg_path(text)
    if segs is None:
        r.error(ppos, _join(path, "path"),
                f'path must be "args.<key>[.<key>...]" (at most {MAX_PATH_DEPTH} keys) or '
                f'"state.<tool>.<counter>"; got {text!r}')
        return None
    value = _check_value(r, op, vnode, _join(path, "value"))
    if value is _INVALID:
        return None
    return Condition(segs, op, value, node.pos.line), False


_INVALID = object()

# rego-cpp keeps JSON escapes in policy strings as written (`\n` stays two characters) while the
# input it compares them with arrives decoded, so a policy string needing an escape could never match.
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')


def _unescapable(value: Any) -> bool:
    if isinstance(value, str):
        return _NEEDS_ESCAPE.search(value) is not None
    if isinstance(value, list):
        return any(_unescapable(v) for v in value)
    if isinstance(value, dict):
        return any(_unescapable(k) or _unescapable(v) for k, v in value.items())
    return False


_ESCAPE_HINT = "the embedded engine cannot compare text holding quotes, backslashes or control characters"


def _check_value(r: _Reader, op: str, node: Node, path: str) -> Any:
    v = node.value
    if op not in ("regex", "not_regex", "glob") and _unescapable(node.plain()):
        r.error(node.pos, path, f"value {node.plain()!r} holds a quote, backslash or control character", _ESCAPE_HINT)
        return _INVALID
    if op in LIST_OPS:
        if not isinstance(v, list):
            r.error(node.pos, path, f"operator {op!r} needs a list value, got a {node.kind}")
            return _INVALID
        return [n.plain() for n in v]
    if op in NUMBER_OPS:
        if not _is_number(v):
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
            r.error(node.pos, path, f"pattern {v!r} holds a quote or a control character", _ESCAPE_HINT)
            return _INVALID
        try:
            if op in ("regex", "not_regex"):
                portable_regex(v)
            elif op == "glob":
                portable_regex(glob_to_regex(v))
        except RegexProblem as exc:
            r.error(node.pos, path, f"bad {'glob' if op == 'glob' else 'regex'} {v!r}: {exc}")
            return _INVALID
        return v
    return node.plain()
