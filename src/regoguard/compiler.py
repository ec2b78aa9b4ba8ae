"""Policy model → one Rego v1 module, plus what each tool's rules read (for the decision cache).

Stages, in order, each a small function:

1. ``_settings``: the policy as plain data — per tool, its rules with conditions precompiled (``eq``
   matchers, portable regexes, globs as anchored regexes). Doing this here keeps the Rego library
   generic, so a decision costs the same at 10 tools as at 1,000.
2. ``_reads``: the top-level arguments each tool key's rules look at, and whether they read the schema.
3. ``_emit``: the module text — a header naming the source, ``settings := {...}`` with a comment giving
   the YAML line of every tool and rule, and ``decision := lib.decide(settings)``.

Output is deterministic: the same YAML gives byte-identical Rego.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regoguard.policy.model import WILDCARD, Condition, Policy, Rule
from regoguard.policy.regex_check import glob_to_regex, portable_regex

LIB_PACKAGE = "regoguard.lib"
SETTINGS_FORMAT = 2
"""The shape of ``settings``; ``rego/regoguard/lib.rego`` declares the one it reads (``format``)."""
SETTINGS_PACKAGE = "regoguard"


@dataclass(frozen=True)
class Reads:
    """What a tool key's rules (with the ``"*"`` rules) read: top-level argument names and the schema."""

    args: frozenset[str] = frozenset()
    schema: bool = False


@dataclass(frozen=True)
class CompiledPolicy:
    module: str
    settings: dict[str, Any]
    reads: dict[str, Reads] = field(default_factory=dict)
    wildcard_reads: Reads = Reads()
    source: str = ""
    bounded: bool = True
    """No condition runs a regex: every decision takes bounded time (the engine may skip its timeout)."""

    @property
    def revision(self) -> str:
        """A short hash of the module text: it changes whenever the compiled policy does."""
        return hashlib.sha256(self.module.encode()).hexdigest()[:16]

    def key_for(self, name: str) -> str | None:
        """The ``tools`` key deciding calls to ``name``, found as the Rego library finds it: the exact
        key, else the first glob (in file order) matching the whole name; None for ``unlisted``."""
        if name in self.settings["tools"]:
            return name
        return next((g["key"] for g in self.settings["globs"] if re.fullmatch(g["regex"], name, re.DOTALL)), None)

    def entry_for(self, name: str) -> dict[str, Any]:
        """The settings entry deciding calls to ``name`` (see :meth:`key_for`)."""
        key = self.key_for(name)
        if key is None:
            return self.settings["unlisted"]  # type: ignore[no-any-return]
        if key in self.settings["tools"]:
            return self.settings["tools"][key]  # type: ignore[no-any-return]
        return next(g["entry"] for g in self.settings["globs"] if g["key"] == key)

    @property
    def filename(self) -> str:
        """``payments.yaml`` compiles to ``payments.rego``."""
        stem = Path(self.source).stem if self.source and not self.source.startswith("<") else "policy"
        return stem + ".rego"


def compile_policy(policy: Policy) -> CompiledPolicy:
    """Compile a validated policy into its Rego module and engine data."""
    settings = _settings(policy)
    reads = {t.key: _reads(t.rules, policy) for t in policy.tools if not t.is_wildcard}
    module = _emit(policy, settings)
    return CompiledPolicy(
        module=module,
        settings=settings,
        reads=reads,
        wildcard_reads=_reads((), policy),
        source=policy.source,
        bounded=not any(c.op in ("regex", "not_regex", "glob") for t in policy.tools for r in t.rules
                        for c in r.conditions) and not any(t.is_glob for t in policy.tools),
    )


# --- stage 1: settings ------------------------------------------------------------------------------


def _settings(policy: Policy) -> dict[str, Any]:
    """The policy as the library reads it: one entry per tool name, looked up in O(1).

    An entry is ``{"hidden": true}``, ``{"unlisted": true}`` (denied under ``default: deny``) or
    ``{"rules": [...], "charges": [...]}`` where ``rules`` are the tool's own rules followed by the
    ``"*"`` rules (merged here, once, rather than on every call) and ``charges`` the limits they take.
    ``unlisted`` is the entry of every name no key matches.
    """
    hidden = {"hidden": True}
    wildcard = next((t.rules for t in policy.tools if t.is_wildcard), ())
    tools: dict[str, Any] = {}
    globs: list[dict[str, Any]] = []
    for t in policy.tools:
        if t.is_wildcard or policy.hide_all:
            continue
        if t.is_glob:
            globs.append({"key": t.key, "regex": glob_to_regex(t.key), "entry": _entry((*t.rules, *wildcard))})
        else:
            tools[t.key] = hidden if t.key in policy.hide else _entry((*t.rules, *wildcard))
    if not policy.hide_all:
        for name in policy.hide:
            tools.setdefault(name, hidden)
    if policy.hide_all:
        unlisted: dict[str, Any] = hidden
    elif policy.default == "deny":
        unlisted = {"unlisted": True}
    else:
        unlisted = _entry(wildcard)
    return {
        "format": SETTINGS_FORMAT,
        "source": Path(policy.source).name,
        "default": policy.default,
        "tools": tools,
        "globs": globs,
        "unlisted": unlisted,
    }


