"""The two regopy calls on a decision's path, made straight on the library regopy loaded.

regopy's Python wrappers cost more than the engine work they wrap, for the small inputs a decision
hands over (measured on regopy 1.5.2, a three-argument input):

- ``Interpreter.set_input(dict)`` builds the input node by node through a wrapper per node, each making
  a string buffer and checking a code: ~19 µs; the same C calls made here: see ``bench_engine.py``.
- ``Interpreter.query_bundle_entrypoint`` wraps the result in ``Output``, which fetches the JSON text
  twice and parses it, before the engine fetches it a third time to parse it strictly.

Same C functions and semantics (what ``engine_io.value_problem`` refuses ahead is still what these
calls would misread); only the Python around them is less, and one misreading is corrected:
``regoInputString`` takes text that starts and ends with ``"`` for an already quoted JSON string and drops
the quotes (``'"abc"'`` would reach the rules as ``abc``, and pass ``regex: ^[a-z]+$``; ``'""'`` as the
empty string). Such text, as a value or a key, is handed over inside one more pair of quotes, which the
library drops, so the rules see it whole (its count, its characters, its regex matches). And a float of
2**53 or more (always a whole number) is handed over as that integer: rego-cpp compares an integer with a
float through a double, OPA exactly.
"""

from __future__ import annotations

import ctypes
from typing import Any

from regopy import rego_shared

_lib = rego_shared.rego
_OK = 0
_BIG = 2.0**53
"""From here on every float is an integer, and rego-cpp compares an integer with a float through a double
(``10000000000000001 <= 1e16`` holds there): such floats are handed over as the integers they are."""
_INT64_END = 2.0**63

_new_input = _lib.regoNewInput
_free_input = _lib.regoFreeInput
_set_input = _lib.regoSetInput
_int = _lib.regoInputInt
_float = _lib.regoInputFloat
_str = _lib.regoInputString
_bool = _lib.regoInputBoolean
_null = _lib.regoInputNull
_item = _lib.regoInputObjectItem
_object = _lib.regoInputObject
_array = _lib.regoInputArray
_query = _lib.regoBundleQueryEntrypoint
_output_ok = _lib.regoOutputOk
_output_size = _lib.regoOutputJSONSize
_output_json = _lib.regoOutputJSON
_free_output = _lib.regoFreeOutput


class NativeError(RuntimeError):
    """The library refused a call (its text, when it gave one)."""


def _text(s: str) -> bytes:
    """``s`` as regoInputString must be given it to hold ``s`` itself (see the module doc)."""
    if s[:1] == '"' and s[-1:] == '"' and len(s) > 1:
        s = f'"{s}"'
    return s.encode("utf-8")


def _add(p: Any, v: Any) -> int:
    """Push ``v`` onto the input under construction; the first non-zero code, or 0."""
    if v is True or v is False:
        return _bool(p, v)  # type: ignore[no-any-return]
    t = type(v)
    if t is str:
        return _str(p, _text(v))  # type: ignore[no-any-return]
    if t is int:
        return _int(p, v)  # type: ignore[no-any-return]
    if t is dict:
        for k, item in v.items():
            if type(k) is not str:
                raise TypeError("an object key is not a string")
            code = _str(p, _text(k)) or _add(p, item) or _item(p)
            if code:
                return code
        return _object(p, len(v))  # type: ignore[no-any-return]
    if t is list:
        for item in v:
            code = _add(p, item)
            if code:
                return code
        return _array(p, len(v))  # type: ignore[no-any-return]
    if v is None:
        return _null(p)  # type: ignore[no-any-return]
    if t is float:
        return _float(p, v) if not _BIG <= abs(v) < _INT64_END else _int(p, int(v))  # type: ignore[no-any-return]
    # A subclass is read by its base type's own data, as regopy reads it (a str Enum's text, not its
    # __str__): what value_problem and the cache key saw is what the rules get.
    if isinstance(v, str):
        return _str(p, _text(str.__str__(v)))  # type: ignore[no-any-return]
    if isinstance(v, int):
        return _int(p, int.__int__(v))  # type: ignore[no-any-return]
    if isinstance(v, float):
        return _add(p, float.__float__(v))
    if isinstance(v, dict):
        return _add(p, dict(dict.items(v)))
    if isinstance(v, list | tuple):
        return _add(p, [*v] if isinstance(v, tuple) else list(list.__iter__(v)))
    raise TypeError(f"cannot hand a {type(v).__name__} to the engine")


def set_input(interpreter: Any, value: Any) -> None:
    """``interpreter.set_input(value)`` for JSON-like ``value`` (dict keys must be strings).

    Raises:
        NativeError: the library refused the value or the input.
        TypeError: ``value`` holds something that is not JSON.
    """
    p = _new_input()
    try:
        if _add(p, value):
            raise NativeError("the engine could not take the input")
        if _set_input(interpreter._impl, p) != _OK:
            raise NativeError(rego_shared.rego_get_error(interpreter._impl))
    finally:
        _free_input(p)


def query(interpreter: Any, bundle: Any, entrypoint: bytes) -> str:
    """The JSON text of one query of ``bundle``'s ``entrypoint``; an engine error as ``"\\x00error:..."``."""
    out = _query(interpreter._impl, bundle._impl, entrypoint)
    if not out:
        return "\x00error:" + str(rego_shared.rego_get_error(interpreter._impl))
    try:
        size = _output_size(out)
        buf = ctypes.create_string_buffer(size)
        if _output_json(out, buf, size) != _OK:
            return "\x00error:" + str(rego_shared.rego_get_error(interpreter._impl))
        text = buf.value.decode("utf-8")
        return text if _output_ok(out) else "\x00error:" + text
    finally:
        _free_output(out)
