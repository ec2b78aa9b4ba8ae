"""One tool key's rules as direct Rego: a *section* of rules sharing a prefix (``t3_``).

A section decides the calls of one tool key (its own rules, then the ``"*"`` rules, merged here at
compile time), of every hidden name, or of every name no key matches. Its *core* — all a bundle holds —
defines, under its prefix:

- ``allow``: every rule holds — one rule, every condition written out inline;
- ``reasons``: one ``{"rule", "message", "detail"}`` per failing rule, in order, from a table of the
  rules and their checks (asked for only when ``allow`` is false);
- ``costs``: the argument-derived costs of its charges, in charge order (when allowed);
- ``verdict``: what the engine asks for, in one query: ``{"allow": true, "costs"}`` or
  ``{"allow": false, "reasons"}`` (the engine fills the charges in from the compiled templates).

Its *full* part, in the committed module only, adds ``charges`` and the documented ``decision``.

Few rules per tool on purpose: rego-cpp's bundle memory, build time and query time grow with the rules
a bundle holds. Every rule is total (a default, or clauses covering every case), and ``not`` is only
applied to rules or to built-ins over bound values — never to a path that may be absent (OPA makes such
an expression undefined, which would drop a denial).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from regoguard.compiler import rego_text as rt
from regoguard.compiler.vector import Spec, Vector

_SAFE = re.compile(r"[A-Za-z0-9_]+")
# The detail a validate: {schema: true} rule fails with in Rego; the engine appends the validator's own
# account (input-derived text, which rego-cpp would not escape in output).
SCHEMA_DETAIL = "the arguments do not match the tool's inputSchema"
# The detail of a rule whose cost argument (increment_from) is missing or not a number; the engine shows it
# as the denial's message, whatever the rule's own on_deny says (that message is about the budget).
COST_DETAIL = " must be a non-negative number: it is what the call costs"
# Where a condition's path starts: the call's arguments (``args``, the module's own rule for them), or
# a part of the call's context in the input document.
_BASES = {"args": "args", "principal": "input.principal", "session": "input.session", "server": "input.server"}
# Where a plain reference to an argument starts: the documented input in the committed module and in
# full sections (``input.tool.arguments``), ``input.args`` in the engine's vector bundles, which the engine
# hands the arguments one level up (one object fewer to build and to walk at every reference). Written as
# a placeholder no policy text can produce (policy strings and comments never hold control characters),
# then replaced.
_ARGS_AT = "\x1eargs\x1e"
FULL_ARGS = "input.tool.arguments"
VECTOR_ARGS = "input.args"



@dataclass(frozen=True)
class Section:
    prefix: str
    text: str
    """The core: what a bundle holds."""
    full: str
    """``charges`` and ``decision``: the committed module's extras."""
    reads_schema: bool
    reads_schema_check: bool = False
    vector: str = ""
    """The core as the engine's bundle holds it: ``verdict`` a vector of the rules' outcomes, which the
    engine reads with :attr:`spec` (:mod:`regoguard.compiler.vector`)."""
    spec: Spec = ()
    uses_args: bool = False
    """Its rules read the module's ``args`` rule (the arguments, ``{}`` when there are none)."""


def _lines_rule(name: str, clauses: list[list[str]], comment: str | None = None) -> list[str]:
    """``default name := false`` and one ``name if { ... }`` per clause (any clause holding makes it true)."""
    out = [f"# {rt.comment(comment)}"] if comment else []
    out.append(f"default {name} := false")
    for body in clauses:
        out.append("")
        out.append(f"{name} if {{")
        out.extend(f"\t{expr}" for expr in body)
        out.append("}")
    out.append("")
    return out