def _entry(rules: tuple[Rule, ...]) -> dict[str, Any]:
    charges = [_charge(r) for r in rules if r.limit is not None]
    entry: dict[str, Any] = {"rules": [_rule(r) for r in rules], "charges": charges}
    if any("cost_from" in c for c in charges):
        entry["dynamic_costs"] = True
    return entry


def _charge(r: Rule) -> dict[str, Any]:
    lim = r.limit
    assert lim is not None
    charge: dict[str, Any] = {
        "counter": lim.counter,
        "scope": lim.scope,
        "capacity": lim.capacity,
        "window": lim.window,
        "strict": lim.strict,
        "rule": r.id,
        "message": r.message,
    }
    if lim.cost_path:
        charge["cost_from"] = _cost_from(lim.cost_path)
    else:
        charge["cost"] = lim.cost
    return charge


def _cost_from(segs: tuple[str, ...]) -> dict[str, Any]:
    return {"text": "args." + ".".join(segs), **_path(segs)}


def _rule(r: Rule) -> dict[str, Any]:
    """A rule as data. Keys that do not apply are left out, not set to false or null: an absent key
    is what makes the library's other clauses fail fast (and a null would count as true in a body)."""
    out: dict[str, Any] = {"id": r.id, "message": r.message}
    if r.custom_message:
        out["custom_message"] = True
    if r.action == "deny":
        out["deny"] = True
    if r.conditions:
        out["conditions"] = [_condition(c) for c in r.conditions]
    if r.validate_required:
        out["validate_required"] = True
    if r.limit is not None and r.limit.cost_path:
        out["cost_from"] = _cost_from(r.limit.cost_path)
    return out


def _path(segs: tuple[str, ...]) -> dict[str, list[str | int]]:
    """``path`` for ``object.get``, digit segments as list indexes; ``key_path`` (all strings) when those
    digits may also be object keys."""
    path: list[str | int] = [int(s) if s.isdigit() and len(s) < 16 else s for s in segs]
    if all(isinstance(p, str) for p in path):
        return {"path": path}
    return {"path": path, "key_path": list(segs)}


def _condition(c: Condition) -> dict[str, Any]:
    out: dict[str, Any] = {"text": _condition_text(c), **_path(c.path), "op": c.op}
    if c.op in ("eq", "neq"):
        out["match"] = eq_matcher(c.value)
    elif c.op in ("in", "not_in"):
        out["matches"] = [eq_matcher(v) for v in c.value]
    elif c.op == "contains":
        out["value"] = c.value
        out["match"] = eq_matcher(c.value)
    elif c.op in ("regex", "not_regex"):
        out["regex"] = portable_regex(c.value)
    elif c.op == "glob":
        out["regex"] = glob_to_regex(c.value)
    else:
        out["value"] = c.value
    return out


def _condition_text(c: Condition) -> str:
    return f"args.{'.'.join(c.path)} {c.op} {json.dumps(c.value, ensure_ascii=False)}"


def number_text(n: float) -> str:
    """How a number reads when compared with a string: whole numbers without a decimal point."""
    if isinstance(n, int) or (math.isfinite(n) and n.is_integer() and abs(n) < 2**53):
        return str(int(n))
    return repr(float(n))


_NUMBER_RE = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")


def eq_matcher(value: Any) -> dict[str, Any]:
    """Precompute how ``value`` compares under ``eq`` with a number, a string, a boolean or anything else."""
    if isinstance(value, bool):
        return {"bool": value, "text": "true" if value else "false"}
    if isinstance(value, int | float):
        return {"num": value, "text": number_text(value)}
    if isinstance(value, str):
        m: dict[str, Any] = {"text": value}
        if _NUMBER_RE.fullmatch(value):
            n = float(value) if any(ch in value for ch in ".eE") else int(value)
            if math.isfinite(n) and number_text(n) == value:
                m["num"] = n
        if value in ("true", "false"):
            m["bool"] = value == "true"
        return m
    return {"value": value}


