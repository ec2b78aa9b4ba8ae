"""The embedded decision engine: a call is decided by one query of one small bundle — its decider's.

Fail closed: an undefined result, an engine error, a timeout or an over-large input is a deny with a
reason — never an exception to the caller, never an allow.

Facts that shape this file (measured on regopy 1.5.2; see benchmarks/):

- ``Interpreter.query`` recompiles every module on every call; bundles are built once and queried.
- A bundle's query cost grows with everything in it, so each decider (a tool key, the hidden names, the
  unlisted names) has a bundle of its own (``engine_bundles``): a decision costs the same at 10 tools as
  at 10,000. The compiler writes each decider's rules as direct Rego, so nothing is interpreted per call.
- One query per call: ``verdict`` answers a vector, one outcome per rule (``engine_vector`` combines
  them, with the rules' reasons and charges from the compiled templates: rego-cpp's combining them and
  writing the text out cost more than the rules). With the team's Rego it is the library's verdict.
- ``regex.match`` is C++ ``std::regex``: evaluation runs on threads with a 512 MB stack, the compiled
  Rego bounds regex subjects to 64 KiB, and a call whose regexes cannot be bounded for the strings it
  holds (``engine_inline``), or any call with team Rego, is evaluated behind ``timeout`` on the worker
  pool (a stuck C++ call cannot be interrupted: its worker is replaced). Every other call is evaluated
  inline on a large-stack caller, saving the thread hop.
- An interpreter is not thread-safe; each thread owns its own. The pool's workers evaluate in parallel
  (regopy's ctypes calls release the GIL).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import regopy

from regoguard import engine_native as native
from regoguard.compiler import ENTRYPOINT, CompiledPolicy, RegoUnit, library_modules, rego_library_dir
from regoguard.compiler.sections import SCHEMA_DETAIL
from regoguard.decision import Decision, Reason
from regoguard.engine_bundles import Bundles
from regoguard.engine_cache import cache_key, policy_input
from regoguard.engine_inline import bounded_call, regex_subjects
from regoguard.engine_io import data_json, fixed_charges, parse_verdict, shape_problem, value_problem
from regoguard.engine_threads import WORKER_STACK_BYTES, Pool, on_large_stack, run_with_large_stack
from regoguard.engine_vector import VectorReader
from regoguard.policy.regex_check import unportable_argument
from regoguard.rego_modules import revision_with
from regoguard.schema_check import CHECKER

__all__ = ["WORKER_STACK_BYTES", "Engine", "EngineLimits", "library_modules", "rego_library_dir",
           "run_with_large_stack"]

_CALL = ("tool", "args")
"""The parts of a bundle's input that are the call itself (checked whole, from the call, first)."""

TEAM_ENTRYPOINT = "regoguard/lib/verdict"
"""With the team's Rego: the library's verdict, the team's denials, approvals and charges included."""


@dataclass(frozen=True)
class EngineLimits:
    """Bounds on what one evaluation may cost. Defaults are named here, not scattered."""

    max_input_bytes: int = 8 * 1024 * 1024
    timeout: float = 5.0
    cache_size: int = 4096
    max_cached_value_bytes: int = 4096
    workers: int = 0
    """Evaluation threads (0: one per CPU)."""
    max_bundles: int = 512
    """Bundles kept built, least recently used out (rego-cpp holds ~250 KB per tool of three conditions:
    512 bundles stay near 130 MB; a policy with more tools builds the others on their first call)."""
    prebuild: bool = True
    """Build the deciders' bundles ahead (up to ``max_bundles``), on a background thread, at load."""


