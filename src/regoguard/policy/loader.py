"""Read a YAML policy (Intercept or catalogue dialect) into the typed model, strictly.

Stages, in order: parse YAML with positions (``_yaml``), check the top level, check each tool and rule,
then cross-check what spans rules (state counters, duplicate ids). Every problem is collected, so the
author sees them all at once; nothing is returned unless the whole file is valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from regoguard import heap
from regoguard.errors import PolicyError, PolicyLoadError
from regoguard.policy._yaml import Node, Pos, YamlProblem, parse
from regoguard.policy.conditions import STATE_OPS, read_condition
from regoguard.policy.limits import default_message, read_rate_limit, read_state
from regoguard.policy.model import (
    APPROVERS,
    DEFAULT_APPROVAL_TIMEOUT,
    GLOBAL_SCOPE_NAME,
    SCOPES,
    WILDCARD,
    Approval,
    AuditSettings,
    Condition,
    Limit,
    Policy,
    Rule,
    ToolPolicy,
)
from regoguard.policy.reader import ESCAPE_HINT, Reader, join_path, unescapable

MAX_POLICY_BYTES = 4 * 1024 * 1024

TOP_KEYS = ("version", "description", "default", "hide_unlisted", "mode", "hide", "tools", "audit", "on_store_error",
            "rego", "pin", "on_change", "windows")
AUDIT_KEYS = ("erase", "mask", "hash_arguments", "default_masking")
TOOL_KEYS = ("rules", "visible_to")
VISIBLE_TO_RULE = "visible_to"
RULE_KEYS = ("name", "action", "conditions", "on_deny", "reason", "rate_limit", "state", "validate", "scope",
             "approval_timeout", "approver")
APPROVAL_ONLY = ("approval_timeout", "approver")
VALIDATE_KEYS = ("required_args", "schema")


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


@heap.paused()
def load_policy_text(text: str, source: str = "<policy>") -> Policy:
    """Load and validate a policy given as text; ``source`` names it in errors and in the Rego header."""
    reader = Reader(source)
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


def _read_policy(r: Reader, root: Node) -> Policy | None:
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
    hide_unlisted = False
    if "hide_unlisted" in top:
        node = top["hide_unlisted"]
        if not isinstance(node.value, bool):
            r.error(node.pos, "hide_unlisted", f"hide_unlisted must be true or false, not a {node.kind}")
        elif node.value and default != "deny":
            r.error(node.pos, "hide_unlisted", "hide_unlisted applies under `default: deny` (unlisted tools are "
                    "allowed otherwise)", "add `default: deny`, or drop hide_unlisted")
        else:
            hide_unlisted = node.value
    hide = _read_hide(r, top["hide"]) if "hide" in top else ()
    mode = "enforce"
    if "mode" in top:
        mode = r.choice(top["mode"], "mode", "mode", ("enforce", "dry_run")) or "enforce"
    audit = _read_audit(r, top["audit"]) if "audit" in top else AuditSettings()
    on_store_error = "deny"
    if "on_store_error" in top:
        choice = r.choice(top["on_store_error"], "on_store_error", "on_store_error", ("deny", "allow"))
        on_store_error = choice or "deny"
    windows = "rolling"
    if "windows" in top:
        windows = r.choice(top["windows"], "windows", "windows", ("rolling", "calendar")) or "rolling"
    rego = _read_rego(r, top["rego"]) if "rego" in top else ()
    pin = _read_pin(r, top["pin"]) if "pin" in top else None
    on_change = "deny"
    if "on_change" in top:
        on_change = r.choice(top["on_change"], "on_change", "on_change", ("deny", "warn")) or "deny"
        if pin is None:
            r.error(top["on_change"].pos, "on_change", "on_change applies to pinned tools, and this policy has no "
                    "`pin:`", "add `pin: tools.lock.json` (written by `regoguard pin`)")
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
        on_store_error=on_store_error,
        rego=rego,
        pin=pin,
        on_change=on_change,
        hide_unlisted=hide_unlisted,
        windows=windows,
        mode=mode,
        audit=audit,
        description=description,
        version=version,
        hide=hide,
        tools=tuple(tools),
        warnings=tuple(str(w) for w in r.warnings),
    )


def _read_rego(r: Reader, node: Node) -> tuple[str, ...]:
    """``rego:``: the team's Rego files or directories, relative to the policy file."""
    if not isinstance(node.value, list):
        r.error(node.pos, "rego", f"rego must be a list of .rego files or directories, not a {node.kind}")
        return ()
    base = Path(r.file).parent if not r.file.startswith("<") else Path()
    paths: list[str] = []
    for i, item in enumerate(node.value):
        text = r.string(item, f"rego[{i}]", "a path to a .rego file or a directory")
        if text is None:
            continue
        path = Path(text) if Path(text).is_absolute() else base / text
        if not path.exists():
            r.error(item.pos, f"rego[{i}]", f"no such Rego file or directory: {path}")
        paths.append(str(path))
    return tuple(paths)


