"""The embedded decision engine: a regopy bundle built once per policy load, queried per call.

Fail closed: an undefined result, an engine error, a timeout or an over-large input is a deny with a
reason — never an exception to the caller, never an allow.

Facts that shape this file (measured on regopy 1.5.2; see benchmarks/):

- ``Interpreter.query`` recompiles every module on every call; ``build`` once and ``query_bundle``.
- Policy settings live in the bundle's *data*, not in Rego literals: rego-cpp re-evaluates a literal
  on every query (300 ms at 1,000 tools), while data lookups stay flat (~0.1 ms).
- ``regex.match`` is C++ ``std::regex``, which recurses per character: a 100 KB string overflows an
  8 MB stack and kills the process. Queries run on one worker thread with a 512 MB stack, the library
  refuses regex subjects over 1 MiB, and a query that outlives ``timeout`` is a deny (the worker is then
  replaced: a stuck C++ call cannot be interrupted).
- An interpreter is not thread-safe; each worker owns its own.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import regopy

from regoguard.compiler import CompiledPolicy, Reads
from regoguard.decision import Charge, Decision, Reason
from regoguard.errors import EngineError
from regoguard.policy.regex_check import glob_to_regex

VERDICT = "regoguard/lib/verdict"  # the hot path: {"allow", "costs"}
DECISION = "regoguard/lib/decision"  # the full, documented decision: asked for when a call is denied

WORKER_STACK_BYTES = 512 * 1024 * 1024
_MISSING = "\x00missing"

_thread_state = threading.local()


def run_with_large_stack(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on a new thread with a stack large enough for the engine, and return its result.

    An :class:`Engine` called from such a thread evaluates inline (no thread hop, ~0.1 ms saved per
    call) on an interpreter of that thread's own. The CLI runs every command this way.
    """
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        _thread_state.large_stack = True
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised on the caller's thread
            error.append(exc)

    old = threading.stack_size()
    threading.stack_size(WORKER_STACK_BYTES)
    try:
        thread = threading.Thread(target=target, name="regoguard-main")
        thread.start()
    finally:
        threading.stack_size(old)
    thread.join()
    if error:
        raise error[0]
    return result[0] if result else None


def _run_query(interp: Any, bundle: Any, doc: dict[str, Any]) -> tuple[str, str | None]:
    """Ask for the verdict; when it denies, ask for the full decision too (same input, same bundle)."""
    interp.set_input(doc)
    out = interp.query_bundle_entrypoint(bundle, VERDICT)
    if not out.ok():
        return "\x00error:" + str(out), None
    verdict = str(out)
    try:
        if _expression(verdict)["allow"] is True:
            return verdict, None
    except (ValueError, KeyError, IndexError, TypeError):
        pass  # a malformed verdict: asking for the full decision costs nothing here, and _parse denies
    full = interp.query_bundle_entrypoint(bundle, DECISION)
    return verdict, (str(full) if full.ok() else "\x00error:" + str(full))


@dataclass(frozen=True)
class EngineLimits:
    """Bounds on what one evaluation may cost. Defaults are named here, not scattered."""

    max_input_bytes: int = 8 * 1024 * 1024
    timeout: float = 5.0
    cache_size: int = 4096
    max_cached_value_bytes: int = 4096


def rego_library_dir() -> Path:
    """Where the hand-written Rego library lives: inside the installed package, or the repo's ``rego/``."""
    packaged = resources.files("regoguard").joinpath("_rego")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "rego"


def library_modules() -> dict[str, str]:
    """Every ``.rego`` file of the library, by path relative to the library root (sorted, deterministic)."""
    root = rego_library_dir()
    files = sorted(p for p in root.rglob("*.rego") if not p.name.endswith("_test.rego"))
    if not files:
        raise EngineError(f"the Rego library is missing: no .rego files under {root}")
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in files}


class _Worker:
    """One thread with a large stack, owning one interpreter and bundle."""

    def __init__(self, build: Callable[[], tuple[Any, Any]]) -> None:
        self._jobs: queue.SimpleQueue[tuple[dict[str, Any], Future[tuple[str, str | None]]] | None] = (
            queue.SimpleQueue()
        )
        self._ready: Future[None] = Future()
        self._build = build
        old = threading.stack_size()
        threading.stack_size(WORKER_STACK_BYTES)
        try:
            self._thread = threading.Thread(target=self._run, name="regoguard-engine", daemon=True)
            self._thread.start()
        finally:
            threading.stack_size(old)
        self._ready.result()

    def _run(self) -> None:
        try:
            interp, bundle = self._build()
        except BaseException as exc:  # reported to the constructor's caller
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        while (job := self._jobs.get()) is not None:
            doc, fut = job
            try:
                fut.set_result(_run_query(interp, bundle, doc))
            except BaseException as exc:  # a query must always answer
                fut.set_exception(exc)

    def submit(self, doc: dict[str, Any]) -> Future[tuple[str, str | None]]:
        fut: Future[tuple[str, str | None]] = Future()
        self._jobs.put((doc, fut))
        return fut

    def stop(self) -> None:
        self._jobs.put(None)