class _Values:
    """The value rules of one section: ``args.<path>`` (null when absent), one rule per distinct path."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.names: dict[tuple[str, tuple[str, ...]], str] = {}
        self.lines: list[str] = []
        self.args_used = False

    def of(self, item: dict[str, Any]) -> str:
        segs = tuple(str(s) for s in item.get("key_path", item["path"]))
        root = item.get("root", "args")
        name = self.names.get((root, segs))
        if name is not None:
            return name
        base = "_".join(segs)
        plain = _SAFE.fullmatch(base) is not None and len(base) <= 40
        kind = "arg" if root == "args" else root
        self.args_used = self.args_used or root == "args"
        name = f"{self.prefix}{kind}_{base}" if plain else f"{self.prefix}{kind}{len(self.names)}"
        if name in self.names.values():
            name = f"{self.prefix}{kind}{len(self.names)}"
        self.names[(root, segs)] = name
        self.lines.append(f"# {rt.comment(root + '.' + '.'.join(segs))} (null when absent)")
        self.lines.append(f"default {name} := null")
        for ref in rt.refs(list(segs), _BASES[root]):
            self.lines.append("")
            self.lines.append(f"{name} := x if x := {ref}")
        self.lines.append("")
        return name


class _Locals:
    """One rule's arguments read by a plain reference, each bound once to a local (``v<k>_<i> := ref``):
    rego-cpp resolves ``input.tool.arguments.x`` afresh at every use, at ~5 µs each, and a local costs
    nothing to read again. The binding is undefined when the argument is missing, as the reference was."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.names: dict[str, str] = {}

    def of(self, c: dict[str, Any], values: _Values) -> tuple[str, list[str]]:
        """The term to test for condition ``c`` and the binding that goes before each of its bodies."""
        ref = _direct(c)
        if ref is None:
            return values.of(c), []
        name = self.names.setdefault(ref, f"v{self.k}_{len(self.names)}")
        return name, [f"{name} := {ref}"]


def rules_section(prefix: str, entry: dict[str, Any], origins: list[str]) -> Section:
    """The section of a tool key (or of unlisted names under ``default: allow``) with rules."""
    p = prefix
    values = _Values(p)
    helpers: list[str] = []  # rules for conditions with several alternative bodies
    allow: list[str] = []  # the body of `allow`: every rule's checks, inline
    reasons: list[str] = []  # each rule's reason rule, in order
    failing: list[str] = []  # the rules saying why a call is denied
    vec = Vector(p)  # the same outcomes as the engine's bundle asks for them
    costs: dict[str, str] = {}  # rule id -> its cost rule
    notes: list[str] = []  # rules that never deny
    reads_schema = False
    reads_schema_check = False
    denies = False
    held: list[str] = []  # require_approval rules' reason rules: why a call waits for a person
    approved: list[str] | None = []  # the body saying no person is needed (None: some rule always needs one)
    for k, (rule, origin) in enumerate(zip(entry["rules"], origins, strict=True)):
        if "approval" in rule:
            ok = _approval_rule(p, k, rule, origin, values, helpers, failing, vec)
            held.append(f"{p}reason{k}")
            approved = None if ok is None or approved is None else [*approved, ok]
            continue
        checks: list[tuple[list[str], list[str] | str]] = []  # (inline body, detail texts or the rule giving them)
        local = _Locals(k)
        for j, c in enumerate(rule.get("conditions", ())):
            v, bind = local.of(c, values)
            clauses, extra = rt.condition_clauses(c, v, f"{p}c{k}_{j}_eq", f"{k}_{j}")
            clauses = [[*bind, *body] for body in clauses]
            for name, extra_clauses in extra:
                helpers.extend(_lines_rule(name, extra_clauses))
            if len(clauses) == 1:
                body = clauses[0]
            else:
                name = f"{p}c{k}_{j}"
                helpers.extend(_lines_rule(name, clauses, c["text"]))
                body = [name]
            checks.append((body, [f"{c['text']} does not hold"]))
        if "cost_from" in rule:
            src = rule["cost_from"]
            v = values.of(src)
            cost = costs[rule["id"]] = f"{p}cost{k}"
            helpers += [f"# the cost of a call: {rt.comment(src['text'])}, a non-negative number",
                        f"{cost} := {v} if {{", f"\tis_number({v})", f"\t{v} >= 0", "}", ""]
            what = f"{src['text']}{COST_DETAIL}"
            checks.append(([f"{cost} >= 0"], [what]))
        if rule.get("validate_required"):
            reads_schema = True
            checks.append((["required_ok"], "required_failures"))
        if rule.get("validate_schema"):
            reads_schema_check = True
            checks.append((["schema_valid"], [SCHEMA_DETAIL]))
        if rule.get("deny"):
            denies = True
            checks = [([], ["the rule denies every call"])]
        if not checks:  # a rule without conditions never denies; its limit is among the charges
            notes += [f"# {rt.comment(origin)}", "#   no condition: it never denies (its limit is among the charges)"]
            continue
        if not rule.get("deny"):
            allow.append(f"{p}ok{k} # {origin}")
        reasons.append(f"{p}reason{k}")
        failing.extend(_reason_rules(p, k, rule, origin, checks, vec))
    if held:
        allow.append(f"{p}approved # no person is needed, or one approved the call")
        failing += _approved_rule(p, approved)
        vec.granted()
    if denies:
        head = [f"{p}allow := false # a rule denies every call", ""]
    elif allow:
        head = [f"default {p}allow := false", "", f"{p}allow if {{",
                *(f"\t{x}" for x in dict.fromkeys(allow)), "}", ""]
    else:
        head = [f"{p}allow := true", ""]
    lines = ["# why a call is denied: each failing rule, in order (looked at only when `allow` is false)",
             *failing, f"{p}reasons := {_concat([f'{r}' for r in reasons])}", ""]
    if held:
        lines += ["# why a call waits for a person (looked at only when nothing denies it)",
                  f"{p}held := {_concat(held)}", ""]
    text = "\n".join([*notes, *head, *values.lines, *helpers, *lines, *_costs(p, entry, costs),
                      *_verdict(p, bool(held))])
    vec.costs(_dynamic(entry, costs))
    vector, spec = vec.text([*notes, *values.lines, *helpers])
    return Section(p, text.replace(_ARGS_AT, FULL_ARGS), _full(p, entry, costs, bool(held)), reads_schema,
                   reads_schema_check, vector.replace(_ARGS_AT, VECTOR_ARGS), spec, values.args_used)