def _read_pin(r: Reader, node: Node) -> str | None:
    """``pin:``: the lock file of the server's tools (``regoguard pin`` writes it), relative to the policy."""
    text = r.string(node, "pin", "a path to a lock file written by `regoguard pin`, or first-use")
    if text is None:
        return None
    if text == "first-use":  # each tool held to the definition first seen, recorded in the state store
        return text
    base = Path(r.file).parent if not r.file.startswith("<") else Path()
    path = Path(text) if Path(text).is_absolute() else base / text
    if not path.is_file():
        r.error(node.pos, "pin", f"no such lock file: {path}", "write one with `regoguard pin -o FILE -- SERVER`")
    return str(path)


def _read_audit(r: Reader, node: Node) -> AuditSettings:
    entries = r.mapping(node, "audit", AUDIT_KEYS, "audit")
    if entries is None:
        return AuditSettings()
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("erase", "mask"):
        if key not in entries:
            continue
        lnode = entries[key]
        if not isinstance(lnode.value, list):
            r.error(lnode.pos, f"audit.{key}", f"audit.{key} must be a list of JSON pointers or key names")
            continue
        items = [r.string(item, f"audit.{key}[{i}]", "a JSON pointer or key name") for i, item in
                 enumerate(lnode.value)]
        lists[key] = tuple(i for i in items if i is not None)
    flags: dict[str, bool] = {}
    for key in ("hash_arguments", "default_masking"):
        if key in entries:
            fnode = entries[key]
            if isinstance(fnode.value, bool):
                flags[key] = fnode.value
            else:
                r.error(fnode.pos, f"audit.{key}", f"audit.{key} must be true or false, not a {fnode.kind}")
    return AuditSettings(erase=lists.get("erase", ()), mask=lists.get("mask", ()),
                         hash_arguments=flags.get("hash_arguments", False),
                         default_masking=flags.get("default_masking", True))


def _read_hide(r: Reader, node: Node) -> tuple[str, ...]:
    if not isinstance(node.value, list):
        r.error(node.pos, "hide", f"hide must be a list of tool names, not a {node.kind}")
        return ()
    out: list[str] = []
    for i, item in enumerate(node.value):
        name = r.string(item, f"hide[{i}]", "a hidden tool name")
        if name is None:
            continue
        if unescapable(name):
            r.error(item.pos, f"hide[{i}]", f"tool name {name!r} holds a quote, backslash or control character",
                    ESCAPE_HINT)
            continue
        if name in out:
            r.error(item.pos, f"hide[{i}]", f"duplicate entry {name!r} in hide")
            continue
        if name != "*" and any(ch in name for ch in "*?["):
            # read as written it would hide only a tool of that very name, and leave the ones meant visible
            r.error(item.pos, f"hide[{i}]", f"hide entries are exact tool names (only \"*\" alone means every tool), "
                    f"so {name!r} would hide none of the tools it looks like it names",
                    "list the names to hide (`regoguard scan` lists a server's tools)")
            continue
        out.append(name)
    return tuple(out)


def _read_tool(r: Reader, key: str, node: Node, key_pos: Pos) -> ToolPolicy | None:
    path = join_path("tools", key)
    if not key.strip():
        r.error(key_pos, path, "tool name must not be empty")
        return None
    if unescapable(key):
        r.error(key_pos, path, f"tool name {key!r} holds a quote, backslash or control character", ESCAPE_HINT)
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
        r.error(rnode.pos, join_path(path, "rules"), f"rules must be a list, not a {rnode.kind}")
        return None
    rules: list[Rule] = []
    names: dict[str, int] = {}
    counters: dict[str, int] = {}
    if "visible_to" in entries:
        visible = _read_visible_to(r, key, entries["visible_to"], join_path(path, "visible_to"))
        if visible is not None:
            rules.append(visible)
    for i, rule_node in enumerate(rnode.value):
        rule = _read_rule(r, key, i, rule_node, join_path(join_path(path, "rules"), i))
        if rule is None:
            continue
        if rule.name == VISIBLE_TO_RULE and "visible_to" in entries:
            r.error(rule_node.pos, join_path(join_path(path, "rules"), i),
                    f"rule name {VISIBLE_TO_RULE!r} is the id of this tool's `visible_to`", "rename the rule")
        if rule.name is not None:
            if rule.name in names:
                r.error(rule_node.pos, join_path(join_path(path, "rules"), i),
                        f"duplicate rule name {rule.name!r} (also rules[{names[rule.name]}])",
                        "rule names must be unique per tool: they are the rule ids in decisions and logs")
            names[rule.name] = i
        if rule.limit is not None:
            counter = rule.limit.counter
            if counter in counters:
                r.error(rule_node.pos, join_path(join_path(path, "rules"), i),
                        f"duplicate counter {counter.split('.', 1)[1]!r} (also used by rules[{counters[counter]}])",
                        "use another counter name or window, or combine the two rules")
            counters[counter] = i
        rules.append(rule)
    return ToolPolicy(key, tuple(rules), key_pos.line)