class Engine:
    """Evaluates input documents against one compiled policy.

    Args:
        compiled: the output of :func:`regoguard.compile_policy`.
        limits: bounds on input size, time and cache.
        extra_modules: more Rego modules (name → source) loaded beside the library, e.g. a team's own.
    """

    def __init__(
        self,
        compiled: CompiledPolicy,
        limits: EngineLimits | None = None,
        extra_modules: dict[str, str] | None = None,
    ) -> None:
        self.compiled = compiled
        self.limits = limits or EngineLimits()
        self._modules = {**library_modules(), **(extra_modules or {})}
        self._data = {"regoguard": {"settings": compiled.settings}}
        self._cacheable = not extra_modules
        self._cache: OrderedDict[tuple[Any, ...], Decision] = OrderedDict()
        self._reads_by_tool: dict[str, Reads] = {}
        self._globs = [(glob_to_regex(g["key"]), g["key"]) for g in compiled.settings["globs"]]
        self._lock = threading.Lock()
        self._inline = threading.local()
        # Inline evaluation has no timeout: only for policies whose every step is bounded (no regex, which
        # std::regex can make quadratic; no team Rego). The rest runs on the worker, behind `timeout`.
        self._inline_ok = not extra_modules and compiled.bounded
        t0 = time.perf_counter_ns()
        self._worker = _Worker(self._build)
        self.build_ns = time.perf_counter_ns() - t0

    @property
    def revision(self) -> str:
        return self.compiled.revision

    def _build(self) -> tuple[Any, Any]:
        interp = regopy.Interpreter()
        try:
            interp.add_data_json(data_json(self._data))
            for name, source in self._modules.items():
                interp.add_module(name, source)
            bundle = interp.build(None, [VERDICT, DECISION])
        except regopy.RegoError as exc:
            raise EngineError(f"cannot build the policy bundle: {exc}") from exc
        if not bundle.ok():
            raise EngineError("cannot build the policy bundle: regopy rejected the compiled modules or data")
        try:
            lib_format = _expression(str(interp.query("data.regoguard.lib.format")))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EngineError("the Rego library declares no settings `format`") from exc
        if lib_format != self.compiled.settings.get("format"):
            raise EngineError(
                f"the Rego library reads settings format {lib_format}, but the policy was compiled to format "
                f"{self.compiled.settings.get('format')}: recompile it with this regoguard"
            )
        return interp, bundle

    def close(self) -> None:
        self._worker.stop()

    # -- the decision cache ----------------------------------------------------------------------------

    def _reads_for(self, name: str) -> Reads:
        reads = self._reads_by_tool.get(name)
        if reads is not None:
            return reads
        reads = self.compiled.reads.get(name)
        if reads is None:
            import re

            key = next((k for rx, k in self._globs if re.fullmatch(rx[1:-1], name, re.DOTALL)), None)
            reads = self.compiled.reads[key] if key is not None else self.compiled.wildcard_reads
        if len(self._reads_by_tool) < self.limits.cache_size:
            self._reads_by_tool[name] = reads
        return reads

    def _cache_key(self, doc: dict[str, Any]) -> tuple[Any, ...] | None:
        tool = doc.get("tool")
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            return None
        name = tool["name"]
        args = tool.get("arguments", {})
        if not isinstance(args, dict):
            return None
        reads = self._reads_for(name)
        parts: list[Any] = [name]
        budget = self.limits.max_cached_value_bytes
        for key in sorted(reads.args):
            if key not in args:
                parts.append(_MISSING)
                continue
            text = json.dumps(args[key], sort_keys=True)
            budget -= len(text)
            if budget < 0:
                return None
            parts.append(text)
        if reads.schema:
            # validate: {required_args: true} reads the schema's required list and which arguments are present
            schema = doc.get("schema")
            if isinstance(schema, dict):
                parts.append(json.dumps(schema["required"]) if "required" in schema else "\x00no-required")
            else:
                parts.append("\x00no-schema")
            parts.append(tuple(sorted(args)))
        return tuple(parts)

    # -- evaluation ------------------------------------------------------------------------------------

    def evaluate(self, doc: dict[str, Any], size_hint: int | None = None) -> Decision:
        """Decide the call described by ``doc`` (the documented input document). Never raises.

        Args:
            doc: the input document: ``{"tool": {"name", "arguments"}, "session", "principal", "schema", ...}``.
            size_hint: the size in bytes of the message it came from, if known (saves encoding it here).
        """
        t0 = time.perf_counter_ns()
        problem = _shape_problem(doc)
        if problem:
            return Decision.deny("engine/input", problem)
        if size_hint is None:
            try:
                size_hint = len(json.dumps(doc))
            except (TypeError, ValueError) as exc:
                return Decision.deny("engine/input", f"input is not JSON: {exc}")
        if size_hint > self.limits.max_input_bytes:
            return Decision.deny(
                "engine/input-too-large",
                f"call input is {size_hint} bytes; the limit is {self.limits.max_input_bytes}",
            )
        problem = _value_problem(doc)
        if problem:
            return Decision.deny("engine/input", problem)
        key = self._cache_key(doc) if self._cacheable else None
        if key is not None:
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
            if hit is not None:
                return Decision(hit.allow, hit.action, hit.reasons, hit.charges, True, time.perf_counter_ns() - t0)
        decision = self._query(doc)
        decision = Decision(decision.allow, decision.action, decision.reasons, decision.charges, False,
                            time.perf_counter_ns() - t0, decision.extra)
        if key is not None and decision.extra.get("from_policy"):
            with self._lock:
                self._cache[key] = decision
                if len(self._cache) > self.limits.cache_size:
                    self._cache.popitem(last=False)
        return decision

    def _query(self, doc: dict[str, Any]) -> Decision:
        if self._inline_ok and getattr(_thread_state, "large_stack", False):
            built = getattr(self._inline, "built", None)
            if built is None:
                built = self._inline.built = self._build()
            try:
                raw = _run_query(built[0], built[1], doc)
            except Exception as exc:
                return Decision.deny("engine/error", f"policy evaluation failed: {exc}")
            return self._parse(doc, *raw)
        with self._lock:
            worker = self._worker
            fut = worker.submit(doc)
        try:
            raw = fut.result(timeout=self.limits.timeout)
        except TimeoutError:
            self._replace_worker(worker)
            return Decision.deny("engine/timeout", f"policy evaluation took longer than {self.limits.timeout}s")
        except Exception as exc:
            return Decision.deny("engine/error", f"policy evaluation failed: {exc}")
        return self._parse(doc, *raw)

    def _parse(self, doc: dict[str, Any], verdict: str, full: str | None) -> Decision:
        for raw in (verdict, full):
            if raw is not None and raw.startswith("\x00error:"):
                return Decision.deny("engine/error", f"policy evaluation failed: {raw[7:].strip()[:500]}")
        if full is None:
            return self._allowed(doc["tool"]["name"], verdict)
        decision = parse_decision(full)
        if decision.allow:  # the verdict denied: the full decision cannot overrule it
            return Decision.deny("engine/malformed", "the policy's verdict and decision disagree")
        return _name_the_tool(decision, doc["tool"]["name"])

    def _allowed(self, name: str, raw: str) -> Decision:
        """An allowing verdict, with the charges filled in from the tool's entry (as the library does)."""
        try:
            value = _expression(raw)
            costs = list(value["costs"])
            templates = self.compiled.entry_for(name).get("charges", ())
            if value["allow"] is not True or len(costs) != sum(1 for t in templates if "cost_from" in t):
                raise ValueError("the verdict and the tool's entry disagree")
            charges = []
            for t in templates:
                cost = costs.pop(0) if "cost_from" in t else t["cost"]
                charges.append(Charge(t["counter"], t["scope"], cost, t["capacity"], t["window"], t["strict"],
                                      t["rule"], t["message"]))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return Decision.deny("engine/malformed", f"the policy gave a malformed verdict: {exc}")
        return Decision(True, "allow", (), tuple(charges), extra={"from_policy": True})

    def _replace_worker(self, stuck: _Worker) -> None:
        with self._lock:
            if self._worker is stuck:
                stuck.stop()
                self._worker = _Worker(self._build)