def _approval_rule(p: str, k: int, rule: dict[str, Any], origin: str, values: _Values, helpers: list[str],
                   out: list[str], vec: Vector) -> str | None:
    """A ``require_approval`` rule: ``<p>reason<k>`` (its request for a person, when its conditions do not
    all hold) and the name of the rule saying they hold (None: without conditions every call needs one);
    its outcome goes to ``vec``."""
    reason, ok = f"{p}reason{k}", f"{p}ok{k}"
    body: list[str] = []
    local = _Locals(k)
    for j, c in enumerate(rule.get("conditions", ())):
        v, bind = local.of(c, values)
        clauses, extra = rt.condition_clauses(c, v, f"{p}c{k}_{j}_eq", f"{k}_{j}")
        clauses = [[*bind, *clause] for clause in clauses]
        for name, extra_clauses in extra:
            helpers.extend(_lines_rule(name, extra_clauses))
        if len(clauses) == 1:
            body.extend(clauses[0])
        else:
            helpers.extend(_lines_rule(f"{p}c{k}_{j}", clauses, c["text"]))
            body.append(f"{p}c{k}_{j}")
    def item(detail: str) -> dict[str, Any]:
        return {"rule": rule["id"], "message": rule["message"], "detail": [detail]}

    def text(detail: str) -> str:
        return (f'{{"rule": {rt.string(rule["id"])}, "message": {rt.string(rule["message"])}, '
                f'"detail": {rt.value([detail])}}}')

    comment = [f"# {rt.comment(origin)}",
               "#   require_approval: a person decides the calls its conditions do not let through"]
    out += comment
    if not body:
        out += [f"{reason} := [{text('every call needs approval')}]", ""]
        vec.held(k, "false", item("every call needs approval"), comment)
        return None
    ok_lines = [f"default {ok} := false", "", f"{ok} if {{", *(f"\t{x}" for x in dict.fromkeys(body)), "}", ""]
    out += [*ok_lines, f"default {reason} := []", "",
            f"{reason} := [{text('its conditions do not all hold')}] if {ok} == false", ""]
    vec.held(k, ok, item("its conditions do not all hold"), [*comment, *ok_lines])
    return ok


def _approved_rule(p: str, approved: list[str] | None) -> list[str]:
    """``<p>approved``: no person is needed (every require_approval rule's conditions hold), or the engine
    was told a person approved this exact call (``input.approval.granted``)."""
    out = [f"default {p}approved := false", "", f"{p}approved if input.approval.granted == true", ""]
    if approved is not None:
        out += [f"{p}approved if {{", *(f"\t{x}" for x in approved), "}", ""]
    return out