class Engine:
    """Evaluates input documents against one compiled policy.

    Args:
        compiled: the output of :func:`regoguard.compile_policy`.
        limits: bounds on input size, time, cache, threads and bundles.
        extra_modules: more Rego modules (name → source) loaded beside the library, e.g. a team's own.
        inline: allow inline evaluation on a large-stack caller (a hot reload turns it off, so that no
            call builds an interpreter on the proxy's thread).
    """

    def __init__(
        self,
        compiled: CompiledPolicy,
        limits: EngineLimits | None = None,
        extra_modules: dict[str, str] | None = None,
        inline: bool = True,
    ) -> None:
        t0 = time.perf_counter_ns()
        self.compiled = compiled
        self.limits = limits or EngineLimits()
        self._extra = dict(extra_modules or {})
        self.revision = revision_with(compiled.revision, self._extra)
        """The compiled policy's revision, folded with the team's modules when there are any."""
        self._cacheable = not self._extra
        self._cache: OrderedDict[tuple[Any, ...], Decision] = OrderedDict()
        self._lock = threading.Lock()
        self._inline = threading.local()
        # Inline evaluation has no timeout: only without team Rego, and for calls whose regexes are bounded
        # for the strings they hold (engine_inline). The rest runs on the pool, behind `timeout`.
        self._inline_ok = inline and not self._extra
        self._subjects = {u: regex_subjects(d.entry) for u, d in compiled.units.items()}
        self.inline_calls = 0
        """Queries evaluated on the caller's thread (a statistic: increments may race)."""
        # Without team Rego each decider's bundle answers with a vector of its rules' outcomes (its charges
        # computed here once when none comes from an argument).
        self._readers = {} if self._extra else {
            u: VectorReader(d.section.spec, d.entry, fixed_charges(d.entry)) for u, d in compiled.units.items()}
        if self._extra:
            self._library = {**library_modules(), **self._extra}
            team_reads_settings = any("settings" in src for src in self._extra.values())
            data = data_json({"regoguard": {"settings": compiled.settings}}) if team_reads_settings else None
            entrypoint = TEAM_ENTRYPOINT
        else:
            self._library, data, entrypoint = {}, None, ENTRYPOINT
        self.entrypoint = entrypoint
        self._entrypoint_bytes = entrypoint.encode()
        self._data_json = data
        self._bundles = Bundles(self._modules_of, data, entrypoint, self.limits.max_bundles)
        # Build one bundle now, so a policy that cannot be built fails here, not at its first call.
        first = "unlisted"
        self._bundles.get(first, cold=False)
        self._pool = Pool(regopy.Interpreter, self._run, self.limits.workers or os.cpu_count() or 1)
        self._pool.start()  # one worker with its interpreter now: the first call does not wait for a thread
        self._ahead: threading.Thread | None = None
        if self.limits.prebuild:
            ahead = ["hidden", *(u for u in compiled.units if u not in ("hidden", first))]
            self._ahead = self._bundles.prebuild(ahead)
        self.build_ns = time.perf_counter_ns() - t0
        """What constructing the engine took (the bundles built ahead are built after it returns)."""

    # -- what decides a call ---------------------------------------------------------------------------

    def _modules_of(self, unit: str) -> dict[str, str]:
        return {f"regoguard/policy/{unit}.rego": self.compiled.unit_module(unit, vector=not self._extra),
                **self._library}

    def rego_for(self, name: str) -> RegoUnit:
        """The Rego that decides calls to ``name`` — modules, data and query — exactly as this engine
        runs it (with the team's modules and the library when there are any), on the input
        :meth:`bundle_input` gives."""
        data = json.loads(self._data_json) if self._data_json else {}
        return RegoUnit(self._modules_of(self.compiled.unit_for(name)), data,
                        "data." + self.entrypoint.replace("/", "."))

    @property
    def bundles_built(self) -> int:
        """How many deciders' bundles are built (the background build fills them in after load)."""
        return len(self._bundles)

    @property
    def cold_builds(self) -> int:
        """Bundles a call had to build itself (its decider's was not built ahead yet)."""
        return self._bundles.cold_builds

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the bundles built ahead are built (at most ``timeout`` seconds); True when they
        are. A hot reload may call this before swapping, so that no call after the swap builds one."""
        if self._ahead is not None:
            self._ahead.join(timeout)
            return not self._ahead.is_alive()
        return True

    def close(self) -> None:
        self._bundles.stop()
        self._pool.stop()

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
        name = doc["tool"]["name"]
        unit = self.compiled.unit_for(name)
        doc, given = self._inputs(unit, doc)
        # What the engine would misread is denied: anywhere in the call itself (its name and every argument,
        # all of which reach the server), and in the rest of the input only where the rules read it (a claim
        # or a schema bound no rule looks at is no reason to deny).
        problem = value_problem(doc["tool"]) or value_problem([v for k, v in given.items() if k not in _CALL])
        if problem:
            return Decision.deny("engine/input", problem)
        # A string the two engines could match differently (bytes vs characters) is denied, not guessed;
        # before the cache, so such a call never reads a decision cached for an ASCII one.
        why = unportable_argument(self.compiled.units[unit].entry, doc["tool"].get("arguments"), doc)
        if why:
            return Decision.deny("engine/input", why)
        cacheable = self._cacheable and self.limits.cache_size > 0
        key = cache_key(self.compiled, unit, doc, self.limits.max_cached_value_bytes) if cacheable else None
        if key is not None:
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
            if hit is not None:
                return Decision(hit.allow, hit.action, hit.reasons, hit.charges, True, time.perf_counter_ns() - t0)
        raw = self._query(unit, given, self._inline_ok and bounded_call(self._subjects[unit], given))
        decision = self.read(unit, raw, name, doc["tool"].get("arguments"))
        if not decision.allow and "schema_check" in doc:
            decision = with_schema_error(decision, doc["schema_check"].get("error"))
        decision = Decision(decision.allow, decision.action, decision.reasons, decision.charges, False,
                            time.perf_counter_ns() - t0, decision.extra)
        if key is not None and decision.extra.get("from_policy"):
            with self._lock:
                self._cache[key] = decision
                if len(self._cache) > self.limits.cache_size:
                    self._cache.popitem(last=False)
        return decision

    def _inputs(self, unit: str, doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``doc`` with the schema validator's result when the rules (or the team's) read it, and the
        input ``unit``'s bundle is given: all of it with the team's Rego, else what its rules read."""
        reads = self.compiled.unit_reads(unit)
        if reads.schema_check or self._extra:
            # validate: {schema: true}: the validator's result is part of the input (team Rego may read it)
            doc = {**doc, "schema_check": CHECKER.check(doc.get("schema"), doc["tool"].get("arguments"))}
        return doc, doc if self._extra else policy_input(reads, doc)

    def bundle_input(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The input this engine hands the bundle deciding ``doc`` (see :meth:`rego_for`)."""
        return self._inputs(self.compiled.unit_for(doc["tool"]["name"]), doc)[1]

    def read(self, unit: str, raw: str, name: str, args: Any = None) -> Decision:
        """The decision in ``raw``, the answer of ``unit``'s bundle (as built by this engine) for a call to
        ``name`` with ``args``."""
        reader = self._readers.get(unit)
        if reader is not None:
            return reader.read(raw, name, args)
        return parse_verdict(raw, self.compiled.units[unit].entry, name, team=True, args=args)

    def _run(self, interp: Any, unit: str, doc: dict[str, Any]) -> str:
        """One query on ``interp`` (any thread's own). Errors come back as text, for :func:`parse_verdict`."""
        try:
            bundle = self._bundles.get(unit)
        except Exception as exc:
            return "\x00error:" + str(exc)
        native.set_input(interp, doc)
        return native.query(interp, bundle, self._entrypoint_bytes)

    def _query(self, unit: str, doc: dict[str, Any], inline: bool) -> str:
        if inline and on_large_stack():
            self.inline_calls += 1
            interp = getattr(self._inline, "interp", None)
            if interp is None:
                interp = self._inline.interp = regopy.Interpreter()
            try:
                return self._run(interp, unit, doc)
            except Exception as exc:
                return "\x00error:" + str(exc)
        job = self._pool.submit(unit, doc)
        try:
            return job.future.result(timeout=self.limits.timeout)
        except TimeoutError:
            self._pool.abandon(job)
            return f"\x00timeout:policy evaluation took longer than {self.limits.timeout}s"
        except Exception as exc:
            return "\x00error:" + str(exc)


def with_schema_error(decision: Decision, error: Any) -> Decision:
    """A denial with the schema validator's own account after the fixed text a ``validate: {schema:
    true}`` rule fails with in Rego (the account holds argument text, which stays out of Rego's output)."""
    if not isinstance(error, str) or not error:
        return decision
    full = f"{SCHEMA_DETAIL}: {error}"
    reasons = tuple(Reason(r.rule, r.message.replace(SCHEMA_DETAIL, full)) if r.message.endswith(SCHEMA_DETAIL)
                    else r for r in decision.reasons)
    details = {rule: [full if d == SCHEMA_DETAIL else d for d in items]
               for rule, items in decision.extra.get("details", {}).items()}
    return Decision(decision.allow, decision.action, reasons, decision.charges, decision.cached, decision.eval_ns,
                    {**decision.extra, "details": details})
