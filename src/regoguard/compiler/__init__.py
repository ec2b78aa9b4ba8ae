"""Policy model → specialised Rego: each tool key's rules written out as direct Rego expressions.

Stages, in order:

1. :mod:`~regoguard.compiler.settings`: the policy as plain data (``settings``), per tool key its rules
   with the ``"*"`` rules merged in, and what each key's rules read (for the decision cache).
2. :mod:`~regoguard.compiler.sections`: each key's rules as a *section* of Rego rules, no interpretation
   left for call time.
3. :mod:`~regoguard.compiler.emit`: one small module per *decider* (a tool key, the hidden names, the
   unlisted names) that the engine builds into a bundle of its own, so a call's query touches only its
   tool's code; and the whole policy as one readable module for review and ``opa eval``.

Output is deterministic: the same YAML gives byte-identical Rego.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regoguard import heap
from regoguard.compiler.emit import (
    ENTRYPOINT,
    HIDDEN,
    PACKAGE,
    UNLISTED,
    Decider,
    decider_module,
    deciders,
    policy_module,
)
from regoguard.compiler.library import library_modules, rego_library_dir
from regoguard.compiler.settings import SETTINGS_FORMAT, Reads, eq_matcher, number_text, reads_of, settings_of
from regoguard.policy.model import Policy

__all__ = ["ENTRYPOINT", "PACKAGE", "SETTINGS_FORMAT", "CompiledPolicy", "Reads", "RegoUnit", "compile_policy",
           "eq_matcher", "library_modules", "number_text", "rego_library_dir"]

LIB_PACKAGE = "regoguard.lib"
_GLOB_KEYS_KEPT = 4096
_UNSEEN = object()


@dataclass(frozen=True)
class RegoUnit:
    """What decides one call, ready for any Rego engine: modules (name → source), base data, the query."""

    modules: dict[str, str]
    data: dict[str, Any]
    query: str
    """A data path, ``data.regoguard.policy.verdict`` style."""


@dataclass(frozen=True)
class CompiledPolicy:
    module: str
    """The whole policy as one module (what ``regoguard compile`` writes)."""
    settings: dict[str, Any]
    reads: dict[str, Reads] = field(default_factory=dict)
    wildcard_reads: Reads = field(default_factory=Reads)
    source: str = ""
    units: dict[str, Decider] = field(default_factory=dict, repr=False)
    """Every decider by id (``t0``…, ``g0``…, ``hidden``, ``unlisted``)."""
    _policy: Policy | None = field(default=None, repr=False, compare=False)

    @property
    def revision(self) -> str:
        """A short hash of the module text: it changes whenever the compiled policy does."""
        return hashlib.sha256(self.module.encode()).hexdigest()[:16]

    def key_for(self, name: str) -> str | None:
        """The ``tools`` key deciding calls to ``name``: the exact key, else the first glob (in file order)
        matching the whole name; None for ``unlisted``."""
        if name in self.settings["tools"]:
            return name
        if not self.settings["globs"]:
            return None
        # A call's name is looked up several times per call (engine, metrics, schema): the glob scan is
        # done once per name, for a bounded number of names (they come from the agent).
        seen: dict[str, str | None] | None = self.__dict__.get("_glob_keys")
        if seen is None:
            seen = {}
            object.__setattr__(self, "_glob_keys", seen)
        known = seen.get(name, _UNSEEN)
        if known is not _UNSEEN:
            return known  # type: ignore[return-value]
        key = next((g["key"] for g in self.settings["globs"] if re.fullmatch(g["regex"], name, re.DOTALL)), None)
        if len(seen) >= _GLOB_KEYS_KEPT:
            seen.clear()
        seen[name] = key
        return key

    def entry_for(self, name: str) -> dict[str, Any]:
        """The settings entry deciding calls to ``name`` (see :meth:`key_for`)."""
        return self.units[self.unit_for(name)].entry

    def unit_for(self, name: str) -> str:
        """The id of the decider of calls to ``name``, found as the whole-policy module's ``which`` finds it."""
        key = self.key_for(name)
        if key is None:
            return UNLISTED
        return self._unit_of_key[key]

    @property
    def _unit_of_key(self) -> dict[str, str]:
        cached: dict[str, str] | None = self.__dict__.get("_keys")
        if cached is None:
            cached = {}
            exact = iter(u for u in self.units if u.startswith("t"))
            for key, entry in self.settings["tools"].items():
                cached[key] = HIDDEN if "hidden" in entry else next(exact)
            for gi, g in enumerate(self.settings["globs"]):
                cached[g["key"]] = f"g{gi}"
            object.__setattr__(self, "_keys", cached)
        return cached

    def unit_reads(self, unit: str) -> Reads:
        """What the rules of decider ``unit`` read of a call (for the decision cache)."""
        if unit == UNLISTED:
            return self.wildcard_reads if "rules" in self.units[UNLISTED].entry else Reads()
        if unit == HIDDEN:
            return Reads()
        keys: dict[str, str] | None = self.__dict__.get("_unit_keys")
        if keys is None:
            keys = {u: k for k, u in self._unit_of_key.items()}
            object.__setattr__(self, "_unit_keys", keys)
        return self.reads.get(keys[unit], Reads())

    def unit_module(self, unit: str, vector: bool = True) -> str:
        """The module of one decider's bundle (built from the same sections as :attr:`module`);
        ``vector``: ``verdict`` is the vector of the rules' outcomes, read with the section's ``spec``
        (see :func:`~regoguard.compiler.emit.decider_module`)."""
        assert self._policy is not None
        return decider_module(self._policy, self.units[unit], vector)

    def rego_for(self, name: str) -> RegoUnit:
        """The Rego that decides calls to ``name`` as the engine runs it without team Rego."""
        unit = self.unit_for(name)
        return RegoUnit({f"policy/{unit}.rego": self.unit_module(unit)}, {}, f"data.{PACKAGE}.verdict")

    @property
    def filename(self) -> str:
        """``payments.yaml`` compiles to ``payments.rego``."""
        stem = Path(self.source).stem if self.source and not self.source.startswith("<") else "policy"
        return stem + ".rego"


@heap.paused()
def compile_policy(policy: Policy) -> CompiledPolicy:
    """Compile a validated policy into its Rego and engine data."""
    settings = settings_of(policy)
    units = deciders(policy, settings)
    wildcard = next((t.rules for t in policy.tools if t.is_wildcard), ())
    return CompiledPolicy(
        module=policy_module(policy, units, settings),
        settings=settings,
        reads={t.key: reads_of(t.rules, wildcard) for t in policy.tools if not t.is_wildcard},
        wildcard_reads=reads_of((), wildcard),
        source=policy.source,
        units=units,
        _policy=policy,
    )
