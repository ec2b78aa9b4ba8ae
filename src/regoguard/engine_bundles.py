"""The engine's bundles: one per decider (a tool key, the hidden names, the unlisted names), built off
the call path, shared by every interpreter.

Measured on regopy 1.5.2 (see benchmarks/): a bundle's query cost grows with everything in the bundle,
not with what the query reaches, so a call is decided by a bundle holding only its decider's code
(flat from 10 to 10,000 tools). A bundle built by one interpreter can be queried by any other, so one
build serves every worker. Building costs ~2-6 ms a bundle: a background thread builds them all ahead
at load (the unlisted and hidden deciders first); a call whose bundle is not built yet builds it then
(a cold call). At most ``capacity`` bundles are kept (least recently used go; they are rebuilt on need).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import regopy

from regoguard.engine_threads import start_large_stack_thread
from regoguard.errors import EngineError

Modules = Callable[[str], dict[str, str]]
"""``modules(unit) -> {name: source}``: what one decider's bundle holds."""


def build_bundle(modules: dict[str, str], data_json: str | None, entrypoint: str) -> Any:
    """Build one bundle on a fresh interpreter (modules accumulate in an interpreter, so never reuse one)."""
    interp = regopy.Interpreter()
    try:
        if data_json is not None:
            interp.add_data_json(data_json)
        for name, source in modules.items():
            interp.add_module(name, source)
        bundle = interp.build(None, [entrypoint])
    except regopy.RegoError as exc:
        raise EngineError(f"cannot build the policy bundle: {exc}") from exc
    if not bundle.ok():
        raise EngineError("cannot build the policy bundle: regopy rejected the compiled modules or data")
    return bundle


class Bundles:
    """Bundles by decider id: built once (a lock per build), kept up to ``capacity``, least recent out."""

    def __init__(self, modules: Modules, data_json: str | None, entrypoint: str, capacity: int) -> None:
        self._modules = modules
        self._data = data_json
        self.entrypoint = entrypoint
        self.capacity = max(1, capacity)
        self._built: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        self.cold_builds = 0
        """Bundles built on a call's path (not ahead)."""

    def get(self, unit: str, cold: bool = True) -> Any:
        """The bundle of ``unit``, built now if it is not yet (raises EngineError if it cannot be);
        ``cold``: the build is on a call's path (counted in :attr:`cold_builds`)."""
        with self._lock:
            bundle = self._built.get(unit)
            if bundle is not None:
                self._built.move_to_end(unit)
                return bundle
            gate = self._building.setdefault(unit, threading.Lock())
        with gate:  # one build per unit, however many calls wait for it
            with self._lock:
                bundle = self._built.get(unit)
                if bundle is not None:
                    return bundle
                self.cold_builds += cold
            return self._build(unit)

    def _build(self, unit: str) -> Any:
        bundle = build_bundle(self._modules(unit), self._data, self.entrypoint)
        with self._lock:
            self._built[unit] = bundle
            self._building.pop(unit, None)
            while len(self._built) > self.capacity:
                self._built.popitem(last=False)
        return bundle

    def prebuild(self, units: Iterable[str]) -> threading.Thread:
        """Build ``units`` (up to the capacity) on a background thread; a call never waits for it."""
        todo = list(units)[: self.capacity]

        def run() -> None:
            for unit in todo:
                if self._stop.is_set():
                    return
                with self._lock:
                    if unit in self._built:
                        continue
                    gate = self._building.setdefault(unit, threading.Lock())
                if not gate.acquire(blocking=False):
                    continue  # a call is building it
                try:
                    if unit not in self._built:
                        self._build(unit)
                except EngineError:
                    pass  # the call that needs it builds it again, and is denied with the reason
                finally:
                    gate.release()

        return start_large_stack_thread(run, "regoguard-prebuild", daemon=True)

    def stop(self) -> None:
        self._stop.set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._built)
