"""Errors raised by regoguard.

The tree::

    RegoguardError
    ├── PolicyLoadError      one or more PolicyError found in a policy file (all reported at once)
    ├── CompileError         the compiler could not emit Rego for a valid model (a bug, never user input)
    └── EngineError          regopy failed to build a bundle from the compiled modules

Each :class:`PolicyError` carries its location (file, line, column) and the key path inside the
document (``tools.create_charge.rules[1].conditions[0].op``), so it prints like a compiler's error.
Evaluation never raises: an evaluation that cannot decide is a deny (see ``engine.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


class RegoguardError(Exception):
    """Base class of every error regoguard raises on purpose."""


@dataclass(frozen=True)
class PolicyError:
    """One problem in a policy file, with where it is and, if we can guess, what was meant."""

    file: str
    line: int
    column: int
    key_path: str
    message: str
    hint: str | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        at = f" ({self.key_path})" if self.key_path else ""
        text = f"{where}: {self.severity}: {self.message}{at}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class PolicyLoadError(RegoguardError):
    """A policy file failed to load; ``errors`` lists every problem found, in file order."""

    def __init__(self, errors: list[PolicyError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.file, e.line, e.column))
        super().__init__("\n".join(str(e) for e in self.errors))


class CompileError(RegoguardError):
    """The compiler met a model it cannot express in Rego."""


class EngineError(RegoguardError):
    """regopy rejected the compiled modules while building the bundle."""
