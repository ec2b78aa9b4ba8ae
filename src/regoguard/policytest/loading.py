"""Load test files with what they test: the policy (loaded and compiled once per file), the team's Rego,
and one engine per (policy, Rego) pair, shared by every test file that names the same pair."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from regoguard.compiler import CompiledPolicy, compile_policy
from regoguard.engine import Engine
from regoguard.errors import EngineError, PolicyError, PolicyLoadError
from regoguard.policy import Policy, load_policy
from regoguard.policytest.format import load_suite
from regoguard.policytest.model import SuiteFile, display_path
from regoguard.policytest.rego_files import load_modules, rego_error_positions
from regoguard.stdout_guard import engine_chatter_silenced


@dataclass(frozen=True)
class Target:
    """A policy with the team Rego loaded beside it: what test cases run against."""

    policy: Policy
    compiled: CompiledPolicy
    rego: tuple[Path, ...]
    """Every Rego file or directory: the test file's ``rego:``, the policy's own, and ``--rego``."""
    modules: dict[str, str]
    engine: Engine

    @property
    def key(self) -> tuple[Path, tuple[Path, ...]]:
        return Path(self.policy.source).resolve(), self.rego


class Loader:
    """Loads test files; caches policies and engines. :meth:`close` ends every engine."""

    def __init__(self, extra_rego: Sequence[Path]) -> None:
        self.extra_rego = tuple(extra_rego)
        self._policies: dict[Path, tuple[Policy, CompiledPolicy] | list[PolicyError]] = {}
        self._targets: dict[tuple[Path, tuple[Path, ...]], Target | list[PolicyError]] = {}

    def load(self, path: Path) -> tuple[SuiteFile, Target] | list[PolicyError]:
        """The test file and its target, or every error that keeps it from running."""
        try:
            suite = load_suite(path)
        except PolicyLoadError as exc:
            return exc.errors
        got = self._policy(suite.policy)
        if isinstance(got, list):
            return got
        policy, compiled = got
        rego = tuple(dict.fromkeys(p.resolve() for p in (*suite.rego, *map(Path, policy.rego), *self.extra_rego)))
        target = self._target(policy, compiled, rego)
        return target if isinstance(target, list) else (suite, target)

    def _policy(self, path: Path) -> tuple[Policy, CompiledPolicy] | list[PolicyError]:
        key = path.resolve()
        if key not in self._policies:
            try:
                policy = load_policy(display_path(path))
                self._policies[key] = (policy, compile_policy(policy))
            except PolicyLoadError as exc:
                self._policies[key] = exc.errors
        return self._policies[key]

    def _target(self, policy: Policy, compiled: CompiledPolicy, rego: tuple[Path, ...]) -> Target | list[PolicyError]:
        key = (Path(policy.source).resolve(), rego)
        if key not in self._targets:
            self._targets[key] = self._build(policy, compiled, rego)
        return self._targets[key]

    @staticmethod
    def _build(policy: Policy, compiled: CompiledPolicy, rego: tuple[Path, ...]) -> Target | list[PolicyError]:
        try:
            modules = load_modules(rego, tests=False) if rego else {}
        except PolicyLoadError as exc:
            return exc.errors
        try:
            with engine_chatter_silenced():
                engine = Engine(compiled, extra_modules=modules or None)
        except EngineError as exc:
            return rego_error_positions(str(exc), modules) if modules else [
                PolicyError(display_path(Path(policy.source)), 1, 1, "", str(exc))]
        return Target(policy, compiled, rego, modules, engine)

    def targets(self) -> list[Target]:
        return [t for t in self._targets.values() if isinstance(t, Target)]

    def close(self) -> None:
        for t in self.targets():
            t.engine.close()