# --- stage 2: reads ---------------------------------------------------------------------------------


def _reads(rules: tuple[Rule, ...], policy: Policy) -> Reads:
    wildcard = next((t.rules for t in policy.tools if t.is_wildcard), ())
    names: set[str] = set()
    schema = False
    for r in (*rules, *wildcard):
        names.update(c.path[0] for c in r.conditions)
        if r.limit is not None and r.limit.cost_path:
            names.add(r.limit.cost_path[0])
        schema = schema or r.validate_required
    return Reads(frozenset(names), schema)


# --- stage 3: emit ----------------------------------------------------------------------------------


def _j(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _rule_origin(rules: tuple[Rule, ...], wildcard: tuple[Rule, ...]) -> list[str]:
    own = [f"rules[{r.index}]" + (f" {json.dumps(r.name, ensure_ascii=False)}" if r.name else "") + f" (line {r.line})"
           for r in rules]
    star = [f'tools."*".rules[{r.index}]' + (f" {json.dumps(r.name, ensure_ascii=False)}" if r.name else "")
            + f" (line {r.line})" for r in wildcard]
    return own + star


def _emit_entry(lines: list[str], entry: dict[str, Any], origins: list[str], indent: str) -> None:
    """One entry, a rule a line, each under a comment naming the YAML it came from."""
    if "rules" not in entry:
        lines.append(f"{indent}{_j(entry)},")
        return
    lines.append(f'{indent}"rules": [')
    for origin, rule in zip(origins, entry["rules"], strict=True):
        lines.append(f"{indent}\t# {origin}")
        lines.append(f"{indent}\t{_j(rule)},")
    lines.append(f"{indent}],")
    lines.append(f'{indent}"charges": {_j(entry["charges"])},')
    if entry.get("dynamic_costs"):
        lines.append(f'{indent}"dynamic_costs": true,')


def _emit(policy: Policy, settings: dict[str, Any]) -> str:
    src = json.dumps(Path(policy.source).name, ensure_ascii=False)[1:-1]
    lines = [
        f"# Generated by regoguard from {src}. Do not edit: change the YAML and run `regoguard compile`.",
    ]
    if policy.description:
        lines.extend(f"# {ln}".rstrip() for ln in policy.description.splitlines() if ln.strip())
    lines += [
        "#",
        f"# The policy as data. The rules that decide a call from it are in {LIB_PACKAGE} (rego/regoguard/lib.rego):",
        f"#   opa eval -d lib.rego -d {Path(src).stem}.rego -i call.json data.{LIB_PACKAGE}.decision",
        "# Each tool lists its own rules, then the \"*\" rules, in the order they run.",
        f"package {SETTINGS_PACKAGE}",
        "",
        "import rego.v1",
        "",
        "settings := {",
        f'\t"format": {settings["format"]},',
        f'\t"source": {_j(settings["source"])},',
        f'\t"default": {_j(settings["default"])},',
        '\t"tools": {',
    ]
    by_key = {t.key: t for t in policy.tools}
    wildcard = by_key[WILDCARD].rules if WILDCARD in by_key else ()
    for key, entry in settings["tools"].items():
        if "hidden" in entry:
            lines.append(f"\t\t# tools[{_j(key)}]: hidden (hide)")
            lines.append(f"\t\t{_j(key)}: {_j(entry)},")
            continue
        t = by_key[key]
        lines.append(f"\t\t# tools[{_j(key)}] (line {t.line})")
        lines.append(f"\t\t{_j(key)}: {{")
        _emit_entry(lines, entry, _rule_origin(t.rules, wildcard), "\t\t\t")
        lines.append("\t\t},")
    lines.append("\t},")
    lines.append('\t"globs": [')
    for g in settings["globs"]:
        t = by_key[g["key"]]
        lines.append(f"\t\t# tools[{_j(g['key'])}] (line {t.line})")
        lines.append(f'\t\t{{"key": {_j(g["key"])}, "regex": {_j(g["regex"])}, "entry": {{')
        _emit_entry(lines, g["entry"], _rule_origin(t.rules, wildcard), "\t\t\t")
        lines.append("\t\t}},")
    lines.append("\t],")
    lines.append("\t# every tool no key names")
    if "rules" in settings["unlisted"]:
        lines.append('\t"unlisted": {')
        _emit_entry(lines, settings["unlisted"], _rule_origin((), wildcard), "\t\t")
        lines.append("\t},")
    else:
        lines.append(f'\t"unlisted": {_j(settings["unlisted"])},')
    lines.append("}")
    return "\n".join(lines) + "\n"
