"""Writing the starter policy of ``regoguard scan``, and proving it loads before anyone sees it.

Everything in the file comes from the server, which is untrusted: tool names become YAML keys only
through PyYAML's own double-quoted emitter (or as plain scalars that read back as themselves), names the
policy language refuses are left out with a comment (``default: deny`` then denies them), and
descriptions reach comments only as single printable lines. Control, format and line-separator
characters are dropped from comments: YAML ends a comment at U+2028 or U+0085, and bidi or zero-width
characters could make a comment read differently from what it says.

:func:`verify` loads and compiles the text it is given and checks that every tool came back under its own
name with the intended rule: a quoting mistake that still produced valid YAML would otherwise go unseen.
"""

from __future__ import annotations

import json
import re
import textwrap
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from regoguard.compiler import compile_policy
from regoguard.errors import PolicyLoadError, RegoguardError
from regoguard.policy import load_policy_text
from regoguard.policy.loader import MAX_POLICY_BYTES
from regoguard.policy.reader import unescapable
from regoguard.scan.classify import GROUPS, Classification, Group, ToolInfo, classify

RATE_LIMITS: dict[Group, int] = {"execute": 5, "write": 30, "read": 120}
"""Calls a minute for the groups that are allowed. The denied groups (destructive, financial) have none."""

DENY_MESSAGES: dict[Group, str] = {
    "destructive": "Denied: regoguard scan classified this tool as destructive. It stays denied until a "
                   "reviewer deliberately loosens this rule in the policy.",
    "financial": "Denied: regoguard scan classified this tool as moving money. It stays denied until a "
                 "reviewer replaces this rule with deliberate limits (an amount cap, a daily spend counter).",
}

HEADERS: dict[Group, tuple[str, ...]] = {
    "destructive": ("--- destructive: denied until reviewed ---",),
    "financial": (
        "--- financial: denied until reviewed (a rate limit caps calls, not amounts) ---",
        "To allow one deliberately, replace its deny rule with limits on what it moves, e.g.:",
        "  - name: max single charge",
        "    conditions: [{path: args.amount, op: lte, value: 50000}]",
        "  - name: daily spend cap",
        "    conditions: [{path: state.TOOL_NAME.daily_spend, op: lte, value: 1000000}]",
        "    state: {counter: daily_spend, window: day, increment_from: args.amount}",
    ),
    "execute": (f"--- execute: runs code or commands; {RATE_LIMITS['execute']} calls a minute ---",),
    "write": (f"--- write: changes state; {RATE_LIMITS['write']} calls a minute ---",),
    "read": (f"--- read: {RATE_LIMITS['read']} calls a minute ---",),
}

DESCRIPTION_CHARS = 300
NAME_CHARS = 80
MAX_ARGUMENTS_SHOWN = 20
MAX_KEY_CHARS = 1000  # YAML allows an implicit key of at most 1024 characters
WRAP = 100

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_HIDDEN_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


class ScanInternalError(RegoguardError):
    """The policy scan wrote does not load as intended: a bug in scan, never something to write out."""


class PolicyTooLarge(RegoguardError):
    """The server has more tools than one policy file may hold."""


@dataclass(frozen=True)
class Rendered:
    text: str
    groups: dict[str, Group]
    skipped: tuple[tuple[str, str], ...]


def comment_text(text: str, limit: int) -> str:
    """One printable line, at most ``limit`` characters, that a YAML comment can hold as it is."""
    shown = "".join(" " if unicodedata.category(c) in _HIDDEN_CATEGORIES else c for c in text)
    shown = " ".join(shown.split())
    return shown if len(shown) <= limit else shown[: limit - 1].rstrip() + "…"


def quoted_name(name: str) -> str:
    """A name for a comment: JSON's ASCII escapes make every character visible."""
    return comment_text(json.dumps(name), NAME_CHARS)


