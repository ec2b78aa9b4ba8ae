"""``validate: {schema: true}``: a call's arguments against the whole ``inputSchema`` its server listed.

The validation is the ``jsonschema`` library's (JSON Schema 2020-12 unless the schema's ``$schema`` names
another draft); its result goes into the input document as ``schema_check`` (``{"valid": bool, "error":
"<path>: <why>" | null}``), and a Rego rule decides on it, so team Rego can read it too. A validator is
built once per distinct schema (an LRU of them), never per call. What could make a check slow is refused
up front or bounded: a ``pattern`` (or ``patternProperties`` key) that nests unbounded repetition makes the
schema unusable (the call is denied, saying why), and strings longer than ``MAX_PATTERN_SUBJECT``
characters never reach a pattern. ``$ref`` resolves inside the schema only: nothing is fetched.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import jsonschema
from jsonschema import ValidationError, validators
from jsonschema.exceptions import SchemaError

from regoguard.policy.regex_check import backtracking_problem

MAX_VALIDATORS = 1024
MAX_PATTERN_SUBJECT = 65536
UNKNOWN = "the tool's inputSchema is unknown, so the arguments cannot be checked against it"


def _bounded_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    if len(instance) > MAX_PATTERN_SUBJECT:
        yield ValidationError(f"is longer than {MAX_PATTERN_SUBJECT} characters, too long to match against "
                              f"pattern {pattern!r}")
        return
    if _compiled(pattern).search(instance) is None:
        yield ValidationError(f"does not match pattern {pattern!r}")


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    found = _PATTERNS.get(pattern)
    if found is None:
        if len(_PATTERNS) > 4 * MAX_VALIDATORS:
            _PATTERNS.clear()
        found = _PATTERNS[pattern] = re.compile(pattern)
    return found


def _patterns(schema: Any) -> Iterator[str]:
    """Every regex in a schema: ``pattern`` values and ``patternProperties`` keys, at any depth."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                yield node["pattern"]
            if isinstance(node.get("patternProperties"), dict):
                yield from (k for k in node["patternProperties"] if isinstance(k, str))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


class SchemaChecker:
    """Validators by schema (canonical JSON), built on first use; thread-safe."""

    def __init__(self) -> None:
        self._validators: OrderedDict[str, Any] = OrderedDict()
        self._by_identity: dict[int, tuple[dict[str, Any], Any]] = {}  # the same schema object, seen again
        self._lock = threading.Lock()

    def _validator(self, schema: dict[str, Any]) -> Any:
        """A validator for ``schema``, or the text saying why there cannot be one. A session hands over the
        same schema object call after call: found by identity first (the entry keeps the object alive, so
        its id cannot be reused), else by its canonical JSON."""
        hit = self._by_identity.get(id(schema))
        if hit is not None and hit[0] is schema:
            return hit[1]
        built = self._validator_by_value(schema)
        with self._lock:
            if len(self._by_identity) >= MAX_VALIDATORS:
                self._by_identity.clear()
            self._by_identity[id(schema)] = (schema, built)
        return built

    def _validator_by_value(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        with self._lock:
            found = self._validators.get(key)
            if found is not None:
                self._validators.move_to_end(key)
                return found
        built = self._build(schema)
        with self._lock:
            self._validators[key] = built
            if len(self._validators) > MAX_VALIDATORS:
                self._validators.popitem(last=False)
        return built

    @staticmethod
    def _build(schema: dict[str, Any]) -> Any:
        for pattern in _patterns(schema):
            problem = backtracking_problem(pattern)
            if problem is not None:
                return f"the tool's inputSchema cannot be used: {problem}"
        base = validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            base.check_schema(schema)
        except SchemaError as exc:
            return f"the tool's inputSchema is not a valid JSON Schema: {exc.message}"
        bounded = validators.extend(base, {"pattern": _bounded_pattern})
        return bounded(schema)

    def check(self, schema: Any, arguments: Any) -> dict[str, Any]:
        """The ``schema_check`` entry of the input document for a call with ``arguments``."""
        if not isinstance(schema, dict):
            return {"valid": False, "error": UNKNOWN}
        validator = self._validator(schema)
        if isinstance(validator, str):
            return {"valid": False, "error": validator}
        instance = arguments if arguments is not None else {}
        try:
            if validator.is_valid(instance):
                return {"valid": True, "error": None}
            error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
        except Exception as exc:  # an unresolvable $ref, an unknown type, recursion: fail closed, saying why
            return {"valid": False, "error": f"the tool's inputSchema cannot be applied: {type(exc).__name__}: {exc}"}
        if error is None:
            return {"valid": False, "error": "the arguments do not match the tool's inputSchema"}
        where = "/" + "/".join(str(p) for p in error.absolute_path)
        return {"valid": False, "error": f"{where}: {error.message}"[:500]}


CHECKER = SchemaChecker()
