"""Walking the YAML node tree while collecting errors, the tool every loader stage uses."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from regoguard.errors import PolicyError
from regoguard.policy._yaml import Node, Pos

_IDENT_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")

# rego-cpp keeps JSON escapes in policy strings as written (`\n` stays two characters) while the
# input it compares them with arrives decoded, so a policy string needing an escape could never match.
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')

ESCAPE_HINT = "the embedded engine cannot compare text holding quotes, backslashes or control characters"


def unescapable(value: Any) -> bool:
    """True if ``value`` (or anything in it) is text rego-cpp could not compare with a call's arguments."""
    if isinstance(value, str):
        return _NEEDS_ESCAPE.search(value) is not None
    if isinstance(value, list):
        return any(unescapable(v) for v in value)
    if isinstance(value, dict):
        return any(unescapable(k) or unescapable(v) for k, v in value.items())
    return False


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class Reader:
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
                self.error(node.key_pos[key], join_path(path, key), f"unknown key {key!r} in {what}", hint)
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


def join_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _IDENT_RE.match(key) or key in ("",):
        key_text = f'"{key}"'
        return f"{path}[{key_text}]" if path else key_text
    return f"{path}.{key}" if path else key