def unwritable_reason(name: str) -> str | None:
    """Why ``name`` cannot be a tool key of the policy, or None if it can."""
    if not name.strip():
        return "the name is empty"
    if unescapable(name):
        return "it holds a quote, backslash or control character, which the policy language refuses"
    if any(c in name for c in "*?["):
        return "it holds *, ? or [, which the policy language reads as a glob"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid Unicode"
    if len(yaml_key(name)) > MAX_KEY_CHARS:
        return f"it is longer than a YAML key may be ({MAX_KEY_CHARS} characters, escaped)"
    return None


def yaml_key(name: str) -> str:
    """``name`` as a YAML scalar that reads back as exactly ``name``.

    Plain when that is unambiguous, else double-quoted with every non-ASCII character escaped, so a
    look-alike (a Cyrillic letter inside ``delete``) or an invisible character is visible to the reviewer.
    """
    if _PLAIN_KEY.fullmatch(name) and yaml.safe_load(name) == name:
        return name
    return yaml_string(name, ascii_only=True)


def yaml_string(text: str, ascii_only: bool = False) -> str:
    dumped: str = yaml.safe_dump(text, default_style='"', allow_unicode=not ascii_only, width=2**31)
    return dumped.rstrip("\n")


def render_policy(server: str, tools: Sequence[ToolInfo]) -> Rendered:
    """The starter policy for ``tools`` (deduplicated by name by the caller) of the server ``server``."""
    by_group: dict[Group, list[tuple[ToolInfo, Classification]]] = {g: [] for g in GROUPS}
    skipped: list[tuple[str, str]] = []
    for tool in tools:
        reason = unwritable_reason(tool.name)
        if reason is not None:
            skipped.append((tool.name, reason))
            continue
        verdict = classify(tool)
        by_group[verdict.group].append((tool, verdict))
    lines = _preamble(server, by_group, skipped)
    body: list[str] = []
    for group in GROUPS:
        if by_group[group]:
            body.extend(_group_section(group, sorted(by_group[group], key=lambda tv: tv[0].name)))
    lines.append("tools:" if body else "tools: {}")
    lines.extend(body)
    lines.extend(_skipped_section(skipped))
    groups = {tool.name: verdict.group for g in GROUPS for tool, verdict in by_group[g]}
    return Rendered("\n".join(lines) + "\n", groups, tuple(skipped))


def _preamble(server: str, by_group: dict[Group, list[tuple[ToolInfo, Classification]]],
              skipped: list[tuple[str, str]]) -> list[str]:
    label = comment_text(server, NAME_CHARS)
    written = sum(len(v) for v in by_group.values())
    counts = ", ".join(f"{len(by_group[g])} {g}" for g in GROUPS if by_group[g]) or "none written"
    not_written = f"; {len(skipped)} could not be written (listed at the end)" if skipped else ""
    return [
        f"# Starter policy for the MCP server {label}, written by `regoguard scan`.",
        f"# {written + len(skipped)} tools listed: {counts}{not_written}.",
        "# Each tool's group is a guess from its annotations and its name (the reason is above each tool):",
        "# review every one before relying on this file.",
        "#",
        "# default: deny. Every tool the server listed is below, so this denies the tools it adds later (and",
        "# any that could not be written here) until someone reviews them and adds them.",
        'version: "1"',
        f"description: {yaml_string(f'Starter policy for {label} from regoguard scan; review before use')}",
        "default: deny",
        "# ...and the tools it would deny that way are left out of tools/list, so agents do not keep trying them.",
        "hide_unlisted: true",
        "# Tools named here vanish from tools/list and are denied if called anyway.",
        "hide: []",
    ]


def _group_section(group: Group, entries: list[tuple[ToolInfo, Classification]]) -> list[str]:
    lines = ["", *(f"  # {h}" for h in HEADERS[group])]
    for tool, verdict in entries:
        lines.append("")
        lines.extend(f"  # {line}" for line in _tool_comment(tool, verdict))
        lines.append(f"  {yaml_key(tool.name)}:")
        lines.append("    rules:")
        lines.extend(f"      {line}" for line in _rules(group))
    return lines


