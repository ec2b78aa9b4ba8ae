"""The typed policy model: what a YAML policy means once both dialects are read.

Every object keeps the line it came from so the compiler can name it in the Rego it writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WINDOWS: dict[str, int] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
"""Named windows of Intercept's ``rate_limit: N/<window>`` and ``state.window``, in seconds."""

SCOPES = ("global", "principal", "session")

WILDCARD = "*"
GLOBAL_SCOPE_NAME = "_global"


@dataclass(frozen=True)
class Condition:
    """``<root>.<path> <op> value``. ``root`` is ``args`` (the call's arguments) or a part of the call's
    context: ``principal``, ``session``, ``server``; ``path`` holds the segments after it."""

    path: tuple[str, ...]
    op: str
    value: Any
    line: int
    root: str = "args"


@dataclass(frozen=True)
class Limit:
    """A token bucket a rule charges: ``capacity`` per ``window`` seconds."""

    counter: str
    capacity: float
    window: int
    strict: bool
    scope: str
    cost: float = 1
    cost_path: tuple[str, ...] | None = None


DEFAULT_APPROVAL_TIMEOUT = 900
"""How long a pending approval waits for a person (``approval_timeout``), in seconds, unless the rule says."""

APPROVERS = ("user", "operator")
"""Who answers an approval: the agent's ``user`` (asked through elicitation when the client supports it,
else out of band) or an ``operator`` (always out of band: ``regoguard approvals``)."""


@dataclass(frozen=True)
class Approval:
    """What a ``require_approval`` rule says of the approvals it asks for."""

    timeout: int = DEFAULT_APPROVAL_TIMEOUT
    approver: str = "user"


@dataclass(frozen=True)
class Rule:
    id: str
    name: str | None
    index: int
    action: str  # "evaluate" | "deny" | "require_approval"
    message: str
    line: int
    conditions: tuple[Condition, ...] = ()
    limit: Limit | None = None
    validate_required: bool = False
    validate_schema: bool = False  # the arguments against the tool's whole inputSchema (schema_check)
    explicit_allow: bool = False
    custom_message: bool = False
    visibility: bool = False  # the rule `visible_to:` makes: who the tool exists for (also filters tools/list)
    approval: Approval | None = None  # action: require_approval: how long a request waits, and who answers it


@dataclass(frozen=True)
class ToolPolicy:
    """The rules under one key of ``tools``: an exact name, a glob, or ``"*"``."""

    key: str
    rules: tuple[Rule, ...]
    line: int

    @property
    def is_wildcard(self) -> bool:
        return self.key == WILDCARD

    @property
    def is_glob(self) -> bool:
        return not self.is_wildcard and any(c in self.key for c in "*?[")


@dataclass(frozen=True)
class AuditSettings:
    """The policy's ``audit:`` block: what the decision log may show of a call's arguments."""

    erase: tuple[str, ...] = ()
    mask: tuple[str, ...] = ()
    hash_arguments: bool = False
    default_masking: bool = True


@dataclass(frozen=True)
class Policy:
    source: str
    default: str = "allow"
    description: str | None = None
    version: str | None = None
    hide: tuple[str, ...] = ()
    tools: tuple[ToolPolicy, ...] = ()
    mode: str = "enforce"
    """``enforce``, or ``dry_run``: decide and log every call, block none."""
    audit: AuditSettings = AuditSettings()
    on_store_error: str = "deny"
    """What a call that needs a limit gets when the state store fails: ``deny`` (fail closed) or ``allow``."""
    rego: tuple[str, ...] = ()
    """The team's Rego files and directories (the policy's ``rego:`` list, resolved against its folder)."""
    hide_unlisted: bool = False
    """Under ``default: deny``: the tools no key names leave ``tools/list`` too (agents stop trying them)."""
    windows: str = "rolling"
    """How limits count: ``rolling`` token buckets (refilled smoothly), or ``calendar`` windows (Intercept's
    counters: everything a window allows, reset at each UTC minute, hour or day boundary)."""
    pin: str | None = None
    """The lock file the server's tools are held to (``pin:``, resolved against the policy's folder)."""
    on_change: str = "deny"
    """A pinned server's tool that changed or is new: ``deny`` (hidden, calls denied) or ``warn``."""
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def hide_all(self) -> bool:
        return WILDCARD in self.hide
