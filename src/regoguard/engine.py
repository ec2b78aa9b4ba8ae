"""The embedded decision engine: a regopy bundle built once per policy load, queried per call.

Fail closed: an undefined result, an engine error, a timeout or an over-large input is a deny with a
reason — never an exception to the caller, never an allow.

Facts that shape this file (measured on regopy 1.5.2; see benchmarks/):

- ``Interpreter.query`` recompiles every module on every call; ``build`` once and query the bundle.
- Policy settings live in the bundle's *data*, not in Rego literals: rego-cpp re-evaluates a literal
  on every query (300 ms at 1,000 tools), while a data lookup by tool name stays flat.
- The hot path asks for the library's compact ``verdict`` (allow + argument-derived costs) and fills in
  the charges from the tool's entry; the full ``decision`` is asked for only when a call is denied.
  Writing charges out through rego-cpp's JSON costs ~0.1 ms per call.
- ``regex.match`` is C++ ``std::regex``: evaluation runs on threads with a 512 MB stack
  (``engine_threads``), the library bounds regex subjects to 64 KiB, and a policy with regexes is
  evaluated behind ``timeout`` on a worker thread (a stuck C++ call cannot be interrupted, so the
  worker is then replaced). A policy without regexes may be evaluated inline, saving the thread hop.
- An interpreter is not thread-safe; each thread owns its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import regopy

from regoguard.compiler import CompiledPolicy, Reads
from regoguard.decision import Charge, Decision
from regoguard.engine_io import data_json, expression, name_the_tool, parse_decision, shape_problem, value_problem
from regoguard.engine_threads import WORKER_STACK_BYTES, Worker, on_large_stack, run_with_large_stack
from regoguard.errors import EngineError
from regoguard.rego_modules import revision_with

__all__ = ["WORKER_STACK_BYTES", "Engine", "EngineLimits", "library_modules", "run_with_large_stack"]

VERDICT = "regoguard/lib/verdict"  # the hot path: {"allow", "costs"}, the YAML policy's rules only
TEAM_VERDICT = "regoguard/lib/team_verdict"  # {"allow"}, the team's Rego included
DECISION = "regoguard/lib/decision"  # the full, documented decision: asked for when a call is denied

_MISSING = "\x00missing"


def _run_query(interp: Any, bundle: Any, doc: dict[str, Any], always_full: bool = False) -> tuple[str, str | None]:
    """Ask for the verdict; when it denies (or the team's Rego may add charges: ``always_full``), ask for
    the full decision too (same input, same bundle)."""
    interp.set_input(doc)
    out = interp.query_bundle_entrypoint(bundle, TEAM_VERDICT if always_full else VERDICT)
    if not out.ok():
        return "\x00error:" + str(out), None
    verdict = str(out)
    if not always_full:
        try:
            if expression(verdict)["allow"] is True:
                return verdict, None
        except (ValueError, KeyError, IndexError, TypeError):
            pass  # a malformed verdict: asking for the full decision costs nothing here, and _parse denies
    full = interp.query_bundle_entrypoint(bundle, DECISION)
    return verdict, (str(full) if full.ok() else "\x00error:" + str(full))


def _run_full_query(interp: Any, bundle: Any, doc: dict[str, Any]) -> tuple[str, str | None]:
    return _run_query(interp, bundle, doc, always_full=True)


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


class Engine:
    """Evaluates input documents against one compiled policy.

    Args:
        compiled: the output of :func:`regoguard.compile_policy`.
        limits: bounds on input size, time and cache.
        extra_modules: more Rego modules (name → source) loaded beside the library, e.g. a team's own.
        inline: allow inline evaluation (its interpreter is built on the calling thread at the first call;
            a hot reload turns it off so that no call pays for a build).
    """

    def __init__(
        self,
        compiled: CompiledPolicy,
        limits: EngineLimits | None = None,
        extra_modules: dict[str, str] | None = None,
        inline: bool = True,
    ) -> None:
        self.compiled = compiled
        self.limits = limits or EngineLimits()
        self._extra = dict(extra_modules or {})
        self._modules = {**library_modules(), **self._extra}
        self.revision = revision_with(compiled.revision, self._extra)
        """The compiled policy's revision, folded with the team's modules when there are any."""
        self._data = {"regoguard": {"settings": compiled.settings}}
        self._cacheable = not extra_modules
        self._cache: OrderedDict[tuple[Any, ...], Decision] = OrderedDict()
        self._reads_by_tool: dict[str, Reads] = {}
        self._lock = threading.Lock()
        self._inline = threading.local()
        # Inline evaluation has no timeout: only for policies whose every step is bounded (no regex, which
        # std::regex can make quadratic; no team Rego). The rest runs on the worker, behind `timeout`.
        self._inline_ok = inline and not extra_modules and compiled.bounded
        t0 = time.perf_counter_ns()
        # The team's Rego may add charges, which only the full decision carries.
        self._run = _run_full_query if extra_modules else _run_query
        self._worker = Worker(self._build, self._run)
        self.build_ns = time.perf_counter_ns() - t0


    def _build(self) -> tuple[Any, Any]:
        interp = regopy.Interpreter()
        try:
            interp.add_data_json(data_json(self._data))
            for name, source in self._modules.items():
                interp.add_module(name, source)
            bundle = interp.build(None, [VERDICT, TEAM_VERDICT, DECISION])
        except regopy.RegoError as exc:
            raise EngineError(f"cannot build the policy bundle: {exc}") from exc
        if not bundle.ok():
            raise EngineError("cannot build the policy bundle: regopy rejected the compiled modules or data")
        try:
            lib_format = expression(str(interp.query("data.regoguard.lib.format")))
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
        key = self.compiled.key_for(name)
        # a hidden name has an entry but no rules, so it reads nothing; an unlisted one reads what "*" reads
        reads = self.compiled.reads.get(key, Reads()) if key is not None else self.compiled.wildcard_reads
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
        problem = shape_problem(doc)
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
        problem = value_problem(doc)
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
        if self._inline_ok and on_large_stack():
            built = getattr(self._inline, "built", None)
            if built is None:
                built = self._inline.built = self._build()
            try:
                raw = self._run(built[0], built[1], doc)
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
        try:
            verdict_allows = expression(verdict)["allow"] is True
        except (ValueError, KeyError, IndexError, TypeError):
            verdict_allows = False
        if decision.allow != verdict_allows:  # the verdict (which holds no strings) is what decides
            return Decision.deny("engine/malformed", "the policy's verdict and decision disagree")
        return name_the_tool(decision, doc["tool"]["name"])

    def _allowed(self, name: str, raw: str) -> Decision:
        """An allowing verdict, with the charges filled in from the tool's entry (as the library does)."""
        try:
            value = expression(raw)
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

    def _replace_worker(self, stuck: Worker) -> None:
        with self._lock:
            if self._worker is stuck:
                stuck.stop()
                self._worker = Worker(self._build, self._run)


_INT64 = (-(2**63), 2**63 - 1)


