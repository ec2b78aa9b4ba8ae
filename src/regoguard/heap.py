"""Keep the loaded policy out of the cyclic garbage collector's way.

A 1,000-tool policy, compiled and loaded, is ~50,000 long-lived Python objects. CPython's full (oldest
generation) collection walks every one of them, and the proxy's calls make enough short-lived containers
to set one off now and then: measured in ``regoguard run`` with that policy, full collections of 70 to
210 ms each, which stalled every call in flight (the 110-140 ms p99/max of denied calls at 32 in flight
in benchmarks/bench_proxy.py). :func:`gc.freeze` moves what is alive into a permanent generation that
collections skip; objects there are still freed by reference counting when let go, only cycles among them
wait for the next :func:`settle` with ``full=True``.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator


def settle(full: bool = False) -> None:
    """Exclude every object alive now from the cyclic collector's passes. With ``full``, first give back
    what an earlier freeze kept and collect it (on a reload: the old policy's cycles), at the cost of one
    full collection now."""
    if full:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


class _Pause:
    """How many :func:`paused` blocks are running, and whether the collector was on before the first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.was_enabled = False


_pause = _Pause()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection while the block runs (usable as a decorator; nests, and across threads: the
    collector is back on when the last block ends, if it was on before the first). Loading a policy builds
    tens of thousands of long-lived objects, each growth by a quarter setting off a full collection of all
    of them: a 1,000-tool policy's YAML took ~1.0 s with them, ~0.5 s without (one machine, medians of
    five). What the block leaves as garbage is freed by reference counting or at the next collection."""
    with _pause.lock:
        if _pause.depth == 0:
            _pause.was_enabled = gc.isenabled()
            gc.disable()
        _pause.depth += 1
    try:
        yield
    finally:
        with _pause.lock:
            _pause.depth -= 1
            if _pause.depth == 0 and _pause.was_enabled:
                gc.enable()
