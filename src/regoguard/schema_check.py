r"""``validate: {schema: true}``: a call's arguments against the whole ``inputSchema`` its server listed.

The validation is the ``jsonschema`` library's (JSON Schema 2020-12 unless the schema's ``$schema`` names
another draft); its result goes into the input document as ``schema_check`` (``{"valid": bool, "error":
"<path>: <why>" | null}``), and a Rego rule decides on it, so team Rego can read it too. A validator is
built once per distinct schema (an LRU of them), never per call.

What could make a check slow or reach out is refused or bounded:

- regexes (``pattern``, ``patternProperties`` keys, and so ``additionalProperties`` beside them) run in
  the ``regex`` module with a time limit per match (a check that runs out is a failure), read with
  ECMA-262's ASCII ``\d``/``\w``/``\s`` and a ``$`` that means the end; a pattern that nests unbounded
  repetition makes the schema unusable up front; strings longer than ``MAX_PATTERN_SUBJECT`` characters and
  property names longer than ``MAX_PROPERTY_NAME`` never reach a regex;
- ``$ref`` resolves inside the schema only, against an empty registry: nothing is ever fetched.

The error text names the failing path and the schema keyword, never the argument's value (which may be
a secret the decision log masks).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import jsonschema
import referencing
import regex
from jsonschema import ValidationError, validators
from jsonschema.exceptions import SchemaError

from regoguard.policy.regex_check import backtracking_problem

MAX_VALIDATORS = 1024
MAX_PATTERN_SUBJECT = 65536
MAX_PROPERTY_NAME = 1024
MATCH_TIMEOUT = 0.05  # seconds per regex match
_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry()
UNKNOWN = "the tool's inputSchema is unknown, so the arguments cannot be checked against it"


class _Timeout(Exception):
    pass


def _search(pattern: str, subject: str) -> bool:
    try:
        return _compiled(pattern).search(subject, timeout=MATCH_TIMEOUT) is not None
    except TimeoutError:
        raise _Timeout(f"matching pattern {pattern!r} took longer than {MATCH_TIMEOUT * 1000:.0f} ms") from None


def _bounded_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    if len(instance) > MAX_PATTERN_SUBJECT:
        yield ValidationError(f"is longer than {MAX_PATTERN_SUBJECT} characters, too long to match against "
                              f"pattern {pattern!r}")
        return
    if not _search(pattern, instance):
        yield ValidationError(f"does not match pattern {pattern!r}")


def _names_fit(instance: dict[str, Any]) -> ValidationError | None:
    long = next((k for k in instance if len(k) > MAX_PROPERTY_NAME), None)
    if long is None:
        return None
    return ValidationError(f"has a property name longer than {MAX_PROPERTY_NAME} characters")


def _bounded_pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any,
                                schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    if (too_long := _names_fit(instance)) is not None:
        yield too_long
        return
    for pattern, subschema in patterns.items():
        for k, v in instance.items():
            if _search(pattern, k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _bounded_additional_properties(validator: Any, additional: Any, instance: Any,
                                   schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    if (too_long := _names_fit(instance)) is not None:
        yield too_long
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [k for k in instance if k not in properties and not any(_search(p, k) for p in patterns)]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        yield ValidationError(f"has {len(extras)} propert{'y' if len(extras) == 1 else 'ies'} the schema does "
                              "not allow (additionalProperties)")


_PATTERNS: dict[str, Any] = {}


def _ecma(pattern: str) -> str:
    """A JSON Schema (ECMA-262) pattern for Python's engine: ``$`` (outside a class, unescaped) is the
    end of the string, not "before a final newline"."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
        elif ch == "]" and in_class:
            in_class = False
        out.append("\\Z" if ch == "$" and not in_class else ch)
        i += 1
    return "".join(out)


def _compiled(pattern: str) -> Any:
    found = _PATTERNS.get(pattern)
    if found is None:
        if len(_PATTERNS) > 4 * MAX_VALIDATORS:
            _PATTERNS.clear()
        found = _PATTERNS[pattern] = regex.compile(_ecma(pattern), regex.ASCII | regex.V0)
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
        """A validator, or the text saying why there cannot be one (never raises)."""
        try:
            for pattern in _patterns(schema):
                problem = backtracking_problem(pattern)
                if problem is None:
                    try:
                        _compiled(pattern)
                    except regex.error as exc:
                        problem = f"pattern {pattern!r} is not a regular expression: {exc}"
                if problem is not None:
                    return f"the tool's inputSchema cannot be used: {problem}"
            base = validators.validator_for(schema, default=jsonschema.Draft202012Validator)
            base.check_schema(schema)
            bounded = validators.extend(base, {"pattern": _bounded_pattern,
                                               "patternProperties": _bounded_pattern_properties,
                                               "additionalProperties": _bounded_additional_properties})
            return bounded(schema, registry=_NO_RETRIEVAL)
        except SchemaError as exc:
            return f"the tool's inputSchema is not a valid JSON Schema: {exc.message}"
        except Exception as exc:  # a `$schema` that is not a string, say
            return f"the tool's inputSchema cannot be used: {type(exc).__name__}: {exc}"

    def check(self, schema: Any, arguments: Any) -> dict[str, Any]:
        """The ``schema_check`` entry of the input document for a call with ``arguments``."""
        if not isinstance(schema, dict):
            return {"valid": False, "error": UNKNOWN}
        validator = self._validator(schema)
        if isinstance(validator, str):
            return {"valid": False, "error": validator}
        instance = arguments if arguments is not None else {}
        try:
            error = next(iter(sorted(validator.iter_errors(instance), key=jsonschema.exceptions.relevance)),
                         None) if not validator.is_valid(instance) else None
            if error is None:
                return {"valid": True, "error": None}
        except _Timeout as exc:
            return {"valid": False, "error": f"the arguments could not be checked in time: {exc}"}
        except Exception as exc:  # an unresolvable $ref, an unknown type, recursion: fail closed, saying why
            return {"valid": False, "error": f"the tool's inputSchema cannot be applied: {type(exc).__name__}: {exc}"}
        return {"valid": False, "error": _describe(error)[:500]}


def _describe(error: ValidationError) -> str:
    """Where and which keyword failed, told from the schema's side: never the argument's value."""
    where = "/" + "/".join(str(p) for p in error.absolute_path)
    keyword, expected = error.validator, error.validator_value
    if keyword in ("pattern", "patternProperties", "additionalProperties") and error.message.startswith(
            ("is longer than", "has a property name longer")):
        return f"{where}: {error.message}"  # our own bounds: no argument text in them
    if keyword == "pattern":
        return f"{where}: does not match pattern {expected!r}"
    if keyword == "required":
        return f"{where}: a required property is missing (required: {json.dumps(expected, ensure_ascii=False)})"
    if keyword == "additionalProperties" and expected is False:
        return f"{where}: has a property the schema does not allow (additionalProperties: false)"
    if isinstance(expected, dict) or keyword in ("not", "allOf", "anyOf", "oneOf", "if", "items", "contains"):
        return f"{where}: does not satisfy {keyword}"
    return f"{where}: does not satisfy {keyword}: {json.dumps(expected, ensure_ascii=False)[:120]}"


CHECKER = SchemaChecker()