def _read_visible_to(r: Reader, key: str, node: Node, path: str) -> Rule | None:
    """``visible_to:``: conditions on who is calling (principal, session, server). The tool exists only
    for callers for whom all hold: it is left out of their ``tools/list`` and their calls are denied by
    the rule this returns (``<tool>/visible_to``), which the engine decides like any other."""
    if key == WILDCARD:
        r.error(node.pos, path, "`visible_to` belongs to a tool, not to \"*\"",
                "give each tool that only some callers may see its own `visible_to`")
        return None
    if not isinstance(node.value, list) or not node.value:
        r.error(node.pos, path, "visible_to must be a non-empty list of conditions on principal.*, session.* or "
                                "server.*")
        return None
    conditions: list[Condition] = []
    for i, cn in enumerate(node.value):
        cpath = join_path(path, i)
        got = read_condition(r, cn, cpath)
        if got is None:
            continue
        cond, _is_state = got
        if cond.root == "args" or _is_state:
            r.error(cn.pos, join_path(cpath, "path"),
                    "visible_to reads who is calling (principal.*, session.*, server.*), never the arguments or "
                    "counters: a tool list must not depend on them")
            continue
        conditions.append(cond)
    if len(conditions) != len(node.value):
        return None
    return Rule(f"{key}/{VISIBLE_TO_RULE}", VISIBLE_TO_RULE, -1, "evaluate",
                f"Tool {key!r} is not available to this caller", node.pos.line, tuple(conditions),
                custom_message=True, visibility=True)


def _counter_owner(tool_key: str) -> str:
    return GLOBAL_SCOPE_NAME if tool_key == WILDCARD else tool_key


