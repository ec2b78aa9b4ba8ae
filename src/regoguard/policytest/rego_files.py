"""Team Rego for tests: read the modules, report syntax errors as file:line:column, find ``test_`` rules.

regopy reports a parse error as a RegoError whose text holds ``(error 14:team/deny.rego|82|2`` (the
module name with its length, the byte offset and length of the bad span); ``rego_modules.located_errors``
turns those into :class:`PolicyError` s like the policy loader's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from regoguard.errors import PolicyError
from regoguard.policytest.model import display_path
from regoguard.rego_modules import load_rego, located_errors


def load_modules(paths: Sequence[Path], *, tests: bool) -> dict[str, str]:
    """Module name (its path) → source for every ``.rego`` file under ``paths``; ``*_test.rego`` files
    too with ``tests`` (only parsed, never evaluated here: see :func:`regoguard.rego_modules.load_rego`).
    Raises PolicyLoadError, every error with file:line:column."""
    return load_rego([display_path(p) for p in paths], tests=tests)


def rego_error_positions(text: str, modules: dict[str, str]) -> list[PolicyError]:
    """The errors in a RegoError's text, placed at file:line:column (``rego_modules.located_errors``)."""
    found = located_errors(text, modules) if modules else []
    if found:
        return found
    first = next((ln for ln in text.strip().splitlines() if ln.strip()), "unknown Rego error")
    return [PolicyError(next(iter(modules), "<rego>"), 1, 1, "", f"Rego: {first.strip()}")]


@dataclass(frozen=True)
class RegoTest:
    """One ``test_`` rule: queried as ``data.<package>.<rule>``; it passes iff the answer is ``true``."""

    module: str
    package: str
    rule: str
    line: int

    @property
    def query(self) -> str:
        return f"data.{self.package}.{self.rule}"


_PACKAGE_RE = re.compile(r"^package\s+([^\s#]+)", re.MULTILINE)
_TEST_HEAD_RE = re.compile(r"^(test_\w+)(?!\w)(?!\s*\()", re.MULTILINE)


def find_tests(name: str, source: str) -> list[RegoTest]:
    """The ``test_`` rules of a module, found in its text (comments stripped), one per rule name."""
    text = strip_comments(source)
    package = _PACKAGE_RE.search(text)
    if package is None:
        return []
    seen: dict[str, RegoTest] = {}
    for m in _TEST_HEAD_RE.finditer(text):
        rule = m.group(1)
        if rule not in seen:
            seen[rule] = RegoTest(name, package.group(1), rule, text.count("\n", 0, m.start()) + 1)
    return list(seen.values())


def strip_comments(source: str) -> str:
    """``source`` with every ``#`` comment blanked to spaces (strings and raw strings respected), so
    offsets and line numbers stay those of the source."""
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "#":
            end = source.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
            continue
        if ch in "\"`":
            j = _string_end(source, i)
            out.append(source[i:j])
            i = j
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _string_end(text: str, i: int) -> int:
    """The offset just past the string (``"..."`` or a raw ```...```) opening at ``i``."""
    quote, j, n = text[i], i + 1, len(text)
    while j < n and text[j] != quote and not (quote == '"' and text[j] == "\n"):
        j += 2 if quote == '"' and text[j] == "\\" else 1
    return min(j + 1, n)


def _rule_end(text: str, start: int) -> int:
    """Where the top-level rule starting at ``start`` ends: at a newline outside brackets after which the
    next non-blank line starts in column 0 and is not an ``else`` branch (``opa fmt`` layout)."""
    depth, i, n = 0, start, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"`":
            i = _string_end(text, i)
            continue
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        elif ch == "\n" and depth <= 0:
            rest = text[i + 1:].lstrip("\n")
            if not rest or (not rest[0].isspace() and not re.match(r"else\b", rest)):
                return i
        i += 1
    return n


def isolate(source: str, keep: str | None) -> str:
    """``source`` with every ``test_`` rule blanked (spaces; lines kept) except those named ``keep``.

    Needed because regopy compiles every module on each query, and one test rule it cannot compile
    (``with`` over a rule using a built-in) crashes every query, not just its own.
    """
    text = strip_comments(source)
    chars = list(source)
    for m in _TEST_HEAD_RE.finditer(text):
        if m.group(1) == keep:
            continue
        for k in range(m.start(), _rule_end(text, m.start())):
            if chars[k] != "\n":
                chars[k] = " "
    return "".join(chars)