_INT64 = (-(2**63), 2**63 - 1)


def data_json(value: Any) -> str:
    """JSON text that rego-cpp reads as Python meant it: UTF-8 rather than ``\\u`` escapes (which it
    keeps as six literal characters), and exponents with a decimal point (``1e-07`` is rejected,
    ``1.0e-07`` accepted)."""
    floats: dict[str, str] = {}

    def walk(v: Any) -> Any:
        if isinstance(v, float) and "e" in repr(v) and "." not in repr(v).split("e")[0]:
            token = f"@regoguard-float-{len(floats)}-{id(floats)}@"
            mantissa, exponent = repr(v).split("e")
            floats[token] = f"{mantissa}.0e{exponent}"
            return token
        if isinstance(v, dict):
            return {k: walk(item) for k, item in v.items()}
        if isinstance(v, list):
            return [walk(item) for item in v]
        return v

    text = json.dumps(walk(value), ensure_ascii=False)
    for token, number in floats.items():
        text = text.replace(json.dumps(token), number)
    return text


def _value_problem(value: Any) -> str | None:
    """What in an input the embedded engine would misread, if anything. regopy's ``set_input`` cuts
    strings at the first NUL (``"/workspace/\\x00/../etc"`` would reach the rules as ``"/workspace/"``)
    and wraps integers beyond 64 bits (2**64 + 100 would compare as 100). Such input is denied."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return "the call holds a NUL character (\\u0000), which the embedded engine cannot compare exactly"
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, int):
            if not _INT64[0] <= v <= _INT64[1]:
                return f"the call holds the integer {v}, beyond the 64 bits the embedded engine compares exactly"
        elif isinstance(v, float):
            if not math.isfinite(v):
                return f"the call holds the number {v}, which is not a finite JSON number"
        elif isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str) or "\x00" in k:
                    return "the call holds an object key that is not text without NUL characters"
                stack.append(item)
        elif isinstance(v, list):
            stack.extend(v)
        else:
            return f"the call holds a {type(v).__name__}, which is not JSON"
    return None


def _shape_problem(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return "input must be an object"
    tool = doc.get("tool")
    if not isinstance(tool, dict):
        return "input.tool must be an object"
    if not isinstance(tool.get("name"), str):
        return "input.tool.name must be a string"
    if "arguments" in tool and not isinstance(tool["arguments"], dict | type(None)):
        return "input.tool.arguments must be an object"
    return None


_NAMED_MESSAGES = {
    "hide": 'Tool "{}" is hidden by policy',
    "default": 'Tool "{}" is not allowed by policy (default: deny)',
}


def _name_the_tool(decision: Decision, name: str) -> Decision:
    """Put the tool's name into the library's hide/default messages here, in Python: the library keeps
    input strings out of its output, because rego-cpp would not escape them there."""
    reasons = tuple(
        Reason(r.rule, _NAMED_MESSAGES[r.rule].format(name)) if r.rule in _NAMED_MESSAGES else r
        for r in decision.reasons
    )
    return Decision(decision.allow, decision.action, reasons, decision.charges, decision.cached,
                    decision.eval_ns, decision.extra)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key in the engine's output")
    return out


def _expression(raw: str) -> Any:
    """The value of regopy's output. Parsed strictly: rego-cpp does not escape strings that came from the
    input, so an injected ``"allow": true`` would otherwise win as the last duplicate key."""
    if raw.strip() == "undefined":
        raise ValueError("undefined")
    out = json.loads(raw, object_pairs_hook=_unique_keys)
    return out["expressions"][0] if isinstance(out, dict) else out[0]["expressions"][0]


def parse_decision(raw: str) -> Decision:
    """Turn the library's full ``decision`` (regopy output text) into a Decision; anything unexpected
    is a deny."""
    if raw.strip() == "undefined":
        return Decision.deny("engine/undefined", "the policy gave no decision for this call")
    try:
        value = _expression(raw)
        allow = value["allow"]
        reasons = tuple(Reason(r["rule"], r["message"]) for r in value["reasons"])
        charges = tuple(
            Charge(c["counter"], c["scope"], c["cost"], c["capacity"], c["window"], c["strict"], c["rule"],
                   c["message"])
            for c in value["charges"]
        )
        details = {r["rule"]: r.get("detail", []) for r in value["reasons"]}
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return Decision.deny("engine/malformed", f"the policy gave a malformed decision: {exc}")
    if allow is not True or reasons:
        if allow is True:  # reasons without a deny: trust the reasons
            allow = False
        if not reasons:
            reasons = (Reason("engine/undefined", "the policy denied the call without a reason"),)
        return Decision(False, "deny", reasons, (), extra={"details": details, "from_policy": True})
    return Decision(True, "allow", (), charges, extra={"from_policy": True})