def _concat(parts: list[str]) -> str:
    if not parts:
        return "[]"
    out = parts[0]
    for part in parts[1:]:
        out = f"array.concat({out}, {part})"
    return out


def _reason_rules(p: str, k: int, rule: dict[str, Any], origin: str,
                  checks: list[tuple[list[str], list[str] | str]], vec: Vector) -> list[str]:
    """``<p>ok<k>`` (the rule holds) and ``<p>reason<k>`` (its reason when it does not); the rule's outcome
    goes to ``vec``. A rule with one check fails with a constant reason; with several, its detail lists
    the checks that do not hold."""
    ok, reason = f"{p}ok{k}", f"{p}reason{k}"
    custom = bool(rule.get("custom_message") or rule.get("deny"))
    comment = [f"# {rt.comment(origin)}"]
    out = [*comment, f"default {reason} := []", ""]
    if rule.get("deny"):
        every = ["the rule denies every call"]
        vec.ok(k, "false", _constant(rule, every, custom), comment)
        return [*out, f"{reason} := [{_reason(rule, rt.value(every), custom)}]", ""]
    body = [x for b, _ in checks for x in b]
    ok_lines = [f"default {ok} := false", "", f"{ok} if {{", *(f"\t{x}" for x in dict.fromkeys(body)), "}", ""]
    out += ok_lines
    first = checks[0][1]
    if len(checks) == 1 and isinstance(first, list):
        # a cost argument that is missing or not a number says so, whatever the rule's own on_deny says
        own = custom and not first[0].endswith(COST_DETAIL)
        vec.ok(k, ok, _constant(rule, first, own), [*comment, *ok_lines])
        return [*out, f"{reason} := [{_reason(rule, rt.value(first), own, first[0])}] if {ok} == false", ""]
    if len(checks) == 1 and isinstance(first, str):
        detail = first
    else:
        pairs = ", ".join(f"[{_count(b)}, {d if isinstance(d, str) else rt.value(d)}]" for b, d in checks)
        detail = f"[t | some c in [{pairs}]; c[0] == 0; some t in c[1]]"
    texts = [d for _, d in checks if isinstance(d, list)]
    if len(texts) == len(checks):
        vec.checks(k, rule, [*comment, *ok_lines], [_count(b) for b, _ in checks], texts)
    else:
        vec.detail(k, rule, [*comment, *ok_lines], detail)
    if custom and "cost_from" in rule:
        # A missing or non-numeric cost argument says so, not the rule's on_deny (which speaks of a budget).
        intro = rt.string(f'Policy rule "{rule["id"]}" denied the call: ')
        message = (f'array.concat([concat("", [{intro}, t]) | some t in d; endswith(t, {rt.string(COST_DETAIL)})], '
                   f'[{rt.string(rule["message"])}])[0]')
        item = f'{{"rule": {rt.string(rule["id"])}, "message": {message}, "detail": d}}'
        return [*out, f"{reason} := [{item}] if {{", f"\t{ok} == false", f"\td := {detail}", "}", ""]
    return [*out, f"{reason} := [{_reason(rule, 'd', custom)}] if {{", f"\t{ok} == false", f"\td := {detail}", "}", ""]


def _constant(rule: dict[str, Any], detail: list[str], custom: bool) -> dict[str, Any]:
    """The reason :func:`_reason` writes for a constant ``detail``, as data."""
    message = rule["message"] if custom else f'Policy rule "{rule["id"]}" denied the call: {detail[0]}'
    return {"rule": rule["id"], "message": message, "detail": list(detail)}


def _reason(rule: dict[str, Any], detail: str, custom: bool, first: str | None = None) -> str:
    """The reason object; a message naming what failed first when the rule has none of its own."""
    if custom:
        message = rt.string(rule["message"])
    elif first is not None:
        message = rt.string(f'Policy rule "{rule["id"]}" denied the call: {first}')
    else:
        intro = rt.string(f'Policy rule "{rule["id"]}" denied the call: ')
        message = f'concat("", [{intro}, {detail}[0]])'
    return f'{{"rule": {rt.string(rule["id"])}, "message": {message}, "detail": {detail}}}'


