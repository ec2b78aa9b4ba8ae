"""What a policy test file means once read: cases made of calls (with expectations) and clock moves."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DECISIONS = ("allow", "deny", "require_approval")


@dataclass(frozen=True)
class Context:
    """Who makes a call and where: each level (file, case, call) may set any of these; the innermost wins."""

    server: str | None = None
    principal: str | None = None
    session: str | None = None
    claims: dict[str, Any] | None = None
    client: dict[str, Any] | None = None

    def over(self, outer: Context) -> Context:
        """This context with the unset fields taken from ``outer``."""
        return Context(
            server=self.server if self.server is not None else outer.server,
            principal=self.principal if self.principal is not None else outer.principal,
            session=self.session if self.session is not None else outer.session,
            claims=self.claims if self.claims is not None else outer.claims,
            client=self.client if self.client is not None else outer.client,
        )


@dataclass(frozen=True)
class Expect:
    """What a call must get. ``rule`` and ``message`` are those of the first reason (the one shown)."""

    decision: str
    rule: str | None = None
    message: str | None = None
    message_contains: str | None = None

    def describe(self) -> str:
        text = self.decision
        if self.rule is not None:
            text += f" by {self.rule}"
        return text


_NO_SCHEMA: Any = object()


@dataclass(frozen=True)
class Call:
    tool: str
    args: dict[str, Any]
    expect: Expect
    line: int
    repeat: int = 1
    context: Context = Context()
    schema: Any = _NO_SCHEMA
    approved: bool = False
    """Decided as a person's approved retry (``input.approval.granted``): what runs once approval is given."""
    """The call's own ``schema:`` (a mapping, or None to send none); unset: the file's ``schemas:`` entry."""

    def schema_for(self, schemas: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        if self.schema is _NO_SCHEMA:
            return schemas.get(self.tool)
        return self.schema  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Advance:
    seconds: float
    line: int


Step = Call | Advance


@dataclass(frozen=True)
class Case:
    name: str
    line: int
    steps: tuple[Step, ...]
    context: Context = Context()


@dataclass(frozen=True)
class SuiteFile:
    """One test file: the policy it tests, the team Rego loaded beside it, defaults and cases."""

    path: Path
    display: str
    """The path as the user should read it (relative to the working directory when below it)."""
    policy: Path
    rego: tuple[Path, ...] = ()
    context: Context = Context()
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    cases: tuple[Case, ...] = ()


def display_path(path: Path) -> str:
    """``path`` relative to the working directory if it lies below it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
