"""Small helpers shared by the policy tests: load + compile + decide, with engines cached per YAML text."""

from __future__ import annotations

import functools
import textwrap
from typing import Any

import pytest

import regoguard
from regoguard import CompiledPolicy, Decision, Engine, PolicyError, PolicyLoadError


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# A policy whose rules run regexes: decided on the worker pool, behind the timeout.
REGEX_POLICY = dedent(
    """
    tools:
      t:
        rules:
          - name: word
            conditions:
              - {path: args.s, op: regex, value: "^[a-z]+$"}
          - name: no_x
            conditions:
              - {path: args.s, op: not_regex, value: "x"}
    """
)


@functools.lru_cache(maxsize=256)
def compiled_for(yaml_text: str, source: str = "<policy>") -> CompiledPolicy:
    return regoguard.compile_policy(regoguard.load_policy_text(yaml_text, source))


@functools.lru_cache(maxsize=256)
def engine_for(yaml_text: str) -> Engine:
    return Engine(compiled_for(yaml_text))


def call_doc(tool: str, args: Any = None, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "tool": {"name": tool, "arguments": {} if args is None else args},
        "server": {"name": "test"},
        "session": {"id": "s1", "client": {"name": "pytest", "version": "0"}},
        "principal": {"id": "p1", "claims": {}},
    }
    if schema is not None:
        doc["schema"] = schema
    return doc


def decide(
    yaml_text: str, tool: str, args: Any = None, schema: dict[str, Any] | None = None, fresh: bool = False
) -> Decision:
    """Decide one call of ``tool`` with ``args`` under the policy ``yaml_text``.

    ``fresh``: on a new engine, so no earlier call can answer from the decision cache.
    """
    if fresh:
        engine = Engine(compiled_for(yaml_text))
        try:
            return engine.evaluate(call_doc(tool, args, schema))
        finally:
            engine.close()
    return engine_for(yaml_text).evaluate(call_doc(tool, args, schema))


def load_errors(yaml_text: str, source: str = "policy.yaml") -> list[PolicyError]:
    """The errors the loader reports for ``yaml_text`` (fails the test if it loads)."""
    with pytest.raises(PolicyLoadError) as info:
        regoguard.load_policy_text(yaml_text, source)
    return info.value.errors


def only_error(yaml_text: str, source: str = "policy.yaml") -> PolicyError:
    errors = load_errors(yaml_text, source)
    assert len(errors) == 1, "\n".join(str(e) for e in errors)
    return errors[0]