def _count(body: list[str]) -> str:
    """A check as a number: 1 when ``body`` holds, 0 when not (a term, so it can sit in the table)."""
    if not body:
        return "0"
    return f"count([1 | {'; '.join(body)}])"


def _direct(c: dict[str, Any]) -> str | None:
    """A plain reference to the argument, for operators that fail by themselves when it is missing
    (no digit segment: those may index a list or name a key, and go through a value rule)."""
    segs = [str(s) for s in c.get("key_path", c["path"])]
    positive = c["op"] in rt.POSITIVE or (c["op"] == "exists" and c["value"] is True)
    if not positive or "key_path" in c or any(s.isascii() and s.isdigit() for s in segs):
        return None
    root = c.get("root", "args")
    return rt.refs(segs, _ARGS_AT if root == "args" else _BASES[root])[0]


def _dynamic(entry: dict[str, Any], costs: dict[str, str]) -> list[str]:
    """The cost rules of the argument-derived charges, in charge order."""
    return [costs[t["rule"]] for t in entry["charges"] if "cost_from" in t]


def _costs(p: str, entry: dict[str, Any], costs: dict[str, str]) -> list[str]:
    return [f"{p}costs := [{', '.join(_dynamic(entry, costs))}] if {p}allow", ""]


def _full(p: str, entry: dict[str, Any], costs: dict[str, str], held: bool = False) -> str:
    charges = []
    for t in entry.get("charges", ()):
        items = {k: rt.value(v) for k, v in t.items() if k != "cost_from"}
        if "cost_from" in t:
            items["cost"] = costs[t["rule"]]
        charges.append("{" + ", ".join(f"{rt.string(k)}: {items[k]}" for k in sorted(items)) + "}")
    out = [f"default {p}charges := []", ""]
    if charges:
        out += [f"{p}charges := [", *(f"\t{c}," for c in charges), f"] if {p}allow", ""]
    out += [
        f'{p}decision := {{"allow": true, "action": "allow", "reasons": [], "charges": {p}charges}} if {p}allow',
        "",
        f'{p}decision := {{"allow": false, "action": "deny", "reasons": {p}reasons, "charges": []}} if {{',
        f"\t{p}allow == false",
        *([f"\tcount({p}reasons) > 0"] if held else []),
        "}",
        "",
    ]
    if held:
        held_decision = f'{{"allow": false, "action": "require_approval", "reasons": {p}held, "charges": []}}'
        out += [f"{p}decision := {held_decision} if {{", f"\t{p}allow == false", f"\tcount({p}reasons) == 0", "}", ""]
    return "\n".join(out)


def _verdict(p: str, held: bool = False) -> list[str]:
    """What the engine asks for. With require_approval rules: a denial wins over a request for a person."""
    if held:
        return [
            f'{p}verdict := {{"allow": true, "costs": {p}costs}} if {p}allow',
            "",
            f'{p}verdict := {{"allow": false, "reasons": {p}reasons}} if {{',
            f"\t{p}allow == false",
            f"\tcount({p}reasons) > 0",
            "}",
            "",
            f'{p}verdict := {{"allow": false, "action": "require_approval", "reasons": {p}held}} if {{',
            f"\t{p}allow == false",
            f"\tcount({p}reasons) == 0",
            "}",
            "",
        ]
    return [
        f'{p}verdict := {{"allow": true, "costs": {p}costs}} if {p}allow',
        "",
        f'{p}verdict := {{"allow": false, "reasons": {p}reasons}} if {p}allow == false',
        "",
    ]


def fixed_section(prefix: str, rule: str, message: str, detail: str) -> Section:
    """The section of hidden names (``rule`` "hide") or, under ``default: deny``, of unlisted ones."""
    p = prefix
    constant = {"detail": [detail], "message": message, "rule": rule}

    text = "\n".join([f"{p}allow := false", "", f"{p}reasons := {rt.value([constant])}", "",
                      f"{p}costs := [] if {p}allow", "", *_verdict(p)])
    vec = Vector(p)
    vec.ok(0, "false", constant)
    vector, spec = vec.text([])
    return Section(p, text, _full(p, {}, {}), False, vector=vector, spec=spec)