def _read_rule(r: Reader, tool_key: str, index: int, node: Node, path: str) -> Rule | None:
    entries = r.mapping(node, path, RULE_KEYS, "a rule")
    if entries is None:
        return None
    n_errors = len(r.errors)
    name = r.string(entries["name"], join_path(path, "name"), "rule name") if "name" in entries else None
    rule_id = f"{tool_key}/{name}" if name else f"{tool_key}/rules[{index}]"

    action = "evaluate"
    explicit_allow = False
    if "action" in entries:
        a = r.choice(entries["action"], join_path(path, "action"), "action",
                     ("evaluate", "allow", "deny", "require_approval"))
        if a == "allow":
            explicit_allow = True
        action = a if a in ("deny", "require_approval") else "evaluate"
    approval = _read_approval(r, entries, path) if action == "require_approval" else None
    if action != "require_approval":
        for k in APPROVAL_ONLY:
            if k in entries:
                r.error(entries[k].pos, join_path(path, k), f"{k} applies to `action: require_approval` rules only")

    message = None
    if "on_deny" in entries and "reason" in entries:
        r.error(entries["reason"].pos, join_path(path, "reason"),
                "a rule takes `on_deny` (Intercept) or `reason` (catalogue), not both")
    for k in ("on_deny", "reason"):
        if k in entries:
            message = r.string(entries[k], join_path(path, k), k) or message

    owner = _counter_owner(tool_key)
    limit: Limit | None = None
    scope_node = entries.get("scope")
    scope = None
    if scope_node is not None:
        scope = r.choice(scope_node, join_path(path, "scope"), "scope", SCOPES)

    state_counter: tuple[str, Node] | None = None
    state_decl: dict[str, Any] | None = None
    if "state" in entries:
        state_decl = read_state(r, entries["state"], join_path(path, "state"))

    conditions: list[Condition] = []
    state_conditions: list[tuple[Condition, Node, str]] = []
    if "conditions" in entries:
        cnode = entries["conditions"]
        if not isinstance(cnode.value, list):
            r.error(cnode.pos, join_path(path, "conditions"), f"conditions must be a list, not a {cnode.kind}")
        else:
            for ci, cn in enumerate(cnode.value):
                cpath = join_path(join_path(path, "conditions"), ci)
                got = read_condition(r, cn, cpath)
                if got is None:
                    continue
                cond, is_state = got
                if is_state:
                    state_conditions.append((cond, cn, cpath))
                else:
                    conditions.append(cond)

    if "rate_limit" in entries:
        rl_path = join_path(path, "rate_limit")
        if "conditions" in entries or "state" in entries:
            r.error(entries["rate_limit"].pos, rl_path, "rate_limit cannot be combined with conditions or state",
                    "use a separate rule, or the full `state:` form")
        limit = read_rate_limit(r, entries["rate_limit"], rl_path, owner, scope)

    for cond, cn, cpath in state_conditions:
        scope_name, counter = cond.path
        if state_decl is None or state_decl.get("counter") != counter:
            r.error(cn.pos, join_path(cpath, "path"),
                    f"condition reads state.{scope_name}.{counter} but this rule has no "
                    f"`state: {{counter: {counter}}}` block",
                    "declare the counter with a `state:` block in the same rule")
            continue
        if scope_name != owner:
            r.error(cn.pos, join_path(cpath, "path"),
                    f"counters of tool {tool_key!r} are read as state.{owner}.{counter}, not "
                    f"state.{scope_name}.{counter}")
            continue
        if cond.op not in STATE_OPS:
            r.error(cn.pos, join_path(cpath, "op"),
                    f"a state condition limits its counter with lte or lt, not {cond.op}")
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
        r.error(entries["state"].pos, join_path(path, "state"),
                f"state counter {state_decl['counter']!r} is never limited",
                f"add a condition {{path: state.{owner}.{state_decl['counter']}, op: lte, value: N}} to this rule")

    validate = False
    validate_schema = False
    if "validate" in entries:
        vnode = entries["validate"]
        ventries = r.mapping(vnode, join_path(path, "validate"), VALIDATE_KEYS, "validate")
        if ventries is not None:
            if not any(k in ventries for k in VALIDATE_KEYS):
                r.error(vnode.pos, join_path(path, "validate"), "validate needs `required_args: true` or "
                        "`schema: true`")
            for vkey, vval in ventries.items():
                if vkey not in VALIDATE_KEYS:
                    continue  # reported as an unknown key
                if not isinstance(vval.value, bool):
                    r.error(vval.pos, join_path(join_path(path, "validate"), vkey),
                            f"{vkey} must be true or false, not a {vval.kind}")
                elif vkey == "required_args":
                    validate = vval.value
                else:
                    validate_schema = vval.value

    if scope is not None and limit is None and "rate_limit" not in entries and "state" not in entries:
        r.error(scope_node.pos if scope_node else node.pos, join_path(path, "scope"),
                "scope applies to a rule's limit, and this rule has no rate_limit or state")
    if limit is not None and limit.scope == "session" and scope is None:  # an explicit `scope: session` is a choice
        r.warn(node.pos, path, f"rule {rule_id!r} has a session-scoped limit: it starts over when the agent "
               "reconnects (set `scope: principal` or `global` to make it stick)")

    if action == "deny":
        for k in ("conditions", "rate_limit", "state", "validate"):
            if k in entries:
                r.error(entries[k].pos, join_path(path, k), f"a deny rule takes no {k}: it always denies")
    elif action == "require_approval":
        for k in ("rate_limit", "state", "validate", "scope"):
            if k in entries:
                r.error(entries[k].pos, join_path(path, k),
                        f"a require_approval rule takes no {k}: put it in a rule of its own",
                        "its conditions say which calls need no human; limits and validation go elsewhere")
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
        message = default_message(rule_id, action, limit)
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
        validate_schema=validate_schema,
        explicit_allow=explicit_allow,
        custom_message=custom_message,
        approval=approval,
    )


def _read_approval(r: Reader, entries: dict[str, Node], path: str) -> Approval:
    """``approval_timeout`` (seconds, or a duration such as ``15m``, ``2h``) and ``approver``."""
    timeout = DEFAULT_APPROVAL_TIMEOUT
    node = entries.get("approval_timeout")
    if node is not None:
        got = _duration(node.value)
        if got is None or not 1 <= got <= MAX_APPROVAL_TIMEOUT:
            r.error(node.pos, join_path(path, "approval_timeout"),
                    f"approval_timeout must be a duration from 1s to 7d (e.g. 300, 90s, 15m, 2h), got {node.value!r}")
        else:
            timeout = got
    approver = "user"
    if "approver" in entries:
        approver = r.choice(entries["approver"], join_path(path, "approver"), "approver", APPROVERS) or "user"
    return Approval(timeout, approver)


MAX_APPROVAL_TIMEOUT = 7 * 86400
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: Any) -> int | None:
    """Seconds from an integer, or from text like ``90s``, ``15m``, ``2h``, ``1d``; None if neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and len(value) >= 2 and value[:-1].isdigit() and value[:-1].isascii() \
            and value[-1] in _DURATION_UNITS:
        return int(value[:-1]) * _DURATION_UNITS[value[-1]]
    return None


def _nonempty_list(node: Node | None) -> bool:
    return node is not None and isinstance(node.value, list) and len(node.value) > 0


