"""One policy as the proxy enforces it: the YAML file, compiled, plus the team's Rego modules.

``run``, ``eval``, ``check`` and ``test`` all load through :func:`load_policy_set`, so a policy that
``check`` accepts is exactly what ``run`` enforces. :func:`fingerprint` is what hot reload watches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from regoguard.compiler import CompiledPolicy, compile_policy
from regoguard.policy import Policy, load_policy
from regoguard.rego_modules import TEST_SUFFIX, load_rego, revision_with


@dataclass(frozen=True)
class PolicySet:
    policy: Policy
    compiled: CompiledPolicy
    modules: dict[str, str]
    """The team's Rego (name → source), empty when there is none."""
    rego_paths: tuple[str, ...]
    """Where the modules came from: ``--rego`` directories, then the policy's ``rego:`` list."""

    @property
    def revision(self) -> str:
        """Changes whenever the compiled policy or any of the team's modules does."""
        return revision_with(self.compiled.revision, self.modules)

    @property
    def watched(self) -> tuple[str, ...]:
        """The files and directories whose change means a new policy."""
        return (self.policy.source, *self.rego_paths)


def load_policy_set(path: str | Path, rego_dirs: Sequence[str] = (), *, tests: bool = False) -> PolicySet:
    """Load the policy at ``path`` with the team's Rego from ``rego_dirs`` and the policy's ``rego:`` list.

    Raises:
        PolicyLoadError: every problem in the policy, or else every problem in the modules.
    """
    policy = load_policy(path)
    rego_paths = tuple(dict.fromkeys((*rego_dirs, *policy.rego)))
    modules = load_rego(rego_paths, tests=tests) if rego_paths else {}
    return PolicySet(policy, compile_policy(policy), modules, rego_paths)


def fingerprint(paths: Sequence[str]) -> str:
    """A hash of the text of every watched file (directories: their ``.rego`` files, tests excluded).

    Content, not modification times: an editor that saves twice within a second, or a ``git checkout``
    that keeps times, still changes the fingerprint; a ``touch`` does not.
    """
    h = hashlib.sha256()
    for raw in paths:
        path = Path(raw)
        files = (sorted(p for p in path.rglob("*.rego") if not p.name.endswith(TEST_SUFFIX))
                 if path.is_dir() else [path])
        for f in files:
            h.update(str(f).encode() + b"\x00")
            try:
                h.update(f.read_bytes())
            except OSError as exc:
                h.update(f"\x00unreadable:{exc.errno}".encode())
            h.update(b"\x00")
    return h.hexdigest()
