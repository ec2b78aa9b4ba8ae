"""The real OPA engine (v1.20.2, in-process via PyPI ``opa-golib-python-bindings``) for tests.

regoguard evaluates its Rego with regopy, but the modules it emits must decide the same under OPA, the
engine our users run. Tests use this module to evaluate the very same modules under OPA and compare.

API:
    opa_available() -> bool
    opa_eval(modules, data, input, query) -> Any    (None when the query is undefined)

Errors: ``OpaCompileError`` when OPA refuses the modules (parse, type, safety, conflict errors), with
OPA's own message including ``file:line``; ``OpaEvalError`` when evaluation itself fails (for example a
builtin error such as an invalid pattern in ``regex.match``). Both derive from ``OpaHarnessError``.

There is no ``opa_check_strict``: the bindings (0.4.4) expose no strict-mode compilation (``opa check
--strict``: unused arguments, deprecated built-ins, ...); a module with an unused function argument
compiles and evaluates cleanly through them.

Speed: one engine is kept per distinct (modules, data) pair, and the engine keeps a prepared query per
query string, so hundreds of evaluations of the same policy with different inputs reuse one compilation.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from typing import Any

try:
    from opa_bindings import OpaEngine, OpaError, OpaUndefinedError  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    OpaEngine = None
    OpaError = Exception
    OpaUndefinedError = Exception

__all__ = ["OpaCompileError", "OpaEvalError", "OpaHarnessError", "opa_available", "opa_eval"]

# Error codes the bridge uses when OPA rejects the modules rather than failing during evaluation.
_COMPILE_CODES = frozenset({"parse_error", "compile_error", "prepare_error", "merge_conflict"})
_DATA_PATH = re.compile(r"data(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_MAX_ENGINES = 64


class OpaHarnessError(RuntimeError):
    """OPA refused or failed a query; ``code`` is the bridge's error code, ``message`` OPA's text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"OPA {code}: {message}")
        self.code = code
        self.message = message


class OpaCompileError(OpaHarnessError):
    """OPA would not compile the modules (what ``opa check`` would report)."""


class OpaEvalError(OpaHarnessError):
    """The modules compiled but evaluating the query failed (e.g. a built-in function's error)."""


_engines: OrderedDict[str, Any] = OrderedDict()
_lock = threading.Lock()
_available: bool | None = None


def opa_available() -> bool:
    """True when the OPA bindings import and their shared library loads on this machine.

    Tests that need OPA skip with a clear reason instead of failing on machines without the wheel
    (``scripts/setup.sh`` installs it).
    """
    global _available
    if _available is None:
        if OpaEngine is None:
            _available = False
        else:
            try:
                OpaEngine().close()
                _available = True
            except Exception:
                _available = False
    return _available


def _engine_for(modules: dict[str, str], data: dict[str, Any]) -> Any:
    """The cached engine holding exactly these modules and data, built on first use."""
    key = json.dumps([sorted(modules.items()), data], sort_keys=True, ensure_ascii=False)
    with _lock:
        engine = _engines.get(key)
        if engine is not None:
            _engines.move_to_end(key)
            return engine
    if not opa_available():
        raise OpaHarnessError("unavailable", "opa-golib-python-bindings is not installed; run scripts/setup.sh")
    engine = OpaEngine()
    try:
        for name in sorted(modules):
            engine.add_policy(name, modules[name])
        if data:
            engine.add_data(data)
        # Compile now so a broken module is reported as a compile error, whatever the query.
        engine.eval_query("true")
    except OpaError as exc:
        engine.close()
        raise OpaCompileError(exc.code, exc.message) from None
    with _lock:
        _engines[key] = engine
        while len(_engines) > _MAX_ENGINES:
            _engines.popitem(last=False)[1].close()
    return engine


def opa_eval(modules: dict[str, str], data: dict[str, Any], input: dict[str, Any], query: str) -> Any:
    """Evaluate ``query`` (a data path such as ``"data.regoguard.lib.decision"``) under OPA.

    ``modules`` maps a file name (shown in OPA's error messages) to Rego source; ``data`` is the base
    data document. Returns the query's JSON value, or None when it is undefined (a decision engine must
    treat that as deny, so tests need to see it, not an exception).

    Raises:
        OpaCompileError: OPA rejects the modules (message carries OPA's ``file:line: ...`` text).
        OpaEvalError: evaluation failed, e.g. ``regex.match`` given an invalid pattern.
        ValueError: ``query`` is not a plain ``data.a.b`` path.
    """
    if not _DATA_PATH.fullmatch(query):
        raise ValueError(f"query must be a data path like data.pkg.rule, not {query!r}")
    engine = _engine_for(modules, data)
    path = query[len("data.") :] if query != "data" else ""
    try:
        return engine.eval_document(path, input)
    except OpaUndefinedError:
        return None
    except OpaError as exc:
        cls = OpaCompileError if exc.code in _COMPILE_CODES else OpaEvalError
        raise cls(exc.code, exc.message) from None