def _tool_comment(tool: ToolInfo, verdict: Classification) -> list[str]:
    description = comment_text(tool.description or "", DESCRIPTION_CHARS) or "(no description)"
    lines = textwrap.wrap(description, WRAP, break_long_words=True, break_on_hyphens=False)
    lines.append(_arguments_line(tool))
    hints = [f"{key}={str(value).lower()}" for key, value in (
        ("readOnlyHint", tool.read_only), ("destructiveHint", tool.destructive),
        ("idempotentHint", tool.idempotent), ("openWorldHint", tool.open_world)) if value is not None]
    why = f"{verdict.group} because {verdict.reason}"
    lines.append(comment_text(why + (f" (hints: {', '.join(hints)})" if hints else ""), 2 * WRAP))
    lines.extend(comment_text(f"note: {note}", 2 * WRAP) for note in verdict.notes)
    return lines


def _arguments_line(tool: ToolInfo) -> str:
    def names(items: Sequence[str]) -> str:
        shown = [comment_text(a, NAME_CHARS) or quoted_name(a) for a in items[:MAX_ARGUMENTS_SHOWN]]
        more = len(items) - MAX_ARGUMENTS_SHOWN
        return ", ".join(shown) + (f" and {more} more" if more > 0 else "")

    required = names(tool.required) if tool.required else "none"
    arguments = names(tool.arguments) if tool.arguments else "none"
    return f"required: {required} | arguments: {arguments}"


def _rules(group: Group) -> list[str]:
    if group in DENY_MESSAGES:
        return [f"- name: {group}, denied until reviewed", "  action: deny",
                f"  on_deny: {yaml_string(DENY_MESSAGES[group])}"]
    return [f"- name: {group} rate limit", f"  rate_limit: {RATE_LIMITS[group]}/minute"]


def _skipped_section(skipped: list[tuple[str, str]]) -> list[str]:
    if not skipped:
        return []
    lines = ["", "  # --- not written: the policy language cannot name these tools; default: deny denies them ---"]
    lines.extend(f"  # {quoted_name(name)}: {reason}" for name, reason in skipped)
    return lines


def verify(rendered: Rendered) -> None:
    """Load and compile ``rendered.text`` as ``regoguard check`` would, and check it says what was meant.

    Raises:
        PolicyTooLarge: the text is over the loader's size limit (the server has too many tools).
        ScanInternalError: the text does not load, or loads into other tools or rules than intended.
    """
    size = len(rendered.text.encode("utf-8"))
    if size > MAX_POLICY_BYTES:
        raise PolicyTooLarge(f"the policy for {len(rendered.groups)} tools would be {size} bytes, over the "
                             f"{MAX_POLICY_BYTES}-byte limit of a policy file")
    try:
        policy = load_policy_text(rendered.text, "<regoguard scan output>")
        compile_policy(policy)
    except PolicyLoadError as exc:
        problems = "; ".join(str(e) for e in exc.errors[:5])
        raise ScanInternalError(f"the generated policy does not load: {problems}") from exc
    if policy.default != "deny" or policy.hide:
        raise ScanInternalError("the generated policy lost `default: deny` or hides tools")
    got = {tp.key: tp.rules for tp in policy.tools}
    if set(got) != set(rendered.groups):
        lost = sorted(set(rendered.groups) - set(got))[:5]
        extra = sorted(set(got) - set(rendered.groups))[:5]
        raise ScanInternalError(f"the generated policy names other tools than intended: lost {lost}, gained {extra}")
    for name, group in rendered.groups.items():
        rules = got[name]
        ok = len(rules) == 1 and (
            rules[0].action == "deny" if group in DENY_MESSAGES
            else rules[0].limit is not None and rules[0].limit.capacity == RATE_LIMITS[group]
            and rules[0].limit.window == 60
        )
        if not ok:
            raise ScanInternalError(f"the generated rules of tool {name!r} do not say what scan meant ({group})")
